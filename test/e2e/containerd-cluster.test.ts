// Issue 4's "must show", end to end: two nodes, each with a real containerd and its own kagami
// (--store containerd, static bootstrap), configured by the real `kagami configure`, a
// distribution registry in its own namespace, and a "direct" containerd without a mirror as
// the baseline. Every pull goes through CRI PullImage, the kubelet's path. The table at the
// end gives the time of each scenario (no timing is asserted).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { createCluster, snapshotTree, type Cluster, type ClusterNode, type ServedLine } from "../../scripts/e2e/cluster.ts";
import { requireContainerd } from "../../scripts/e2e/containerd.ts";
import { buildImage, buildIndex, type BuiltImage, type BuiltIndex } from "../../scripts/e2e/image.ts";
import { waitFor } from "../../scripts/e2e/proc.ts";
import { requireNetns, requireTools } from "../../scripts/e2e/require.ts";

const MiB = 1 << 20;
/** How long node 1 may keep serving an image after CRI RemoveImage returned. */
const WITHDRAW_BOUND_MS = 30_000;
/** How long a held image may take to become reachable through another node's kagami. */
const ADVERTISE_BOUND_MS = 30_000;

const hostArch = process.arch === "arm64" ? "arm64" : "amd64";
const otherArch = hostArch === "amd64" ? "arm64" : "amd64";

let cluster: Cluster;
let app: BuiltImage;
let multi: BuiltIndex;
let fresh: BuiltImage;
let after: BuiltImage;
const timings: { scenario: string; ms: number; note: string }[] = [];

async function timed<T>(scenario: string, note: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await fn();
  timings.push({ scenario, ms: Math.round(performance.now() - started), note });
  return result;
}

/** Manifest, config and layers of one image: what a pull of it fetches. */
const closure = (image: BuiltImage) => [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)];
const hostImage = () => multi.images.find((i) => i.platform.architecture === hostArch)!;

/** Digests among `digests` that `lines` answered with 200 from `source`. */
function servedFrom(source: "containerd" | "peer", lines: ServedLine[], digests: string[]): string[] {
  return digests.filter((d) => lines.some((l) => l.digest === d && l.status === 200 && l.source === source));
}

/** Waits until node `via`'s kagami finds the tag and every blob of `image` on its peers. */
async function waitReachable(via: ClusterNode, repo: string, tag: string, image: BuiltImage): Promise<number> {
  const started = performance.now();
  const ns = `?ns=${cluster.registry.host}`;
  const paths = [`/v2/${repo}/manifests/${tag}`, ...[image.config, ...image.layers].map((b) => `/v2/${repo}/blobs/${b.digest}`)];
  await waitFor(
    `${via.label}'s kagami to find ${repo}:${tag} on a peer`,
    async () => {
      for (const p of paths) if ((await via.request("HEAD", `${via.kagami.url}${p}${ns}`)) !== 200) return false;
      return true;
    },
    { timeoutMs: ADVERTISE_BOUND_MS, intervalMs: 250, proc: via.kagami.proc },
  );
  return Math.round(performance.now() - started);
}

/** Removes an image from a node's containerd (CRI RemoveImage deletes its content synchronously). */
async function removeFrom(node: ClusterNode, image: string): Promise<void> {
  const status = await node.cri.imageStatus(image);
  if (status) await node.cri.removeImage(status.id);
  expect(await node.cri.imageStatus(image)).toBeUndefined();
}

