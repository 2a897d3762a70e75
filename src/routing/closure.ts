// Whether a store holds a tag's whole manifest closure: a tag is advertised only then, or a
// peer would resolve the tag through us and then get 404 for a digest (Spegel #1378: that
// traps containerd in a retry loop instead of falling back upstream).
import { NotFoundError } from "../errors.ts";
import {
  isImageManifestMediaType,
  isIndexMediaType,
  MAX_MANIFEST_BYTES,
  parseManifest,
  type Descriptor,
  type Digest,
} from "../oci/index.ts";
import type { Store } from "../store/store.ts";

/** What the closure walk reads: one store, or several seen as one. */
export type ContentReader = Pick<Store, "describe" | "open"> & { has(digest: Digest): Promise<boolean> };

/** Nesting of indexes followed (an index of indexes is rare; deeper is refused). */
const MAX_DEPTH = 4;

/**
 * true when the root and everything it needs are held. An image manifest needs its config
 * and every layer. An index needs at least one child manifest held, and every child manifest
 * held must itself be complete: a node that pulled one platform of a multi-platform image
 * serves that platform, and the client picks it from the index (Spegel walks the same way and
 * skips children missing from the content store, #1386).
 * `held` (a full digest list) saves one describe() per blob during a full pass.
 */
export async function holdsClosure(store: ContentReader, root: Descriptor, held?: ReadonlySet<Digest>): Promise<boolean> {
  const has = (digest: Digest): Promise<boolean> => (held ? Promise.resolve(held.has(digest)) : store.has(digest));

  const complete = async (desc: Descriptor, depth: number): Promise<boolean> => {
    if (depth > MAX_DEPTH || !(await has(desc.digest))) return false;
    const manifest = parseManifest(await readManifest(store, desc.digest), desc.mediaType);
    if (isImageManifestMediaType(manifest.mediaType)) {
      for (const child of manifest.children) if (!(await has(child.digest))) return false;
      return true;
    }
    if (!isIndexMediaType(manifest.mediaType)) return false;
    let any = false;
    for (const child of manifest.children) {
      if (!(await has(child.digest))) continue;
      if (!(await complete(child, depth + 1))) return false;
      any = true;
    }
    return any;
  };

  try {
    return await complete(root, 0);
  } catch (e) {
    if (e instanceof NotFoundError) return false;
    if (e instanceof Error && e.name === "ManifestError") return false;
    throw e;
  }
}

async function readManifest(store: ContentReader, digest: Digest): Promise<Uint8Array> {
  const content = await store.open(digest);
  if (content.size > MAX_MANIFEST_BYTES) {
    if (content.kind === "stream") await content.body.cancel();
    throw Object.assign(new Error(`${digest} is larger than a manifest may be`), { name: "ManifestError" });
  }
  if (content.kind === "file") return await Bun.file(content.path).bytes();
  return new Uint8Array(await new Response(content.body).arrayBuffer());
}
