// What Prometheus scrapes from a real kagami process after a real pull: Spegel's metric
// names (so its dashboards work), the HTTP metrics by handler, and kagami's bytes by source,
// with the figures of the pull that just happened.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { buildImage, type BuiltImage } from "../../scripts/e2e/image.ts";
import { kagamiCommand, startKagami, type Kagami } from "../../scripts/e2e/kagami.ts";
import { freePort, run } from "../../scripts/e2e/proc.ts";
import { skopeoCopy } from "../../scripts/e2e/skopeo.ts";

let image: BuiltImage;
let kagami: Kagami;
let metricsUrl: string;

/** Sample lines as name{labels} -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

const scrape = async () => {
  const res = await fetch(metricsUrl);
  expect(res.headers.get("Content-Type")).toStartWith("text/plain");
  return res.text();
};

beforeAll(async () => {
  const dir = tempDir("metrics");
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  image = await buildImage({ dir: join(dir, "layout"), tag: "v1", layers: [{ files: { "bin/app": random(200_000) } }, { files: { "data/blob": random(600_000) } }] });
  const dataDir = join(dir, "data");
  await run([...kagamiCommand(), "import", `--data-dir=${dataDir}`, `${image.layout}:v1`, "docker.io/test/metrics:v1"]);
  const metricsPort = await freePort();
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  kagami = await startKagami({
    name: "kagami-metrics",
    dataDir,
    // No upstream: a miss must stay on this machine.
    flags: { "metrics-addr": `127.0.0.1:${metricsPort}`, "router-addr": `127.0.0.1:${await freePort()}`, "pull-through": "false" },
    readyPath: "/livez",
  });
}, 120_000);

afterAll(async () => {
  await teardown();
});

describe("/metrics after a pull", () => {
  test("before any pull, every Spegel-compatible family is declared", async () => {
    const text = await scrape();
    for (const name of [
      "spegel_mirror_requests_total",
      "spegel_mirror_last_success_timestamp_seconds",
      "spegel_resolve_duration_seconds",
      "spegel_advertised_image_tags",
      "spegel_advertised_image_digests",
      "spegel_advertised_content_digests",
      "spegel_advertised_keys",
      "http_request_duration_seconds",
      "http_response_size_bytes",
      "http_requests_inflight",
      "kagami_bytes_served_total",
      "kagami_served_requests_total",
      "process_resident_memory_bytes",
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
  });

  test("a skopeo pull shows up as blob and manifest requests and local bytes", async () => {
    const before = samples(await scrape());
    await skopeoCopy(`docker://${kagami.host}/test/metrics:v1`, `oci:${join(tempDir("pulled"), "out")}:v1`);
    const after = samples(await scrape());
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);

    const blobBytes = image.layers.reduce((n, l) => n + l.size, 0) + image.config.size;
    expect(delta('kagami_bytes_served_total{source="local"}')).toBe(blobBytes + image.manifest.size);
    expect(delta('kagami_served_requests_total{kind="blob",source="local",code="200"}')).toBe(image.layers.length + 1);
    expect(delta('http_request_duration_seconds_count{handler="blob",method="GET",code="200"}')).toBe(image.layers.length + 1);
    expect(delta('http_response_size_bytes_sum{handler="blob",method="GET",code="200"}')).toBe(blobBytes);
    expect(delta('http_request_duration_seconds_count{handler="manifest",method="GET",code="200"}')).toBeGreaterThanOrEqual(1);
    expect(after.get('http_requests_inflight{handler="blob"}')).toBe(0);
    // Served locally: not the mirror path.
    expect([...after.keys()].some((k) => k.startsWith("spegel_mirror_requests_total"))).toBe(false);
  }, 60_000);

  test("a blob no one holds goes down the mirror path and counts as a Spegel cache miss", async () => {
    const missing = `sha256:${"0".repeat(64)}`;
    const res = await fetch(`${kagami.url}/v2/test/metrics/blobs/${missing}?ns=docker.io`);
    expect(res.status).toBe(404);
    const after = samples(await scrape());
    expect(after.get('spegel_mirror_requests_total{registry="docker.io",cache="miss"}')).toBe(1);
    expect(after.get('kagami_served_requests_total{kind="blob",source="miss",code="404"}')).toBe(1);
  }, 30_000);

  test("a peer's local-only request (X-Spegel-Mirrored) that misses is not a mirror request", async () => {
    const missing = `sha256:${"1".repeat(64)}`;
    const res = await fetch(`${kagami.url}/v2/test/metrics/blobs/${missing}?ns=docker.io`, { headers: { "X-Spegel-Mirrored": "true" } });
    expect(res.status).toBe(404);
    const after = samples(await scrape());
    expect(after.get('spegel_mirror_requests_total{registry="docker.io",cache="miss"}')).toBe(1);
    expect(after.get('kagami_served_requests_total{kind="blob",source="miss",code="404"}')).toBe(2);
  }, 30_000);
});
