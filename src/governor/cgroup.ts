// Reads the memory the kernel charges to this process: the cgroup's limit, usage, page cache
// and OOM-kill count (cgroup v1 or v2), and the process's own RSS. Everything is read live
// from small files; `root` is injectable so tests run against fixture directories.
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

export type CgroupVersion = 1 | 2;

/** Where this process's memory cgroup lives. */
export interface MemoryCgroup {
  version: CgroupVersion;
  /** The cgroup's directory (under `root`). */
  dir: string;
  /** The hierarchy's mount point (under `root`): limits are looked up from `dir` up to here. */
  mount: string;
}

export interface MemorySample {
  /** Null: no cgroup with a memory controller was found; the cgroup fields below are then null. */
  cgroup: MemoryCgroup | null;
  /** Smallest limit on the way from the cgroup to its hierarchy's root; null when unlimited. */
  limit: number | null;
  /** memory.current (v2) / memory.usage_in_bytes (v1). */
  usage: number | null;
  inactiveFile: number | null;
  /** Page cache charged to the cgroup: `file` (v2) / `total_cache` (v1). */
  pageCache: number | null;
  /** usage - inactive_file, as the kubelet computes it. */
  workingSet: number | null;
  /** OOM kills in the cgroup so far: memory.events (v2) / memory.oom_control (v1, kernel >= 4.13). */
  oomKills: number | null;
  /** True when this process is the only one in the cgroup (its figures are then kagami's own). */
  alone: boolean | null;
  /** The process's resident set (VmRSS) and its peak (VmHWM). */
  rss: number;
  rssPeak: number | null;
  /**
   * The part of the RSS the kernel cannot reclaim: RssAnon + RssShmem (the rest is file pages,
   * ~50 MiB of them the compiled executable's). Absent or null where /proc does not say.
   */
  rssAnon?: number | null;
}

// v1 reports "no limit" as PAGE_COUNTER_MAX rounded to the page size (9223372036854771712
// on 4 KiB pages); anything at or past 2^60 is treated as none.
const V1_UNLIMITED = 2 ** 60;

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

function readNumber(path: string): number | null {
  const text = readText(path)?.trim();
  if (text === undefined || !/^\d+$/.test(text)) return null;
  return Number(text);
}

/** `key value` lines (memory.stat, memory.events, memory.oom_control). */
export function parseKeyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value && /^\d+$/.test(value)) out.set(key, Number(value));
  }
  return out;
}

function readKeyValues(path: string): Map<string, number> {
  const text = readText(path);
  return text === null ? new Map() : parseKeyValues(text);
}

