// The metrics a Prometheus scrape sees after requests are answered: Spegel's names and
// labels (so its dashboards work) and kagami's bytes by source.
import { describe, expect, test } from "bun:test";
import { createMetrics } from "../../src/observability/metrics.ts";
import type { ServedRequest } from "../../src/registry/app.ts";

const DIGEST = `sha256:${"ab".repeat(32)}` as ServedRequest["digest"];

function served(over: Partial<ServedRequest>): ServedRequest {
  return { kind: "blob", method: "GET", registry: "docker.io", repository: "library/nginx", reference: DIGEST!, digest: DIGEST, source: "local", status: 200, bytes: 1000, ms: 3, ...over };
}

/** The sample lines of a scrape, `name{labels} value`. */
async function samples(m: ReturnType<typeof createMetrics>): Promise<string[]> {
  return (await m.render()).body.split("\n").filter((l) => l && !l.startsWith("#"));
}

describe("observe", () => {
  test("bytes are counted by source, GET only", async () => {
    const m = createMetrics({ defaultMetrics: false });
    m.observe(served({ source: "local", bytes: 1000 }));
    m.observe(served({ source: "local", bytes: 500 }));
    m.observe(served({ source: "upstream", bytes: 7, attempts: [] }));
    m.observe(served({ source: "local", method: "HEAD", bytes: 0 }));
    const s = await samples(m);
    expect(s).toContain('kagami_bytes_served_total{source="local"} 1500');
    expect(s).toContain('kagami_bytes_served_total{source="upstream"} 7');
    expect(s).toContain('kagami_served_requests_total{kind="blob",source="local",code="200"} 3');
  });

  test("spegel_mirror_requests_total counts mirror-path GETs: peer = hit, others = miss", async () => {
    const m = createMetrics({ defaultMetrics: false });
    m.observe(served({ source: "peer", target: "12D3KooWabc", attempts: [] }));
    m.observe(served({ source: "upstream", attempts: [{ source: "peer", outcome: "not found", ms: 2 }] }));
    m.observe(served({ source: "miss", status: 404, bytes: 0, attempts: [] }));
    m.observe(served({ source: "shed", status: 404, bytes: 0 }));
    // Not the mirror path: served locally, or a peer's local-only request that missed.
    m.observe(served({ source: "local" }));
    m.observe(served({ source: "miss", status: 404, bytes: 0 }));
    m.observe(served({ source: "peer", method: "HEAD", attempts: [] }));
    const s = await samples(m);
    expect(s).toContain('spegel_mirror_requests_total{registry="docker.io",cache="hit"} 1');
    expect(s).toContain('spegel_mirror_requests_total{registry="docker.io",cache="miss"} 3');
    expect(s.some((l) => l.startsWith('spegel_mirror_last_success_timestamp_seconds{registry="docker.io"}'))).toBe(true);
  });

  test("registry labels taken from requests are capped", async () => {
    const m = createMetrics({ defaultMetrics: false });
    for (let i = 0; i < 100; i++) m.observe(served({ registry: `r${i}.example`, source: "upstream", attempts: [] }));
    const s = (await samples(m)).filter((l) => l.startsWith("spegel_mirror_requests_total"));
    expect(s.length).toBe(65);
    expect(s).toContain('spegel_mirror_requests_total{registry="other",cache="miss"} 36');
  });
});

