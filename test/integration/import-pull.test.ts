// The foundation end to end: an image built offline with umoci (two layers per platform,
// a multi-arch index), imported with the real CLI, served by a real kagami process on
// 127.0.0.1, pulled back with skopeo. Digests must be identical.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { buildIndex, digestsOf, readLayout, type BuiltIndex } from "../../scripts/e2e/image.ts";
import { startKagami } from "../../scripts/e2e/kagami.ts";
import { run, type Proc } from "../../scripts/e2e/proc.ts";
import { skopeoCopy } from "../../scripts/e2e/skopeo.ts";

const KAGAMI = process.env.KAGAMI_BIN ? [process.env.KAGAMI_BIN] : ["bun", "src/main.ts"];
let dir: string;
let dataDir: string;
let built: BuiltIndex;
let base: string;
let kagami: Proc;

beforeAll(async () => {
  dir = tempDir("import-pull");
  dataDir = join(dir, "data");
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  built = await buildIndex({
    dir: join(dir, "layout"),
    tag: "v1",
    images: ["linux/amd64", "linux/arm64"].map((platform) => ({
      platform,
      layers: [{ files: { "bin/tool": random(300_000), "etc/name": platform } }, { files: { "data/blob": random(1_500_000) } }],
    })),
  });
  const imported = await run([...KAGAMI, "import", `--data-dir=${dataDir}`, `${built.layout}:v1`, "docker.io/test/app:v1"]);
  expect(imported.stdout).toContain(built.index.digest);
  const node = await startKagami({ dataDir, logLevel: "info" });
  kagami = node.proc;
  base = node.url;
});

afterAll(async () => {
  await teardown();
});

describe("import, serve, pull with skopeo", () => {
  test("skopeo copies the whole index back with identical digests", async () => {
    const out = join(dir, "pulled-all");
    await skopeoCopy(`docker://127.0.0.1:${base.split(":")[2]}/test/app:v1`, `oci:${out}:v1`, { all: true });
    const pulled = await readLayout(out, "v1", { verify: true });
    expect(pulled.kind).toBe("index");
    expect(digestsOf(pulled)).toEqual(digestsOf(built));
  });

  test("skopeo copies one platform of the index", async () => {
    const out = join(dir, "pulled-arm64");
    await skopeoCopy(`docker://127.0.0.1:${base.split(":")[2]}/test/app:v1`, `oci:${out}:v1`, { platform: { os: "linux", architecture: "arm64" } });
    const pulled = await readLayout(out, "v1", { verify: true });
    const arm = built.images.find((i) => i.platform.architecture === "arm64")!;
    expect(pulled.kind).toBe("manifest");
    expect(digestsOf(pulled)).toEqual(digestsOf(arm));
  });

  test("HEAD, GET and Range on a layer served by the process", async () => {
    const layer = built.images[0]!.layers[1]!;
    const url = `${base}/v2/test/app/blobs/${layer.digest}?ns=docker.io`;
    const head = await fetch(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe(String(layer.size));
    expect(head.headers.get("Docker-Content-Digest")).toBe(layer.digest);
    expect(head.headers.get("Accept-Ranges")).toBe("bytes");
    const whole = new Uint8Array(await (await fetch(url)).arrayBuffer());
    expect(whole.byteLength).toBe(layer.size);
    const part = await fetch(url, { headers: { Range: "bytes=1000-" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("Content-Range")).toBe(`bytes 1000-${layer.size - 1}/${layer.size}`);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(whole.slice(1000));
    const tail = await fetch(url, { headers: { Range: "bytes=-100" } });
    expect(new Uint8Array(await tail.arrayBuffer())).toEqual(whole.slice(-100));
    const beyond = await fetch(url, { headers: { Range: `bytes=${layer.size}-` } });
    expect(beyond.status).toBe(416);
  });

  test("the manifest by tag carries the index media type; a platform manifest by digest its own", async () => {
    const r = await fetch(`${base}/v2/test/app/manifests/v1`, { method: "HEAD" });
    expect(r.headers.get("Content-Type")).toBe("application/vnd.oci.image.index.v1+json");
    expect(r.headers.get("Docker-Content-Digest")).toBe(built.index.digest);
    const m = built.images[0]!.manifest;
    const r2 = await fetch(`${base}/v2/test/app/manifests/${m.digest}`);
    expect(r2.headers.get("Content-Type")).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(Number(r2.headers.get("Content-Length"))).toBe(m.size);
  });

  test("import refuses a layout tag that does not exist and a malformed target, exit codes 1 and 2", async () => {
    const missing = await run([...KAGAMI, "import", `--data-dir=${dataDir}`, `${built.layout}:nope`, "docker.io/test/app:v2"], { allowFailure: true });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("nope");
    const bad = await run([...KAGAMI, "import", `--data-dir=${dataDir}`, `${built.layout}:v1`, "Docker.io/UPPER:v2"], { allowFailure: true });
    expect(bad.code).toBe(2);
    const r = await fetch(`${base}/v2/test/app/manifests/v2`);
    expect(r.status).toBe(404);
  });

  test("a second kagami on a port in use fails with one clear line and exit code 1", async () => {
    const port = new URL(base).port;
    const r = await run([...KAGAMI, "serve", "--mdns=false", "--pull-through=false", `--registry-addr=127.0.0.1:${port}`, "--router-addr=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", `--data-dir=${join(dir, "second")}`, "--log-level=error"], { allowFailure: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`port ${port}`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  test("SIGTERM stops the server with exit code 0", async () => {
    kagami.signal("SIGTERM");
    const status = await kagami.exited;
    expect(status.code).toBe(0);
  });
});
