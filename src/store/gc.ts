// The disk bound of the local store: least-recently-used eviction past --cache-size, and of
// content unused for --cache-ttl. A blob's last use is the later of its atime (set by
// touch() when it is served; mount options do not matter) and its mtime (when it arrived).
// Never evicted: blobs open in a process (being read: sendfile or a follower holds the file
// open), found in /proc/<pid>/fd. A tag goes *before* anything its held closure needs, so
// sync withdraws it and no client resolves a tag whose content then 404s.
import { readdir, readFile, readlink, stat, statfs, utimes } from "node:fs/promises";
import { ConfigError } from "../config.ts";
import type { Logger } from "../observability/log.ts";
import { formatTagReference, isManifestMediaType, MAX_MANIFEST_BYTES, parseManifest, type Digest, type TagReference } from "../oci/index.ts";
import { parseBytes } from "../units.ts";
import type { IngestingStore } from "./ingesting.ts";
import type { LocalStore } from "./local.ts";

export interface GcOptions {
  store: LocalStore;
  /** Bytes the store may hold (in-progress fetches included); undefined: no size bound. */
  limitBytes?: number | undefined;
  /** Evict content unused for this long; undefined: no age bound. */
  ttlMs?: number | undefined;
  /** Fetches in progress: their declared sizes count as held. */
  ingesting?: IngestingStore;
  logger?: Logger;
  /** Whose open files pin blobs: this process (serve) or every process (kagami gc). */
  pinScope?: "self" | "all";
  /** A touch of the same blob within this window is not written again. */
  touchIntervalMs?: number;
}

export interface GcBlob {
  digest: Digest;
  size: number;
  lastUsedMs: number;
}

export interface GcReport {
  heldBytes: number;
  inProgressBytes: number;
  limitBytes: number | undefined;
  blobs: number;
  pinned: number;
  evicted: GcBlob[];
  evictedBytes: number;
  droppedTags: string[];
  /** Over the limit after the run: everything left was pinned. */
  overLimit: boolean;
}

/** `20Gi`, `500M`, `50%` (of the filesystem holding dir). */
export async function resolveCacheSize(spec: string, dir: string): Promise<number> {
  const pct = spec.trim().match(/^(\d+(?:\.\d+)?)\s*%$/);
  if (!pct) return parseBytes(spec);
  const p = Number(pct[1]);
  if (!(p > 0 && p <= 100)) throw new Error(`cache size ${JSON.stringify(spec)}: a percentage must be in (0, 100]`);
  const fs = await statfs(dir);
  return Math.floor((Number(fs.blocks) * Number(fs.bsize) * p) / 100);
}

/** The gc of `kagami serve` from its flags; a bad --cache-size is a ConfigError. */
export async function createCacheGc(opts: {
  store: LocalStore;
  cacheSize: string | undefined;
  cacheTtl: number | undefined;
  ingesting?: IngestingStore;
  logger?: Logger;
}): Promise<CacheGc> {
  let limitBytes: number | undefined;
  try {
    if (opts.cacheSize !== undefined) limitBytes = await resolveCacheSize(opts.cacheSize, opts.store.layout.root);
  } catch (e) {
    throw new ConfigError(`--cache-size: ${(e as Error).message}`);
  }
  const gc = new CacheGc({ store: opts.store, limitBytes, ttlMs: opts.cacheTtl, ...(opts.ingesting ? { ingesting: opts.ingesting } : {}), ...(opts.logger ? { logger: opts.logger } : {}) });
  gc.start();
  return gc;
}

const MAX_TOUCH_ENTRIES = 16_384;

interface TagClosure {
  key: string;
  reference: TagReference;
  rootHeld: boolean;
  /** Held digests reachable from the root, the root first. */
  closure: Digest[];
}

export class CacheGc {
  private running?: Promise<GcReport>;
  private again = false;
  private timer?: ReturnType<typeof setInterval>;
  private readonly touched = new Map<string, number>();

  constructor(private readonly opts: GcOptions) {}

  get bounded(): boolean {
    return this.opts.limitBytes !== undefined || this.opts.ttlMs !== undefined;
  }

