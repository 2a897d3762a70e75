// One upstream fetch per blob on this node. The first request starts it: the body is written
// into a growing ingest (store/local-ingest.ts) at the source's pace, whatever the clients
// do; every request for the digest, this one included, reads the growing file. The body
// comes from the blob's owner in the cluster when that is another node (upstream-owner.ts),
// else from the upstream registry; an owner that fails is replaced by the upstream from the
// offset reached. A fetch runs to the end even when its clients leave (the next one wants
// the layer), is bounded in number, and is cut when its source pauses past the idle timeout.
import { NotFoundError } from "../errors.ts";
import { budgetedStream, SOURCE_BUFFER_BYTES } from "../governor/budget-stream.ts";
import type { ByteBudget } from "../governor/budget.ts";
import type { Logger } from "../observability/log.ts";
import { OCTET_STREAM, type Digest } from "../oci/index.ts";
import type { Peer } from "../routing/router.ts";
import type { IngestingStore } from "../store/ingesting.ts";
import { GrowingIngest } from "../store/local-ingest.ts";
import type { LocalStore } from "../store/local.ts";
import { SingleFlightFullError } from "./singleflight.ts";
import { USER_AGENT, UpstreamError, type UpstreamClient } from "./upstream-client.ts";
import { DELEGATED_HEADER } from "./source.ts";
import { ownerOf, type ClusterView } from "./upstream-owner.ts";

export interface BlobFetchOptions {
  store: LocalStore;
  ingesting: IngestingStore;
  client: UpstreamClient;
  budget: ByteBudget;
  logger: Logger;
  /** Longest pause of a body, and longest wait for an owner's headers. */
  idleTimeoutMs: number;
  /** Most blob fetches at once. */
  maxInflight: number;
  /** Blob owners across the cluster; without it this node fetches everything itself. */
  cluster?: ClusterView;
  /** Called when a fetch has its size and starts writing, and when it ends. */
  onStart?: (digest: Digest, size: number, from: "upstream" | "owner") => void;
  onEnd?: (digest: Digest, ok: boolean, bytes: number) => void;
}

export interface BlobSource {
  registry: string;
  repository: string;
  digest: Digest;
  /** Asked by another node that chose this one as the owner: fetch upstream, never delegate. */
  delegated?: boolean;
}

interface Body {
  from: "upstream" | "owner";
  peer?: Peer;
  size: number;
  body: ReadableStream<Uint8Array>;
  /** Aborts this body only (an owner's failure must not cancel the upstream fallback). */
  abort: AbortController;
  /** Budget taken for the body's own read-ahead; the budgeted stream releases it, else whoever drops the body. */
  reserved: number;
}

/** Counters for metrics and the debug page (monotonic, since start). */
export interface BlobFetchStats {
  /** Blob fetches started, by where their first byte came from. */
  fromUpstream: number;
  fromOwner: number;
  failed: number;
  /** Owners that failed mid-blob, replaced by the upstream. */
  resumedUpstream: number;
  /** Body bytes written, by source. */
  bytesFromUpstream: number;
  bytesFromOwners: number;
}

export class BlobFetches {
  readonly stats: BlobFetchStats = { fromUpstream: 0, fromOwner: 0, failed: 0, resumedUpstream: 0, bytesFromUpstream: 0, bytesFromOwners: 0 };
  /** Fetches waiting for headers; once writing, the ingest is in `ingesting`. */
  private readonly starting = new Map<Digest, Promise<GrowingIngest>>();
  private readonly running = new Set<AbortController>();
  private closed = false;

  constructor(private readonly opts: BlobFetchOptions) {}

  get inflight(): number {
    return this.starting.size + this.opts.ingesting.size;
  }

  /**
   * The growing ingest of the digest: the running one, or a new fetch once its headers
   * arrived. Throws NotFoundError when the upstream does not have it, UpstreamError when it
   * cannot be reached or refuses, SingleFlightFullError when too many run, AlreadyHeldError
   * when the store got it meanwhile.
   */
  async join(src: BlobSource): Promise<GrowingIngest> {
    const running = this.opts.ingesting.get(src.digest);
    if (running) return running;
    const pending = this.starting.get(src.digest);
    if (pending) return pending;
    if (this.closed) throw new UpstreamError("shutting down");
    if (this.inflight >= this.opts.maxInflight) throw new SingleFlightFullError(`${this.inflight} upstream fetches already running`);
    const p = this.start(src).finally(() => this.starting.delete(src.digest));
    this.starting.set(src.digest, p);
    return p;
  }

