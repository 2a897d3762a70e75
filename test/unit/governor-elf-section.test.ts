import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { elfSection } from "../../src/governor/elf-section.ts";
import { pagesOfFileRange, type Mapping } from "../../src/governor/startup-pages.ts";

const dir = mkdtempSync(join(tmpdir(), "kagami-elf-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.if(process.platform === "linux")("elfSection", () => {
  test("finds a section of a real executable (bun itself) and not a made-up one", () => {
    const text = elfSection(process.execPath, ".text");
    expect(text?.size).toBeGreaterThan(1 << 20);
    expect(text?.offset).toBeGreaterThan(0);
    expect(elfSection(process.execPath, ".no-such-section")).toBeNull();
  });

  test("a file that is not ELF has no sections", () => {
    const path = join(dir, "not-elf");
    writeFileSync(path, "#!/bin/sh\n".padEnd(128, " "));
    expect(elfSection(path, ".text")).toBeNull();
  });
});

describe("pagesOfFileRange", () => {
  const data: Mapping = { start: 0x6867000n, end: 0x7452000n, offset: 0x665e000n, droppable: false };
  const text: Mapping = { start: 0x1a40000n, end: 0x684a000n, offset: 0x1838000n, droppable: true };

  test("maps file offsets to the whole pages inside, never a page shared with the data before or after", () => {
    // .bun at file offset 0x6819000 (address 0x6a22000), 0xa2f51d bytes: the last partial page stays.
    expect(pagesOfFileRange([text, data], 0x6819000n, 0xa2f51dn, 4096n)).toEqual({ start: 0x6a22000n, end: 0x7451000n });
    expect(pagesOfFileRange([text, data], 0x6819010n, 0x3000n, 4096n)).toEqual({ start: 0x6a23000n, end: 0x6a25000n });
  });

  test("a range no mapping holds, or smaller than a page, gives nothing", () => {
    expect(pagesOfFileRange([text], 0x6819000n, 0x10000n, 4096n)).toBeNull();
    expect(pagesOfFileRange([data], 0x6819010n, 0x100n, 4096n)).toBeNull();
  });
});
