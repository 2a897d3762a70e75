// The upstream dies in the middle of a blob: every client attached to the fetch gets an
// error (a broken download, never a truncated success), kagami removes the temp file and
// publishes nothing, and once the upstream is back the next pull succeeds. The registry
// sits behind a slow link (namespaces + tc) so "the middle" is certain.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
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
const scope = new Scope("upstream-failure");
let net: Network;
let registry: Registry;
let kagami: Kagami;
let image: BuiltImage;

beforeAll(async () => {
  requireNetns();
  requireTools("docker-registry", "skopeo", "umoci", "tc");
  image = await buildImage({ dir: join(tempDir("upstream-failure"), "layout"), tag: "v1", layers: [{ files: { "big.bin": 24 * MiB } }] });
  net = await createNetwork({ nodes: ["registry", "edge"], hostAddress: true, scope });
  registry = await startRegistry({ node: net.node("registry"), scope });
  await pushImage(image, { registry: registry.host, repo: "fail/app", netns: net.node("edge").netns, scope });
  await net.limitRate(net.node("registry"), { rate: "40mbit" });
  kagami = await startKagami({
    node: net.node("edge"),
    mdns: false,
    flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true", "upstream-timeout": "5s" },
    scope,
  });
}, 120_000);

afterAll(async () => {
  await scope.teardown();
  await teardown();
});

/** Reads a response to its end; resolves with the byte count or rejects when the stream breaks. */
async function drain(res: Response, onFirstBytes?: () => void): Promise<number> {
  let bytes = 0;
  for await (const chunk of res.body!) {
    bytes += chunk.byteLength;
    if (bytes > MiB && onFirstBytes) {
      onFirstBytes();
      onFirstBytes = undefined;
    }
  }
  return bytes;
}

describe("the upstream dies mid-blob", () => {
  test("attached clients get an error, the temp file goes, nothing is published, the next pull succeeds", async () => {
    const layer = image.layers[0]!;
    const url = `${kagami.url}/v2/fail/app/blobs/${layer.digest}`;
    let killed: Promise<unknown> | undefined;
    const first = await fetch(url);
    expect(first.status).toBe(200);
    expect(first.headers.get("Docker-Content-Digest")).toBe(layer.digest);
    const second = await fetch(url);
    expect(second.status).toBe(200);
    const results = await Promise.allSettled([drain(first, () => (killed = registry.proc.stop(1))), drain(second)]);
    await killed;
    for (const r of results) expect(r.status).toBe("rejected");

    const ingest = join(kagami.dataDir, "ingest");
    await waitFor("the temp file to go", () => readdirSync(ingest).length === 0, { timeoutMs: 10_000 });
    const res = await fetch(url);
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    expect(readdirSync(join(kagami.dataDir, "blobs", "sha256"))).not.toContain(layer.digest.slice("sha256:".length));

    registry = await startRegistry({
      node: net.node("registry"),
      addr: registry.host,
      extraConfig: { storage: { filesystem: { rootdirectory: registry.storageDir }, delete: { enabled: true } } },
      scope,
    });
    await net.clearRate(net.node("registry"));
    const pulled = await pullImage({ registry: kagami.host, repo: "fail/app", reference: "v1", netns: net.node("edge").netns, all: false, scope });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
  }, 120_000);
});
