// Prometheus metrics of one node (prom-client). Each node has its own Registry, not the
// process-global one, so two nodes in one test process keep their counts apart. Names and
// labels follow Spegel's so its dashboards and alerts keep working; kagami_* are our own.
// Other parts (router, governor) add their gauges to the same Registry through gauge().
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, exponentialBuckets } from "prom-client";
import type { ServedRequest } from "../registry/app.ts";
import type { RouterStatus } from "../routing/router.ts";

/** Sources that are not a local store: the request went down the mirror path. */
const MIRROR_SOURCES = new Set(["peer", "upstream", "shed"]);

/** Label values taken from requests are capped so a client cannot grow the series without bound. */
const MAX_REGISTRY_LABELS = 64;
const OTHER = "other";

export interface AdvertisedCounts {
  registry: string;
  imageTags: number;
  imageDigests: number;
  contentDigests: number;
}

export interface GaugeSpec<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** Read at scrape time: one value, or one value per label set. */
  collect: () => number | { labels: Partial<Record<L, string>>; value: number }[];
}

type Fetch<A extends unknown[]> = (req: Request, ...rest: A) => Response | Promise<Response>;

export interface Metrics {
  readonly registry: Registry;
  /** Counts one answered registry request (wire it to the registry's onServed). */
  observe(served: ServedRequest): void;
  /** Wraps a fetch handler with http_request_duration_seconds, _response_size_bytes and _requests_inflight. */
  instrument<A extends unknown[]>(fetch: Fetch<A>): (req: Request, ...rest: A) => Promise<Response>;
  /** Time the router took to find the first peer of a key (Spegel: spegel_resolve_duration_seconds). */
  observeResolve(router: string, seconds: number): void;
  /** Replaces the advertised counts: registries missing from `counts` drop to 0. */
  setAdvertised(counts: readonly AdvertisedCounts[]): void;
  /** kagami_peers and kagami_routing_table_size, read from the router at scrape time. */
  watchRouter(status: () => RouterStatus): void;
  /** A gauge read at scrape time (governor, stores). */
  gauge<L extends string>(spec: GaugeSpec<L>): void;
  /** The text exposition format and its content type. */
  render(): Promise<{ body: string; contentType: string }>;
}

