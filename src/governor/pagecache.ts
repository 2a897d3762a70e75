// Page cache control. Blobs sent by sendfile leave their pages in the page cache, and the
// cgroup charges them to kagami (they count in the kubelet's working set). Under pressure the
// governor asks the kernel to drop the pages of files kagami has served, coldest first, with
// posix_fadvise(POSIX_FADV_DONTNEED) through bun:ffi. A no-op where that is not available.
import { closeSync, openSync } from "node:fs";

const POSIX_FADV_DONTNEED = 4;

type Fadvise = (fd: number, offset: number, length: number, advice: number) => number;

let fadvise: Fadvise | null | undefined;

// glibc first (Debian, distroless); musl names its libc after the architecture.
const LIBC_NAMES = ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`];

function loadFadvise(): Fadvise | null {
  if (process.platform !== "linux") return null;
  const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
  for (const name of LIBC_NAMES) {
    try {
      const lib = dlopen(name, {
        posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 },
      });
      return (fd, offset, length, advice) => lib.symbols.posix_fadvise(fd, offset, length, advice);
    } catch {
      // Try the next name.
    }
  }
  return null;
}

/** True where dropping page cache works (Linux with a loadable libc). */
export function pageCacheControlAvailable(): boolean {
  if (fadvise === undefined) fadvise = loadFadvise();
  return fadvise !== null;
}

/**
 * posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED): the kernel drops the file's clean, unmapped
 * pages. Returns 0 on success, an errno value on failure, or null where unavailable.
 */
export function adviseDontNeed(fd: number): number | null {
  if (!pageCacheControlAvailable() || fadvise === null || fadvise === undefined) return null;
  return fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

/** Drops a file's page cache by path; false if the file is gone or the call failed. */
export function dropFileCache(path: string): boolean {
  if (!pageCacheControlAvailable()) return false;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return false;
  }
  try {
    return adviseDontNeed(fd) === 0;
  } finally {
    closeSync(fd);
  }
}

interface ServedFile {
  size: number;
  lastUse: number;
  /** Responses still sending it (when the caller can tell; see sending()). */
  active: number;
  /** When its page cache was last dropped; null: never. */
  droppedAt: number | null;
}

export interface DropResult {
  files: number;
  /** Sum of the dropped files' sizes: an upper bound of the page cache released. */
  bytes: number;
}

export const DEFAULT_MAX_TRACKED_FILES = 4096;
/**
 * How long after its last use a file may still be streaming out (a Bun.file response does not
 * say when sendfile is done) and refilling its page cache.
 */
export const DEFAULT_RECENT_MS = 10 * 60_000;

/**
 * Files kagami has served (path, size, last use), to drop their page cache coldest first.
 * Capped: past the cap the coldest entry is forgotten.
 */
export class ServedFiles {
  readonly #files = new Map<string, ServedFile>(); // insertion order = least recently used first
  readonly #max: number;
  readonly #recentMs: number;
  readonly #drop: (path: string) => boolean;
  readonly #now: () => number;

  constructor(opts: { maxFiles?: number; recentMs?: number; drop?: (path: string) => boolean; now?: () => number } = {}) {
    this.#max = opts.maxFiles ?? DEFAULT_MAX_TRACKED_FILES;
    this.#recentMs = opts.recentMs ?? DEFAULT_RECENT_MS;
    this.#drop = opts.drop ?? dropFileCache;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#files.size;
  }

  /** A response starts sending `path`; call the returned function when it has finished. */
  sending(path: string, size: number): () => void {
    this.#touch(path, size, 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const f = this.#files.get(path);
      if (f) f.active = Math.max(0, f.active - 1);
      this.#touch(path, size, 0);
    };
  }

  /** A response has finished sending `path`. */
  served(path: string, size: number): void {
    this.#touch(path, size, 0);
  }

  #touch(path: string, size: number, activeDelta: number): void {
    const f = this.#files.get(path);
    this.#files.delete(path);
    this.#files.set(path, { size, lastUse: this.#now(), active: (f?.active ?? 0) + activeDelta, droppedAt: f?.droppedAt ?? null });
    if (this.#files.size > this.#max) {
      const coldest = this.#files.keys().next().value;
      if (coldest !== undefined) this.#files.delete(coldest);
    }
  }

  // Pages may be cached if the file was used since its last drop, is being sent, or was used
  // recently enough that a response may still be sending it.
  #mayBeCached(f: ServedFile, now: number): boolean {
    return f.droppedAt === null || f.droppedAt <= f.lastUse || f.active > 0 || now - f.lastUse < this.#recentMs;
  }

  /**
   * Drops page cache of served files, coldest first, until files of about `targetBytes` were
   * dropped. Files known to be still sending come last, and only if `includeActive` (their pages
   * are then read from disk again). Files whose pages cannot be cached any more are skipped.
   */
  dropColdest(targetBytes: number, includeActive = false): DropResult {
    const result: DropResult = { files: 0, bytes: 0 };
    const now = this.#now();
    for (const active of includeActive ? [false, true] : [false]) {
      for (const [path, f] of this.#files) {
        if (result.bytes >= targetBytes) return result;
        if (f.active > 0 !== active || !this.#mayBeCached(f, now)) continue;
        if (this.#drop(path)) {
          f.droppedAt = now;
          result.files++;
          result.bytes += f.size;
        } else if (f.active === 0) {
          // Gone from disk (evicted): nothing to drop any more.
          this.#files.delete(path);
        }
      }
    }
    return result;
  }

  /** Tracked files, coldest first (for /debug). */
  list(limit = 20): ({ path: string } & ServedFile)[] {
    return [...this.#files].slice(0, limit).map(([path, f]) => ({ path, ...f }));
  }
}
