// ContainerdStore: the Store over what a node's containerd holds, read through its gRPC
// API in one namespace (k8s.io for the kubelet). Tags come from the image service, digests
// from walking each image's held content, bytes from containerd's content directory
// (sendfile) or Content/Read, changes from its event stream.
import { InvalidError, NotFoundError, UnavailableError } from "../../errors.ts";
import {
  MAX_MANIFEST_BYTES,
  OCTET_STREAM,
  parseDigest,
  parseManifest,
  type ByteRange,
  type Descriptor,
  type Digest,
  type TagReference,
} from "../../oci/index.ts";
import { silentLogger, type Logger } from "../../observability/log.ts";
import { EventHub } from "../events.ts";
import type { Content, Store, StoreEvent, TaggedDescriptor } from "../store.ts";
import { BlobAccess, DEFAULT_CONTENT_PATH } from "./blobs.ts";
import { ContainerdClient, type Envelope, type ImageRecord } from "./client.ts";
import { EventFeed, type FeedOptions } from "./feed.ts";
import { imageNameOfTag, tagOfImageName } from "./names.ts";
import { decodeContentEvent, decodeImageEvent } from "./proto.ts";
import { MediaTypes, toDescriptor, walkImage, type WalkSource } from "./walk.ts";
import { Withdrawals } from "./withdrawals.ts";

export interface ContainerdStoreOptions {
  socket: string;
  namespace: string;
  /** containerd's content directory; default: what introspection reports, else containerd's default. */
  contentPath?: string;
  logger?: Logger;
  callTimeoutMs?: number;
  feed?: FeedOptions;
  /**
   * Start (unhealthy) when containerd does not answer yet, and connect when it does, instead
   * of failing: a node's kagami may start before its containerd.
   */
  waitForContainerd?: boolean;
}

