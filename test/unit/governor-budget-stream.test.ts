import { describe, expect, test } from "bun:test";
import { ByteBudget } from "../../src/governor/budget.ts";
import { budgetedStream } from "../../src/governor/budget-stream.ts";

const KiB = 1024;
const settle = () => new Promise((r) => setTimeout(r, 0));

/** A pull source of `count` chunks of `size` bytes (byte i of chunk c = (c + i) & 255); counts its reads. */
function source(count: number, size: number, opts: { failAt?: number } = {}) {
  const stats = { pulls: 0, cancelled: false as boolean | unknown };
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(c) {
        stats.pulls++;
        if (opts.failAt === sent) {
          c.error(new Error("peer reset the connection"));
          return;
        }
        if (sent === count) {
          c.close();
          return;
        }
        const chunk = new Uint8Array(size);
        for (let i = 0; i < size; i++) chunk[i] = (sent + i) & 255;
        sent++;
        c.enqueue(chunk);
      },
      cancel(reason) {
        stats.cancelled = reason ?? true;
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, stats };
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

describe("budgetedStream", () => {
  test("passes every byte through in order, in chunks no larger than chunkBytes, and ends holding nothing", async () => {
    const budget = new ByteBudget({ total: 1024 * KiB });
    const src = source(3, 300 * KiB);
    const chunks = await readAll(budgetedStream(src.stream, budget, { chunkBytes: 128 * KiB }));
    expect(Math.max(...chunks.map((c) => c.byteLength))).toBeLessThanOrEqual(128 * KiB);
    const joined = Buffer.concat(chunks);
    const expected = Buffer.concat([0, 1, 2].map((c) => Buffer.from(Uint8Array.from({ length: 300 * KiB }, (_, i) => (c + i) & 255))));
    expect(joined.equals(expected)).toBe(true);
    expect(budget.inUse).toBe(0);
    expect(budget.peakInUse).toBeLessThanOrEqual(300 * KiB);
  });

  test("reads nothing ahead: the source is read only when the consumer asks", async () => {
    const budget = new ByteBudget({ total: 1024 * KiB });
    const src = source(10, 64 * KiB);
    const reader = budgetedStream(src.stream, budget, { chunkBytes: 64 * KiB }).getReader();
    await settle();
    expect(src.stats.pulls).toBe(0);
    for (let i = 1; i <= 3; i++) {
      await reader.read();
      await settle();
      expect(src.stats.pulls).toBe(i);
      // Only the chunk the consumer holds is charged.
      expect(budget.inUse).toBe(64 * KiB);
    }
    await reader.cancel();
  });

  test("waits for budget before reading the source", async () => {
    const budget = new ByteBudget({ total: 64 * KiB });
    await budget.acquire(64 * KiB);
    const src = source(2, 64 * KiB);
    const reader = budgetedStream(src.stream, budget, { chunkBytes: 64 * KiB }).getReader();
    const first = reader.read();
    await settle();
    expect(src.stats.pulls).toBe(0);
    expect(budget.waiters).toBe(1);
    budget.release(64 * KiB);
    expect((await first).value?.byteLength).toBe(64 * KiB);
    expect(src.stats.pulls).toBe(1);
    await reader.cancel();
    expect(budget.inUse).toBe(0);
  });

  test("no stream starves: 50 streams on a budget of 4 chunks advance together", async () => {
    const chunk = 64 * KiB;
    const budget = new ByteBudget({ total: 4 * chunk });
    const streams = 50;
    const chunksEach = 20;
    const received = new Array<number>(streams).fill(0);
    let progressWhenFirstDone: number[] | null = null;
    await Promise.all(
      Array.from({ length: streams }, async (_, s) => {
        for await (const _c of budgetedStream(source(chunksEach, chunk).stream, budget, { chunkBytes: chunk })) {
          received[s] = (received[s] ?? 0) + 1;
        }
        progressWhenFirstDone ??= [...received];
      }),
    );
    expect(received.every((n) => n === chunksEach)).toBe(true);
    // FIFO grants are round robin: when the first stream is done, every other is close behind.
    expect(Math.min(...(progressWhenFirstDone ?? [0]))).toBeGreaterThanOrEqual(chunksEach - 2);
    expect(budget.peakInUse).toBeLessThanOrEqual(4 * chunk);
    expect(budget.inUse).toBe(0);
    expect(budget.waiters).toBe(0);
  });

  test("a source chunk larger than the whole budget is granted alone instead of deadlocking", async () => {
    const budget = new ByteBudget({ total: 100 * KiB });
    const chunks = await readAll(budgetedStream(source(2, 300 * KiB).stream, budget, { chunkBytes: 64 * KiB }));
    expect(chunks.reduce((n, c) => n + c.byteLength, 0)).toBe(600 * KiB);
    expect(budget.inUse).toBe(0);
  });

  test("a source error errors the stream and releases its bytes", async () => {
    const budget = new ByteBudget({ total: 1024 * KiB });
    const reader = budgetedStream(source(5, 64 * KiB, { failAt: 2 }).stream, budget).getReader();
    await reader.read();
    await reader.read();
    expect(budget.inUse).toBe(64 * KiB);
    await expect(reader.read()).rejects.toThrow("peer reset the connection");
    expect(budget.inUse).toBe(0);
    expect(budget.waiters).toBe(0);
  });

  test("cancel by the consumer releases the held chunk and cancels the source", async () => {
    const budget = new ByteBudget({ total: 1024 * KiB });
    const src = source(5, 64 * KiB);
    const reader = budgetedStream(src.stream, budget).getReader();
    await reader.read();
    expect(budget.inUse).toBe(64 * KiB);
    await reader.cancel(new Error("client closed"));
    expect(budget.inUse).toBe(0);
    expect(src.stats.cancelled).toBeInstanceOf(Error);
  });

  test("an abort while the consumer holds a chunk releases it, errors the stream and cancels the source", async () => {
    const budget = new ByteBudget({ total: 1024 * KiB });
    const ac = new AbortController();
    const src = source(5, 64 * KiB);
    const reader = budgetedStream(src.stream, budget, { signal: ac.signal }).getReader();
    await reader.read();
    ac.abort(new Error("request aborted"));
    expect(budget.inUse).toBe(0);
    await expect(reader.read()).rejects.toThrow("request aborted");
    expect(src.stats.cancelled).toBeInstanceOf(Error);
  });

  test("no leak after 10,000 aborted or cancelled streams waiting for budget", async () => {
    const chunk = 64 * KiB;
    const budget = new ByteBudget({ total: 2 * chunk });
    // One stream holds a chunk and one more holds the rest: every other stream has to wait.
    const holder = budgetedStream(source(100, chunk).stream, budget, { chunkBytes: chunk }).getReader();
    await holder.read();
    await budget.acquire(chunk);
    const n = 10_000;
    const reads: Promise<unknown>[] = [];
    const stops: (() => void)[] = [];
    for (let i = 0; i < n; i++) {
      const ac = new AbortController();
      const reader = budgetedStream(source(10, chunk).stream, budget, { chunkBytes: chunk, signal: ac.signal }).getReader();
      reads.push(reader.read().then(() => "read", () => "rejected"));
      // Half abort their request signal, half are cancelled by their consumer.
      stops.push(i % 2 === 0 ? () => ac.abort(new Error("gone")) : () => void reader.cancel(new Error("closed")));
    }
    await settle();
    expect(budget.waiters).toBe(n);
    for (const stop of stops) stop();
    const outcomes = await Promise.all(reads);
    expect(outcomes.filter((o) => o === "rejected").length).toBe(n / 2);
    expect(budget.waiters).toBe(0);
    expect(budget.inUse).toBe(2 * chunk);
    budget.release(chunk);
    await holder.cancel();
    expect(budget.inUse).toBe(0);
    expect(budget.waiters).toBe(0);
  });

  test("a stream aborted in the tick its chunk is granted releases the grant", async () => {
    const chunk = 64 * KiB;
    const budget = new ByteBudget({ total: chunk });
    for (let i = 0; i < 20; i++) {
      await budget.acquire(chunk);
      const ac = new AbortController();
      const reader = budgetedStream(source(3, chunk).stream, budget, { chunkBytes: chunk, signal: ac.signal }).getReader();
      const pending = reader.read().catch(() => "rejected");
      await settle();
      expect(budget.waiters).toBe(1);
      // The release grants the stream's queued acquire; the abort lands before the stream sees it.
      budget.release(chunk);
      ac.abort(new Error("gone"));
      expect(await pending).toBe("rejected");
      expect(budget.inUse).toBe(0);
    }
    expect(budget.waiters).toBe(0);
  });

  test("a stream dropped without being read to the end or cancelled gives its bytes back when collected", async () => {
    const budget = new ByteBudget({ total: 8 * 1024 * KiB });
    const reservedBytes = await budget.acquire(2 * 1024 * KiB);
    // In a function of its own, so nothing here keeps the stream or its reader alive.
    await (async () => {
      const reader = budgetedStream(source(4, 64 * KiB).stream, budget, { reservedBytes }).getReader();
      await reader.read();
    })();
    expect(budget.inUse).toBe(2 * 1024 * KiB);
    for (let i = 0; i < 50 && budget.inUse > 0; i++) {
      Bun.gc(true);
      await settle();
    }
    expect(budget.inUse).toBe(0);
  });

  describe("with a reservation for the source's own buffers", () => {
    test("takes no per-chunk budget and releases the reservation at the end", async () => {
      const budget = new ByteBudget({ total: 4 * KiB * 1024 });
      const reserved = await budget.acquire(2 * KiB * 1024);
      const chunks = await readAll(budgetedStream(source(4, 256 * KiB).stream, budget, { chunkBytes: 64 * KiB, reservedBytes: reserved }));
      expect(chunks.length).toBe(16);
      expect(budget.peakInUse).toBe(2 * KiB * 1024);
      expect(budget.inUse).toBe(0);
    });

    test("releases the reservation on cancel, source error and abort", async () => {
      const budget = new ByteBudget({ total: 8 * KiB * 1024 });
      const ac = new AbortController();
      const cancelled = budgetedStream(source(4, KiB).stream, budget, { reservedBytes: await budget.acquire(KiB * 1024) }).getReader();
      const failing = budgetedStream(source(4, KiB, { failAt: 1 }).stream, budget, { reservedBytes: await budget.acquire(KiB * 1024) }).getReader();
      const aborted = budgetedStream(source(4, KiB).stream, budget, { reservedBytes: await budget.acquire(KiB * 1024), signal: ac.signal }).getReader();
      await Promise.all([cancelled.read(), failing.read(), aborted.read()]);
      expect(budget.inUse).toBe(3 * KiB * 1024);
      await cancelled.cancel();
      await expect(failing.read()).rejects.toThrow("peer reset");
      ac.abort(new Error("gone"));
      expect(budget.inUse).toBe(0);
    });

    test("20 sources on a budget of 4 reservations take turns and all finish", async () => {
      const reservation = 2 * KiB * 1024;
      const budget = new ByteBudget({ total: 4 * reservation });
      const all = Promise.all(
        Array.from({ length: 20 }, async () => {
          const reserved = await budget.acquire(reservation);
          return (await readAll(budgetedStream(source(8, 128 * KiB).stream, budget, { reservedBytes: reserved }))).length;
        }),
      );
      expect(budget.waiters).toBe(16);
      expect((await all).every((n) => n === 8)).toBe(true);
      expect(budget.peakInUse).toBe(4 * reservation);
      expect(budget.inUse).toBe(0);
    });
  });
});
