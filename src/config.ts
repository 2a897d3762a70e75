// The Config type, its defaults and validation, in one place. Every flag is declared in
// FLAGS once: the CLI parser, the environment (KAGAMI_<FLAG>), config files and the
// README's reference are all derived from it.
import { homedir } from "node:os";
import { join } from "node:path";
import { formatBytes, parseBytes, parseDuration } from "./units.ts";

export type Command = "serve" | "import" | "configure" | "cleanup" | "gc" | "version";
export const COMMANDS: readonly Command[] = ["serve", "import", "configure", "cleanup", "gc", "version"];

type Kind = "string" | "boolean" | "integer" | "duration" | "bytes" | "list" | "address";

interface FlagSpec {
  kind: Kind;
  help: string;
  commands: readonly Command[];
  /** Absent: the flag has no value unless given. */
  default?: string | boolean | number | readonly string[];
  choices?: readonly string[];
  /** Shown in help and README instead of a computed default. */
  defaultText?: string;
  /** Least value of a bytes flag. */
  min?: number;
}

const SERVE: readonly Command[] = ["serve"];

export const FLAGS = {
  config: { kind: "string", help: "YAML or TOML file of flag values (keys are flag names)", commands: COMMANDS },
  "log-level": {
    kind: "string",
    default: "info",
    choices: ["debug", "info", "warn", "error"],
    help: "Least severe log level written",
    commands: COMMANDS,
  },
  "data-dir": {
    kind: "string",
    help: "Content store, tags and the peer key",
    defaultText: "/var/lib/kagami as root, else $XDG_DATA_HOME/kagami or ~/.local/share/kagami",
    commands: ["serve", "import", "gc"],
  },
  "registry-addr": { kind: "address", default: ":5000", help: "Address of the OCI registry API", commands: SERVE },
  store: {
    kind: "string",
    default: "auto",
    choices: ["auto", "local", "containerd"],
    help: "Where held content is read: containerd's content store, kagami's own, or auto (containerd first when its socket answers, then the local store)",
    commands: SERVE,
  },
  "containerd-sock": {
    kind: "string",
    default: "/run/containerd/containerd.sock",
    help: "containerd's gRPC socket",
    commands: SERVE,
  },
  "containerd-namespace": {
    kind: "string",
    default: "k8s.io",
    help: "containerd namespace whose images are served (the kubelet's is k8s.io)",
    commands: SERVE,
  },
  "containerd-content-path": {
    kind: "string",
    help: "containerd's content directory, read directly so blobs go out by sendfile; default: what containerd reports, else /var/lib/containerd/io.containerd.content.v1.content (unreadable: bytes are streamed over gRPC)",
    commands: SERVE,
  },
  "containerd-registry-config-path": {
    kind: "string",
    default: "/etc/containerd/certs.d",
    help: "containerd's registry config_path, where configure writes <registry>/hosts.toml (existing files are kept in _backup/) and cleanup restores them",
    commands: ["configure", "cleanup"],
  },
  "mirror-targets": {
    kind: "list",
    default: ["http://127.0.0.1:5000"],
    help: "Mirror URLs containerd tries first, in order, e.g. http://127.0.0.1:5000",
    commands: ["configure"],
  },
  "resolve-tags": {
    kind: "boolean",
    default: true,
    help: "Let containerd resolve tags through the mirrors (capability resolve), not only fetch by digest",
    commands: ["configure"],
  },
  "prepend-existing": {
    kind: "boolean",
    default: false,
    help: "Keep the host entries of an existing hosts.toml, after the mirrors",
    commands: ["configure"],
  },
  "metrics-addr": {
    kind: "address",
    default: ":9090",
    help: "Address of /metrics (Prometheus), /debug (HTML and JSON) and /id",
    commands: SERVE,
  },
  "default-registry": {
    kind: "string",
    default: "docker.io",
    help: "Registry of requests that carry no ?ns= parameter",
    commands: SERVE,
  },
  "shutdown-timeout": {
    kind: "duration",
    default: "30s",
    help: "On SIGTERM/SIGINT, how long in-flight responses may take to finish",
    commands: SERVE,
  },
  mdns: { kind: "boolean", default: true, help: "Find peers on the local network by mDNS", commands: SERVE },
  "memory-limit": {
    kind: "bytes",
    help: "Memory limit the governor keeps kagami under (e.g. 96Mi); default: the cgroup's limit, else a quarter of RAM up to 512Mi",
    commands: SERVE,
  },
  "memory-budget": {
    kind: "bytes",
    min: 1024 * 1024,
    help: "Byte budget shared by every userspace buffer on the data path (peer and upstream fetches, verification); default: 1/12 of the memory limit, 2Mi to 256Mi",
    commands: SERVE,
  },
  "memory-governor": {
    kind: "boolean",
    default: true,
    help: "Byte budget, page-cache dropping and shedding under memory pressure (false: unbounded, for comparison)",
    commands: SERVE,
  },
  "pull-through": {
    kind: "string",
    default: "auto",
    choices: ["auto", "true", "false"],
    help: "Fetch what neither this node nor its peers hold from the upstream registry and cache it; auto: on when kagami's own store is the primary store",
    commands: SERVE,
  },
  "insecure-registries": {
    kind: "list",
    default: [],
    help: "Upstream registries (host or host:port) reached over plain HTTP instead of HTTPS",
    commands: SERVE,
  },
  "registry-credentials": {
    kind: "string",
    help: "Docker config.json with upstream credentials per registry (its auths section)",
    commands: SERVE,
  },
  "tag-ttl": {
    kind: "duration",
    default: "5m",
    help: "How long a tag cached from upstream is served before a pull asks upstream again (a HEAD); a moved tag is followed, and while upstream cannot answer the cached tag is served; 0s asks on every pull. Imported tags are never rechecked",
    commands: SERVE,
  },
  "upstream-timeout": {
    kind: "duration",
    default: "30s",
    help: "Longest wait for an upstream registry's (or token server's) response headers, and longest pause inside a body",
    commands: SERVE,
  },
  "cache-size": {
    kind: "string",
    help: "Disk bound of the local store: bytes (20Gi) or a percentage of its filesystem (50%); least recently used content beyond it is evicted (unbounded when not set)",
    commands: ["serve", "gc"],
  },
  "cache-ttl": {
    kind: "duration",
    help: "Evict content not used for this long (e.g. 168h)",
    commands: ["serve", "gc"],
  },
  "dry-run": { kind: "boolean", default: false, help: "Report what would be evicted without removing anything", commands: ["gc"] },
  "router-addr": { kind: "address", default: ":5001", help: "Address of the libp2p router (TCP)", commands: SERVE },
  "dht-protocol": {
    kind: "string",
    default: "/spegel/kad/1.0.0",
    help: "Kademlia DHT protocol id; nodes only find each other when it matches (Spegel's is the default)",
    commands: SERVE,
  },
  "mdns-service-name": {
    kind: "string",
    default: "_kagami._udp.local",
    help: "mDNS service name nodes announce and look for",
    commands: SERVE,
  },
  "bootstrap-kind": {
    kind: "string",
    default: "none",
    choices: ["none", "dns", "static", "http"],
    help: "How a node finds its first peers in a cluster (mDNS works alongside any kind)",
    commands: SERVE,
  },
  "dns-bootstrap-domain": {
    kind: "string",
    help: "--bootstrap-kind dns: name whose A/AAAA records are peers (e.g. a headless Service), dialled on the router port",
    commands: SERVE,
  },
  "static-bootstrap-peers": {
    kind: "list",
    default: [],
    help: "--bootstrap-kind static: peer multiaddrs, e.g. /ip4/10.0.0.2/tcp/5001/p2p/12D3KooW...",
    commands: SERVE,
  },
  "http-bootstrap-url": {
    kind: "string",
    help: '--bootstrap-kind http: URL answering [{"ID":"...","Addrs":["/ip4/.../tcp/5001"]}] (every node serves its own at /id)',
    commands: SERVE,
  },
  "p2p-psk-file": {
    kind: "string",
    help: "libp2p pre-shared key file (/key/swarm/psk/1.0.0/): only nodes holding the key join the DHT",
    commands: SERVE,
  },
  "advertise-interval": {
    kind: "duration",
    default: "10m",
    help: "How often every held key is announced again to the DHT",
    commands: SERVE,
  },
  "mirror-resolve-timeout": {
    kind: "duration",
    default: "20ms",
    help: "How long a request waits for the first peer that holds the content before going upstream",
    commands: SERVE,
  },
  "mirror-resolve-retries": {
    kind: "integer",
    default: 3,
    help: "Most peers asked for one request (first try, hedges and resumes together)",
    commands: SERVE,
  },
  "mirrored-registries": {
    kind: "list",
    default: [],
    help: "Registries served from peers (empty: all), e.g. docker.io,ghcr.io; configure also takes URLs as Spegel does (https://docker.io, http://10.0.0.1:5000), whose scheme sets the server line",
    commands: ["serve", "configure"],
  },
  "registry-filters": {
    kind: "list",
    default: [],
    help: "Regular expressions on references (registry/repository:tag or @digest) never served from peers, e.g. :latest$",
    commands: SERVE,
  },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

type CamelCase<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<CamelCase<T>>}` : S;
type ValueOf<F> = F extends { kind: "boolean" }
  ? boolean
  : F extends { kind: "integer" | "duration" | "bytes" }
    ? number
    : F extends { kind: "list" }
      ? string[]
      : F extends { kind: "address" }
        ? Address
        : string;
type Resolved<F> = F extends { default: unknown } | { defaultText: string } ? ValueOf<F> : ValueOf<F> | undefined;

/** Every flag's value after defaults, file, environment and command line. */
export type Config = { -readonly [N in FlagName as CamelCase<N>]: Resolved<(typeof FLAGS)[N]> };

export interface Address {
  /** Empty: every interface. */
  hostname: string;
  port: number;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export function camelCase(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function envName(name: string): string {
  return `KAGAMI_${name.toUpperCase().replace(/-/g, "_")}`;
}

export function flagSpec(name: string): FlagSpec | undefined {
  return (FLAGS as Record<string, FlagSpec>)[name];
}

export function flagsOf(command: Command): [string, FlagSpec][] {
  return Object.entries(FLAGS as Record<string, FlagSpec>).filter(([, s]) => s.commands.includes(command));
}

/** `:5000`, `127.0.0.2:5000`, `[::1]:5000`. */
export function parseAddress(input: string): Address {
  const m = input.trim().match(/^(?:\[([0-9a-fA-F:.]+)\]|([a-zA-Z0-9.-]*)):(\d{1,5})$/);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`invalid address ${JSON.stringify(input)} (use host:port, :port or [v6]:port)`);
  return { hostname: m[1] ?? m[2] ?? "", port };
}

export function formatAddress(a: Address): string {
  return `${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}`;
}

/** Converts one raw value (string from argv/env, or a file's typed value) to the flag's kind. */
export function coerce(name: string, spec: FlagSpec, raw: unknown): unknown {
  const fail = (why: string): never => {
    throw new ConfigError(`--${name}: ${why}`);
  };
  try {
    switch (spec.kind) {
      case "boolean":
        if (typeof raw === "boolean") return raw;
        if (raw === "true" || raw === "1") return true;
        if (raw === "false" || raw === "0") return false;
        return fail(`expected true or false, got ${JSON.stringify(raw)}`);
      case "integer": {
        const n = typeof raw === "number" ? raw : /^-?\d+$/.test(String(raw)) ? Number(raw) : NaN;
        if (!Number.isSafeInteger(n) || n < 0) return fail(`expected a non-negative integer, got ${JSON.stringify(raw)}`);
        return n;
      }
      case "duration":
        return parseDuration(String(raw));
      case "bytes": {
        const n = typeof raw === "number" ? raw : parseBytes(String(raw));
        if (spec.min !== undefined && n < spec.min) return fail(`at least ${formatBytes(spec.min)}, got ${formatBytes(n)}`);
        return n;
      }
      case "list":
        if (Array.isArray(raw)) return raw.map(String).filter((s) => s.length > 0);
        return String(raw)
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
      case "address":
        return parseAddress(String(raw));
      case "string": {
        if (typeof raw !== "string" && typeof raw !== "number") return fail(`expected a string, got ${JSON.stringify(raw)}`);
        const s = String(raw);
        if (spec.choices && !spec.choices.includes(s)) return fail(`expected one of ${spec.choices.join(", ")}, got ${JSON.stringify(s)}`);
        return s;
      }
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    return fail((e as Error).message);
  }
}

export function defaultDataDir(env: Record<string, string | undefined> = process.env): string {
  if (process.getuid?.() === 0) return "/var/lib/kagami";
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, "kagami");
  return join(homedir(), ".local", "share", "kagami");
}

/** Defaults of every flag, coerced to their kinds. */
export function defaults(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(FLAGS as Record<string, FlagSpec>)) {
    if (spec.default !== undefined) out[camelCase(name)] = coerce(name, spec, spec.default);
  }
  out.dataDir = defaultDataDir();
  return out;
}
