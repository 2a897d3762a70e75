// The content this node is fetching right now, as a read-only Store: a blob being written
// by a growing ingest can be served from its first byte (to other clients of this node and
// to peers asking with X-Spegel-Mirrored), following the writer. Placed after the local
// store in the registry's store list; once an ingest is published the local store answers.
// It lists no tags and no digests and emits no events, so the advertise sync ignores it:
// in-progress content is advertised by its fetcher (only when it fetches from upstream).
import { NotFoundError } from "../errors.ts";
import type { ByteBudget } from "../governor/budget.ts";
import { OCTET_STREAM, type ByteRange, type Descriptor, type Digest, type TagReference } from "../oci/index.ts";
import type { LocalStore } from "./local.ts";
import type { GrowingIngest } from "./local-ingest.ts";
import type { Content, Store, StoreEvent, TaggedDescriptor } from "./store.ts";

export class IngestingStore implements Store {
  readonly name = "ingesting";
  private readonly ingests = new Map<Digest, GrowingIngest>();

  constructor(
    private readonly local: LocalStore,
    private readonly budget: ByteBudget,
  ) {}

  /** Makes an ingest servable until it ends; the caller bounds how many run at once. */
  add(ingest: GrowingIngest): void {
    this.ingests.set(ingest.descriptor.digest, ingest);
  }

  remove(ingest: GrowingIngest): void {
    if (this.ingests.get(ingest.descriptor.digest) === ingest) this.ingests.delete(ingest.descriptor.digest);
  }

  get(digest: Digest): GrowingIngest | undefined {
    const ingest = this.ingests.get(digest);
    return ingest && ingest.status !== "failed" ? ingest : undefined;
  }

  get size(): number {
    return this.ingests.size;
  }

  async resolve(reference: TagReference): Promise<Descriptor> {
    throw new NotFoundError(`tag ${reference.tag} is not being fetched`);
  }

  async describe(digest: Digest): Promise<Descriptor> {
    const ingest = this.get(digest);
    if (!ingest) throw new NotFoundError(`${digest} is not being fetched`);
    return { mediaType: ingest.descriptor.mediaType || OCTET_STREAM, digest, size: ingest.descriptor.size };
  }

  /** A stream that follows the writer; once the ingest is published, the store's file. */
  async open(digest: Digest, range?: ByteRange): Promise<Content> {
    const ingest = this.get(digest);
    if (!ingest) throw new NotFoundError(`${digest} is not being fetched`);
    const size = ingest.descriptor.size;
    const r = range ?? { start: 0, end: size - 1 };
    if (ingest.published()) return this.local.open(digest, range);
    try {
      return { kind: "stream", body: ingest.reader(r, this.budget), size, range: r };
    } catch (e) {
      // Finished between the check and the attach: the file is in the store now.
      if (ingest.published()) return this.local.open(digest, range);
      throw new NotFoundError(`${digest}: ${(e as Error).message}`);
    }
  }

  async *tags(): AsyncIterable<TaggedDescriptor> {}

  async *digests(): AsyncIterable<Digest> {}

  /** Declared bytes of the ingests being written (the disk they are about to take). */
  inProgressBytes(): number {
    let n = 0;
    for (const ingest of this.ingests.values()) if (ingest.status === "writing") n += ingest.descriptor.size;
    return n;
  }

  async *watch(signal: AbortSignal): AsyncIterable<StoreEvent> {
    if (signal.aborted) return;
    await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  }

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {}
}
