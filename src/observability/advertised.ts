// Spegel's spegel_advertised_* gauges from the keys this node advertises. A tag key names
// its registry; its root digest is read from the stores. Content digests belong to no single
// registry (a layer can be shared by images of several), so they carry registry="".
import { isDigest, parseTagReference, type Digest, type TagReference } from "../oci/index.ts";
import type { AdvertisedCounts } from "./metrics.ts";

export async function advertisedCounts(
  keys: Iterable<string>,
  resolveRoot: (reference: TagReference) => Promise<Digest | undefined>,
): Promise<AdvertisedCounts[]> {
  const byRegistry = new Map<string, { tags: number; roots: Set<Digest> }>();
  let contentDigests = 0;
  for (const key of keys) {
    if (isDigest(key)) {
      contentDigests++;
      continue;
    }
    let reference: TagReference;
    try {
      reference = parseTagReference(key);
    } catch {
      continue;
    }
    const entry = byRegistry.get(reference.registry) ?? { tags: 0, roots: new Set<Digest>() };
    byRegistry.set(reference.registry, entry);
    entry.tags++;
    const root = await resolveRoot(reference);
    if (root) entry.roots.add(root);
  }
  const counts: AdvertisedCounts[] = [...byRegistry].map(([registry, e]) => ({
    registry,
    imageTags: e.tags,
    imageDigests: e.roots.size,
    contentDigests: 0,
  }));
  counts.push({ registry: "", imageTags: 0, imageDigests: 0, contentDigests });
  return counts;
}
