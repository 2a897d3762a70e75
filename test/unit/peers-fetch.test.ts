// The mirror path to peers, happy and unhappy answers: headers as a local hit has them,
// ranges, manifests by tag (verified), HEAD, misses, policy flags, one lookup per key.
import { describe, expect, test } from "bun:test";
import { OCI_MANIFEST, type Digest } from "../../src/oci/index.ts";
import { blobRequest, content, mirrorWith, peersPerTest, sha256, type fakePeer } from "./peers-fixture.ts";

const start = peersPerTest();

describe("peer mirror: answers", () => {
  test("a blob a peer holds comes back whole, with the headers of a local hit", async () => {
    const blob = content(300_000);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest, { registry: "ghcr.io" }));
    if (!("hit" in r)) throw new Error(`miss: ${JSON.stringify(r.miss)}`);
    expect(r.source).toBe("peer");
    expect(r.target).toBe("a");
    expect(r.hit.status).toBe(200);
    expect(r.hit.headers.get("Content-Length")).toBe("300000");
    expect(r.hit.headers.get("Docker-Content-Digest")).toBe(blob.digest);
    expect(r.hit.headers.get("Content-Type")).toBe("application/octet-stream");
    expect(r.hit.headers.get("Accept-Ranges")).toBe("bytes");
    expect(sha256(new Uint8Array(await r.hit.arrayBuffer()))).toBe(blob.digest);
    const sent = a!.requests[0]!;
    expect(sent.headers["x-spegel-mirrored"]).toBe("true");
    expect(sent.url).toBe(`/v2/library/app/blobs/${blob.digest}?ns=ghcr.io`);
  });

  test("the client's Range goes to the peer and comes back as 206", async () => {
    const blob = content(100_000);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest, { range: "bytes=1000-1999" }));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.hit.status).toBe(206);
    expect(r.hit.headers.get("Content-Range")).toBe("bytes 1000-1999/100000");
    expect(r.hit.headers.get("Content-Length")).toBe("1000");
    expect(new Uint8Array(await r.hit.arrayBuffer())).toEqual(blob.bytes.slice(1000, 2000));
    expect(a!.requests[0]!.headers.range).toBe("bytes=1000-1999");

    const suffix = await mirror.fetch(blobRequest(blob.digest, { range: "bytes=-10" }));
    if (!("hit" in suffix)) throw new Error("miss");
    expect(suffix.hit.headers.get("Content-Range")).toBe("bytes 99990-99999/100000");
    expect(new Uint8Array(await suffix.hit.arrayBuffer())).toEqual(blob.bytes.slice(99990));
  });

  test("an unsatisfiable range is 416, a malformed one 400", async () => {
    const blob = content(1000);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest, { range: "bytes=5000-" }));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.hit.status).toBe(416);
    expect(((await r.hit.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe("RANGE_INVALID");
    const bad = await mirror.fetch(blobRequest(blob.digest, { range: "lines=1-2" }));
    if (!("hit" in bad)) throw new Error("miss");
    expect(bad.hit.status).toBe(400);
  });

  test("HEAD answers the headers only", async () => {
    const blob = content(4096);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const r = await mirror.fetch(blobRequest(blob.digest, { method: "HEAD" }));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.hit.status).toBe(200);
    expect(r.hit.headers.get("Content-Length")).toBe("4096");
    expect(r.hit.headers.get("Docker-Content-Digest")).toBe(blob.digest);
    expect(r.hit.body).toBeNull();
    expect(a!.requests[0]!.method).toBe("HEAD");
  });

  test("a manifest by tag resolves through a peer to its digest, verified", async () => {
    const manifest = content(0, OCI_MANIFEST);
    const doc = new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [] }));
    Object.assign(manifest, { bytes: doc, digest: sha256(doc) as Digest });
    const [a] = await start(["a", "good", [manifest], { "1.27": manifest }]);
    const { mirror } = mirrorWith([{ peer: a!, keys: ["docker.io/library/app:1.27"] }]);
    const r = await mirror.fetch({ kind: "manifest", method: "GET", registry: "docker.io", repository: "library/app", tag: "1.27", signal: AbortSignal.timeout(5000) });
    if (!("hit" in r)) throw new Error(`miss ${JSON.stringify(r.miss)}`);
    expect(r.hit.headers.get("Docker-Content-Digest")).toBe(manifest.digest);
    expect(r.hit.headers.get("Content-Type")).toBe(OCI_MANIFEST);
    expect(r.hit.headers.get("Content-Length")).toBe(String(doc.byteLength));
    expect(r.hit.headers.get("Accept-Ranges")).toBeNull();
    expect(new Uint8Array(await r.hit.arrayBuffer())).toEqual(doc);
    expect(a!.requests[0]!.url).toBe("/v2/library/app/manifests/1.27?ns=docker.io");
    expect(a!.requests[0]!.headers.accept).toContain(OCI_MANIFEST);
  });

  test("no provider: a miss that says so", async () => {
    const { mirror } = mirrorWith([]);
    const r = await mirror.fetch(blobRequest(content(10).digest));
    expect("miss" in r && r.miss.map((a) => a.outcome)).toEqual(["no provider found"]);
  });

  test("a provider that answers 404 is passed over for the next", async () => {
    const blob = content(5000);
    const [gone, good] = await start(["gone", "missing", [blob]], ["good", "good", [blob]]);
    const { mirror } = mirrorWith([
      { peer: gone!, keys: [blob.digest] },
      { peer: good!, keys: [blob.digest] },
    ]);
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in r)) throw new Error("miss");
    expect(r.target).toBe("good");
    expect(sha256(new Uint8Array(await r.hit.arrayBuffer()))).toBe(blob.digest);
    // The 404 is remembered for this key while its lookup is cached.
    const again = await mirror.fetch(blobRequest(blob.digest));
    if (!("hit" in again)) throw new Error("miss");
    await again.hit.arrayBuffer();
    expect(gone!.requests.length).toBe(1);
  });

  test("every provider failing is a miss listing each attempt", async () => {
    const blob = content(5000);
    const specs = ["p1", "p2", "p3", "p4"].map((id) => [id, "missing", [blob]] as Parameters<typeof fakePeer>);
    const started = await start(...specs);
    const { mirror } = mirrorWith(started.map((peer) => ({ peer, keys: [blob.digest] })));
    const r = await mirror.fetch(blobRequest(blob.digest));
    if (!("miss" in r)) throw new Error("hit");
    // --mirror-resolve-retries 3: the fourth provider is not asked.
    expect(r.miss.map((a) => [a.target, a.outcome])).toEqual([
      ["p1", "404"],
      ["p2", "404"],
      ["p3", "404"],
    ]);
    expect(started[3]!.requests.length).toBe(0);
  });

  test("concurrent requests for one key share one lookup", async () => {
    const blob = content(2000);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror, lookups } = mirrorWith([{ peer: a!, keys: [blob.digest] }]);
    const results = await Promise.all(Array.from({ length: 8 }, () => mirror.fetch(blobRequest(blob.digest))));
    for (const r of results) {
      if (!("hit" in r)) throw new Error("miss");
      expect(sha256(new Uint8Array(await r.hit.arrayBuffer()))).toBe(blob.digest);
    }
    expect(lookups()).toBe(1);
  });
});

