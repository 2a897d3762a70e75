// Gives back the executable's pages that only start-up touched. Loading the module graph,
// compiling Bun's built-in modules and the first DHT queries run code and read bytecode that an
// idle node never runs again, yet those file-backed pages stay mapped and count in RSS: ~55 MiB
// of the compiled binary is resident at ready, of which an idle node with its DHT up touches
// 25-35 MiB again within a minute (measured with scripts/bench/startup.ts).
// Once the node is up, each mapping of the executable gets MADV_PAGEOUT (the kernel reclaims the
// pages when the caller owns the file or is root; it never discards data), then read-only
// mappings that hold no private copies get MADV_DONTNEED (unmapped: no reclaim rights needed).
// Either way a page is read back from the file the next time it is used. Linux only.
//
// The module graph (bytecode and sources, the .bun section: ~10 MiB) sits in the executable's
// writable data mapping although Bun only reads it, so neither step could release it: PAGEOUT
// skips file pages that another process maps too (or that the caller may not write) and
// DONTNEED would discard written data. Before the first release the section is made read-only
// (mprotect), once its pages are checked to hold no written copy; it is then an ordinary
// read-only mapping. A write to it would fault loudly instead of being lost.
import { readFileSync, readlinkSync, openSync, readSync, closeSync } from "node:fs";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import { elfSection } from "./elf-section.ts";

const MADV_DONTNEED = 4;
const MADV_PAGEOUT = 21;
const PROT_READ = 1;

export interface Mapping {
  start: bigint;
  end: bigint;
  /** Where the mapping starts in the file. */
  offset: bigint;
  /** Read-only with no anonymous (copied-on-write) pages: unmapping loses nothing. */
  droppable: boolean;
}

/** The mappings of `file` in /proc/self/smaps text. */
export function mappingsOf(smaps: string, file: string): Mapping[] {
  const mappings: Mapping[] = [];
  for (const block of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \S+ +(.*)$/m.exec(block);
    if (!head || head[5] !== file) continue;
    const anonymousKb = /^Anonymous:\s+(\d+) kB$/m.exec(block)?.[1];
    mappings.push({
      start: BigInt(`0x${head[1]}`),
      end: BigInt(`0x${head[2]}`),
      offset: BigInt(`0x${head[4]}`),
      droppable: !head[3]!.includes("w") && anonymousKb === "0",
    });
  }
  return mappings;
}

/**
 * The whole pages in memory that hold file bytes [offset, offset + size), within one mapping;
 * null when no mapping holds them or no whole page is inside.
 */
export function pagesOfFileRange(mappings: Mapping[], offset: bigint, size: bigint, pageSize: bigint): { start: bigint; end: bigint } | null {
  const m = mappings.find((m) => m.offset <= offset && offset < m.offset + (m.end - m.start));
  if (!m) return null;
  const first = m.start + (offset - m.offset);
  const last = first + size < m.end ? first + size : m.end;
  // Inward: a page shared with the neighbouring data (.bss) must stay writable.
  const start = ((first + pageSize - 1n) / pageSize) * pageSize;
  const end = (last / pageSize) * pageSize;
  return start < end ? { start, end } : null;
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
  const libc = loadLibc();
  if (!libc) return null;
  // The name smaps shows, also once the file was replaced (an upgrade): "<path> (deleted)".
  const executable = readlinkSync("/proc/self/exe");
  const mappings = () => mappingsOf(readFileSync("/proc/self/smaps", "utf8"), executable);
  const fileBefore = fileRss();
  if (graphProtected === undefined) graphProtected = protectModuleGraph(libc, mappings());
  const all = mappings();
  for (const m of all) libc.madvise(m.start, m.end - m.start, MADV_PAGEOUT);
  // Read again just before unmapping: a mapping may have been written since.
  for (const m of mappings()) if (m.droppable) libc.madvise(m.start, m.end - m.start, MADV_DONTNEED);
  return { fileBefore, fileAfter: fileRss(), mappings: all.length };
}

/** Whether the module graph was made read-only (decided once per process). */
let graphProtected: boolean | undefined;

/** Makes the .bun section of a compiled executable read-only when none of its pages was written. */
function protectModuleGraph(libc: Libc, mappings: Mapping[]): boolean {
  // `bun src/main.ts`: the executable is bun itself, its module graph is not in use.
  if (!import.meta.url.includes("/$bunfs/")) return false;
  const section = elfSection("/proc/self/exe", ".bun");
  if (!section) return false;
  const pages = pagesOfFileRange(mappings, BigInt(section.offset), BigInt(section.size), BigInt(libc.pageSize));
  if (!pages || anyWrittenPage(pages.start, pages.end, libc.pageSize)) return false;
  return libc.mprotect(pages.start, pages.end - pages.start, PROT_READ) === 0;
}

