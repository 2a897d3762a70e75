// LocalStore: kagami's own content-addressed store on disk.
//   <data-dir>/blobs/<alg>/<hex>   content, visible only after its digest was verified
//   <data-dir>/media/<alg>/<hex>   media type of manifests and indexes
//   <data-dir>/tags/<sha256(ref)>.json  {reference, descriptor, checkedAt?}
//   <data-dir>/ingest/             temp files; rename(2) publishes atomically
// Safe under concurrent readers and writers in this and other processes (kagami import
// while kagami serve runs): readers only ever see complete, verified files.
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { DigestMismatchError, InvalidError, NotFoundError } from "../errors.ts";
import {
  formatTagReference,
  isManifestMediaType,
  OCTET_STREAM,
  parseDescriptor,
  parseDigest,
  parseTagReference,
  type ByteRange,
  type Descriptor,
  type Digest,
  type TagReference,
} from "../oci/index.ts";
import { LocalLayout } from "./local-layout.ts";
import { LocalWatcher } from "./local-watch.ts";
import type { Content, StoreEvent, TaggedDescriptor, WritableStore } from "./store.ts";
import { DigestVerifier } from "./verify.ts";

/** A tag record; checkedAt (ms since the epoch) marks a tag cached from upstream, last confirmed then. */
export interface LocalTag extends TaggedDescriptor {
  checkedAt?: number;
}

export interface LocalStoreOptions {
  /** How often watchers rescan when the filesystem sends no notification. */
  rescanMs?: number;
}

export class LocalStore implements WritableStore {
  readonly name = "local";
  readonly layout: LocalLayout;
  private readonly watcher: LocalWatcher;

  private constructor(root: string, opts: LocalStoreOptions) {
    this.layout = new LocalLayout(root);
    this.watcher = new LocalWatcher(this, opts.rescanMs ?? 2000);
  }

  static async open(root: string, opts: LocalStoreOptions = {}): Promise<LocalStore> {
    const store = new LocalStore(root, opts);
    for (const dir of store.layout.dirs()) await mkdir(dir, { recursive: true, mode: 0o755 });
    await store.removeStaleIngests();
    return store;
  }

  async resolve(reference: TagReference): Promise<Descriptor> {
    const tagged = await this.tagRecord(reference);
    if (!tagged) throw new NotFoundError(`tag ${formatTagReference(reference)} not found`);
    return tagged.descriptor;
  }

  async describe(digest: Digest): Promise<Descriptor> {
    const size = await this.sizeOf(digest);
    let mediaType = OCTET_STREAM;
    try {
      mediaType = (await readFile(this.layout.mediaPath(digest), "utf8")).trim() || OCTET_STREAM;
    } catch {
      // no media record: a plain blob
    }
    return { mediaType, digest, size };
  }

