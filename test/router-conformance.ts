// One suite every Router implementation passes (MemoryRouter, P2PRouter). A harness gives a
// few routers that can reach each other and the registry origin each one's peers see.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { silentLogger } from "../src/observability/log.ts";
import { startRouter, type RouterConfig } from "../src/routing/node.ts";
import type { Peer, Router } from "../src/routing/router.ts";

export interface RouterHarness {
  routers: Router[];
  /** Registry origin the others reach router i at. */
  urls: string[];
  /** Whether another node stops finding a key as soon as it is withdrawn (a DHT keeps records until they expire). */
  immediateWithdraw: boolean;
  close(): Promise<void>;
}

/** Collects a lookup's peers. */
export async function lookupAll(router: Router, key: string, count = 10, timeoutMs = 3000): Promise<Peer[]> {
  const peers: Peer[] = [];
  for await (const p of router.lookup(key, count, AbortSignal.timeout(timeoutMs))) peers.push(p);
  return peers;
}

/** Looks up until `want` peers are found (a DHT record takes a moment to spread) or time is up. */
async function lookupUntil(router: Router, key: string, want: number, deadlineMs = 5000): Promise<Peer[]> {
  const end = Date.now() + deadlineMs;
  let peers: Peer[] = [];
  while (Date.now() < end) {
    peers = await lookupAll(router, key, 10, 2000);
    if (peers.length >= want) return peers;
    await Bun.sleep(50);
  }
  return peers;
}

const uniqueKey = (): string => `example.com/conformance/${randomUUID()}:v1`;

export function routerConformance(name: string, makeHarness: () => Promise<RouterHarness>): void {
  describe(`Router conformance: ${name}`, () => {
    let h: RouterHarness;
    beforeAll(async () => {
      h = await makeHarness();
    });
    afterAll(async () => {
      await h?.close();
    });
    const r = (i: number): Router => {
      const router = h.routers[i];
      if (!router) throw new Error(`harness has no router ${i}`);
      return router;
    };

    test("every router is ready and reports its peer id", () => {
      expect(h.routers.length).toBeGreaterThanOrEqual(3);
      for (const router of h.routers) {
        expect(router.ready()).toBe(true);
        const s = router.status();
        expect(s.peerId).toBe(router.peerId);
        expect(s.routingTableSize).toBeGreaterThanOrEqual(1);
      }
      expect(new Set(h.routers.map((x) => x.peerId)).size).toBe(h.routers.length);
    });

    test("another node finds an advertised key, at the advertiser's registry origin", async () => {
      const key = uniqueKey();
      await r(0).advertise([key]);
      for (const i of [1, 2]) {
        const peers = await lookupUntil(r(i), key, 1);
        expect(peers).toEqual([{ id: r(0).peerId, url: h.urls[0]! }]);
      }
    });

    test("a digest key is found like a tag key", async () => {
      const key = `sha256:${randomUUID().replace(/-/g, "").padEnd(64, "0")}`;
      await r(2).advertise([key]);
      const peers = await lookupUntil(r(0), key, 1);
      expect(peers.map((p) => p.id)).toEqual([r(2).peerId]);
    });

    test("a lookup never yields the node itself", async () => {
      const key = uniqueKey();
      await r(0).advertise([key]);
      await lookupUntil(r(1), key, 1);
      expect(await lookupAll(r(0), key)).toEqual([]);
    });

    test("every holder is found, each once", async () => {
      const key = uniqueKey();
      await Promise.all([r(0).advertise([key]), r(1).advertise([key])]);
      const peers = await lookupUntil(r(2), key, 2);
      expect(peers.map((p) => p.id).sort()).toEqual([r(0).peerId, r(1).peerId].sort());
      expect(peers.map((p) => p.url).sort()).toEqual([h.urls[0]!, h.urls[1]!].sort());
    });

    test("count limits how many peers a lookup yields", async () => {
      const key = uniqueKey();
      await Promise.all([r(0).advertise([key]), r(1).advertise([key])]);
      await lookupUntil(r(2), key, 2);
      expect((await lookupAll(r(2), key, 1)).length).toBe(1);
      expect(await lookupAll(r(2), key, 0)).toEqual([]);
    });

    // The signal allows a minute; the test's own 5 s limit fails a lookup that waits for it.
    test("an unknown key ends the lookup with no peer", async () => {
      expect(await lookupAll(r(1), uniqueKey(), 3, 60_000)).toEqual([]);
    });

    test("an aborted signal ends the lookup at once", async () => {
      const key = uniqueKey();
      await r(0).advertise([key]);
      await lookupUntil(r(1), key, 1);
      const peers: Peer[] = [];
      for await (const p of r(1).lookup(key, 3, AbortSignal.abort())) peers.push(p);
      expect(peers).toEqual([]);
    });

    test("advertised keys are counted, withdrawn ones are not", async () => {
      const keys = [uniqueKey(), uniqueKey()];
      const before = r(1).status().advertisedKeys;
      await r(1).advertise(keys);
      expect(r(1).status().advertisedKeys).toBe(before + 2);
      await r(1).withdraw(keys);
      expect(r(1).status().advertisedKeys).toBe(before);
      await r(1).withdraw([uniqueKey()]); // unknown keys are fine
    });

    test("a withdrawn key can be advertised again", async () => {
      const key = uniqueKey();
      await r(0).advertise([key]);
      await lookupUntil(r(2), key, 1);
      await r(0).withdraw([key]);
      if (h.immediateWithdraw) expect(await lookupAll(r(2), key)).toEqual([]);
      await r(0).advertise([key]);
      expect((await lookupUntil(r(2), key, 1)).map((p) => p.id)).toEqual([r(0).peerId]);
    });

    test("status lists the connected peers", () => {
      const s = r(0).status();
      const ids = s.peers.map((p) => p.id);
      expect(ids).toContain(r(1).peerId);
      expect(ids).not.toContain(r(0).peerId);
      expect(s.addresses.length).toBeGreaterThan(0);
    });
  });
}

/** A port for this run: parallel runs on one machine do not collide. */
export function testPort(base: number): number {
  return base + (process.pid % 5000);
}

/** libp2p routers on the given loopback hosts, one port, the others bootstrapped statically to the first. */
export async function startP2PNodes(hosts: string[], opts: { routerPort: number; registryPort: number; dir: string }): Promise<Router[]> {
  const routers: Router[] = [];
  const base: Omit<RouterConfig, "dataDir" | "routerAddr" | "bootstrapKind" | "staticBootstrapPeers"> = {
    registryAddr: { hostname: "", port: opts.registryPort },
    dhtProtocol: "/spegel/kad/1.0.0",
    mdns: false,
    mdnsServiceName: "_kagami._udp.local",
    dnsBootstrapDomain: undefined,
    httpBootstrapUrl: undefined,
    p2pPskFile: undefined,
    advertiseInterval: 600_000,
  };
  for (const [i, host] of hosts.entries()) {
    const first = routers[0];
    const { router } = await startRouter(
      {
        ...base,
        dataDir: join(opts.dir, `node-${i}`),
        routerAddr: { hostname: host, port: opts.routerPort },
        bootstrapKind: first ? "static" : "none",
        staticBootstrapPeers: first ? [first.status().addresses[0]!] : [],
      },
      silentLogger(),
    );
    routers.push(router);
  }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && !routers.every((r) => r.status().routingTableSize >= hosts.length - 1)) await Bun.sleep(50);
  return routers;
}

