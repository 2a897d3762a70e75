import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { findMemoryCgroup, parseMountInfo, parseProcCgroup, readMemory } from "../../src/governor/cgroup.ts";

const fixtures = join(import.meta.dir, "../fixtures/cgroup");
const MiB = 2 ** 20;

describe("cgroup v1 (hybrid host, kubelet with the cgroupfs driver)", () => {
  const root = join(fixtures, "v1");

  test("finds the memory controller's cgroup, not the empty v2 hierarchy", () => {
    const cgroup = findMemoryCgroup(root);
    expect(cgroup).toEqual({
      version: 1,
      dir: join(root, "sys/fs/cgroup/memory/kubepods/burstable/pod7a1f/c0ffee"),
      mount: join(root, "sys/fs/cgroup/memory"),
    });
  });

  test("reads limit, usage, total_inactive_file, total_cache, OOM kills and RSS", () => {
    const m = readMemory(findMemoryCgroup(root), root);
    expect(m.limit).toBe(128 * MiB);
    expect(m.usage).toBe(96 * MiB);
    expect(m.inactiveFile).toBe(24 * MiB);
    expect(m.pageCache).toBe(50 * MiB);
    // The kubelet's working set: usage - total_inactive_file.
    expect(m.workingSet).toBe(72 * MiB);
    expect(m.oomKills).toBe(2);
    expect(m.alone).toBe(false);
    expect(m.rss).toBe(40 * MiB);
    expect(m.rssPeak).toBe(50 * MiB);
  });
});

describe("cgroup v1 without a limit (docker without a cgroup namespace)", () => {
  const root = join(fixtures, "v1-unlimited");

  test("maps the cgroup path onto a mount that shows only the container's subtree", () => {
    expect(findMemoryCgroup(root)?.dir).toBe(join(root, "sys/fs/cgroup/memory"));
  });

  test("treats the huge 'unlimited' value as no limit", () => {
    const m = readMemory(findMemoryCgroup(root), root);
    expect(m.limit).toBeNull();
    expect(m.usage).toBe(70 * MiB);
    expect(m.workingSet).toBe(40 * MiB);
    expect(m.pageCache).toBe(40 * MiB);
    // A kernel older than 4.13 has no oom_kill line.
    expect(m.oomKills).toBeNull();
    expect(m.alone).toBe(true);
  });
});

describe("cgroup v2 (systemd driver, the limit set on the pod's slice)", () => {
  const root = join(fixtures, "v2");

  test("finds the unified hierarchy's cgroup", () => {
    const cgroup = findMemoryCgroup(root);
    expect(cgroup?.version).toBe(2);
    expect(cgroup?.dir).toBe(join(root, "sys/fs/cgroup/kubepods.slice/kubepods-pod9b2.slice/cri-containerd-aa11.scope"));
  });

  test("takes the smallest memory.max on the way up, and reads memory.stat and memory.events", () => {
    const m = readMemory(findMemoryCgroup(root), root);
    expect(m.limit).toBe(128 * MiB);
    expect(m.usage).toBe(112 * MiB);
    expect(m.inactiveFile).toBe(12 * MiB);
    expect(m.pageCache).toBe(52 * MiB);
    expect(m.workingSet).toBe(100 * MiB);
    expect(m.oomKills).toBe(1);
    expect(m.rss).toBe(56 * MiB);
  });
});

describe("no cgroup file system (e.g. inside `ip netns exec`, which mounts its own /sys)", () => {
  const root = join(fixtures, "none");

  test("finds no cgroup and still reads the process's RSS", () => {
    expect(findMemoryCgroup(root)).toBeNull();
    const m = readMemory(null, root);
    expect(m).toMatchObject({ limit: null, usage: null, workingSet: null, pageCache: null, oomKills: null, alone: null, rssPeak: null });
    expect(m.rss).toBe(12 * MiB);
  });
});

describe("parsers", () => {
  test("mountinfo: optional fields and escaped spaces", () => {
    const [m] = parseMountInfo("35 31 0:32 / /sys/fs/cgroup/mem\\040ory rw,relatime shared:14 master:2 - cgroup cgroup rw,memory\n");
    expect(m).toEqual({ root: "/", mountPoint: "/sys/fs/cgroup/mem ory", fsType: "cgroup", superOptions: ["rw", "memory"] });
  });

  test("/proc/self/cgroup: a memory controller listed with others, and the v2 line", () => {
    expect(parseProcCgroup("5:cpu,memory:/a/b\n0::/c\n")).toEqual({ v1Memory: "/a/b", v2: "/c" });
    expect(parseProcCgroup("0::/\n")).toEqual({ v1Memory: null, v2: "/" });
  });
});

describe("this machine", () => {
  test("reads this process's RSS from /proc, close to what the runtime reports", () => {
    const m = readMemory(findMemoryCgroup("/"), "/");
    const runtime = process.memoryUsage().rss;
    expect(m.rss).toBeGreaterThan(runtime / 2);
    expect(m.rss).toBeLessThan(runtime * 2);
    if (m.cgroup) expect(m.usage).toBeGreaterThan(0);
  });
});