export function createMetrics(opts: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const mirrorRequests = new Counter({
    name: "spegel_mirror_requests_total",
    help: "Requests that went down the mirror path: cache=hit served by a peer, miss otherwise.",
    labelNames: ["registry", "cache"] as const,
    registers,
  });
  const lastSuccess = new Gauge({
    name: "spegel_mirror_last_success_timestamp_seconds",
    help: "Unix time of the last request a peer served.",
    labelNames: ["registry"] as const,
    registers,
  });
  const resolveDuration = new Histogram({
    name: "spegel_resolve_duration_seconds",
    help: "Time for the router to resolve a key to its first peer.",
    labelNames: ["router"] as const,
    registers,
  });
  const advertisedGauges = {
    imageTags: gaugeOf(registry, "spegel_advertised_image_tags", "Image tags advertised to peers."),
    imageDigests: gaugeOf(registry, "spegel_advertised_image_digests", "Image (root manifest) digests advertised to peers."),
    contentDigests: gaugeOf(registry, "spegel_advertised_content_digests", "Content digests (manifests, configs, layers) advertised to peers."),
    images: gaugeOf(registry, "spegel_advertised_images", "Images advertised to peers (older Spegel name; equals image digests)."),
    keys: gaugeOf(registry, "spegel_advertised_keys", "Keys advertised to peers: tags plus content digests."),
  };
  const httpDuration = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time until the response headers were ready (bodies are then sent by the kernel).",
    labelNames: ["handler", "method", "code"] as const,
    registers,
  });
  const httpSize = new Histogram({
    name: "http_response_size_bytes",
    help: "Size of the HTTP responses (Content-Length; 0 for HEAD).",
    labelNames: ["handler", "method", "code"] as const,
    // 1 KiB up to ~2 GB, as Spegel.
    buckets: exponentialBuckets(1024, 5, 10),
    registers,
  });
  const httpInflight = new Gauge({
    name: "http_requests_inflight",
    help: "Requests being handled at this moment.",
    labelNames: ["handler"] as const,
    registers,
  });
  const bytesServed = new Counter({
    name: "kagami_bytes_served_total",
    help: "Bytes answered to clients, by where they came from (a local store's name, peer, upstream).",
    labelNames: ["source"] as const,
    registers,
  });
  const served = new Counter({
    name: "kagami_served_requests_total",
    help: "Answered registry requests by kind (manifest|blob), source (local store, peer, upstream, miss, shed) and status.",
    labelNames: ["kind", "source", "code"] as const,
    registers,
  });

  const registries = new Set<string>();
  const registryLabel = (name: string): string => {
    if (registries.has(name)) return name;
    if (registries.size >= MAX_REGISTRY_LABELS) return OTHER;
    registries.add(name);
    return name;
  };
  let advertisedRegistries = new Set<string>();

  const metrics: Metrics = {
    registry,

    observe(r) {
      served.inc({ kind: r.kind, source: r.source, code: String(r.status) });
      if (r.method === "GET" && r.bytes > 0) bytesServed.inc({ source: r.source }, r.bytes);
      // Spegel counts GETs that went down the mirror path; a request that found nothing and
      // tried no mirror (a peer's X-Spegel-Mirrored request) has no attempts and is not one.
      const mirrored = MIRROR_SOURCES.has(r.source) || (r.source === "miss" && r.attempts !== undefined);
      if (r.method !== "GET" || !mirrored) return;
      const registry = registryLabel(r.registry);
      const hit = r.source === "peer" && r.status < 300;
      mirrorRequests.inc({ registry, cache: hit ? "hit" : "miss" });
      if (hit) lastSuccess.set({ registry }, Date.now() / 1000);
    },

    instrument(fetch) {
      return async (req, ...rest) => {
        const handler = handlerOf(new URL(req.url).pathname);
        const started = performance.now();
        httpInflight.inc({ handler });
        let code = "500";
        let size = 0;
        try {
          const res = await fetch(req, ...rest);
          code = String(res.status);
          if (req.method !== "HEAD") size = Number(res.headers.get("Content-Length") ?? 0) || 0;
          return res;
        } finally {
          httpInflight.dec({ handler });
          const labels = { handler, method: req.method, code };
          httpDuration.observe(labels, (performance.now() - started) / 1000);
          httpSize.observe(labels, size);
        }
      };
    },

    observeResolve(router, seconds) {
      resolveDuration.observe({ router }, seconds);
    },

    setAdvertised(counts) {
      const next = new Set<string>();
      for (const c of counts) {
        const registry = registryLabel(c.registry);
        next.add(registry);
        advertisedGauges.imageTags.set({ registry }, c.imageTags);
        advertisedGauges.imageDigests.set({ registry }, c.imageDigests);
        advertisedGauges.images.set({ registry }, c.imageDigests);
        advertisedGauges.contentDigests.set({ registry }, c.contentDigests);
        advertisedGauges.keys.set({ registry }, c.imageTags + c.contentDigests);
      }
      for (const registry of advertisedRegistries) {
        if (next.has(registry)) continue;
        for (const g of Object.values(advertisedGauges)) g.set({ registry }, 0);
      }
      advertisedRegistries = next;
    },

    watchRouter(status) {
      metrics.gauge({ name: "kagami_peers", help: "Peers this node is connected to.", collect: () => status().peers.length });
      metrics.gauge({
        name: "kagami_routing_table_size",
        help: "Peers in the DHT routing table (0: the node cannot find content on peers).",
        collect: () => status().routingTableSize,
      });
    },

    gauge(spec) {
      new Gauge({
        name: spec.name,
        help: spec.help,
        labelNames: spec.labelNames ?? [],
        registers,
        collect() {
          const v = spec.collect();
          if (typeof v === "number") {
            this.set(v);
            return;
          }
          this.reset();
          for (const { labels, value } of v) this.set(labels, value);
        },
      });
    },

    async render() {
      return { body: await registry.metrics(), contentType: registry.contentType };
    },
  };
  return metrics;
}

function gaugeOf(registry: Registry, name: string, help: string): Gauge<"registry"> {
  return new Gauge({ name, help, labelNames: ["registry"] as const, registers: [registry] });
}

/** A bounded handler label from the request path. */
export function handlerOf(pathname: string): string {
  if (pathname === "/v2" || pathname === "/v2/") return "v2";
  if (pathname.startsWith("/v2/")) {
    if (pathname.includes("/manifests/")) return "manifest";
    if (pathname.includes("/blobs/")) return "blob";
    return "v2";
  }
  if (pathname === "/readyz" || pathname === "/livez" || pathname === "/healthz") return pathname.slice(1);
  return "other";
}
