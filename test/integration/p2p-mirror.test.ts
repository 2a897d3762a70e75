// Three kagami processes on 127.0.0.2-4 with the same ports, static bootstrap, mDNS off.
// A and B hold an image (imported), C holds nothing: C serves it through its peers with the
// headers and bytes A serves; and when the peer sending a 256 MiB layer through C is killed
// mid-way, the client's download still completes with the right digest.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { buildImage, type BuiltImage } from "../../scripts/e2e/image.ts";
import { startKagami, kagamiCommand, type Kagami } from "../../scripts/e2e/kagami.ts";
import { freePort, run, waitFor } from "../../scripts/e2e/proc.ts";
import { requireTools } from "../../scripts/e2e/require.ts";
import { loadOrCreatePeerKey } from "../../src/routing/peer-key.ts";

const HOSTS = { a: "127.0.0.2", b: "127.0.0.3", c: "127.0.0.4" } as const;
type Name = keyof typeof HOSTS;
const BIG = 256 * 1024 * 1024;
const REPO = "test/p2p";

let dir: string;
let image: BuiltImage;
const nodes = {} as Record<Name, Kagami>;

beforeAll(async () => {
  dir = tempDir("p2p-mirror");
  image = await buildImage({
    dir: join(dir, "layout"),
    tag: "v1",
    layers: [{ files: { "etc/hello": "hello from a peer\n" } }, { files: { "data/big": BIG } }],
  });
  const registryPort = await freePort(HOSTS.a);
  const routerPort = await freePort(HOSTS.a);
  // Keys made before start: every node's static bootstrap list names every peer id.
  const ids = {} as Record<Name, string>;
  const dataDirs = {} as Record<Name, string>;
  for (const name of Object.keys(HOSTS) as Name[]) {
    dataDirs[name] = join(dir, `data-${name}`);
    mkdirSync(dataDirs[name], { recursive: true });
    ids[name] = peerIdFromPrivateKey((await loadOrCreatePeerKey(dataDirs[name])).key).toString();
  }
  const peers = (Object.keys(HOSTS) as Name[]).map((n) => `/ip4/${HOSTS[n]}/tcp/${routerPort}/p2p/${ids[n]}`);
  for (const name of ["a", "b"] as const) {
    await run([...kagamiCommand(), "import", `--data-dir=${dataDirs[name]}`, `${image.layout}:v1`, `docker.io/${REPO}:v1`]);
  }
  for (const name of Object.keys(HOSTS) as Name[]) {
    nodes[name] = await startKagami({
      name: `kagami-${name}`,
      dataDir: dataDirs[name],
      registryAddr: `${HOSTS[name]}:${registryPort}`,
      readyPath: "/livez", // readiness needs peers, which start after this one
      flags: {
        "router-addr": `${HOSTS[name]}:${routerPort}`,
        "metrics-addr": `${HOSTS[name]}:${await freePort(HOSTS[name])}`,
        "bootstrap-kind": "static",
        "static-bootstrap-peers": peers,
      },
    });
  }
  for (const k of Object.values(nodes)) {
    await waitFor(`${k.host} ready`, async () => (await fetch(`${k.url}/readyz`)).status === 200, { timeoutMs: 20_000 });
  }
  // Advertised once the sync's first pass has provided the keys.
  const manifestUrl = `${nodes.c.url}/v2/${REPO}/manifests/v1?ns=docker.io`;
  await waitFor("C finds the tag through its peers", async () => (await fetch(manifestUrl, { method: "HEAD" })).status === 200, { timeoutMs: 20_000 });
}, 180_000);

afterAll(async () => {
  await teardown();
});

const sha256 = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const CONTENT_HEADERS = ["content-type", "content-length", "docker-content-digest", "accept-ranges"];

