// Digest verification of blobs streamed from peers, off the main thread.
// Why: sha256 runs at ~1.4 GB/s on one core here (`openssl speed -evp sha256`), and on the
// main thread it stood between every chunk received and the next one sent: perf showed C's
// thread at 100%, half of it in sha256 and half in the kernel's socket copies. In a Worker the
// hashing of chunk n overlaps the send of chunk n+1, and a burst of peer streams no longer
// stalls the event loop that serves everything else.
// A chunk is hashed after the client has been sent it: its buffer is moved to the worker (no
// copy) and the caller is told when it has been hashed, so the byte budget covers it until then
// and a lagging worker back-pressures the streams. The final chunk is copied, hashed, and only
// then may the caller send it. Inline (same thread) where a Worker cannot start, and in tests.
import { createHash } from "node:crypto";
import type { DigestAlgorithm } from "../oci/index.ts";
import { freeChunk } from "../governor/free-chunk.ts";

export interface BlobHasher {
  /**
   * Hashes `chunk`, which the caller gives up (its buffer may move to another thread).
   * `hashed` is called once the bytes are hashed and freed, also when the hasher fails.
   * Resolves when the stream may go on: fewer than MAX_QUEUED_CHUNKS of it wait to be hashed.
   */
  update(chunk: Uint8Array, hashed: () => void): Promise<void>;
  /** Hashes the final chunk (a copy: the caller still sends it); the hex digest of all. */
  finish(last: Uint8Array): Promise<string>;
  /** The stream ended without a digest: forget it. */
  drop(): void;
}

export interface Hashers {
  open(algorithm: DigestAlgorithm): BlobHasher;
  /** Streams being hashed now. */
  readonly openStreams: number;
  readonly mode: "worker" | "inline";
  /** A worker thread is up now (it stops when idle). */
  readonly running: boolean;
  stop(): void;
}

/** Messages to the worker (hasher-worker.ts). */
export type ToHasher =
  | { type: "open"; id: number; algorithm: DigestAlgorithm }
  | { type: "update"; id: number; bytes: Uint8Array }
  | { type: "finish"; id: number; bytes: Uint8Array }
  | { type: "drop"; id: number };

/** Messages from the worker. */
export type FromHasher =
  | { type: "hashed"; id: number }
  | { type: "digest"; id: number; hex: string }
  | { type: "failed"; id: number; message: string }
  | { type: "dropped"; id: number };

export function inlineHashers(): Hashers {
  let streams = 0;
  return {
    mode: "inline",
    running: false,
    get openStreams() {
      return streams;
    },
    open(algorithm) {
      const hash = createHash(algorithm);
      streams++;
      let open = true;
      const close = () => {
        if (open) streams--;
        open = false;
      };
      return {
        async update(chunk, hashed) {
          hash.update(chunk);
          freeChunk(chunk);
          hashed();
        },
        async finish(last) {
          close();
          return hash.update(last).digest("hex");
        },
        drop: close,
      };
    },
    stop() {},
  };
}

/**
 * Chunks of one stream that may wait to be hashed: the receive of the next chunk overlaps the
 * hashing of these, and a stream holds at most this many (x 512 KiB) beyond the one in hand.
 */
export const MAX_QUEUED_CHUNKS = 8;

interface WorkerStream {
  /** One callback per update not yet hashed, in order. */
  pending: (() => void)[];
  /** Resolved when pending falls below MAX_QUEUED_CHUNKS. */
  room?: () => void;
  finished?: { resolve: (hex: string) => void; reject: (e: Error) => void };
}

// From source the worker sits beside this module. A compiled executable holds its modules under
// /$bunfs/root/ named relative to the entry points' common directory (src/): scripts/build.ts
// must list src/mirror/hasher-worker.ts as an entry point.
function workerSpecifier(): string {
  return import.meta.url.includes("/$bunfs/") ? "./mirror/hasher-worker.ts" : new URL("./hasher-worker.ts", import.meta.url).href;
}

/** An idle worker is stopped after this: it costs ~5 MiB of RSS, and a node mostly idles. */
export const WORKER_IDLE_MS = 30_000;

/**
 * Below this memory limit streams hash inline. Measured in a 128Mi cgroup with 10-200 streams
 * proxied from a peer (scripts/bench/memory.ts): with the worker, anonymous memory was ~25 MiB
 * higher (an idle worker alone costs ~4 MiB: the rest is chunks in flight between threads),
 * the executable's pages were pushed out (27,734 major faults) and throughput fell 0.39 -> 0.24
 * GB/s. Where memory is not that tight (no cgroup limit: 512 MiB) the worker pays.
 */
