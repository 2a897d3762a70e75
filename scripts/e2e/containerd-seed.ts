// Puts an image into a containerd the way `ctr images import` does: under a lease, every
// blob through the content service's Write stream (manifests labelled with the GC
// references to their children, so garbage collection keeps the whole closure), then the
// image record. Used where the content cannot come through a pull (synthetic layers that
// do not unpack).
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { isIndexMediaType, isManifestMediaType, parseManifest, type Descriptor, type Digest } from "../../src/oci/index.ts";
import { mapError, type ContainerdClient } from "../../src/store/containerd/client.ts";

export interface SeedBlob {
  mediaType: string;
  bytes: Uint8Array;
}

/** Bytes sent per Write message (below containerd's 16 MiB message limit). */
const WRITE_CHUNK = 1 << 20;

/** containerd's GC reference labels of a manifest or index: its children stay while it does. */
export function gcLabels(mediaType: string, bytes: Uint8Array): Record<string, string> {
  if (!isManifestMediaType(mediaType)) return {};
  const doc = parseManifest(bytes, mediaType);
  const labels: Record<string, string> = {};
  if (isIndexMediaType(doc.mediaType)) {
    doc.children.forEach((c, i) => (labels[`containerd.io/gc.ref.content.m.${i}`] = c.digest));
  } else {
    const [config, ...layers] = doc.children;
    if (config) labels["containerd.io/gc.ref.content.config"] = config.digest;
    layers.forEach((l, i) => (labels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
  }
  return labels;
}

/** Writes one blob; content that already exists is left as it is. */
export function writeContent(client: ContainerdClient, digest: Digest, bytes: Uint8Array, labels: Record<string, string>, lease: string): Promise<void> {
  const raw = client.raw("content") as unknown as {
    Write(md: grpc.Metadata, opts: grpc.CallOptions): grpc.ClientDuplexStream<unknown, { action: string; digest: string }>;
  };
  const call = raw.Write(client.metadata({ "containerd-lease": lease }), { deadline: client.deadline(30_000) });
  const ref = `kagami-seed-${digest}`;
  return new Promise<void>((resolve, reject) => {
    let committed = false;
    call.on("data", (res) => {
      if (res.action === "COMMIT") committed = true;
    });
    call.on("error", (e: grpc.ServiceError) => {
      if (e.code === grpc.status.ALREADY_EXISTS) resolve();
      else reject(mapError(e, "content.Write"));
    });
    call.on("end", () => (committed ? resolve() : reject(new Error(`content.Write of ${digest} ended without a commit`))));
    for (let at = 0; at < bytes.byteLength || at === 0; at += WRITE_CHUNK) {
      const data = bytes.subarray(at, Math.min(at + WRITE_CHUNK, bytes.byteLength));
      const last = at + WRITE_CHUNK >= bytes.byteLength;
      call.write({
        action: last ? "COMMIT" : "WRITE",
        ref,
        total: bytes.byteLength,
        expected: digest,
        offset: at,
        data,
        labels: last ? labels : {},
      });
      if (last) break;
    }
    call.end();
  });
}

/**
 * Writes every blob and creates (or replaces) the image `name` pointing at `root`.
 * Children are written before the documents that reference them.
 */
export async function seedImage(client: ContainerdClient, name: string, root: Descriptor, blobs: Map<Digest, SeedBlob>): Promise<void> {
  const lease = `kagami-seed-${randomUUID()}`;
  const expire = new Date(Date.now() + 10 * 60_000).toISOString();
  await client.unary("leases", "Create", { id: lease, labels: { "containerd.io/gc.expire": expire } });
  try {
    const ordered = [...blobs].sort(([, a], [, b]) => rank(a.mediaType) - rank(b.mediaType));
    for (const [digest, blob] of ordered) await writeContent(client, digest, blob.bytes, gcLabels(blob.mediaType, blob.bytes), lease);
    const image = { name, labels: {}, target: { mediaType: root.mediaType, digest: root.digest, size: root.size } };
    try {
      await client.unary("images", "Create", { image }, { metadata: { "containerd-lease": lease } });
    } catch {
      await client.unary("images", "Delete", { name, sync: false });
      await client.unary("images", "Create", { image }, { metadata: { "containerd-lease": lease } });
    }
  } finally {
    await client.unary("leases", "Delete", { id: lease, sync: false });
  }
}

/** Deletes an image and waits for garbage collection, as CRI's RemoveImage does. */
/**
 * Deletes an image record; containerd collects its content in the background. A synchronous
 * delete (sync: true) on containerd 1.6 was seen to leave images.Get unanswered for over 30 s
 * afterwards in 2 of 5 conformance runs; asynchronous, 9 of 9 passed.
 */
export async function deleteImage(client: ContainerdClient, name: string): Promise<void> {
  await client.unary("images", "Delete", { name, sync: false }, { timeoutMs: 30_000 });
}

function rank(mediaType: string): number {
  if (isIndexMediaType(mediaType)) return 2;
  return isManifestMediaType(mediaType) ? 1 : 0;
}
