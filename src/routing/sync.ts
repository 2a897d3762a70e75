// Keeps what the router advertises equal to what the store holds: every held digest, and
// every tag whose manifest closure is held (closure.ts). Store events apply at once; a full
// pass over the store runs at start, on `resync`, and every --advertise-interval, where it
// also announces every key again (provider records on other nodes expire).
import type { Logger } from "../observability/log.ts";
import { errorMessage } from "../errors.ts";
import { formatTagReference, type Digest, type TagReference } from "../oci/index.ts";
import { NotFoundError } from "../errors.ts";
import type { Content, Store, StoreEvent } from "../store/store.ts";
import { holdsClosure, type ContentReader } from "./closure.ts";
import { digestKey, tagKey } from "./keys.ts";
import type { Router } from "./router.ts";

/** Store events queued while work runs; past it they collapse into one full pass. */
const MAX_PENDING_EVENTS = 10_000;

export interface SyncOptions {
  /** Every store the registry serves from (containerd and kagami's own): a key is held while any holds it. */
  stores: readonly Store[];
  router: Router;
  /** --advertise-interval: full pass + reprovide. */
  intervalMs: number;
  log: Logger;
  /** Delay that batches the tag re-checks a burst of digest events causes. */
  recheckDelayMs?: number;
}

export class AdvertiseSync {
  readonly #opts: SyncOptions;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  /** Keys we advertise now. */
  readonly #advertised = new Set<string>();
  /** Tags held (advertised or waiting for their closure), by key. */
  readonly #tags = new Map<string, TagReference>();
  #chain: Promise<void> = Promise.resolve();
  readonly #union: UnionReader;
  #recheckTimer: ReturnType<typeof setTimeout> | undefined;
  #intervalTimer: ReturnType<typeof setInterval> | undefined;
  #loop: Promise<void> | undefined;
  #pending: StoreEvent[] = [];
  /** The periodic reprovide, outside the work chain so events are not held up behind it. */
  #reprovide: Promise<void> | undefined;

