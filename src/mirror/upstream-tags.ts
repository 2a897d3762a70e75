// Freshness of tags cached from upstream. A tag is a moving name: once it is older than
// --tag-ttl, the next pull asks the upstream (a HEAD, no body) where it points now, follows it
// if it moved, and serves the cached tag when the upstream cannot say. Tags kagami did not
// fetch itself (kagami import) are the operator's and are never rechecked.
import { Counter, type Registry } from "prom-client";
import { errorMessage, NotFoundError } from "../errors.ts";
import { formatTagReference, type Descriptor, type TagReference } from "../oci/index.ts";
import type { Logger } from "../observability/log.ts";
import type { LocalStore } from "../store/local.ts";
import { SingleFlight } from "./singleflight.ts";
import type { UpstreamManifests } from "./upstream-manifest.ts";

/** What a recheck needs of the upstream: where a tag points now, and that manifest stored. */
export type TagResolver = Pick<UpstreamManifests, "resolveTag" | "ensure">;

/** A recheck waits at most this long for the upstream, so a dead uplink costs a pull little. */
const CHECK_TIMEOUT_MS = 5000;
/** After a failed recheck, the cached tag is served without asking for this long. */
const RETRY_AFTER_MS = 30_000;
/** Most tags whose failed recheck is remembered, and most rechecks at once. */
const MAX_TRACKED = 1024;

const OUTCOMES = ["fresh", "confirmed", "moved", "failed", "not-ours"] as const;
/** fresh: younger than the TTL; confirmed / moved: upstream answered; failed: it did not (now or just before); not-ours: imported. */
export type TagCheckOutcome = (typeof OUTCOMES)[number];

export interface UpstreamTagsOptions {
  store: LocalStore;
  manifests: TagResolver;
  logger: Logger;
  /** --tag-ttl, ms. */
  ttlMs: number;
  /** Header wait of an upstream request, ms (--upstream-timeout). */
  upstreamTimeoutMs: number;
  now?: () => number;
}

export class UpstreamTags {
  private readonly checks = new SingleFlight<string, Descriptor>(MAX_TRACKED);
  /** Tag -> time before which a failed recheck is not retried. */
  private readonly failedUntil = new Map<string, number>();
  private readonly now: () => number;
  readonly counts: Record<TagCheckOutcome, number> = { fresh: 0, confirmed: 0, moved: 0, failed: 0, "not-ours": 0 };

  constructor(private readonly opts: UpstreamTagsOptions) {
    this.now = opts.now ?? Date.now;
  }

  /**
   * The root a held tag is served as: upstream's new one when the tag moved, else the held one
   * (fresh, not cached from upstream, or upstream unreachable). Throws NotFoundError when the
   * store does not hold the tag. Reads the tag's record once: this is the local store's tag
   * resolution, not a second look after it.
   */
  async resolve(reference: TagReference): Promise<Descriptor> {
    const key = formatTagReference(reference);
    const held = await this.opts.store.tagRecord(reference);
    if (!held) throw new NotFoundError(`tag ${key} not found`);
    if (held.checkedAt === undefined) return this.count("not-ours", held.descriptor);
    const now = this.now();
    if (now - held.checkedAt < this.opts.ttlMs) return this.count("fresh", held.descriptor);
    // Upstream failed a moment ago: serve the cached tag without waiting on it again.
    if ((this.failedUntil.get(key) ?? 0) > now) return this.count("failed", held.descriptor);
    try {
      return await this.checks.run(key, () => this.recheck(reference, key, held.descriptor));
    } catch (e) {
      this.opts.logger.warn({ ref: key, err: errorMessage(e) }, "tag not rechecked upstream; serving the cached one");
      return held.descriptor;
    }
  }

  private async recheck(reference: TagReference, key: string, held: Descriptor): Promise<Descriptor> {
    const src = { registry: reference.registry, repository: reference.repository };
    // Shared by every puller of this tag, so no single client's signal may cancel it.
    const signal = AbortSignal.timeout(Math.min(CHECK_TIMEOUT_MS, this.opts.upstreamTimeoutMs));
    try {
      const now = await this.opts.manifests.resolveTag(src, reference.tag, signal);
      const moved = now.digest !== held.digest;
      const descriptor = moved ? await this.opts.manifests.ensure(src, now.digest) : held;
      await this.opts.store.tag(reference, descriptor, this.now());
      this.failedUntil.delete(key);
      if (moved) this.opts.logger.info({ ref: key, from: held.digest, digest: descriptor.digest }, "tag moved upstream; following it");
      return this.count(moved ? "moved" : "confirmed", descriptor);
    } catch (e) {
      this.remember(key);
      const why = e instanceof NotFoundError ? "not found upstream" : errorMessage(e);
      this.opts.logger.warn({ ref: key, digest: held.digest, err: why }, "tag not rechecked upstream; serving the cached one");
      return this.count("failed", held);
    }
  }

  private remember(key: string): void {
    this.failedUntil.delete(key);
    if (this.failedUntil.size >= MAX_TRACKED) {
      const oldest = this.failedUntil.keys().next().value;
      if (oldest !== undefined) this.failedUntil.delete(oldest);
    }
    this.failedUntil.set(key, this.now() + RETRY_AFTER_MS);
  }

  private count(outcome: TagCheckOutcome, served: Descriptor): Descriptor {
    this.counts[outcome]++;
    return served;
  }
}

/** kagami_upstream_tag_checks_total{outcome}: how pulls of cached tags were answered. */
export function registerTagCheckMetrics(tags: UpstreamTags, registry: Registry): void {
  new Counter({
    name: "kagami_upstream_tag_checks_total",
    help: "Pulls of a tag held in kagami's store, by outcome: fresh (within --tag-ttl), confirmed or moved (upstream asked), failed (cached served), not-ours (imported)",
    labelNames: ["outcome"],
    registers: [registry],
    collect() {
      this.reset();
      for (const outcome of OUTCOMES) this.inc({ outcome }, tags.counts[outcome]);
    },
  });
}
