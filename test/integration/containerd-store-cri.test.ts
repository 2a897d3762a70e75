// ContainerdStore on content that arrived the way the kubelet brings it: a CRI PullImage of
// a multi-platform image from a local registry (docker-registry), into a real containerd.
// Also: blobs by sendfile path or, without the content directory, over gRPC; withdrawal
// after CRI RemoveImage; health and resync across a containerd restart.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { NotFoundError } from "../../src/errors.ts";
import { DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, type Digest, type TagReference } from "../../src/oci/index.ts";
import { ContainerdStore } from "../../src/store/containerd/index.ts";
import type { Content, StoreEvent } from "../../src/store/store.ts";
import { teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { startContainerd, type Containerd } from "../../scripts/e2e/containerd.ts";
import { CriClient } from "../../scripts/e2e/cri.ts";
import { buildIndex, type BuiltIndex } from "../../scripts/e2e/image.ts";
import { waitFor } from "../../scripts/e2e/proc.ts";
import { startRegistry, type Registry } from "../../scripts/e2e/registry.ts";
import { pushImage } from "../../scripts/e2e/skopeo.ts";

let containerd: Containerd;
let registry: Registry;
let cri: CriClient;
let store: ContainerdStore;
let image: BuiltIndex;
let ref: TagReference;
const events: StoreEvent[] = [];
const watching = new AbortController();

async function bytesOf(c: Content): Promise<Uint8Array> {
  if (c.kind === "file") return new Uint8Array(await Bun.file(c.path).slice(c.range.start, c.range.end + 1).arrayBuffer());
  return new Uint8Array(await new Response(c.body).arrayBuffer());
}

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

beforeAll(async () => {
  registry = await startRegistry({ name: "cri-upstream" });
  image = await buildIndex({
    dir: join(tempDir("cri-image"), "layout"),
    tag: "v1",
    images: [
      { platform: "linux/amd64", layers: [{ files: { "etc/hello": "amd64", "bin/blob": 200_000 } }, { files: { "etc/two": "second layer" } }] },
      { platform: "linux/arm64", layers: [{ files: { "etc/hello": "arm64", "bin/blob": 150_000 } }] },
    ],
  });
  await pushImage(image, { registry: registry.host, repo: "e2e/multi" });
  containerd = await startContainerd({ name: "cri-store" });
  mkdirSync(join(containerd.certsDir, registry.host), { recursive: true });
  writeFileSync(join(containerd.certsDir, registry.host, "hosts.toml"), `server = "${registry.url}"\n`);
  cri = new CriClient(containerd.socket);
  store = await ContainerdStore.open({ socket: containerd.socket, namespace: "k8s.io", feed: { minBackoffMs: 50, maxBackoffMs: 500 } });
  (async () => {
    for await (const ev of store.watch(watching.signal)) events.push(ev);
  })();
  ref = { registry: registry.host, repository: "e2e/multi", tag: "v1" };
  await cri.pullImage(`${registry.host}/e2e/multi:v1`);
}, 120_000);

afterAll(async () => {
  watching.abort();
  cri?.close();
  await store?.close();
  await teardown();
});

const amd64 = () => image.images.find((i) => i.platform.architecture === "amd64")!;
const arm64 = () => image.images.find((i) => i.platform.architecture === "arm64")!;

describe("ContainerdStore after a CRI pull", () => {
  test("the tag resolves to the index; CRI's digest and id names are not tags", async () => {
    const root = await store.resolve(ref);
    expect(root.digest).toBe(image.index.digest as Digest);
    expect([OCI_INDEX, DOCKER_MANIFEST_LIST]).toContain(root.mediaType);
    const tags = [];
    for await (const t of store.tags()) tags.push(`${t.reference.registry}/${t.reference.repository}:${t.reference.tag}`);
    expect(tags).toEqual([`${registry.host}/e2e/multi:v1`]);
  });

  test("digests are the pulled platform's closure only: the other platform is not advertised", async () => {
    const digests = new Set<string>();
    for await (const d of store.digests()) digests.add(d);
    expect([...digests].sort()).toEqual([image.index.digest, ...amd64().blobs.map((b) => b.digest)].sort());
    for (const b of arm64().blobs) expect(digests.has(b.digest)).toBe(false);
    await expect(store.describe(arm64().manifest.digest as Digest)).rejects.toBeInstanceOf(NotFoundError);
  });

  test("media types come from the index and the manifest: manifest, config and layers", async () => {
    for await (const _ of store.digests()) void _;
    expect((await store.describe(amd64().manifest.digest as Digest)).mediaType).toBe(OCI_MANIFEST);
    expect((await store.describe(amd64().config.digest as Digest)).mediaType).toBe(amd64().config.mediaType);
    for (const l of amd64().layers) expect((await store.describe(l.digest as Digest)).mediaType).toBe(l.mediaType);
  });

  test("a manifest fetched by digest before any walk still gets its own media type", async () => {
    const fresh = await ContainerdStore.open({ socket: containerd.socket, namespace: "k8s.io" });
    try {
      expect((await fresh.describe(amd64().manifest.digest as Digest)).mediaType).toBe(OCI_MANIFEST);
      expect((await fresh.describe(amd64().config.digest as Digest)).mediaType).toBe("application/octet-stream");
    } finally {
      await fresh.close();
    }
  });

  test("blobs open as files in containerd's content directory (sendfile)", async () => {
    const layer = amd64().layers[0]!;
    const c = await store.open(layer.digest as Digest);
    expect(c.kind).toBe("file");
    expect(c.kind === "file" && c.path).toBe(join(containerd.contentPath, "blobs", "sha256", layer.digest.slice(7)));
    expect(sha256(await bytesOf(c))).toBe(layer.digest);
  });

  test("without the content directory, blobs and ranges stream over Content/Read", async () => {
    const remote = await ContainerdStore.open({ socket: containerd.socket, namespace: "k8s.io", contentPath: join(containerd.dir, "not-mounted") });
    try {
      const layer = amd64().layers.reduce((a, b) => (a.size > b.size ? a : b));
      const whole = await remote.open(layer.digest as Digest);
      expect(whole.kind).toBe("stream");
      const bytes = await bytesOf(whole);
      expect(sha256(bytes)).toBe(layer.digest);
      const part = await remote.open(layer.digest as Digest, { start: 1000, end: layer.size - 2 });
      expect(await bytesOf(part)).toEqual(bytes.slice(1000, layer.size - 1));
    } finally {
      await remote.close();
    }
  });

  test("the pull was reported: digests before the tag", () => {
    const tagAt = events.findIndex((e) => e.type === "tag-added" && e.reference.tag === "v1");
    expect(tagAt).toBeGreaterThan(-1);
    const before = new Set(events.slice(0, tagAt).flatMap((e) => (e.type === "digest-added" ? [e.digest] : [])));
    for (const d of [image.index.digest, ...amd64().blobs.map((b) => b.digest)]) expect(before.has(d as Digest)).toBe(true);
  });

  test("CRI RemoveImage withdraws the tag and, once GC removed them, its digests", async () => {
    await cri.pullImage(`${registry.host}/e2e/multi:v1`);
    const mark = events.length;
    await cri.removeImage(`${registry.host}/e2e/multi:v1`);
    await waitFor("tag-removed", () => events.slice(mark).some((e) => e.type === "tag-removed" && e.reference.tag === "v1"), { timeoutMs: 10_000 });
    const gone = () => new Set(events.slice(mark).flatMap((e) => (e.type === "digest-removed" ? [e.digest as string] : [])));
    await waitFor("digest-removed for every blob", () => amd64().blobs.every((b) => gone().has(b.digest)), { timeoutMs: 15_000 });
    expect(gone().has(image.index.digest)).toBe(true);
    await expect(store.resolve(ref)).rejects.toBeInstanceOf(NotFoundError);
  });

  test("containerd restarting: unhealthy while down, then a resync, and events flow again", async () => {
    const mark = events.length;
    await containerd.stop();
    await waitFor("unhealthy", () => !store.healthy(), { timeoutMs: 10_000 });
    await containerd.restart();
    await waitFor("healthy", () => store.healthy(), { timeoutMs: 10_000 });
    await waitFor("resync", () => events.slice(mark).some((e) => e.type === "resync"), { timeoutMs: 10_000 });
    await cri.pullImage(`${registry.host}/e2e/multi:v1`);
    await waitFor("tag-added after restart", () => events.slice(mark).some((e) => e.type === "tag-added"), { timeoutMs: 10_000 });
    expect((await store.resolve(ref)).digest).toBe(image.index.digest as Digest);
  }, 60_000);

  test("a store opened before containerd is up waits for it, then serves from its content directory", async () => {
    await containerd.stop();
    const early = await ContainerdStore.open({
      socket: containerd.socket,
      namespace: "k8s.io",
      waitForContainerd: true,
      feed: { minBackoffMs: 50, maxBackoffMs: 500 },
    });
    const seen: StoreEvent[] = [];
    const ac = new AbortController();
    (async () => {
      for await (const ev of early.watch(ac.signal)) seen.push(ev);
    })();
    try {
      expect(early.healthy()).toBe(false);
      await expect(early.resolve(ref)).rejects.toThrow();
      await containerd.restart();
      await waitFor("healthy", () => early.healthy(), { timeoutMs: 10_000 });
      await waitFor("resync", () => seen.some((e) => e.type === "resync"), { timeoutMs: 10_000 });
      expect((await early.resolve(ref)).digest).toBe(image.index.digest as Digest);
      const layer = amd64().layers[0]!;
      await waitFor("content directory discovered", async () => (await early.open(layer.digest as Digest)).kind === "file", { timeoutMs: 10_000 });
    } finally {
      ac.abort();
      await early.close();
    }
  }, 60_000);
});
