// A cold rush on one node: 20 skopeo clients pull the same 256 MiB image through one kagami
// at once, from a real registry behind an 800 Mbit/s link (network namespaces, tc). The
// upstream must serve each blob exactly once, every client must get the right digests, and
// a client must get its first byte while the upstream fetch is still running (the blob is
// not yet in kagami's store and the registry has not finished sending it). A client that
// reads slowly (1 MB/s) holds no one back: every other pull is done while it still reads.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildImage,
  createNetwork,
  digestsOf,
  parseRegistryLog,
  pullImage,
  pushImage,
  requireNetns,
  requireTools,
  Scope,
  startKagami,
  startRegistry,
  teardown,
  tempDir,
  type BuiltImage,
  type Kagami,
  type Network,
  type Registry,
} from "../../scripts/e2e/index.ts";

const MiB = 1024 * 1024;
const CLIENTS = 20;
const scope = new Scope("upstream-concurrency");
let net: Network;
let registry: Registry;
let kagami: Kagami;
let image: BuiltImage;

beforeAll(async () => {
  requireNetns();
  requireTools("docker-registry", "skopeo", "umoci", "tc", "curl");
  image = await buildImage({
    dir: join(tempDir("upstream-concurrency"), "layout"),
    tag: "v1",
    layers: [{ files: { "big.bin": 160 * MiB } }, { files: { "more.bin": 96 * MiB - 64 * 1024 } }],
  });
  net = await createNetwork({ nodes: ["registry", "edge"], hostAddress: true, scope });
  registry = await startRegistry({ node: net.node("registry"), scope });
  await pushImage(image, { registry: registry.host, repo: "load/app", netns: net.node("edge").netns, scope, timeoutMs: 300_000 });
  await net.limitRate(net.node("registry"), { rate: "800mbit" });
  kagami = await startKagami({
    node: net.node("edge"),
    mdns: false,
    logLevel: "info",
    flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true" },
    scope,
  });
}, 300_000);

afterAll(async () => {
  await scope.teardown();
  await teardown();
});

function sha256(bytes: Uint8Array): string {
  return `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;
}

describe("20 concurrent clients, one 256 MiB image, one kagami", () => {
  test(
    "each blob leaves the upstream once, every client gets identical digests, the first byte comes before the fetch ends",
    async () => {
      expect(image.size).toBeGreaterThanOrEqual(256 * MiB - 1 * MiB);
      const big = image.layers[0]!;
      const blobFile = join(kagami.dataDir, "blobs", "sha256", big.digest.slice("sha256:".length));
      const mark = await registry.mark();

      // A plain HTTP client among the pullers, to see when its first byte arrives.
      const probe = (async () => {
        const res = await fetch(`${kagami.url}/v2/load/app/blobs/${big.digest}`);
        expect(res.status).toBe(200);
        const reader = res.body!.getReader();
        const first = await reader.read();
        const atFirstByte = {
          published: existsSync(blobFile),
          upstreamDone: parseRegistryLog(readFileSync(registry.proc.logPath, "utf8"))
            .slice(mark.count)
            .filter((r) => r.method === "GET" && r.kind === "blob" && r.reference === big.digest).length,
        };
        const hasher = new Bun.CryptoHasher("sha256");
        let bytes = 0;
        for (let r = first; !r.done; r = await reader.read()) {
          hasher.update(r.value);
          bytes += r.value.byteLength;
        }
        return { atFirstByte, bytes, digest: `sha256:${hasher.digest("hex")}` };
      })();
      const slow = net.spawn(net.node("edge"), {
        name: "slow-client",
        cmd: ["curl", "-sf", "--limit-rate", "1M", "-o", "/dev/null", `${kagami.url}/v2/load/app/blobs/${big.digest}`],
      });
      const pulls = Array.from({ length: CLIENTS }, (_, i) =>
        pullImage({ registry: kagami.host, repo: "load/app", reference: "v1", netns: net.node("edge").netns, all: false, timeoutMs: 240_000, scope, tag: `c${i}` }),
      );
      const [seen, ...pulled] = await Promise.all([probe, ...pulls]);
      expect(slow.running()).toBe(true);
      await slow.stop();

      expect(seen.atFirstByte).toEqual({ published: false, upstreamDone: 0 });
      expect(seen.bytes).toBe(big.size);
      expect(seen.digest).toBe(big.digest);
      for (const p of pulled) expect(digestsOf(p)).toEqual(digestsOf(image));

      const serves = await registry.blobServes(mark);
      for (const blob of [image.config, ...image.layers]) expect(serves.get(blob.digest)).toBe(1);
      expect(await registry.blobBytes(mark)).toBe(image.config.size + image.layers.reduce((n, l) => n + l.size, 0));
      expect(sha256(new Uint8Array(readFileSync(blobFile)))).toBe(big.digest);
    },
    300_000,
  );
});
