// The mirror path to peers: content this node lacks, fetched from the nodes that hold it.
// Providers are looked up once per key (providers.ts), raced and hedged (hedge.ts); blob
// bytes stream through verified and resumable (peer-stream.ts); a blob small enough for one
// read is read whole and verified before the client sees it, like a manifest, so it keeps its
// Content-Length (Bun.serve drops it from streamed bodies, oven-sh/bun#10507) and a lying peer
// is passed over. A peer that serves bytes that do not match their digest is quarantined. A
// miss answers with what was tried, and the registry goes on upstream (or answers 404 so
// containerd falls back).
import type { Config } from "../config.ts";
import { errorMessage, InvalidError } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import {
  canonicalRegistry,
  contentRange,
  errorBody,
  formatTagReference,
  parseDigest,
  parseRange,
  RangeError416,
  type Digest,
} from "../oci/index.ts";
import { tagKey } from "../routing/keys.ts";
import type { Peer, Router } from "../routing/router.ts";
import { digestBytes } from "../store/verify.ts";
import { UNLIMITED_BUDGET, type Budget } from "./budget.ts";
import { raceProviders, type AttemptOutcome, type RaceResult } from "./hedge.ts";
import type { Hashers } from "./hasher.ts";
import { MAX_READ_BYTES } from "./http1.ts";
import { LatencyTracker } from "./latency.ts";
import { PeerAnswerError, readPeerContent, readWhole, requestPeer, type PeerAnswer, type PeerContent } from "./peer-http.ts";
import { peerBlobStream, type BlobSource } from "./peer-stream.ts";
import { ProviderCache, type ProviderSet } from "./providers.ts";
import { Quarantine } from "./quarantine.ts";
import type { MirrorRequest, MirrorResult, MirrorSource } from "./source.ts";

export interface PeerMirrorOptions {
  router: Router;
  log: Logger;
  /** --mirror-resolve-timeout: wait for the first provider. */
  resolveTimeoutMs: number;
  /** --mirror-resolve-retries: most providers asked for one response (and for each resume). */
  resolveRetries: number;
  /** --mirrored-registries: served from peers (empty: all). Hosts or URLs. */
  mirroredRegistries?: readonly string[];
  /** --registry-filters: regexes on `registry/repo:tag` or `registry/repo@digest` never served from peers. */
  registryFilters?: readonly string[];
  /** The governor's byte budget; every chunk held on this path is taken from it. */
  budget?: Budget;
  /** Where whole blobs are hashed while they stream (default: inline). */
  hashers?: Hashers;
  /** Manifests and HEAD requests: the whole answer within this (Spegel: 3 s). */
  manifestDeadlineMs?: number;
  /** Response headers within this when too few latencies are known. */
  headerTimeoutMs?: number;
  /** A blob read that waits this long for bytes moves to another provider. */
  stallTimeoutMs?: number;
  quarantineMs?: number;
}

const HEDGE_PERCENTILES = [80, 85, 90];
/**
 * Whole blobs up to this size (one read's budget) are read and verified before answering, so
 * they keep their Content-Length, as registry/respond.ts does for small streamed content.
 */
export const SMALL_BLOB_BYTES = MAX_READ_BYTES;
const DEFAULT_HEDGE_MS = 50;
// Under a burst the peer answers slower than the latencies seen at rest; below ~1 s a busy
// peer is given up on and the client needlessly goes upstream (seen with 200 concurrent
// proxied downloads). A dead peer refuses the connection at once and costs nothing here.
const MIN_HEADER_TIMEOUT_MS = 1000;

type Fetched =
  | { kind: "response"; response: PeerAnswer; content?: PeerContent; /** A manifest or small blob read whole and verified. */ bytes?: Uint8Array }
  | { kind: "final"; response: Response };

export class PeerMirror implements MirrorSource {
  readonly name = "peers";
  readonly #opts: PeerMirrorOptions;
  readonly #log: Logger;
  readonly #cache: ProviderCache;
  readonly #latency = new LatencyTracker();
  readonly #quarantine: Quarantine;
  readonly #registries: Set<string> | undefined;
  readonly #filters: { re: RegExp; text: string }[];
  readonly #budget: Budget;

