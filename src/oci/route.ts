// The pull routes of the distribution API, parsed from a URL path. Pure: the registry
// module maps the result to handlers.
import { DigestError, parseDigest, type Digest } from "./digest.ts";
import { RegistryError } from "./errors.ts";
import { MAX_NAME_LENGTH, validateRepository, validateTag } from "./reference.ts";

export type PullRoute =
  | { kind: "base" }
  | { kind: "manifest"; name: string; tag: string }
  | { kind: "manifest"; name: string; digest: Digest }
  | { kind: "blob"; name: string; digest: Digest };

/**
 * Parses `/v2/`, `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.
 * The path must be the raw (still percent-encoded) path: an encoded '/' or '.' is not
 * part of any valid name, so any '%' is refused rather than decoded.
 */
export function parsePullRoute(path: string): PullRoute {
  if (path === "/v2" || path === "/v2/") return { kind: "base" };
  if (!path.startsWith("/v2/")) throw new RegistryError("NAME_UNKNOWN", "not a registry API path", 404);
  if (path.length > MAX_NAME_LENGTH + 300) throw new RegistryError("NAME_INVALID", "path is too long", 400);
  if (/[%\\\0]/.test(path)) throw new RegistryError("NAME_INVALID", "encoded or control characters in path", 400);
  const rest = path.slice(4);
  const m = rest.match(/^(.+)\/(manifests|blobs)\/([^/]+)$/);
  if (!m) throw new RegistryError("NAME_UNKNOWN", "unknown registry API path", 404);
  const [, name = "", endpoint, reference = ""] = m;
  try {
    validateRepository(name);
  } catch (e) {
    throw new RegistryError("NAME_INVALID", (e as Error).message, 400);
  }
  if (endpoint === "blobs") return { kind: "blob", name, digest: digestOrThrow(reference) };
  if (reference.includes(":")) return { kind: "manifest", name, digest: digestOrThrow(reference) };
  try {
    validateTag(reference);
  } catch (e) {
    throw new RegistryError("MANIFEST_UNKNOWN", (e as Error).message, 404);
  }
  return { kind: "manifest", name, tag: reference };
}

function digestOrThrow(reference: string): Digest {
  try {
    return parseDigest(reference).digest;
  } catch (e) {
    const err = e as DigestError;
    throw new RegistryError(err.unsupported ? "UNSUPPORTED" : "DIGEST_INVALID", err.message, 400);
  }
}
