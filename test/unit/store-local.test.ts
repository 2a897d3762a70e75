import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DigestMismatchError, InvalidError, NotFoundError } from "../../src/errors.ts";
import type { Digest, TagReference } from "../../src/oci/index.ts";
import { LocalStore } from "../../src/store/local.ts";
import { digestBytes } from "../../src/store/verify.ts";
import { storeConformance, type SeedImage } from "../store-conformance.ts";

async function seedInto(store: LocalStore, image: SeedImage): Promise<void> {
  for (const [digest, blob] of image.blobs) {
    await store.ingest({ mediaType: blob.mediaType, digest, size: blob.bytes.byteLength }, blob.bytes);
  }
  await store.tag(image.reference, image.root);
}

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "kagami-local-"));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

storeConformance("LocalStore", async () => {
  const dir = await tempDir();
  const store = await LocalStore.open(dir, { rescanMs: 200 });
  return {
    store,
    seed: (image) => seedInto(store, image),
    remove: (ref) => store.untag(ref),
    cleanup: () => store.close(),
  };
});

describe("LocalStore writes", () => {
  const ref: TagReference = { registry: "example.test", repository: "w/x", tag: "1" };

  test("refuses bytes that do not match the digest and leaves nothing behind", async () => {
    const store = await LocalStore.open(await tempDir());
    const good = new TextEncoder().encode("hello");
    const digest = digestBytes(good);
    const bad = new TextEncoder().encode("hellO");
    await expect(store.ingest({ mediaType: "application/octet-stream", digest, size: 5 }, bad)).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(store.ingest({ mediaType: "application/octet-stream", digest, size: 4 }, good)).rejects.toBeInstanceOf(InvalidError);
    await expect(store.ingest({ mediaType: "application/octet-stream", digest, size: 6 }, good)).rejects.toBeInstanceOf(InvalidError);
    await Bun.sleep(10);
    await expect(store.describe(digest)).rejects.toBeInstanceOf(NotFoundError);
    expect(await readdir(store.layout.ingest)).toEqual([]);
  });

  test("a failing source stream leaves no temp file and no blob", async () => {
    const store = await LocalStore.open(await tempDir());
    const digest = digestBytes(new Uint8Array(10));
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(5));
        c.error(new Error("peer went away"));
      },
    });
    await expect(store.ingest({ mediaType: "application/octet-stream", digest, size: 10 }, body)).rejects.toThrow("peer went away");
    await Bun.sleep(10);
    expect(await readdir(store.layout.ingest)).toEqual([]);
    expect(await store.has(digest)).toBe(false);
  });

  test("a tag needs its root content", async () => {
    const store = await LocalStore.open(await tempDir());
    const digest = digestBytes(new TextEncoder().encode("absent"));
    await expect(store.tag(ref, { mediaType: "application/vnd.oci.image.index.v1+json", digest, size: 6 })).rejects.toBeInstanceOf(NotFoundError);
  });

  test("concurrent writers of one digest and readers see only complete content", async () => {
    const store = await LocalStore.open(await tempDir());
    const bytes = crypto.getRandomValues(new Uint8Array(60_000));
    const digest = digestBytes(bytes);
    const desc = { mediaType: "application/octet-stream", digest, size: bytes.byteLength };
    const reads: Promise<void>[] = [];
    const writes = Array.from({ length: 8 }, async () => {
      await store.ingest(desc, new Blob([bytes]).stream());
    });
    for (let i = 0; i < 20; i++) {
      reads.push(
        (async () => {
          try {
            const c = await store.open(digest);
            expect(c.size).toBe(bytes.byteLength);
            const got = new Uint8Array(await Bun.file(c.kind === "file" ? c.path : "").arrayBuffer());
            expect(digestBytes(got)).toBe(digest);
          } catch (e) {
            expect(e).toBeInstanceOf(NotFoundError);
          }
        })(),
      );
      await Bun.sleep(1);
    }
    await Promise.all([...writes, ...reads]);
    expect((await store.describe(digest)).size).toBe(bytes.byteLength);
  });

  test("foreign and torn files in the store are not content", async () => {
    const store = await LocalStore.open(await tempDir());
    await writeFile(join(store.layout.blobs, "sha256", "not-a-digest"), "x");
    await writeFile(join(store.layout.tags, "torn.json"), "{\"reference\":");
    const digests: Digest[] = [];
    for await (const d of store.digests()) digests.push(d);
    expect(digests).toEqual([]);
    const tags = [];
    for await (const t of store.tags()) tags.push(t);
    expect(tags).toEqual([]);
  });
});
