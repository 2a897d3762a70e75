// `kagami serve`: wires the components in one place: stores -> registry (+ mirrors) ->
// HTTP server, and stops them in reverse order on SIGTERM/SIGINT.
import { stat } from "node:fs/promises";
import type { Config } from "../config.ts";
import { formatAddress } from "../config.ts";
import { advertisedCounts } from "../observability/advertised.ts";
import { DebugState } from "../observability/debug.ts";
import { createLogger, type Logger } from "../observability/log.ts";
import { createMetrics } from "../observability/metrics.ts";
import { sdNotify, startWatchdog } from "../observability/sd-notify.ts";
import { startObservabilityServer } from "../observability/server.ts";
import { createRegistryApp } from "../registry/app.ts";
import { createGovernor } from "../governor/index.ts";
import { scheduleStartupPageRelease } from "../governor/startup-pages.ts";
import { startPeerToPeer } from "../mirror/peer-wiring.ts";
import { Health } from "../registry/health.ts";
import { LocalStore } from "../store/local.ts";
import { createUpstreamMirror, pullThroughEnabled, routerView } from "../mirror/upstream.ts";
import { registerTagCheckMetrics } from "../mirror/upstream-tags.ts";
import { createCacheGc } from "../store/gc.ts";
import { IngestingStore } from "../store/ingesting.ts";
import type { Store } from "../store/store.ts";
import type { Digest, TagReference } from "../oci/index.ts";
import { parseArgs, usage } from "./flags.ts";
import { versionInfo } from "./version.ts";

const ABOUT = "Serves the OCI pull API from local content, peers and upstream.";

export async function serveCommand(argv: string[]): Promise<number> {
  const { config, positionals, help } = parseArgs("serve", argv);
  if (help) {
    console.log(usage("serve", "serve [flags]", ABOUT));
    return 0;
  }
  if (positionals.length > 0) {
    console.error(`kagami serve: unexpected argument ${JSON.stringify(positionals[0])}`);
    return 2;
  }
  const log = createLogger(config.logLevel as "info");
  const node = await startNode(config, log);
  // systemd (Type=notify): the unit is active once the registry listens.
  sdNotify("READY=1");
  const stopWatchdog = startWatchdog();
  const cancelPageRelease = scheduleStartupPageRelease(log);
  await waitForSignal();
  sdNotify("STOPPING=1");
  stopWatchdog();
  cancelPageRelease();
  log.info({ timeoutMs: config.shutdownTimeout }, "shutting down");
  await node.stop(config.shutdownTimeout);
  log.info("stopped");
  return 0;
}

export interface RunningNode {
  url: string;
  stop(deadlineMs: number): Promise<void>;
}