describe("peer mirror: policy flags", () => {
  test("--mirrored-registries: other registries are not asked", async () => {
    const blob = content(100);
    const [a] = await start(["a", "good", [blob]]);
    const { mirror } = mirrorWith([{ peer: a!, keys: [blob.digest] }], { mirroredRegistries: ["https://ghcr.io", "docker.io"] });
    expect("hit" in (await mirror.fetch(blobRequest(blob.digest, { registry: "ghcr.io" })))).toBe(true);
    expect("hit" in (await mirror.fetch(blobRequest(blob.digest, { registry: "docker.io" })))).toBe(true);
    const r = await mirror.fetch(blobRequest(blob.digest, { registry: "quay.io" }));
    expect("miss" in r && r.miss[0]!.outcome).toBe("registry quay.io is not mirrored");
  });

  test("--registry-filters: matching references are never served from peers", async () => {
    const { mirror } = mirrorWith([], { registryFilters: [":latest$", "^docker\\.io/library/secret"] });
    const tagReq = { kind: "manifest" as const, method: "GET" as const, registry: "docker.io", repository: "library/app", signal: AbortSignal.timeout(1000) };
    const latest = await mirror.fetch({ ...tagReq, tag: "latest" });
    expect("miss" in latest && latest.miss[0]!.outcome).toBe("filtered by :latest$");
    const secret = await mirror.fetch(blobRequest(content(1).digest, { repository: "library/secret" }));
    expect("miss" in secret && secret.miss[0]!.outcome).toBe("filtered by ^docker\\.io/library/secret");
    const other = await mirror.fetch({ ...tagReq, tag: "1.0" });
    expect("miss" in other && other.miss[0]!.outcome).toBe("no provider found");
  });

  test("an invalid filter is refused at start", () => {
    expect(() => mirrorWith([], { registryFilters: ["(unclosed"] })).toThrow(/registry-filters/);
  });
});
