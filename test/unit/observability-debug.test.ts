// The /debug pull history: requests grouped into pulls, each explained, every list capped.
import { describe, expect, test } from "bun:test";
import { DebugState, explain } from "../../src/observability/debug.ts";
import type { ServedRequest } from "../../src/registry/app.ts";

const digest = (c: string) => `sha256:${c.repeat(64)}` as NonNullable<ServedRequest["digest"]>;

function req(over: Partial<ServedRequest>): ServedRequest {
  return { kind: "blob", method: "GET", registry: "docker.io", repository: "library/nginx", reference: digest("a"), source: "local", status: 200, bytes: 100, ms: 1.234, ...over };
}

describe("pull grouping", () => {
  test("a tag, its manifests and blobs form one pull with bytes by source", () => {
    const d = new DebugState();
    const t = Date.parse("2026-01-01T00:00:00Z");
    d.record(req({ kind: "manifest", method: "HEAD", reference: "1.27", bytes: 0 }), t);
    d.record(req({ kind: "manifest", reference: digest("b") }), t + 10);
    d.record(req({ source: "peer", target: "12D3KooWpeer", bytes: 5000, attempts: [] }), t + 20);
    d.record(req({ source: "upstream", target: "registry-1.docker.io", bytes: 700, attempts: [{ source: "peer", target: "12D3KooWx", outcome: "404", ms: 4 }] }), t + 30);
    const [pull, ...rest] = d.snapshot().pulls;
    expect(rest).toHaveLength(0);
    expect(pull!.image).toBe("docker.io/library/nginx:1.27");
    expect(pull!.requests).toBe(4);
    expect(pull!.steps.map((s) => s.source)).toEqual(["local", "local", "peer", "upstream"]);
    expect(pull!.bytesBySource).toEqual({ local: 100, peer: 5000, upstream: 700 });
    expect(pull!.steps[3]!.explanation).toBe("fetched from upstream registry-1.docker.io; before it: peer 12D3KooWx 404 (4 ms)");
  });

  test("the same tag asked again after blobs, another repository, or a quiet gap start new pulls", () => {
    const d = new DebugState();
    const t = Date.parse("2026-01-01T00:00:00Z");
    d.record(req({ kind: "manifest", reference: "1.27" }), t);
    d.record(req({}), t + 1);
    d.record(req({ kind: "manifest", reference: "1.27" }), t + 2);
    d.record(req({ repository: "library/redis", kind: "manifest", reference: "7" }), t + 3);
    d.record(req({}), t + 60_000);
    const images = d.snapshot().pulls.map((p) => `${p.image} ${p.requests}`);
    expect(images).toEqual([`docker.io/library/nginx@${digest("a")} 1`, "docker.io/library/redis:7 1", "docker.io/library/nginx:1.27 1", "docker.io/library/nginx:1.27 2"]);
  });

  test("pulls and steps are capped; the totals still count what was left out", () => {
    const d = new DebugState();
    const t = Date.now();
    for (let i = 0; i < 300; i++) d.record(req({}), t);
    for (let i = 0; i < 60; i++) d.record(req({ repository: `r${i}`, kind: "manifest", reference: "v1" }), t);
    const pulls = d.snapshot().pulls;
    expect(pulls).toHaveLength(50);
    expect(pulls[0]!.repository).toBe("r59");
    const big = new DebugState();
    for (let i = 0; i < 300; i++) big.record(req({}), t);
    const [p] = big.snapshot().pulls;
    expect(p!.steps).toHaveLength(256);
    expect(p!.omittedSteps).toBe(44);
    expect(p!.bytesBySource.local).toBe(30_000);
  });
});

describe("providers", () => {
  test("router and governor state appear; a provider that throws leaves its section empty", () => {
    const d = new DebugState({ version: "0.1.0" });
    expect(d.snapshot().node).toBeNull();
    d.provide({
      router: () => ({ peerId: "12D3KooWme", addresses: ["/ip4/10.0.0.1/tcp/5001/p2p/12D3KooWme"], routingTableSize: 2, peers: [{ id: "12D3KooWyou", addresses: ["/ip4/10.0.0.2/tcp/5001"] }], advertisedKeys: 3 }),
      advertisedKeys: (limit) => ["docker.io/library/nginx:1.27", digest("a"), digest("b")].slice(0, limit),
      governor: () => {
        throw new Error("cgroup gone");
      },
    });
    const s = d.snapshot();
    expect(s.about.version).toBe("0.1.0");
    expect(s.node).toEqual({ peerId: "12D3KooWme", addresses: ["/ip4/10.0.0.1/tcp/5001/p2p/12D3KooWme"], routingTableSize: 2 });
    expect(s.peerCount).toBe(1);
    expect(s.advertised).toEqual({ total: 3, keys: ["docker.io/library/nginx:1.27", digest("a"), digest("b")] });
    expect(s.governor).toBeNull();
  });
});

describe("explain", () => {
  test("says where the bytes came from and why earlier sources failed", () => {
    expect(explain(req({}))).toBe("served from the local store on this node");
    expect(explain(req({ source: "peer", target: "12D3KooWp", attempts: [{ source: "peer", target: "12D3KooWq", outcome: "timeout", ms: 100.4 }] }))).toBe(
      "served by peer 12D3KooWp; before it: peer 12D3KooWq timeout (100 ms)",
    );
    expect(explain(req({ source: "upstream", target: "ghcr.io", attempts: [] }))).toBe("fetched from upstream ghcr.io (no peer holds it)");
    expect(explain(req({ source: "shed", status: 404 }))).toContain("memory pressure");
    expect(explain(req({ source: "miss", status: 404, attempts: [{ source: "upstream", target: "ghcr.io", outcome: "401", ms: 30 }] }))).toBe("not found anywhere: upstream ghcr.io 401 (30 ms)");
  });
});
