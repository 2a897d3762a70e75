// The upstream HTTP client against small servers on 127.0.0.1: endpoints, the Bearer and
// Basic flows, redirects that must not carry credentials elsewhere, the header timeout; the
// bounded single-flight map; and the choice of a blob's owner across the cluster.
import { afterAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { NO_CREDENTIALS, type Credential } from "../../src/mirror/credentials.ts";
import { SingleFlight, SingleFlightFullError } from "../../src/mirror/singleflight.ts";
import { UpstreamClient, UpstreamError } from "../../src/mirror/upstream-client.ts";
import { ownerOf, type ClusterView } from "../../src/mirror/upstream-owner.ts";
import type { Digest } from "../../src/oci/index.ts";

const servers: Server<undefined>[] = [];
afterAll(() => {
  for (const s of servers) s.stop(true);
});

function serve(fetch: (req: Request) => Response | Promise<Response>): { host: string; url: string; seen: Request[] } {
  const seen: Request[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => {
      seen.push(req);
      return fetch(req);
    },
  });
  servers.push(server);
  return { host: `127.0.0.1:${server.port}`, url: `http://127.0.0.1:${server.port}`, seen };
}

function client(host: string, credential?: Credential, timeoutMs = 2000): UpstreamClient {
  return new UpstreamClient({
    insecureRegistries: [host],
    credentials: credential ? { get: (r) => (r === host ? credential : undefined) } : NO_CREDENTIALS,
    timeoutMs,
  });
}

const signal = () => new AbortController().signal;

describe("UpstreamClient", () => {
  test("maps docker.io to registry-1.docker.io over HTTPS; insecure registries use HTTP", () => {
    const c = new UpstreamClient({ insecureRegistries: ["10.0.0.1:5000"], credentials: NO_CREDENTIALS, timeoutMs: 1000 });
    expect(c.endpoint("docker.io")).toBe("https://registry-1.docker.io");
    expect(c.endpoint("index.docker.io")).toBe("https://registry-1.docker.io");
    expect(c.endpoint("ghcr.io")).toBe("https://ghcr.io");
    expect(c.endpoint("10.0.0.1:5000")).toBe("http://10.0.0.1:5000");
  });

  test("Bearer: gets a pull token for the repository, retries, then sends the cached token at once", async () => {
    const tokens = serve((req) => Response.json({ token: `tok-${new URL(req.url).searchParams.get("scope")}`, expires_in: 300 }));
    const registry = serve((req) => {
      if (req.headers.get("Authorization") !== "Bearer tok-repository:team/app:pull") {
        return new Response("", { status: 401, headers: { "WWW-Authenticate": `Bearer realm="${tokens.url}/token",service="reg",scope="repository:team/app:push"` } });
      }
      return new Response("manifest");
    });
    const c = client(registry.host);
    const req = { registry: registry.host, repository: "team/app", path: "manifests/v1", method: "GET" as const, signal: signal() };
    expect(await (await c.request(req)).text()).toBe("manifest");
    expect(await (await c.request({ ...req, signal: signal() })).text()).toBe("manifest");
    expect(registry.seen.length).toBe(3);
    expect(tokens.seen.length).toBe(1);
    expect(new URL(tokens.seen[0]!.url).searchParams.get("service")).toBe("reg");
    expect(c.cachedTokens).toBe(1);
  });

  test("Basic: sent with the registry's credential; without one the 401 is an UpstreamError", async () => {
    const auth = `Basic ${Buffer.from("u:p").toString("base64")}`;
    const registry = serve((req) =>
      req.headers.get("Authorization") === auth ? new Response("ok") : new Response("", { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } }),
    );
    const req = { registry: registry.host, repository: "a/b", path: "blobs/x", method: "GET" as const, signal: signal() };
    expect(await (await client(registry.host, { kind: "basic", username: "u", password: "p" }).request(req)).text()).toBe("ok");
    const err = await client(registry.host).request(req).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBe(401);
  });

  test("follows redirects; the credential stays on the registry's origin", async () => {
    const cdn = serve((req) => new Response(`cdn auth=${req.headers.get("Authorization")}`));
    const auth = `Basic ${Buffer.from("u:p").toString("base64")}`;
    const registry = serve((req) => {
      const path = new URL(req.url).pathname;
      if (req.headers.get("Authorization") !== auth) return new Response("", { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } });
      if (path.endsWith("/same")) return Response.redirect(`/v2/a/b/blobs/there`, 307);
      if (path.endsWith("/there")) return new Response("same origin, authorized");
      return Response.redirect(`${cdn.url}/blob`, 307);
    });
    const c = client(registry.host, { kind: "basic", username: "u", password: "p" });
    const base = { registry: registry.host, repository: "a/b", method: "GET" as const };
    expect(await (await c.request({ ...base, path: "blobs/same", signal: signal() })).text()).toBe("same origin, authorized");
    expect(await (await c.request({ ...base, path: "blobs/elsewhere", signal: signal() })).text()).toBe("cdn auth=null");
  });

  test("a registry that sends no headers in time is an UpstreamError", async () => {
    const registry = serve(() => new Promise<Response>(() => {}));
    const err = await client(registry.host, undefined, 200)
      .request({ registry: registry.host, repository: "a/b", path: "manifests/v1", method: "HEAD", signal: signal() })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(String(err)).toContain("no response");
  });

  test("an unreachable registry is an UpstreamError without a status", async () => {
    const registry = serve(() => new Response("x"));
    servers.pop()!.stop(true);
    const err = await client(registry.host).request({ registry: registry.host, repository: "a/b", path: "manifests/v1", method: "GET", signal: signal() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBeUndefined();
  });
});

