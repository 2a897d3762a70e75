// mDNS on a LAN: three kagami nodes in network namespaces on one bridge (with the multicast
// route mDNS needs), no bootstrap configured. They find each other, and a node that holds
// nothing serves another's image. The namespaces are removed afterwards, also on failure.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { buildImage, type BuiltImage } from "../../scripts/e2e/image.ts";
import { kagamiCommand, startKagami, type Kagami } from "../../scripts/e2e/kagami.ts";
import { createNetwork, type Network } from "../../scripts/e2e/netns.ts";
import { run, waitFor } from "../../scripts/e2e/proc.ts";

let net: Network;
let image: BuiltImage;
let dir: string;
const nodes: Kagami[] = [];
const REPO = "test/mdns";

/** curl inside a node's namespace (the host namespace may not reach the test subnet directly). */
async function get(from: number, path: string, out?: string): Promise<{ status: number; headers: string }> {
  const node = net.nodes[from]!;
  const args = ["curl", "-s", "-D", "-", "-o", out ?? "/dev/null", "--max-time", "10", `http://${node.ip}:5000${path}`];
  const r = await net.exec(node, args, { allowFailure: true });
  const status = Number(r.stdout.match(/^HTTP\/1\.1 (\d+)/)?.[1] ?? 0);
  return { status, headers: r.stdout.toLowerCase() };
}

beforeAll(async () => {
  dir = tempDir("p2p-mdns");
  image = await buildImage({ dir: join(dir, "layout"), tag: "v1", layers: [{ files: { "data/blob": 2_000_000 } }] });
  net = await createNetwork({ nodes: 3 });
  const dataDirs = net.nodes.map((_, i) => join(dir, `data-${i}`));
  await run([...kagamiCommand(), "import", `--data-dir=${dataDirs[0]}`, `${image.layout}:v1`, `docker.io/${REPO}:v1`]);
  for (const [i, node] of net.nodes.entries()) {
    nodes.push(await startKagami({ name: `kagami-mdns-${i}`, node, mdns: true, dataDir: dataDirs[i], readyPath: "/livez" }));
  }
}, 120_000);

afterAll(async () => {
  await teardown();
});

describe("mDNS discovery in network namespaces", () => {
  test("with no bootstrap configured, every node finds peers and becomes ready", async () => {
    for (let i = 0; i < 3; i++) {
      await waitFor(`node ${i} ready`, async () => (await get(i, "/readyz")).status === 200, { timeoutMs: 30_000 });
    }
  });

  test("a node that holds nothing serves another's image", async () => {
    const manifestPath = `/v2/${REPO}/manifests/v1?ns=docker.io`;
    await waitFor("node 3 finds the tag", async () => (await get(2, manifestPath)).status === 200, { timeoutMs: 30_000 });
    const m = await get(2, manifestPath);
    expect(m.headers).toContain(`docker-content-digest: ${image.manifest.digest}`);
    const layer = image.layers[0]!;
    const out = join(dir, "layer-from-node3");
    const blobPath = `/v2/${REPO}/blobs/${layer.digest}?ns=docker.io`;
    await waitFor("node 3 serves the layer", async () => (await get(2, blobPath, out)).status === 200, { timeoutMs: 30_000 });
    expect(`sha256:${createHash("sha256").update(readFileSync(out)).digest("hex")}`).toBe(layer.digest);
    // Node 3 held none of it: with X-Spegel-Mirrored it answers from local content only.
    const local = await net.exec(net.nodes[2]!, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Spegel-Mirrored: true", `http://${net.nodes[2]!.ip}:5000${blobPath}`]);
    expect(local.stdout).toBe("404");
  });
});
