// Test images built offline into an OCI layout with umoci: layers from file specs (bytes,
// text or a size of random content), single-platform images, and multi-platform indexes
// (umoci builds one manifest per platform; the index is composed here). readLayout reads any
// layout back (e.g. one skopeo pulled) so tests compare digests of every blob.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { run } from "./proc.ts";
import { requireTool } from "./require.ts";
import { writeTar, type FileContent } from "./tar.ts";

export type { FileContent } from "./tar.ts";

export const MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json";
export const INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json";
const REF_NAME = "org.opencontainers.image.ref.name";

export interface LayerSpec {
  /** Relative path -> content. A number is that many random (incompressible) bytes; undefined entries are skipped. */
  files: Readonly<Record<string, FileContent | undefined>>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageConfig {
  entrypoint?: string[];
  env?: string[];
  labels?: Record<string, string>;
}

export interface ImageSpec {
  layers: LayerSpec[];
  /** Default linux/amd64. Also "linux/arm64/v8" style strings. */
  platform?: Platform | string;
  config?: ImageConfig;
}

export interface BuildImageOptions extends ImageSpec {
  /** OCI layout directory, created if absent; may hold other tags. */
  dir: string;
  tag: string;
}

export interface BuildIndexOptions {
  dir: string;
  tag: string;
  /** One image per platform, e.g. linux/amd64 and linux/arm64. */
  images: ImageSpec[];
}

export interface BlobRef {
  digest: string;
  size: number;
  mediaType: string;
}

interface LayoutRef {
  layout: string;
  tag: string;
  /** skopeo source/destination name: oci:DIR:TAG */
  ref: string;
}

export interface BuiltImage extends LayoutRef {
  kind: "manifest";
  platform: Platform;
  manifest: BlobRef;
  config: BlobRef;
  layers: BlobRef[];
  /** Manifest, config and layers, without duplicates. */
  blobs: BlobRef[];
  /** Sum of the sizes of blobs. */
  size: number;
}

export interface BuiltIndex extends LayoutRef {
  kind: "index";
  index: BlobRef;
  images: BuiltImage[];
  /** The index and every blob of every image, without duplicates. */
  blobs: BlobRef[];
  size: number;
}

export type Built = BuiltImage | BuiltIndex;

const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function parsePlatform(p: Platform | string | undefined): Platform {
  if (p === undefined) return { os: "linux", architecture: "amd64" };
  if (typeof p !== "string") return p;
  const [os, architecture, variant] = p.split("/");
  if (!os || !architecture) throw new Error(`invalid platform ${JSON.stringify(p)} (use os/arch[/variant])`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

/** Builds one single-platform image under dir:tag. */
export async function buildImage(opts: BuildImageOptions): Promise<BuiltImage> {
  const umoci = requireTool("umoci");
  await ensureLayout(umoci, opts.dir);
  await buildManifest(umoci, opts.dir, opts.tag, opts);
  pruneLayout(opts.dir);
  const built = await readLayout(opts.dir, opts.tag);
  if (built.kind !== "manifest") throw new Error(`${opts.dir}:${opts.tag} is not an image manifest`);
  return built;
}

/**
 * Builds one image per platform (tagged `<tag>-<os>-<arch>[-<variant>]`), then an image
 * index over them tagged `<tag>`.
 */
export async function buildIndex(opts: BuildIndexOptions): Promise<BuiltIndex> {
  if (opts.images.length === 0) throw new Error("buildIndex: no images");
  const umoci = requireTool("umoci");
  await ensureLayout(umoci, opts.dir);
  const children: { tag: string; platform: Platform }[] = [];
  for (const spec of opts.images) {
    const platform = parsePlatform(spec.platform);
    const tag = `${opts.tag}-${formatPlatform(platform).replace(/\//g, "-")}`;
    await buildManifest(umoci, opts.dir, tag, spec);
    children.push({ tag, platform });
  }

  const layoutIndex = readIndexJson(opts.dir);
  const manifests = children.map(({ tag, platform }) => {
    const d = layoutIndex.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
    if (!d) throw new Error(`umoci left no ${tag} in ${opts.dir}/index.json`);
    return { mediaType: d.mediaType, digest: d.digest, size: d.size, platform: { architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}) } };
  });
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests }));
  const index = writeBlob(opts.dir, bytes, INDEX_MEDIA_TYPE);
  layoutIndex.manifests = layoutIndex.manifests.filter((m) => m.annotations?.[REF_NAME] !== opts.tag);
  layoutIndex.manifests.push({ ...index, annotations: { [REF_NAME]: opts.tag } });
  writeFileSync(join(opts.dir, "index.json"), JSON.stringify(layoutIndex));
  pruneLayout(opts.dir);

  const built = await readLayout(opts.dir, opts.tag);
  if (built.kind !== "index") throw new Error(`${opts.dir}:${opts.tag} is not an index`);
  return built;
}

