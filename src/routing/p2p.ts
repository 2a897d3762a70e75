// The Router over a libp2p Kademlia DHT (Spegel-compatible). Advertising a key stores a
// provider record on the nodes closest to its CID; a lookup asks them. The node itself is
// built by node.ts; this file only speaks DHT.
import type { KadDHT } from "@libp2p/kad-dht";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import type { Logger } from "../observability/log.ts";
import { errorMessage } from "../errors.ts";
import { keyCid } from "./keys.ts";
import { registryUrl } from "./addresses.ts";
import type { Peer, Router, RouterStatus } from "./router.ts";

export type DhtNode = Libp2p<{ dht: KadDHT }>;

export interface P2PRouterOptions {
  /** A started node with a kad-dht service named `dht`. */
  node: DhtNode;
  /** Our registry port: every peer's registry is dialled on it. */
  registryPort: number;
  /** No bootstrap and no mDNS: ready with an empty routing table. */
  alone: boolean;
  log: Logger;
  /** Provide queries run at once. */
  provideConcurrency?: number;
  /** Limit of one provide query. */
  provideTimeoutMs?: number;
  /** How often the routing table is checked for having come back (then every key is provided again). */
  connectivityCheckMs?: number;
  /** Stopped before the node on close (bootstrap loops, mDNS dialler). */
  onClose?: () => Promise<void> | void;
}

export class P2PRouter implements Router {
  readonly peerId: string;
  readonly #node: DhtNode;
  readonly #opts: P2PRouterOptions;
  readonly #log: Logger;
  /** Keys advertised and not withdrawn: provided again when connectivity comes back. */
  readonly #keys = new Set<string>();
  readonly #closing = new AbortController();
  readonly #timer: ReturnType<typeof setInterval>;
  #wasConnected = false;
  #reproviding = false;

  constructor(opts: P2PRouterOptions) {
    this.#node = opts.node;
    this.#opts = opts;
    this.#log = opts.log.child({ component: "router" });
    this.peerId = opts.node.peerId.toString();
    this.#timer = setInterval(() => this.#checkConnectivity(), opts.connectivityCheckMs ?? 1000);
    this.#timer.unref?.();
  }

  get node(): DhtNode {
    return this.#node;
  }

  #tableSize(): number {
    // kad-dht's KadDHT type hides the routing table; the single-DHT service has one.
    return (this.#node.services.dht as KadDHT & { routingTable?: { size: number } }).routingTable?.size ?? 0;
  }

  // While the table is empty a provide cannot reach anyone; when peers appear (again) every
  // held key is provided at once instead of waiting for the next refresh.
  #checkConnectivity(): void {
    const connected = this.#tableSize() > 0;
    if (connected && !this.#wasConnected && this.#keys.size > 0 && !this.#reproviding) {
      this.#reproviding = true;
      this.#log.info({ keys: this.#keys.size }, "peers reachable: providing every held key");
      this.#provideAll([...this.#keys])
        .catch((e) => this.#log.warn({ err: errorMessage(e) }, "providing held keys failed"))
        .finally(() => (this.#reproviding = false));
    }
    this.#wasConnected = connected;
  }

  async advertise(keys: readonly string[], signal?: AbortSignal): Promise<void> {
    if (this.#closing.signal.aborted) return;
    for (const key of keys) this.#keys.add(key);
    if (this.#tableSize() === 0) return; // #checkConnectivity provides them once peers appear
    await this.#provideAll(keys, signal);
  }

  async #provideAll(keys: readonly string[], signal?: AbortSignal): Promise<void> {
    const queue = [...keys];
    let failed = 0;
    const worker = async (): Promise<void> => {
      for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
        if (this.#closing.signal.aborted || signal?.aborted) return;
        if (!this.#keys.has(key)) continue; // withdrawn meanwhile
        if (!(await this.#provide(key, signal))) failed++;
      }
    };
    const workers = Math.min(this.#opts.provideConcurrency ?? 8, queue.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (failed > 0) this.#log.warn({ failed, keys: keys.length }, "some keys could not be provided; the next refresh retries");
  }

  async #provide(key: string, signal?: AbortSignal): Promise<boolean> {
    const signals = [this.#closing.signal, AbortSignal.timeout(this.#opts.provideTimeoutMs ?? 30_000)];
    if (signal) signals.push(signal);
    try {
      await this.#node.contentRouting.provide(keyCid(key), { signal: AbortSignal.any(signals) });
      return true;
    } catch (e) {
      this.#log.debug({ key, err: errorMessage(e) }, "provide failed");
      return false;
    }
  }

  async withdraw(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      this.#keys.delete(key);
      try {
        await this.#node.services.dht.cancelReprovide(keyCid(key));
      } catch (e) {
        this.#log.debug({ key, err: errorMessage(e) }, "withdraw failed");
      }
    }
  }

  async *lookup(key: string, count: number, signal: AbortSignal): AsyncIterable<Peer> {
    if (count <= 0 || signal.aborted || this.#tableSize() === 0) return;
    // Ends the DHT query when the consumer stops early, not only when the signal aborts.
    const done = new AbortController();
    const querySignal = AbortSignal.any([signal, done.signal, this.#closing.signal]);
    const seen = new Set<string>();
    try {
      for await (const provider of this.#node.contentRouting.findProviders(keyCid(key), { signal: querySignal })) {
        const id = provider.id.toString();
        if (id === this.peerId || seen.has(id)) continue; // our own record; findProviders repeats peers
        const url = registryUrl(provider.multiaddrs.length > 0 ? provider.multiaddrs : await this.#knownAddrs(provider.id), this.#opts.registryPort);
        if (!url) continue;
        seen.add(id);
        yield { id, url };
        if (seen.size >= count) return;
      }
    } catch (e) {
      if (!querySignal.aborted) this.#log.debug({ key, err: errorMessage(e) }, "lookup failed");
    } finally {
      done.abort();
    }
  }

  async #knownAddrs(id: Parameters<DhtNode["peerStore"]["get"]>[0]): Promise<Multiaddr[]> {
    try {
      return (await this.#node.peerStore.get(id)).addresses.map((a) => a.multiaddr);
    } catch {
      return [];
    }
  }

  ready(): boolean {
    return this.#opts.alone || this.#tableSize() > 0;
  }

  status(): RouterStatus {
    const peers = new Map<string, string[]>();
    for (const conn of this.#node.getConnections()) {
      const id = conn.remotePeer.toString();
      peers.set(id, [...(peers.get(id) ?? []), conn.remoteAddr.toString()]);
    }
    return {
      peerId: this.peerId,
      addresses: this.#node.getMultiaddrs().map(String),
      routingTableSize: this.#tableSize(),
      peers: [...peers].map(([id, addresses]) => ({ id, addresses })),
      advertisedKeys: this.#keys.size,
    };
  }

  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    clearInterval(this.#timer);
    await this.#opts.onClose?.();
    await this.#node.stop();
  }
}