  /** Aborts every fetch (their readers error, their temp files go). */
  close(): void {
    this.closed = true;
    for (const c of this.running) c.abort(new UpstreamError("shutting down"));
  }

  private async start(src: BlobSource): Promise<GrowingIngest> {
    const fetchAbort = new AbortController();
    this.running.add(fetchAbort);
    let first: Body;
    try {
      const owner = src.delegated || !this.opts.cluster ? undefined : ownerOf(src.digest, this.opts.cluster);
      first = (owner && (await this.fromOwner(src, owner, fetchAbort.signal))) || (await this.fromUpstream(src, 0, fetchAbort.signal));
    } catch (e) {
      this.running.delete(fetchAbort);
      throw e;
    }
    const abandon = async (e: Error): Promise<never> => {
      this.running.delete(fetchAbort);
      await this.drop(first, e);
      throw e;
    };
    // Another request may have finished this digest while we waited for headers.
    if (await this.opts.store.has(src.digest)) return abandon(new AlreadyHeldError(src.digest));
    const ingest = await GrowingIngest.start(this.opts.store, { mediaType: OCTET_STREAM, digest: src.digest, size: first.size }).catch(abandon);
    this.opts.ingesting.add(ingest);
    if (first.from === "upstream") this.stats.fromUpstream++;
    else this.stats.fromOwner++;
    this.opts.onStart?.(src.digest, first.size, first.from);
    this.opts.logger.info(
      { digest: src.digest, registry: src.registry, repository: src.repository, bytes: first.size, from: first.peer?.id ?? "upstream", delegated: src.delegated === true },
      "blob fetch started",
    );
    void this.pump(src, ingest, first, fetchAbort);
    return ingest;
  }

  /** The upstream's body from offset (a Range when not 0). */
  private async fromUpstream(src: BlobSource, offset: number, fetchSignal: AbortSignal): Promise<Body> {
    const abort = new AbortController();
    const signal = AbortSignal.any([fetchSignal, abort.signal]);
    const headers: Record<string, string> = offset > 0 ? { Range: `bytes=${offset}-` } : {};
    const reserved = await this.opts.budget.acquire(SOURCE_BUFFER_BYTES, signal);
    let res: Response;
    try {
      res = await this.opts.client.request({ registry: src.registry, repository: src.repository, path: `blobs/${src.digest}`, method: "GET", headers, signal });
    } catch (e) {
      this.opts.budget.release(reserved);
      throw e;
    }
    const fail = async (e: Error): Promise<never> => {
      this.opts.budget.release(reserved);
      abort.abort(e);
      await res.body?.cancel().catch(() => {});
      throw e;
    };
    if (res.status === 404) return fail(new NotFoundError(`${src.registry}/${src.repository} has no blob ${src.digest}`));
    const size = bodySize(res, offset);
    if (size === undefined || !res.body) return fail(new UpstreamError(`${src.registry} answered ${res.status} for blob ${src.digest} from ${offset}`, res.status));
    const said = res.headers.get("Docker-Content-Digest");
    if (said && said !== src.digest) return fail(new UpstreamError(`${src.registry} answered blob ${src.digest} with ${said}`));
    return { from: "upstream", size, body: res.body, abort, reserved };
  }

