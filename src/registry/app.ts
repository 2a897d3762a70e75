// The registry: the pull half of the OCI distribution API as a Hono app. A request is
// parsed and validated (oci/), answered from the first store that holds it, else from the
// mirror sources (peers, upstream) unless it carries X-Spegel-Mirrored: true, else 404 so
// that containerd falls back to the next host.
import { Hono, type Context } from "hono";
import type { Logger } from "../observability/log.ts";
import { DELEGATED_HEADER, type MirrorRequest, type MirrorSource, type Attempt } from "../mirror/source.ts";
import { errorMessage, NotFoundError } from "../errors.ts";
import {
  canonicalRegistry,
  isManifestMediaType,
  isRegistryHost,
  parsePullRoute,
  parseRange,
  RangeError416,
  RegistryError,
  resolveRange,
  type ByteRange,
  type Descriptor,
  type Digest,
  type PullRoute,
  type TagReference,
} from "../oci/index.ts";
import type { Store } from "../store/store.ts";
import type { Health } from "./health.ts";
import { contentBody, contentHeaders, errorResponse, JSON_TYPE, registryErrorResponse } from "./respond.ts";

export const MIRRORED_HEADER = "X-Spegel-Mirrored";

/** What one answered request was, for metrics and the /debug pull history. */
export interface ServedRequest {
  kind: "manifest" | "blob";
  method: string;
  registry: string;
  repository: string;
  reference: string;
  digest?: Digest;
  /** local store name, "peer", "upstream", or "miss". */
  source: string;
  target?: string;
  status: number;
  bytes: number;
  ms: number;
  attempts?: Attempt[];
}

export interface RegistryOptions {
  stores: Store[];
  mirrors?: MirrorSource[];
  defaultRegistry: string;
  health: Health;
  logger: Logger;
  /** Asked before a request that would need buffers (mirror path); a reason sheds it. */
  shedReason?: () => string | undefined;
  onServed?: (r: ServedRequest) => void;
  /** Called when a file response has been handed to the kernel for sending. */
  onFileServed?: (path: string, size: number) => void;
  /** Resolves a tag in a store in place of store.resolve (tags cached from upstream follow it). Throws NotFoundError. */
  resolveTag?: (store: Store, reference: TagReference) => Promise<Descriptor>;
}

export function createRegistryApp(opts: RegistryOptions): Hono {
  const app = new Hono();
  const log = opts.logger;

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/livez", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => {
    const r = opts.health.readiness();
    return c.json(r.ready ? { status: "ready" } : { status: "not ready", failing: r.failing }, r.ready ? 200 : 503);
  });

  app.all("/v2/*", async (c) => handle(c, opts));
  app.all("/v2", async (c) => handle(c, opts));

  app.notFound(() => errorResponse("NAME_UNKNOWN", "not found", 404));
  app.onError((err) => {
    if (err instanceof RegistryError) return registryErrorResponse(err);
    log.error({ err: errorMessage(err) }, "unhandled registry error");
    return errorResponse("UNSUPPORTED", "internal error", 500);
  });
  return app;
}

