// Freshness of tags cached from upstream, with a real LocalStore on disk and an in-memory
// upstream: a fresh tag is served without asking, a stale one is rechecked once for all its
// pullers, a moved tag is followed, a failing upstream leaves the cached tag served (and is not
// asked again at once), imported tags are never rechecked, and a tag not held is not found.
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { NotFoundError } from "../../src/errors.ts";
import type { Descriptor, Digest, TagReference } from "../../src/oci/index.ts";
import { UpstreamTags, type TagResolver } from "../../src/mirror/upstream-tags.ts";
import { LocalStore } from "../../src/store/local.ts";
import { digestBytes } from "../../src/store/verify.ts";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const TTL = 60_000;
const ref: TagReference = { registry: "registry.test", repository: "team/app", tag: "v1" };
const stores: { store: LocalStore; dir: string }[] = [];

afterAll(async () => {
  for (const { store, dir } of stores) {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

async function manifest(store: LocalStore, n: number): Promise<Descriptor> {
  const bytes = new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: {}, layers: [], n }));
  return store.ingest({ mediaType: MANIFEST, digest: digestBytes(bytes), size: bytes.byteLength }, bytes);
}

/** An upstream whose tag points at `current`, or fails with `failure`. */
class FakeUpstream implements TagResolver {
  current: Descriptor | undefined;
  failure: Error | undefined;
  asked = 0;
  release: (() => void) | undefined;
  gate: Promise<void> | undefined;
  async resolveTag(): Promise<Descriptor> {
    this.asked++;
    await this.gate;
    if (this.failure) throw this.failure;
    return this.current!;
  }
  async ensure(_src: unknown, digest: Digest): Promise<Descriptor> {
    if (this.current?.digest !== digest) throw new Error("ensure of an unexpected digest");
    return this.current;
  }
}

let store: LocalStore;
let upstream: FakeUpstream;
let clock: number;
let tags: UpstreamTags;

beforeEach(async () => {
  const dir = await mkdtemp(join(tmpdir(), "kagami-tags-"));
  store = await LocalStore.open(dir);
  stores.push({ store, dir });
  upstream = new FakeUpstream();
  clock = 1_000_000;
  tags = new UpstreamTags({ store, manifests: upstream, logger: pino({ level: "silent" }), ttlMs: TTL, upstreamTimeoutMs: 30_000, now: () => clock });
});

describe("tags cached from upstream", () => {
  test("within the TTL the cached tag is served and upstream is not asked", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1, clock);
    clock += TTL - 1;
    expect(await tags.resolve(ref)).toEqual(v1);
    expect(upstream.asked).toBe(0);
    expect(tags.counts.fresh).toBe(1);
  });

  test("past the TTL an unchanged tag is confirmed and its clock restarts", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1, clock);
    upstream.current = v1;
    clock += TTL;
    expect(await tags.resolve(ref)).toEqual(v1);
    expect(upstream.asked).toBe(1);
    expect((await store.tagRecord(ref))?.checkedAt).toBe(clock);
    clock += 1;
    await tags.resolve(ref);
    expect(upstream.asked).toBe(1);
    expect(tags.counts).toMatchObject({ confirmed: 1, fresh: 1 });
  });

  test("a tag that moved upstream is followed: the new root is returned and recorded", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1, clock);
    upstream.current = await manifest(store, 2);
    clock += TTL;
    expect(await tags.resolve(ref)).toEqual(upstream.current);
    expect(await store.resolve(ref)).toEqual(upstream.current);
    expect(tags.counts.moved).toBe(1);
  });

  test("many pullers of a stale tag share one recheck", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1, clock);
    upstream.current = await manifest(store, 2);
    upstream.gate = new Promise((resolve) => (upstream.release = resolve));
    clock += TTL;
    const pulls = Array.from({ length: 20 }, () => tags.resolve(ref));
    await Bun.sleep(20);
    upstream.release!();
    const answers = await Promise.all(pulls);
    expect(upstream.asked).toBe(1);
    for (const a of answers) expect(a).toEqual(upstream.current);
  });

  test("when upstream fails or lost the tag, the cached tag is served and upstream is left alone for a while", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1, clock);
    clock += TTL;
    for (const failure of [new Error("connect ECONNREFUSED"), new NotFoundError("tag not found upstream")]) {
      upstream.failure = failure;
      const asked = upstream.asked;
      expect(await tags.resolve(ref)).toEqual(v1);
      expect(await tags.resolve(ref)).toEqual(v1);
      expect(upstream.asked).toBe(asked + 1);
      expect(await store.resolve(ref)).toEqual(v1);
      clock += 30_000;
    }
    upstream.failure = undefined;
    upstream.current = v1;
    expect(await tags.resolve(ref)).toEqual(v1);
    expect(tags.counts).toMatchObject({ failed: 4, confirmed: 1 });
  });

  test("an imported tag (no checkedAt) and a tag not held are never rechecked", async () => {
    const v1 = await manifest(store, 1);
    await store.tag(ref, v1);
    clock += 100 * TTL;
    expect(await tags.resolve(ref)).toEqual(v1);
    await expect(tags.resolve({ ...ref, tag: "absent" })).rejects.toBeInstanceOf(NotFoundError);
    expect(upstream.asked).toBe(0);
    expect(tags.counts["not-ours"]).toBe(1);
  });
});
