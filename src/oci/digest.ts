// Digest grammar of the OCI image spec, restricted to the algorithms kagami can verify.
// algorithm ":" encoded, with sha256 = 64 and sha512 = 128 lowercase hex characters.

export type DigestAlgorithm = "sha256" | "sha512";

/** A validated digest string such as `sha256:<64 hex>`. */
export type Digest = string & { readonly __brand: "Digest" };

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
  digest: Digest;
}

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const ALGORITHM_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*$/;
const ENCODED_GRAMMAR = /^[a-zA-Z0-9=_-]+$/;
const LOWER_HEX = /^[0-9a-f]+$/;

export class DigestError extends Error {
  override readonly name = "DigestError";
  /** true when the algorithm is well-formed but not one kagami verifies. */
  constructor(message: string, readonly unsupported = false) {
    super(message);
  }
}

/** Parses and validates a digest; throws DigestError with a reason a client can act on. */
export function parseDigest(input: string): ParsedDigest {
  const colon = input.indexOf(":");
  if (colon <= 0 || colon === input.length - 1) {
    throw new DigestError(`digest must be <algorithm>:<hex>, got ${quote(input)}`);
  }
  const algorithm = input.slice(0, colon);
  const hex = input.slice(colon + 1);
  if (!ALGORITHM_GRAMMAR.test(algorithm) || !ENCODED_GRAMMAR.test(hex)) {
    throw new DigestError(`malformed digest ${quote(input)}`);
  }
  if (algorithm !== "sha256" && algorithm !== "sha512") {
    throw new DigestError(`unsupported digest algorithm ${quote(algorithm)}`, true);
  }
  const want = HEX_LENGTH[algorithm];
  if (hex.length !== want) {
    throw new DigestError(`${algorithm} digest needs ${want} hex characters, got ${hex.length}`);
  }
  if (!LOWER_HEX.test(hex)) {
    throw new DigestError(`${algorithm} digest must be lowercase hex`);
  }
  return { algorithm, hex, digest: input as Digest };
}

export function isDigest(input: string): input is Digest {
  try {
    parseDigest(input);
    return true;
  } catch {
    return false;
  }
}

/** Builds a digest from an algorithm and hex produced by a hash function. */
export function digestOf(algorithm: DigestAlgorithm, hex: string): Digest {
  return parseDigest(`${algorithm}:${hex}`).digest;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}
