// One conformance suite for every Store implementation (LocalStore, MemoryStore,
// ContainerdStore against a real containerd). Each implementation supplies a fixture that
// can seed a test image into it, the way content really arrives in that store.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { NotFoundError } from "../src/errors.ts";
import {
  DOCKER_MANIFEST_LIST,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  formatTagReference,
  type Descriptor,
  type Digest,
  type TagReference,
} from "../src/oci/index.ts";
import type { Content, Store, StoreEvent } from "../src/store/store.ts";

/** A complete image: every blob's bytes and media type, and the tag's root descriptor. */
export interface SeedImage {
  reference: TagReference;
  root: Descriptor;
  blobs: Map<Digest, { mediaType: string; bytes: Uint8Array<ArrayBuffer> }>;
}

export interface StoreFixture {
  store: Store;
  /** Puts a whole image (all blobs + the tag) into the store through its real ingest path. */
  seed(image: SeedImage): Promise<void>;
  /** Removes the tag (and, where the store does so, its content) through the real path. */
  remove(reference: TagReference): Promise<void>;
  cleanup(): Promise<void>;
}

function sha256(bytes: Uint8Array): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest;
}

function json(value: unknown): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(value));
}

/** Builds a small deterministic image: an index of two platform manifests, each config + 2 layers. */
export function makeSeedImage(reference: TagReference, salt = "a", opts: { dockerList?: boolean } = {}): SeedImage {
  const blobs = new Map<Digest, { mediaType: string; bytes: Uint8Array<ArrayBuffer> }>();
  const put = (mediaType: string, bytes: Uint8Array<ArrayBuffer>): Descriptor => {
    const digest = sha256(bytes);
    blobs.set(digest, { mediaType, bytes });
    return { mediaType, digest, size: bytes.byteLength };
  };
  const manifests = ["amd64", "arm64"].map((arch) => {
    const layers = [1, 2].map((n) => {
      const bytes = new Uint8Array(64 * 1024 + n * 333);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + n * 7 + arch.length + salt.charCodeAt(0)) & 0xff;
      return put(OCI_LAYER_GZIP, bytes);
    });
    const config = put(OCI_CONFIG, json({ architecture: arch, os: "linux", salt, rootfs: { type: "layers", diff_ids: [] } }));
    const manifest = put(OCI_MANIFEST, json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
    return { ...manifest, platform: { architecture: arch, os: "linux" } };
  });
  const indexType = opts.dockerList ? DOCKER_MANIFEST_LIST : OCI_INDEX;
  const root = put(indexType, json({ schemaVersion: 2, mediaType: indexType, manifests }));
  return { reference, root, blobs };
}

async function readContent(c: Content): Promise<Uint8Array> {
  if (c.kind === "file") return new Uint8Array(await Bun.file(c.path).slice(c.range.start, c.range.end + 1).arrayBuffer());
  return new Uint8Array(await new Response(c.body).arrayBuffer());
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

export function storeConformance(name: string, setup: () => Promise<StoreFixture>): void {
  describe(`Store conformance: ${name}`, () => {
    let fx: StoreFixture;
    const ref: TagReference = { registry: "example.test", repository: `conformance/${name.toLowerCase()}`, tag: "v1" };
    const image = makeSeedImage(ref, name);

    beforeAll(async () => {
      fx = await setup();
      await fx.seed(image);
    });
    afterAll(async () => {
      await fx?.cleanup();
    });

    test("resolves a tag to the root descriptor", async () => {
      const d = await fx.store.resolve(ref);
      expect(d.digest).toBe(image.root.digest);
      expect(d.size).toBe(image.root.size);
      expect(d.mediaType).toBe(image.root.mediaType);
    });

    test("an unknown tag is NotFound", async () => {
      await expect(fx.store.resolve({ ...ref, tag: "missing" })).rejects.toBeInstanceOf(NotFoundError);
      await expect(fx.store.resolve({ ...ref, repository: "other/repo" })).rejects.toBeInstanceOf(NotFoundError);
    });

    test("describes every blob with its size, and manifests with their own media type", async () => {
      for (const [digest, blob] of image.blobs) {
        const d = await fx.store.describe(digest);
        expect(d.digest).toBe(digest);
        expect(d.size).toBe(blob.bytes.byteLength);
        if (blob.mediaType === OCI_MANIFEST || blob.mediaType === OCI_INDEX) expect(d.mediaType).toBe(blob.mediaType);
      }
    });

    test("an unknown digest is NotFound for describe and open", async () => {
      const missing = sha256(new TextEncoder().encode(`missing-${name}`));
      await expect(fx.store.describe(missing)).rejects.toBeInstanceOf(NotFoundError);
      await expect(fx.store.open(missing)).rejects.toBeInstanceOf(NotFoundError);
    });

    test("opens every blob with bytes that hash to its digest", async () => {
      for (const [digest, blob] of image.blobs) {
        const c = await fx.store.open(digest);
        expect(c.size).toBe(blob.bytes.byteLength);
        expect(c.range).toEqual({ start: 0, end: blob.bytes.byteLength - 1 });
        const bytes = await readContent(c);
        expect(sha256(bytes)).toBe(digest);
      }
    });

    test("opens a byte range", async () => {
      const [digest, blob] = [...image.blobs].find(([, b]) => b.mediaType === OCI_LAYER_GZIP)!;
      const c = await fx.store.open(digest, { start: 100, end: 4195 });
      expect(c.range).toEqual({ start: 100, end: 4195 });
      const bytes = await readContent(c);
      expect(bytes).toEqual(blob.bytes.slice(100, 4196));
    });

    test("lists the tag and every digest", async () => {
      const tags = await collect(fx.store.tags());
      const mine = tags.find((t) => formatTagReference(t.reference) === formatTagReference(ref));
      expect(mine?.descriptor.digest).toBe(image.root.digest);
      const digests = new Set(await collect(fx.store.digests()));
      for (const digest of image.blobs.keys()) expect(digests.has(digest)).toBe(true);
    });

    test("is healthy", () => {
      expect(fx.store.healthy()).toBe(true);
    });

    test("watch reports a tag added and removed", async () => {
      const ac = new AbortController();
      const ref2: TagReference = { ...ref, tag: "v2" };
      const image2 = makeSeedImage(ref2, `${name}-second`);
      const events: StoreEvent[] = [];
      const seen = (async () => {
        for await (const ev of fx.store.watch(ac.signal)) {
          events.push(ev);
          if (ev.type === "tag-removed") break;
        }
      })();
      await Bun.sleep(50);
      await fx.seed(image2);
      await waitFor(() => events.some((e) => e.type === "tag-added" && e.reference.tag === "v2"));
      const added = events.find((e) => e.type === "tag-added" && e.reference.tag === "v2");
      expect(added?.type === "tag-added" && added.descriptor.digest).toBe(image2.root.digest);
      await fx.remove(ref2);
      await waitFor(() => events.some((e) => e.type === "tag-removed" && e.reference.tag === "v2"));
      ac.abort();
      await seen;
      await expect(fx.store.resolve(ref2)).rejects.toBeInstanceOf(NotFoundError);
      expect((await fx.store.resolve(ref)).digest).toBe(image.root.digest);
    });

    test("watch ends when its signal aborts", async () => {
      const ac = new AbortController();
      const done = collect(fx.store.watch(ac.signal));
      await Bun.sleep(20);
      ac.abort();
      expect(Array.isArray(await done)).toBe(true);
    });
  });
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for a store event");
    await Bun.sleep(20);
  }
}