export const WORKER_MIN_LIMIT_BYTES = 512 * 2 ** 20;

export interface WorkerHashersOptions {
  idleMs?: number;
  onFailure?: (error: unknown) => void;
  /** Asked for each stream: false hashes it inline (e.g. under a tight memory limit). */
  offThread?: () => boolean;
}

/**
 * Hashers on one Worker, started at the first stream and stopped when idle. If the worker
 * cannot start or dies, its streams fail (their clients retry) and later ones hash inline.
 */
export function workerHashers(opts: WorkerHashersOptions = {}): Hashers {
  const idleMs = opts.idleMs ?? WORKER_IDLE_MS;
  const inline = inlineHashers();
  const streams = new Map<number, WorkerStream>();
  let worker: Worker | undefined;
  let broken = false;
  let nextId = 0;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;

  const fail = (error: unknown, report = true): void => {
    if (broken) return;
    broken = true;
    worker?.terminate();
    worker = undefined;
    const e = new Error(`digest worker failed: ${(error as Error)?.message ?? error}`);
    for (const s of streams.values()) {
      for (const hashed of s.pending.splice(0)) hashed();
      s.room?.();
      s.finished?.reject(e);
    }
    streams.clear();
    if (report) opts.onFailure?.(error);
  };
  const onMessage = (e: MessageEvent<FromHasher>): void => {
    const m = e.data;
    const s = streams.get(m.id);
    if (!s) return;
    if (m.type === "hashed") {
      s.pending.shift()?.();
      if (s.room && s.pending.length < MAX_QUEUED_CHUNKS) {
        s.room();
        s.room = undefined;
      }
      return;
    }
    streams.delete(m.id);
    for (const hashed of s.pending.splice(0)) hashed();
    s.room?.();
    armIdle();
    if (m.type === "digest") s.finished?.resolve(m.hex);
    else if (m.type === "failed") s.finished?.reject(new Error(m.message));
  };
  const ensureWorker = (): Worker => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = undefined;
    if (worker) return worker;
    const w = new Worker(workerSpecifier());
    // The worker never keeps the process alive.
    w.unref();
    w.addEventListener("message", onMessage);
    w.addEventListener("error", (e) => fail(e.error ?? e.message));
    worker = w;
    return w;
  };
  const armIdle = (): void => {
    if (streams.size > 0 || !worker || idleTimer) return;
    idleTimer = setTimeout(() => {
      idleTimer = undefined;
      if (streams.size > 0) return;
      worker?.terminate();
      worker = undefined;
    }, idleMs);
    idleTimer.unref?.();
  };
  const post = (m: ToHasher, transfer?: ArrayBuffer[]): void => {
    try {
      ensureWorker().postMessage(m, transfer ?? []);
    } catch (e) {
      fail(e);
    }
  };

  return {
    get mode() {
      return broken ? "inline" : "worker";
    },
    get openStreams() {
      return streams.size + inline.openStreams;
    },
    get running() {
      return worker !== undefined;
    },
    open(algorithm) {
      if (broken || opts.offThread?.() === false) return inline.open(algorithm);
      const id = nextId++;
      const stream: WorkerStream = { pending: [] };
      streams.set(id, stream);
      post({ type: "open", id, algorithm });
      let closed = false;
      return {
        update(chunk, hashed) {
          if (broken || closed) {
            hashed();
            return Promise.resolve();
          }
          stream.pending.push(hashed);
          // A chunk that is all of its buffer moves without a copy; a view into a larger one is copied.
          const whole = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
          const bytes = whole ? chunk : chunk.slice();
          post({ type: "update", id, bytes }, [bytes.buffer as ArrayBuffer]);
          if (stream.pending.length < MAX_QUEUED_CHUNKS) return Promise.resolve();
          return new Promise<void>((resolve) => {
            stream.room = resolve;
          });
        },
        finish(last) {
          closed = true;
          if (broken) return Promise.reject(new Error("digest worker failed"));
          return new Promise<string>((resolve, reject) => {
            stream.finished = { resolve, reject };
            post({ type: "finish", id, bytes: last.slice() });
          });
        },
        drop() {
          if (closed || broken) return;
          closed = true;
          stream.room?.();
          // The chunks still queued stay counted until the worker has freed them ("dropped").
          post({ type: "drop", id });
        },
      };
    },
    stop() {
      if (idleTimer) clearTimeout(idleTimer);
      fail(new Error("stopped"), false);
    },
  };
}