/** true when a containerd answers on the socket within the timeout (for --store auto). */
export async function containerdAnswers(socket: string, timeoutMs = 1_000): Promise<boolean> {
  const client = new ContainerdClient(socket, "default", { callTimeoutMs: timeoutMs });
  try {
    await client.version();
    return true;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

export class ContainerdStore implements Store {
  readonly name = "containerd";
  private readonly hub = new EventHub();
  private readonly mediaTypes = new MediaTypes();
  private readonly withdrawals: Withdrawals;
  private readonly feed: EventFeed;
  private isHealthy: boolean;
  /** The content directory is still to be asked of containerd (it was down at open). */
  private discoverContentPath: boolean;

  private constructor(
    private readonly client: ContainerdClient,
    private readonly blobs: BlobAccess,
    private readonly log: Logger,
    feedOptions: FeedOptions,
    state: { healthy: boolean; discoverContentPath: boolean },
  ) {
    this.isHealthy = state.healthy;
    this.discoverContentPath = state.discoverContentPath;
    this.withdrawals = new Withdrawals(
      (digest) => this.held(digest),
      (digest) => this.hub.publish({ type: "digest-removed", digest }),
    );
    this.feed = new EventFeed(
      client,
      {
        onEnvelope: (e) => this.onEnvelope(e),
        onResync: () => this.hub.publish({ type: "resync" }),
        onHealth: (ok) => this.setHealthy(ok),
      },
      log,
      feedOptions,
    );
  }

  /** Connects and finds the content directory. Throws UnavailableError when containerd does not answer. */
  static async open(opts: ContainerdStoreOptions): Promise<ContainerdStore> {
    const log = (opts.logger ?? silentLogger()).child({ store: "containerd" });
    const client = new ContainerdClient(opts.socket, opts.namespace, { callTimeoutMs: opts.callTimeoutMs });
    let version;
    try {
      version = await client.version();
    } catch (e) {
      if (!opts.waitForContainerd) {
        client.close();
        throw new UnavailableError(`containerd does not answer on ${opts.socket}: ${(e as Error).message}`);
      }
      log.warn({ socket: opts.socket, err: (e as Error).message }, "containerd does not answer yet; waiting for it");
      const blobs = new BlobAccess(client, opts.contentPath ?? DEFAULT_CONTENT_PATH);
      return new ContainerdStore(client, blobs, log, opts.feed ?? {}, { healthy: false, discoverContentPath: opts.contentPath === undefined });
    }
    const contentPath = opts.contentPath ?? (await client.contentRoot().catch(() => undefined)) ?? DEFAULT_CONTENT_PATH;
    log.info({ socket: opts.socket, namespace: opts.namespace, version: version.version, contentPath }, "using containerd");
    return new ContainerdStore(client, new BlobAccess(client, contentPath), log, opts.feed ?? {}, { healthy: true, discoverContentPath: false });
  }

  get contentPath(): string {
    return this.blobs.contentPath;
  }

  async resolve(reference: TagReference): Promise<Descriptor> {
    const image = await this.client.getImage(imageNameOfTag(reference));
    const root = toDescriptor(image.target);
    if (!root || (await this.held(root.digest)) === undefined) {
      throw new NotFoundError(`the root of ${image.name} is not held`);
    }
    this.mediaTypes.set(root.digest, root.mediaType);
    return root;
  }

  async describe(digest: Digest): Promise<Descriptor> {
    const info = await this.client.info(digest);
    return { mediaType: await this.mediaTypeOf(digest, info.size), digest, size: info.size };
  }

  async open(digest: Digest, range?: ByteRange): Promise<Content> {
    const { size } = await this.client.info(digest);
    const r = range ?? { start: 0, end: size - 1 };
    if (r.start < 0 || r.end >= size || (size > 0 && r.end < r.start)) {
      throw new InvalidError(`range ${r.start}-${r.end} is outside ${digest} (${size} bytes)`);
    }
    const path = await this.blobs.readableFile(digest, size);
    if (path) return { kind: "file", path, size, range: r };
    return { kind: "stream", body: this.blobs.stream(digest, r), size, range: r };
  }

  async *tags(): AsyncIterable<TaggedDescriptor> {
    const [images, held] = await Promise.all([this.client.listImages(), this.heldSizes()]);
    for (const image of images) {
      const reference = tagOfImageName(image.name);
      const root = toDescriptor(image.target);
      if (!reference || !root || !held.has(root.digest)) continue;
      this.mediaTypes.set(root.digest, root.mediaType);
      yield { reference, descriptor: root };
    }
  }

  async *digests(): AsyncIterable<Digest> {
    const [images, held] = await Promise.all([this.client.listImages(), this.heldSizes()]);
    const source: WalkSource = { sizeOf: async (d) => held.get(d), read: (d, size) => this.blobs.readAll(d, size) };
    const yielded = new Set<Digest>();
    for (const image of images) {
      const found = await this.walk(image, source);
      for (const digest of found) {
        if (yielded.has(digest)) continue;
        yielded.add(digest);
        yield digest;
      }
    }
  }

  watch(signal: AbortSignal): AsyncIterable<StoreEvent> {
    return this.hub.subscribe(signal);
  }

  healthy(): boolean {
    return this.isHealthy;
  }

  async close(): Promise<void> {
    this.withdrawals.stop();
    await this.feed.stop();
    this.client.close();
  }

  private setHealthy(ok: boolean): void {
    if (ok !== this.isHealthy) this.log.info({ healthy: ok }, ok ? "containerd answers" : "containerd is unreachable");
    this.isHealthy = ok;
    if (ok && this.discoverContentPath) {
      this.discoverContentPath = false;
      this.client
        .contentRoot()
        .then((root) => {
          if (root) this.blobs.contentPath = root;
          this.log.info({ contentPath: this.blobs.contentPath }, "using containerd's content directory");
        })
        .catch(() => (this.discoverContentPath = true));
    }
  }

  /** Size of held content, undefined when absent from the namespace. */
  private async held(digest: Digest): Promise<number | undefined> {
    try {
      return (await this.client.info(digest)).size;
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  private async heldSizes(): Promise<Map<Digest, number>> {
    const out = new Map<Digest, number>();
    for (const info of await this.client.listContent()) {
      const d = toDescriptor({ mediaType: "", digest: info.digest, size: info.size });
      if (d) out.set(d.digest, d.size);
    }
    return out;
  }

  /** The held digests of one image; remembers them so a delete can withdraw what GC removes. */
  private async walk(image: ImageRecord, source: WalkSource): Promise<Digest[]> {
    const root = toDescriptor(image.target);
    if (!root) return [];
    const found: Digest[] = [];
    await walkImage(root, source, (d) => {
      this.mediaTypes.set(d.digest, d.mediaType);
      found.push(d.digest);
    });
    this.withdrawals.remember(image.name, found);
    return found;
  }

  /** Learnt from walks; otherwise a small JSON blob is read and recognised as a manifest or not. */
  private async mediaTypeOf(digest: Digest, size: number): Promise<string> {
    const known = this.mediaTypes.get(digest);
    if (known) return known;
    let mediaType = OCTET_STREAM;
    if (size > 0 && size <= MAX_MANIFEST_BYTES && (await this.blobs.firstByte(digest, size)) === 0x7b /* { */) {
      try {
        mediaType = parseManifest(await this.blobs.readAll(digest, size)).mediaType;
      } catch {
        // JSON that is not a manifest (an image config): served as plain bytes.
      }
    }
    this.mediaTypes.set(digest, mediaType);
    return mediaType;
  }

  private async onEnvelope(envelope: Envelope): Promise<void> {
    const payload = envelope.event?.value ?? new Uint8Array();
    switch (envelope.topic) {
      case "/images/create":
      case "/images/update":
        return this.onImageAdded(decodeImageEvent(payload).name);
      case "/images/delete": {
        const { name } = decodeImageEvent(payload);
        const reference = tagOfImageName(name);
        if (reference) this.hub.publish({ type: "tag-removed", reference });
        this.withdrawals.imageDeleted(name);
        return;
      }
      case "/content/create": {
        const digest = validDigest(decodeContentEvent(payload).digest);
        if (digest) this.hub.publish({ type: "digest-added", digest });
        return;
      }
      case "/content/delete": {
        const digest = validDigest(decodeContentEvent(payload).digest);
        if (digest) this.hub.publish({ type: "digest-removed", digest });
        return;
      }
    }
  }

  /** Digests first, then the tag: a consumer never sees a tag before its content. */
  private async onImageAdded(name: string): Promise<void> {
    let image: ImageRecord;
    try {
      image = await this.client.getImage(name);
    } catch (e) {
      if (e instanceof NotFoundError) return;
      throw e;
    }
    const source: WalkSource = { sizeOf: (d) => this.held(d), read: (d, size) => this.blobs.readAll(d, size) };
    const found = await this.walk(image, source);
    for (const digest of found) this.hub.publish({ type: "digest-added", digest });
    const reference = tagOfImageName(name);
    const root = toDescriptor(image.target);
    if (reference && root && found.includes(root.digest)) {
      this.hub.publish({ type: "tag-added", reference, descriptor: root });
    }
  }
}

function validDigest(s: string): Digest | undefined {
  try {
    return parseDigest(s).digest;
  } catch {
    return undefined;
  }
}
