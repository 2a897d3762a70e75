// Gives back the executable's pages that only start-up touched. Loading the module graph,
// compiling Bun's built-in modules and the first DHT queries run code and read bytecode that an
// idle node never runs again, yet those file-backed pages stay mapped and count in RSS: ~55 MiB
// of the compiled binary is resident at ready, of which an idle node with its DHT up touches
// 25-35 MiB again within a minute (measured with scripts/bench/startup.ts).
// Once the node is up, each mapping of the executable gets MADV_PAGEOUT (the kernel reclaims the
// pages when the caller owns the file or is root; it never discards data), then read-only
// mappings that hold no private copies get MADV_DONTNEED (unmapped: no reclaim rights needed).
// Either way a page is read back from the file the next time it is used. Linux only.
import { readFileSync, realpathSync } from "node:fs";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../observability/log.ts";

const MADV_DONTNEED = 4;
const MADV_PAGEOUT = 21;

export interface Mapping {
  start: bigint;
  end: bigint;
  /** Read-only with no anonymous (copied-on-write) pages: unmapping loses nothing. */
  droppable: boolean;
}

/** The mappings of `file` in /proc/self/smaps text. */
export function mappingsOf(smaps: string, file: string): Mapping[] {
  const mappings: Mapping[] = [];
  for (const block of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ +(.*)$/m.exec(block);
    if (!head || head[4] !== file) continue;
    const anonymousKb = /^Anonymous:\s+(\d+) kB$/m.exec(block)?.[1];
    mappings.push({
      start: BigInt(`0x${head[1]}`),
      end: BigInt(`0x${head[2]}`),
      droppable: !head[3]!.includes("w") && anonymousKb === "0",
    });
  }
  return mappings;
}

export interface Released {
  /** RssFile before and after, bytes. */
  fileBefore: number;
  fileAfter: number;
  mappings: number;
}

/** Pages out this process's executable; null where that cannot be done (not Linux, no libc). */
export function releaseStartupPages(): Released | null {
  if (process.platform !== "linux") return null;
  const madvise = loadMadvise();
  if (!madvise) return null;
  const executable = realpathSync(process.execPath);
  const mappings = () => mappingsOf(readFileSync("/proc/self/smaps", "utf8"), executable);
  const fileBefore = fileRss();
  const all = mappings();
  for (const m of all) madvise(m.start, m.end - m.start, MADV_PAGEOUT);
  // Read again just before unmapping: a mapping may have been written since.
  for (const m of mappings()) if (m.droppable) madvise(m.start, m.end - m.start, MADV_DONTNEED);
  return { fileBefore, fileAfter: fileRss(), mappings: all.length };
}

/** File-backed resident bytes of this process (RssFile). */
function fileRss(): number {
  const kb = /^RssFile:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
  return kb ? Number(kb) * 1024 : 0;
}

type Madvise = (address: bigint, length: bigint, advice: number) => number;

// glibc first (Debian, distroless); musl names its libc after the architecture.
const LIBC_NAMES = ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`];

function loadMadvise(): Madvise | null {
  const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
  for (const name of LIBC_NAMES) {
    try {
      const lib = dlopen(name, { madvise: { args: [FFIType.u64, FFIType.u64, FFIType.i32], returns: FFIType.i32 } });
      return (address, length, advice) => lib.symbols.madvise(address, length, advice);
    } catch {
      // Try the next name.
    }
  }
  return null;
}

/** Start-up is over this long after ready: the first DHT queries and advertisements are done. */
export const STARTUP_SETTLE_MS = 5_000;

/** Releases the start-up pages once, `delayMs` from now; returns a cancel function. */
export function scheduleStartupPageRelease(log: Logger, delayMs = STARTUP_SETTLE_MS): () => void {
  const timer = setTimeout(() => {
    try {
      const released = releaseStartupPages();
      if (released) log.info(released, "released the executable's start-up pages");
    } catch (err) {
      log.warn({ err: errorMessage(err) }, "releasing start-up pages failed");
    }
  }, delayMs);
  timer.unref();
  return () => clearTimeout(timer);
}