  /** The owner's body (following its fetch), or undefined when it cannot serve it: go upstream. */
  private async fromOwner(src: BlobSource, owner: Peer, fetchSignal: AbortSignal): Promise<Body | undefined> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new UpstreamError(`owner ${owner.id} sent no headers in time`)), this.opts.idleTimeoutMs);
    const url = `${owner.url}/v2/${src.repository}/blobs/${src.digest}?ns=${encodeURIComponent(src.registry)}`;
    const reserved = await this.opts.budget.acquire(SOURCE_BUFFER_BYTES, fetchSignal);
    let kept = false;
    try {
      // Bun sends streamed bodies chunked, without Content-Length: a Range makes the size known.
      const res = await fetch(url, {
        headers: { [DELEGATED_HEADER]: "true", Range: "bytes=0-", "User-Agent": USER_AGENT },
        signal: AbortSignal.any([fetchSignal, abort.signal]),
        redirect: "error",
      });
      const size = bodySize(res, 0);
      if (size === undefined || !res.body || (res.headers.get("Docker-Content-Digest") ?? src.digest) !== src.digest) {
        await res.body?.cancel().catch(() => {});
        this.opts.logger.info({ digest: src.digest, owner: owner.id, status: res.status }, "blob owner cannot serve it: fetching upstream");
        return undefined;
      }
      kept = true;
      return { from: "owner", peer: owner, size, body: res.body, abort, reserved };
    } catch (e) {
      if (fetchSignal.aborted) throw e;
      this.opts.logger.info({ digest: src.digest, owner: owner.id, err: (e as Error).message }, "blob owner unreachable: fetching upstream");
      return undefined;
    } finally {
      clearTimeout(timer);
      if (!kept) this.opts.budget.release(reserved);
    }
  }

  /** Gives up a body that was not (or not fully) copied, with its reservation. */
  private async drop(body: Body, reason: Error): Promise<void> {
    if (body.reserved > 0) this.opts.budget.release(body.reserved);
    body.reserved = 0;
    body.abort.abort(reason);
    await body.body.cancel().catch(() => {});
  }

  /** Copies bodies into the ingest under the budget, then publishes it. */
  private async pump(src: BlobSource, ingest: GrowingIngest, first: Body, fetchAbort: AbortController): Promise<void> {
    const { budget, logger, idleTimeoutMs } = this.opts;
    const started = performance.now();
    let source = first;
    let ok = false;
    try {
      for (;;) {
        try {
          await this.copy(source, ingest, budget, idleTimeoutMs, fetchAbort.signal);
          break;
        } catch (e) {
          if (source.from !== "owner" || fetchAbort.signal.aborted) throw e;
          logger.warn({ digest: src.digest, owner: source.peer?.id, offset: ingest.bytesWritten, err: (e as Error).message }, "blob owner failed mid-blob: resuming upstream");
          source = await this.fromUpstream(src, ingest.bytesWritten, fetchAbort.signal);
          this.stats.resumedUpstream++;
          if (source.size !== ingest.descriptor.size - ingest.bytesWritten) throw new UpstreamError(`upstream resumed ${src.digest} with ${source.size} bytes`);
        }
      }
      await ingest.finish();
      ok = true;
      logger.info({ digest: src.digest, registry: src.registry, bytes: ingest.bytesWritten, ms: Math.round(performance.now() - started) }, "blob fetch done");
    } catch (e) {
      this.stats.failed++;
      const err = fetchAbort.signal.aborted && fetchAbort.signal.reason instanceof Error ? fetchAbort.signal.reason : toError(e);
      await this.drop(source, err);
      await ingest.fail(err);
      logger.warn({ digest: src.digest, registry: src.registry, bytes: ingest.bytesWritten, err: err.message }, "blob fetch failed");
    } finally {
      this.running.delete(fetchAbort);
      this.opts.ingesting.remove(ingest);
      this.opts.onEnd?.(src.digest, ok, ingest.bytesWritten);
    }
  }

  /** One body into the ingest; throws when it breaks, pauses too long, or ends short. */
  private async copy(source: Body, ingest: GrowingIngest, budget: ByteBudget, idleTimeoutMs: number, fetchSignal: AbortSignal): Promise<void> {
    const end = ingest.bytesWritten + source.size;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => source.abort.abort(new UpstreamError(`source paused for more than ${idleTimeoutMs} ms`)), idleTimeoutMs);
    };
    const signal = AbortSignal.any([fetchSignal, source.abort.signal]);
    const reservedBytes = source.reserved;
    // The budgeted stream owns the reservation from here and releases it when it ends.
    source.reserved = 0;
    try {
      arm();
      for await (const chunk of budgetedStream(source.body, budget, { signal, reservedBytes })) {
        arm();
        await ingest.write(chunk);
        if (source.from === "upstream") this.stats.bytesFromUpstream += chunk.byteLength;
        else this.stats.bytesFromOwners += chunk.byteLength;
      }
      if (signal.aborted) throw signal.reason;
      if (ingest.bytesWritten !== end) throw new UpstreamError(`body ended at ${ingest.bytesWritten} of ${end} bytes`);
    } finally {
      clearTimeout(idle);
    }
  }
}

/** Bytes a blob answer will carry from offset: 200 at 0 (Content-Length), or a 206 whose range starts there. */
function bodySize(res: Response, offset: number): number | undefined {
  if (res.status === 200 && offset === 0) {
    const n = Number(res.headers.get("Content-Length") ?? NaN);
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  }
  if (res.status !== 206) return undefined;
  const m = res.headers.get("Content-Range")?.match(/^bytes (\d+)-(\d+)\/(\d+)$/);
  if (!m || Number(m[1]) !== offset || Number(m[2]) !== Number(m[3]) - 1) return undefined;
  return Number(m[3]) - offset;
}

/** The digest was published by another writer while this fetch started: read the store. */
export class AlreadyHeldError extends Error {
  override readonly name = "AlreadyHeldError";
  constructor(readonly digest: Digest) {
    super(`${digest} is already held`);
  }
}

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
