// The whole rig of a containerd cluster in one call: a bridge with a registry namespace and N
// node namespaces (plus, optionally, a "direct" namespace whose containerd has no mirror: the
// baseline a pull through kagami is compared with). Every node runs its own containerd (CRI
// config_path = its certs.d, which starts with the registry's own hosts.toml, as an admin
// would have for a plain-HTTP registry) and its own kagami (--store containerd, static
// bootstrap to the other nodes, mDNS off unless asked). containerd is pointed at its kagami
// by the real `kagami configure`. Everything is torn down with the scope, also on failure.
//
//   const cluster = await createCluster({ nodes: 2, direct: true });
//   await cluster.push(built, "e2e/app");
//   await cluster.node(1).cri.pullImage(cluster.ref("e2e/app", "v1"));
//   await cluster.cutRegistry();
//   const mark = cluster.node(1).servedMark();
//   await cluster.node(2).cri.pullImage(cluster.ref("e2e/app", "v1"));
//   cluster.node(1).served(mark)  // what node 1's kagami answered since
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { rootScope, type Scope } from "./cleanup.ts";
import { startContainerd, type Containerd } from "./containerd.ts";
import { CriClient } from "./cri.ts";
import type { Built } from "./image.ts";
import { kagamiCommand, REPO_ROOT, startKagami, type FlagValue, type Kagami } from "./kagami.ts";
import { createNetwork, type NetNode, type Network } from "./netns.ts";
import { run, type RunResult } from "./proc.ts";
import { startRegistry, type Registry } from "./registry.ts";
import { pushImage } from "./skopeo.ts";

/** Ports every node uses inside its own namespace (the wire defaults). */
export const REGISTRY_PORT = 5000;
export const ROUTER_PORT = 5001;
export const METRICS_PORT = 9090;

export interface ClusterOptions {
  /** Number of kagami nodes (labels node1..nodeN). Default 2. */
  nodes?: number;
  /** Add a namespace "direct" with a containerd that pulls from the registry without a mirror. */
  direct?: boolean;
  /** mDNS inside the namespaces. Default false: static bootstrap only. */
  mdns?: boolean;
  /** Extra `kagami serve` flags for every node. */
  kagamiFlags?: Record<string, FlagValue>;
  /** Per node label: a cgroup its kagami joins before entering the namespace (createMemoryCgroup's path), and flags for it alone. */
  kagamiByNode?: Record<string, { cgroup?: string; flags?: Record<string, FlagValue> }>;
  /** containerd's log level on the nodes. Default "info". */
  containerdLogLevel?: "debug" | "info" | "warn";
  scope?: Scope;
}

/** One "served" debug line of kagami's log: one request it answered. */
export interface ServedLine {
  digest?: string;
  /** registry/repository:reference */
  ref: string;
  /** The store that held it ("containerd", "local"), "peer", "upstream", or "miss". */
  source: string;
  status: number;
  bytes: number;
}

/** A position in a node's kagami log; served(since) returns only what came after it. */
export interface ServedMark {
  readonly log: string;
  readonly count: number;
}

/** A file or directory of a tree: what "byte-identical" compares. */
export interface TreeEntry {
  path: string;
  kind: "file" | "dir" | "symlink" | "other";
  mode: string;
  /** Files: their content (UTF-8) and its sha256, so a diff shows what changed. */
  text?: string;
  sha256?: string;
}

export interface ClusterNode {
  readonly label: string;
  readonly net: NetNode;
  readonly containerd: Containerd;
  readonly cri: CriClient;
  readonly kagami: Kagami;
  /** http://<ip>:5000, what containerd's hosts.toml points at. */
  readonly mirrorUrl: string;
  /** certs.d before `kagami configure` ran. */
  readonly certsBefore: readonly TreeEntry[];
  /** Runs the real CLI (`kagami configure|cleanup ...`) for this node's certs.d. */
  kagamiCli(command: "configure" | "cleanup", extra?: string[]): Promise<RunResult>;
  /** `kagami configure` with the rig's flags: mirror the registry to this node's kagami. */
  configure(): Promise<void>;
  cleanup(): Promise<void>;
  servedMark(): ServedMark;
  served(since?: ServedMark): ServedLine[];
  /** Status of one request sent from inside this node's namespace. */
  request(method: "GET" | "HEAD", url: string, headers?: Record<string, string>): Promise<number>;
}

