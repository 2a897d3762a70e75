// Issue 5's e2e scenario: node 1's kagami runs in a 128Mi memory cgroup (a container's limit;
// it joins the cgroup before entering its network namespace) and serves node 2's CRI pull of
// a large image, with the registry cut off, while 100 more clients hit it at once: half
// download a layer it holds (sendfile: page cache charged to its cgroup), half a layer only
// node 2 holds (node 1 proxies it: every byte through its byte budget). The pull must succeed
// with the right image, kagami must not be killed (same PID, no OOM kill in its cgroup), and
// every extra download must arrive with the right sha256 or be answered 404 (containerd's cue
// to try the next host): shed under memory pressure, or no peer answered in time.
// Inside `ip netns exec` /sys is remounted and kagami cannot read its cgroup, so it is told
// the limit with --memory-limit.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createMemoryCgroup, type MemoryCgroup } from "../../scripts/e2e/cgroup.ts";
import { teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { createCluster, type Cluster, type ClusterNode } from "../../scripts/e2e/cluster.ts";
import { requireContainerd } from "../../scripts/e2e/containerd.ts";
import { buildImage, type BlobRef, type BuiltImage } from "../../scripts/e2e/image.ts";
import { run, waitFor } from "../../scripts/e2e/proc.ts";
import { requireMemoryCgroup, requireNetns, requireTools } from "../../scripts/e2e/require.ts";
import { dropFileCache } from "../../src/governor/index.ts";

const MiB = 1 << 20;
const LIMIT = 128 * MiB;
const EXTRA_DOWNLOADS = 100;
/** Each extra download's own bound (curl --max-time). */
const DOWNLOAD_SECONDS = 60;

let cluster: Cluster;
let image: BuiltImage;
/** Pulled by node 2 only: node 1 serves its layer from its peer. */
let other: BuiltImage;
let cgroup: MemoryCgroup;

beforeAll(async () => {
  requireNetns();
  requireContainerd();
  requireMemoryCgroup();
  requireTools("skopeo", "umoci", "docker-registry", "curl", "openssl");
  // Two layers of random bytes (they do not compress): ~128 MiB to pull.
  const layout = join(tempDir("memory-images"), "layout");
  image = await buildImage({ dir: layout, tag: "big", layers: [{ files: { "data/a.bin": 64 * MiB } }, { files: { "data/b.bin": 64 * MiB } }] });
  other = await buildImage({ dir: layout, tag: "other", layers: [{ files: { "data/c.bin": 64 * MiB } }] });
  cgroup = createMemoryCgroup({ limitBytes: LIMIT, name: "node1-kagami" });
  cluster = await createCluster({
    nodes: 2,
    kagamiByNode: { node1: { cgroup: cgroup.path, flags: { "memory-limit": "128Mi" } } },
  });
  await cluster.push(image, "e2e/big");
  await cluster.push(other, "e2e/other");
}, 180_000);

afterAll(async () => {
  await cluster?.restoreRegistry().catch(() => undefined);
  await teardown();
}, 60_000);

interface Download {
  status: number;
  bytes: number;
  curlExit: number;
  sha256: string;
}

/**
 * `count` concurrent downloads of `url` from inside a namespace, each hashed as it streams
 * (curl | openssl dgst); every one is bounded by curl's --max-time.
 */
async function downloadMany(netns: string, url: string, count: number): Promise<Download[]> {
  const dir = tempDir("extra-downloads");
  const script = `d="$1"; url="$2"; n="$3"; t="$4"
for i in $(seq 1 "$n"); do
  curl -sS --max-time "$t" -w '%{stderr}@@ %{http_code} %{size_download} %{exitcode}\\n' "$url" 2>"$d/$i.err" | openssl dgst -sha256 -r >"$d/$i.sha" &
done
wait`;
  await run(["bash", "-c", script, "downloads", dir, url, String(count), String(DOWNLOAD_SECONDS)], { netns, timeoutMs: (DOWNLOAD_SECONDS + 30) * 1000 });
  return readdirSync(dir)
    .filter((f) => f.endsWith(".err"))
    .map((f) => {
      const m = readFileSync(join(dir, f), "utf8").match(/^@@ (\d{3}) (\d+) (\d+)$/m);
      const sha = readFileSync(join(dir, f.replace(/\.err$/, ".sha")), "utf8").trim().split(/\s+/)[0] ?? "";
      return { status: m ? Number(m[1]) : 0, bytes: m ? Number(m[2]) : 0, curlExit: m ? Number(m[3]) : -1, sha256: sha };
    });
}

/** Samples the cgroup's working set until stopped; returns the peak. */
function peakWorkingSet(cg: MemoryCgroup): () => number {
  let peak = 0;
  const sample = () => {
    try {
      peak = Math.max(peak, cg.workingSet());
    } catch {
      // Read again on the next tick.
    }
  };
  const timer = setInterval(sample, 20);
  return () => {
    clearInterval(timer);
    sample();
    return peak;
  };
}

/** Waits until `via`'s kagami answers HEAD 200 for every path (it found them on a peer). */
async function waitFound(via: ClusterNode, paths: string[]): Promise<void> {
  const ns = `?ns=${cluster.registry.host}`;
  await waitFor(
    `${via.label}'s kagami to find ${paths.length} objects on its peer`,
    async () => {
      for (const p of paths) if ((await via.request("HEAD", `${via.kagami.url}${p}${ns}`)) !== 200) return false;
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 250, proc: via.kagami.proc },
  );
}

function tally(downloads: Download[], blob: BlobRef): { ok: number; notFound: number; corrupted: number; failed: string[] } {
  const sha = blob.digest.slice("sha256:".length);
  const t = { ok: 0, notFound: 0, corrupted: 0, failed: [] as string[] };
  for (const d of downloads) {
    if (d.status === 404) t.notFound++;
    else if (d.status !== 200 || d.curlExit !== 0 || d.bytes !== blob.size) t.failed.push(`status ${d.status}, ${d.bytes} bytes, curl exit ${d.curlExit}`);
    else if (d.sha256 === sha) t.ok++;
    else t.corrupted++;
  }
  return t;
}

test(
  "node 2 pulls a 128 MiB image from node 1, whose kagami runs in a 128Mi cgroup while 100 more clients download from it",
  async () => {
    const [node1, node2] = [cluster.node(1), cluster.node(2)];
    const pid = node1.kagami.proc.pid;
    // The cgroup trick worked: kagami itself (not only the shell that started it) is in the cgroup.
    expect(cgroup.pids()).toContain(pid);
    const governorOn = node1.kagami.proc
      .log()
      .split("\n")
      .find((l) => l.includes('"msg":"memory governor on"'));
    expect(governorOn && JSON.parse(governorOn)).toMatchObject({ limit: LIMIT, limitSource: "flag" });

    const tag = cluster.ref("e2e/big", "big");
    expect(await node1.cri.pullImage(tag)).toBe(image.config.digest);
    expect(await node2.cri.pullImage(cluster.ref("e2e/other", "other"))).toBe(other.config.digest);
    const blobs = [image.config, ...image.layers];
    await waitFound(node2, [`/v2/e2e/big/manifests/big`, ...blobs.map((b) => `/v2/e2e/big/blobs/${b.digest}`)]);
    const held = image.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const proxied = other.layers[0]!;
    await waitFound(node1, [`/v2/e2e/other/blobs/${proxied.digest}`]);
    // containerd wrote the layers, so their pages are charged to containerd's cgroup; dropped
    // now, what kagami sends is read again and charged to kagami's cgroup, as on a fresh node.
    for (const layer of image.layers) dropFileCache(join(node1.containerd.contentPath, "blobs", "sha256", layer.digest.slice("sha256:".length)));

    const ns = `?ns=${cluster.registry.host}`;
    const stopSampling = peakWorkingSet(cgroup);
    const [served1, served2] = [node1.servedMark(), node2.servedMark()];
    await cluster.cutRegistry();
    let pulled: string;
    let heldDownloads: Download[];
    let proxiedDownloads: Download[];
    try {
      [pulled, heldDownloads, proxiedDownloads] = await Promise.all([
        node2.cri.pullImage(tag, { timeoutMs: 90_000 }),
        downloadMany(node2.net.netns, `${node1.kagami.url}/v2/e2e/big/blobs/${held.digest}${ns}`, EXTRA_DOWNLOADS / 2),
        downloadMany(node2.net.netns, `${node1.kagami.url}/v2/e2e/other/blobs/${proxied.digest}${ns}`, EXTRA_DOWNLOADS / 2),
      ]);
    } finally {
      await cluster.restoreRegistry();
    }
    const peak = stopSampling();
    const heldTally = tally(heldDownloads, held);
    const proxiedTally = tally(proxiedDownloads, proxied);
    const shedAnswers = node1.served(served1).filter((l) => l.source === "shed").length;
    const peakUsage = Number(readFileSync(join(cgroup.path, cgroup.version === 1 ? "memory.max_usage_in_bytes" : "memory.peak"), "utf8"));
    console.log(
      `node 1's kagami in ${LIMIT / MiB} MiB: held layer ${JSON.stringify(heldTally)}, proxied layer ${JSON.stringify(proxiedTally)}; ` +
        `of the 404s, ${shedAnswers} shed (its log); peak working set ${(peak / MiB).toFixed(1)} MiB (sampled), peak usage ${(peakUsage / MiB).toFixed(1)} MiB, OOM kills ${cgroup.oomKills()}`,
    );

    expect(pulled).toBe(image.config.digest);
    // Node 2's kagami got every blob of the image from its peer, node 1.
    const fromPeer = node2.served(served2).filter((l) => l.status === 200 && l.source === "peer");
    expect(blobs.filter((b) => !fromPeer.some((l) => l.digest === b.digest))).toEqual([]);

    expect(heldDownloads).toHaveLength(EXTRA_DOWNLOADS / 2);
    expect(proxiedDownloads).toHaveLength(EXTRA_DOWNLOADS / 2);
    for (const t of [heldTally, proxiedTally]) {
      expect(t.corrupted).toBe(0);
      expect(t.failed).toEqual([]);
    }
    // Files sent by sendfile need no buffers: they are never shed.
    expect(heldTally.ok).toBe(EXTRA_DOWNLOADS / 2);

    expect(node1.kagami.proc.running()).toBe(true);
    expect(node1.kagami.proc.pid).toBe(pid);
    expect(cgroup.pids()).toContain(pid);
    expect(cgroup.oomKills()).toBe(0);
  },
  120_000,
);
