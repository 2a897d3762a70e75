// A cold rush across the cluster: three kagami nodes (network namespaces, peers found by
// mDNS) are pulled at the same moment through a slow upstream link. Each blob has one owner
// that fetches it upstream; the others follow the owner. Upstream blob bytes stay within
// 1.2x the image, and every node's client gets identical digests.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  buildImage,
  createNetwork,
  digestsOf,
  pullImage,
  pushImage,
  requireNetns,
  requireTools,
  Scope,
  startKagami,
  startRegistry,
  teardown,
  tempDir,
  waitFor,
  type BuiltImage,
  type Kagami,
  type Network,
  type Registry,
} from "../../scripts/e2e/index.ts";

const MiB = 1024 * 1024;
const NODES = ["n1", "n2", "n3"];
const scope = new Scope("upstream-cluster");
let net: Network;
let registry: Registry;
let nodes: Kagami[];
let image: BuiltImage;

beforeAll(async () => {
  requireNetns();
  requireTools("docker-registry", "skopeo", "umoci", "tc");
  image = await buildImage({
    dir: join(tempDir("upstream-cluster"), "layout"),
    tag: "v1",
    layers: [{ files: { "a.bin": 16 * MiB } }, { files: { "b.bin": 16 * MiB } }, { files: { "c.bin": 16 * MiB } }],
  });
  net = await createNetwork({ nodes: ["registry", ...NODES], scope });
  registry = await startRegistry({ node: net.node("registry"), scope });
  await pushImage(image, { registry: registry.host, repo: "rush/app", netns: net.node("n1").netns, scope });
  await net.limitRate(net.node("registry"), { rate: "200mbit" });
  nodes = await Promise.all(
    NODES.map((label) =>
      startKagami({
        name: `kagami-${label}`,
        node: net.node(label),
        mdns: true,
        flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true" },
        scope,
      }),
    ),
  );
  // Every node must know the two others before the rush, as a settled cluster does.
  for (const [i, label] of NODES.entries()) {
    const metrics = `http://${net.node(label).ip}:9090/debug.json`;
    await waitFor(
      `${label} to see both peers`,
      async () => {
        const res = await net.exec(net.node(label), ["curl", "-sf", metrics], { allowFailure: true });
        return ((JSON.parse(res.stdout || "{}") as { peerCount?: number }).peerCount ?? 0) >= NODES.length - 1;
      },
      { timeoutMs: 30_000, proc: nodes[i]!.proc },
    );
  }
}, 180_000);

afterAll(async () => {
  await scope.teardown();
  await teardown();
});

describe("three nodes pulled cold at the same moment", () => {
  test("upstream blob bytes stay within 1.2x the image; every client gets identical digests", async () => {
    const mark = await registry.mark();
    const pulled = await Promise.all(
      NODES.map((label, i) => pullImage({ registry: nodes[i]!.host, repo: "rush/app", reference: "v1", netns: net.node(label).netns, all: false, scope, timeoutMs: 120_000 })),
    );
    for (const p of pulled) expect(digestsOf(p)).toEqual(digestsOf(image));
    const blobBytes = image.config.size + image.layers.reduce((n, l) => n + l.size, 0);
    const upstream = await registry.blobBytes(mark);
    expect(upstream).toBeGreaterThanOrEqual(blobBytes);
    expect(upstream).toBeLessThanOrEqual(1.2 * blobBytes);
  }, 180_000);
});
