// The pure parts of ContainerdStore: which containerd image names are tags, the closure
// walk (absent content skipped, media types from parents), and withdrawal after a delete.
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, type Descriptor, type Digest } from "../../src/oci/index.ts";
import { subscriptionFilters } from "../../src/store/containerd/feed.ts";
import { tagOfImageName } from "../../src/store/containerd/names.ts";
import { walkImage, type WalkSource } from "../../src/store/containerd/walk.ts";
import { Withdrawals } from "../../src/store/containerd/withdrawals.ts";

const digest = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}` as Digest;

test("only canonical tag names are tags", () => {
  expect(tagOfImageName("docker.io/library/nginx:1.27")).toEqual({ registry: "docker.io", repository: "library/nginx", tag: "1.27" });
  expect(tagOfImageName("127.0.0.1:5000/e2e/multi:v1")).toEqual({ registry: "127.0.0.1:5000", repository: "e2e/multi", tag: "v1" });
  expect(tagOfImageName(`docker.io/library/nginx@${digest("x")}`)).toBeUndefined();
  expect(tagOfImageName(digest("x"))).toBeUndefined();
  expect(tagOfImageName("nginx:1.27")).toBeUndefined();
  expect(tagOfImageName("docker.io/nginx:1.27")).toBeUndefined();
  expect(tagOfImageName("index.docker.io/library/nginx:1")).toBeUndefined();
  expect(tagOfImageName("docker.io/library/nginx")).toBeUndefined();
});

test("the walk yields held content only, parents first, with media types from the parent and the document", async () => {
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const blobs = new Map<Digest, Uint8Array>();
  const put = (mediaType: string, bytes: Uint8Array): Descriptor => {
    const d = `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest;
    blobs.set(d, bytes);
    return { mediaType, digest: d, size: bytes.byteLength };
  };
  const layer = put(OCI_LAYER_GZIP, new Uint8Array([1, 2, 3]));
  const config = put(OCI_CONFIG, json({ architecture: "amd64" }));
  const held = put(OCI_MANIFEST, json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] }));
  const absentLayer = put(OCI_LAYER_GZIP, new Uint8Array([9]));
  const absent = put(OCI_MANIFEST, json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [absentLayer] }));
  // The index is stored as a generic type; its own mediaType field wins.
  const index = put(OCI_INDEX, json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [held, absent] }));
  blobs.delete(absent.digest);
  const source: WalkSource = {
    sizeOf: async (d) => blobs.get(d)?.byteLength,
    read: async (d) => blobs.get(d)!,
  };
  const seen: Descriptor[] = [];
  await walkImage({ ...index, mediaType: "application/vnd.docker.distribution.manifest.list.v2+json" }, source, (d) => seen.push(d));
  expect(seen.map((d) => [d.digest, d.mediaType])).toEqual([
    [index.digest, OCI_INDEX],
    [held.digest, OCI_MANIFEST],
    [config.digest, OCI_CONFIG],
    [layer.digest, OCI_LAYER_GZIP],
  ]);
});

test("after an image delete, digests are reported removed once they are gone, and only those", async () => {
  const present = new Set<Digest>([digest("a"), digest("b"), digest("shared")]);
  const removed: Digest[] = [];
  const w = new Withdrawals(async (d) => (present.has(d) ? 1 : undefined), (d) => removed.push(d), Array(1000).fill(2));
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 2000 && !cond(); i++) await Bun.sleep(1);
  };
  w.remember("example.test/app:v1", [digest("a"), digest("b"), digest("shared")]);
  w.imageDeleted("example.test/app:v1");
  present.delete(digest("a"));
  await until(() => removed.includes(digest("a")));
  expect(removed).toEqual([digest("a")]);
  present.delete(digest("b"));
  await until(() => removed.includes(digest("b")));
  expect(removed).toEqual([digest("a"), digest("b")]);
  w.imageDeleted("example.test/unknown:v1");
  w.stop();
});

test("the event subscription is scoped to the namespace and the image and content topics", () => {
  expect(subscriptionFilters("k8s.io")).toEqual(['namespace=="k8s.io",topic~="^/images/"', 'namespace=="k8s.io",topic~="^/content/"']);
});
