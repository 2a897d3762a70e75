// The body of a blob fetched from peers, as the client sees it: one uninterrupted stream.
// - Pull-based (highWaterMark 0): a chunk is read from the peer only when the client wants
//   one, so a slow client back-pressures the peer and only the chunk in hand is buffered.
// - Budget: before each read, the most one read can deliver is taken from the byte budget
//   (what arrived is kept, the rest given back at once); it is released when the client asks
//   for the next chunk, i.e. after Bun wrote this one out. No read happens without budget.
//   That chunk's memory is freed then too (governor/free-chunk.ts), not at the next GC.
// - Resume: when the peer errors, ends early or stalls, the rest is asked from another
//   provider with `Range: bytes=<next>-<end>`.
// - Verify: for a whole blob each chunk is hashed (hasher.ts, off the main thread) once the
//   client has been sent it, and the final chunk is held back until the digest matches. On a
//   mismatch the stream errors, so the client's connection is cut and it never sees a complete
//   wrong blob as a success.
import { parseDigest, type ByteRange, type Digest } from "../oci/index.ts";
import { freeChunk } from "../governor/free-chunk.ts";
import type { Peer } from "../routing/router.ts";
import type { Budget } from "./budget.ts";
import { inlineHashers, type BlobHasher, type Hashers } from "./hasher.ts";
import { MAX_READ_BYTES, type BodyReader, type ReadResult } from "./http1.ts";

/** A peer response whose body carries bytes from `offset` on. */
export interface BlobSource {
  peer: Peer;
  body: BodyReader;
  /** Aborts the request behind body. */
  abort: AbortController;
}

export interface BlobStreamInit {
  digest: Digest;
  /** The bytes the client gets (the whole blob when it asked for no range). */
  range: ByteRange;
  /** true when range is the whole blob: only then can the digest be checked. */
  verify: boolean;
  first: BlobSource;
  /** Another provider's answer for bytes [offset, range.end], or undefined when none is left. */
  resume: (offset: number, failed: ReadonlySet<string>, signal: AbortSignal) => Promise<BlobSource | undefined>;
  /** A read that waits this long for bytes gives the peer up. */
  stallTimeoutMs: number;
  /** Most resumes of one download. */
  maxResumes: number;
  budget: Budget;
  /** Where whole blobs are hashed (default: inline, on this thread). */
  hashers?: Hashers;
  /** The client's request signal. */
  signal: AbortSignal;
  onResume?: (from: Peer, offset: number, reason: string) => void;
  /** Bytes hashed to another digest: every peer that served a part of them. */
  onMismatch?: (peers: Peer[], actual: Digest) => void;
  /** The stream ended: how many bytes went out and whether it completed. */
  onEnd?: (bytes: number, complete: boolean, error?: string) => void;
}

/**
 * Largest piece of a chunk enqueued at once. Bun.serve keeps what a slow client's socket did not
 * take of an enqueued piece in its own per-connection buffer, outside the byte budget; pieces
 * this small bound that to 64 KiB a client instead of a whole 512 KiB read.
 */
export const CLIENT_PIECE_BYTES = 64 * 1024;

export class StalledError extends Error {
  override readonly name = "StalledError";
}

