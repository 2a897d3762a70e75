// Digest verification on the worker thread (src/mirror/hasher.ts): the digests equal a hash
// on this thread, every chunk's budget comes back (on finish, drop and failure), the worker
// starts again after it idled out, and through the mirror a lying peer still never produces a
// complete wrong download.
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { MAX_QUEUED_CHUNKS, workerHashers, type Hashers } from "../../src/mirror/hasher.ts";
import { MAX_READ_BYTES } from "../../src/mirror/http1.ts";
import { SMALL_BLOB_BYTES } from "../../src/mirror/peers.ts";
import { blobRequest, content, countingBudget, drain, mirrorWith, peersPerTest, sha256 } from "./peers-fixture.ts";

const start = peersPerTest();
let hashers: Hashers | undefined;
afterEach(() => {
  hashers?.stop();
  hashers = undefined;
});

/** Chunks of random sizes; some are views into a larger buffer (those are copied, not moved). */
function chunks(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = new Uint8Array(randomBytes(1 + ((i * 7919) % 300_000)));
    return i % 3 === 0 ? new Uint8Array(Buffer.concat([Buffer.alloc(5), bytes])).subarray(5) : bytes;
  });
}

describe("digest hashers on a worker", () => {
  test("interleaved streams hash to the same digests as on this thread, and every chunk is acknowledged", async () => {
    hashers = workerHashers();
    const streams = [0, 1, 2].map(() => ({ parts: chunks(40), last: new Uint8Array(randomBytes(1000)) }));
    const expected = streams.map(({ parts, last }) => {
      const h = createHash("sha256");
      for (const p of parts) h.update(p);
      return h.update(last).digest("hex");
    });
    let acknowledged = 0;
    const open = streams.map(() => hashers!.open("sha256"));
    for (let i = 0; i < 40; i++) for (let s = 0; s < 3; s++) await open[s]!.update(streams[s]!.parts[i]!, () => acknowledged++);
    const digests = await Promise.all(open.map((h, s) => h.finish(streams[s]!.last)));
    expect(digests).toEqual(expected);
    expect(acknowledged).toBe(120);
    expect(hashers.mode).toBe("worker");
    expect(hashers.openStreams).toBe(0);
  });

  test("a dropped stream gives every queued chunk's budget back", async () => {
    hashers = workerHashers();
    const h = hashers.open("sha256");
    let acknowledged = 0;
    for (const p of chunks(5)) void h.update(p, () => acknowledged++);
    h.drop();
    await Bun.sleep(0);
    for (let i = 0; i < 100 && (acknowledged < 5 || hashers.openStreams > 0); i++) await Bun.sleep(10);
    expect(acknowledged).toBe(5);
    expect(hashers.openStreams).toBe(0);
  });

  test("stopped hashers fail the open streams, give their budget back, and hash new ones inline", async () => {
    hashers = workerHashers();
    const h = hashers.open("sha256");
    let acknowledged = 0;
    for (const p of chunks(MAX_QUEUED_CHUNKS - 1)) void h.update(p, () => acknowledged++);
    hashers.stop();
    expect(acknowledged).toBe(MAX_QUEUED_CHUNKS - 1);
    await expect(h.finish(new Uint8Array(1))).rejects.toThrow("digest worker failed");
    expect(hashers.mode).toBe("inline");
    const again = hashers.open("sha256");
    const bytes = new Uint8Array(randomBytes(100));
    expect(await again.finish(bytes)).toBe(createHash("sha256").update(bytes).digest("hex"));
  });

  test("streams that must not go off-thread (a tight memory limit) hash inline", async () => {
    let offThread = false;
    hashers = workerHashers({ offThread: () => offThread });
    const bytes = new Uint8Array(randomBytes(3000));
    const h = hashers.open("sha256");
    await h.update(bytes.slice(0, 1000), () => {});
    expect(await h.finish(bytes.subarray(1000))).toBe(createHash("sha256").update(bytes).digest("hex"));
    expect(hashers.running).toBe(false);
    offThread = true;
    const w = hashers.open("sha256");
    await w.update(bytes.slice(0, 1000), () => {});
    expect(await w.finish(bytes.subarray(1000))).toBe(createHash("sha256").update(bytes).digest("hex"));
    expect(hashers.running).toBe(true);
  });

  test("an idle worker is stopped and started again for the next stream", async () => {
    hashers = workerHashers({ idleMs: 20 });
    const digestOf = async (bytes: Uint8Array) => {
      const h = hashers!.open("sha512");
      await h.update(bytes.slice(0, 10), () => {});
      return h.finish(bytes.subarray(10));
    };
    const bytes = new Uint8Array(randomBytes(5000));
    const expected = createHash("sha512").update(bytes).digest("hex");
    expect(await digestOf(bytes)).toBe(expected);
    expect(hashers.running).toBe(true);
    await Bun.sleep(100);
    expect(hashers.running).toBe(false);
    expect(await digestOf(bytes)).toBe(expected);
    expect(hashers.mode).toBe("worker");
  });
});

describe("peer mirror with the worker hashing", () => {
  test("a lying provider: the client never gets the whole wrong blob, and the liar is quarantined", async () => {
    hashers = workerHashers();
    const blob = content(SMALL_BLOB_BYTES * 4);
    const [liar, good] = await start(["liar", "lie", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith(
      [
        { peer: liar!, keys: [blob.digest] },
        { peer: good!, keys: [blob.digest] },
      ],
      { hashers },
    );
    const first = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in first)) throw new Error("miss");
    const { bytes, error } = await drain(first.hit);
    expect(error?.message).toContain("hash to");
    expect(bytes.byteLength).toBeLessThan(blob.bytes.byteLength);
    expect(mirror.quarantined).toBe(1);
    const second = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in second)) throw new Error("miss");
    expect(sha256((await drain(second.hit)).bytes)).toBe(blob.digest);
  });

  test("chunks queued for hashing stay in the byte budget until hashed, and all of it comes back", async () => {
    hashers = workerHashers();
    const budget = countingBudget();
    const blob = content(8 << 20);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }], { budget, hashers });
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    expect(sha256((await drain(r.hit)).bytes)).toBe(blob.digest);
    expect(budget.inUse).toBe(0);
    // The chunk in hand plus at most MAX_QUEUED_CHUNKS waiting for the worker, not the blob.
    expect(budget.peak).toBeLessThanOrEqual((MAX_QUEUED_CHUNKS + 2) * MAX_READ_BYTES);
  });
});
