// Copies an image from an OCI image layout directory into a WritableStore: the tag's root,
// every manifest of an index that the layout holds, and each manifest's config and layers.
// Every blob is verified by the store as it is written; the tag is recorded last, so a
// failed import never leaves a tag without its content.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { InvalidError, NotFoundError } from "../errors.ts";
import {
  isIndexMediaType,
  isManifestMediaType,
  MAX_MANIFEST_BYTES,
  parseDescriptor,
  parseDigest,
  parseManifest,
  validateTag,
  type Descriptor,
  type TagReference,
} from "../oci/index.ts";
import type { WritableStore } from "./store.ts";

const REF_NAME = "org.opencontainers.image.ref.name";

export interface ImportProgress {
  blobs: number;
  totalBlobs: number;
  bytes: number;
  totalBytes: number;
}

export interface ImportResult {
  root: Descriptor;
  blobs: number;
  bytes: number;
  /** Manifests of an index the layout does not hold (other platforms). */
  skippedManifests: number;
}

export function layoutBlobPath(layoutDir: string, descriptor: Descriptor): string {
  const { algorithm, hex } = parseDigest(descriptor.digest);
  return join(layoutDir, "blobs", algorithm, hex);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

async function readManifestBlob(layoutDir: string, d: Descriptor): Promise<Uint8Array> {
  if (d.size > MAX_MANIFEST_BYTES) throw new InvalidError(`manifest ${d.digest} is larger than 4 MiB`);
  return new Uint8Array(await readFile(layoutBlobPath(layoutDir, d)));
}

/** Finds the descriptor a layout's index.json records for a tag. */
export async function findLayoutTag(layoutDir: string, tag: string): Promise<Descriptor> {
  validateTag(tag);
  let layout: unknown;
  try {
    layout = JSON.parse(await readFile(join(layoutDir, "oci-layout"), "utf8"));
  } catch {
    throw new InvalidError(`${layoutDir} is not an OCI image layout (no readable oci-layout file)`);
  }
  if ((layout as { imageLayoutVersion?: unknown }).imageLayoutVersion !== "1.0.0") {
    throw new InvalidError(`${layoutDir}: unsupported imageLayoutVersion`);
  }
  let manifests: Descriptor[];
  try {
    const raw = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as { manifests?: unknown };
    if (!Array.isArray(raw.manifests)) throw new Error("no manifests array");
    manifests = raw.manifests.map(parseDescriptor);
  } catch (e) {
    throw new InvalidError(`${layoutDir}/index.json: ${(e as Error).message}`);
  }
  const found = manifests.find((d) => d.annotations?.[REF_NAME] === tag);
  if (!found) {
    const tags = manifests.map((d) => d.annotations?.[REF_NAME]).filter(Boolean);
    throw new NotFoundError(`tag ${JSON.stringify(tag)} not in ${layoutDir} (has: ${tags.join(", ") || "none"})`);
  }
  const { annotations: _, ...root } = found;
  return root;
}

/** Plans the blobs to copy: manifests first-to-last in walk order, then the tag. */
async function planImport(layoutDir: string, root: Descriptor): Promise<{ blobs: Descriptor[]; skipped: number }> {
  const blobs = new Map<string, Descriptor>();
  let skipped = 0;
  const walk = async (d: Descriptor, isRoot: boolean): Promise<void> => {
    if (!(await exists(layoutBlobPath(layoutDir, d)))) {
      if (!isRoot && isManifestMediaType(d.mediaType)) {
        skipped++;
        return;
      }
      throw new NotFoundError(`${d.digest} (${d.mediaType}) is missing from ${layoutDir}`);
    }
    if (isManifestMediaType(d.mediaType)) {
      const content = parseManifest(await readManifestBlob(layoutDir, d), d.mediaType);
      for (const child of content.children) {
        if (isIndexMediaType(d.mediaType) && !isManifestMediaType(child.mediaType)) continue;
        await walk(child, false);
      }
    }
    blobs.set(d.digest, { mediaType: d.mediaType, digest: d.digest, size: d.size });
  };
  await walk(root, true);
  return { blobs: [...blobs.values()], skipped };
}

export async function importLayout(
  store: WritableStore,
  layoutDir: string,
  layoutTag: string,
  target: TagReference,
  onProgress?: (p: ImportProgress) => void,
): Promise<ImportResult> {
  const root = await findLayoutTag(layoutDir, layoutTag);
  const { blobs, skipped } = await planImport(layoutDir, root);
  const progress: ImportProgress = { blobs: 0, totalBlobs: blobs.length, bytes: 0, totalBytes: blobs.reduce((n, b) => n + b.size, 0) };
  onProgress?.(progress);
  // Children before parents: a manifest becomes visible only after what it references.
  for (const d of blobs) {
    const path = layoutBlobPath(layoutDir, d);
    const s = await stat(path);
    if (s.size !== d.size) throw new InvalidError(`${d.digest}: layout file has ${s.size} bytes, descriptor says ${d.size}`);
    await store.ingest(d, Bun.file(path).stream());
    progress.blobs++;
    progress.bytes += d.size;
    onProgress?.(progress);
  }
  await store.tag(target, root);
  return { root, blobs: blobs.length, bytes: progress.bytes, skippedManifests: skipped };
}
