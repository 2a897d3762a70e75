// Cache eviction over a real LocalStore: least recently used first, TTL, tags dropped before
// their content with the rest of their image, shared content kept, open files kept.
import { afterAll, describe, expect, test } from "bun:test";
import { open, mkdtemp, rm, statfs, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ByteBudget } from "../../src/governor/budget.ts";
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, OCTET_STREAM, type Descriptor, type Digest, type TagReference } from "../../src/oci/index.ts";
import { CacheGc, resolveCacheSize } from "../../src/store/gc.ts";
import { IngestingStore } from "../../src/store/ingesting.ts";
import { GrowingIngest } from "../../src/store/local-ingest.ts";
import { LocalStore } from "../../src/store/local.ts";
import { digestBytes } from "../../src/store/verify.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function store(): Promise<LocalStore> {
  const d = await mkdtemp(join(tmpdir(), "kagami-gc-"));
  dirs.push(d);
  return LocalStore.open(d);
}

let salt = 0;
async function blob(s: LocalStore, size: number, mediaType = OCI_LAYER_GZIP, usedSecondsAgo = 0): Promise<Descriptor> {
  const bytes = new Uint8Array(size).fill(++salt & 0xff);
  bytes[0] = salt >> 8;
  const d = await s.ingest({ mediaType, digest: digestBytes(bytes), size }, bytes);
  await age(s, d.digest, usedSecondsAgo);
  return { ...d, mediaType };
}

async function age(s: LocalStore, digest: Digest, secondsAgo: number): Promise<void> {
  const t = new Date(Date.now() - secondsAgo * 1000);
  await utimes(s.layout.blobPath(digest), t, t);
}

/** An image manifest over a config and layers, tagged, every blob last used secondsAgo. */
async function image(s: LocalStore, tag: string, layers: Descriptor[], secondsAgo: number): Promise<{ ref: TagReference; manifest: Descriptor; config: Descriptor }> {
  const config = await blob(s, 100, OCI_CONFIG, secondsAgo);
  const doc = new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
  const manifest = await s.ingest({ mediaType: OCI_MANIFEST, digest: digestBytes(doc), size: doc.byteLength }, doc);
  await age(s, manifest.digest, secondsAgo);
  const ref = { registry: "r.example", repository: "team/app", tag };
  await s.tag(ref, manifest);
  return { ref, manifest, config };
}

async function held(s: LocalStore): Promise<Set<Digest>> {
  const out = new Set<Digest>();
  for await (const d of s.digests()) out.add(d);
  return out;
}

async function tags(s: LocalStore): Promise<string[]> {
  const out: string[] = [];
  for await (const t of s.tags()) out.push(t.reference.tag);
  return out.sort();
}