describe("instrument", () => {
  test("records duration, size and inflight by a bounded handler label", async () => {
    const m = createMetrics({ defaultMetrics: false });
    let inflightDuring = "";
    const fetch = m.instrument(async (req: Request) => {
      inflightDuring ||= (await samples(m)).find((l) => l.startsWith("http_requests_inflight")) ?? "";
      return new Response("x".repeat(2000), { status: 200, headers: { "Content-Length": "2000" } });
    });
    await fetch(new Request(`http://h/v2/library/nginx/blobs/${DIGEST}?ns=docker.io`));
    await fetch(new Request("http://h/v2/library/nginx/manifests/latest", { method: "HEAD" }));
    await fetch(new Request("http://h/v2/"));
    await fetch(new Request("http://h/some/random/path/that/must/not/become/a/label"));
    const s = await samples(m);
    expect(inflightDuring).toBe('http_requests_inflight{handler="blob"} 1');
    expect(s).toContain('http_requests_inflight{handler="blob"} 0');
    expect(s).toContain('http_request_duration_seconds_count{handler="blob",method="GET",code="200"} 1');
    expect(s).toContain('http_request_duration_seconds_count{handler="manifest",method="HEAD",code="200"} 1');
    expect(s).toContain('http_response_size_bytes_sum{handler="blob",method="GET",code="200"} 2000');
    expect(s).toContain('http_response_size_bytes_sum{handler="manifest",method="HEAD",code="200"} 0');
    expect(s).toContain('http_request_duration_seconds_count{handler="v2",method="GET",code="200"} 1');
    expect(s).toContain('http_request_duration_seconds_count{handler="other",method="GET",code="200"} 1');
  });

  test("a handler that throws is counted as 500 and the error reaches the caller", async () => {
    const m = createMetrics({ defaultMetrics: false });
    const fetch = m.instrument(async () => {
      throw new Error("boom");
    });
    await expect(fetch(new Request("http://h/readyz"))).rejects.toThrow("boom");
    expect(await samples(m)).toContain('http_request_duration_seconds_count{handler="readyz",method="GET",code="500"} 1');
  });
});

describe("gauges from other parts", () => {
  test("advertised counts replace the previous ones; a registry that went away drops to 0", async () => {
    const m = createMetrics({ defaultMetrics: false });
    m.setAdvertised([
      { registry: "docker.io", imageTags: 2, imageDigests: 3, contentDigests: 20 },
      { registry: "ghcr.io", imageTags: 1, imageDigests: 1, contentDigests: 4 },
    ]);
    m.setAdvertised([{ registry: "docker.io", imageTags: 1, imageDigests: 1, contentDigests: 5 }]);
    const s = await samples(m);
    expect(s).toContain('spegel_advertised_image_tags{registry="docker.io"} 1');
    expect(s).toContain('spegel_advertised_image_digests{registry="docker.io"} 1');
    expect(s).toContain('spegel_advertised_content_digests{registry="docker.io"} 5');
    expect(s).toContain('spegel_advertised_keys{registry="docker.io"} 6');
    expect(s).toContain('spegel_advertised_image_tags{registry="ghcr.io"} 0');
  });

  test("router and governor gauges are read at scrape time", async () => {
    const m = createMetrics({ defaultMetrics: false });
    let peers = 1;
    m.watchRouter(() => ({ peerId: "p", addresses: [], routingTableSize: peers * 2, peers: Array.from({ length: peers }, (_, i) => ({ id: `p${i}`, addresses: [] })), advertisedKeys: 0 }));
    m.gauge({ name: "kagami_memory_budget_bytes", help: "budget", labelNames: ["state"] as const, collect: () => [{ labels: { state: "in_use" }, value: 42 }] });
    m.observeResolve("libp2p", 0.02);
    expect(await samples(m)).toContain("kagami_peers 1");
    peers = 3;
    const s = await samples(m);
    expect(s).toContain("kagami_peers 3");
    expect(s).toContain("kagami_routing_table_size 6");
    expect(s).toContain('kagami_memory_budget_bytes{state="in_use"} 42');
    expect(s).toContain('spegel_resolve_duration_seconds_count{router="libp2p"} 1');
  });

  test("two nodes in one process keep separate counts", async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.observe(served({ bytes: 10 }));
    expect(await samples(a)).toContain('kagami_bytes_served_total{source="local"} 10');
    expect((await samples(b)).some((l) => l.startsWith("kagami_bytes_served_total"))).toBe(false);
  });
});