export interface DirectNode {
  readonly net: NetNode;
  readonly containerd: Containerd;
  readonly cri: CriClient;
}

export interface Cluster {
  readonly net: Network;
  readonly registry: Registry;
  readonly registryNode: NetNode;
  readonly nodes: readonly ClusterNode[];
  readonly direct: DirectNode | undefined;
  /** 1-based: node(1) is node1. */
  node(n: number): ClusterNode;
  /** What CRI pulls: <registry>/<repo>:<tag> or <registry>/<repo>@<digest>. */
  ref(repo: string, tagOrDigest: string): string;
  /** Pushes a built image (all platforms) to the registry, from inside its namespace. */
  push(image: Built, repo: string): Promise<void>;
  /** Takes the registry's veth down: nothing reaches it. */
  cutRegistry(): Promise<void>;
  restoreRegistry(): Promise<void>;
}

export async function createCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const scope = opts.scope ?? rootScope;
  const count = opts.nodes ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > 20) throw new Error(`createCluster: 1 to 20 nodes, got ${count}`);
  const labels = Array.from({ length: count }, (_, i) => `node${i + 1}`);
  const net = await createNetwork({ nodes: ["registry", ...labels, ...(opts.direct ? ["direct"] : [])], multicastRoute: opts.mdns ?? false, scope });
  const registryNode = net.node("registry");
  const registry = await startRegistry({ name: "cluster-registry", node: registryNode, scope });
  const registryUrl = `http://${registry.host}`;
  const clients: CriClient[] = [];
  scope.defer(
    "CRI clients of the cluster",
    () => clients.forEach((c) => c.close()),
    () => clients.forEach((c) => c.close()),
  );
  const cri = (socket: string) => {
    const c = new CriClient(socket);
    clients.push(c);
    return c;
  };

  // Every containerd starts with the registry's own hosts.toml: plain HTTP needs the http://
  // server line, and containerd 1.6 rejects a file without a [host] table ("invalid `host`
  // tree") and then falls back to HTTPS.
  const existingHosts = `# ${registry.host} speaks plain HTTP\nserver = "${registryUrl}"\n\n[host."${registryUrl}"]\n  capabilities = ["pull", "resolve"]\n`;
  const startNodeContainerd = async (net: NetNode, name: string) => {
    const certsDir = join(scope.tempDir(`${name}-certs`), "certs.d");
    writeTree(certsDir, { [join(registry.host, "hosts.toml")]: existingHosts });
    return startContainerd({ name, netns: net.netns, certsDir, logLevel: opts.containerdLogLevel ?? "info", scope });
  };

  const direct = opts.direct
    ? await (async () => {
        const node = net.node("direct");
        const containerd = await startNodeContainerd(node, "containerd-direct");
        return { net: node, containerd, cri: cri(containerd.socket) };
      })()
    : undefined;

  const containerds = await Promise.all(labels.map((label) => startNodeContainerd(net.node(label), `containerd-${label}`)));
  const kagamis = await Promise.all(
    labels.map((label, i) => {
      const node = net.node(label);
      const others = labels.filter((l) => l !== label).map((l) => `/ip4/${net.node(l).ip}/tcp/${ROUTER_PORT}`);
      return startKagami({
        name: `kagami-${label}`,
        node,
        mdns: opts.mdns ?? false,
        registryAddr: `${node.ip}:${REGISTRY_PORT}`,
        readyTimeoutMs: 60_000,
        scope,
        cgroup: opts.kagamiByNode?.[label]?.cgroup,
        flags: {
          store: "containerd",
          "containerd-sock": containerds[i]!.socket,
          "router-addr": `${node.ip}:${ROUTER_PORT}`,
          "metrics-addr": `${node.ip}:${METRICS_PORT}`,
          ...(others.length > 0 ? { "bootstrap-kind": "static", "static-bootstrap-peers": others } : {}),
          ...opts.kagamiFlags,
          ...opts.kagamiByNode?.[label]?.flags,
        },
      });
    }),
  );

  const nodes = labels.map((label, i): ClusterNode => {
    const node = net.node(label);
    const containerd = containerds[i]!;
    const kagami = kagamis[i]!;
    const mirrorUrl = `http://${node.ip}:${REGISTRY_PORT}`;
    const cli = (command: "configure" | "cleanup", extra: string[] = []) =>
      run([...kagamiCommand(), command, "--log-level=warn", `--containerd-registry-config-path=${containerd.certsDir}`, ...extra], {
        cwd: REPO_ROOT,
        env: { NO_COLOR: "1" },
        netns: node.netns,
        timeoutMs: 30_000,
      });
    return {
      label,
      net: node,
      containerd,
      cri: cri(containerd.socket),
      kagami,
      mirrorUrl,
      certsBefore: snapshotTree(containerd.certsDir),
      kagamiCli: cli,
      async configure() {
        await cli("configure", [`--mirrored-registries=${registryUrl}`, `--mirror-targets=${mirrorUrl}`]);
      },
      async cleanup() {
        await cli("cleanup");
      },
      servedMark: () => ({ log: kagami.proc.logPath, count: parseServed(kagami.proc.log()).length }),
      served(since) {
        if (since && since.log !== kagami.proc.logPath) throw new Error(`served(): mark is from another log (${since.log})`);
        return parseServed(kagami.proc.log()).slice(since?.count ?? 0);
      },
      request: (method, url, headers = {}) => requestStatus(node.netns, method, url, headers),
    };
  });
  for (const n of nodes) await n.configure();

  return {
    net,
    registry,
    registryNode,
    nodes,
    direct,
    node(n) {
      const found = nodes[n - 1];
      if (!found) throw new Error(`no node ${n} (cluster has ${nodes.length})`);
      return found;
    },
    ref: (repo, tagOrDigest) => `${registry.host}/${repo}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`,
    async push(image, repo) {
      await pushImage(image, { registry: registry.host, repo, netns: registryNode.netns, scope });
    },
    cutRegistry: () => net.setLink(registryNode, "down"),
    restoreRegistry: () => net.setLink(registryNode, "up"),
  };
}

