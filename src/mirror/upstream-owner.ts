// One upstream fetch per blob across the cluster, also when every node asks at the same
// moment (a cold rush, before any advertisement could be seen): each blob has one owner,
// chosen by rendezvous hashing over this node and the peers it is connected to. A node that
// is not the owner asks the owner for the blob (X-Kagami-Delegated: the owner fetches it
// upstream itself and never delegates further); when the owner cannot be reached, or fails
// mid-blob, the node goes upstream itself (resuming at its offset). Nodes with the same view
// of the cluster agree on the owner; differing views cost at most one fetch per view.
import { createHash } from "node:crypto";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import type { Digest } from "../oci/index.ts";
import { registryUrl } from "../routing/addresses.ts";
import type { Peer, Router } from "../routing/router.ts";

/** Who takes part in choosing owners. */
export interface ClusterView {
  readonly selfId: string;
  /** Peers reachable now, with their registry URLs. */
  peers(): readonly Peer[];
}

function score(id: string, digest: Digest): bigint {
  return createHash("sha256").update(`${id}\n${digest}`).digest().readBigUInt64BE(0);
}

/** The owner of a digest among this node and its peers; undefined when it is this node. */
export function ownerOf(digest: Digest, view: ClusterView): Peer | undefined {
  let best: Peer | undefined;
  let bestScore = score(view.selfId, digest);
  for (const peer of view.peers()) {
    const s = score(peer.id, digest);
    if (s > bestScore || (s === bestScore && peer.id > (best?.id ?? view.selfId))) {
      best = peer;
      bestScore = s;
    }
  }
  return best;
}

/** The view of the router: its connected peers, reached on our own registry port (Spegel's rule). */
export function routerView(router: Pick<Router, "peerId" | "status">, registryPort: number): ClusterView {
  return {
    selfId: router.peerId,
    peers() {
      const out: Peer[] = [];
      for (const p of router.status().peers) {
        const addrs: Multiaddr[] = [];
        for (const a of p.addresses) {
          try {
            addrs.push(multiaddr(a));
          } catch {
            // not an address we can dial
          }
        }
        const url = registryUrl(addrs, registryPort);
        if (url && p.id !== router.peerId) out.push({ id: p.id, url });
      }
      return out;
    },
  };
}
