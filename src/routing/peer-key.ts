// The node's Ed25519 peer key, persisted as <data-dir>/private.key in PKCS#8 PEM like Spegel,
// so the peer id survives restarts (and a Spegel node's key file can be reused).
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPairFromSeed } from "@libp2p/crypto/keys";
import type { Ed25519PrivateKey } from "@libp2p/interface";

export const PEER_KEY_FILE = "private.key";

export class PeerKeyError extends Error {
  override readonly name = "PeerKeyError";
}

/** Loads <dataDir>/private.key, creating it (mode 0600) when absent. */
export async function loadOrCreatePeerKey(dataDir: string): Promise<{ key: Ed25519PrivateKey; created: boolean }> {
  const path = join(dataDir, PEER_KEY_FILE);
  let pem: string | undefined;
  try {
    pem = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new PeerKeyError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (pem !== undefined) return { key: await generateKeyPairFromSeed("Ed25519", seedOfPem(pem, path)), created: false };

  const { privateKey } = generateKeyPairSync("ed25519");
  const fresh = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  mkdirSync(dataDir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, fresh, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return { key: await generateKeyPairFromSeed("Ed25519", seedOfPem(fresh, path)), created: true };
}

function seedOfPem(pem: string, path: string): Uint8Array {
  let jwk: { d?: string };
  try {
    const key = createPrivateKey({ key: pem, format: "pem" });
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`not an Ed25519 key (${key.asymmetricKeyType})`);
    jwk = key.export({ format: "jwk" });
  } catch (e) {
    throw new PeerKeyError(`${path} is not a PKCS#8 PEM Ed25519 private key: ${(e as Error).message}`);
  }
  if (typeof jwk.d !== "string") throw new PeerKeyError(`${path}: key has no private part`);
  const seed = new Uint8Array(Buffer.from(jwk.d, "base64url"));
  if (seed.length !== 32) throw new PeerKeyError(`${path}: Ed25519 seed is ${seed.length} bytes, expected 32`);
  return seed;
}
