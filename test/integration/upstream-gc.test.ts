// The disk bound: with --cache-size smaller than two images, pulling both through kagami
// evicts the first (its tag goes with it) and keeps the second whole; the store passes the
// conformance suite afterwards. `kagami gc` never evicts a blob that is being read.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  buildImage,
  digestsOf,
  kagamiCommand,
  pullImage,
  pushImage,
  REPO_ROOT,
  requireTools,
  run,
  spawnProcess,
  startKagami,
  startRegistry,
  teardown,
  tempDir,
  waitFor,
  type BuiltImage,
  type Kagami,
  type Registry,
} from "../../scripts/e2e/index.ts";
import { formatTagReference } from "../../src/oci/index.ts";
import { LocalStore } from "../../src/store/local.ts";
import { storeConformance } from "../store-conformance.ts";

const MiB = 1024 * 1024;
let registry: Registry;
let imageA: BuiltImage;
let imageB: BuiltImage;
let evictedDataDir: string | undefined;

beforeAll(async () => {
  requireTools("docker-registry", "skopeo", "umoci", "curl");
  const dir = tempDir("upstream-gc");
  imageA = await buildImage({ dir: join(dir, "a"), tag: "v1", layers: [{ files: { "a.bin": 32 * MiB } }] });
  imageB = await buildImage({ dir: join(dir, "b"), tag: "v1", layers: [{ files: { "b.bin": 32 * MiB } }] });
  registry = await startRegistry({ name: "gc-upstream" });
  await pushImage(imageA, { registry: registry.host, repo: "cache/a" });
  await pushImage(imageB, { registry: registry.host, repo: "cache/b" });
}, 120_000);

afterAll(() => teardown());

function blobFile(dataDir: string, digest: string): string {
  return join(dataDir, "blobs", "sha256", digest.slice("sha256:".length));
}

function heldBytes(dataDir: string): number {
  const dir = join(dataDir, "blobs", "sha256");
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

async function tagsOf(dataDir: string): Promise<string[]> {
  const store = await LocalStore.open(dataDir);
  const out: string[] = [];
  for await (const t of store.tags()) out.push(formatTagReference(t.reference));
  await store.close();
  return out.sort();
}

function pullThrough(name: string, flags: Record<string, string> = {}): Promise<Kagami> {
  return startKagami({ name, flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true", ...flags } });
}

describe("--cache-size smaller than two images", () => {
  test("pulling both evicts the first, its tag goes, the second stays whole", async () => {
    const limit = 48 * MiB;
    expect(imageA.size + imageB.size).toBeGreaterThan(limit);
    const kagami = await pullThrough("kagami-gc", { "cache-size": "48Mi" });
    expect(digestsOf(await pullImage({ registry: kagami.host, repo: "cache/a", reference: "v1" }))).toEqual(digestsOf(imageA));
    expect(await tagsOf(kagami.dataDir)).toEqual([`${registry.host}/cache/a:v1`]);

    expect(digestsOf(await pullImage({ registry: kagami.host, repo: "cache/b", reference: "v1" }))).toEqual(digestsOf(imageB));
    await waitFor("the first image to be evicted", () => imageA.blobs.every((b) => !existsSync(blobFile(kagami.dataDir, b.digest))), { timeoutMs: 10_000 });
    for (const b of imageB.blobs) expect(existsSync(blobFile(kagami.dataDir, b.digest))).toBe(true);
    expect(await tagsOf(kagami.dataDir)).toEqual([`${registry.host}/cache/b:v1`]);
    expect(heldBytes(kagami.dataDir)).toBeLessThanOrEqual(limit);
    await kagami.stop();
    evictedDataDir = kagami.dataDir;
  }, 120_000);
});

storeConformance("LocalStore-after-eviction", async () => {
  if (!evictedDataDir) throw new Error("the eviction test did not run");
  const store = await LocalStore.open(evictedDataDir, { rescanMs: 200 });
  return {
    store,
    seed: async (image) => {
      for (const [digest, blob] of image.blobs) await store.ingest({ mediaType: blob.mediaType, digest, size: blob.bytes.byteLength }, blob.bytes);
      await store.tag(image.reference, image.root);
    },
    remove: (ref) => store.untag(ref),
    cleanup: () => store.close(),
  };
});

describe("kagami gc", () => {
  test("keeps a blob that is being read, and evicts it once the reader is done", async () => {
    const kagami = await pullThrough("kagami-pins");
    expect(digestsOf(await pullImage({ registry: kagami.host, repo: "cache/a", reference: "v1" }))).toEqual(digestsOf(imageA));
    const layer = imageA.layers[0]!;
    const out = join(tempDir("gc-reader"), "layer");
    const reader = spawnProcess({ name: "slow-reader", cmd: ["curl", "-sf", "--limit-rate", "4M", "-o", out, `${kagami.url}/v2/cache/a/blobs/${layer.digest}`] });
    await waitFor("the reader to start", () => existsSync(out) && statSync(out).size > 0, { timeoutMs: 10_000 });

    const gc = [...kagamiCommand(), "gc", `--data-dir=${kagami.dataDir}`, "--cache-size=1Mi"];
    const first = await run(gc, { cwd: REPO_ROOT });
    expect(first.stdout).toContain("1 open blobs kept");
    expect(first.stdout).toContain(`dropped tag ${registry.host}/cache/a:v1`);
    expect(existsSync(blobFile(kagami.dataDir, layer.digest))).toBe(true);
    expect(existsSync(blobFile(kagami.dataDir, imageA.manifest.digest))).toBe(false);

    expect((await reader.exited).code).toBe(0);
    expect(`sha256:${new Bun.CryptoHasher("sha256").update(readFileSync(out)).digest("hex")}`).toBe(layer.digest);
    const second = await run(gc, { cwd: REPO_ROOT });
    expect(second.stdout).toContain(`evicted ${layer.digest}`);
    expect(existsSync(blobFile(kagami.dataDir, layer.digest))).toBe(false);
    await kagami.stop();
  }, 120_000);
});
