// An in-memory Router for tests: every router joined to one MemoryNetwork sees the others'
// advertisements at once, and a withdrawal is immediate (unlike a DHT, where records expire).
import type { Peer, Router, RouterStatus } from "./router.ts";

export class MemoryNetwork {
  readonly #members = new Map<string, MemoryRouter>();
  readonly #providers = new Map<string, Set<string>>();

  /** A router for a node whose registry answers at `url`. */
  join(id: string, url: string): MemoryRouter {
    if (this.#members.has(id)) throw new Error(`peer ${id} already joined`);
    const router = new MemoryRouter(this, id, url);
    this.#members.set(id, router);
    return router;
  }

  /** @internal */
  leave(id: string): void {
    this.#members.delete(id);
    for (const [key, ids] of this.#providers) {
      ids.delete(id);
      if (ids.size === 0) this.#providers.delete(key);
    }
  }

  /** @internal */
  provide(id: string, key: string, on: boolean): void {
    let ids = this.#providers.get(key);
    if (on) {
      if (!ids) this.#providers.set(key, (ids = new Set()));
      ids.add(id);
    } else if (ids) {
      ids.delete(id);
      if (ids.size === 0) this.#providers.delete(key);
    }
  }

  /** @internal */
  providers(key: string): Peer[] {
    const out: Peer[] = [];
    for (const id of this.#providers.get(key) ?? []) {
      const member = this.#members.get(id);
      if (member) out.push({ id, url: member.url });
    }
    return out;
  }

  /** @internal */
  members(): MemoryRouter[] {
    return [...this.#members.values()];
  }
}

export class MemoryRouter implements Router {
  readonly #network: MemoryNetwork;
  readonly #keys = new Set<string>();
  #closed = false;

  constructor(
    network: MemoryNetwork,
    readonly peerId: string,
    readonly url: string,
  ) {
    this.#network = network;
  }

  async advertise(keys: readonly string[]): Promise<void> {
    if (this.#closed) return;
    for (const key of keys) {
      this.#keys.add(key);
      this.#network.provide(this.peerId, key, true);
    }
  }

  async withdraw(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      this.#keys.delete(key);
      this.#network.provide(this.peerId, key, false);
    }
  }

  async *lookup(key: string, count: number, signal: AbortSignal): AsyncIterable<Peer> {
    let n = 0;
    for (const peer of this.#network.providers(key)) {
      if (signal.aborted || n >= count) return;
      if (peer.id === this.peerId) continue;
      n++;
      yield peer;
    }
  }

  ready(): boolean {
    return !this.#closed;
  }

  status(): RouterStatus {
    const others = this.#network.members().filter((m) => m.peerId !== this.peerId);
    return {
      peerId: this.peerId,
      addresses: [this.url],
      routingTableSize: others.length,
      peers: others.map((m) => ({ id: m.peerId, addresses: [m.url] })),
      advertisedKeys: this.#keys.size,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#keys.clear();
    this.#network.leave(this.peerId);
  }
}