async function ensureLayout(umoci: string, dir: string): Promise<void> {
  if (!existsSync(join(dir, "oci-layout"))) await run([umoci, "init", "--layout", dir]);
}

async function buildManifest(umoci: string, dir: string, tag: string, spec: ImageSpec): Promise<void> {
  if (!TAG.test(tag)) throw new Error(`invalid tag ${JSON.stringify(tag)}`);
  const image = `${dir}:${tag}`;
  const platform = parsePlatform(spec.platform);
  await run([umoci, "new", "--image", image]);
  const config = [`--architecture=${platform.architecture}`, `--os=${platform.os}`];
  for (const e of spec.config?.entrypoint ?? []) config.push(`--config.entrypoint=${e}`);
  for (const e of spec.config?.env ?? []) config.push(`--config.env=${e}`);
  for (const [k, v] of Object.entries(spec.config?.labels ?? {})) config.push(`--config.label=${k}=${v}`);
  await run([umoci, "config", "--no-history", "--image", image, ...config]);
  const tar = join(dirname(dir), `.${basename(dir)}-${process.pid}-layer.tar`);
  try {
    for (const [i, layer] of spec.layers.entries()) {
      writeTar(tar, layer.files);
      await run([umoci, "raw", "add-layer", "--image", image, `--history.created_by=rig layer ${i}`, tar], { timeoutMs: 300_000 });
    }
  } finally {
    rmSync(tar, { force: true });
  }
}

interface IndexJson {
  schemaVersion: number;
  manifests: (BlobRef & { annotations?: Record<string, string>; platform?: Platform })[];
  [k: string]: unknown;
}

function readIndexJson(dir: string): IndexJson {
  return JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as IndexJson;
}

/**
 * Deletes blobs no tag reaches (each umoci step leaves the previous manifest and config
 * behind). Cheaper than `umoci gc`, which reads every layer: only manifests are parsed.
 */
