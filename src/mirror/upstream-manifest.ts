// Manifests from upstream: a tag is resolved with a HEAD (the digest comes back in
// Docker-Content-Digest, without the body); the manifest itself is fetched by digest once
// per node, verified, bounded in size, and written into the local store, which then serves it.
import { NotFoundError } from "../errors.ts";
import type { ByteBudget } from "../governor/budget.ts";
import {
  isManifestMediaType,
  MANIFEST_MEDIA_TYPES,
  MAX_MANIFEST_BYTES,
  parseDigest,
  parseManifest,
  type Descriptor,
  type Digest,
} from "../oci/index.ts";
import type { LocalStore } from "../store/local.ts";
import { digestBytes } from "../store/verify.ts";
import { SingleFlight } from "./singleflight.ts";
import { UpstreamError, type UpstreamClient } from "./upstream-client.ts";

/** Every manifest type kagami stores, so the upstream never converts (schema 1) or picks a platform. */
export const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(", ");

export interface ManifestSource {
  registry: string;
  repository: string;
}

export class UpstreamManifests {
  private readonly flights: SingleFlight<Digest, Descriptor>;

  constructor(
    private readonly client: UpstreamClient,
    private readonly store: LocalStore,
    private readonly budget: ByteBudget,
    maxInflight: number,
    /** Bound of a whole manifest GET: manifests are small. */
    private readonly timeoutMs: number,
  ) {
    this.flights = new SingleFlight(maxInflight);
  }

  /**
   * The descriptor a tag points to upstream now. Falls back to a GET (hashing the body)
   * when the registry's HEAD names no digest. Throws NotFoundError or UpstreamError.
   */
  async resolveTag(src: ManifestSource, tag: string, signal: AbortSignal): Promise<Descriptor> {
    const res = await this.client.request({ ...src, path: `manifests/${tag}`, method: "HEAD", headers: { Accept: MANIFEST_ACCEPT }, signal });
    await res.body?.cancel();
    if (res.status === 404) throw new NotFoundError(`${src.registry}/${src.repository}:${tag} not found upstream`);
    if (res.status !== 200) throw new UpstreamError(`${src.registry} answered ${res.status} for tag ${tag}`, res.status);
    const said = res.headers.get("Docker-Content-Digest");
    const size = Number(res.headers.get("Content-Length") ?? NaN);
    const mediaType = mediaTypeOf(res.headers.get("Content-Type"));
    if (said && Number.isSafeInteger(size) && mediaType) {
      try {
        return { mediaType, digest: parseDigest(said).digest, size };
      } catch {
        // a malformed digest header: resolve by content instead
      }
    }
    return this.fetchByTag(src, tag, signal);
  }

  /** The manifest's descriptor once it is in the local store (fetched once per node). */
  ensure(src: ManifestSource, digest: Digest): Promise<Descriptor> {
    return this.flights.run(digest, async () => {
      try {
        const held = await this.store.describe(digest);
        if (isManifestMediaType(held.mediaType)) return held;
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
      // The fetch serves every waiter, so no single client's signal may cancel it.
      const { bytes, mediaType } = await this.get(src, digest, new AbortController().signal);
      const actual = digestBytes(bytes, parseDigest(digest).algorithm);
      if (actual !== digest) throw new UpstreamError(`${src.registry} served manifest ${digest} hashing to ${actual}`);
      return this.store.ingest({ mediaType, digest, size: bytes.byteLength }, bytes);
    });
  }

  private async fetchByTag(src: ManifestSource, tag: string, signal: AbortSignal): Promise<Descriptor> {
    const { bytes, mediaType } = await this.get(src, tag, signal);
    const digest = digestBytes(bytes);
    await this.store.ingest({ mediaType, digest, size: bytes.byteLength }, bytes);
    return { mediaType, digest, size: bytes.byteLength };
  }

  /** GETs a manifest body, at most MAX_MANIFEST_BYTES, held under the budget while read. */
  private async get(src: ManifestSource, reference: string, callerSignal: AbortSignal): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const signal = AbortSignal.any([callerSignal, AbortSignal.timeout(this.timeoutMs)]);
    const res = await this.client.request({ ...src, path: `manifests/${reference}`, method: "GET", headers: { Accept: MANIFEST_ACCEPT }, signal });
    if (res.status === 404) {
      await res.body?.cancel();
      throw new NotFoundError(`${src.registry}/${src.repository} has no manifest ${reference}`);
    }
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      throw new UpstreamError(`${src.registry} answered ${res.status} for manifest ${reference}`, res.status);
    }
    const declared = Number(res.headers.get("Content-Length") ?? NaN);
    if (declared > MAX_MANIFEST_BYTES) {
      await res.body.cancel();
      throw new UpstreamError(`manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    const reserve = Number.isSafeInteger(declared) && declared >= 0 ? declared : MAX_MANIFEST_BYTES;
    const held = await this.budget.acquire(reserve, signal);
    try {
      const bytes = await readAtMost(res.body, MAX_MANIFEST_BYTES);
      const headerType = mediaTypeOf(res.headers.get("Content-Type"));
      // The document's own mediaType wins; a registry may send application/json.
      const mediaType = headerType ?? parseManifest(bytes).mediaType;
      return { bytes, mediaType: parseManifest(bytes, mediaType).mediaType };
    } finally {
      this.budget.release(held);
    }
  }
}

/** A manifest media type from a Content-Type header, without parameters. */
function mediaTypeOf(contentType: string | null): string | undefined {
  const t = contentType?.split(";")[0]?.trim().toLowerCase();
  return t && isManifestMediaType(t) ? t : undefined;
}

async function readAtMost(body: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    // Throwing inside for-await cancels the body.
    if (total > max) throw new UpstreamError(`manifest is larger than ${max} bytes`);
    parts.push(chunk);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}
