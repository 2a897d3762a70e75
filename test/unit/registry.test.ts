// The registry's HTTP behaviour over a real LocalStore on a real socket.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MirrorSource } from "../../src/mirror/source.ts";
import { silentLogger } from "../../src/observability/log.ts";
import { OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, type Digest } from "../../src/oci/index.ts";
import { createRegistryApp, type ServedRequest } from "../../src/registry/app.ts";
import { Health } from "../../src/registry/health.ts";
import { LocalStore } from "../../src/store/local.ts";
import { makeSeedImage } from "../store-conformance.ts";

const image = makeSeedImage({ registry: "example.test", repository: "team/app", tag: "v1" });
const layer = [...image.blobs].find(([, b]) => b.mediaType === OCI_LAYER_GZIP)!;
const manifest = [...image.blobs].find(([, b]) => b.mediaType === OCI_MANIFEST)!;
let dir: string;
let store: LocalStore;
let server: ReturnType<typeof Bun.serve>;
let base: string;
const served: ServedRequest[] = [];
const mirrorCalls: string[] = [];

const fakeMirror: MirrorSource = {
  name: "peer",
  async fetch(req) {
    mirrorCalls.push(req.digest ?? req.tag ?? "");
    return { miss: [{ source: "peer", target: "peer-a", outcome: "404", ms: 1 }] };
  },
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kagami-reg-"));
  store = await LocalStore.open(dir);
  for (const [digest, b] of image.blobs) await store.ingest({ mediaType: b.mediaType, digest, size: b.bytes.byteLength }, b.bytes);
  await store.tag(image.reference, image.root);
  const app = createRegistryApp({
    stores: [store],
    mirrors: [fakeMirror],
    defaultRegistry: "example.test",
    health: new Health(),
    logger: silentLogger(),
    onServed: (r) => served.push(r),
  });
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: app.fetch });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  server?.stop(true);
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("registry API", () => {
  test("GET /v2/ answers with the API version header", async () => {
    const r = await fetch(`${base}/v2/`);
    expect(r.status).toBe(200);
    expect(r.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });

  test("manifest by tag: the index's own media type, digest and length", async () => {
    for (const method of ["GET", "HEAD"]) {
      const r = await fetch(`${base}/v2/team/app/manifests/v1?ns=example.test`, { method });
      expect(r.status).toBe(200);
      expect(r.headers.get("Content-Type")).toBe(OCI_INDEX);
      expect(r.headers.get("Docker-Content-Digest")).toBe(image.root.digest);
      expect(r.headers.get("Content-Length")).toBe(String(image.root.size));
      const body = new Uint8Array(await r.arrayBuffer());
      if (method === "GET") expect(body).toEqual(image.blobs.get(image.root.digest)!.bytes);
      else expect(body.byteLength).toBe(0);
    }
  });

  test("without ns the default registry applies", async () => {
    expect((await fetch(`${base}/v2/team/app/manifests/v1`)).status).toBe(200);
  });

  test("manifest by digest", async () => {
    const r = await fetch(`${base}/v2/team/app/manifests/${manifest[0]}?ns=example.test`);
    expect(r.status).toBe(200);
    expect(r.headers.get("Content-Type")).toBe(OCI_MANIFEST);
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(manifest[1].bytes);
  });

  test("blob GET and HEAD carry Accept-Ranges and the digest", async () => {
    const r = await fetch(`${base}/v2/team/app/blobs/${layer[0]}?ns=example.test`);
    expect(r.status).toBe(200);
    expect(r.headers.get("Accept-Ranges")).toBe("bytes");
    expect(r.headers.get("Docker-Content-Digest")).toBe(layer[0]);
    expect(r.headers.get("Content-Length")).toBe(String(layer[1].bytes.byteLength));
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(layer[1].bytes);
    const h = await fetch(`${base}/v2/team/app/blobs/${layer[0]}?ns=example.test`, { method: "HEAD" });
    expect(h.status).toBe(200);
    expect(h.headers.get("Content-Length")).toBe(String(layer[1].bytes.byteLength));
  });

  test("Range: single, open-ended and suffix answer 206 with Content-Range", async () => {
    const size = layer[1].bytes.byteLength;
    const cases: [string, number, number][] = [
      ["bytes=10-99", 10, 99],
      ["bytes=1000-", 1000, size - 1],
      ["bytes=-300", size - 300, size - 1],
      [`bytes=5-${size + 1000}`, 5, size - 1],
    ];
    for (const [header, start, end] of cases) {
      const r = await fetch(`${base}/v2/team/app/blobs/${layer[0]}?ns=example.test`, { headers: { Range: header } });
      expect(r.status).toBe(206);
      expect(r.headers.get("Content-Range")).toBe(`bytes ${start}-${end}/${size}`);
      expect(r.headers.get("Content-Length")).toBe(String(end - start + 1));
      expect(new Uint8Array(await r.arrayBuffer())).toEqual(layer[1].bytes.slice(start, end + 1));
    }
  });

  test("unsatisfiable ranges are 416, malformed 400, multiple 416", async () => {
    const size = layer[1].bytes.byteLength;
    const get = (range: string) => fetch(`${base}/v2/team/app/blobs/${layer[0]}?ns=example.test`, { headers: { Range: range } });
    const r416 = await get(`bytes=${size}-`);
    expect(r416.status).toBe(416);
    expect(r416.headers.get("Content-Range")).toBe(`bytes */${size}`);
    expect(((await r416.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe("RANGE_INVALID");
    expect((await get("bytes=9-1")).status).toBe(400);
    expect((await get("bytes=0-1,4-5")).status).toBe(416);
  });

  test("a digest through the wrong endpoint is 404", async () => {
    expect((await fetch(`${base}/v2/team/app/manifests/${layer[0]}?ns=example.test`)).status).toBe(404);
    expect((await fetch(`${base}/v2/team/app/blobs/${manifest[0]}?ns=example.test`)).status).toBe(404);
  });

  test("a miss asks the mirrors and answers 404 with the attempts; X-Spegel-Mirrored: true never asks them", async () => {
    const missing = `sha256:${"e".repeat(64)}` as Digest;
    mirrorCalls.length = 0;
    const r = await fetch(`${base}/v2/team/app/blobs/${missing}?ns=example.test`);
    expect(r.status).toBe(404);
    const body = (await r.json()) as { errors: { code: string; detail: { attempts: unknown[] } }[] };
    expect(body.errors[0]!.code).toBe("BLOB_UNKNOWN");
    expect(body.errors[0]!.detail.attempts).toEqual([{ source: "peer", target: "peer-a", outcome: "404", ms: 1 }]);
    expect(mirrorCalls).toEqual([missing]);
    const local = await fetch(`${base}/v2/team/app/blobs/${missing}?ns=example.test`, { headers: { "X-Spegel-Mirrored": "true" } });
    expect(local.status).toBe(404);
    expect(mirrorCalls).toEqual([missing]);
  });

  test("another registry's tag is not this one's", async () => {
    const r = await fetch(`${base}/v2/team/app/manifests/v1?ns=other.test`, { headers: { "X-Spegel-Mirrored": "true" } });
    expect(r.status).toBe(404);
  });

  test("served requests are reported with their source", async () => {
    served.length = 0;
    await fetch(`${base}/v2/team/app/blobs/${layer[0]}?ns=example.test`).then((r) => r.arrayBuffer());
    expect(served[0]).toMatchObject({ kind: "blob", source: "local", status: 200, bytes: layer[1].bytes.byteLength, digest: layer[0] });
  });

  test("readyz reflects registered checks", async () => {
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/livez`)).status).toBe(200);
  });
});
