// Builds and starts the libp2p node from Config and wraps it in a P2PRouter: TCP on
// --router-addr, noise, yamux, identify, ping, kad-dht in server mode (Spegel's protocol and
// passthroughMapper: the default mapper drops private addresses and the table never fills on
// a LAN), mDNS discovery, an optional pre-shared key, and the bootstrap loop.
import { readFileSync } from "node:fs";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { kadDHT, passthroughMapper } from "@libp2p/kad-dht";
import { ping } from "@libp2p/ping";
import { preSharedKey } from "@libp2p/pnet";
import { tcp } from "@libp2p/tcp";
import { createLibp2p } from "libp2p";
import type { Config } from "../config.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import { announceFilter, isLoopback, listenAddrs } from "./addresses.ts";
import { bootstrapperFromConfig, peerRecordHandler, runBootstrap } from "./bootstrap.ts";
import { loadOrCreatePeerKey } from "./peer-key.ts";
import { P2PRouter, type DhtNode } from "./p2p.ts";

/** The subset of Config the router reads. */
export type RouterConfig = Pick<
  Config,
  | "dataDir"
  | "routerAddr"
  | "registryAddr"
  | "dhtProtocol"
  | "mdns"
  | "mdnsServiceName"
  | "bootstrapKind"
  | "dnsBootstrapDomain"
  | "staticBootstrapPeers"
  | "httpBootstrapUrl"
  | "p2pPskFile"
  | "advertiseInterval"
>;

export interface StartedRouter {
  router: P2PRouter;
  /** GET /id handler: this node's bootstrap record (mount it on the metrics or registry server). */
  idHandler: (req: Request) => Response;
}

/** Starts the node and its discovery; call router.close() to stop everything. */
export async function startRouter(config: RouterConfig, log: Logger): Promise<StartedRouter> {
  const rlog = log.child({ component: "router" });
  const bootstrapper = bootstrapperFromConfig(config as Config);
  const { key, created } = await loadOrCreatePeerKey(config.dataDir);
  const host = config.routerAddr.hostname;
  const psk = config.p2pPskFile ? readPsk(config.p2pPskFile) : undefined;
  // Records from other nodes expire after two refresh intervals (Spegel: 15 min + 2 x 2 min).
  const validityMs = 2 * config.advertiseInterval;

  // mDNS (multicast-dns and its DNS packet codec) is imported only when it is on.
  const mdns = config.mdns ? (await import("@libp2p/mdns")).mdns : undefined;
  const build = (listen: string[]): Promise<DhtNode> =>
    createLibp2p({
      privateKey: key,
      addresses: { listen, announceFilter: announceFilter(host !== "" && isLoopback(host)) },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      ...(psk ? { connectionProtector: preSharedKey({ psk }) } : {}),
      // libp2p pings every connection every 10 s by default; each ping runs stream set-up code an
      // idle node otherwise never touches (~3.5 MiB of RSS measured with scripts/bench/startup.ts).
      // A dead peer is still found within about a minute; yamux keeps the connection alive.
      connectionMonitor: { pingInterval: 60_000 },
      peerDiscovery: mdns ? [mdns({ serviceTag: config.mdnsServiceName, interval: 10_000 })] : [],
      services: {
        identify: identify(),
        ping: ping(),
        dht: kadDHT({
          protocol: config.dhtProtocol,
          clientMode: false,
          peerInfoMapper: passthroughMapper,
          // kad-dht's own reprovider only cleans expired records here: routing/sync.ts refreshes ours.
          reprovide: { validity: validityMs, threshold: 0, interval: Math.min(config.advertiseInterval, 5 * 60_000) },
        }),
      },
    });

  const listen = listenAddrs(host, config.routerAddr.port);
  let node: DhtNode;
  try {
    node = await build(listen);
  } catch (e) {
    // A host without IPv6 cannot listen on [::]: IPv4 only then.
    if (listen.length < 2) throw e;
    rlog.warn({ err: errorMessage(e) }, "listening on IPv6 failed, IPv4 only");
    node = await build(listen.slice(0, 1));
  }

  const stop = new AbortController();
  // libp2p 3 no longer dials what discovery finds: dial mDNS peers ourselves.
  const onDiscovery = (evt: CustomEvent<{ id: { toString(): string } }>): void => {
    const id = evt.detail.id;
    if (node.getConnections(id as never).length > 0) return;
    node.dial(id as never, { signal: AbortSignal.any([stop.signal, AbortSignal.timeout(5000)]) }).catch((err: unknown) => {
      rlog.debug({ peer: id.toString(), err: errorMessage(err) }, "dialling a discovered peer failed");
    });
  };
  node.addEventListener("peer:discovery", onDiscovery as never);
  // kad-dht keeps a peer in its table after it is gone (it only evicts when a bucket is full),
  // so the table would never empty, readiness would never drop and bootstrap never re-run.
  // A peer that comes back is added again when it connects.
  const table = (node.services.dht as unknown as { routingTable?: { remove?(id: unknown): Promise<void> } }).routingTable;
  const onDisconnect = (evt: CustomEvent<unknown>): void => {
    table?.remove?.(evt.detail)?.catch(() => {});
  };
  node.addEventListener("peer:disconnect", onDisconnect as never);

  let router: P2PRouter | undefined;
  const tableSize = (): number => router?.status().routingTableSize ?? 0;
  const loop = bootstrapper
    ? runBootstrap({ node, bootstrapper, log: rlog, signal: stop.signal, tableSize }).catch((e) =>
        rlog.error({ err: errorMessage(e) }, "bootstrap loop stopped"),
      )
    : Promise.resolve();

  router = new P2PRouter({
    node,
    registryPort: config.registryAddr.port,
    alone: !bootstrapper && !config.mdns,
    log,
    onClose: async () => {
      stop.abort();
      node.removeEventListener("peer:discovery", onDiscovery as never);
      node.removeEventListener("peer:disconnect", onDisconnect as never);
      await loop;
    },
  });
  rlog.info(
    {
      peer: router.peerId,
      keyCreated: created,
      addrs: node.getMultiaddrs().map(String),
      bootstrap: config.bootstrapKind,
      mdns: config.mdns,
      psk: psk !== undefined,
    },
    "router started",
  );
  return { router, idHandler: peerRecordHandler(node) };
}

/** Reads a libp2p swarm key file (/key/swarm/psk/1.0.0/ + /base16/ + 64 hex). */
function readPsk(path: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`--p2p-psk-file: cannot read ${path}: ${errorMessage(e)}`);
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  if (lines[0] !== "/key/swarm/psk/1.0.0/" || lines[1] !== "/base16/" || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? "")) {
    throw new Error(`--p2p-psk-file: ${path} is not a swarm key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits)`);
  }
  return new TextEncoder().encode(`${lines.slice(0, 3).join("\n")}\n`);
}
