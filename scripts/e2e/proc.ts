// Processes under test: spawned with output captured to a log file, optionally inside a
// network namespace and a cgroup, stopped by PID (SIGTERM, then SIGKILL after a deadline),
// and always stopped at teardown. Also bounded waits for ports and URLs, and run() for
// short commands that must finish.
import { spawn as spawnChild } from "node:child_process";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { rootScope, safeLabel, type Scope } from "./cleanup.ts";

export interface ExitStatus {
  code: number | null;
  signal: string | null;
}

export interface SpawnOptions {
  /** Names the log file and appears in errors. */
  name: string;
  cmd: readonly string[];
  cwd?: string;
  /** Merged over process.env; undefined removes a variable. */
  env?: Record<string, string | undefined>;
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** A cgroup directory (v1 memory or v2) the process joins before it execs (and before it enters netns). */
  cgroup?: string;
  /** Default: <scope temp dir>/<name>.log. stdout and stderr both go here. */
  logPath?: string;
  /** SIGTERM -> SIGKILL deadline for stop() and teardown. Default 5000. */
  stopTimeoutMs?: number;
  scope?: Scope;
}

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  readonly netns: string | undefined;
  /** Settles when the process exits (never rejects). */
  readonly exited: Promise<ExitStatus>;
  /** Undefined while running. */
  readonly exitStatus: ExitStatus | undefined;
  running(): boolean;
  /** The whole log so far. */
  log(): string;
  /** The last lines of the log, for error messages. */
  tail(lines?: number): string;
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM, wait up to the deadline, then SIGKILL (and its process group). Idempotent. */
  stop(timeoutMs?: number): Promise<ExitStatus>;
}

/** Prefix that runs cmd inside a namespace; identity when netns is undefined. */
export function inNetns(netns: string | undefined, cmd: readonly string[]): string[] {
  return netns ? ["ip", "netns", "exec", netns, ...cmd] : [...cmd];
}