  /** Runs every intervalMs (for the TTL) besides the runs schedule() asks for. */
  start(intervalMs = 60_000): void {
    if (!this.bounded || this.timer) return;
    this.timer = setInterval(() => this.schedule(), intervalMs);
    this.timer.unref?.();
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Content arrived or started arriving: run soon; runs asked for meanwhile coalesce. */
  schedule(): void {
    if (!this.bounded) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.run()
      .catch((e: unknown) => {
        this.opts.logger?.warn({ err: (e as Error).message }, "cache gc failed");
        return undefined as unknown as GcReport;
      })
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
  }

  /** Settles when the current run (if any) has finished. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** A served blob file was used now (the registry's onFileServed). */
  touch(path: string): void {
    const { blobs } = this.opts.store.layout;
    if (!path.startsWith(`${blobs}/`)) return;
    const now = Date.now();
    const last = this.touched.get(path);
    if (last !== undefined && now - last < (this.opts.touchIntervalMs ?? 60_000)) return;
    this.touched.delete(path);
    this.touched.set(path, now);
    if (this.touched.size > MAX_TOUCH_ENTRIES) {
      const oldest = this.touched.keys().next().value;
      if (oldest !== undefined) this.touched.delete(oldest);
    }
    void stat(path)
      .then((s) => utimes(path, now / 1000, s.mtime))
      .catch(() => {});
  }

  /** One pass: TTL first, then least recently used until under the limit. */
  async run(opts: { dryRun?: boolean } = {}): Promise<GcReport> {
    const { store, limitBytes, ttlMs } = this.opts;
    const blobs = await this.listBlobs();
    const pins = await openBlobs(store.layout.blobs, this.opts.pinScope ?? "self");
    const inProgressBytes = this.opts.ingesting?.inProgressBytes() ?? 0;
    let held = blobs.reduce((n, b) => n + b.size, 0);
    const report: GcReport = {
      heldBytes: held,
      inProgressBytes,
      limitBytes,
      blobs: blobs.length,
      pinned: 0,
      evicted: [],
      evictedBytes: 0,
      droppedTags: [],
      overLimit: false,
    };
    const now = Date.now();
    const victims: GcBlob[] = [];
    for (const blob of blobs.sort((a, b) => a.lastUsedMs - b.lastUsedMs || b.size - a.size)) {
      if (pins.has(blob.digest)) {
        report.pinned++;
        continue;
      }
      const expired = ttlMs !== undefined && now - blob.lastUsedMs > ttlMs;
      const over = limitBytes !== undefined && held + inProgressBytes > limitBytes;
      if (!expired && !over) continue;
      victims.push(blob);
      held -= blob.size;
    }

    const gone = new Set(victims.map((v) => v.digest));
    // A tag goes with any part of its held closure, and when its root is not held at all.
    const closures = await this.tagClosures();
    const dropped = closures.filter((t) => !t.rootHeld || t.closure.some((d) => gone.has(d)));
    // What dropped tags held and no remaining tag needs is referenced only through evicted
    // content: it goes too, so no half image stays behind.
    const kept = new Set(closures.filter((t) => !dropped.includes(t)).flatMap((t) => t.closure));
    const byDigest = new Map(blobs.map((b) => [b.digest, b]));
    for (const digest of dropped.flatMap((t) => t.closure)) {
      const blob = byDigest.get(digest);
      if (!blob || gone.has(digest) || kept.has(digest) || pins.has(digest)) continue;
      gone.add(digest);
      victims.push(blob);
      held -= blob.size;
    }
    report.overLimit = limitBytes !== undefined && held + inProgressBytes > limitBytes;
    report.evicted = victims;
    report.evictedBytes = victims.reduce((n, b) => n + b.size, 0);
    report.droppedTags = dropped.map((t) => t.key);
    if (opts.dryRun || (victims.length === 0 && dropped.length === 0)) return report;
    // Tags first: a tag must never point at content that is already gone.
    for (const t of dropped) await store.untag(t.reference);
    for (const v of victims) await store.delete(v.digest);
    this.opts.logger?.info(
      { evicted: victims.length, bytes: report.evictedBytes, droppedTags: dropped.length, held, limit: limitBytes },
      "cache gc evicted content",
    );
    return report;
  }

  private async listBlobs(): Promise<GcBlob[]> {
    const { store } = this.opts;
    const out: GcBlob[] = [];
    for await (const digest of store.digests()) {
      const s = await stat(store.layout.blobPath(digest)).catch(() => undefined);
      if (s?.isFile()) out.push({ digest, size: s.size, lastUsedMs: Math.max(s.atimeMs, s.mtimeMs) });
    }
    return out;
  }

  /** Every tag with the held digests reachable from its root through held manifests. */
  private async tagClosures(): Promise<TagClosure[]> {
    const { store } = this.opts;
    const out: TagClosure[] = [];
    for await (const tagged of store.tags()) {
      const closure: Digest[] = [];
      const seen = new Set<Digest>();
      const walk = async (digest: Digest, mediaType: string): Promise<void> => {
        if (seen.has(digest)) return;
        seen.add(digest);
        if (!(await store.has(digest))) return;
        closure.push(digest);
        if (!isManifestMediaType(mediaType)) return;
        const path = store.layout.blobPath(digest);
        const s = await stat(path).catch(() => undefined);
        if (!s || s.size > MAX_MANIFEST_BYTES) return;
        try {
          const manifest = parseManifest(new Uint8Array(await readFile(path)), mediaType);
          for (const child of manifest.children) await walk(child.digest, child.mediaType);
        } catch {
          // an unparsable manifest references nothing we can follow
        }
      };
      await walk(tagged.descriptor.digest, tagged.descriptor.mediaType);
      out.push({
        key: formatTagReference(tagged.reference),
        reference: tagged.reference,
        rootHeld: closure[0] === tagged.descriptor.digest,
        closure,
      });
    }
    return out;
  }
}

/** Digests of blob files open in this process or in every process we may inspect. */
export async function openBlobs(blobsDir: string, scope: "self" | "all"): Promise<Set<Digest>> {
  const pids = scope === "self" ? ["self"] : (await readdir("/proc").catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  const out = new Set<Digest>();
  const prefix = `${blobsDir}/`;
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
      if (!target.startsWith(prefix)) continue;
      const [algorithm, hex] = target.slice(prefix.length).split("/");
      if (algorithm && hex) out.add(`${algorithm}:${hex}` as Digest);
    }
  }
  return out;
}
