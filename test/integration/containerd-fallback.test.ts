// Which answers of a mirror make a real containerd fall back to the next host (the
// registry on the server line)? kagami relies on it twice: a miss answers 404, and the
// governor sheds load with a status that must also fall back, at once. The mirror here is
// a stub that answers every request with one status; pulls go through CRI PullImage.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { startContainerd, type Containerd } from "../../scripts/e2e/containerd.ts";
import { CriClient } from "../../scripts/e2e/cri.ts";
import { buildImage } from "../../scripts/e2e/image.ts";
import { freePort } from "../../scripts/e2e/proc.ts";
import { startRegistry, type Registry } from "../../scripts/e2e/registry.ts";
import { pushImage } from "../../scripts/e2e/skopeo.ts";

let status = 404;
const mirrorRequests: string[] = [];
const mirror = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req) {
    mirrorRequests.push(`${req.method} ${new URL(req.url).pathname}`);
    const body = JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: `stub mirror answers ${status}` }] });
    return new Response(body, { status, headers: { "content-type": "application/json", "retry-after": "1" } });
  },
});

let registry: Registry;
let containerd: Containerd;
let cri: CriClient;
let image: string;
/** Requests one pull makes: HEAD manifest by tag, GET manifest by digest, config, layers. */
let requestsPerPull: number;

function hostsToml(mirrorUrl: string): string {
  return `server = "${registry.url}"\n\n[host."${mirrorUrl}"]\n  capabilities = ["pull", "resolve"]\n  dial_timeout = "200ms"\n`;
}

/** Pulls through the mirror, then removes the image (and its content) for the next pull. */
async function pullVia(mirrorStatus: number): Promise<{ mirror: string[]; registryServed: number }> {
  status = mirrorStatus;
  mirrorRequests.length = 0;
  const mark = await registry.mark();
  await cri.pullImage(image, { timeoutMs: 60_000 });
  const registryServed = await registry.count({ since: mark, ok: true });
  await cri.removeImage(image);
  return { mirror: [...mirrorRequests], registryServed };
}

beforeAll(async () => {
  registry = await startRegistry({ name: "fallback-upstream" });
  const built = await buildImage({ dir: join(tempDir("fallback-image"), "layout"), tag: "v1", layers: [{ files: { "a.txt": "a", "b.bin": 4096 } }] });
  await pushImage(built, { registry: registry.host, repo: "fallback/img" });
  image = `${registry.host}/fallback/img:v1`;
  requestsPerPull = 2 + built.layers.length + 1;
  containerd = await startContainerd({ name: "fallback" });
  mkdirSync(join(containerd.certsDir, registry.host), { recursive: true });
  writeFileSync(join(containerd.certsDir, registry.host, "hosts.toml"), hostsToml(`http://127.0.0.1:${mirror.port}`));
  cri = new CriClient(containerd.socket);
}, 120_000);

afterAll(async () => {
  cri?.close();
  mirror.stop(true);
  await teardown();
});

describe("containerd's fallback from a mirror to the registry", () => {
  for (const s of [404, 500, 502, 503, 504]) {
    test(`${s}: falls back at once, one request per object to the mirror`, async () => {
      const r = await pullVia(s);
      expect(r.mirror).toHaveLength(requestsPerPull);
      expect(new Set(r.mirror).size).toBe(requestsPerPull);
      expect(r.registryServed).toBe(requestsPerPull);
    });
  }

  for (const s of [408, 429]) {
    test(`${s}: falls back too, but only after asking the mirror again (6 times per object)`, async () => {
      const r = await pullVia(s);
      expect(r.registryServed).toBe(requestsPerPull);
      expect(new Set(r.mirror).size).toBe(requestsPerPull);
      expect(r.mirror).toHaveLength(6 * requestsPerPull);
    });
  }

  test("a mirror that refuses connections: falls back", async () => {
    const closed = await freePort();
    writeFileSync(join(containerd.certsDir, registry.host, "hosts.toml"), hostsToml(`http://127.0.0.1:${closed}`));
    try {
      const r = await pullVia(200);
      expect(r.mirror).toHaveLength(0);
      expect(r.registryServed).toBe(requestsPerPull);
    } finally {
      writeFileSync(join(containerd.certsDir, registry.host, "hosts.toml"), hostsToml(`http://127.0.0.1:${mirror.port}`));
    }
  });
});
