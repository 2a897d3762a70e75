// The seam between the registry and the places bytes come from when the local stores miss:
// peers (mirror/peers.ts) and the upstream registry (mirror/upstream.ts). The registry asks
// each source in turn; a source answers with a response ready for the client, or a miss
// that says what it tried (it goes into the 404's detail so operators see why).
import type { Digest, TagReference } from "../oci/index.ts";

/** A peer asks this node, a blob's owner, to fetch it upstream for it (mirror/upstream-owner.ts). */
export const DELEGATED_HEADER = "X-Kagami-Delegated";

export interface MirrorRequest {
  kind: "manifest" | "blob";
  method: "GET" | "HEAD";
  /** Registry host from ?ns= (or the default registry). */
  registry: string;
  repository: string;
  /** Exactly one of tag and digest is set. */
  tag?: string;
  digest?: Digest;
  /** The client's raw Range header (blobs only), passed on to the source. */
  range?: string;
  /** The client's Accept header (manifests), passed on to the source. */
  accept?: string;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
  /** Another node chose this one to fetch the blob upstream for it (X-Kagami-Delegated): never delegate it again. */
  delegated?: boolean;
}

export interface Attempt {
  source: string;
  /** Peer id or upstream host. */
  target?: string;
  outcome: string;
  ms: number;
}

export type MirrorResult = { hit: Response; source: string; target?: string } | { miss: Attempt[] };

export interface MirrorSource {
  readonly name: string;
  fetch(req: MirrorRequest): Promise<MirrorResult>;
}

export function tagReferenceOf(req: MirrorRequest): TagReference | undefined {
  return req.tag === undefined ? undefined : { registry: req.registry, repository: req.repository, tag: req.tag };
}
