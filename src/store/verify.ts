// Streaming digest verification shared by every writer.
import { createHash, type Hash } from "node:crypto";
import { parseDigest, type Digest, type DigestAlgorithm } from "../oci/index.ts";

export class DigestVerifier {
  private readonly hash: Hash;
  private readonly algorithm: DigestAlgorithm;
  bytes = 0;

  constructor(readonly expected: Digest) {
    this.algorithm = parseDigest(expected).algorithm;
    this.hash = createHash(this.algorithm);
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  /** The digest of everything seen; call once. */
  digest(): Digest {
    return `${this.algorithm}:${this.hash.digest("hex")}` as Digest;
  }
}

export function digestBytes(bytes: Uint8Array, algorithm: DigestAlgorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}` as Digest;
}
