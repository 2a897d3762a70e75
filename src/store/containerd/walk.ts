// The content closure of a containerd image: index -> manifests -> config + layers.
// Descriptors whose content is absent (other platforms of an index, discarded layers) are
// skipped with everything below them: kagami never advertises what it cannot serve.
// Media types come from the parent's descriptor; a manifest's own mediaType wins.
import { isManifestMediaType, parseDigest, parseManifest, MAX_MANIFEST_BYTES, type Descriptor, type Digest } from "../../oci/index.ts";

export interface WalkSource {
  /** Size of held content, or undefined when it is absent. */
  sizeOf(digest: Digest): Promise<number | undefined>;
  read(digest: Digest, size: number): Promise<Uint8Array>;
}

/** Deepest nesting followed (index of indexes of manifests), and most descriptors per image. */
const MAX_DEPTH = 4;
const MAX_DESCRIPTORS = 10_000;

/** Parses a descriptor containerd reports; undefined when its digest is not one kagami serves. */
export function toDescriptor(d: { mediaType: string; digest: string; size: number }): Descriptor | undefined {
  try {
    return { mediaType: d.mediaType, digest: parseDigest(d.digest).digest, size: d.size };
  } catch {
    return undefined;
  }
}

/** Every held descriptor of the image rooted at `root`, each once, parents before children. */
export async function walkImage(root: Descriptor, source: WalkSource, visit: (d: Descriptor) => void): Promise<void> {
  const seen = new Set<Digest>();
  const step = async (d: Descriptor, depth: number): Promise<void> => {
    if (seen.has(d.digest) || seen.size >= MAX_DESCRIPTORS) return;
    seen.add(d.digest);
    const size = await source.sizeOf(d.digest);
    if (size === undefined) return;
    if (!isManifestMediaType(d.mediaType) || size > MAX_MANIFEST_BYTES || depth >= MAX_DEPTH) {
      visit({ ...d, size });
      return;
    }
    let children: Descriptor[] = [];
    let mediaType = d.mediaType;
    try {
      const doc = parseManifest(await source.read(d.digest, size), d.mediaType);
      mediaType = doc.mediaType;
      children = doc.children;
    } catch {
      // A document that does not parse is still served as held bytes; nothing below it is.
    }
    visit({ mediaType, digest: d.digest, size });
    for (const child of children) await step(child, depth + 1);
  };
  await step(root, 0);
}

/**
 * Media types learnt from walks, by digest (content addressed, so never stale). Capped:
 * past the cap it starts over, and describe() falls back to reading the document.
 */
export class MediaTypes {
  private readonly byDigest = new Map<Digest, string>();

  constructor(private readonly cap = 100_000) {}

  get(digest: Digest): string | undefined {
    return this.byDigest.get(digest);
  }

  set(digest: Digest, mediaType: string): void {
    if (this.byDigest.size >= this.cap && !this.byDigest.has(digest)) this.byDigest.clear();
    this.byDigest.set(digest, mediaType);
  }
}
