import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adviseDontNeed, dropFileCache, pageCacheControlAvailable, ServedFiles } from "../../src/governor/pagecache.ts";

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
    let clock = 0;
    const files = new ServedFiles({ maxFiles, now: () => ++clock, drop: (p) => (dropped.push(p), true) });
    return { files, dropped };
  };

  test("drops finished files coldest first, only as many as needed", () => {
    const { files, dropped } = tracker();
    files.served("/a", 100);
    files.served("/b", 100);
    files.served("/c", 100);
    files.served("/a", 100); // used again: now the hottest
    expect(files.dropColdest(150)).toEqual({ files: 2, bytes: 200 });
    expect(dropped).toEqual(["/b", "/c"]);
    expect(files.size).toBe(1);
  });

  test("files still being sent are dropped only after every finished one, and only when asked", () => {
    const { files, dropped } = tracker();
    const done = files.sending("/live", 1000);
    files.served("/old", 10);
    expect(files.dropColdest(500)).toEqual({ files: 1, bytes: 10 });
    expect(dropped).toEqual(["/old"]);
    expect(files.dropColdest(500, true)).toEqual({ files: 1, bytes: 1000 });
    expect(dropped).toEqual(["/old", "/live"]);
    // Still sending: it stays tracked; once done it is an ordinary finished file.
    expect(files.size).toBe(1);
    done();
    done();
    expect(files.list()[0]).toMatchObject({ path: "/live", active: 0 });
  });

  test("is capped: past maxFiles the coldest entry is forgotten", () => {
    const { files } = tracker(3);
    for (const p of ["/1", "/2", "/3", "/4"]) files.served(p, 1);
    expect(files.size).toBe(3);
    expect(files.list().map((f) => f.path)).toEqual(["/2", "/3", "/4"]);
  });
});
