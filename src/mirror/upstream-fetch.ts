// One upstream fetch per blob on this node. The first request starts it: the upstream body is
// written into a growing ingest (store/local-ingest.ts) at the upstream's pace, whatever
// the clients do; every request for the digest, this one included, reads the growing file.
// The fetch runs to the end even when its clients leave (the next one wants the layer), is
// bounded in number, and is cut when the upstream pauses longer than the idle timeout.
import { NotFoundError } from "../errors.ts";
import { budgetedStream } from "../governor/budget-stream.ts";
import type { ByteBudget } from "../governor/budget.ts";
import type { Logger } from "../observability/log.ts";
import { OCTET_STREAM, type Digest } from "../oci/index.ts";
import type { IngestingStore } from "../store/ingesting.ts";
import { GrowingIngest } from "../store/local-ingest.ts";
import type { LocalStore } from "../store/local.ts";
import { SingleFlightFullError } from "./singleflight.ts";
import { UpstreamError, type UpstreamClient } from "./upstream-client.ts";

export interface BlobFetchOptions {
  store: LocalStore;
  ingesting: IngestingStore;
  client: UpstreamClient;
  budget: ByteBudget;
  logger: Logger;
  /** Longest pause of the upstream body. */
  idleTimeoutMs: number;
  /** Most blob fetches at once. */
  maxInflight: number;
  /** Called when a fetch has its size and starts writing (advertise it), and when it ends. */
  onStart?: (digest: Digest, size: number) => void;
  onEnd?: (digest: Digest, ok: boolean, bytes: number) => void;
}

export interface BlobSource {
  registry: string;
  repository: string;
  digest: Digest;
}

export class BlobFetches {
  /** Fetches waiting for upstream headers; once writing, the ingest is in `ingesting`. */
  private readonly starting = new Map<Digest, Promise<GrowingIngest>>();
  private readonly running = new Set<AbortController>();
  private closed = false;

  constructor(private readonly opts: BlobFetchOptions) {}

  get inflight(): number {
    return this.starting.size + this.opts.ingesting.size;
  }

  /**
   * The growing ingest of the digest: the running one, or a new upstream fetch once its
   * headers arrived. Throws NotFoundError when the upstream does not have it, UpstreamError
   * when it cannot be reached or refuses, SingleFlightFullError when too many run.
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
    const { client, store, logger } = this.opts;
    const controller = new AbortController();
    this.running.add(controller);
    let res: Response;
    try {
      res = await client.request({
        registry: src.registry,
        repository: src.repository,
        path: `blobs/${src.digest}`,
        method: "GET",
        signal: controller.signal,
      });
    } catch (e) {
      this.running.delete(controller);
      throw e;
    }
    const size = Number(res.headers.get("Content-Length") ?? NaN);
    const fail = async (e: Error): Promise<never> => {
      this.running.delete(controller);
      controller.abort(e);
      await res.body?.cancel().catch(() => {});
      throw e;
    };
    if (res.status === 404) return fail(new NotFoundError(`${src.registry}/${src.repository} has no blob ${src.digest}`));
    if (res.status !== 200) return fail(new UpstreamError(`${src.registry} answered ${res.status} for blob ${src.digest}`, res.status));
    if (!Number.isSafeInteger(size) || size < 0) return fail(new UpstreamError(`${src.registry} sent blob ${src.digest} without a Content-Length`));
    const said = res.headers.get("Docker-Content-Digest");
    if (said && said !== src.digest) return fail(new UpstreamError(`${src.registry} answered blob ${src.digest} with ${said}`));
    if (!res.body) return fail(new UpstreamError(`${src.registry} sent no body for ${src.digest}`));

    // Another request may have finished this digest while we waited for headers.
    if (await store.has(src.digest)) return fail(new AlreadyHeldError(src.digest));
    const ingest = await GrowingIngest.start(store, { mediaType: OCTET_STREAM, digest: src.digest, size }).catch(fail);
    this.opts.ingesting.add(ingest);
    this.opts.onStart?.(src.digest, size);
    logger.info({ digest: src.digest, registry: src.registry, repository: src.repository, bytes: size }, "upstream fetch started");
    void this.pump(src, ingest, res.body, controller);
    return ingest;
  }

  /** Copies the upstream body into the ingest under the budget, then publishes it. */
  private async pump(src: BlobSource, ingest: GrowingIngest, body: ReadableStream<Uint8Array>, controller: AbortController): Promise<void> {
    const { budget, logger, idleTimeoutMs } = this.opts;
    const started = performance.now();
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(new UpstreamError(`upstream paused for more than ${idleTimeoutMs} ms`)), idleTimeoutMs);
    };
    let ok = false;
    try {
      arm();
      for await (const chunk of budgetedStream(body, budget, { signal: controller.signal })) {
        arm();
        await ingest.write(chunk);
      }
      clearTimeout(idle);
      if (controller.signal.aborted) throw controller.signal.reason;
      await ingest.finish();
      ok = true;
      const ms = performance.now() - started;
      logger.info({ digest: src.digest, registry: src.registry, bytes: ingest.bytesWritten, ms: Math.round(ms) }, "upstream fetch done");
    } catch (e) {
      clearTimeout(idle);
      const err = controller.signal.aborted && controller.signal.reason instanceof Error ? controller.signal.reason : toError(e);
      controller.abort(err);
      await ingest.fail(err);
      logger.warn({ digest: src.digest, registry: src.registry, bytes: ingest.bytesWritten, err: err.message }, "upstream fetch failed");
    } finally {
      this.running.delete(controller);
      this.opts.ingesting.remove(ingest);
      this.opts.onEnd?.(src.digest, ok, ingest.bytesWritten);
    }
  }
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