export async function startNode(config: Config, log: Logger): Promise<RunningNode> {
  const health = new Health();
  const local = await LocalStore.open(config.dataDir);
  // containerd first (what the node already pulled), kagami's own store second.
  const stores: Store[] = [local];
  const containerd = await openContainerd(config, log);
  if (containerd) stores.unshift(containerd);
  for (const s of stores) health.register(`store:${s.name}`, () => ({ ok: s.healthy(), reason: `${s.name} store unreachable` }));

  const governor = createGovernor(config, log);
  const p2p = await startPeerToPeer(config, { stores, log, budget: governor.budget, memoryLimit: () => governor.latest.limit.bytes });
  health.register("router", p2p.readiness);
  // Pull-through: blobs being fetched are served while they grow (the ingesting store, after
  // the others); the gc keeps the local store under --cache-size / --cache-ttl.
  const ingesting = new IngestingStore(local, governor.budget);
  const gc = await createCacheGc({ store: local, ingesting, cacheSize: config.cacheSize, cacheTtl: config.cacheTtl, logger: log });
  const upstream = pullThroughEnabled(config.pullThrough, stores[0] === local)
    ? createUpstreamMirror({
        store: local,
        budget: governor.budget,
        config,
        logger: log,
        router: p2p.router,
        cluster: routerView(p2p.router, config.registryAddr.port),
        gc,
        ingesting,
      })
    : undefined;
  const metrics = createMetrics();
  const { version, commit } = versionInfo();
  const debug = new DebugState({ version, commit, registry: formatAddress(config.registryAddr), "data dir": config.dataDir });
  metrics.watchRouter(() => p2p.router.status());
  governor.registerMetrics(metrics.registry);
  if (upstream) registerTagCheckMetrics(upstream.tags, metrics.registry);
  debug.provide({
    router: () => p2p.router.status(),
    advertisedKeys: (limit) => [...p2p.sync.advertised].slice(0, limit),
    governor: () => ({ ...governor.state() }),
  });
  const publishAdvertised = async () =>
    metrics.setAdvertised(await advertisedCounts(p2p.sync.advertised, (ref) => resolveRoot(stores, ref)));
  const advertisedTimer = setInterval(() => void publishAdvertised(), 15_000);
  advertisedTimer.unref?.();

  const app = createRegistryApp({
    stores: upstream ? [...stores, ingesting] : stores,
    mirrors: upstream ? [p2p.mirror, upstream] : [p2p.mirror],
    defaultRegistry: config.defaultRegistry,
    health,
    logger: log,
    shedReason: () => (governor.shouldShed() ? `memory pressure ${governor.latest.level}` : undefined),
    // Only tags in kagami's own store were cached from upstream; containerd's are containerd's.
    ...(upstream ? { resolveTag: (store: Store, ref: TagReference) => (store === local ? upstream.tags.resolve(ref) : store.resolve(ref)) } : {}),
    onFileServed: (path, size) => {
      governor.noteFileServed(path, size);
      gc.touch(path);
    },
    onServed: (r) => {
      metrics.observe(r);
      debug.record(r);
      log.debug({ digest: r.digest, ref: `${r.registry}/${r.repository}:${r.reference}`, source: r.source, status: r.status, bytes: r.bytes, ms: Math.round(r.ms) }, "served");
    },
  });
  const server = Bun.serve({
    hostname: config.registryAddr.hostname || "0.0.0.0",
    port: config.registryAddr.port,
    fetch: metrics.instrument(app.fetch),
    // Blob downloads are long; idle means no byte moved for this long.
    idleTimeout: 120,
    maxRequestBodySize: 64 * 1024,
  });
  const url = `http://${formatAddress({ hostname: server.hostname ?? "", port: server.port ?? 0 })}`;
  log.info({ addr: url, dataDir: config.dataDir, stores: stores.map((s) => s.name) }, "registry listening");
  const observability = startObservabilityServer({ address: config.metricsAddr, metrics, debug, logger: log, idHandler: p2p.idHandler });

  return {
    url,
    async stop(deadlineMs) {
      health.drain();
      clearInterval(advertisedTimer);
      const graceful = server.stop(false);
      const timer = setTimeout(() => void server.stop(true), deadlineMs);
      await graceful;
      clearTimeout(timer);
      await observability.stop();
      upstream?.close();
      gc.close();
      await p2p.stop();
      governor.stop();
      for (const s of stores) await s.close();
    },
  };
}

/**
 * containerd's store when --store=containerd, or with --store=auto when its socket answers.
 * gRPC and protobufjs are imported only then: they cost ~11 MiB of idle RSS, and --store=auto
 * with no socket file is the local store alone (measured with scripts/bench/startup.ts).
 */
async function openContainerd(config: Config, log: Logger): Promise<Store | undefined> {
  const required = config.store === "containerd";
  if (!required && (config.store !== "auto" || !(await isSocket(config.containerdSock)))) return undefined;
  const { ContainerdStore, containerdAnswers } = await import("../store/containerd/index.ts");
  if (!required && !(await containerdAnswers(config.containerdSock))) return undefined;
  return ContainerdStore.open({
    socket: config.containerdSock,
    namespace: config.containerdNamespace,
    contentPath: config.containerdContentPath,
    logger: log,
    waitForContainerd: required,
  });
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isSocket();
  } catch {
    return false;
  }
}

async function resolveRoot(stores: readonly Store[], reference: TagReference): Promise<Digest | undefined> {
  for (const store of stores) {
    try {
      return (await store.resolve(reference)).digest;
    } catch {
      // next store
    }
  }
  return undefined;
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once("SIGTERM", on("SIGTERM"));
    process.once("SIGINT", on("SIGINT"));
  });
}
