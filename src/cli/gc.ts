// `kagami gc`: one eviction pass over the local store by hand, with the same rules as the
// running node (--cache-size, --cache-ttl). Blobs open in any process on the machine (a
// running `kagami serve` sending them) are kept.
import { ConfigError } from "../config.ts";
import { CacheGc, resolveCacheSize } from "../store/gc.ts";
import { LocalStore } from "../store/local.ts";
import { formatBytes } from "../units.ts";
import { parseArgs, usage } from "./flags.ts";

const SYNOPSIS = "gc [--data-dir D] [--cache-size 20Gi|50%] [--cache-ttl 168h] [--dry-run]";
const ABOUT =
  "Evicts least recently used content past --cache-size and content unused for --cache-ttl; tags whose content goes are dropped first.";

export async function gcCommand(argv: string[]): Promise<number> {
  const { config, positionals, help } = parseArgs("gc", argv);
  if (help) {
    console.log(usage("gc", SYNOPSIS, ABOUT));
    return 0;
  }
  if (positionals.length > 0) throw new ConfigError(`unexpected argument ${JSON.stringify(positionals[0])}\nUsage: kagami ${SYNOPSIS}`);
  if (config.cacheSize === undefined && config.cacheTtl === undefined) {
    throw new ConfigError("nothing to do: give --cache-size and/or --cache-ttl");
  }
  let limitBytes: number | undefined;
  const store = await LocalStore.open(config.dataDir);
  try {
    try {
      if (config.cacheSize !== undefined) limitBytes = await resolveCacheSize(config.cacheSize, config.dataDir);
    } catch (e) {
      throw new ConfigError(`--cache-size: ${(e as Error).message}`);
    }
    // Every process's open files pin: a running `kagami serve` may be sending them.
    const gc = new CacheGc({ store, limitBytes, ttlMs: config.cacheTtl, pinScope: "all" });
    const report = await gc.run({ dryRun: config.dryRun });
    const verb = config.dryRun ? "would evict" : "evicted";
    const limit = limitBytes === undefined ? "no size bound" : `limit ${formatBytes(limitBytes)}`;
    console.log(`held ${formatBytes(report.heldBytes)} in ${report.blobs} blobs (${limit}); ${report.pinned} open blobs kept`);
    for (const b of report.evicted) console.log(`${verb} ${b.digest} ${formatBytes(b.size)} last used ${new Date(b.lastUsedMs).toISOString()}`);
    for (const t of report.droppedTags) console.log(`${config.dryRun ? "would drop" : "dropped"} tag ${t}`);
    console.log(`${verb} ${report.evicted.length} blobs, ${formatBytes(report.evictedBytes)}; ${report.droppedTags.length} tags`);
    if (report.overLimit) console.error("still over the limit: the rest is in use");
    return 0;
  } finally {
    await store.close();
  }
}
