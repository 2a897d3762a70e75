// A growing ingest: one writer tees bytes (from upstream or a peer) into a temp file of the
// LocalStore while any number of readers follow the file from any offset as it grows. The
// writer verifies size and digest and then publishes the file (LocalStore.adopt); until
// then nothing is visible in the store. Readers never see unverified completion: the last
// byte is held back until the digest matched, so a failed fetch ends every reader with an
// error (a broken response), never a truncated or corrupt success.
// A reader holds budget only for the chunk it has read and not yet handed on; waiting for
// the writer holds none (the writer needs budget to make progress).
import { open, rm, type FileHandle } from "node:fs/promises";
import type { ByteBudget } from "../governor/budget.ts";
import { DigestMismatchError, InvalidError } from "../errors.ts";
import type { ByteRange, Descriptor } from "../oci/index.ts";
import type { LocalStore } from "./local.ts";
import { DigestVerifier } from "./verify.ts";

// Each FileHandle.read costs a fixed ~0.1 ms in Bun 1.4.5 whatever its size: a reader of a
// 512 MiB ingest ran at 1.3-1.7 GB/s with 128 KiB reads and 3.1-3.7 GB/s with 512 KiB ones
// (1 MiB: no better). 512 KiB is also the most one peer socket read delivers (mirror/http1.ts).
export const READ_CHUNK_BYTES = 512 * 1024;

export type IngestState = "writing" | "done" | "failed";

export class IngestAbortedError extends Error {
  override readonly name = "IngestAbortedError";
}

export class GrowingIngest {
  private written = 0;
  private state: IngestState = "writing";
  private failure?: Error;
  private readonly verifier: DigestVerifier;
  private wakers = new Set<() => void>();
  /** Readers attached to the file handle; it closes when the writer is done and they are gone. */
  private readers = 0;
  private closed = false;
  private publishedAs?: Descriptor;

  private constructor(
    private readonly store: LocalStore,
    readonly descriptor: Descriptor,
    readonly tempPath: string,
    private readonly file: FileHandle,
  ) {
    this.verifier = new DigestVerifier(descriptor.digest);
  }

  /** Creates the temp file. The descriptor's size must be known (the upstream's Content-Length). */
  static async start(store: LocalStore, descriptor: Descriptor): Promise<GrowingIngest> {
    if (!Number.isSafeInteger(descriptor.size) || descriptor.size < 0) throw new InvalidError(`invalid size ${descriptor.size}`);
    const temp = store.layout.tempPath();
    const file = await open(temp, "wx+", 0o644);
    return new GrowingIngest(store, descriptor, temp, file);
  }

  get bytesWritten(): number {
    return this.written;
  }

  get status(): IngestState {
    return this.state;
  }

  /** Verified and in the store (a method: the state changes under the caller's feet). */
  published(): boolean {
    return this.state === "done";
  }

  get attachedReaders(): number {
    return this.readers;
  }

  /** Appends a chunk; rejects (and fails the ingest) past the declared size. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== "writing") throw this.failure ?? new InvalidError("ingest already finished");
    if (this.written + chunk.byteLength > this.descriptor.size) {
      const e = new InvalidError(`${this.descriptor.digest}: more than the declared ${this.descriptor.size} bytes`);
      await this.fail(e);
      throw e;
    }
    this.verifier.update(chunk);
    let off = 0;
    while (off < chunk.byteLength) {
      off += (await this.file.write(chunk, off, chunk.byteLength - off, this.written + off)).bytesWritten;
    }
    this.written += chunk.byteLength;
    this.wake();
  }

  /** Verifies size and digest, makes the bytes durable, publishes them in the store. */
  async finish(): Promise<Descriptor> {
    if (this.state !== "writing") throw this.failure ?? new InvalidError("ingest already finished");
    const { digest, size } = this.descriptor;
    try {
      if (this.written !== size) throw new InvalidError(`${digest}: got ${this.written} bytes, declared ${size}`);
      const actual = this.verifier.digest();
      if (actual !== digest) throw new DigestMismatchError(`content hashes to ${actual}, expected ${digest}`);
      await this.file.sync();
      this.publishedAs = await this.store.adopt(this.tempPath, this.descriptor);
    } catch (e) {
      await this.fail(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }
    this.state = "done";
    this.wake();
    await this.closeIfIdle();
    return this.publishedAs;
  }

  /** Ends the ingest: readers error, the temp file goes. Idempotent. */
  async fail(reason: Error): Promise<void> {
    if (this.state !== "writing") return;
    this.state = "failed";
    this.failure = reason;
    this.wake();
    await rm(this.tempPath, { force: true });
    await this.closeIfIdle();
  }

  /**
   * A stream of the bytes in range (inclusive), following the writer. It ends when the range
   * was delivered (the last byte only after verification) and errors when the ingest fails.
   */
  reader(range: ByteRange, budget: ByteBudget, signal?: AbortSignal): ReadableStream<Uint8Array> {
    if (this.state === "failed") throw this.failure ?? new IngestAbortedError("ingest failed");
    if (this.closed) throw new InvalidError("ingest file already closed");
    this.readers++;
    let pos = range.start;
    let held = 0;
    let detached = false;
    let inFlight: Promise<unknown> = Promise.resolve();
    const detach = () => {
      if (detached) return;
      detached = true;
      if (held > 0) budget.release(held);
      held = 0;
      this.readers--;
      // Close only after a read in flight settled: it still uses the handle.
      void inFlight.finally(() => this.closeIfIdle());
    };
    return new ReadableStream<Uint8Array>(
      {
        pull: async (c) => {
          if (held > 0) budget.release(held);
          held = 0;
          try {
            if (pos > range.end) {
              detach();
              c.close();
              return;
            }
            await this.waitFor(pos, signal);
            const limit = this.state === "done" ? this.descriptor.size : Math.min(this.written, this.descriptor.size - 1);
            const want = Math.min(READ_CHUNK_BYTES, limit - pos, range.end + 1 - pos);
            held = await budget.acquire(want, signal);
            if (this.state === "failed") throw this.failure ?? new IngestAbortedError("ingest failed");
            const buf = new Uint8Array(want);
            const read = this.file.read(buf, 0, want, pos);
            inFlight = read;
            const { bytesRead } = await read;
            if (bytesRead <= 0) throw new IngestAbortedError(`short read at ${pos} of ${this.descriptor.digest}`);
            if (bytesRead < held) {
              budget.release(held - bytesRead);
              held = bytesRead;
            }
            pos += bytesRead;
            c.enqueue(bytesRead === want ? buf : buf.subarray(0, bytesRead));
          } catch (e) {
            detach();
            c.error(e);
          }
        },
        cancel: () => detach(),
      },
      { highWaterMark: 0 },
    );
  }

  /** Waits until the byte at pos may be read (or the ingest failed: throws). */
  private async waitFor(pos: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (this.state === "failed") throw this.failure ?? new IngestAbortedError("ingest failed");
      if (signal?.aborted) throw signal.reason;
      const limit = this.state === "done" ? this.descriptor.size : Math.min(this.written, this.descriptor.size - 1);
      if (pos < limit) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          this.wakers.delete(done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        this.wakers.add(done);
        signal?.addEventListener("abort", done, { once: true });
      });
    }
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = new Set();
    for (const w of wakers) w();
  }

  private async closeIfIdle(): Promise<void> {
    if (this.closed || this.state === "writing" || this.readers > 0) return;
    this.closed = true;
    await this.file.close().catch(() => {});
  }
}
