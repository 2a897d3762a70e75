// Finding the first peers: static multiaddrs, DNS names, an HTTP /id record; re-bootstrap
// when the table empties (a peer restarts with the same key file, so the same id); a
// pre-shared key keeps other nodes out. Real libp2p nodes on 127.0.0.x.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/observability/log.ts";
import { bootstrapperFromConfig, parsePeerRecords, StaticBootstrapper } from "../../src/routing/bootstrap.ts";
import { startRouter, type RouterConfig, type StartedRouter } from "../../src/routing/node.ts";
import type { Config } from "../../src/config.ts";
import { testPort } from "../router-conformance.ts";

const PORT = testPort(26000);
const dir = mkdtempSync(join(tmpdir(), "kagami-bootstrap-"));
let started: StartedRouter[] = [];
const servers: { stop(force?: boolean): unknown }[] = [];

afterEach(async () => {
  await Promise.all(started.map((s) => s.router.close()));
  started = [];
  for (const s of servers.splice(0)) s.stop(true);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string, host: string, extra: Partial<RouterConfig> = {}): RouterConfig {
  return {
    dataDir: join(dir, name),
    routerAddr: { hostname: host, port: PORT },
    registryAddr: { hostname: "", port: 5000 },
    dhtProtocol: "/spegel/kad/1.0.0",
    mdns: false,
    mdnsServiceName: "_kagami._udp.local",
    bootstrapKind: "none",
    dnsBootstrapDomain: undefined,
    staticBootstrapPeers: [],
    httpBootstrapUrl: undefined,
    p2pPskFile: undefined,
    advertiseInterval: 600_000,
    ...extra,
  };
}
async function node(name: string, host: string, extra: Partial<RouterConfig> = {}): Promise<StartedRouter> {
  const s = await startRouter(config(name, host, extra), silentLogger());
  started.push(s);
  return s;
}
async function connected(s: StartedRouter, ms = 8000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (s.router.status().routingTableSize > 0) return true;
    await Bun.sleep(25);
  }
  return false;
}

describe("bootstrap configuration", () => {
  test("each kind needs its parameter", () => {
    const base = config("x", "127.0.0.1") as Config;
    expect(() => bootstrapperFromConfig({ ...base, bootstrapKind: "static" })).toThrow(/static-bootstrap-peers/);
    expect(() => bootstrapperFromConfig({ ...base, bootstrapKind: "dns" })).toThrow(/dns-bootstrap-domain/);
    expect(() => bootstrapperFromConfig({ ...base, bootstrapKind: "http" })).toThrow(/http-bootstrap-url/);
    expect(() => bootstrapperFromConfig({ ...base, bootstrapKind: "http", httpBootstrapUrl: "not a url" })).toThrow(/not a URL/);
    expect(bootstrapperFromConfig(base)).toBeUndefined();
  });

  test("static peers must be IP + TCP multiaddrs", () => {
    expect(() => new StaticBootstrapper(["/dns4/example.com/tcp/5001"])).toThrow(/ip4/);
    expect(() => new StaticBootstrapper(["nonsense"])).toThrow(/not a multiaddr/);
    expect(() => new StaticBootstrapper(["/ip4/10.0.0.1/tcp/5001/p2p/12D3KooWELpU6GhKuYtztLBm5nusheccmLypZqUVQ4mQEPKCBqWD"])).not.toThrow();
  });

  test("the HTTP answer is Spegel's format; an ID may be absent", () => {
    const peers = parsePeerRecords([
      { ID: "12D3KooWELpU6GhKuYtztLBm5nusheccmLypZqUVQ4mQEPKCBqWD", Addrs: ["/ip4/10.0.0.1/tcp/5001", "/dns4/x/tcp/1"] },
      { Addrs: ["/ip6/fd00::1/tcp/5001"] },
    ]);
    expect(peers[0]!.id).toBe("12D3KooWELpU6GhKuYtztLBm5nusheccmLypZqUVQ4mQEPKCBqWD");
    expect(peers[0]!.addrs.map(String)).toEqual(["/ip4/10.0.0.1/tcp/5001"]);
    expect(peers[1]!.id).toBeUndefined();
    expect(() => parsePeerRecords({})).toThrow(/array/);
  });
});