beforeAll(async () => {
  requireNetns();
  requireContainerd();
  requireTools("skopeo", "umoci", "docker-registry");
  const layout = join(tempDir("cluster-images"), "layout");
  // Small images (a few MiB in 2-3 layers) keep the file within a few minutes on 2 cores.
  app = await buildImage({ dir: layout, tag: "app", layers: [{ files: { "bin/app": 3 * MiB } }, { files: { "lib/data": MiB } }, { files: { "etc/app.conf": "app\n" } }] });
  fresh = await buildImage({ dir: layout, tag: "fresh", layers: [{ files: { "bin/fresh": 3 * MiB } }, { files: { "lib/data": MiB } }, { files: { "etc/fresh.conf": "fresh\n" } }] });
  after = await buildImage({ dir: layout, tag: "after", layers: [{ files: { "bin/after": MiB } }, { files: { "etc/after.conf": "after\n" } }] });
  multi = await buildIndex({
    dir: layout,
    tag: "multi",
    images: [hostArch, otherArch].map((arch) => ({ platform: `linux/${arch}`, layers: [{ files: { "bin/tool": 2 * MiB } }, { files: { "etc/arch": `${arch}\n` } }] })),
  });
  cluster = await timed("rig up", "bridge, registry, 2 nodes + direct: containerd, kagami, kagami configure", () => createCluster({ nodes: 2, direct: true }));
  for (const [image, repo] of [[app, "e2e/app"], [fresh, "e2e/fresh"], [after, "e2e/after"], [multi, "e2e/multi"]] as const) await cluster.push(image, repo);
}, 180_000);

afterAll(async () => {
  if (timings.length > 0) {
    console.log(`e2e containerd cluster timings (${process.env.KAGAMI_BIN ? `KAGAMI_BIN=${process.env.KAGAMI_BIN}` : "bun src/main.ts"}; images: app ${mb(app)}, fresh ${mb(fresh)}, multi/${hostArch} ${mb(multi && hostImage())})`);
    console.table(timings);
  }
  await cluster?.restoreRegistry().catch(() => undefined);
  await teardown();
}, 60_000);

function mb(image: BuiltImage | undefined): string {
  return image ? `${(image.size / MiB).toFixed(1)} MiB` : "?";
}

