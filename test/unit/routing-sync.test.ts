// routing/sync.ts: what a node holds is what it advertises; a tag only with its whole
// manifest closure (a tag found through us must not lead to a digest we do not have).
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { silentLogger } from "../../src/observability/log.ts";
import { OCI_INDEX, OCI_MANIFEST, type Descriptor, type Digest, type TagReference } from "../../src/oci/index.ts";
import { MemoryNetwork, type MemoryRouter } from "../../src/routing/memory.ts";
import { AdvertiseSync, startSync } from "../../src/routing/sync.ts";
import { MemoryStore } from "../../src/store/memory.ts";

const enc = new TextEncoder();
function blob(text: string, mediaType = "application/octet-stream"): { descriptor: Descriptor; bytes: Uint8Array } {
  const bytes = enc.encode(text);
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest;
  return { descriptor: { mediaType, digest, size: bytes.byteLength }, bytes };
}
function image(name: string) {
  const config = blob(`{"config-of":"${name}"}`, "application/vnd.oci.image.config.v1+json");
  const layers = [blob(`layer 1 of ${name}`, "application/vnd.oci.image.layer.v1.tar"), blob(`layer 2 of ${name}`, "application/vnd.oci.image.layer.v1.tar")];
  const manifest = blob(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: config.descriptor, layers: layers.map((l) => l.descriptor) }),
    OCI_MANIFEST,
  );
  return { config, layers, manifest };
}
async function put(store: MemoryStore, ...blobs: { descriptor: Descriptor; bytes: Uint8Array }[]): Promise<void> {
  for (const b of blobs) await store.ingest(b.descriptor, b.bytes);
}
const ref = (tag: string): TagReference => ({ registry: "docker.io", repository: "library/app", tag });
const key = (tag: string): string => `docker.io/library/app:${tag}`;

let sync: AdvertiseSync | undefined;
afterEach(async () => {
  await sync?.stop();
  sync = undefined;
});

function setup(intervalMs = 600_000) {
  const net = new MemoryNetwork();
  const node = net.join("holder", "http://10.0.0.1:5000");
  const other = net.join("asker", "http://10.0.0.2:5000");
  const store = new MemoryStore();
  const found = async (k: string): Promise<boolean> => {
    for await (const p of other.lookup(k, 1, AbortSignal.timeout(1000))) if (p.id === "holder") return true;
    return false;
  };
  return { store, node, other, found, start: () => (sync = startSync({ stores: [store], router: node, intervalMs, log: silentLogger(), recheckDelayMs: 10 })) };
}

async function until(check: () => Promise<boolean>, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await Bun.sleep(10);
  }
  return check();
}