describe("SingleFlight", () => {
  test("shares one task per key, refuses new keys past its bound, forgets settled keys", async () => {
    const flights = new SingleFlight<string, number>(2);
    let started = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const task = async () => {
      started++;
      await gate;
      return started;
    };
    const a1 = flights.run("a", task);
    const a2 = flights.run("a", task);
    const b = flights.run("b", task);
    await expect(flights.run("c", task)).rejects.toBeInstanceOf(SingleFlightFullError);
    release();
    expect(await a1).toBe(await a2);
    await b;
    expect(started).toBe(2);
    expect(flights.size).toBe(0);
    await expect(flights.run("c", async () => 7)).resolves.toBe(7);
  });
});

describe("blob owners (rendezvous)", () => {
  const digests = Array.from({ length: 400 }, (_, i) => `sha256:${i.toString(16).padStart(64, "0")}` as Digest);
  const view = (selfId: string, peerIds: string[]): ClusterView => ({
    selfId,
    peers: () => peerIds.map((id) => ({ id, url: `http://${id}:5000` })),
  });

  test("every node with the same members picks the same owner, and each node owns a share", () => {
    const ids = ["a", "b", "c", "d"];
    const owners = new Map<string, number>();
    for (const digest of digests) {
      const picks = ids.map((self) => ownerOf(digest, view(self, ids.filter((x) => x !== self)))?.id ?? self);
      expect(new Set(picks).size).toBe(1);
      owners.set(picks[0]!, (owners.get(picks[0]!) ?? 0) + 1);
    }
    expect([...owners.keys()].sort()).toEqual(ids);
    for (const n of owners.values()) expect(n).toBeGreaterThan(50);
  });

  test("a node alone owns everything; a joining node takes only the digests it now owns", () => {
    for (const digest of digests.slice(0, 20)) expect(ownerOf(digest, view("a", []))).toBeUndefined();
    let moved = 0;
    for (const digest of digests) {
      const before = ownerOf(digest, view("a", ["b", "c"]))?.id ?? "a";
      const after = ownerOf(digest, view("a", ["b", "c", "d"]))?.id ?? "a";
      if (before !== after) {
        expect(after).toBe("d");
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(50);
    expect(moved).toBeLessThan(150);
  });
});
