// Pull-through from a real distribution registry (docker-registry) through a real kagami
// process, pulled with skopeo: open, behind token auth (anonymous), and private (credentials
// from a docker config.json). Digests must be identical to what was pushed; the second pull
// must not reach the upstream at all (counted in the registry's log).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildIndex,
  digestsOf,
  pullImage,
  pushImage,
  requireTools,
  startKagami,
  startRegistry,
  startTokenServer,
  teardown,
  tempDir,
  type BuiltIndex,
  type Kagami,
  type Registry,
} from "../../scripts/e2e/index.ts";

const USER = { username: "puller", password: "pa55word" };
let image: BuiltIndex;

beforeAll(async () => {
  requireTools("docker-registry", "skopeo", "umoci", "openssl");
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  image = await buildIndex({
    dir: join(tempDir("upstream-pull"), "layout"),
    tag: "v1",
    images: ["linux/amd64", "linux/arm64"].map((platform) => ({
      platform,
      layers: [{ files: { "etc/platform": platform } }, { files: { "data/blob.bin": random(700_000) } }],
    })),
  });
});

afterAll(() => teardown());

function pullThrough(registry: Registry, flags: Record<string, string> = {}, name = "kagami"): Promise<Kagami> {
  return startKagami({
    name,
    flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true", ...flags },
  });
}

async function expectPullThrough(registry: Registry, kagami: Kagami, repo: string): Promise<void> {
  const pulled = await pullImage({ registry: kagami.host, repo, reference: "v1" });
  expect(digestsOf(pulled)).toEqual(digestsOf(image));
  const blobs = image.images.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.digest)]);
  const serves = await registry.blobServes();
  for (const digest of new Set(blobs)) expect(serves.get(digest)).toBe(1);

  const mark = await registry.mark();
  const again = await pullImage({ registry: kagami.host, repo, reference: "v1" });
  expect(digestsOf(again)).toEqual(digestsOf(image));
  expect(await registry.requests({ since: mark })).toEqual([]);
}

describe("pull-through from an open registry", () => {
  let registry: Registry;
  let kagami: Kagami;
  beforeAll(async () => {
    registry = await startRegistry({ name: "open-upstream" });
    await pushImage(image, { registry: registry.host, repo: "team/app" });
    kagami = await pullThrough(registry);
  });

  test("skopeo gets identical digests; the second pull touches the upstream 0 times", async () => {
    await expectPullThrough(registry, kagami, "team/app");
  });

  test("?ns= names the upstream; a digest pull of a held manifest stays local", async () => {
    const mark = await registry.mark();
    const res = await fetch(`${kagami.url}/v2/team/app/manifests/${image.index.digest}?ns=${registry.host}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Content-Digest")).toBe(image.index.digest);
    await res.arrayBuffer();
    expect(await registry.count({ since: mark })).toBe(0);
  });

  test("a tag or blob the upstream lacks is a 404 that names the upstream attempt", async () => {
    const tag = await fetch(`${kagami.url}/v2/team/app/manifests/missing`);
    expect(tag.status).toBe(404);
    expect(JSON.stringify(await tag.json())).toContain("upstream");
    const blob = await fetch(`${kagami.url}/v2/team/app/blobs/sha256:${"0".repeat(64)}`);
    expect(blob.status).toBe(404);
  });

  test("a Range on a blob not yet held is answered from the fetch, and the blob is cached whole", async () => {
    const fresh = await startKagami({
      name: "kagami-range",
      flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true" },
    });
    const layer = image.images[1]!.layers[1]!;
    const res = await fetch(`${fresh.url}/v2/team/app/blobs/${layer.digest}`, { headers: { Range: "bytes=1000-1999" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("Content-Range")).toBe(`bytes 1000-1999/${layer.size}`);
    expect((await res.arrayBuffer()).byteLength).toBe(1000);
    const mark = await registry.mark();
    const whole = await fetch(`${fresh.url}/v2/team/app/blobs/${layer.digest}`);
    const bytes = new Uint8Array(await whole.arrayBuffer());
    expect(`sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`).toBe(layer.digest);
    expect(await registry.count({ since: mark })).toBe(0);
    await fresh.stop();
  });
});

describe("pull-through from a registry behind token auth", () => {
  test("anonymous tokens: identical digests, second pull 0 upstream requests, one token fetch per repository", async () => {
    const tokens = await startTokenServer({ users: [USER] });
    const registry = await startRegistry({ name: "token-upstream", tokenAuth: tokens });
    await pushImage(image, { registry: registry.host, repo: "team/app", creds: USER });
    const kagami = await pullThrough(registry, {}, "kagami-token");
    const before = tokens.requests.length;
    await expectPullThrough(registry, kagami, "team/app");
    const issued = tokens.requests.slice(before);
    expect(issued.length).toBe(1);
    expect(issued[0]).toMatchObject({ account: "", status: 200, scopes: ["repository:team/app:pull"] });
  });

  test("a private repository: credentials from --registry-credentials open it; without them kagami answers 404", async () => {
    const tokens = await startTokenServer({ users: [USER], anonymousPull: false });
    const registry = await startRegistry({ name: "private-upstream", tokenAuth: tokens });
    await pushImage(image, { registry: registry.host, repo: "team/private", creds: USER });

    const anonymous = await pullThrough(registry, {}, "kagami-anon");
    const denied = await fetch(`${anonymous.url}/v2/team/private/manifests/v1`);
    expect(denied.status).toBe(404);

    const configPath = join(tempDir("docker-config"), "config.json");
    const auth = Buffer.from(`${USER.username}:${USER.password}`).toString("base64");
    writeFileSync(configPath, JSON.stringify({ auths: { [registry.host]: { auth } } }));
    const kagami = await pullThrough(registry, { "registry-credentials": configPath }, "kagami-creds");
    await expectPullThrough(registry, kagami, "team/private");
    expect(tokens.requests.some((t) => t.account === USER.username && t.status === 200)).toBe(true);
  });
});
