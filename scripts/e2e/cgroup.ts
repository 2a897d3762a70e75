// A memory-limited cgroup (v1 or v2) to reproduce a container's limit, e.g. 128Mi, and to
// read what the kernel charges to it: usage, working set (usage - inactive file pages, what
// the kubelet evicts on) and OOM kills. Pass `cgroup.path` to spawnProcess({cgroup}).
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RIG_PREFIX, rootScope, safeLabel, type Scope } from "./cleanup.ts";
import { waitFor } from "./proc.ts";
import { requireMemoryCgroup } from "./require.ts";

export interface MemoryCgroup {
  readonly path: string;
  readonly version: 1 | 2;
  readonly limitBytes: number;
  /** Bytes charged, page cache included. */
  usage(): number;
  /** usage - inactive file pages. */
  workingSet(): number;
  /** memory.stat as numbers. */
  stat(): Record<string, number>;
  oomKills(): number;
  pids(): number[];
  /** rmdir once its processes are gone (retries while the kernel still holds it). */
  remove(): Promise<void>;
}

export interface MemoryCgroupOptions {
  limitBytes: number;
  name?: string;
  scope?: Scope;
}

let counter = 0;

export function createMemoryCgroup(opts: MemoryCgroupOptions): MemoryCgroup {
  const version = requireMemoryCgroup();
  const scope = opts.scope ?? rootScope;
  const dirName = `${RIG_PREFIX}-${process.pid}-${++counter}-${safeLabel(opts.name ?? "mem", 20)}`;
  const root = version === 1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup";
  const path = join(root, dirName);
  if (version === 2) enableV2Memory(root);
  mkdirSync(path);
  const read = (file: string) => readFileSync(join(path, file), "utf8");
  const removeSync = () => {
    // At exit the processes were just SIGKILLed; the kernel frees the cgroup a moment later.
    for (let attempt = 0; existsSync(path); attempt++) {
      try {
        rmdirSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EBUSY" || attempt >= 40) throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 25);
      }
    }
  };
  const release = scope.defer(`cgroup ${path}`, () => remove(), removeSync);
  try {
    writeFileSync(join(path, version === 1 ? "memory.limit_in_bytes" : "memory.max"), String(opts.limitBytes));
    if (version === 2) writeFileSync(join(path, "memory.swap.max"), "0");
  } catch (e) {
    release();
    removeSync();
    throw e;
  }

  const stat = () => {
    const out: Record<string, number> = {};
    for (const line of read("memory.stat").split("\n")) {
      const [k, v] = line.split(" ");
      if (k && v !== undefined) out[k] = Number(v);
    }
    return out;
  };
  const usage = () => Number(read(version === 1 ? "memory.usage_in_bytes" : "memory.current").trim());
  const remove = async () => {
    await waitFor(
      `cgroup ${path} to be removable`,
      () => {
        try {
          if (existsSync(path)) rmdirSync(path);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "EBUSY") return false;
          throw e;
        }
      },
      { timeoutMs: 5000 },
    );
    release();
  };
  return {
    path,
    version,
    limitBytes: opts.limitBytes,
    usage,
    workingSet() {
      const s = stat();
      const inactive = version === 1 ? s.total_inactive_file : s.inactive_file;
      return Math.max(0, usage() - (inactive ?? 0));
    },
    stat,
    oomKills() {
      const file = version === 1 ? "memory.oom_control" : "memory.events";
      const m = read(file).match(/^oom_kill (\d+)$/m);
      return m ? Number(m[1]) : 0;
    },
    pids: () =>
      read("cgroup.procs")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map(Number),
    remove,
  };
}

function enableV2Memory(root: string): void {
  const control = join(root, "cgroup.subtree_control");
  if (!readFileSync(control, "utf8").split(/\s+/).includes("memory")) writeFileSync(control, "+memory");
}
