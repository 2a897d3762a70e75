// Puts a byte stream (a peer's or upstream's response body, containerd's Content/Read) under
// the byte budget. The wrapper is pull-based with highWaterMark 0: it reads from the source
// only when its consumer asks for a chunk, and only after the chunk's bytes were granted.
// A chunk's bytes are released when the consumer asks for the next one (it has written the
// previous one out), or when the stream is cancelled, errors, or its signal aborts.
import type { ByteBudget } from "./budget.ts";

/** Largest chunk handed to the consumer; larger source chunks are split. */
export const DEFAULT_CHUNK_BYTES = 128 * 1024;

/**
 * What a source buffers by itself before anyone reads it. Measured with Bun 1.4.5: a fetch()
 * response body holds about 1.7 MiB per connection in userspace whether or not it is read (50
 * unread bodies: +86 MiB anonymous RSS), so a proxied stream costs that much before its first
 * chunk. Reserve it from the budget before opening the source (see reservedBytes): it is what
 * bounds the number of sources open at once, and so the memory, to O(budget), not O(clients).
 */
export const SOURCE_BUFFER_BYTES = 2 * 1024 * 1024;

export interface BudgetedStreamOptions {
  chunkBytes?: number;
  /** Aborting it cancels the source, releases the held bytes and errors the stream. */
  signal?: AbortSignal | undefined;
  /**
   * Bytes the caller acquired from the same budget before it opened the source (normally
   * SOURCE_BUFFER_BYTES); the stream owns them from then on and releases them when it ends.
   * They cover the source's own buffers and the chunk being handed on, so such a stream does
   * not acquire per chunk: holding a reservation while waiting for more could deadlock.
   */
  reservedBytes?: number | undefined;
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
  // What the stream holds of the budget; shared with the finalizer, so it must not refer to the stream.
  const acct: Account = { budget, held: 0, reserved: opts.reservedBytes ?? 0, finished: false };
  let rest: Uint8Array | null = null; // the part of the held source chunk not yet handed on
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;

  const releaseHeld = (): void => {
    if (acct.held > 0) budget.release(acct.held);
    acct.held = 0;
    rest = null;
  };
  const end = (reason: unknown): void => {
    if (acct.finished) return;
    opts.signal?.removeEventListener("abort", onAbort);
    stop.abort(reason);
    releaseHeld();
    settle(acct);
  };
  const fail = (reason: unknown): void => {
    if (acct.finished) return;
    end(reason);
    reader.cancel(reason).catch(() => {});
    controller?.error(reason);
  };
  const onAbort = (): void => fail(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });

  // Makes the grant match a source chunk of n bytes.
  const grantFor = async (n: number): Promise<void> => {
    if (n > acct.held) {
      // Released first, so a chunk larger than the whole budget is granted alone instead of
      // deadlocking against our own grant.
      budget.release(acct.held);
      acct.held = 0;
      acct.held = await budget.acquire(n, signal);
    } else if (n < acct.held) {
      budget.release(acct.held - n);
      acct.held = n;
    }
  };

  // Reads the next non-empty source chunk, its bytes granted (or covered by the reservation);
  // null at the source's end or when the stream ended meanwhile.
  const nextSourceChunk = async (): Promise<Uint8Array | null> => {
    for (;;) {
      if (acct.reserved === 0) acct.held = await budget.acquire(chunkBytes, signal);
      if (acct.finished) return (releaseHeld(), null);
      const r = await reader.read();
      if (acct.finished) return (releaseHeld(), null);
      if (r.done) {
        end(undefined);
        controller?.close();
        return null;
      }
      if (acct.reserved === 0) {
        await grantFor(r.value.byteLength);
        if (acct.finished) return (releaseHeld(), null);
      }
      if (r.value.byteLength > 0) return r.value;
    }
  };

  const stream = new ReadableStream<Uint8Array>(
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
  abandoned.register(stream, acct);
  return stream;
}

interface Account {
  budget: ByteBudget;
  held: number;
  reserved: number;
  finished: boolean;
}

// Releases what the stream still holds, once.
function settle(acct: Account): void {
  if (acct.finished) return;
  acct.finished = true;
  if (acct.held > 0) acct.budget.release(acct.held);
  if (acct.reserved > 0) acct.budget.release(acct.reserved);
  acct.held = acct.reserved = 0;
}

// A stream its consumer dropped without reading to the end or cancelling (a response that was
// never sent) gives its bytes back when it is collected.
const abandoned = new FinalizationRegistry<Account>(settle);
