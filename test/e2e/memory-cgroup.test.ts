// Issue 5's e2e scenario: node 1's kagami runs in a 128Mi memory cgroup (a container's limit;
// it joins the cgroup before entering its network namespace) and serves node 2's CRI pull of
// a large image, with the registry cut off, while 100 more clients download the image's
// biggest layer from it at once. The pull must succeed with the right image, kagami must not
// be killed (same PID, no OOM kill in its cgroup), and every extra download must arrive with
// the right sha256 or be shed with a 404 (containerd's cue to try the next host).
// Inside `ip netns exec` /sys is remounted and kagami cannot read its cgroup, so it is told
// the limit with --memory-limit.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createMemoryCgroup, type MemoryCgroup } from "../../scripts/e2e/cgroup.ts";
import { teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { createCluster, type Cluster } from "../../scripts/e2e/cluster.ts";
import { requireContainerd } from "../../scripts/e2e/containerd.ts";
import { buildImage, type BuiltImage } from "../../scripts/e2e/image.ts";
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
let cgroup: MemoryCgroup;

beforeAll(async () => {
  requireNetns();
  requireContainerd();
  requireMemoryCgroup();
  requireTools("skopeo", "umoci", "docker-registry", "curl", "openssl");
  // Two layers of random bytes (they do not compress): ~128 MiB to pull.
  image = await buildImage({
    dir: join(tempDir("memory-images"), "layout"),
    tag: "big",
    layers: [{ files: { "data/a.bin": 64 * MiB } }, { files: { "data/b.bin": 64 * MiB } }],
  });
  cgroup = createMemoryCgroup({ limitBytes: LIMIT, name: "node1-kagami" });
  cluster = await createCluster({
    nodes: 2,
    kagamiByNode: { node1: { cgroup: cgroup.path, flags: { "memory-limit": "128Mi" } } },
  });
  await cluster.push(image, "e2e/big");
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

test(
  "node 2 pulls a 128 MiB image from node 1, whose kagami runs in a 128Mi cgroup while 100 more clients download a layer from it",
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
    const ns = `?ns=${cluster.registry.host}`;
    const blobs = [image.config, ...image.layers];
    await waitFor(
      "node 2's kagami to find the image on node 1",
      async () => {
        for (const p of [`/v2/e2e/big/manifests/big`, ...blobs.map((b) => `/v2/e2e/big/blobs/${b.digest}`)]) {
          if ((await node2.request("HEAD", `${node2.kagami.url}${p}${ns}`)) !== 200) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 250, proc: node2.kagami.proc },
    );
    // containerd wrote the layers, so their pages are charged to containerd's cgroup; dropped
    // now, what kagami sends is read again and charged to kagami's cgroup, as on a fresh node.
    for (const layer of image.layers) dropFileCache(join(node1.containerd.contentPath, "blobs", "sha256", layer.digest.slice("sha256:".length)));

    const biggest = image.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const extraUrl = `${node1.kagami.url}/v2/e2e/big/blobs/${biggest.digest}${ns}`;
    const stopSampling = peakWorkingSet(cgroup);
    const served1 = node1.servedMark();
    const served2 = node2.servedMark();
    await cluster.cutRegistry();
    let pulled: string;
    let downloads: Download[];
    try {
      [pulled, downloads] = await Promise.all([
        node2.cri.pullImage(tag, { timeoutMs: 90_000 }),
        downloadMany(node2.net.netns, extraUrl, EXTRA_DOWNLOADS),
      ]);
    } finally {
      await cluster.restoreRegistry();
    }
    const peak = stopSampling();

    expect(pulled).toBe(image.config.digest);
    // Node 2's kagami got every blob of the image from its peer, node 1.
    const fromPeer = node2.served(served2).filter((l) => l.status === 200 && l.source === "peer");
    expect(blobs.every((b) => fromPeer.some((l) => l.digest === b.digest))).toBe(true);

    const expectedSha = biggest.digest.slice("sha256:".length);
    const ok = downloads.filter((d) => d.status === 200 && d.curlExit === 0 && d.bytes === biggest.size && d.sha256 === expectedSha).length;
    const corrupted = downloads.filter((d) => d.status === 200 && d.bytes === biggest.size && d.sha256 !== expectedSha).length;
    const shed = downloads.filter((d) => d.status === 404).length;
    const lines = node1.served(served1).filter((l) => l.digest === biggest.digest);
    console.log(
      `node 1 in ${LIMIT / MiB} MiB: ${ok} downloads ok, ${shed} shed, ${corrupted} corrupted of ${EXTRA_DOWNLOADS}; ` +
        `peak working set ${(peak / MiB).toFixed(1)} MiB, peak usage ${(Number(readFileSync(join(cgroup.path, cgroup.version === 1 ? "memory.max_usage_in_bytes" : "memory.peak"), "utf8")) / MiB).toFixed(1)} MiB, ` +
        `OOM kills ${cgroup.oomKills()}; node 1 answered ${lines.length} requests for the layer`,
    );
    expect(downloads).toHaveLength(EXTRA_DOWNLOADS);
    expect(corrupted).toBe(0);
    expect(ok + shed).toBe(EXTRA_DOWNLOADS);

    expect(node1.kagami.proc.running()).toBe(true);
    expect(node1.kagami.proc.pid).toBe(pid);
    expect(cgroup.pids()).toContain(pid);
    expect(cgroup.oomKills()).toBe(0);
  },
  120_000,
);