  constructor(opts: SyncOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: "sync" });
    this.#union = new UnionReader(opts.stores);
  }

  /** Keys currently advertised (debug page, metrics, tests). */
  get advertised(): ReadonlySet<string> {
    return this.#advertised;
  }

  /** Subscribes to the store, then runs the first full pass. */
  start(): void {
    if (this.#loop) return;
    this.#loop = Promise.all(this.#opts.stores.map((store) => this.#consume(store.watch(this.#stop.signal)))).then(() => {});
    this.#schedule(() => this.#fullPass());
    this.#intervalTimer = setInterval(() => this.#schedule(() => this.#fullPass()), this.#opts.intervalMs);
    this.#intervalTimer.unref?.();
  }

  /** Resolves when all queued work is done (tests; shutdown). */
  async idle(): Promise<void> {
    await this.#chain;
    await this.#reprovide;
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    clearInterval(this.#intervalTimer);
    clearTimeout(this.#recheckTimer);
    await this.#loop;
    await this.#chain;
    await this.#reprovide;
  }

  async #consume(events: AsyncIterable<StoreEvent>): Promise<void> {
    try {
      for await (const event of events) {
        // A burst (an image's layers landing) becomes one batch of provides, not one each.
        if (this.#pending.length >= MAX_PENDING_EVENTS) this.#pending = [{ type: "resync" }];
        else this.#pending.push(event);
        if (this.#pending.length === 1) this.#schedule(() => this.#drain());
      }
    } catch (e) {
      if (!this.#stop.signal.aborted) this.#log.error({ err: errorMessage(e) }, "store events stopped; relying on periodic passes");
    }
  }

  async #drain(): Promise<void> {
    const events = this.#pending;
    this.#pending = [];
    if (events.some((e) => e.type === "resync")) return this.#fullPass();
    const added = events.flatMap((e) => (e.type === "digest-added" ? [digestKey(e.digest)] : []));
    const removed: string[] = [];
    for (const e of events) if (e.type === "digest-removed" && !(await this.#union.has(e.digest))) removed.push(digestKey(e.digest));
    await this.#withdraw(removed);
    await this.#advertise(added);
    for (const event of events) await this.#apply(event);
    // New digests may complete a waiting tag's closure; removed ones may break an advertised one's.
    if (added.length > 0 || removed.length > 0) this.#recheckSoon();
  }

  // One piece of work at a time: events and passes never interleave.
  #schedule(work: () => Promise<void>): void {
    this.#chain = this.#chain.then(async () => {
      if (this.#stop.signal.aborted) return;
      try {
        await work();
      } catch (e) {
        this.#log.warn({ err: errorMessage(e) }, "advertising failed; the next pass retries");
      }
    });
  }

  async #apply(event: StoreEvent): Promise<void> {
    if (event.type === "tag-added") {
      const key = tagKey(event.reference);
      this.#tags.set(key, event.reference);
      if (await holdsClosure(this.#union, event.descriptor)) await this.#advertise([key]);
      else await this.#withdraw([key]); // a tag moved to content not (yet) held
    } else if (event.type === "tag-removed") {
      const key = tagKey(event.reference);
      if (await this.#tagComplete(event.reference)) return; // another store still holds it
      this.#tags.delete(key);
      await this.#withdraw([key]);
    }
  }

  #recheckSoon(): void {
    if (this.#recheckTimer !== undefined || this.#tags.size === 0) return;
    this.#recheckTimer = setTimeout(() => {
      this.#recheckTimer = undefined;
      this.#schedule(() => this.#recheckTags());
    }, this.#opts.recheckDelayMs ?? 200);
  }

  async #recheckTags(): Promise<void> {
    const add: string[] = [];
    const remove: string[] = [];
    for (const [key, reference] of this.#tags) {
      const ok = await this.#tagComplete(reference);
      if (ok && !this.#advertised.has(key)) add.push(key);
      if (!ok && this.#advertised.has(key)) remove.push(key);
    }
    await this.#withdraw(remove);
    await this.#advertise(add);
  }

  /** Whether any store resolves the tag to a root whose closure is held. */
  async #tagComplete(reference: TagReference): Promise<boolean> {
    for (const store of this.#opts.stores) {
      try {
        if (await holdsClosure(this.#union, await store.resolve(reference))) return true;
      } catch {
        // not in this store
      }
    }
    return false;
  }

  async #fullPass(): Promise<void> {
    const held = new Set<Digest>();
    for (const store of this.#opts.stores) for await (const digest of store.digests()) held.add(digest);
    const want = new Set<string>([...held].map(digestKey));
    this.#tags.clear();
    let tags = 0;
    for (const store of this.#opts.stores) for await (const { reference, descriptor } of store.tags()) {
      const key = tagKey(reference);
      if (want.has(key)) continue;
      this.#tags.set(key, reference);
      if (await holdsClosure(this.#union, descriptor, held)) {
        want.add(key);
        tags++;
      } else this.#log.debug({ reference: formatTagReference(reference) }, "tag not advertised: its manifest closure is not held");
    }
    await this.#withdraw([...this.#advertised].filter((k) => !want.has(k)));
    for (const key of want) this.#advertised.add(key);
    this.#log.info({ digests: held.size, tags }, "advertising held content");
    // Every key again, not only new ones: this is the periodic reprovide. A reprovide still
    // running (a large store on a slow network) is not doubled.
    if (this.#reprovide) return;
    this.#reprovide = this.#opts.router
      .advertise([...want], this.#stop.signal)
      .catch((e) => this.#log.warn({ err: errorMessage(e) }, "reprovide failed"))
      .finally(() => (this.#reprovide = undefined));
  }

  async #advertise(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    for (const key of keys) this.#advertised.add(key);
    await this.#opts.router.advertise(keys, this.#stop.signal);
  }

  async #withdraw(keys: string[]): Promise<void> {
    const present = keys.filter((k) => this.#advertised.has(k));
    if (present.length === 0) return;
    for (const key of present) this.#advertised.delete(key);
    await this.#opts.router.withdraw(present);
  }
}

/** Starts advertising a store's content through a router; stop() on shutdown. */
export function startSync(opts: SyncOptions): AdvertiseSync {
  const sync = new AdvertiseSync(opts);
  sync.start();
  return sync;
}

/** Several stores read as one: a manifest in containerd and its layer in kagami's store still make a closure. */
class UnionReader implements ContentReader {
  constructor(readonly stores: readonly Store[]) {}

  async has(digest: Digest): Promise<boolean> {
    try {
      await this.describe(digest);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  async describe(digest: Digest) {
    return this.#first((s) => s.describe(digest));
  }

  async open(digest: Digest): Promise<Content> {
    return this.#first((s) => s.open(digest));
  }

  async #first<T>(op: (s: Store) => Promise<T>): Promise<T> {
    let last: unknown = new NotFoundError("no store");
    for (const store of this.stores) {
      try {
        return await op(store);
      } catch (e) {
        last = e;
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
    throw last;
  }
}
