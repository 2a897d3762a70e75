// Pull-through from the upstream registry, the last mirror source: what neither this node's
// stores nor its peers hold is fetched from the registry named by ?ns= (or the default),
// streamed to the client while it is written into the local store, fetched once per node
// (upstream-fetch.ts) and once per cluster: a blob's owner fetches it (upstream-owner.ts),
// the other nodes follow the owner, and a fetch from upstream is advertised as it starts.
// Manifests are cached with their tag (upstream-manifest.ts). A miss (404 upstream,
// unreachable, refused) answers as a miss, so containerd falls back to the next host.
import { ConfigError } from "../config.ts";
import { errorMessage, NotFoundError } from "../errors.ts";
import type { ByteBudget } from "../governor/budget.ts";
import type { Logger } from "../observability/log.ts";
import { OCTET_STREAM, parseRange, RangeError416, resolveRange, type ByteRange, type Descriptor, type Digest } from "../oci/index.ts";
import { contentBody, contentHeaders, errorResponse } from "../registry/respond.ts";
import type { CacheGc } from "../store/gc.ts";
import { IngestingStore } from "../store/ingesting.ts";
import type { LocalStore } from "../store/local.ts";
import { CredentialsFileError, DockerConfigCredentials, NO_CREDENTIALS, type CredentialSource } from "./credentials.ts";
import { SingleFlightFullError } from "./singleflight.ts";
import { tagReferenceOf, type MirrorRequest, type MirrorResult, type MirrorSource } from "./source.ts";
import { UpstreamClient, UpstreamError } from "./upstream-client.ts";
import { AlreadyHeldError, BlobFetches, type BlobFetchStats } from "./upstream-fetch.ts";
import { UpstreamManifests } from "./upstream-manifest.ts";
import { UpstreamTags } from "./upstream-tags.ts";
import type { ClusterView } from "./upstream-owner.ts";

export { routerView } from "./upstream-owner.ts";

/** What the upstream mirror needs of the router: announcing in-progress content. */
export interface Advertiser {
  advertise(keys: readonly string[], signal?: AbortSignal): Promise<void>;
  withdraw(keys: readonly string[]): Promise<void>;
}

export interface UpstreamConfig {
  insecureRegistries: readonly string[];
  /** Path of a Docker config.json; undefined: anonymous only. */
  registryCredentials?: string | undefined;
  /** Header wait of every upstream request and longest pause in a body, ms. */
  upstreamTimeout: number;
  /** How long a tag cached from upstream is served before it is rechecked, ms. */
  tagTtl: number;
}

export interface UpstreamMirrorOptions {
  store: LocalStore;
  budget: ByteBudget;
  config: UpstreamConfig;
  logger: Logger;
  /** Announces blobs being fetched (digest keys) so peers follow this node. */
  router?: Advertiser;
  /** Who owns which blob's upstream fetch across the cluster (routerView(router, registryPort)). */
  cluster?: ClusterView;
  /** Told when content arrives or starts arriving, to keep the disk bound. */
  gc?: CacheGc;
  /** Where in-progress blobs are registered (shared with the gc and peers); default a new one. */
  ingesting?: IngestingStore;
  /** Most blob (and, separately, manifest) fetches at once. Default 256. */
  maxInflight?: number;
  credentials?: CredentialSource;
  fetch?: typeof fetch;
}

/** `--pull-through`: auto means on when kagami's own store is the primary store. */
export function pullThroughEnabled(setting: string, localStoreIsPrimary: boolean): boolean {
  return setting === "auto" ? localStoreIsPrimary : setting === "true";
}

/** Throws ConfigError when --registry-credentials cannot be read. */
export function createUpstreamMirror(opts: UpstreamMirrorOptions): UpstreamMirror {
  return new UpstreamMirror(opts);
}

function credentialsOf(path: string | undefined, logger: Logger): CredentialSource {
  if (!path) return NO_CREDENTIALS;
  try {
    return new DockerConfigCredentials(path, (e) => logger.warn({ err: e.message }, "registry credentials not reloaded"));
  } catch (e) {
    if (e instanceof CredentialsFileError) throw new ConfigError(`--registry-credentials: ${e.message}`);
    throw e;
  }
}

export class UpstreamMirror implements MirrorSource {
  readonly name = "upstream";
  /** Blobs being fetched, servable while they grow: list it after the local store. */
  readonly ingesting: IngestingStore;
  readonly client: UpstreamClient;
  private readonly blobs: BlobFetches;
  private readonly manifests: UpstreamManifests;
  /** Resolves the tags this mirror cached, rechecking them upstream past --tag-ttl. */
  readonly tags: UpstreamTags;
  private readonly log: Logger;

  constructor(private readonly opts: UpstreamMirrorOptions) {
    const { config, logger } = opts;
    this.log = logger;
    const credentials = opts.credentials ?? credentialsOf(config.registryCredentials, logger);
    this.client = new UpstreamClient({
      insecureRegistries: config.insecureRegistries,
      credentials,
      timeoutMs: config.upstreamTimeout,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
    });
    this.ingesting = opts.ingesting ?? new IngestingStore(opts.store, opts.budget);
    const maxInflight = opts.maxInflight ?? 256;
    this.blobs = new BlobFetches({
      store: opts.store,
      ingesting: this.ingesting,
      client: this.client,
      budget: opts.budget,
      logger,
      idleTimeoutMs: config.upstreamTimeout,
      maxInflight,
      ...(opts.cluster ? { cluster: opts.cluster } : {}),
      onStart: (digest, _size, from) => {
        opts.gc?.schedule();
        // Only a fetch from upstream is advertised while it runs: a node following an owner
        // would point others at a copy that waits on the owner anyway.
        if (from !== "upstream") return;
        opts.router?.advertise([digest]).catch((e) => logger.debug({ digest, err: errorMessage(e) }, "advertising an upstream fetch failed"));
      },
      onEnd: (digest, ok) => {
        if (ok) opts.gc?.schedule();
        else opts.router?.withdraw([digest]).catch(() => {});
      },
    });
    this.manifests = new UpstreamManifests(this.client, opts.store, opts.budget, maxInflight, config.upstreamTimeout);
    this.tags = new UpstreamTags({
      store: opts.store,
      manifests: this.manifests,
      logger,
      ttlMs: config.tagTtl,
      upstreamTimeoutMs: config.upstreamTimeout,
    });
  }


