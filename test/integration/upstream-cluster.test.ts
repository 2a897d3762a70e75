// A cold rush across the cluster: three kagami nodes (network namespaces, peers found by
// mDNS) are pulled at the same moment through a slow upstream link. Each blob has one owner
// that fetches it upstream; the others follow the owner. Upstream blob bytes stay within
// 1.2x the image, and every node's client gets identical digests. When the owner dies in
// the middle of a blob, the node following it resumes from the upstream and its client
// still gets the whole blob.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ownerOf } from "../../src/mirror/upstream-owner.ts";
import type { Digest } from "../../src/oci/index.ts";
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
let second: BuiltImage;

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
  second = await buildImage({ dir: join(tempDir("upstream-cluster"), "second"), tag: "v1", layers: [{ files: { "d.bin": 24 * MiB } }] });
  await pushImage(image, { registry: registry.host, repo: "rush/app", netns: net.node("n1").netns, scope });
  await pushImage(second, { registry: registry.host, repo: "rush/second", netns: net.node("n1").netns, scope });
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

async function peerId(label: string): Promise<string> {
  const r = await net.exec(net.node(label), ["curl", "-sf", `http://${net.node(label).ip}:9090/debug.json`]);
  return (JSON.parse(r.stdout) as { node: { peerId: string } }).node.peerId;
}

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

describe("the owner of a blob dies while another node follows it", () => {
  test("the follower resumes from the upstream and its client gets the whole blob", async () => {
    const layer = second.layers[0]!;
    const ids = await Promise.all(NODES.map(peerId));
    const ownerIndex = ids.indexOf(ownerOf(layer.digest as Digest, { selfId: ids[0]!, peers: () => ids.slice(1).map((id) => ({ id, url: "" })) })?.id ?? ids[0]!);
    const follower = NODES[(ownerIndex + 1) % NODES.length]!;
    const followerNode = nodes[NODES.indexOf(follower)]!;
    await net.limitRate(net.node("registry"), { rate: "40mbit" });
    const out = join(tempDir("cluster-follower"), "layer");
    const client = net.spawn(net.node(follower), { name: "follower-client", cmd: ["curl", "-sf", "-o", out, `${followerNode.url}/v2/rush/second/blobs/${layer.digest}`] });
    await waitFor("the follower's client to receive a MiB", () => existsSync(out) && statSync(out).size > MiB, { timeoutMs: 30_000 });
    nodes[ownerIndex]!.proc.signal("SIGKILL");
    expect((await client.exited).code).toBe(0);
    expect(`sha256:${new Bun.CryptoHasher("sha256").update(readFileSync(out)).digest("hex")}`).toBe(layer.digest);
    expect(followerNode.proc.log()).toContain("resuming upstream");
  }, 120_000);
});
