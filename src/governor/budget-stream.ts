// Puts a byte stream (a peer's or upstream's response body, containerd's Content/Read) under
// the byte budget. The wrapper is pull-based with highWaterMark 0: it reads from the source
// only when its consumer asks for a chunk, and only after the chunk's bytes were granted.
// A chunk's bytes are released when the consumer asks for the next one (it has written the
// previous one out), or when the stream is cancelled, errors, or its signal aborts.
import type { ByteBudget } from "./budget.ts";

/** Largest chunk handed to the consumer; larger source chunks are split. */
export const DEFAULT_CHUNK_BYTES = 128 * 1024;

export interface BudgetedStreamOptions {
  chunkBytes?: number;
  /** Aborting it cancels the source, releases the held bytes and errors the stream. */
  signal?: AbortSignal;
}

export function budgetedStream(
  source: ReadableStream<Uint8Array>,
  budget: ByteBudget,
  opts: BudgetedStreamOptions = {},
): ReadableStream<Uint8Array> {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new RangeError(`invalid chunk size ${chunkBytes}`);
  const reader = source.getReader();
  // Aborted when the stream ends early, so an acquire still queued leaves the budget's queue.
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  let held = 0; // bytes granted for the source chunk we hold
  let rest: Uint8Array | null = null; // its part not yet handed on
  let finished = false;
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;

  const releaseHeld = (): void => {
    if (held > 0) budget.release(held);
    held = 0;
    rest = null;
  };
  const end = (reason: unknown): void => {
    if (finished) return;
    finished = true;
    opts.signal?.removeEventListener("abort", onAbort);
    stop.abort(reason);
    releaseHeld();
  };
  const fail = (reason: unknown): void => {
    if (finished) return;
    end(reason);
    reader.cancel(reason).catch(() => {});
    controller?.error(reason);
  };
  const onAbort = (): void => fail(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });

  // Reads the next non-empty source chunk with its bytes granted; null at the source's end or
  // when the stream ended while waiting.
  const nextSourceChunk = async (): Promise<Uint8Array | null> => {
    for (;;) {
      held = await budget.acquire(chunkBytes, signal);
      if (finished) return (releaseHeld(), null);
      const r = await reader.read();
      if (finished) return (releaseHeld(), null);
      if (r.done) {
        end(undefined);
        controller?.close();
        return null;
      }
      const chunk = r.value;
      if (chunk.byteLength > held) {
        // More than we reserved: reserve all of it (released first, so a chunk larger than
        // the whole budget cannot deadlock against our own reservation).
        budget.release(held);
        held = 0;
        held = await budget.acquire(chunk.byteLength, signal);
        if (finished) return (releaseHeld(), null);
      } else if (chunk.byteLength < held) {
        budget.release(held - chunk.byteLength);
        held = chunk.byteLength;
      }
      if (chunk.byteLength > 0) return chunk;
    }
  };

  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (opts.signal?.aborted) fail(opts.signal.reason);
      },
      async pull(c) {
        try {
          if (rest === null || rest.byteLength === 0) {
            // The consumer has taken every piece of the previous source chunk.
            releaseHeld();
            rest = await nextSourceChunk();
            if (rest === null) return;
          }
          const piece: Uint8Array = rest.subarray(0, chunkBytes);
          rest = rest.subarray(piece.byteLength);
          c.enqueue(piece);
        } catch (e) {
          fail(e);
        }
      },
      cancel(reason) {
        end(reason);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