export function peerBlobStream(init: BlobStreamInit): ReadableStream<Uint8Array> {
  const expected = init.range.end - init.range.start + 1;
  const algorithm = parseDigest(init.digest).algorithm;
  const hasher: BlobHasher | undefined = init.verify ? (init.hashers ?? inlineHashers()).open(algorithm) : undefined;
  const failed = new Set<string>();
  const contributors: Peer[] = [init.first.peer];
  let source: BlobSource | undefined = init.first;
  let reader: BodyReader | undefined = init.first.body;
  let sent = 0;
  let resumes = 0;
  let held = 0; // bytes of the chunk last handed on, released when the next pull shows it was taken
  let handedOn: Uint8Array | undefined; // that chunk, freed then
  let rest: Uint8Array | undefined; // the part of handedOn not yet enqueued
  let verified = false; // handedOn is the final chunk, and the blob matched its digest
  let finished = false;

  const releaseHeld = (): void => {
    if (held > 0) init.budget.release(held);
    held = 0;
  };
  const dropSource = (reason: unknown): void => {
    reader?.cancel(reason).catch(() => {});
    source?.abort.abort(reason);
    reader = undefined;
    source = undefined;
  };
  const end = (complete: boolean, error?: string): void => {
    if (finished) return;
    finished = true;
    releaseHeld();
    if (!complete) hasher?.drop();
    dropSource(new Error(error ?? "done"));
    init.onEnd?.(sent, complete, error);
  };

  // Hands on the next piece of `bytes`; the stream closes after the last piece of the verified
  // final chunk.
  const handOn = (controller: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array): void => {
    const piece = bytes.subarray(0, CLIENT_PIECE_BYTES);
    rest = bytes.subarray(piece.byteLength);
    controller.enqueue(piece);
    if (verified && rest.byteLength === 0) {
      controller.close();
      end(true);
    }
  };

  const readWithStall = async (r: BodyReader): Promise<ReadResult> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stall = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StalledError(`no bytes for ${init.stallTimeoutMs} ms`)), init.stallTimeoutMs);
    });
    try {
      return await Promise.race([r.read(), stall]);
    } finally {
      clearTimeout(timer);
    }
  };

  // Replaces the failed source by another provider's answer for the rest; false when none is left.
  const switchSource = async (reason: string): Promise<boolean> => {
    const from = source?.peer;
    if (from) failed.add(from.id);
    dropSource(new Error(reason));
    if (from) init.onResume?.(from, init.range.start + sent, reason);
    while (resumes < init.maxResumes && !init.signal.aborted && !finished) {
      resumes++;
      const next = await init.resume(init.range.start + sent, failed, init.signal);
      if (!next) return false;
      source = next;
      reader = next.body;
      if (!contributors.some((p) => p.id === next.peer.id)) contributors.push(next.peer);
      return true;
    }
    return false;
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // The chunk in hand goes out in pieces: see CLIENT_PIECE_BYTES.
        if (rest && rest.byteLength > 0) {
          handOn(controller, rest);
          return;
        }
        // Bun has written the chunk handed on last: hash it (its budget is released once hashed), or free it.
        if (hasher && handedOn) {
          const bytes = held;
          held = 0;
          // Waits while this stream's chunks queue for the hasher: it keeps up with one stream.
          await hasher.update(handedOn, () => init.budget.release(bytes));
        } else {
          releaseHeld();
          if (handedOn) freeChunk(handedOn);
        }
        handedOn = undefined;
        try {
          for (;;) {
            if (init.signal.aborted) throw init.signal.reason ?? new Error("client went away");
            let result: ReadResult | undefined;
            let failure: string | undefined;
            // Budget first: a read delivers at most MAX_READ_BYTES (and no more than is left).
            const grant = Math.min(MAX_READ_BYTES, expected - sent);
            await init.budget.acquire(grant, init.signal);
            held = grant;
            if (finished) return releaseHeld(); // cancelled while waiting for budget
            try {
              result = reader ? await readWithStall(reader) : undefined;
              if (!result) failure = "no source";
              else if (result.done) failure = `peer ended after ${sent} of ${expected} bytes`;
            } catch (e) {
              failure = e instanceof StalledError ? e.message : `peer stream failed: ${(e as Error)?.message ?? e}`;
            }
            if (finished) return releaseHeld();
            if (failure !== undefined || !result || result.done) {
              releaseHeld();
              if (await switchSource(failure ?? "no source")) continue;
              throw new Error(`download of ${init.digest} stopped at ${sent} of ${expected} bytes: ${failure}`);
            }
            let chunk = result.value;
            // A peer that sends more than asked is cut at the end of the range.
            if (sent + chunk.byteLength > expected) chunk = chunk.subarray(0, expected - sent);
            // A read never delivers more than the grant (BodyReader): give back what it did not use.
            init.budget.release(held - chunk.byteLength);
            held = chunk.byteLength;
            if (chunk.byteLength === 0) continue;
            sent += chunk.byteLength;
            handedOn = chunk;
            if (sent < expected) {
              handOn(controller, chunk);
              return;
            }
            // The final chunk: handed on only when the whole blob hashes to its digest.
            if (hasher) {
              const actual = `${algorithm}:${await hasher.finish(chunk)}` as Digest;
              if (actual !== init.digest) {
                init.onMismatch?.(contributors, actual);
                throw new Error(`peer bytes hash to ${actual}, not ${init.digest}`);
              }
            }
            verified = true;
            handOn(controller, chunk);
            return;
          }
        } catch (e) {
          end(false, (e as Error)?.message ?? String(e));
          controller.error(e);
        }
      },
      cancel(reason) {
        end(false, `client cancelled: ${(reason as Error)?.message ?? reason ?? ""}`);
      },
    },
    { highWaterMark: 0 },
  );
}
