import { expect, test } from "bun:test";
import { advertisedCounts } from "../../src/observability/advertised.ts";
import type { Digest } from "../../src/oci/index.ts";

test("advertised keys are counted per registry: tags, distinct root digests, and content digests apart", async () => {
  const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;
  const roots: Record<string, Digest> = {
    "docker.io/library/nginx:1": d("a"),
    "docker.io/library/nginx:latest": d("a"),
    "docker.io/library/redis:7": d("b"),
    "ghcr.io/org/app:v1": d("c"),
  };
  const keys = [...Object.keys(roots), d("a"), d("b"), d("c"), d("d"), "not a key"];
  const counts = await advertisedCounts(keys, async (r) => roots[`${r.registry}/${r.repository}:${r.tag}`]);
  expect(counts).toEqual([
    { registry: "docker.io", imageTags: 3, imageDigests: 2, contentDigests: 0 },
    { registry: "ghcr.io", imageTags: 1, imageDigests: 1, contentDigests: 0 },
    { registry: "", imageTags: 0, imageDigests: 0, contentDigests: 4 },
  ]);
});