  constructor(opts: PeerMirrorOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: "peers" });
    const retries = Math.max(1, opts.resolveRetries);
    // A few more providers than attempts: quarantined or missing ones are skipped.
    this.#cache = new ProviderCache(opts.router, { count: retries + 2 });
    this.#quarantine = new Quarantine(opts.quarantineMs ?? 5 * 60_000);
    const registries = (opts.mirroredRegistries ?? []).map(registryHost).filter((r) => r.length > 0);
    this.#registries = registries.length > 0 ? new Set(registries) : undefined;
    this.#filters = (opts.registryFilters ?? []).map((f) => {
      try {
        return { re: new RegExp(f), text: f };
      } catch (e) {
        throw new InvalidError(`--registry-filters: ${JSON.stringify(f)} is not a regular expression: ${errorMessage(e)}`);
      }
    });
    this.#budget = opts.budget ?? UNLIMITED_BUDGET;
  }

  /** Peers quarantined for serving wrong bytes (debug page). */
  get quarantined(): number {
    return this.#quarantine.size;
  }

  async fetch(req: MirrorRequest): Promise<MirrorResult> {
    const refused = this.#policy(req);
    if (refused) return { miss: [{ source: this.name, outcome: refused, ms: 0 }] };
    const key = req.digest ?? tagKey({ registry: req.registry, repository: req.repository, tag: req.tag ?? "" });
    if (req.kind === "blob" && req.method === "GET") return this.#blob(req, key);
    return this.#small(req, key);
  }

  #policy(req: MirrorRequest): string | undefined {
    if (this.#registries && !this.#registries.has(canonicalRegistry(req.registry))) return `registry ${req.registry} is not mirrored`;
    const reference = req.tag !== undefined
      ? formatTagReference({ registry: req.registry, repository: req.repository, tag: req.tag })
      : `${req.registry}/${req.repository}@${req.digest}`;
    const filter = this.#filters.find((f) => f.re.test(reference));
    return filter ? `filtered by ${filter.text}` : undefined;
  }

  #headerTimeoutMs(): number {
    const p90 = this.#latency.percentile(90);
    return p90 === undefined ? (this.#opts.headerTimeoutMs ?? 2000) : Math.max(2 * p90, MIN_HEADER_TIMEOUT_MS);
  }

  #hedgeDelayMs = (launched: number): number =>
    this.#latency.percentile(HEDGE_PERCENTILES[Math.min(launched, HEDGE_PERCENTILES.length) - 1] ?? 90) ?? DEFAULT_HEDGE_MS;

  #race(set: ProviderSet, signal: AbortSignal, skip: (p: Peer) => boolean, attempt: (peer: Peer, signal: AbortSignal) => Promise<AttemptOutcome<Fetched>>): Promise<RaceResult<Fetched>> {
    return raceProviders<Fetched>({
      providers: set,
      max: Math.max(1, this.#opts.resolveRetries),
      firstWaitMs: this.#opts.resolveTimeoutMs,
      nextWaitMs: this.#opts.resolveTimeoutMs,
      hedgeDelayMs: this.#hedgeDelayMs,
      skip: (p) => this.#quarantine.has(p.id) || skip(p),
      attempt,
      signal,
    });
  }

  /** Asks one peer; times the headers; maps its answer to an outcome. */
  async #ask(
    peer: Peer,
    req: MirrorRequest,
    method: "GET" | "HEAD",
    range: string | undefined,
    signal: AbortSignal,
  ): Promise<AttemptOutcome<Fetched>> {
    const started = performance.now();
    let response: PeerAnswer;
    try {
      response = await requestPeer({ peer, req, method, range, headerTimeoutMs: this.#headerTimeoutMs(), signal });
    } catch (e) {
      return { ok: false, outcome: errorMessage(e) };
    }
    this.#latency.observe(performance.now() - started);
    if (response.status === 416 && range !== undefined) return { ok: true, value: { kind: "final", response: rangeNotSatisfiable(response) } };
    try {
      return { ok: true, value: { kind: "response", response, content: readPeerContent(response, req, range !== undefined) } };
    } catch (e) {
      await response.body?.cancel();
      const notFound = e instanceof PeerAnswerError && e.notFound;
      return { ok: false, outcome: errorMessage(e), notFound };
    }
  }

  // Manifests and HEAD requests: small answers, one deadline for the whole exchange. A
  // manifest body is read whole and checked against its digest before the client sees it.
  async #small(req: MirrorRequest, key: string): Promise<MirrorResult> {
    const deadline = this.#opts.manifestDeadlineMs ?? 3000;
    const signal = AbortSignal.any([req.signal, AbortSignal.timeout(deadline)]);
    const range = req.kind === "blob" ? req.range : undefined;
    const result = await this.#race(this.#cache.get(key), signal, () => false, async (peer, s) => {
      const asked = await this.#ask(peer, req, req.method, range, s);
      if (!asked.ok || asked.value.kind === "final" || req.method === "HEAD") return asked;
      return this.#readVerified(peer, asked.value, s);
    });
    if (!result.winner) return { miss: result.attempts };
    const { peer, value } = result.winner;
    if (value.kind === "final") return { hit: value.response, source: "peer", target: peer.id };
    if (!value.content) throw new PeerAnswerError("peer answer without content");
    const headers = contentHeaders(value.content, req.kind === "blob");
    const body = req.method === "HEAD" ? null : (value.bytes ?? null);
    await value.response.body?.cancel();
    return { hit: new Response(body, { status: value.content.status, headers }), source: "peer", target: peer.id };
  }

  /**
   * Reads a whole answer (a manifest, a small blob) and checks it against its digest; a peer
   * whose bytes hash to another digest is quarantined and the attempt fails.
   */
  async #readVerified(peer: Peer, fetched: Fetched & { kind: "response" }, signal: AbortSignal): Promise<AttemptOutcome<Fetched>> {
    const { response, content } = fetched;
    if (!content || !response.body) return { ok: true, value: fetched };
    const expected = content.digest;
    if (expected === undefined) {
      await response.body.cancel();
      return { ok: false, outcome: "no Docker-Content-Digest" };
    }
    const length = content.range.end - content.range.start + 1;
    try {
      await this.#budget.acquire(length, signal);
    } catch (e) {
      await response.body.cancel();
      return { ok: false, outcome: errorMessage(e) };
    }
    try {
      const stall = AbortSignal.timeout(this.#opts.stallTimeoutMs ?? 5000);
      const bytes = await readWhole(response.body, AbortSignal.any([signal, stall]));
      const actual = digestBytes(bytes, parseDigest(expected).algorithm);
      if (actual !== expected) {
        this.#punish([peer], expected, actual);
        return { ok: false, outcome: `digest mismatch: got ${actual}` };
      }
      return { ok: true, value: { ...fetched, bytes } };
    } catch (e) {
      return { ok: false, outcome: errorMessage(e) };
    } finally {
      // The bytes go into the client's response right after; they are at most one read's worth
      // (a blob) or a manifest, and Bun tells nothing about when it has written them.
      this.#budget.release(length);
    }
  }

  async #blob(req: MirrorRequest, key: string): Promise<MirrorResult> {
    const digest = req.digest as Digest;
    if (req.range !== undefined) {
      try {
        parseRange(req.range);
      } catch (e) {
        if (!(e instanceof RangeError416)) throw e;
        const status = e.reason === "malformed" ? 400 : 416;
        return { hit: jsonError(status, "RANGE_INVALID", e.message), source: "peer" };
      }
    }
    const set = this.#cache.get(key);
    const result = await this.#race(set, req.signal, () => false, async (peer, s) => {
      const asked = await this.#ask(peer, req, "GET", req.range, s);
      if (!asked.ok || asked.value.kind === "final" || !asked.value.content) return asked;
      const c = asked.value.content;
      const small = c.range.start === 0 && c.range.end === c.size - 1 && c.size <= SMALL_BLOB_BYTES;
      return small ? this.#readVerified(peer, asked.value, s) : asked;
    });
    if (!result.winner) return { miss: result.attempts };
    const { peer, value, abort } = result.winner;
    if (value.kind === "final") return { hit: value.response, source: "peer", target: peer.id };
    const content = value.content;
    if (!content || !value.response.body) throw new PeerAnswerError("peer answer without content");
    if (value.bytes) {
      const headers = contentHeaders({ ...content, digest }, true);
      return { hit: new Response(value.bytes, { status: content.status, headers }), source: "peer", target: peer.id };
    }
    const failedBefore = result.failed;
    const whole = content.range.start === 0 && content.range.end === content.size - 1;
    const log = this.#log.child({ digest, peer: peer.id });

    const resume = async (offset: number, failed: ReadonlySet<string>, signal: AbortSignal): Promise<BlobSource | undefined> => {
      const rangeHeader = `bytes=${offset}-${content.range.end}`;
      const again = await this.#race(this.#cache.get(key), signal, (p) => failed.has(p.id) || failedBefore.has(p.id), async (p, s) => {
        const asked = await this.#ask(p, req, "GET", rangeHeader, s);
        if (!asked.ok || asked.value.kind === "final" || !asked.value.content) return asked.ok ? { ok: false, outcome: "range refused" } : asked;
        const c = asked.value.content;
        if (c.range.start !== offset || c.range.end !== content.range.end || c.size !== content.size) {
          await asked.value.response.body?.cancel();
          return { ok: false, outcome: "answered another range" };
        }
        return asked;
      });
      const w = again.winner;
      if (!w || w.value.kind === "final" || !w.value.response.body) {
        log.warn({ offset, attempts: again.attempts }, "no provider left to resume from");
        return undefined;
      }
      log.info({ offset, from: w.peer.id }, "resumed blob from another provider");
      return { peer: w.peer, body: w.value.response.body, abort: w.abort };
    };

    const body = peerBlobStream({
      digest,
      range: content.range,
      verify: whole,
      first: { peer, body: value.response.body, abort },
      resume,
      stallTimeoutMs: this.#opts.stallTimeoutMs ?? 5000,
      maxResumes: Math.max(1, this.#opts.resolveRetries),
      budget: this.#budget,
      ...(this.#opts.hashers ? { hashers: this.#opts.hashers } : {}),
      signal: req.signal,
      onResume: (from, offset, reason) => log.warn({ failed: from.id, offset, reason }, "peer failed mid-blob"),
      onMismatch: (peers, actual) => this.#punish(peers, digest, actual),
      onEnd: (bytes, complete, error) => {
        if (!complete) log.warn({ bytes, err: error }, "peer download did not complete");
      },
    });
    const headers = contentHeaders({ ...content, digest }, true);
    return { hit: new Response(body, { status: content.status, headers }), source: "peer", target: peer.id };
  }

  #punish(peers: Peer[], expected: Digest, actual: Digest): void {
    for (const p of peers) this.#quarantine.add(p.id);
    this.#log.error({ digest: expected, actual, peers: peers.map((p) => p.id) }, "peer served bytes that do not match their digest: quarantined");
  }
}

