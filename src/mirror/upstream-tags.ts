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
  private readonly checks = new SingleFlight<string, Descriptor | undefined>(MAX_TRACKED);
  /** Tag -> time before which a failed recheck is not retried. */
  private readonly failedUntil = new Map<string, number>();
  private readonly now: () => number;
  readonly counts: Record<TagCheckOutcome, number> = { fresh: 0, confirmed: 0, moved: 0, failed: 0, "not-ours": 0 };

  constructor(private readonly opts: UpstreamTagsOptions) {
    this.now = opts.now ?? Date.now;
  }

  /**
   * The descriptor a held tag should be served as: a newer one when upstream moved it,
   * undefined when the held one stands (fresh, not cached from upstream, or upstream unreachable).
   */
  async revalidate(reference: TagReference): Promise<Descriptor | undefined> {
    const held = await this.opts.store.tagRecord(reference);
    if (!held || held.checkedAt === undefined) return this.count("not-ours");
    const key = formatTagReference(reference);
    const now = this.now();
    if (now - held.checkedAt < this.opts.ttlMs) return this.count("fresh");
    // Upstream failed a moment ago: serve the cached tag without waiting on it again.
    if ((this.failedUntil.get(key) ?? 0) > now) return this.count("failed");
    try {
      return await this.checks.run(key, () => this.recheck(reference, held.descriptor));
    } catch (e) {
      this.opts.logger.warn({ ref: key, err: errorMessage(e) }, "tag not rechecked upstream; serving the cached one");
      return undefined;
    }
  }

  private async recheck(reference: TagReference, held: Descriptor): Promise<Descriptor | undefined> {
    const key = formatTagReference(reference);
    const src = { registry: reference.registry, repository: reference.repository };
    // Shared by every puller of this tag, so no single client's signal may cancel it.
    const signal = AbortSignal.timeout(Math.min(CHECK_TIMEOUT_MS, this.opts.upstreamTimeoutMs));
    try {
      const now = await this.opts.manifests.resolveTag(src, reference.tag, signal);
      if (now.digest === held.digest) {
        await this.opts.store.tag(reference, held, this.now());
        this.failedUntil.delete(key);
        this.count("confirmed");
        return undefined;
      }
      const descriptor = await this.opts.manifests.ensure(src, now.digest);
      await this.opts.store.tag(reference, descriptor, this.now());
      this.failedUntil.delete(key);
      this.count("moved");
      this.opts.logger.info({ ref: key, from: held.digest, digest: descriptor.digest }, "tag moved upstream; following it");
      return descriptor;
    } catch (e) {
      this.remember(key);
      this.count("failed");
      const why = e instanceof NotFoundError ? "not found upstream" : errorMessage(e);
      this.opts.logger.warn({ ref: key, digest: held.digest, err: why }, "tag not rechecked upstream; serving the cached one");
      return undefined;
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

  private count(outcome: TagCheckOutcome): undefined {
    this.counts[outcome]++;
    return undefined;
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
