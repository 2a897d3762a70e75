// A real containerd as a plain process with its own --config: its own root, state, gRPC
// socket and CRI registry config_path (a certs.d directory the test, or `kagami configure`,
// writes hosts.toml files into). Optionally inside a network namespace. Stopped by PID
// (and always at teardown); restart() keeps root and state, like a node's containerd
// restarting.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ContainerdClient } from "../../src/store/containerd/client.ts";
import { rootScope, type Scope } from "./cleanup.ts";
import { spawnProcess, waitFor, type Proc } from "./proc.ts";
import { requireRoot, requireTool } from "./require.ts";

export interface ContainerdOptions {
  /** Names the log and errors. Default "containerd". */
  name?: string;
  /** Run inside this network namespace. */
  netns?: string;
  /** The CRI registry config_path. Default <dir>/certs.d (created). */
  certsDir?: string;
  /** containerd's log level. Default "info" (pull attempts and fallbacks show at debug). */
  logLevel?: "debug" | "info" | "warn";
  /** How long to wait for the socket to answer. Default 20 s. */
  startTimeoutMs?: number;
  scope?: Scope;
}

export interface Containerd {
  readonly name: string;
  readonly dir: string;
  readonly socket: string;
  readonly root: string;
  readonly state: string;
  /** <root>/io.containerd.content.v1.content: what introspection reports. */
  readonly contentPath: string;
  readonly certsDir: string;
  readonly configPath: string;
  readonly netns: string | undefined;
  /** The running process (replaced by restart()). */
  readonly proc: Proc;
  /** A client in a namespace (closed at teardown). */
  client(namespace: string): ContainerdClient;
  /** The whole log of the current process. */
  log(): string;
  stop(): Promise<void>;
  /** Stops (if running) and starts again with the same root, state and socket. */
  restart(): Promise<void>;
}

/** Checks containerd and runc are installed and we are root; throws naming the package otherwise. */
export function requireContainerd(): void {
  requireRoot();
  requireTool("containerd");
  requireTool("runc");
}

export function containerdConfig(dir: string, certsDir: string, logLevel: string): string {
  const q = (s: string) => JSON.stringify(s);
  // Version 2 is containerd 1.6/1.7's format; containerd 2.x migrates it on load.
  return `version = 2
root = ${q(join(dir, "root"))}
state = ${q(join(dir, "state"))}

[grpc]
  address = ${q(join(dir, "containerd.sock"))}

[ttrpc]
  address = ${q(join(dir, "containerd.sock.ttrpc"))}

[debug]
  level = ${q(logLevel)}

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = ${q(join(dir, "cni"))}
      conf_dir = ${q(join(dir, "cni"))}
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ${q(certsDir)}
  [plugins."io.containerd.internal.v1.opt"]
    path = ${q(join(dir, "opt"))}
`;
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  requireContainerd();
  const scope = opts.scope ?? rootScope;
  const name = opts.name ?? "containerd";
  const dir = scope.tempDir(name);
  const certsDir = opts.certsDir ?? join(dir, "certs.d");
  for (const d of ["root", "state", "cni", "opt"]) mkdirSync(join(dir, d), { recursive: true });
  mkdirSync(certsDir, { recursive: true });
  const configPath = join(dir, "config.toml");
  writeFileSync(configPath, containerdConfig(dir, certsDir, opts.logLevel ?? "info"));
  const socket = join(dir, "containerd.sock");
  const clients: ContainerdClient[] = [];
  scope.defer(
    `containerd clients of ${name}`,
    () => clients.forEach((c) => c.close()),
    () => clients.forEach((c) => c.close()),
  );

  let proc: Proc | undefined;
  let generation = 0;
  const start = async () => {
    generation++;
    proc = spawnProcess({
      name: generation === 1 ? name : `${name}-${generation}`,
      cmd: [requireTool("containerd"), "--config", configPath],
      netns: opts.netns,
      stopTimeoutMs: 10_000,
      scope,
    });
    const probe = new ContainerdClient(socket, "default", { callTimeoutMs: 1_000 });
    try {
      await waitFor(`${name} to answer on ${socket}`, () => probe.version().then(() => true), {
        timeoutMs: opts.startTimeoutMs ?? 20_000,
        intervalMs: 100,
        proc,
      });
    } finally {
      probe.close();
    }
  };
  await start();

  const stop = async () => {
    await proc?.stop();
  };
  return {
    name,
    dir,
    socket,
    root: join(dir, "root"),
    state: join(dir, "state"),
    contentPath: join(dir, "root", "io.containerd.content.v1.content"),
    certsDir,
    configPath,
    netns: opts.netns,
    get proc() {
      return proc!;
    },
    client(namespace: string) {
      const c = new ContainerdClient(socket, namespace);
      clients.push(c);
      return c;
    },
    log: () => proc?.log() ?? "",
    stop,
    async restart() {
      await stop();
      await start();
    },
  };
}