/** kagami's "served" debug lines (JSON, one per answered request). */
export function parseServed(log: string): ServedLine[] {
  const out: ServedLine[] = [];
  for (const line of log.split("\n")) {
    if (!line.includes('"msg":"served"')) continue;
    try {
      const e = JSON.parse(line) as Record<string, unknown>;
      out.push({
        ...(typeof e.digest === "string" ? { digest: e.digest } : {}),
        ref: String(e.ref ?? ""),
        source: String(e.source ?? ""),
        status: Number(e.status ?? 0),
        bytes: Number(e.bytes ?? 0),
      });
    } catch {
      // A line cut by a crash: not a served request.
    }
  }
  return out;
}

/** Every file and directory under root, sorted, with modes and contents. */
export function snapshotTree(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, path));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.push({ path, kind: "dir", mode });
        walk(path);
      } else if (st.isFile()) {
        const bytes = readFileSync(join(root, path));
        out.push({ path, kind: "file", mode, text: bytes.toString("utf8"), sha256: createHash("sha256").update(bytes).digest("hex") });
      } else {
        out.push({ path, kind: st.isSymbolicLink() ? "symlink" : "other", mode });
      }
    }
  };
  walk("");
  return out;
}

/** Writes relative path -> content under root (parents created). */
export function writeTree(root: string, files: Record<string, string>): void {
  for (const [path, content] of Object.entries(files)) {
    const full = join(root, path);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, content);
  }
}

/** One HTTP/1.0 request from inside a namespace with bash's /dev/tcp (no curl needed); its status. */
async function requestStatus(netns: string, method: "GET" | "HEAD", url: string, headers: Record<string, string>): Promise<number> {
  const u = new URL(url);
  if (u.protocol !== "http:") throw new Error(`request: http:// only, got ${url}`);
  const extra = Object.entries(headers)
    .map(([k, v]) => {
      if (/[\r\n]/.test(k + v)) throw new Error(`request: header ${k} has a line break`);
      return `${k}: ${v}\r\n`;
    })
    .join("");
  const script = 'exec 3<>"/dev/tcp/$0/$1" && printf "%s %s HTTP/1.0\\r\\nHost: %s\\r\\n%sConnection: close\\r\\n\\r\\n" "$2" "$3" "$0:$1" "$4" >&3 && head -n1 <&3';
  const r = await run(["timeout", "3", "bash", "-c", script, u.hostname, u.port || "80", method, u.pathname + u.search, extra], { netns, timeoutMs: 5_000 });
  const m = r.stdout.match(/^HTTP\/\d(?:\.\d)? (\d{3})/);
  if (!m) throw new Error(`no HTTP status line from ${method} ${url}: ${JSON.stringify(r.stdout.slice(0, 80))}`);
  return Number(m[1]);
}