async function handle(c: Context, opts: RegistryOptions): Promise<Response> {
  const method = c.req.method;
  if (method !== "GET" && method !== "HEAD") {
    return errorResponse("UNSUPPORTED", `${method} is not supported: kagami serves pulls only`, 405);
  }
  const url = new URL(c.req.url);
  let route: PullRoute;
  try {
    route = parsePullRoute(url.pathname);
  } catch (e) {
    if (e instanceof RegistryError) return registryErrorResponse(e);
    throw e;
  }
  if (route.kind === "base") {
    return new Response("{}", { headers: { "Content-Type": JSON_TYPE, "Docker-Distribution-API-Version": "registry/2.0" } });
  }
  const ns = url.searchParams.get("ns");
  if (ns !== null && !isRegistryHost(ns)) return errorResponse("NAME_INVALID", "invalid ns parameter", 400);
  const registry = canonicalRegistry(ns ?? opts.defaultRegistry);
  const started = performance.now();
  const isBlob = route.kind === "blob";
  const reference = "tag" in route ? route.tag : route.digest;
  const served: ServedRequest = {
    kind: route.kind,
    method,
    registry,
    repository: route.name,
    reference,
    source: "miss",
    status: 0,
    bytes: 0,
    ms: 0,
  };
  const finish = (res: Response): Response => {
    served.status = res.status;
    served.ms = performance.now() - started;
    served.bytes = method === "HEAD" ? 0 : Number(res.headers.get("Content-Length") ?? 0);
    served.digest ??= (res.headers.get("Docker-Content-Digest") ?? undefined) as Digest | undefined;
    opts.onServed?.(served);
    return res;
  };

  let range: ByteRange | undefined;
  const rangeHeader = isBlob ? c.req.header("Range") : undefined;
  const local = await findLocal(opts, route, registry);
  if (local) {
    served.source = local.store.name;
    served.digest = local.descriptor.digest;
    if (rangeHeader !== undefined) {
      try {
        range = resolveRange(parseRange(rangeHeader), local.descriptor.size);
      } catch (e) {
        if (!(e instanceof RangeError416)) throw e;
        const status = e.reason === "malformed" ? 400 : 416;
        const res = errorResponse("RANGE_INVALID", e.message, status);
        if (status === 416) res.headers.set("Content-Range", `bytes */${local.descriptor.size}`);
        return finish(res);
      }
    }
    return finish(await serveLocal(opts, local.store, local.descriptor, isBlob, method, range));
  }

  const code = isBlob ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN";
  if (c.req.header(MIRRORED_HEADER)?.toLowerCase() === "true" || !opts.mirrors?.length) {
    return finish(errorResponse(code, `${reference} is not held by this node`, 404));
  }
  const shed = opts.shedReason?.();
  if (shed) {
    served.source = "shed";
    return finish(errorResponse(code, `${reference} not served: node under memory pressure`, 404, { shed }));
  }
  const req: MirrorRequest = {
    kind: route.kind,
    method,
    registry,
    repository: route.name,
    signal: c.req.raw.signal,
  };
  if ("tag" in route) req.tag = route.tag;
  else req.digest = route.digest;
  if (rangeHeader !== undefined) req.range = rangeHeader;
  if (c.req.header(DELEGATED_HEADER)?.toLowerCase() === "true") req.delegated = true;
  const accept = c.req.header("Accept");
  if (accept !== undefined) req.accept = accept;
  const attempts: Attempt[] = [];
  for (const mirror of opts.mirrors) {
    try {
      const r = await mirror.fetch(req);
      if ("hit" in r) {
        served.source = r.source;
        if (r.target !== undefined) served.target = r.target;
        served.attempts = attempts;
        return finish(r.hit);
      }
      attempts.push(...r.miss);
    } catch (e) {
      attempts.push({ source: mirror.name, outcome: errorMessage(e), ms: 0 });
    }
  }
  served.attempts = attempts;
  return finish(errorResponse(code, `${reference} not found on this node, its peers or upstream`, 404, { attempts }));
}

async function findLocal(
  opts: RegistryOptions,
  route: Exclude<PullRoute, { kind: "base" }>,
  registry: string,
): Promise<{ store: Store; descriptor: Descriptor } | undefined> {
  for (const store of opts.stores) {
    try {
      if ("tag" in route) {
        const reference = { registry, repository: route.name, tag: route.tag };
        const root = await (opts.resolveTag ? opts.resolveTag(store, reference) : store.resolve(reference));
        const descriptor = await store.describe(root.digest);
        return { store, descriptor: { ...descriptor, mediaType: root.mediaType } };
      }
      const descriptor = await store.describe(route.digest);
      // A digest asked through the wrong endpoint is not found there.
      if (isManifestMediaType(descriptor.mediaType) !== (route.kind === "manifest")) continue;
      return { store, descriptor };
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }
  return undefined;
}

async function serveLocal(
  opts: RegistryOptions,
  store: Store,
  descriptor: Descriptor,
  isBlob: boolean,
  method: string,
  range: ByteRange | undefined,
): Promise<Response> {
  const status = range ? 206 : 200;
  const whole = { size: descriptor.size, range: range ?? { start: 0, end: descriptor.size - 1 } };
  const headers = contentHeaders({ descriptor, isBlob, partial: range !== undefined, content: whole });
  if (method === "HEAD") return new Response(null, { status, headers });
  let content;
  try {
    content = await store.open(descriptor.digest, range);
  } catch (e) {
    if (e instanceof NotFoundError) return errorResponse(isBlob ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN", e.message, 404);
    throw e;
  }
  if (content.kind === "file") opts.onFileServed?.(content.path, content.size);
  return new Response(await contentBody(content), { status, headers });
}