describe("a containerd cluster with kagami on every node (CRI PullImage)", () => {
  test("configure pointed each node's containerd at its own kagami, the registry after it", () => {
    for (const node of cluster.nodes) {
      const hosts = snapshotTree(node.containerd.certsDir).find((e) => e.path === `${cluster.registry.host}/hosts.toml`);
      expect(hosts?.text?.split("\n")[0]).toBe(`server = "http://${cluster.registry.host}"`);
      expect(hosts?.text).toContain(`[host."${node.mirrorUrl}"]\n  capabilities = ["pull", "resolve"]`);
    }
  });

  test("an image no node holds comes from the registry: kagami answers 404, containerd falls back", async () => {
    const direct = cluster.direct!;
    const node2 = cluster.node(2);
    const directMark = await cluster.registry.mark();
    await timed("direct registry pull", `fresh (${mb(fresh)}), containerd without mirror`, () => direct.cri.pullImage(cluster.ref("e2e/fresh", "fresh")));
    expect(await cluster.registry.blobServes(directMark)).toEqual(new Map([fresh.config, ...fresh.layers].map((b) => [b.digest, 1])));

    const mark = await cluster.registry.mark();
    const served = node2.servedMark();
    const id = await timed("miss -> registry", `fresh via node2's kagami (404) then the registry`, () => node2.cri.pullImage(cluster.ref("e2e/fresh", "fresh")));
    expect(id).toBe(fresh.config.digest);
    // Every object was asked of kagami first, answered 404, then fetched from the registry once.
    const lines = node2.served(served);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((l) => l.status === 404)).toBe(true);
    expect(lines.some((l) => l.ref.endsWith(`e2e/fresh:fresh`))).toBe(true);
    expect(await cluster.registry.blobServes(mark)).toEqual(new Map([fresh.config, ...fresh.layers].map((b) => [b.digest, 1])));
  }, 120_000);

  test("registry cut off: node 2 pulls by tag and by digest what node 1 holds, node 1 served the blobs", async () => {
    const [node1, node2] = [cluster.node(1), cluster.node(2)];
    const id1 = await timed("node1 pull (registry)", `app (${mb(app)}) through kagami's 404 to the registry`, () => node1.cri.pullImage(cluster.ref("e2e/app", "app")));
    expect(id1).toBe(app.config.digest);
    const advertisedMs = await waitReachable(node2, "e2e/app", "app", app);
    timings.push({ scenario: "advertised", ms: advertisedMs, note: "node1 pull done -> node2's kagami finds tag and blobs on a peer" });

    await cluster.cutRegistry();
    try {
      let [served1, served2] = [node1.servedMark(), node2.servedMark()];
      const id2 = await timed("peer pull by tag", `app from node1, registry cut`, () => node2.cri.pullImage(cluster.ref("e2e/app", "app"), { timeoutMs: 60_000 }));
      expect(id2).toBe(app.config.digest);
      expect(servedFrom("containerd", node1.served(served1), closure(app))).toEqual(closure(app));
      expect(servedFrom("peer", node2.served(served2), closure(app))).toEqual(closure(app));

      await removeFrom(node2, cluster.ref("e2e/app", "app"));
      [served1, served2] = [node1.servedMark(), node2.servedMark()];
      const byDigest = cluster.ref("e2e/app", app.manifest.digest);
      const id3 = await timed("peer pull by digest", `app@digest from node1, registry cut`, () => node2.cri.pullImage(byDigest, { timeoutMs: 60_000 }));
      expect(id3).toBe(app.config.digest);
      expect(servedFrom("containerd", node1.served(served1), closure(app))).toEqual(closure(app));
      expect(servedFrom("peer", node2.served(served2), closure(app))).toEqual(closure(app));
    } finally {
      await cluster.restoreRegistry();
    }
  }, 180_000);

  test("a multi-platform index: node 2 gets the platform node 1 holds", async () => {
    const [node1, node2] = [cluster.node(1), cluster.node(2)];
    expect(await node1.cri.pullImage(cluster.ref("e2e/multi", "multi"))).toBe(hostImage().config.digest);
    await waitReachable(node2, "e2e/multi", "multi", hostImage());
    await cluster.cutRegistry();
    try {
      const [served, served2] = [node1.servedMark(), node2.servedMark()];
      const id = await timed("peer pull of an index", `multi (linux/${hostArch} of 2 platforms) from node1, registry cut`, () =>
        node2.cri.pullImage(cluster.ref("e2e/multi", "multi"), { timeoutMs: 60_000 }),
      );
      expect(id).toBe(hostImage().config.digest);
      const held = [multi.index.digest, ...closure(hostImage())];
      expect(servedFrom("containerd", node1.served(served), held)).toEqual(held);
      expect(servedFrom("peer", node2.served(served2), held)).toEqual(held);
      // Nothing of the other platform was asked for: node 1 does not hold it.
      const other = multi.images.find((i) => i.platform.architecture === otherArch)!;
      expect(node1.served(served).filter((l) => l.digest !== undefined && closure(other).includes(l.digest))).toEqual([]);
    } finally {
      await cluster.restoreRegistry();
    }
  }, 120_000);

  test(`an image removed from node 1 is withdrawn within ${WITHDRAW_BOUND_MS / 1000} s: node 2 falls back to the registry`, async () => {
    const [node1, node2] = [cluster.node(1), cluster.node(2)];
    const tag = cluster.ref("e2e/app", "app");
    await removeFrom(node2, cluster.ref("e2e/app", app.manifest.digest));
    const removed = performance.now();
    await removeFrom(node1, tag);
    // Asked directly, as a peer asks (X-Spegel-Mirrored: never forwarded), node 1 answers 404 for all of it.
    const ns = `?ns=${cluster.registry.host}`;
    const paths = [`/v2/e2e/app/manifests/app`, ...closure(app).map((d, i) => `/v2/e2e/app/${i === 0 ? "manifests" : "blobs"}/${d}`)];
    await waitFor(
      "node1's kagami to answer 404 for the removed image",
      async () => {
        for (const p of paths) if ((await node2.request("HEAD", `${node1.kagami.url}${p}${ns}`, { "X-Spegel-Mirrored": "true" })) !== 404) return false;
        return true;
      },
      { timeoutMs: WITHDRAW_BOUND_MS, intervalMs: 100 },
    );
    timings.push({ scenario: "withdrawn", ms: Math.round(performance.now() - removed), note: "node1 RemoveImage -> its kagami answers 404 for tag and blobs" });

    const mark = await cluster.registry.mark();
    const served = node1.servedMark();
    const id = await timed("pull after withdrawal", "app via node2's kagami (peer 404) then the registry", () => node2.cri.pullImage(tag));
    expect(id).toBe(app.config.digest);
    expect(node1.served(served).filter((l) => l.status === 200)).toEqual([]);
    expect(await cluster.registry.blobServes(mark)).toEqual(new Map([app.config, ...app.layers].map((b) => [b.digest, 1])));
  }, 120_000);

  test("containerd on node 1 restarts: kagami reconnects and re-advertises, node 2 pulls from node 1 again", async () => {
    const [node1, node2] = [cluster.node(1), cluster.node(2)];
    const kagamiPid = node1.kagami.proc.pid;
    const logBefore = node1.kagami.proc.log().length;
    await removeFrom(node2, cluster.ref("e2e/multi", "multi"));
    const restarted = performance.now();
    await timed("containerd restart", "node1's containerd stopped and started (same root)", () => node1.containerd.restart());
    await waitFor("node1's kagami ready again", async () => (await node1.request("GET", `${node1.kagami.url}/readyz`)) === 200, {
      timeoutMs: 30_000,
      intervalMs: 100,
      proc: node1.kagami.proc,
    });
    // What it held before the restart, and what it pulls after it (events flow again).
    expect(await node1.cri.pullImage(cluster.ref("e2e/after", "after"))).toBe(after.config.digest);
    await waitReachable(node2, "e2e/multi", "multi", hostImage());
    await waitReachable(node2, "e2e/after", "after", after);
    timings.push({ scenario: "re-advertised", ms: Math.round(performance.now() - restarted), note: "restart -> node2 finds multi (held before) and after (pulled after) on node1" });

    await cluster.cutRegistry();
    try {
      const [served, served2] = [node1.servedMark(), node2.servedMark()];
      const id = await timed("peer pull after restart", "multi + after from node1, registry cut", async () => {
        expect(await node2.cri.pullImage(cluster.ref("e2e/multi", "multi"), { timeoutMs: 60_000 })).toBe(hostImage().config.digest);
        return node2.cri.pullImage(cluster.ref("e2e/after", "after"), { timeoutMs: 60_000 });
      });
      expect(id).toBe(after.config.digest);
      const lines = node1.served(served);
      expect(servedFrom("containerd", lines, closure(hostImage()))).toEqual(closure(hostImage()));
      expect(servedFrom("containerd", lines, closure(after))).toEqual(closure(after));
      const fromPeer = [...closure(hostImage()), ...closure(after)];
      expect(servedFrom("peer", node2.served(served2), fromPeer)).toEqual(fromPeer);
    } finally {
      await cluster.restoreRegistry();
    }
    expect(node1.kagami.proc.running()).toBe(true);
    expect(node1.kagami.proc.pid).toBe(kagamiPid);
    // kagami saw containerd go away and come back, resynchronised and advertised again.
    const messages = node1.kagami.proc
      .log()
      .slice(logBefore)
      .split("\n")
      .flatMap((l) => (l.startsWith("{") ? [String((JSON.parse(l) as { msg?: unknown }).msg)] : []));
    const back = messages.indexOf("containerd event stream is back; resynchronising");
    expect(back).toBeGreaterThan(-1);
    expect(messages.indexOf("advertising held content", back)).toBeGreaterThan(back);
  }, 180_000);

  test("configure then cleanup leaves certs.d byte-identical, and containerd then pulls without kagami", async () => {
    const node1 = cluster.node(1);
    const certs = node1.containerd.certsDir;
    const configured = snapshotTree(certs);
    expect(configured).not.toEqual(node1.certsBefore);
    expect(node1.certsBefore.map((e) => e.path)).toEqual([cluster.registry.host, `${cluster.registry.host}/hosts.toml`]);

    await node1.cleanup();
    expect(snapshotTree(certs)).toEqual([...node1.certsBefore]);
    // The restored file is what containerd uses now: kagami sees no request of this pull.
    const served = node1.servedMark();
    expect(await node1.cri.pullImage(cluster.ref("e2e/fresh", "fresh"))).toBe(fresh.config.digest);
    expect(node1.served(served)).toEqual([]);

    await node1.configure();
    expect(snapshotTree(certs)).toEqual(configured);
    await node1.configure();
    expect(snapshotTree(certs)).toEqual(configured);
    await node1.cleanup();
    await node1.cleanup();
    expect(snapshotTree(certs)).toEqual([...node1.certsBefore]);
    await node1.configure();
  }, 60_000);
});