describe("peer-to-peer mirror across three processes", () => {
  test("C serves every part of the image from its peers, as A serves it", async () => {
    const paths = [`manifests/v1`, `manifests/${image.manifest.digest}`, ...[image.config, image.layers[0]!].map((b) => `blobs/${b.digest}`)];
    for (const path of paths) {
      // Each key is provided on its own; the first request may come before it spread (or
      // before a lookup answers within --mirror-resolve-timeout) and go upstream: wait for it.
      const url = `${nodes.c.url}/v2/${REPO}/${path}?ns=docker.io`;
      await waitFor(`C serves ${path}`, async () => (await fetch(url, { method: "HEAD" })).status === 200, { timeoutMs: 10_000 });
      for (const method of ["HEAD", "GET"]) {
        const [fromA, fromC] = await Promise.all([nodes.a, nodes.c].map((k) => fetch(`${k.url}/v2/${REPO}/${path}?ns=docker.io`, { method })));
        expect([method, path, fromC!.status]).toEqual([method, path, 200]);
        // These blobs are small: C reads them whole and verifies them before answering, so
        // they keep their Content-Length (a streamed body would not: oven-sh/bun#10507).
        for (const h of CONTENT_HEADERS) {
          expect([method, path, h, fromC!.headers.get(h)]).toEqual([method, path, h, fromA!.headers.get(h)]);
        }
        const [a, c] = [new Uint8Array(await fromA!.arrayBuffer()), new Uint8Array(await fromC!.arrayBuffer())];
        expect(c.byteLength).toBe(method === "HEAD" ? 0 : Number(fromA!.headers.get("content-length")));
        expect(sha256(c)).toBe(sha256(a));
      }
    }
    // C holds none of it: nothing is stored on the way.
    const direct = await fetch(`${nodes.c.url}/v2/${REPO}/manifests/v1?ns=docker.io`, { headers: { "X-Spegel-Mirrored": "true" } });
    expect(direct.status).toBe(404);
  });

  test("a blob GET through C carries Content-Length on the wire, not chunked framing", async () => {
    requireTools("curl");
    const blob = image.config;
    const url = `${nodes.c.url}/v2/${REPO}/blobs/${blob.digest}?ns=docker.io`;
    await waitFor("C finds the config", async () => (await fetch(url, { method: "HEAD" })).status === 200, { timeoutMs: 10_000 });
    const r = await run(["curl", "-sS", "--max-time", "20", "-D", "-", "-o", "/dev/null", url]);
    const head = r.stdout.toLowerCase();
    expect(head).toContain(`content-length: ${blob.size}\r\n`);
    expect(head).not.toContain("transfer-encoding");
  });

  test("a range of a layer through C", async () => {
    const layer = image.layers[1]!;
    const url = `${nodes.c.url}/v2/${REPO}/blobs/${layer.digest}?ns=docker.io`;
    await waitFor("C finds the layer", async () => (await fetch(url, { method: "HEAD" })).status === 200, { timeoutMs: 10_000 });
    const r = await fetch(url, { headers: { Range: "bytes=1000-1999" } });
    expect(r.status).toBe(206);
    expect(r.headers.get("Content-Range")).toBe(`bytes 1000-1999/${layer.size}`);
    expect((await r.arrayBuffer()).byteLength).toBe(1000);
  });

  test("the peer sending a 256 MiB layer through C is killed mid-way: the download completes, right digest", async () => {
    const layer = image.layers[1]!;
    expect(layer.size).toBeGreaterThan(BIG);
    // Earlier tests asked for this layer too (a range): only log lines from here on count.
    const logStart = { a: nodes.a.proc.log().length, b: nodes.b.proc.log().length };
    const res = await fetch(`${nodes.c.url}/v2/${REPO}/blobs/${layer.digest}?ns=docker.io`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const hash = createHash("sha256");
    let got = 0;
    let killed: Name | undefined;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      got += value.byteLength;
      if (!killed && got > 32 * 1024 * 1024) {
        // The peer C is reading from logged the request when it answered it.
        const serving = (["a", "b"] as const).filter((n) => nodes[n].proc.log().slice(logStart[n]).includes(layer.digest));
        expect(serving.length).toBe(1);
        killed = serving[0]!;
        nodes[killed].proc.signal("SIGKILL");
        await nodes[killed].proc.exited;
      }
    }
    expect(killed).toBeDefined();
    expect(got).toBe(layer.size);
    expect(`sha256:${hash.digest("hex")}`).toBe(layer.digest);
    expect(nodes.c.proc.log()).toContain("resumed blob from another provider");
    // The blob was verified on the digest worker, which the executable must embed.
    expect(nodes.c.proc.log()).not.toContain("digest worker failed");
  }, 120_000);
});
