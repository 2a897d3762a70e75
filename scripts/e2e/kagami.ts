// A kagami node under test: `bun src/main.ts serve` (or the compiled binary named by env
// KAGAMI_BIN), its own data dir, waited on until /readyz answers. In the host namespace it
// always runs with --mdns=false: mDNS only ever runs inside namespaces a test created.
import { join, resolve } from "node:path";
import { rootScope, type Scope } from "./cleanup.ts";
import { freePort, spawnProcess, waitForHttp, type Proc } from "./proc.ts";
import type { NsTarget } from "./registry.ts";

export const REPO_ROOT = resolve(import.meta.dir, "..", "..");

export type FlagValue = string | number | boolean | readonly string[];

export interface KagamiOptions {
  /** Names the log file. Default "kagami". */
  name?: string;
  /** Default: a fresh temp dir. */
  dataDir?: string;
  /** host:port. Default 127.0.0.1:<free port>, or <node.ip>:5000 inside a namespace. */
  registryAddr?: string;
  /** Run inside this namespace (mDNS then stays at kagami's default unless `mdns` says otherwise). */
  node?: NsTarget;
  /** Only allowed inside a namespace. */
  mdns?: boolean;
  /** Default "debug", so a failing test's log says what happened. */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Any other flags: { "default-registry": "127.0.0.1:5001", "mirror-targets": ["a", "b"] }. Lists are joined with commas. */
  flags?: Record<string, FlagValue>;
  env?: Record<string, string | undefined>;
  /** A cgroup directory to run in (see createMemoryCgroup). */
  cgroup?: string;
  /** Health path to wait for (200). Default /readyz. */
  readyPath?: "/readyz" | "/livez";
  /** Default 20 s (a cold `bun src/main.ts` with libp2p imports takes a few seconds on 2 cores). */
  readyTimeoutMs?: number;
  scope?: Scope;
}

export interface Kagami {
  readonly proc: Proc;
  /** http://host:port */
  readonly url: string;
  /** host:port, as skopeo takes it. */
  readonly host: string;
  readonly dataDir: string;
  readonly node: NsTarget | undefined;
  /** The argv after `serve`. */
  readonly args: readonly string[];
  /** The options with dataDir and registryAddr filled in: startKagami(k.options) restarts the same node. */
  readonly options: KagamiOptions;
  stop(timeoutMs?: number): Promise<void>;
}

/** The command that runs kagami: the compiled binary when KAGAMI_BIN is set, else bun on the sources. */
export function kagamiCommand(): string[] {
  const bin = process.env.KAGAMI_BIN;
  return bin ? [resolve(bin)] : [process.execPath, join(REPO_ROOT, "src", "main.ts")];
}

export function formatFlags(flags: Record<string, FlagValue>): string[] {
  return Object.entries(flags).map(([k, v]) => `--${k}=${Array.isArray(v) ? v.join(",") : String(v)}`);
}

export async function startKagami(opts: KagamiOptions = {}): Promise<Kagami> {
  if (opts.mdns && !opts.node) throw new Error("startKagami: mdns only inside a namespace (pass node)");
  const scope = opts.scope ?? rootScope;
  const name = opts.name ?? "kagami";
  const dataDir = opts.dataDir ?? scope.tempDir(`${name}-data`);
  const registryAddr = opts.registryAddr ?? (opts.node ? `${opts.node.ip}:5000` : `127.0.0.1:${await freePort()}`);
  const flags: Record<string, FlagValue> = {
    "registry-addr": registryAddr,
    "data-dir": dataDir,
    "log-level": opts.logLevel ?? "debug",
    ...(opts.node ? {} : { mdns: false }),
    // Tests never reach a real registry: pull-through is opt-in (tests that want it pass
    // "pull-through" with an upstream they started).
    "pull-through": false,
    // Host namespace: a free loopback port, so several nodes (and other tests) never share :5001.
    ...(opts.node ? {} : { "router-addr": `127.0.0.1:${await freePort()}`, "metrics-addr": `127.0.0.1:${await freePort()}` }),
    ...(opts.mdns !== undefined ? { mdns: opts.mdns } : {}),
    ...opts.flags,
  };
  if (!opts.node && flags.mdns !== false) throw new Error("startKagami: kagami in the host namespace must run with mdns=false");
  const args = ["serve", ...formatFlags(flags)];
  const proc = spawnProcess({
    name,
    cmd: [...kagamiCommand(), ...args],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    netns: opts.node?.netns,
    cgroup: opts.cgroup,
    scope,
  });
  const host = String(flags["registry-addr"]);
  const url = `http://${host}`;
  await waitForHttp(`${url}${opts.readyPath ?? "/readyz"}`, { netns: opts.node?.netns, proc, timeoutMs: opts.readyTimeoutMs ?? 20_000 });
  return {
    proc,
    url,
    host,
    dataDir,
    node: opts.node,
    args: args.slice(1),
    options: { ...opts, dataDir, registryAddr },
    async stop(timeoutMs) {
      await proc.stop(timeoutMs);
    },
  };
}