describe("advertising what the store holds", () => {
  test("content held at start: every digest and the complete tag", async () => {
    const s = setup();
    const img = image("a");
    await put(s.store, img.config, ...img.layers, img.manifest);
    await s.store.tag(ref("1"), img.manifest.descriptor);
    s.start();
    await sync!.idle();
    for (const b of [img.config, ...img.layers, img.manifest]) expect(await s.found(b.descriptor.digest)).toBe(true);
    expect(await s.found(key("1"))).toBe(true);
  });

  test("a tag whose layer is missing is not advertised until the layer arrives", async () => {
    const s = setup();
    const img = image("b");
    await put(s.store, img.config, img.layers[0]!, img.manifest);
    await s.store.tag(ref("2"), img.manifest.descriptor);
    s.start();
    await sync!.idle();
    expect(await s.found(img.manifest.descriptor.digest)).toBe(true);
    expect(await s.found(key("2"))).toBe(false);
    await put(s.store, img.layers[1]!);
    expect(await until(() => s.found(key("2")))).toBe(true);
  });

  test("events: a new image, then untag and delete withdraw its keys", async () => {
    const s = setup();
    s.start();
    await sync!.idle();
    const img = image("c");
    await put(s.store, img.config, ...img.layers, img.manifest);
    await s.store.tag(ref("3"), img.manifest.descriptor);
    expect(await until(() => s.found(key("3")))).toBe(true);
    expect(await until(() => s.found(img.layers[1]!.descriptor.digest))).toBe(true);

    await s.store.delete(img.layers[0]!.descriptor.digest);
    expect(await until(async () => !(await s.found(img.layers[0]!.descriptor.digest)))).toBe(true);
    // The closure broke: the tag goes too.
    expect(await until(async () => !(await s.found(key("3"))))).toBe(true);

    await put(s.store, img.layers[0]!);
    expect(await until(() => s.found(key("3")))).toBe(true);
    await s.store.untag(ref("3"));
    expect(await until(async () => !(await s.found(key("3"))))).toBe(true);
    expect(await s.found(img.manifest.descriptor.digest)).toBe(true);
  });

  test("an index: one complete platform is enough, a held but incomplete one is not", async () => {
    const s = setup();
    const amd = image("amd64");
    const arm = image("arm64");
    const index = blob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { ...amd.manifest.descriptor, platform: { architecture: "amd64", os: "linux" } },
          { ...arm.manifest.descriptor, platform: { architecture: "arm64", os: "linux" } },
        ],
      }),
      OCI_INDEX,
    );
    // Only amd64 pulled: the arm64 manifest is absent altogether.
    await put(s.store, amd.config, ...amd.layers, amd.manifest, index);
    await s.store.tag(ref("multi"), index.descriptor);
    s.start();
    await sync!.idle();
    expect(await s.found(key("multi"))).toBe(true);

    // The arm64 manifest arrives without its layers: that platform would 404, so no tag.
    await put(s.store, arm.manifest);
    expect(await until(async () => !(await s.found(key("multi"))))).toBe(true);
    await put(s.store, arm.config, ...arm.layers);
    expect(await until(() => s.found(key("multi")))).toBe(true);
  });

  test("an index with no platform held is not advertised", async () => {
    const s = setup();
    const amd = image("lonely");
    const index = blob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [amd.manifest.descriptor] }), OCI_INDEX);
    await put(s.store, index);
    await s.store.tag(ref("empty"), index.descriptor);
    s.start();
    await sync!.idle();
    expect(await s.found(index.descriptor.digest)).toBe(true);
    expect(await s.found(key("empty"))).toBe(false);
  });

  test("every key is announced again each interval", async () => {
    const s = setup(100);
    const img = image("d");
    await put(s.store, img.config, ...img.layers, img.manifest);
    await s.store.tag(ref("4"), img.manifest.descriptor);
    const rounds: string[][] = [];
    const advertise = s.node.advertise.bind(s.node);
    (s.node as MemoryRouter).advertise = async (keys: readonly string[]) => {
      rounds.push([...keys]);
      return advertise(keys);
    };
    s.start();
    expect(await until(async () => rounds.filter((r) => r.length === 5).length >= 3)).toBe(true);
    const full = rounds.find((r) => r.length === 5)!;
    expect(full.sort()).toEqual([img.config, ...img.layers, img.manifest].map((b) => b.descriptor.digest as string).concat(key("4")).sort());
  });

  test("two stores: a key stays advertised while either holds it; a closure may span both", async () => {
    const net = new MemoryNetwork();
    const node = net.join("holder", "http://10.0.0.1:5000");
    const other = net.join("asker", "http://10.0.0.2:5000");
    const containerd = new MemoryStore();
    const own = new MemoryStore();
    const found = async (k: string): Promise<boolean> => {
      for await (const p of other.lookup(k, 1, AbortSignal.timeout(1000))) if (p.id === "holder") return true;
      return false;
    };
    const img = image("split");
    // Manifest and config in one store, the layers in the other.
    await put(containerd, img.config, img.manifest, img.layers[0]!);
    await put(own, ...img.layers);
    await containerd.tag(ref("split"), img.manifest.descriptor);
    sync = startSync({ stores: [containerd, own], router: node, intervalMs: 600_000, log: silentLogger(), recheckDelayMs: 10 });
    await sync.idle();
    expect(await found(key("split"))).toBe(true);

    // Layer 0 is in both: deleting it from one keeps it (and the tag) advertised.
    await containerd.delete(img.layers[0]!.descriptor.digest);
    await Bun.sleep(100);
    await sync.idle();
    expect(await found(img.layers[0]!.descriptor.digest)).toBe(true);
    expect(await found(key("split"))).toBe(true);
    await own.delete(img.layers[0]!.descriptor.digest);
    expect(await until(async () => !(await found(img.layers[0]!.descriptor.digest)))).toBe(true);
    expect(await until(async () => !(await found(key("split"))))).toBe(true);
  });
});