/**
 * Whether a page in [start, end) holds a private (written) copy: /proc/self/pagemap, 8 bytes a
 * page, bit 63 present, bit 61 file page. Unreadable counts as written: nothing is changed then.
 */
function anyWrittenPage(start: bigint, end: bigint, pageSize: number): boolean {
  const pages = Number((end - start) / BigInt(pageSize));
  const entries = new BigUint64Array(pages);
  let fd: number | undefined;
  try {
    fd = openSync("/proc/self/pagemap", "r");
    const bytes = new Uint8Array(entries.buffer);
    if (readSync(fd, bytes, 0, bytes.length, Number(start / BigInt(pageSize)) * 8) !== bytes.length) return true;
  } catch {
    return true;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return entries.some((e) => ((e >> 63n) & 1n) === 1n && ((e >> 61n) & 1n) === 0n);
}

/** File-backed resident bytes of this process (RssFile). */
function fileRss(): number {
  const kb = /^RssFile:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
  return kb ? Number(kb) * 1024 : 0;
}

interface Libc {
  madvise(address: bigint, length: bigint, advice: number): number;
  mprotect(address: bigint, length: bigint, protection: number): number;
  pageSize: number;
}

// glibc first (Debian, distroless); musl names its libc after the architecture.
const LIBC_NAMES = ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`];

let libcLoaded: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libcLoaded === undefined) libcLoaded = openLibc();
  return libcLoaded;
}

function openLibc(): Libc | null {
  const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
  const range = { args: [FFIType.u64, FFIType.u64, FFIType.i32], returns: FFIType.i32 } as const;
  for (const name of LIBC_NAMES) {
    try {
      const { symbols } = dlopen(name, { madvise: range, mprotect: range, getpagesize: { args: [], returns: FFIType.i32 } });
      return {
        madvise: (address, length, advice) => symbols.madvise(address, length, advice),
        mprotect: (address, length, protection) => symbols.mprotect(address, length, protection),
        pageSize: symbols.getpagesize(),
      };
    } catch {
      // Try the next name.
    }
  }
  return null;
}

/** Start-up is over this long after ready: the first DHT queries and advertisements are done. */
export const STARTUP_SETTLE_MS = 5_000;

/**
 * After start-up, pages are released again this often while the node is idle. The timers of an
 * idle node (governor, DHT, metrics) touch other code now and then: without this, its RSS creeps
 * up by ~10 MiB of executable pages in the first minute (scripts/bench/startup.ts, peak and end).
 * A release costs a read of /proc/self/smaps, a few madvise calls and minor faults for the
 * pages used again (page cache, no disk read).
 */
export const IDLE_RELEASE_MS = 15_000;

/**
 * Busier than this share of one core over the last interval: serving, its pages are hot. An
 * idle node with its DHT up uses ~1.5% (measured: /proc/<pid>/stat over 20 s).
 */
const IDLE_CPU_SHARE = 0.05;

/**
 * Releases the start-up pages `delayMs` from now, then every `everyMs` while the process stays
 * idle; returns a cancel function.
 */
export function scheduleStartupPageRelease(log: Logger, delayMs = STARTUP_SETTLE_MS, everyMs = IDLE_RELEASE_MS): () => void {
  let timer: ReturnType<typeof setTimeout>;
  let cpuAt = process.cpuUsage();
  const release = (first: boolean): void => {
    try {
      const released = releaseStartupPages();
      if (!released) return;
      if (first) log.info(released, "released the executable's start-up pages");
      else log.debug(released, "released the executable's pages (idle)");
    } catch (err) {
      log.warn({ err: errorMessage(err) }, "releasing the executable's pages failed");
      return;
    }
    cpuAt = process.cpuUsage();
    timer = setTimeout(tick, everyMs);
    timer.unref();
  };
  const tick = (): void => {
    const used = process.cpuUsage(cpuAt);
    if ((used.user + used.system) / 1000 < everyMs * IDLE_CPU_SHARE) return release(false);
    cpuAt = process.cpuUsage();
    timer = setTimeout(tick, everyMs);
    timer.unref();
  };
  timer = setTimeout(() => release(true), delayMs);
  timer.unref();
  return () => clearTimeout(timer);
}