/** The headers of a content answer, as a local hit has them. */
function contentHeaders(content: PeerContent, isBlob: boolean): Headers {
  const h = new Headers({
    "Content-Type": content.contentType,
    "Content-Length": String(content.range.end - content.range.start + 1),
  });
  if (content.digest !== undefined) h.set("Docker-Content-Digest", content.digest);
  if (isBlob) h.set("Accept-Ranges", "bytes");
  if (content.status === 206) h.set("Content-Range", contentRange(content.range, content.size));
  return h;
}

function rangeNotSatisfiable(peerAnswer: PeerAnswer): Response {
  void peerAnswer.body?.cancel();
  const res = jsonError(416, "RANGE_INVALID", "range not satisfiable");
  const cr = peerAnswer.headers.get("Content-Range");
  if (cr !== null) res.headers.set("Content-Range", cr);
  return res;
}

function jsonError(status: number, code: "RANGE_INVALID", message: string): Response {
  return new Response(JSON.stringify(errorBody(code, message)), { status, headers: { "Content-Type": "application/json; charset=utf-8" } });
}

/** `https://docker.io/` or `docker.io` -> `docker.io` (Spegel takes URLs, kagami hosts). */
function registryHost(entry: string): string {
  return canonicalRegistry(entry.trim().replace(/^[a-z]+:\/\//i, "").replace(/\/+$/, ""));
}

/** The subset of Config the peer mirror reads. */
export type PeerMirrorConfig = Pick<Config, "mirrorResolveTimeout" | "mirrorResolveRetries" | "mirroredRegistries" | "registryFilters">;

/** A PeerMirror from Config; throws InvalidError on a bad --registry-filters regex. */
export function peerMirrorFromConfig(config: PeerMirrorConfig, router: Router, log: Logger, deps: { budget?: Budget; hashers?: Hashers } = {}): PeerMirror {
  const opts: PeerMirrorOptions = {
    router,
    log,
    resolveTimeoutMs: config.mirrorResolveTimeout,
    resolveRetries: config.mirrorResolveRetries,
    mirroredRegistries: config.mirroredRegistries,
    registryFilters: config.registryFilters,
  };
  if (deps.budget) opts.budget = deps.budget;
  if (deps.hashers) opts.hashers = deps.hashers;
  return new PeerMirror(opts);
}

