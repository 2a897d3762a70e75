// The rig's network: namespaces on a bridge that reach each other, a registry inside one of
// them that the others pull from, a link that can be cut and restored, rate limits, kagami
// inside a namespace, and a teardown that leaves no namespace or interface behind.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { Scope, teardown, tempDir } from "../../scripts/e2e/cleanup.ts";
import { buildImage, digestsOf, type BuiltImage } from "../../scripts/e2e/image.ts";
import { startKagami } from "../../scripts/e2e/kagami.ts";
import { createNetwork, listRigObjects, type Network } from "../../scripts/e2e/netns.ts";
import { httpStatus, run, waitForHttp } from "../../scripts/e2e/proc.ts";
import { startRegistry, type Registry } from "../../scripts/e2e/registry.ts";
import { requireNetns, requireTools } from "../../scripts/e2e/require.ts";
import { pullImage, pushImage } from "../../scripts/e2e/skopeo.ts";
import { startTokenServer } from "../../scripts/e2e/token-server.ts";

const USER = { username: "rig", password: "s3cret" };

const scope = new Scope("rig-netns");
let net: Network;
let registry: Registry;
let image: BuiltImage;

beforeAll(async () => {
  requireNetns();
  requireTools("docker-registry", "skopeo", "umoci", "tc", "openssl");
  image = await buildImage({ dir: join(tempDir("rig-netns"), "layout"), tag: "v1", layers: [{ files: { a: "a" } }, { files: { "b.bin": 500_000 } }] });
  net = await createNetwork({ nodes: ["registry", "a", "b"], scope });
  registry = await startRegistry({ node: net.node("registry"), scope });
  await pushImage(image, { registry: registry.host, repo: "rig/app", netns: net.node("a").netns, scope });
});

afterAll(async () => {
  await scope.teardown();
  await teardown();
});

describe("network namespaces on a bridge", () => {
  test("each node has its address, lo up, and a multicast route for mDNS", async () => {
    for (const [i, node] of net.nodes.entries()) {
      expect(node.ip).toBe(`${net.subnet.split(".").slice(0, 3).join(".")}.${i + 2}`);
      const addrs = (await net.exec(node, ["ip", "-4", "-o", "addr", "show"])).stdout;
      expect(addrs).toContain(`eth0    inet ${node.ip}/24`);
      expect(addrs).toContain("lo    inet 127.0.0.1/8");
      expect((await net.exec(node, ["ip", "route", "show", "224.0.0.0/4"])).stdout).toContain("dev eth0");
    }
  });

  test("the subnet exists only inside the namespaces", async () => {
    expect(net.hostIp).toBeUndefined();
    const hostRoutes = (await run(["ip", "-4", "route", "show"])).stdout;
    expect(hostRoutes).not.toContain(net.subnet);
  });

  test("a node pulls from the registry in another node, digests identical", async () => {
    const pulled = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", netns: net.node("b").netns, scope });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
  });

  test("cutting the registry's link makes pulls fail; restoring it makes them work again", async () => {
    const b = net.node("b").netns;
    await net.setLink(net.node("registry"), "down");
    await expect(pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", netns: b, timeoutMs: 3000, scope })).rejects.toThrow();
    await net.setLink(net.node("registry"), "up");
    const pulled = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", netns: b, timeoutMs: 30_000, scope });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
  }, 60_000);

  test("a rate limit installs tbf on both sides of the link and is removed again", async () => {
    const node = net.node("registry");
    await net.limitRate(node, { rate: "100mbit", direction: "both" });
    expect((await net.exec(node, ["tc", "qdisc", "show", "dev", "eth0"])).stdout).toMatch(/tbf .*rate 100Mbit/);
    expect((await run(["tc", "qdisc", "show", "dev", node.hostVeth])).stdout).toMatch(/tbf .*rate 100Mbit/);
    const pulled = await pullImage({ registry: registry.host, repo: "rig/app", reference: "v1", netns: net.node("a").netns, scope });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
    await net.clearRate(node);
    expect((await net.exec(node, ["tc", "qdisc", "show", "dev", "eth0"])).stdout).not.toContain("tbf");
  });

  test("kagami inside a namespace answers other nodes", async () => {
    // Alone with mDNS on, it is live but not ready (no peer yet): wait for /livez.
    const k = await startKagami({ name: "kagami-b", node: net.node("b"), scope, readyPath: "/livez" });
    expect(k.host).toBe(`${net.node("b").ip}:5000`);
    expect(k.args).not.toContain("--mdns=false");
    expect(await httpStatus(`${k.url}/v2/`, { netns: net.node("a").netns })).toBe(200);
    await k.stop();
  });

  test("a network with a host address is reachable from the host namespace", async () => {
    const hostNet = await createNetwork({ nodes: ["srv"], hostAddress: true, scope });
    const srv = hostNet.node("srv");
    expect(hostNet.hostIp).toBe(hostNet.subnet.replace(/\.0\/24$/, ".1"));
    const p = hostNet.spawn(srv, { name: "ns-http", cmd: [process.execPath, "-e", `Bun.serve({hostname: "${srv.ip}", port: 8080, fetch: () => new Response("from-ns")})`] });
    await waitForHttp(`http://${srv.ip}:8080/`, { netns: srv.netns, proc: p });
    const r = await fetch(`http://${srv.ip}:8080/`, { signal: AbortSignal.timeout(3000) });
    expect(await r.text()).toBe("from-ns");
    await p.stop();
    await hostNet.teardown();
    expect((await run(["ip", "-4", "route", "show"])).stdout).not.toContain(hostNet.subnet);
  });

  test("a registry behind token auth inside a namespace, with the token server on the bridge's host address", async () => {
    const authNet = await createNetwork({ nodes: ["registry", "client"], hostAddress: true, scope });
    const tokens = await startTokenServer({ hostname: authNet.hostIp!, users: [USER], scope });
    const authRegistry = await startRegistry({ name: "ns-token-registry", node: authNet.node("registry"), tokenAuth: tokens, scope });
    const client = authNet.node("client").netns;
    await pushImage(image, { registry: authRegistry.host, repo: "rig/app", creds: USER, netns: client, scope });
    const pulled = await pullImage({ registry: authRegistry.host, repo: "rig/app", reference: "v1", netns: client, scope });
    expect(digestsOf(pulled)).toEqual(digestsOf(image));
    expect(tokens.requests.filter((t) => t.status === 200).length).toBeGreaterThanOrEqual(2);
    for (const n of (await authRegistry.blobServes()).values()) expect(n).toBe(1);
    await authNet.teardown();
  }, 30_000);

  test("teardown deletes every namespace, bridge and veth it created", async () => {
    const names = [net.bridge, ...net.nodes.flatMap((n) => [n.netns, n.hostVeth])];
    expect(listRigObjects(process.pid).netns.length).toBeGreaterThan(0);
    await scope.teardown();
    expect(listRigObjects(process.pid)).toEqual({ netns: [], links: [] });
    const netnsList = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout;
    const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout;
    for (const name of names) {
      expect(netnsList).not.toContain(name);
      expect(links).not.toContain(name);
    }
    expect(registry.proc.running()).toBe(false);
  });
});
