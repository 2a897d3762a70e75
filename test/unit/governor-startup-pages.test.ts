import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { mappingsOf } from "../../src/governor/startup-pages.ts";

const EXE = "/usr/local/bin/kagami";

// Shaped like /proc/self/smaps of a compiled kagami (fields trimmed): text, rodata, a page
// JavaScriptCore froze read-only after writing it, the writable data with the module graph,
// and a library.
const SMAPS = `00200000-01839000 r--p 00000000 fd:01 1234 ${EXE}
Size:              24804 kB
Rss:                7900 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
01a40000-06849000 r-xp 01838000 fd:01 1234 ${EXE}
Size:              80000 kB
Rss:               36000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
0685f000-06863000 r--p 06656000 fd:01 1234 ${EXE}
Size:                 16 kB
Rss:                  16 kB
Anonymous:            16 kB
VmFlags: rd mr mw me ac
06863000-0740d000 rw-p 0665a000 fd:01 1234 ${EXE}
Size:              12000 kB
Rss:                7800 kB
Anonymous:           200 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000028000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:                160 kB
Rss:                 160 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
7f1000000000-7f1000400000 rw-p 00000000 00:00 0 
Size:               4096 kB
Rss:                1024 kB
Anonymous:          1024 kB
VmFlags: rd wr mr mw me ac
`;

describe("mappingsOf", () => {
  test("finds every mapping of the executable and no other file's", () => {
    const maps = mappingsOf(SMAPS, EXE);
    expect(maps.map((m) => m.start)).toEqual([0x200000n, 0x1a40000n, 0x685f000n, 0x6863000n]);
    expect(maps[1]!.end).toBe(0x6849000n);
  });

  test("only read-only mappings without private copies may be unmapped", () => {
    expect(mappingsOf(SMAPS, EXE).map((m) => m.droppable)).toEqual([true, true, false, false]);
  });

  test("a mapping whose Anonymous line is missing is never unmapped", () => {
    const noAnon = SMAPS.split("\n").filter((l) => !l.startsWith("Anonymous:")).join("\n");
    expect(mappingsOf(noAnon, EXE).some((m) => m.droppable)).toBe(false);
  });
});

describe.if(process.platform === "linux")("releaseStartupPages on Linux", () => {
  test("lowers the process's file-backed RSS and the process keeps running", async () => {
    // A fresh process: it pages out its own executable (bun), then runs code again.
    const script = `
      const { releaseStartupPages } = await import(${JSON.stringify(resolve(import.meta.dir, "../../src/governor/startup-pages.ts"))});
      const released = releaseStartupPages();
      const after = await import("node:zlib");
      console.log(JSON.stringify({ ...released, alive: typeof after.gzipSync(new Uint8Array(8)).length }));
    `;
    const child = Bun.spawnSync([process.execPath, "-e", script], { stderr: "pipe", timeout: 30_000 });
    expect(child.stderr.toString()).toBe("");
    const r = JSON.parse(child.stdout.toString()) as { fileBefore: number; fileAfter: number; mappings: number; alive: string };
    expect(r.mappings).toBeGreaterThan(0);
    expect(r.fileAfter).toBeLessThan(r.fileBefore / 2);
    expect(r.alive).toBe("number");
  });
});
