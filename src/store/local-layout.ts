// Where LocalStore keeps things under its data dir. Every path is derived from a parsed
// digest or from a hash of a validated reference, never from raw request input.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { formatTagReference, parseDigest, type Digest, type TagReference } from "../oci/index.ts";

export class LocalLayout {
  readonly blobs: string;
  readonly ingest: string;
  readonly media: string;
  readonly tags: string;

  constructor(readonly root: string) {
    this.blobs = join(root, "blobs");
    this.ingest = join(root, "ingest");
    this.media = join(root, "media");
    this.tags = join(root, "tags");
  }

  blobPath(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.blobs, algorithm, hex);
  }

  mediaPath(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.media, algorithm, hex);
  }

  /** Tags are files named by the sha256 of the full reference string. */
  tagPath(reference: TagReference): string {
    return join(this.tags, `${tagFileName(reference)}.json`);
  }

  tempPath(): string {
    return join(this.ingest, `${Date.now().toString(36)}-${crypto.randomUUID()}.tmp`);
  }

  dirs(): string[] {
    return [join(this.blobs, "sha256"), join(this.blobs, "sha512"), this.ingest, join(this.media, "sha256"), join(this.media, "sha512"), this.tags];
  }
}

export function tagFileName(reference: TagReference): string {
  return createHash("sha256").update(formatTagReference(reference)).digest("hex");
}
