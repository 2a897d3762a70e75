// The provider cache (src/mirror/providers.ts): one lookup per key while fresh, a stale result
// with live providers answered at once while one new lookup renews it, and nothing stale used
// once its providers turned out not to hold the key or it is older than the stale window.
import { describe, expect, test } from "bun:test";
import { ProviderCache } from "../../src/mirror/providers.ts";
import { MemoryNetwork } from "../../src/routing/memory.ts";
import type { Peer, Router } from "../../src/routing/router.ts";

const KEY = "sha256:" + "a".repeat(64);

/** A router over an in-memory network that counts lookups and can hold them back. */
function countingRouter(): { router: Router; net: MemoryNetwork; lookups: () => number; hold: (on: boolean) => void } {
  const net = new MemoryNetwork();
  const self = net.join("self", "http://127.0.0.1:1");
  let lookups = 0;
  let held: Promise<void> | undefined;
  let release = (): void => {};
  const router: Router = {
    peerId: self.peerId,
    advertise: (keys) => self.advertise(keys),
    withdraw: (keys) => self.withdraw(keys),
    async *lookup(key, count, signal): AsyncIterable<Peer> {
      lookups++;
      if (held) await held;
      yield* self.lookup(key, count, signal);
    },
    ready: () => self.ready(),
    status: () => self.status(),
    close: () => self.close(),
  };
  return {
    router,
    net,
    lookups: () => lookups,
    hold(on) {
      if (on) held = new Promise<void>((resolve) => (release = resolve));
      else {
        release();
        held = undefined;
      }
    },
  };
}

async function settled(set: { done: boolean }): Promise<void> {
  for (let i = 0; i < 100 && !set.done; i++) await Bun.sleep(1);
}

describe("provider cache", () => {
  test("requests within the fresh window share one lookup", async () => {
    const { router, net, lookups } = countingRouter();
    await net.join("a", "http://127.0.0.1:2").advertise([KEY]);
    const cache = new ProviderCache(router, { count: 3, ttlMs: 10_000 });
    const first = cache.get(KEY);
    await settled(first);
    expect(cache.get(KEY)).toBe(first);
    expect(first.peers.map((p) => p.id)).toEqual(["a"]);
    expect(lookups()).toBe(1);
  });

  test("a stale result is answered at once while one new lookup renews it", async () => {
    const { router, net, lookups, hold } = countingRouter();
    await net.join("a", "http://127.0.0.1:2").advertise([KEY]);
    const cache = new ProviderCache(router, { count: 3, ttlMs: 10, staleMs: 10_000 });
    const first = cache.get(KEY);
    await settled(first);
    await Bun.sleep(20);
    await net.join("b", "http://127.0.0.1:3").advertise([KEY]);
    hold(true);
    // The renewal is held back: every request meanwhile gets the stale, finished result.
    for (let i = 0; i < 5; i++) expect(cache.get(KEY)).toBe(first);
    expect(lookups()).toBe(2);
    hold(false);
    await Bun.sleep(5);
    const renewed = cache.get(KEY);
    expect(renewed).not.toBe(first);
    expect(renewed.peers.map((p) => p.id).sort()).toEqual(["a", "b"]);
    expect(lookups()).toBe(2);
  });

  test("a stale result whose providers all answered 404 is not used: the request waits for a new lookup", async () => {
    const { router, net, lookups } = countingRouter();
    await net.join("a", "http://127.0.0.1:2").advertise([KEY]);
    const cache = new ProviderCache(router, { count: 3, ttlMs: 10, emptyTtlMs: 10, staleMs: 10_000 });
    const first = cache.get(KEY);
    await settled(first);
    first.missing.add("a");
    await Bun.sleep(20);
    const next = cache.get(KEY);
    expect(next).not.toBe(first);
    expect(lookups()).toBe(2);
  });

  test("past the stale window a result is not used", async () => {
    const { router, net, lookups } = countingRouter();
    await net.join("a", "http://127.0.0.1:2").advertise([KEY]);
    const cache = new ProviderCache(router, { count: 3, ttlMs: 5, staleMs: 5 });
    const first = cache.get(KEY);
    await settled(first);
    await Bun.sleep(20);
    const next = cache.get(KEY);
    expect(next).not.toBe(first);
    expect(next.done).toBe(false);
    expect(lookups()).toBe(2);
  });
});