describe("CacheGc", () => {
  test("evicts least recently used blobs until the store fits", async () => {
    const s = await store();
    const a = await blob(s, 1000, OCTET_STREAM, 300);
    const b = await blob(s, 1000, OCTET_STREAM, 200);
    const c = await blob(s, 1000, OCTET_STREAM, 100);
    const report = await new CacheGc({ store: s, limitBytes: 2500 }).run();
    expect(report.evicted.map((e) => e.digest)).toEqual([a.digest]);
    expect(await held(s)).toEqual(new Set([b.digest, c.digest]));
    expect(report.overLimit).toBe(false);
  });

  test("a touch makes a blob the most recently used", async () => {
    const s = await store();
    const a = await blob(s, 1000, OCTET_STREAM, 300);
    await blob(s, 1000, OCTET_STREAM, 200);
    const gc = new CacheGc({ store: s, limitBytes: 1500 });
    gc.touch(s.layout.blobPath(a.digest));
    gc.touch("/etc/passwd");
    await Bun.sleep(50);
    await gc.run();
    expect(await held(s)).toEqual(new Set([a.digest]));
  });

  test("evicts content unused for the TTL even under the size limit", async () => {
    const s = await store();
    const old = await blob(s, 10, OCTET_STREAM, 7200);
    const recent = await blob(s, 10, OCTET_STREAM, 10);
    const report = await new CacheGc({ store: s, ttlMs: 3_600_000 }).run();
    expect(report.evicted.map((e) => e.digest)).toEqual([old.digest]);
    expect(await held(s)).toEqual(new Set([recent.digest]));
  });

  test("drops a tag before its content, takes the rest of its image, keeps what another tag needs", async () => {
    const s = await store();
    const shared = await blob(s, 1000, OCI_LAYER_GZIP, 400);
    const ownOld = await blob(s, 3000, OCI_LAYER_GZIP, 500);
    const old = await image(s, "old", [shared, ownOld], 450);
    const fresh = await image(s, "new", [shared], 10);
    const report = await new CacheGc({ store: s, limitBytes: 4000 }).run();
    expect(report.droppedTags).toEqual(["r.example/team/app:old"]);
    expect(await tags(s)).toEqual(["new"]);
    expect(await held(s)).toEqual(new Set([shared.digest, fresh.manifest.digest, fresh.config.digest]));
    expect(report.evicted.map((e) => e.digest).sort()).toEqual([ownOld.digest, old.manifest.digest, old.config.digest].sort());
  });

  test("a tag whose root is gone is dropped", async () => {
    const s = await store();
    const layer = await blob(s, 10);
    const img = await image(s, "dangling", [layer], 0);
    await s.delete(img.manifest.digest);
    const report = await new CacheGc({ store: s, limitBytes: 1 << 30 }).run();
    expect(report.droppedTags).toEqual(["r.example/team/app:dangling"]);
    expect(await tags(s)).toEqual([]);
  });

  test("keeps a blob this process has open, and says it is still over the limit", async () => {
    const s = await store();
    const open1 = await blob(s, 2000, OCTET_STREAM, 300);
    await blob(s, 1000, OCTET_STREAM, 100);
    const handle = await open(s.layout.blobPath(open1.digest), "r");
    try {
      const report = await new CacheGc({ store: s, limitBytes: 1000 }).run();
      expect(report.pinned).toBe(1);
      expect(report.overLimit).toBe(true);
      expect(await held(s)).toEqual(new Set([open1.digest]));
    } finally {
      await handle.close();
    }
    await new CacheGc({ store: s, limitBytes: 1000 }).run();
    expect(await held(s)).toEqual(new Set());
  });

  test("counts fetches in progress as held, and a dry run removes nothing", async () => {
    const s = await store();
    const a = await blob(s, 1000, OCTET_STREAM, 100);
    const ingesting = new IngestingStore(s, new ByteBudget({ total: 1 << 20 }));
    const incoming = new Uint8Array(2000).fill(7);
    const ingest = await GrowingIngest.start(s, { mediaType: OCTET_STREAM, digest: digestBytes(incoming), size: incoming.byteLength });
    ingesting.add(ingest);
    const gc = new CacheGc({ store: s, limitBytes: 2500, ingesting });
    const dry = await gc.run({ dryRun: true });
    expect(dry.inProgressBytes).toBe(2000);
    expect(dry.evicted.map((e) => e.digest)).toEqual([a.digest]);
    expect(await held(s)).toEqual(new Set([a.digest]));
    await gc.run();
    expect(await held(s)).toEqual(new Set());
    await ingest.fail(new Error("test over"));
  });

  test("schedule() coalesces runs and does nothing without a bound", async () => {
    const s = await store();
    await blob(s, 1000, OCTET_STREAM, 100);
    const unbounded = new CacheGc({ store: s });
    expect(unbounded.bounded).toBe(false);
    unbounded.schedule();
    await unbounded.idle();
    expect((await held(s)).size).toBe(1);
    const gc = new CacheGc({ store: s, limitBytes: 10 });
    for (let i = 0; i < 10; i++) gc.schedule();
    await gc.idle();
    expect((await held(s)).size).toBe(0);
  });
});

describe("--cache-size", () => {
  test("takes bytes or a percentage of the filesystem", async () => {
    const s = await store();
    expect(await resolveCacheSize("20Gi", s.layout.root)).toBe(20 * 2 ** 30);
    const fs = await statfs(s.layout.root);
    expect(await resolveCacheSize("50%", s.layout.root)).toBe(Math.floor((Number(fs.blocks) * Number(fs.bsize)) / 2));
    await expect(resolveCacheSize("0%", s.layout.root)).rejects.toThrow("percentage");
    await expect(resolveCacheSize("101%", s.layout.root)).rejects.toThrow("percentage");
    await expect(resolveCacheSize("lots", s.layout.root)).rejects.toThrow("invalid size");
  });
});
