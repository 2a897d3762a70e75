// Upstream credentials from a Docker config.json (`--registry-credentials`): its `auths`
// section, keyed by registry host, each with `auth` (base64 user:password), or `username` +
// `password`, or an `identitytoken` (an OAuth2 refresh token). The file is re-read when it
// changes, so a rotated secret (a Kubernetes Secret volume) needs no restart.
// Credential helpers (`credsStore`, `credHelpers`) are not run: kagami never executes programs.
import { readFileSync, statSync } from "node:fs";
import { canonicalRegistry } from "../oci/index.ts";

export type Credential = { kind: "basic"; username: string; password: string } | { kind: "identity-token"; token: string };

export interface CredentialSource {
  /** The credential for a registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`), if any. */
  get(registry: string): Credential | undefined;
}

export const NO_CREDENTIALS: CredentialSource = { get: () => undefined };

/** Largest config.json read: a real one is a few KiB. */
const MAX_FILE_BYTES = 1 << 20;
/** How often the file's mtime is checked on lookups. */
const RECHECK_MS = 5000;

export class CredentialsFileError extends Error {
  override readonly name = "CredentialsFileError";
}

/** `https://index.docker.io/v1/` -> `docker.io`, `ghcr.io/` -> `ghcr.io`. */
export function credentialKey(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//i, "").split("/")[0] ?? "";
  return canonicalRegistry(host.toLowerCase());
}

/** Parses a config.json's auths; entries that are unusable are skipped, a malformed file throws. */
export function parseDockerConfig(text: string): Map<string, Credential> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CredentialsFileError(`not JSON: ${(e as Error).message}`);
  }
  const out = new Map<string, Credential>();
  const auths = (doc as { auths?: unknown } | null)?.auths;
  if (auths === undefined) return out;
  if (typeof auths !== "object" || auths === null) throw new CredentialsFileError("auths is not an object");
  for (const [key, value] of Object.entries(auths as Record<string, unknown>)) {
    const credential = parseEntry(value);
    if (credential) out.set(credentialKey(key), credential);
  }
  return out;
}

function parseEntry(value: unknown): Credential | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.identitytoken === "string" && v.identitytoken !== "") return { kind: "identity-token", token: v.identitytoken };
  if (typeof v.username === "string" && typeof v.password === "string" && v.username !== "") {
    return { kind: "basic", username: v.username, password: v.password };
  }
  if (typeof v.auth === "string" && v.auth !== "") {
    const decoded = Buffer.from(v.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) return { kind: "basic", username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  return undefined;
}

/** Credentials from a file, re-read when its mtime or size changes. */
export class DockerConfigCredentials implements CredentialSource {
  private entries = new Map<string, Credential>();
  private version = "";
  private checkedAt = 0;

  /** Throws CredentialsFileError when the file cannot be read or parsed at start. */
  constructor(
    readonly path: string,
    private readonly onReloadError: (e: Error) => void = () => {},
  ) {
    this.reload(true);
  }

  get(registry: string): Credential | undefined {
    if (Date.now() - this.checkedAt > RECHECK_MS) this.reload(false);
    return this.entries.get(credentialKey(registry));
  }

  get size(): number {
    return this.entries.size;
  }

  private reload(strict: boolean): void {
    this.checkedAt = Date.now();
    try {
      const s = statSync(this.path);
      const version = `${s.mtimeMs}:${s.size}`;
      if (version === this.version) return;
      if (s.size > MAX_FILE_BYTES) throw new CredentialsFileError(`${this.path} is larger than 1 MiB`);
      this.entries = parseDockerConfig(readFileSync(this.path, "utf8"));
      this.version = version;
    } catch (e) {
      const err = e instanceof CredentialsFileError ? e : new CredentialsFileError(`${this.path}: ${(e as Error).message}`);
      if (strict) throw err;
      // Keep the last good credentials: a file being rewritten must not log everyone out.
      this.onReloadError(err);
    }
  }
}