interface Mount {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** /proc/self/mountinfo: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`. */
export function parseMountInfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    const dash = fields.indexOf("-");
    if (dash < 6 || fields.length < dash + 4) continue;
    mounts.push({
      root: unescapeMountField(fields[3] ?? ""),
      mountPoint: unescapeMountField(fields[4] ?? ""),
      fsType: fields[dash + 1] ?? "",
      superOptions: (fields[dash + 3] ?? "").split(","),
    });
  }
  return mounts;
}

/** /proc/self/cgroup: `hierarchy-id:controllers:path`; v2 is the `0::path` line. */
export function parseProcCgroup(text: string): { v1Memory: string | null; v2: string | null } {
  let v1Memory: string | null = null;
  let v2: string | null = null;
  for (const line of text.split("\n")) {
    const m = line.trim().match(/^(\d+):([^:]*):(.*)$/);
    if (!m) continue;
    const [, id, controllers, path] = m;
    if (id === "0" && controllers === "") v2 = path ?? null;
    else if ((controllers ?? "").split(",").includes("memory")) v1Memory = path ?? null;
  }
  return { v1Memory, v2 };
}

// The cgroup path is relative to the hierarchy's root; the mount may show only a subtree of it
// (a container without a cgroup namespace mounts /docker/<id> at /sys/fs/cgroup/memory).
function cgroupDir(root: string, mount: Mount, cgroupPath: string): string {
  const mountRoot = mount.root === "/" ? "" : mount.root;
  const inside =
    cgroupPath === mountRoot || cgroupPath.startsWith(`${mountRoot}/`) ? cgroupPath.slice(mountRoot.length) : "";
  return join(root, mount.mountPoint, inside);
}

/**
 * Finds this process's memory cgroup from /proc/self/cgroup and /proc/self/mountinfo under
 * `root`. v1's memory controller wins when it is mounted (hybrid hosts mount an empty v2 too);
 * a v2 cgroup counts only when it has memory accounting files.
 */
export function findMemoryCgroup(root = "/"): MemoryCgroup | null {
  const procCgroup = readText(join(root, "proc/self/cgroup"));
  const mountInfo = readText(join(root, "proc/self/mountinfo"));
  if (procCgroup === null || mountInfo === null) return null;
  const paths = parseProcCgroup(procCgroup);
  const mounts = parseMountInfo(mountInfo);
  if (paths.v1Memory !== null) {
    const mount = mounts.find((m) => m.fsType === "cgroup" && m.superOptions.includes("memory"));
    if (mount) {
      const dir = cgroupDir(root, mount, paths.v1Memory);
      if (readNumber(join(dir, "memory.usage_in_bytes")) !== null) {
        return { version: 1, dir, mount: join(root, mount.mountPoint) };
      }
    }
  }
  if (paths.v2 !== null) {
    const mount = mounts.find((m) => m.fsType === "cgroup2");
    if (mount) {
      const dir = cgroupDir(root, mount, paths.v2);
      if (readText(join(dir, "memory.stat")) !== null) return { version: 2, dir, mount: join(root, mount.mountPoint) };
    }
  }
  return null;
}

// Walks from the cgroup up to its mount point (a parent's limit also binds its children).
function ancestors(cgroup: MemoryCgroup): string[] {
  const dirs: string[] = [];
  let dir = cgroup.dir;
  for (let depth = 0; depth < 64; depth++) {
    dirs.push(dir);
    if (dir === cgroup.mount || relative(cgroup.mount, dir).startsWith("..")) break;
    dir = dirname(dir);
  }
  return dirs;
}

function minLimit(values: (number | null)[]): number | null {
  const finite = values.filter((v): v is number => v !== null && v < V1_UNLIMITED);
  return finite.length === 0 ? null : Math.min(...finite);
}

function readV2(cgroup: MemoryCgroup) {
  // memory.max holds "max" when unlimited: readNumber gives null for it.
  const limit = minLimit(ancestors(cgroup).map((d) => readNumber(join(d, "memory.max"))));
  const stat = readKeyValues(join(cgroup.dir, "memory.stat"));
  return {
    limit,
    usage: readNumber(join(cgroup.dir, "memory.current")),
    inactiveFile: stat.get("inactive_file") ?? null,
    pageCache: stat.get("file") ?? null,
    oomKills: readKeyValues(join(cgroup.dir, "memory.events")).get("oom_kill") ?? null,
  };
}

function readV1(cgroup: MemoryCgroup) {
  const stat = readKeyValues(join(cgroup.dir, "memory.stat"));
  const limit = minLimit([
    ...ancestors(cgroup).map((d) => readNumber(join(d, "memory.limit_in_bytes"))),
    stat.get("hierarchical_memory_limit") ?? null,
  ]);
  return {
    limit,
    usage: readNumber(join(cgroup.dir, "memory.usage_in_bytes")),
    // total_* include descendant cgroups (the kubelet reads these); plain keys are the fallback.
    inactiveFile: stat.get("total_inactive_file") ?? stat.get("inactive_file") ?? null,
    pageCache: stat.get("total_cache") ?? stat.get("cache") ?? null,
    oomKills: readKeyValues(join(cgroup.dir, "memory.oom_control")).get("oom_kill") ?? null,
  };
}

/** VmRSS and VmHWM from /proc/self/status; the runtime's own figure where there is no /proc. */
export function readProcessRss(root = "/"): { rss: number; rssPeak: number | null; rssAnon: number | null } {
  const status = readText(join(root, "proc/self/status"));
  const kib = (key: string): number | null => {
    const m = status?.match(new RegExp(`^${key}:\\s*(\\d+)\\s*kB`, "m"));
    return m ? Number(m[1]) * 1024 : null;
  };
  const anon = kib("RssAnon");
  const rssAnon = anon === null ? null : anon + (kib("RssShmem") ?? 0);
  return { rss: kib("VmRSS") ?? process.memoryUsage().rss, rssPeak: kib("VmHWM"), rssAnon };
}

// cgroup.procs lists one pid per line; reading stops early, a busy cgroup can be large.
function aloneIn(dir: string): boolean | null {
  const procs = readText(join(dir, "cgroup.procs"));
  if (procs === null) return null;
  const pids = procs.split("\n", 3).filter((l) => l.trim() !== "");
  return pids.length === 1;
}

/** The working set alone, read from two files (the page-cache loop reads it every 25 ms). */
export function readWorkingSet(cgroup: MemoryCgroup): number | null {
  const v2 = cgroup.version === 2;
  const usage = readNumber(join(cgroup.dir, v2 ? "memory.current" : "memory.usage_in_bytes"));
  if (usage === null) return null;
  const stat = readKeyValues(join(cgroup.dir, "memory.stat"));
  const inactive = (v2 ? stat.get("inactive_file") : (stat.get("total_inactive_file") ?? stat.get("inactive_file"))) ?? 0;
  return Math.max(0, usage - inactive);
}

/** One reading of the cgroup (when there is one) and of the process. */
export function readMemory(cgroup: MemoryCgroup | null, root = "/"): MemorySample {
  const proc = readProcessRss(root);
  if (cgroup === null) {
    return { cgroup, limit: null, usage: null, inactiveFile: null, pageCache: null, workingSet: null, oomKills: null, alone: null, ...proc };
  }
  const c = cgroup.version === 2 ? readV2(cgroup) : readV1(cgroup);
  const workingSet = c.usage === null ? null : Math.max(0, c.usage - (c.inactiveFile ?? 0));
  return { cgroup, ...c, workingSet, alone: aloneIn(cgroup.dir), ...proc };
}