function pruneLayout(dir: string): void {
  const reachable = new Set<string>();
  const visit = (d: BlobRef) => {
    if (reachable.has(d.digest)) return;
    reachable.add(d.digest);
    // OCI and Docker manifests and indexes (a layout skopeo wrote may hold Docker types).
    if (!/manifest|index/.test(d.mediaType)) return;
    const doc = JSON.parse(readFileSync(blobPath(dir, d.digest), "utf8")) as { manifests?: BlobRef[]; config?: BlobRef; layers?: BlobRef[] };
    for (const child of [...(doc.manifests ?? []), ...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) visit(child);
  };
  for (const m of readIndexJson(dir).manifests) visit(m);
  const blobs = join(dir, "blobs", "sha256");
  for (const hex of readdirSync(blobs)) if (!reachable.has(`sha256:${hex}`)) rmSync(join(blobs, hex));
}

function blobPath(dir: string, digest: string): string {
  const m = digest.match(/^sha256:([a-f0-9]{64})$/);
  if (!m) throw new Error(`unsupported digest ${JSON.stringify(digest)}`);
  return join(dir, "blobs", "sha256", m[1]!);
}

function writeBlob(dir: string, bytes: Uint8Array, mediaType: string): BlobRef {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  writeFileSync(blobPath(dir, digest), bytes);
  return { mediaType, digest, size: bytes.length };
}

export interface ReadLayoutOptions {
  /** Hash every blob file and fail on a mismatch with its digest or size. */
  verify?: boolean;
}

/** Reads dir:tag back: an image or an index with all its images (absent children are an error). */
export async function readLayout(dir: string, tag: string, opts: ReadLayoutOptions = {}): Promise<Built> {
  const entry = readIndexJson(dir).manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!entry) throw new Error(`no tag ${tag} in ${dir}/index.json`);
  const base: LayoutRef = { layout: dir, tag, ref: `oci:${dir}:${tag}` };
  const top = { digest: entry.digest, size: entry.size, mediaType: entry.mediaType };
  if (opts.verify) await verifyBlob(dir, top);
  if (entry.mediaType !== INDEX_MEDIA_TYPE) return { ...base, ...(await readImage(dir, top, entry.platform, opts)) };

  const index = JSON.parse(readFileSync(blobPath(dir, top.digest), "utf8")) as { manifests: (BlobRef & { platform?: Platform })[] };
  const images: BuiltImage[] = [];
  for (const m of index.manifests) {
    const ref = { digest: m.digest, size: m.size, mediaType: m.mediaType };
    if (opts.verify) await verifyBlob(dir, ref);
    images.push({ ...base, ...(await readImage(dir, ref, m.platform, opts)) });
  }
  const blobs = unique([top, ...images.flatMap((i) => i.blobs)]);
  return { ...base, kind: "index", index: top, images, blobs, size: sumSizes(blobs) };
}

async function readImage(dir: string, manifest: BlobRef, platform: Platform | undefined, opts: ReadLayoutOptions): Promise<Omit<BuiltImage, keyof LayoutRef>> {
  const m = JSON.parse(readFileSync(blobPath(dir, manifest.digest), "utf8")) as { config: BlobRef; layers: BlobRef[] };
  const pick = (d: BlobRef): BlobRef => ({ digest: d.digest, size: d.size, mediaType: d.mediaType });
  const config = pick(m.config);
  const layers = m.layers.map(pick);
  if (opts.verify) for (const b of [config, ...layers]) await verifyBlob(dir, b);
  const cfg = JSON.parse(readFileSync(blobPath(dir, config.digest), "utf8")) as Partial<Platform>;
  const blobs = unique([manifest, config, ...layers]);
  return {
    kind: "manifest",
    platform: platform ?? { os: cfg.os ?? "", architecture: cfg.architecture ?? "" },
    manifest,
    config,
    layers,
    blobs,
    size: sumSizes(blobs),
  };
}

async function verifyBlob(dir: string, ref: BlobRef): Promise<void> {
  const file = Bun.file(blobPath(dir, ref.digest));
  if (file.size !== ref.size) throw new Error(`${ref.digest}: size ${file.size}, descriptor says ${ref.size}`);
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of file.stream()) hasher.update(chunk);
  const actual = `sha256:${hasher.digest("hex")}`;
  if (actual !== ref.digest) throw new Error(`blob ${ref.digest} in ${dir} hashes to ${actual}`);
}

function unique(blobs: BlobRef[]): BlobRef[] {
  const seen = new Map<string, BlobRef>();
  for (const b of blobs) if (!seen.has(b.digest)) seen.set(b.digest, b);
  return [...seen.values()];
}

function sumSizes(blobs: BlobRef[]): number {
  return blobs.reduce((n, b) => n + b.size, 0);
}

/** Sorted digests of every blob: compare a pushed image with a pulled one. */
export function digestsOf(built: Built): string[] {
  return built.blobs.map((b) => b.digest).sort();
}
