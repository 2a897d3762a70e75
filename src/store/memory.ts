// MemoryStore: a WritableStore in memory, for unit tests of logic that needs a store.
import { DigestMismatchError, InvalidError, NotFoundError } from "../errors.ts";
import { formatTagReference, isManifestMediaType, OCTET_STREAM, type ByteRange, type Descriptor, type Digest, type TagReference } from "../oci/index.ts";
import { EventHub } from "./events.ts";
import type { Content, StoreEvent, TaggedDescriptor, WritableStore } from "./store.ts";
import { DigestVerifier } from "./verify.ts";

export class MemoryStore implements WritableStore {
  readonly name = "memory";
  private readonly blobs = new Map<Digest, { mediaType: string; bytes: Uint8Array }>();
  private readonly tagMap = new Map<string, TaggedDescriptor>();
  private readonly hub = new EventHub();

  async resolve(reference: TagReference): Promise<Descriptor> {
    const t = this.tagMap.get(formatTagReference(reference));
    if (!t) throw new NotFoundError(`tag ${formatTagReference(reference)} not found`);
    return t.descriptor;
  }

  async describe(digest: Digest): Promise<Descriptor> {
    const b = this.blobs.get(digest);
    if (!b) throw new NotFoundError(`blob ${digest} not found`);
    return { mediaType: b.mediaType, digest, size: b.bytes.byteLength };
  }

  async open(digest: Digest, range?: ByteRange): Promise<Content> {
    const b = this.blobs.get(digest);
    if (!b) throw new NotFoundError(`blob ${digest} not found`);
    const size = b.bytes.byteLength;
    const r = range ?? { start: 0, end: size - 1 };
    const slice = b.bytes.slice(r.start, r.end + 1);
    return { kind: "stream", body: new Blob([slice]).stream(), size, range: r };
  }

  async *tags(): AsyncIterable<TaggedDescriptor> {
    yield* [...this.tagMap.values()];
  }

  async *digests(): AsyncIterable<Digest> {
    yield* [...this.blobs.keys()];
  }

  watch(signal: AbortSignal): AsyncIterable<StoreEvent> {
    return this.hub.subscribe(signal);
  }

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {}

  async ingest(descriptor: Descriptor, body: ReadableStream<Uint8Array> | Uint8Array): Promise<Descriptor> {
    const bytes = body instanceof Uint8Array ? body : new Uint8Array(await new Response(body).arrayBuffer());
    if (bytes.byteLength !== descriptor.size) throw new InvalidError(`${descriptor.digest}: got ${bytes.byteLength} bytes, declared ${descriptor.size}`);
    const v = new DigestVerifier(descriptor.digest);
    v.update(bytes);
    const actual = v.digest();
    if (actual !== descriptor.digest) throw new DigestMismatchError(`content hashes to ${actual}, expected ${descriptor.digest}`);
    const isNew = !this.blobs.has(descriptor.digest);
    this.blobs.set(descriptor.digest, { mediaType: isManifestMediaType(descriptor.mediaType) ? descriptor.mediaType : OCTET_STREAM, bytes });
    if (isNew) this.hub.publish({ type: "digest-added", digest: descriptor.digest });
    return this.describe(descriptor.digest);
  }

  async tag(reference: TagReference, descriptor: Descriptor): Promise<void> {
    await this.describe(descriptor.digest);
    this.tagMap.set(formatTagReference(reference), { reference, descriptor });
    this.hub.publish({ type: "tag-added", reference, descriptor });
  }

  async untag(reference: TagReference): Promise<void> {
    if (this.tagMap.delete(formatTagReference(reference))) this.hub.publish({ type: "tag-removed", reference });
  }

  async delete(digest: Digest): Promise<void> {
    if (this.blobs.delete(digest)) this.hub.publish({ type: "digest-removed", digest });
  }
}
