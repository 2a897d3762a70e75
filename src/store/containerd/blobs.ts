// Bytes of containerd's content: straight from its content directory when kagami can read
// it (so blobs go out by sendfile), else streamed over Content/Read one bounded chunk at a
// time (when the directory is not mounted into kagami's container).
import { constants } from "node:fs";
import { access, open, stat } from "node:fs/promises";
import { join } from "node:path";
import { parseDigest, type ByteRange, type Digest } from "../../oci/index.ts";
import { READ_CHUNK_BYTES, type ContainerdClient } from "./client.ts";

/** containerd's content directory when introspection does not say (its default root). */
export const DEFAULT_CONTENT_PATH = "/var/lib/containerd/io.containerd.content.v1.content";

export class BlobAccess {
  constructor(
    private readonly client: ContainerdClient,
    /** Set later when containerd was not up to say where it is. */
    public contentPath: string,
  ) {}

  /** <content-path>/blobs/<algorithm>/<hex>; the digest is validated, so the path stays inside. */
  path(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.contentPath, "blobs", algorithm, hex);
  }

  /** The blob's file when it is readable and complete (its size is the one containerd records). */
  async readableFile(digest: Digest, size: number): Promise<string | undefined> {
    const path = this.path(digest);
    try {
      await access(path, constants.R_OK);
      const st = await stat(path);
      return st.isFile() && st.size === size ? path : undefined;
    } catch {
      return undefined;
    }
  }

  /** A whole small blob (a manifest), from the file or over gRPC. */
  async readAll(digest: Digest, size: number): Promise<Uint8Array> {
    const file = await this.readableFile(digest, size);
    if (file) return new Uint8Array(await Bun.file(file).arrayBuffer());
    const out = new Uint8Array(size);
    for (let at = 0; at < size; at += READ_CHUNK_BYTES) {
      out.set(await this.client.readChunk(digest, at, Math.min(READ_CHUNK_BYTES, size - at)), at);
    }
    return out;
  }

  /** The first byte of a blob, to tell JSON documents from layers without reading them. */
  async firstByte(digest: Digest, size: number): Promise<number | undefined> {
    if (size === 0) return undefined;
    const file = await this.readableFile(digest, size);
    if (file) {
      const fh = await open(file, "r");
      try {
        const buf = new Uint8Array(1);
        await fh.read(buf, 0, 1, 0);
        return buf[0];
      } finally {
        await fh.close();
      }
    }
    return (await this.client.readChunk(digest, 0, 1))[0];
  }

  /**
   * A pull stream over Content/Read: each pull asks containerd for the next chunk of at
   * most READ_CHUNK_BYTES, so one stream never holds more than one chunk.
   */
  stream(digest: Digest, range: ByteRange): ReadableStream<Uint8Array> {
    let at = range.start;
    const end = range.end + 1;
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          if (at >= end) {
            controller.close();
            return;
          }
          const n = Math.min(READ_CHUNK_BYTES, end - at);
          const chunk = await this.client.readChunk(digest, at, n);
          at += n;
          controller.enqueue(chunk);
          if (at >= end) controller.close();
        },
      },
      { highWaterMark: 0 },
    );
  }
}
