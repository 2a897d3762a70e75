// Descriptors and the manifest documents that reference them.
import { parseDigest, type Digest } from "./digest.ts";
import {
  isImageManifestMediaType,
  isIndexMediaType,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  OCI_INDEX,
  OCI_MANIFEST,
} from "./media-types.ts";

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export class ManifestError extends Error {
  override readonly name = "ManifestError";
}

/** Largest manifest kagami parses (the distribution registry's own limit is 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Validates an untrusted descriptor object (from a manifest or an OCI layout index). */
export function parseDescriptor(value: unknown): Descriptor {
  if (typeof value !== "object" || value === null) throw new ManifestError("descriptor is not an object");
  const v = value as Record<string, unknown>;
  if (typeof v.mediaType !== "string" || v.mediaType.length === 0 || v.mediaType.length > 255) {
    throw new ManifestError("descriptor has no valid mediaType");
  }
  if (typeof v.digest !== "string") throw new ManifestError("descriptor has no digest");
  const digest = parseDigest(v.digest).digest;
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw new ManifestError(`descriptor ${digest} has no valid size`);
  }
  const d: Descriptor = { mediaType: v.mediaType, digest, size: v.size };
  const p = v.platform as Record<string, unknown> | undefined;
  if (p && typeof p.architecture === "string" && typeof p.os === "string") {
    d.platform = { architecture: p.architecture, os: p.os };
    if (typeof p.variant === "string") d.platform.variant = p.variant;
  }
  if (v.annotations && typeof v.annotations === "object") {
    d.annotations = Object.fromEntries(
      Object.entries(v.annotations as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === "string"),
    );
  }
  return d;
}

/** What a manifest document says about itself and what it points to. */
export interface ManifestContent {
  mediaType: string;
  /** Index: the manifests; image manifest: config then layers (and subject-free blobs). */
  children: Descriptor[];
}

/**
 * Parses a manifest or index. `declared` is the media type it was stored or served under;
 * the document's own mediaType wins, and a document without one is recognised by shape.
 */
export function parseManifest(bytes: Uint8Array, declared?: string): ManifestContent {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new ManifestError("manifest is larger than 4 MiB");
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new ManifestError("manifest is not valid UTF-8 JSON");
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new ManifestError("manifest is not a JSON object");
  const m = doc as Record<string, unknown>;
  const mediaType = detectMediaType(m, declared);
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(m.manifests)) throw new ManifestError("index has no manifests array");
    return { mediaType, children: m.manifests.map(parseDescriptor) };
  }
  if (isImageManifestMediaType(mediaType)) {
    if (!Array.isArray(m.layers)) throw new ManifestError("manifest has no layers array");
    return { mediaType, children: [parseDescriptor(m.config), ...m.layers.map(parseDescriptor)] };
  }
  throw new ManifestError(`unsupported manifest media type ${JSON.stringify(mediaType)}`);
}

function detectMediaType(m: Record<string, unknown>, declared?: string): string {
  if (typeof m.mediaType === "string" && m.mediaType.length > 0) return m.mediaType;
  if (declared && (isIndexMediaType(declared) || isImageManifestMediaType(declared))) return declared;
  if (Array.isArray(m.manifests)) return m.schemaVersion === 2 && declared === DOCKER_MANIFEST_LIST ? DOCKER_MANIFEST_LIST : OCI_INDEX;
  if (Array.isArray(m.layers)) return declared === DOCKER_MANIFEST ? DOCKER_MANIFEST : OCI_MANIFEST;
  throw new ManifestError("document is neither a manifest nor an index");
}
