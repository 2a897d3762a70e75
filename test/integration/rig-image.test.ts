// The rig's image builder: layers hold exactly the files asked for (checked by unpacking with
// umoci), random content is incompressible, and a multi-arch index points at one image per
// platform with the right digests.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildImage, buildIndex, readLayout, type BuiltImage, type BuiltIndex } from "../../scripts/e2e/image.ts";
import { run } from "../../scripts/e2e/proc.ts";
import { requireTools } from "../../scripts/e2e/require.ts";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";

const LONG_PATH = `deep/${"d".repeat(90)}/${"f".repeat(60)}.txt`;
const BYTES = new Uint8Array([0, 1, 2, 255, 254, 10, 13]);
let dir: string;
let image: BuiltImage;
let index: BuiltIndex;

beforeAll(async () => {
  requireTools("umoci");
  dir = tempDir("rig-image");
  image = await buildImage({
    dir: join(dir, "single"),
    tag: "v1",
    layers: [{ files: { "etc/hello.txt": "hello\n", "bin/bytes": BYTES, [LONG_PATH]: "long" } }, { files: { "data/random.bin": 3_000_000 } }],
    config: { entrypoint: ["/bin/true"], labels: { rig: "yes" } },
  });
  index = await buildIndex({
    dir: join(dir, "multi"),
    tag: "v1",
    images: [
      { platform: "linux/amd64", layers: [{ files: { arch: "amd64" } }, { files: { "r.bin": 10_000 } }] },
      { platform: "linux/arm64/v8", layers: [{ files: { arch: "arm64" } }, { files: { "r.bin": 10_000 } }] },
    ],
  });
});

afterAll(() => teardown());

describe("buildImage", () => {
  test("unpacking the image gives exactly the files of its layers", async () => {
    const bundle = join(dir, "bundle");
    await run(["umoci", "unpack", "--rootless", "--image", `${image.layout}:v1`, bundle]);
    const rootfs = join(bundle, "rootfs");
    expect(readFileSync(join(rootfs, "etc/hello.txt"), "utf8")).toBe("hello\n");
    expect(new Uint8Array(readFileSync(join(rootfs, "bin/bytes")))).toEqual(BYTES);
    expect(readFileSync(join(rootfs, LONG_PATH), "utf8")).toBe("long");
    expect(statSync(join(rootfs, "data/random.bin")).size).toBe(3_000_000);
    const config = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as { process: { args: string[] } };
    expect(config.process.args).toEqual(["/bin/true"]);
  });

  test("two layers, and random content does not compress", () => {
    expect(image.kind).toBe("manifest");
    expect(image.layers).toHaveLength(2);
    expect(image.layers[1]!.size).toBeGreaterThan(3_000_000);
    expect(image.platform).toEqual({ os: "linux", architecture: "amd64" });
  });

  test("every blob is in the layout under its digest, and blobs lists manifest, config and layers", async () => {
    expect(image.blobs.map((b) => b.digest)).toEqual([image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)]);
    for (const b of image.blobs) {
      const bytes = readFileSync(join(image.layout, "blobs/sha256", b.digest.slice(7)));
      expect(`sha256:${createHash("sha256").update(bytes).digest("hex")}`).toBe(b.digest);
      expect(bytes.length).toBe(b.size);
    }
    expect(image.size).toBe(image.blobs.reduce((n, b) => n + b.size, 0));
    // No garbage from intermediate umoci steps.
    expect(readdirSync(join(image.layout, "blobs/sha256")).length).toBe(image.blobs.length);
    await expect(readLayout(image.layout, "v1", { verify: true })).resolves.toEqual(image);
  });

  test("paths that escape the layer are refused", async () => {
    for (const bad of ["/etc/passwd", "../x", "a/../../x", "a//b"]) {
      await expect(buildImage({ dir: join(dir, "bad"), tag: "v1", layers: [{ files: { [bad]: "x" } }] })).rejects.toThrow("invalid layer path");
    }
  });
});

describe("buildIndex", () => {
  test("an index of one image per platform, with distinct configs and the right platforms", () => {
    expect(index.kind).toBe("index");
    expect(index.images.map((i) => i.platform)).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
    ]);
    const [amd, arm] = index.images;
    expect(amd!.manifest.digest).not.toBe(arm!.manifest.digest);
    expect(amd!.config.digest).not.toBe(arm!.config.digest);
    const arm64Config = JSON.parse(readFileSync(join(index.layout, "blobs/sha256", arm!.config.digest.slice(7)), "utf8")) as { architecture: string };
    expect(arm64Config.architecture).toBe("arm64");
  });

  test("the index blob lists each manifest's digest and size, and blobs covers everything", () => {
    const raw = readFileSync(join(index.layout, "blobs/sha256", index.index.digest.slice(7)));
    expect(`sha256:${createHash("sha256").update(raw).digest("hex")}`).toBe(index.index.digest);
    const parsed = JSON.parse(raw.toString()) as { mediaType: string; manifests: { digest: string; size: number }[] };
    expect(parsed.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(parsed.manifests.map((m) => [m.digest, m.size])).toEqual(index.images.map((i) => [i.manifest.digest, i.manifest.size]));
    const all = new Set([index.index.digest, ...index.images.flatMap((i) => i.blobs.map((b) => b.digest))]);
    expect(new Set(index.blobs.map((b) => b.digest))).toEqual(all);
    expect(new Set(readdirSync(join(index.layout, "blobs/sha256")).map((hex) => `sha256:${hex}`))).toEqual(all);
  });
});
