// Everything peer-to-peer `kagami serve` starts, behind one call: the libp2p router, the sync
// that advertises what the stores hold, and the peer mirror the registry asks on a miss.
import type { Config } from "../config.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import { startRouter, type RouterConfig } from "../routing/node.ts";
import type { P2PRouter } from "../routing/p2p.ts";
import { startSync, type AdvertiseSync } from "../routing/sync.ts";
import type { Store } from "../store/store.ts";
import type { Budget } from "./budget.ts";
import { WORKER_MIN_LIMIT_BYTES, workerHashers } from "./hasher.ts";
import { peerMirrorFromConfig, type PeerMirror, type PeerMirrorConfig } from "./peers.ts";

export interface PeerToPeer {
  router: P2PRouter;
  sync: AdvertiseSync;
  /** A MirrorSource: put it first in the registry's mirrors (before upstream). */
  mirror: PeerMirror;
  /** GET /id: this node's bootstrap record ([{"ID","Addrs"}]) for --bootstrap-kind http. */
  idHandler: (req: Request) => Response;
  /** A readiness check (Health.register): the routing table has peers, or the node is alone by configuration. */
  readiness: () => { ok: boolean; reason?: string };
  /** Stops advertising, then the node. */
  stop(): Promise<void>;
}

export async function startPeerToPeer(
  config: RouterConfig & PeerMirrorConfig & Pick<Config, "advertiseInterval">,
  deps: { stores: readonly Store[]; log: Logger; budget?: Budget; memoryLimit?: () => number },
): Promise<PeerToPeer> {
  const { router, idHandler } = await startRouter(config, deps.log);
  const hashers = workerHashers({
    onFailure: (e) => deps.log.warn({ err: errorMessage(e) }, "digest worker failed: hashing on the main thread"),
    offThread: () => (deps.memoryLimit?.() ?? Infinity) >= WORKER_MIN_LIMIT_BYTES,
  });
  let mirror: PeerMirror;
  try {
    mirror = peerMirrorFromConfig(config, router, deps.log, { ...(deps.budget ? { budget: deps.budget } : {}), hashers });
  } catch (e) {
    await router.close();
    throw e;
  }
  const sync = startSync({ stores: deps.stores, router, intervalMs: config.advertiseInterval, log: deps.log });
  return {
    router,
    sync,
    mirror,
    idHandler,
    readiness: () => (router.ready() ? { ok: true } : { ok: false, reason: "no peer in the routing table yet" }),
    async stop() {
      await sync.stop();
      await router.close();
      hashers.stop();
    },
  };
}
