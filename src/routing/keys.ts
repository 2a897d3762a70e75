// The DHT keys of held content, Spegel-compatible: `sha256:<hex>` for every held descriptor
// and `<registry>/<repository>:<tag>` for a tag. The DHT key is the CIDv1 (codec raw, 0x55)
// of the sha2-256 of the key's UTF-8 string: the hash of the string, not of the digest bytes,
// so a tag and a digest are keyed the same way.
import { createHash } from "node:crypto";
import { CID } from "multiformats/cid";
import * as Digest from "multiformats/hashes/digest";
import { formatTagReference, type Digest as OciDigest, type TagReference } from "../oci/index.ts";

const RAW_CODEC = 0x55;
const SHA2_256_CODE = 0x12;

export function digestKey(digest: OciDigest): string {
  return digest;
}

export function tagKey(reference: TagReference): string {
  return formatTagReference(reference);
}

/** The DHT content id of a key. */
export function keyCid(key: string): CID {
  const hash = createHash("sha256").update(key, "utf8").digest();
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256_CODE, new Uint8Array(hash)));
}

/** Base32 string form of keyCid (what go-cid's String() prints): `bafkrei...`. */
export function keyCidString(key: string): string {
  return keyCid(key).toString();
}