describe("bootstrap on real nodes", () => {
  test("a node alone by configuration is ready; one waiting for bootstrap peers is not", async () => {
    const alone = await node("alone", "127.0.0.2");
    expect(alone.router.ready()).toBe(true);
    const waiting = await node("waiting", "127.0.0.3", { bootstrapKind: "static", staticBootstrapPeers: ["/ip4/127.0.0.9/tcp/9/p2p/12D3KooWELpU6GhKuYtztLBm5nusheccmLypZqUVQ4mQEPKCBqWD"] });
    expect(waiting.router.ready()).toBe(false);
  });

  test("dns: the A records of a name are dialled on the router port", async () => {
    const a = await node("dns-a", "127.0.0.1");
    const b = await node("dns-b", "127.0.0.2", { bootstrapKind: "dns", dnsBootstrapDomain: "localhost" });
    expect(await connected(b)).toBe(true);
    expect(b.router.status().peers.map((p) => p.id)).toContain(a.router.peerId);
  });

  test("http: a node's /id record bootstraps another; the record lists its id and addresses", async () => {
    const a = await node("http-a", "127.0.0.2");
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: a.idHandler });
    servers.push(server);
    const record = (await (await fetch(`http://127.0.0.1:${server.port}/id`)).json()) as { ID: string; Addrs: string[] }[];
    expect(record).toEqual([{ ID: a.router.peerId, Addrs: [`/ip4/127.0.0.2/tcp/${PORT}`] }]);
    const b = await node("http-b", "127.0.0.3", { bootstrapKind: "http", httpBootstrapUrl: `http://127.0.0.1:${server.port}/id` });
    expect(await connected(b)).toBe(true);
  });

  test("static: when the only peer restarts, the node bootstraps again and finds it under the same id", async () => {
    const a = await node("restart-a", "127.0.0.2");
    const id = a.router.peerId;
    const b = await node("restart-b", "127.0.0.3", { bootstrapKind: "static", staticBootstrapPeers: [`/ip4/127.0.0.2/tcp/${PORT}/p2p/${id}`] });
    expect(await connected(b)).toBe(true);
    await a.router.close();
    started = started.filter((s) => s !== a);
    const end = Date.now() + 8000;
    while (b.router.status().routingTableSize > 0 && Date.now() < end) await Bun.sleep(25);
    expect(b.router.status().routingTableSize).toBe(0);
    const again = await node("restart-a", "127.0.0.2");
    expect(again.router.peerId).toBe(id); // private.key in the data dir
    expect(await connected(b)).toBe(true);
  });

  test("a pre-shared key: nodes holding it connect, a node without it does not", async () => {
    const key = (hex: string): string => {
      const path = join(dir, `psk-${hex.slice(0, 4)}`);
      writeFileSync(path, `/key/swarm/psk/1.0.0/\n/base16/\n${hex}\n`);
      return path;
    };
    const psk = key("ab".repeat(32));
    const a = await node("psk-a", "127.0.0.2", { p2pPskFile: psk });
    const addr = `/ip4/127.0.0.2/tcp/${PORT}/p2p/${a.router.peerId}`;
    const b = await node("psk-b", "127.0.0.3", { p2pPskFile: psk, bootstrapKind: "static", staticBootstrapPeers: [addr] });
    expect(await connected(b)).toBe(true);
    const outsider = await node("psk-c", "127.0.0.4", { p2pPskFile: key("cd".repeat(32)), bootstrapKind: "static", staticBootstrapPeers: [addr] });
    const stranger = await node("psk-d", "127.0.0.5", { bootstrapKind: "static", staticBootstrapPeers: [addr] });
    expect(await connected(outsider, 1500)).toBe(false);
    expect(await connected(stranger, 500)).toBe(false);
  });

  test("a malformed key file is refused at start", async () => {
    const path = join(dir, "bad-swarm.key");
    writeFileSync(path, "not a key\n");
    await expect(node("psk-bad", "127.0.0.2", { p2pPskFile: path })).rejects.toThrow(/swarm key/);
  });
});
