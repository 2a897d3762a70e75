import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adviseDontNeed, dropFileCache, pageCacheControlAvailable, ServedFiles } from "../../src/governor/pagecache.ts";
import { createGovernor } from "../../src/governor/pressure.ts";
import { lazyLoop } from "../../src/governor/pagecache-loop.ts";
import { silentLogger } from "../../src/observability/log.ts";

const dir = mkdtempSync(join(tmpdir(), `kagami-pagecache-${process.pid}-`));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Bytes of `path` resident in the page cache, by util-linux's fincore. */
function residentBytes(path: string): number {
  const r = Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", path]);
  if (r.exitCode !== 0) throw new Error(`fincore failed: ${r.stderr.toString()}`);
  return Number(r.stdout.toString().trim());
}

function cachedFile(name: string, size: number): string {
  const path = join(dir, name);
  writeFileSync(path, new Uint8Array(size).fill(7));
  const fd = openSync(path, "r");
  fsyncSync(fd); // dirty pages are not dropped; written-back ones are
  closeSync(fd);
  readFileSync(path);
  return path;
}

describe.if(process.platform === "linux")("posix_fadvise on Linux", () => {
  test("is callable through bun:ffi and returns 0", () => {
    expect(pageCacheControlAvailable()).toBe(true);
    const fd = openSync(cachedFile("probe", 4096), "r");
    try {
      expect(adviseDontNeed(fd)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  test("returns the errno (EBADF) for an invalid descriptor", () => {
    expect(adviseDontNeed(-1)).toBe(9);
  });

  test("drops a served file's pages from the page cache", () => {
    const path = cachedFile("blob", 8 * 2 ** 20);
    expect(residentBytes(path)).toBeGreaterThan(0);
    expect(dropFileCache(path)).toBe(true);
    expect(residentBytes(path)).toBe(0);
  });

  test("a file that is gone is skipped", () => {
    expect(dropFileCache(join(dir, "missing"))).toBe(false);
  });
});

describe("ServedFiles", () => {
  const tracker = (maxFiles = 10) => {
    const dropped: string[] = [];
    const clock = { now: 0 };
    const files = new ServedFiles({ maxFiles, recentMs: 1000, now: () => clock.now, drop: (p) => (dropped.push(p), true) });
    return { files, dropped, clock };
  };

  test("drops files coldest first, only as many as needed", () => {
    const { files, dropped, clock } = tracker();
    for (const p of ["/a", "/b", "/c"]) {
      clock.now += 10;
      files.served(p, 100);
    }
    clock.now += 10;
    files.served("/a", 100); // used again: now the hottest
    expect(files.dropColdest(150)).toEqual({ files: 2, bytes: 200 });
    expect(dropped).toEqual(["/b", "/c"]);
  });

  test("a file is dropped again only if used since, or recently enough to be still streaming", () => {
    const { files, dropped, clock } = tracker();
    files.served("/old", 100);
    files.served("/hot", 100);
    clock.now = 500;
    expect(files.dropColdest(1000)).toEqual({ files: 2, bytes: 200 });
    // Within the recent window both may still be sending and refilling their cache.
    clock.now = 900;
    expect(files.dropColdest(1000).files).toBe(2);
    // Past it, only the file used since its last drop can hold pages.
    clock.now = 2000;
    files.served("/hot", 100);
    dropped.length = 0;
    expect(files.dropColdest(1000)).toEqual({ files: 1, bytes: 100 });
    expect(dropped).toEqual(["/hot"]);
  });

  test("files known to be still sending are dropped after every other one, and only when asked", () => {
    const { files, dropped, clock } = tracker();
    const done = files.sending("/live", 1000);
    files.served("/old", 10);
    clock.now = 10;
    expect(files.dropColdest(500)).toEqual({ files: 1, bytes: 10 });
    expect(dropped).toEqual(["/old"]);
    clock.now = 5000; // /old's pages are gone for good; /live is still sending however old
    expect(files.dropColdest(500, true)).toEqual({ files: 1, bytes: 1000 });
    expect(dropped).toEqual(["/old", "/live"]);
    done();
    done();
    expect(files.list().find((f) => f.path === "/live")).toMatchObject({ active: 0 });
  });

  test("a file gone from disk is forgotten", () => {
    const files = new ServedFiles({ drop: () => false });
    files.served("/evicted", 10);
    expect(files.dropColdest(100)).toEqual({ files: 0, bytes: 0 });
    expect(files.size).toBe(0);
  });

  test("is capped: past maxFiles the coldest entry is forgotten", () => {
    const { files } = tracker(3);
    for (const p of ["/1", "/2", "/3", "/4"]) files.served(p, 1);
    expect(files.size).toBe(3);
    expect(files.list().map((f) => f.path)).toEqual(["/2", "/3", "/4"]);
  });
});

describe.if(process.platform === "linux")("the page-cache worker", () => {
  test("drops a served file's pages while the cgroup's working set is above the soft threshold", async () => {
    // The v2 fixture: working set 100 MiB of a 128 MiB limit, above the soft threshold (64 MiB).
    const root = join(import.meta.dir, "../fixtures/cgroup/v2");
    const governor = createGovernor({ memoryGovernor: true }, silentLogger(), { root });
    try {
      const path = cachedFile("served-blob", 4 * 2 ** 20);
      expect(residentBytes(path)).toBeGreaterThan(0);
      governor.noteFileServed(path, 4 * 2 ** 20);
      const deadline = Date.now() + 10_000;
      while ((residentBytes(path) > 0 || (governor.state().pageCache?.droppedFiles ?? 0) === 0) && Date.now() < deadline) {
        await Bun.sleep(50);
      }
      expect(residentBytes(path)).toBe(0);
      expect(governor.state().pageCache).toMatchObject({ mode: "worker", controllable: true });
      expect(governor.state().pageCache?.droppedFiles).toBeGreaterThan(0);
    } finally {
      governor.stop();
    }
  });
});

describe("lazyLoop", () => {
  const pressure = { workingSet: 1, committed: 1, measuredBy: "cgroup" as const };
  const t = { soft: 10, hard: 20, hysteresis: 1 };

  test("starts the loop at the first file served, with the thresholds sampled before", () => {
    const calls: string[] = [];
    let starts = 0;
    const loop = lazyLoop(() => {
      starts++;
      return {
        served: (path) => void calls.push(`served ${path}`),
        sending: (path) => (calls.push(`sending ${path}`), () => calls.push(`sent ${path}`)),
        sampled: (_p, th) => void calls.push(`sampled ${th.soft}`),
        stats: () => ({ mode: "worker", samples: 7, droppedFiles: 0, droppedBytes: 0 }),
        stop: () => void calls.push("stop"),
      };
    }, "worker");
    loop.sampled(pressure, t);
    loop.sampled(pressure, { ...t, soft: 11 });
    expect(starts).toBe(0);
    expect(loop.stats().samples).toBe(0);
    loop.served("/a", 1);
    const done = loop.sending("/b", 2);
    done();
    loop.sampled(pressure, { ...t, soft: 12 });
    loop.stop();
    expect(starts).toBe(1);
    expect(calls).toEqual(["sampled 11", "served /a", "sending /b", "sent /b", "sampled 12", "stop"]);
    expect(loop.stats().samples).toBe(7);
  });
});
