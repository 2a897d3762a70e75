// The Router: who holds what. A node advertises the keys of content it holds, withdraws
// them when it no longer does, and looks up the peers holding a key. P2PRouter (libp2p
// Kademlia DHT) and MemoryRouter (tests) implement it; test/router-conformance.ts runs
// against both.

/** A node that holds a key, as the mirror reaches it. */
export interface Peer {
  /** libp2p peer id (`12D3KooW...`), or any unique name in memory. */
  id: string;
  /**
   * Origin of its registry API: `http://<IP from its libp2p address>:<our registry port>`.
   * Spegel-compatible: a peer's registry port is never learned, every node uses the same.
   */
  url: string;
}

/** What /readyz and the debug page show about the router. */
export interface RouterStatus {
  peerId: string;
  /** Multiaddrs this node announces (with /p2p/<id>). */
  addresses: string[];
  /** Peers in the DHT routing table. */
  routingTableSize: number;
  /** Connected peers and their addresses. */
  peers: { id: string; addresses: string[] }[];
  /** Keys currently advertised. */
  advertisedKeys: number;
}

export interface Router {
  readonly peerId: string;

  /**
   * Announces that this node holds the keys, and keeps announcing them (the caller may call
   * again to refresh). Resolves once each key was offered to the network (failures are
   * logged, not thrown: the next refresh retries).
   */
  advertise(keys: readonly string[], signal?: AbortSignal): Promise<void>;

  /**
   * Stops announcing the keys. Records other nodes already hold expire on their own (the DHT
   * has no delete): peers asking in that window get a 404 and move on.
   */
  withdraw(keys: readonly string[]): Promise<void>;

  /**
   * Peers that hold a key, as they are found, never this node, each peer once, at most
   * `count`. Ends when the search ends or the signal aborts.
   */
  lookup(key: string, count: number, signal: AbortSignal): AsyncIterable<Peer>;

  /** true when peers can be reached (routing table not empty) or the node is alone by configuration. */
  ready(): boolean;

  status(): RouterStatus;

  close(): Promise<void>;
}
