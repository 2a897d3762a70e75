// The growing ingest with a real LocalStore on disk: readers follow the writer from any
// offset, never see completion before verification, error when the writer fails, hold no
// budget when done, and a reader that does not read does not hold the writer back.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DigestMismatchError, NotFoundError } from "../../src/errors.ts";
import { ByteBudget } from "../../src/governor/budget.ts";
import { OCTET_STREAM } from "../../src/oci/index.ts";
import { IngestingStore } from "../../src/store/ingesting.ts";
import { GrowingIngest } from "../../src/store/local-ingest.ts";
import { LocalStore } from "../../src/store/local.ts";
import { digestBytes } from "../../src/store/verify.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function store(): Promise<LocalStore> {
  const d = await mkdtemp(join(tmpdir(), "kagami-ingest-"));
  dirs.push(d);
  return LocalStore.open(d);
}

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 7) & 0xff;
  return b;
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The error a promise rejects with (handled at once, so an early rejection is not "unhandled"). */
function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error("expected a rejection"),
    (e: unknown) => e,
  );
}

describe("GrowingIngest", () => {
  test("readers attached before, during and after the writes get every byte; the blob is published", async () => {
    const s = await store();
    const budget = new ByteBudget({ total: 1 << 20 });
    const data = bytes(1_000_000);
    const digest = digestBytes(data);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest, size: data.length });
    const early = collect(ingest.reader({ start: 0, end: data.length - 1 }, budget));
    await ingest.write(data.subarray(0, 300_000));
    const middle = collect(ingest.reader({ start: 0, end: data.length - 1 }, budget));
    const ranged = collect(ingest.reader({ start: 500_000, end: 699_999 }, budget));
    await ingest.write(data.subarray(300_000));
    expect(await s.has(digest)).toBe(false);
    await ingest.finish();
    expect(await s.has(digest)).toBe(true);
    expect(digestBytes(await early)).toBe(digest);
    expect(digestBytes(await middle)).toBe(digest);
    expect(await ranged).toEqual(data.subarray(500_000, 700_000));
    expect(budget.inUse).toBe(0);
    expect(await readdir(s.layout.ingest)).toEqual([]);
  });

  test("the last byte waits for verification: a digest mismatch errors every reader, nothing is published", async () => {
    const s = await store();
    const budget = new ByteBudget({ total: 1 << 20 });
    const data = bytes(200_000);
    const digest = digestBytes(bytes(200_000, 2));
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest, size: data.length });
    let received = 0;
    const reader = failure(
      (async () => {
        for await (const chunk of ingest.reader({ start: 0, end: data.length - 1 }, budget)) received += chunk.byteLength;
      })(),
    );
    await ingest.write(data);
    await Bun.sleep(20);
    expect(received).toBe(data.length - 1);
    await expect(ingest.finish()).rejects.toBeInstanceOf(DigestMismatchError);
    expect(await reader).toBeInstanceOf(DigestMismatchError);
    expect(await s.has(digest)).toBe(false);
    expect(await readdir(s.layout.ingest)).toEqual([]);
    expect(budget.inUse).toBe(0);
  });

  test("a writer that fails mid-way errors waiting readers and removes the temp file", async () => {
    const s = await store();
    const budget = new ByteBudget({ total: 1 << 20 });
    const data = bytes(100_000);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest: digestBytes(data), size: data.length });
    const reader = failure(collect(ingest.reader({ start: 0, end: data.length - 1 }, budget)));
    const tail = failure(collect(ingest.reader({ start: 90_000, end: data.length - 1 }, budget)));
    await ingest.write(data.subarray(0, 40_000));
    await ingest.fail(new Error("upstream went away"));
    expect(String(await reader)).toContain("upstream went away");
    expect(String(await tail)).toContain("upstream went away");
    expect(await readdir(s.layout.ingest)).toEqual([]);
    expect(() => ingest.reader({ start: 0, end: 10 }, budget)).toThrow("upstream went away");
  });

  test("more bytes than declared fail the ingest", async () => {
    const s = await store();
    const data = bytes(1000);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest: digestBytes(data), size: 999 });
    await expect(ingest.write(data)).rejects.toThrow("more than the declared");
    expect(ingest.status).toBe("failed");
  });

  test("a reader that stops reading holds one chunk of budget and does not hold the writer back", async () => {
    const s = await store();
    const budget = new ByteBudget({ total: 512 * 1024 });
    const data = bytes(4_000_000);
    const digest = digestBytes(data);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest, size: data.length });
    const stalled = ingest.reader({ start: 0, end: data.length - 1 }, budget).getReader();
    await ingest.write(data.subarray(0, 100_000));
    await stalled.read();
    for (let off = 100_000; off < data.length; off += 64 * 1024) await ingest.write(data.subarray(off, off + 64 * 1024));
    await ingest.finish();
    expect(budget.inUse).toBeLessThanOrEqual(128 * 1024);
    await stalled.cancel();
    expect(budget.inUse).toBe(0);
    expect(await s.has(digest)).toBe(true);
  });
});

describe("IngestingStore", () => {
  test("serves a blob while it is written, and hands over to the local store once published", async () => {
    const s = await store();
    const budget = new ByteBudget({ total: 1 << 20 });
    const ingesting = new IngestingStore(s, budget);
    const data = bytes(50_000);
    const digest = digestBytes(data);
    await expect(ingesting.describe(digest)).rejects.toBeInstanceOf(NotFoundError);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest, size: data.length });
    ingesting.add(ingest);
    expect(await ingesting.describe(digest)).toEqual({ mediaType: OCTET_STREAM, digest, size: data.length });
    expect(ingesting.inProgressBytes()).toBe(data.length);
    const content = await ingesting.open(digest, { start: 10, end: 20 });
    expect(content.kind).toBe("stream");
    await ingest.write(data);
    await ingest.finish();
    if (content.kind === "stream") expect(await collect(content.body)).toEqual(data.subarray(10, 21));
    expect((await ingesting.open(digest)).kind).toBe("file");
    ingesting.remove(ingest);
    await expect(ingesting.open(digest)).rejects.toBeInstanceOf(NotFoundError);
  });
});
