// DHT keys must be byte-identical to Spegel's (go-cid: CIDv1, raw codec, sha2-256 of the key
// string) or kagami and Spegel nodes never find each other's content.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { digestKey, keyCid, keyCidString, tagKey } from "../../src/routing/keys.ts";
import type { Digest } from "../../src/oci/index.ts";

// An independent encoder: multibase 'b' + RFC 4648 base32 (lowercase, no padding) of
// <cid version 1><codec 0x55 raw><multihash 0x12 sha2-256><length 0x20><digest>.
function referenceCid(key: string): string {
  const digest = createHash("sha256").update(Buffer.from(key, "utf8")).digest();
  const bytes = [0x01, 0x55, 0x12, 0x20, ...digest];
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const b of bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(buffer << (5 - bits)) & 31];
  return `b${out}`;
}

const LAYER = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" as Digest;

describe("DHT keys", () => {
  test("tag key vector: docker.io/library/nginx:1.27", () => {
    const key = tagKey({ registry: "docker.io", repository: "library/nginx", tag: "1.27" });
    expect(key).toBe("docker.io/library/nginx:1.27");
    // Fixed literals computed with Python (hashlib + base64.b32encode), a third implementation.
    expect(keyCidString(key)).toBe("bafkreidjmwqqyfjjblilfhfh7umgnxqykbaiwpfrl6yruo53xqx53mkyxu");
    expect(keyCidString(key)).toBe(referenceCid(key));
  });

  test("digest key vector: the hash of the string, not of the digest bytes", () => {
    expect(digestKey(LAYER)).toBe(LAYER);
    expect(keyCidString(LAYER)).toBe(referenceCid(LAYER));
    expect(keyCidString(LAYER)).toBe("bafkreiapyxhnvoq7f7km2n2zirmtpzdspi3tmxz5gxra4rvguqcnxcq77q");
    const hashOfHex = createHash("sha256").update(Buffer.from(LAYER.slice(7), "hex")).digest();
    expect(Buffer.from(keyCid(LAYER).multihash.digest).equals(hashOfHex)).toBe(false);
  });

  test("CID structure: version 1, raw codec, sha2-256 multihash", () => {
    const cid = keyCid("docker.io/library/nginx:1.27");
    expect(cid.version).toBe(1);
    expect(cid.code).toBe(0x55);
    expect(cid.multihash.code).toBe(0x12);
    expect(cid.multihash.size).toBe(32);
  });

  test("keys of many strings agree with the reference encoder", () => {
    for (const key of ["", "a", "ghcr.io/spegel-org/spegel:v0.7.4", "sha512:" + "ab".repeat(64), "registry.k8s.io/pause:3.10", "日本/鏡:1"]) {
      expect(keyCidString(key)).toBe(referenceCid(key));
    }
  });
});