  async fetch(req: MirrorRequest): Promise<MirrorResult> {
    const started = performance.now();
    const target = req.registry;
    try {
      const hit = req.kind === "blob" ? await this.blob(req) : await this.manifest(req);
      return { hit, source: this.name, target };
    } catch (e) {
      const outcome =
        e instanceof NotFoundError ? "not found upstream" : e instanceof SingleFlightFullError ? `busy: ${e.message}` : errorMessage(e);
      if (!(e instanceof NotFoundError)) this.log.warn({ registry: target, repository: req.repository, ref: req.tag ?? req.digest, err: outcome }, "upstream miss");
      return { miss: [{ source: this.name, target, outcome, ms: Math.round(performance.now() - started) }] };
    }
  }

  /** For metrics and the debug page. */
  stats(): BlobFetchStats & { inflight: number; cachedTokens: number } {
    return { ...this.blobs.stats, inflight: this.blobs.inflight, cachedTokens: this.client.cachedTokens };
  }

  /** Aborts running fetches. */
  close(): void {
    this.blobs.close();
  }

  private async manifest(req: MirrorRequest): Promise<Response> {
    const src = { registry: req.registry, repository: req.repository };
    let descriptor: Descriptor;
    const reference = tagReferenceOf(req);
    if (reference) {
      const resolved = await this.manifests.resolveTag(src, reference.tag, req.signal);
      descriptor = await this.manifests.ensure(src, resolved.digest);
      await this.opts.store.tag(reference, descriptor, Date.now());
    } else {
      descriptor = await this.manifests.ensure(src, req.digest!);
    }
    const whole = { size: descriptor.size, range: { start: 0, end: descriptor.size - 1 } };
    const headers = contentHeaders({ descriptor, isBlob: false, partial: false, content: whole });
    if (req.method === "HEAD") return new Response(null, { headers });
    return new Response(await contentBody(await this.opts.store.open(descriptor.digest)), { headers });
  }

  private async blob(req: MirrorRequest): Promise<Response> {
    const digest = req.digest!;
    if (req.method === "HEAD" && !this.ingesting.get(digest)) return this.headBlob(req, digest);
    try {
      await this.blobs.join({ registry: req.registry, repository: req.repository, digest, delegated: req.delegated === true });
    } catch (e) {
      if (!(e instanceof AlreadyHeldError)) throw e;
    }
    const size = (await this.describeHeld(digest)).size;
    const range = req.range === undefined ? undefined : this.range(req.range, size);
    if (range instanceof Response) return range;
    const status = range ? 206 : 200;
    const whole = { size, range: range ?? { start: 0, end: size - 1 } };
    const headers = contentHeaders({ descriptor: { mediaType: OCTET_STREAM, digest, size }, isBlob: true, partial: range !== undefined, content: whole });
    if (req.method === "HEAD") return new Response(null, { status, headers });
    return new Response(await contentBody(await this.openHeld(digest, range)), { status, headers });
  }

  /** The blob being fetched, or, once it was published, the local store's. */
  private async describeHeld(digest: Digest): Promise<Descriptor> {
    try {
      return await this.ingesting.describe(digest);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      return this.opts.store.describe(digest);
    }
  }

  private async openHeld(digest: Digest, range: ByteRange | undefined) {
    try {
      return await this.ingesting.open(digest, range);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      return this.opts.store.open(digest, range);
    }
  }

  /** A HEAD for a blob we do not hold asks upstream without fetching it. */
  private async headBlob(req: MirrorRequest, digest: Digest): Promise<Response> {
    const res = await this.client.request({ registry: req.registry, repository: req.repository, path: `blobs/${digest}`, method: "HEAD", signal: req.signal });
    await res.body?.cancel();
    if (res.status === 404) throw new NotFoundError(`${req.registry}/${req.repository} has no blob ${digest}`);
    const size = Number(res.headers.get("Content-Length") ?? NaN);
    if (res.status !== 200 || !Number.isSafeInteger(size)) throw new UpstreamError(`${req.registry} answered ${res.status} for blob ${digest}`, res.status);
    const descriptor = { mediaType: OCTET_STREAM, digest, size };
    return new Response(null, { headers: contentHeaders({ descriptor, isBlob: true, partial: false, content: { size, range: { start: 0, end: size - 1 } } }) });
  }

  private range(header: string, size: number): ByteRange | Response {
    try {
      return resolveRange(parseRange(header), size);
    } catch (e) {
      if (!(e instanceof RangeError416)) throw e;
      const status = e.reason === "malformed" ? 400 : 416;
      const res = errorResponse("RANGE_INVALID", e.message, status);
      if (status === 416) res.headers.set("Content-Range", `bytes */${size}`);
      return res;
    }
  }
}
