// The Store interface: where content lives. LocalStore (on disk), ContainerdStore
// (containerd's content store) and MemoryStore (tests) implement it; one conformance
// suite (test/store-conformance.ts) runs against each.
import type { ByteRange, Descriptor, Digest, TagReference } from "../oci/index.ts";

/** Bytes of a digest, as a file (served by sendfile, no userspace buffer) or a stream. */
export type Content =
  | {
      kind: "file";
      path: string;
      /** Size of the whole blob. */
      size: number;
      /** The bytes asked for, inclusive; the whole blob when no range was asked. */
      range: ByteRange;
    }
  | {
      kind: "stream";
      body: ReadableStream<Uint8Array>;
      size: number;
      range: ByteRange;
    };

/** A tag a store holds: its full reference and the descriptor of its root manifest. */
export interface TaggedDescriptor {
  reference: TagReference;
  descriptor: Descriptor;
}

export type StoreEvent =
  | { type: "tag-added"; reference: TagReference; descriptor: Descriptor }
  | { type: "tag-removed"; reference: TagReference }
  | { type: "digest-added"; digest: Digest }
  | { type: "digest-removed"; digest: Digest }
  /** The event source broke and came back: consumers resynchronise from list(). */
  | { type: "resync" };

export interface Store {
  /** Short name for logs and metrics: "local", "containerd", "memory". */
  readonly name: string;

  /** The root descriptor a tag points to. Throws NotFoundError. */
  resolve(reference: TagReference): Promise<Descriptor>;

  /**
   * The descriptor of held content: its size and media type (a manifest's own media type;
   * `application/octet-stream` when the store does not know). Throws NotFoundError.
   */
  describe(digest: Digest): Promise<Descriptor>;

  /**
   * Opens a digest's bytes, optionally a byte range already resolved against its size.
   * Throws NotFoundError.
   */
  open(digest: Digest, range?: ByteRange): Promise<Content>;

  /** Every tag held. */
  tags(): AsyncIterable<TaggedDescriptor>;

  /** Every digest held. */
  digests(): AsyncIterable<Digest>;

  /**
   * Additions and removals from now on, until the signal aborts. A store whose event
   * source breaks emits `resync` when it is back.
   */
  watch(signal: AbortSignal): AsyncIterable<StoreEvent>;

  /** false while the backing service is unreachable (readiness). */
  healthy(): boolean;

  close(): Promise<void>;
}

/** A store kagami can write to: import, peers' and upstream bytes land here. */
export interface WritableStore extends Store {
  /**
   * Writes content, verifying its digest (and size) before it becomes visible. Resolves
   * with the stored descriptor. Throws DigestMismatchError or InvalidError; nothing
   * partial stays behind.
   */
  ingest(descriptor: Descriptor, body: ReadableStream<Uint8Array> | Uint8Array): Promise<Descriptor>;

  /** Records (or moves) a tag. The root descriptor must already be held. */
  tag(reference: TagReference, descriptor: Descriptor): Promise<void>;

  untag(reference: TagReference): Promise<void>;

  /** Removes a digest's bytes. Tags pointing at it are not touched. */
  delete(digest: Digest): Promise<void>;
}