  async open(digest: Digest, range?: ByteRange): Promise<Content> {
    const size = await this.sizeOf(digest);
    return { kind: "file", path: this.layout.blobPath(digest), size, range: range ?? { start: 0, end: size - 1 } };
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      await this.sizeOf(digest);
      return true;
    } catch {
      return false;
    }
  }

  async *tags(): AsyncIterable<TaggedDescriptor> {
    for (const name of await readdir(this.layout.tags)) {
      if (!name.endsWith(".json")) continue;
      const tagged = await this.readTag(`${this.layout.tags}/${name}`);
      if (tagged) yield tagged;
    }
  }

  async *digests(): AsyncIterable<Digest> {
    for (const algorithm of ["sha256", "sha512"]) {
      for (const hex of await readdir(`${this.layout.blobs}/${algorithm}`)) {
        try {
          yield parseDigest(`${algorithm}:${hex}`).digest;
        } catch {
          // a foreign file in the blob dir is not content
        }
      }
    }
  }

  watch(signal: AbortSignal): AsyncIterable<StoreEvent> {
    return this.watcher.subscribe(signal);
  }

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.watcher.close();
  }

  async ingest(descriptor: Descriptor, body: ReadableStream<Uint8Array> | Uint8Array): Promise<Descriptor> {
    const { digest, size } = descriptor;
    parseDigest(digest);
    const temp = this.layout.tempPath();
    const file = await open(temp, "wx", 0o644);
    const verifier = new DigestVerifier(digest);
    try {
      const write = async (chunk: Uint8Array) => {
        if (verifier.bytes + chunk.byteLength > size) throw new InvalidError(`${digest}: more than the declared ${size} bytes`);
        verifier.update(chunk);
        let off = 0;
        while (off < chunk.byteLength) off += (await file.write(chunk, off, chunk.byteLength - off)).bytesWritten;
      };
      if (body instanceof Uint8Array) await write(body);
      else for await (const chunk of body) await write(chunk);
      if (verifier.bytes !== size) throw new InvalidError(`${digest}: got ${verifier.bytes} bytes, declared ${size}`);
      const actual = verifier.digest();
      if (actual !== digest) throw new DigestMismatchError(`content hashes to ${actual}, expected ${digest}`);
      await file.sync();
      await file.close();
      if (isManifestMediaType(descriptor.mediaType)) await this.writeAtomic(this.layout.mediaPath(digest), descriptor.mediaType);
      await rename(temp, this.layout.blobPath(digest));
    } catch (e) {
      await file.close().catch(() => {});
      await rm(temp, { force: true });
      throw e;
    }
    this.watcher.poke();
    return this.describe(digest);
  }

  /**
   * Publishes a temp file that a writer created at layout.tempPath() and whose bytes it
   * verified against the descriptor (the growing ingest of store/local-ingest.ts).
   */
  async adopt(temp: string, descriptor: Descriptor): Promise<Descriptor> {
    if (dirname(temp) !== this.layout.ingest) throw new InvalidError("adopt takes only files of the ingest directory");
    const { digest } = descriptor;
    if (isManifestMediaType(descriptor.mediaType)) await this.writeAtomic(this.layout.mediaPath(digest), descriptor.mediaType);
    await rename(temp, this.layout.blobPath(digest));
    this.watcher.poke();
    return this.describe(digest);
  }

  /** Records (or moves) a tag; checkedAt: when upstream last said the tag points there. */
  async tag(reference: TagReference, descriptor: Descriptor, checkedAt?: number): Promise<void> {
    const held = await this.describe(descriptor.digest);
    if (held.size !== descriptor.size) throw new InvalidError(`${descriptor.digest}: size ${descriptor.size} differs from the held ${held.size}`);
    const record = {
      reference: formatTagReference(reference),
      descriptor: { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size },
      ...(checkedAt === undefined ? {} : { checkedAt }),
    };
    await this.writeAtomic(this.layout.tagPath(reference), JSON.stringify(record));
    this.watcher.poke();
  }

  async untag(reference: TagReference): Promise<void> {
    await rm(this.layout.tagPath(reference), { force: true });
    this.watcher.poke();
  }

  async delete(digest: Digest): Promise<void> {
    await rm(this.layout.blobPath(digest), { force: true });
    await rm(this.layout.mediaPath(digest), { force: true });
    this.watcher.poke();
  }

  private async sizeOf(digest: Digest): Promise<number> {
    try {
      const s = await stat(this.layout.blobPath(digest));
      if (s.isFile()) return s.size;
    } catch {
      // fall through
    }
    throw new NotFoundError(`blob ${digest} not found`);
  }

  /** The record of a tag held, or undefined. */
  async tagRecord(reference: TagReference): Promise<LocalTag | undefined> {
    const tagged = await this.readTag(this.layout.tagPath(reference));
    return tagged && formatTagReference(tagged.reference) === formatTagReference(reference) ? tagged : undefined;
  }

  /** Reads a tag record; a missing, torn or foreign file reads as absent. */
  async readTag(path: string): Promise<LocalTag | undefined> {
    try {
      const record = JSON.parse(await readFile(path, "utf8")) as { reference?: unknown; descriptor?: unknown; checkedAt?: unknown };
      if (typeof record.reference !== "string") return undefined;
      const tagged: LocalTag = { reference: parseTagReference(record.reference), descriptor: parseDescriptor(record.descriptor) };
      if (typeof record.checkedAt === "number" && Number.isFinite(record.checkedAt)) tagged.checkedAt = record.checkedAt;
      return tagged;
    } catch {
      return undefined;
    }
  }

  private async writeAtomic(path: string, text: string): Promise<void> {
    const temp = this.layout.tempPath();
    const file = await open(temp, "wx", 0o644);
    try {
      await file.writeFile(text);
      await file.sync();
      await file.close();
      await rename(temp, path);
    } catch (e) {
      await file.close().catch(() => {});
      await unlink(temp).catch(() => {});
      throw e;
    }
  }

  /** Temp files older than an hour belong to writers that died. */
  private async removeStaleIngests(): Promise<void> {
    const cutoff = Date.now() - 3_600_000;
    for (const name of await readdir(this.layout.ingest)) {
      const path = `${this.layout.ingest}/${name}`;
      const s = await stat(path).catch(() => undefined);
      if (s && s.mtimeMs < cutoff) await rm(path, { force: true });
    }
  }
}