export function spawnProcess(opts: SpawnOptions): Proc {
  const scope = opts.scope ?? rootScope;
  const logPath = opts.logPath ?? join(scope.tempDir("logs"), `${safeLabel(opts.name, 40)}.log`);
  let argv = inNetns(opts.netns, opts.cmd);
  if (opts.cgroup) {
    // `ip netns exec` remounts /sys, so the process joins its cgroup first, then execs.
    argv = ["bash", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', opts.cgroup, ...argv];
  }
  const fd = openSync(logPath, "a");
  const env = { ...process.env, ...opts.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  let child;
  try {
    // detached: own process group, so leftovers (children of the child) can be killed too.
    child = spawnChild(argv[0]!, argv.slice(1), { cwd: opts.cwd, env, stdio: ["ignore", fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${opts.name}: cannot spawn ${argv[0]}`);

  let status: ExitStatus | undefined;
  let stopping: Promise<ExitStatus> | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => {
      status = { code, signal };
      // bun test kills every child process when a test times out: say so where people look.
      if (signal && !stopping) appendNote(logPath, `killed by ${signal}, not sent by the rig (a timed-out bun test kills all child processes)`);
      resolve(status);
    });
    child.once("error", (e) => {
      status = { code: null, signal: null };
      appendNote(logPath, `spawn error: ${e.message}`);
      resolve(status);
    });
  });
  const stopTimeoutMs = opts.stopTimeoutMs ?? 5000;
  const killGroup = () => {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // ESRCH: the group is already empty.
    }
  };

  const stop = (timeoutMs = stopTimeoutMs): Promise<ExitStatus> => {
    stopping ??= (async () => {
      if (!status) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // Already gone.
        }
        const timer = setTimeout(killGroup, timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      killGroup();
      release();
      return status!;
    })();
    return stopping;
  };
  const release = scope.defer(`process ${opts.name} (pid ${pid})`, () => stop().then(() => undefined), killGroup);

  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  return {
    name: opts.name,
    pid,
    logPath,
    netns: opts.netns,
    exited,
    get exitStatus() {
      return status;
    },
    running: () => status === undefined,
    log,
    tail: (lines = 30) => log().trimEnd().split("\n").slice(-lines).join("\n"),
    signal(signal) {
      if (!status) process.kill(pid, signal);
    },
    stop,
  };
}

function appendNote(path: string, note: string): void {
  try {
    const fd = openSync(path, "a");
    writeSync(fd, `[rig] ${note}\n`);
    closeSync(fd);
  } catch {
    // The log is only diagnostics.
  }
}

export interface RunOptions {
  netns?: string;
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Default 60 s; the command is killed after it. */
  timeoutMs?: number;
  stdin?: string | Uint8Array;
  /** Return a failed result instead of throwing. */
  allowFailure?: boolean;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded), throwing with its stderr when it fails. */
export async function run(cmd: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = inNetns(opts.netns, cmd);
  const env = { ...process.env, ...opts.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = performance.now();
  const child = Bun.spawn(argv, {
    cwd: opts.cwd,
    env: env as Record<string, string>,
    stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  if (process.env.KAGAMI_RIG_TRACE === "1") console.error(`[rig] ${Math.round(performance.now() - started)} ms, exit ${code}: ${argv.join(" ")}`);
  const result = { code, stdout, stderr };
  if (timedOut) throw new Error(`${argv.join(" ")}: timed out after ${timeoutMs} ms\n${stderr.trim()}`);
  if (code !== 0 && !opts.allowFailure) {
    throw new Error(`${argv.join(" ")}: exit ${code}\n${(stderr || stdout).trim().split("\n").slice(-20).join("\n")}`);
  }
  return result;
}

export interface WaitOptions {
  /** Default 15000. */
  timeoutMs?: number;
  /** Default 50. */
  intervalMs?: number;
  /** Fail at once (with its log tail) when this process exits while waiting. */
  proc?: Proc;
}

/** Polls `check` until it returns a value other than undefined/false, within the deadline. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    if (opts.proc && !opts.proc.running()) {
      const s = opts.proc.exitStatus!;
      throw new Error(`${opts.proc.name} exited (code ${s.code}, signal ${s.signal}) while waiting for ${what}\n${opts.proc.tail()}`);
    }
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: ${last.message}` : "";
      const tail = opts.proc ? `\n--- ${opts.proc.name} log (${opts.proc.logPath}) ---\n${opts.proc.tail()}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}${tail}`);
    }
    await Bun.sleep(opts.intervalMs ?? 50);
  }
}

export interface PortTarget extends WaitOptions {
  host: string;
  port: number;
  /** Probe from inside this namespace. */
  netns?: string;
}

/** Waits until a TCP connect to host:port succeeds. */
export function waitForPort(t: PortTarget): Promise<true> {
  return waitFor(`tcp ${t.host}:${t.port}${t.netns ? ` in ${t.netns}` : ""}`, () => (t.netns ? probeTcpIn(t.netns, t.host, t.port) : probeTcp(t.host, t.port)), t);
}

export interface HttpWaitOptions extends WaitOptions {
  netns?: string;
  /** Which statuses count as up. Default: 200-299. */
  accept?: (status: number) => boolean;
}

/** Waits until GET url answers with an accepted status; returns that status. */
export function waitForHttp(url: string, opts: HttpWaitOptions = {}): Promise<number> {
  const accept = opts.accept ?? ((s: number) => s >= 200 && s < 300);
  return waitFor(
    `GET ${url}${opts.netns ? ` in ${opts.netns}` : ""}`,
    async () => {
      const status = await httpStatus(url, { netns: opts.netns });
      if (!accept(status)) throw new Error(`status ${status}`);
      return status;
    },
    opts,
  );
}

/** Status of one GET (bounded to 2 s). Inside a namespace it uses bash's /dev/tcp: no curl needed. */
export async function httpStatus(url: string, opts: { netns?: string; timeoutMs?: number } = {}): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  if (!opts.netns) {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
    await res.body?.cancel();
    return res.status;
  }
  const u = new URL(url);
  if (u.protocol !== "http:") throw new Error(`httpStatus in a namespace supports http:// only, got ${url}`);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const port = u.port || "80";
  const script = 'exec 3<>"/dev/tcp/$0/$1" && printf "GET %s HTTP/1.0\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" "$2" "$0:$1" >&3 && head -n1 <&3';
  const r = await run(["timeout", String(Math.ceil(timeoutMs / 1000)), "bash", "-c", script, host, port, u.pathname + u.search], {
    netns: opts.netns,
    timeoutMs: timeoutMs + 1000,
  });
  const m = r.stdout.match(/^HTTP\/\d(?:\.\d)? (\d{3})/);
  if (!m) throw new Error(`no HTTP status line from ${url}: ${JSON.stringify(r.stdout.slice(0, 80))}`);
  return Number(m[1]);
}

function probeTcp(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

async function probeTcpIn(netns: string, host: string, port: number): Promise<boolean> {
  const r = await run(["timeout", "1", "bash", "-c", 'exec 3<>"/dev/tcp/$0/$1"', host, String(port)], {
    netns,
    timeoutMs: 3000,
    allowFailure: true,
  });
  return r.code === 0;
}

/** A TCP port that was free on host a moment ago (bind to 0, read, close). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const addr = server.address();
      server.close(() => (addr && typeof addr === "object" ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}
