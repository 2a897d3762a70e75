// The mirror path when peers misbehave: die or stall in the middle of a blob (the client's
// download completes from another provider), lie about the bytes (the client never gets a
// complete wrong blob, and the liar is quarantined), or never answer (hedging moves on).
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { blobRequest, content, countingBudget, drain, mirrorWith, peersPerTest, sha256 } from "./peers-fixture.ts";
import { SMALL_BLOB_BYTES } from "../../src/mirror/peers.ts";
import { MAX_READ_BYTES } from "../../src/mirror/http1.ts";
import { CLIENT_PIECE_BYTES } from "../../src/mirror/peer-stream.ts";

const start = peersPerTest();

describe("peer mirror: faults", () => {
  for (const behaviour of ["die-half", "stall-half", "short"] as const) {
    test(`a provider that ${behaviour === "die-half" ? "dies" : behaviour === "short" ? "ends early" : "stalls"} mid-blob: the rest comes from another`, async () => {
      const blob = content(1 << 20);
      const [bad, good] = await start(["bad", behaviour, [blob]], ["good", "good", [blob]]);
      const { mirror } = mirrorWith([
        { peer: bad!, keys: [blob.digest] },
        { peer: good!, keys: [blob.digest] },
      ]);
      const r = await mirror.fetch(blobRequest(blob.digest));
      if (!("hit" in r)) throw new Error("miss");
      expect(r.target).toBe("bad");
      expect(r.hit.headers.get("Content-Length")).toBe(String(1 << 20));
      const { bytes, error } = await drain(r.hit);
      expect(error).toBeUndefined();
      expect(bytes.byteLength).toBe(1 << 20);
      expect(sha256(bytes)).toBe(blob.digest);
      // The second provider was asked only for what was missing.
      const resumed = good!.requests[0]!.headers.range;
      expect(resumed).toMatch(/^bytes=\d+-1048575$/);
      expect(Number(resumed!.slice(6).split("-")[0])).toBeGreaterThan(0);
    });
  }

  test("a resumed ranged download keeps to the client's range", async () => {
    const blob = content(1 << 20);
    const [bad, good] = await start(["bad", "die-half", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith([
      { peer: bad!, keys: [blob.digest] },
      { peer: good!, keys: [blob.digest] },
    ]);
    const r = await mirror.fetch(blobRequest(blob.digest, { range: "bytes=100-900000" }));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.hit.status).toBe(206);
    const { bytes, error } = await drain(r.hit);
    expect(error).toBeUndefined();
    expect(bytes).toEqual(blob.bytes.slice(100, 900001));
    expect(good!.requests[0]!.headers.range).toMatch(/^bytes=\d+-900000$/);
  });

  test("no provider left to resume from: the client's stream breaks, it is not cut short silently", async () => {
    const blob = content(1 << 20);
    const [bad] = await start(["bad", "die-half", [blob]]);
    const { mirror } = mirrorWith([{ peer: bad!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    const { bytes, error } = await drain(r.hit);
    expect(error).toBeDefined();
    expect(bytes.byteLength).toBeLessThan(1 << 20);
  });

  test("a lying provider: the client never gets the whole wrong blob, and the liar is quarantined", async () => {
    const blob = content(SMALL_BLOB_BYTES + 256 * 1024); // streamed, not read whole first
    const [liar, good] = await start(["liar", "lie", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith([
      { peer: liar!, keys: [blob.digest] },
      { peer: good!, keys: [blob.digest] },
    ]);
    const first = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in first)) throw new Error("miss");
    expect(first.target).toBe("liar");
    const { bytes, error } = await drain(first.hit);
    expect(error?.message).toContain("hash to");
    expect(bytes.byteLength).toBeLessThan(blob.bytes.byteLength); // the final chunk was held back
    expect(mirror.quarantined).toBe(1);

    // The client retries: the liar is not asked again.
    const second = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in second)) throw new Error("miss");
    expect(second.target).toBe("good");
    expect(sha256((await drain(second.hit)).bytes)).toBe(blob.digest);
    expect(liar!.requests.length).toBe(1);
  });

  test("a lying provider of a small blob is passed over: the client gets the right bytes, with their length", async () => {
    const blob = content(SMALL_BLOB_BYTES);
    const [liar, good] = await start(["liar", "lie", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith([
      { peer: liar!, keys: [blob.digest] },
      { peer: good!, keys: [blob.digest] },
    ]);
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.target).toBe("good");
    expect(r.hit.headers.get("Content-Length")).toBe(String(blob.bytes.byteLength));
    expect(sha256((await drain(r.hit)).bytes)).toBe(blob.digest);
    expect(mirror.quarantined).toBe(1);
  });

  test("a liar found while resuming: the stream breaks and both contributors are quarantined", async () => {
    const blob = content(1 << 20);
    const [dies, liar] = await start(["dies", "die-half", [blob]], ["liar", "lie", [blob]]);
    const { mirror } = mirrorWith([
      { peer: dies!, keys: [blob.digest] },
      { peer: liar!, keys: [blob.digest] },
    ]);
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    const { bytes, error } = await drain(r.hit);
    expect(error).toBeDefined();
    expect(bytes.byteLength).toBeLessThan(blob.bytes.byteLength);
    expect(mirror.quarantined).toBe(2);
  });

  test("a lying manifest provider is passed over and quarantined", async () => {
    const blob = content(2000, "application/vnd.oci.image.manifest.v1+json");
    const [liar, good] = await start(["liar", "lie", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith([
      { peer: liar!, keys: [blob.digest] },
      { peer: good!, keys: [blob.digest] },
    ]);
    const r = await mirror.fetch({ kind: "manifest", method: "GET", registry: "docker.io", repository: "library/app", digest: blob.digest, signal: AbortSignal.timeout(5000) });
    if (!("hit" in r)) throw new Error(`miss ${JSON.stringify(r.miss)}`);
    expect(r.target).toBe("good");
    expect(sha256(new Uint8Array(await r.hit.arrayBuffer()))).toBe(blob.digest);
    expect(mirror.quarantined).toBe(1);
  });

  // The silent provider holds its answer for the whole test: only a hedge reaches the second.
  test("a provider that never answers is hedged: the next provider serves", async () => {
    const blob = content(10_000);
    const [silent, good] = await start(["silent", "silent", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith(
      [
        { peer: silent!, keys: [blob.digest] },
        { peer: good!, keys: [blob.digest] },
      ],
      { headerTimeoutMs: 60_000 },
    );
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.target).toBe("good");
    expect(sha256((await drain(r.hit)).bytes)).toBe(blob.digest);
    expect(silent!.requests.length).toBe(1);
  });

  test("a provider that never answers, alone: a miss after the header deadline", async () => {
    const blob = content(100);
    const [silent] = await start(["silent", "silent", [blob]]);
    const { mirror } = mirrorWith([{ peer: silent!, keys: [blob.digest] }], { headerTimeoutMs: 200 });
    const r = await mirror.fetch(blobRequest(blob.digest));
    expect("miss" in r && r.miss[0]!.outcome).toBe("no answer within 200 ms");
  });

  // Larger than loopback socket buffers, so the peer is still sending when the client leaves.
  test("a client that goes away mid-blob ends the peer request", async () => {
    const blob = content(32 << 20);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const client = new AbortController();
    const r = await mirror.fetch(blobRequest(blob.digest, { signal: client.signal }));
    if (!("hit" in r)) throw new Error("miss");
    const reader = r.hit.body!.getReader();
    await reader.read();
    client.abort();
    await reader.cancel();
    const end = Date.now() + 3000;
    while (a!.aborted === 0 && Date.now() < end) await Bun.sleep(20);
    expect(a!.aborted).toBe(1);
  });

  test("a streamed chunk's memory is given back once the client asks for the next", async () => {
    const blob = content(4 << 20);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    const reader = r.hit.body!.getReader();
    const kept: Uint8Array[] = [];
    const hash = createHash("sha256");
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      kept.push(value);
    }
    expect(`sha256:${hash.digest("hex")}`).toBe(blob.digest);
    // Pieces of one read share its buffer, freed when the client asks past the last of them.
    // Left to the collector: the first read's (it shares its buffer with the answer's head) and
    // the final read's (nothing asks past it); every piece between them is freed.
    const freed = kept.map((c) => c.byteLength === 0);
    const first = freed.indexOf(true);
    const last = freed.lastIndexOf(true);
    const perRead = MAX_READ_BYTES / CLIENT_PIECE_BYTES;
    expect(first).toBeGreaterThan(-1);
    expect(first).toBeLessThanOrEqual(perRead);
    expect(kept.length - 1 - last).toBeLessThanOrEqual(perRead);
    expect(freed.slice(first, last + 1).every(Boolean)).toBe(true);
  });

  test("every chunk is taken from the byte budget and given back", async () => {
    const budget = countingBudget();
    const blob = content(2 << 20);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }], { budget });
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    expect(sha256((await drain(r.hit)).bytes)).toBe(blob.digest);
    // Taken before each read (the most one read delivers), so at least every byte.
    expect(budget.acquired).toBeGreaterThanOrEqual(2 << 20);
    expect(budget.inUse).toBe(0);
    // One chunk in hand at a time, not the blob.
    expect(budget.peak).toBeLessThanOrEqual(1 << 20);
  });
});
