// The rig's upstream: a real distribution registry, open and behind token auth, pushed to and
// pulled from with skopeo (digests identical), and its log counted per request.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { buildIndex, digestsOf, type BuiltIndex } from "../../scripts/e2e/image.ts";
import { startRegistry, type Registry } from "../../scripts/e2e/registry.ts";
import { requireTools } from "../../scripts/e2e/require.ts";
import { pullImage, pushImage } from "../../scripts/e2e/skopeo.ts";
import { startTokenServer, type TokenServer } from "../../scripts/e2e/token-server.ts";

const USER = { username: "rig", password: "s3cret" };
let image: BuiltIndex;

beforeAll(async () => {
  requireTools("docker-registry", "skopeo", "umoci", "openssl");
  image = await buildIndex({
    dir: join(tempDir("rig-registry"), "layout"),
    tag: "v1",
    images: ["linux/amd64", "linux/arm64"].map((platform) => ({
      platform,
      layers: [{ files: { "etc/platform": platform } }, { files: { "data/blob.bin": 200_000 } }],
    })),
  });
});

afterAll(() => teardown());

describe("open registry", () => {
  let registry: Registry;
  beforeAll(async () => {
    registry = await startRegistry({ name: "open-registry" });
  });

  test("an index pushed with skopeo comes back with identical digests, by tag and by digest", async () => {
    expect(await pushImage(image, { registry: registry.host, repo: "rig/app" })).toBe(`docker://${registry.host}/rig/app:v1`);
    const byTag = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1" });
    expect(byTag.kind).toBe("index");
    expect(digestsOf(byTag)).toEqual(digestsOf(image));
    const byDigest = await pullImage({ registry: registry.host, repo: "rig/app", reference: image.index.digest });
    expect(digestsOf(byDigest)).toEqual(digestsOf(image));
  });

  test("one platform of the index can be pulled alone", async () => {
    const arm = image.images.find((i) => i.platform.architecture === "arm64")!;
    const pulled = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", all: false, platform: arm.platform });
    expect(pulled.kind).toBe("manifest");
    expect(digestsOf(pulled)).toEqual(digestsOf(arm));
  });

  test("the log counts every blob served, per digest, and only after a mark", async () => {
    const mark = await registry.mark();
    await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1" });
    const serves = await registry.blobServes(mark);
    const blobDigests = image.images.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.digest)]);
    expect([...serves.keys()].sort()).toEqual([...new Set(blobDigests)].sort());
    for (const n of serves.values()) expect(n).toBe(1);
    const layer = image.images[0]!.layers[1]!;
    expect(await registry.count({ since: mark, method: "GET", kind: "blob", reference: layer.digest })).toBe(1);
    expect(await registry.count({ since: mark, kind: "manifest", ok: true })).toBeGreaterThanOrEqual(3);
    const bytes = image.images.flatMap((i) => [i.config, ...i.layers]).reduce((n, b) => n + b.size, 0);
    expect(await registry.blobBytes(mark)).toBe(bytes);

    const idle = await registry.mark();
    expect(await registry.count({ since: idle })).toBe(0);
  });

  test("a missing tag is a 404 in the log and a failed pull", async () => {
    const mark = await registry.mark();
    await expect(pullImage({ registry: registry.host, repo: "rig/app", reference: "nope" })).rejects.toThrow();
    const requests = await registry.requests({ since: mark, kind: "manifest" });
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((r) => r.status === 404 && r.reference === "nope")).toBe(true);
  });
});

describe("registry behind token auth", () => {
  let tokens: TokenServer;
  let registry: Registry;
  beforeAll(async () => {
    tokens = await startTokenServer({ users: [USER] });
    registry = await startRegistry({ name: "token-registry", tokenAuth: tokens });
  });

  test("anonymous clients get 401 with a Bearer challenge naming the realm and service, and the log counts it", async () => {
    const mark = await registry.mark();
    const r = await fetch(`${registry.url}/v2/rig/app/manifests/v1`);
    expect(r.status).toBe(401);
    const challenge = r.headers.get("www-authenticate") ?? "";
    expect(challenge).toContain(`Bearer realm="${tokens.realm}"`);
    expect(challenge).toContain(`service="${tokens.service}"`);
    expect(await registry.requests({ since: mark })).toEqual([{ method: "GET", path: "/v2/rig/app/manifests/v1", status: 401, bytes: 0, kind: "manifest", repo: "rig/app", reference: "v1" }]);
  });

  test("anonymous push is refused, push with credentials works, anonymous pull gets identical digests", async () => {
    await expect(pushImage(image, { registry: registry.host, repo: "rig/app" })).rejects.toThrow();
    await pushImage(image, { registry: registry.host, repo: "rig/app", creds: USER });
    expect(tokens.requests.some((t) => t.account === USER.username && t.status === 200 && t.scopes.some((s) => s.includes("push")))).toBe(true);

    const mark = await registry.mark();
    const pulled = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1" });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
    for (const n of (await registry.blobServes(mark)).values()) expect(n).toBe(1);
    expect(tokens.requests.some((t) => t.account === "" && t.status === 200)).toBe(true);
  });

  test("a pull with wrong credentials fails at the token server", async () => {
    const before = tokens.requests.length;
    await expect(pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", creds: { username: "rig", password: "wrong" } })).rejects.toThrow();
    expect(tokens.requests.slice(before).some((t) => t.status === 401)).toBe(true);
  });

  test("a token-less fetch is refused even for a blob that exists", async () => {
    const layer = image.images[0]!.layers[0]!;
    const r = await fetch(`${registry.url}/v2/rig/app/blobs/${layer.digest}`);
    expect(r.status).toBe(401);
  });

  test("a token from the server opens the blob to a plain fetch", async () => {
    const layer = image.images[0]!.layers[0]!;
    const t = await fetch(`${tokens.realm}?service=${tokens.service}&scope=repository:rig/app:pull`);
    const { token } = (await t.json()) as { token: string };
    const r = await fetch(`${registry.url}/v2/rig/app/blobs/${layer.digest}`, { headers: { Authorization: `Bearer ${token}` } });
    expect(r.status).toBe(200);
    expect((await r.arrayBuffer()).byteLength).toBe(layer.size);
  });
});

describe("registry behind token auth without anonymous access", () => {
  let registry: Registry;
  beforeAll(async () => {
    const tokens = await startTokenServer({ users: [USER], anonymousPull: false });
    registry = await startRegistry({ name: "private-registry", tokenAuth: tokens });
    await pushImage(image, { registry: registry.host, repo: "rig/private", creds: USER });
  });

  test("an anonymous pull fails, a pull with credentials gets identical digests", async () => {
    await expect(pullImage({ registry: registry.host, repo: "rig/private", reference: "v1" })).rejects.toThrow();
    const pulled = await pullImage({ registry: registry.host, repo: "rig/private", reference: "v1", creds: USER });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
  });
});
