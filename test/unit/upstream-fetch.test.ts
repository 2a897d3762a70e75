// Blob fetches against a small upstream on 127.0.0.1: one fetch for concurrent joins, every
// byte of budget back after success and after a body cut short, and a blob owner that
// cannot serve replaced by the upstream.
import { afterAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ByteBudget } from "../../src/governor/budget.ts";
import { NO_CREDENTIALS } from "../../src/mirror/credentials.ts";
import { UpstreamClient } from "../../src/mirror/upstream-client.ts";
import { BlobFetches } from "../../src/mirror/upstream-fetch.ts";
import { ownerOf } from "../../src/mirror/upstream-owner.ts";
import { silentLogger } from "../../src/observability/log.ts";
import type { Digest } from "../../src/oci/index.ts";
import { IngestingStore } from "../../src/store/ingesting.ts";
import { LocalStore } from "../../src/store/local.ts";
import { digestBytes } from "../../src/store/verify.ts";

const servers: Server<undefined>[] = [];
const closers: (() => void)[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const s of servers) s.stop(true);
  for (const c of closers) c();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const blob = crypto.getRandomValues(new Uint8Array(3 * 1024 * 1024));
const digest = digestBytes(blob);

/** An upstream serving `blob` (node:http: it keeps Content-Length); `cut` drops the connection after that many bytes. */
async function upstream(opts: { cut?: number } = {}): Promise<{ host: string; gets: () => number }> {
  let gets = 0;
  const server = createServer((req, res) => {
    if (!req.url?.endsWith(`/blobs/${digest}`)) return void res.writeHead(404).end();
    gets++;
    res.writeHead(200, { "Content-Length": String(blob.length) });
    if (opts.cut === undefined) return void res.end(blob);
    res.write(blob.subarray(0, opts.cut), () => setTimeout(() => res.destroy(), 20));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => server.close());
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, gets: () => gets };
}

async function setup(host: string, cluster?: { selfId: string; peers: () => { id: string; url: string }[] }) {
  const dir = await mkdtemp(join(tmpdir(), "kagami-fetch-"));
  dirs.push(dir);
  const store = await LocalStore.open(dir);
  const budget = new ByteBudget({ total: 8 * 1024 * 1024 });
  const ingesting = new IngestingStore(store, budget);
  const client = new UpstreamClient({ insecureRegistries: [host], credentials: NO_CREDENTIALS, timeoutMs: 2000 });
  const ends: boolean[] = [];
  const fetches = new BlobFetches({
    store,
    ingesting,
    client,
    budget,
    logger: silentLogger(),
    idleTimeoutMs: 2000,
    maxInflight: 4,
    onEnd: (_d, ok) => ends.push(ok),
    ...(cluster ? { cluster } : {}),
  });
  return { store, budget, ingesting, fetches, ends };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await Bun.sleep(10);
}

describe("BlobFetches", () => {
  test("concurrent joins share one upstream GET; readers get the blob; the budget comes back", async () => {
    const up = await upstream();
    const { store, budget, ingesting, fetches, ends } = await setup(up.host);
    const src = { registry: up.host, repository: "a/b", digest };
    const ingests = await Promise.all(Array.from({ length: 5 }, () => fetches.join(src)));
    expect(new Set(ingests).size).toBe(1);
    const bodies = await Promise.all(ingests.map((i) => new Response(i.reader({ start: 0, end: blob.length - 1 }, budget)).arrayBuffer()));
    for (const b of bodies) expect(digestBytes(new Uint8Array(b))).toBe(digest);
    await until(() => ends.length === 1);
    expect(ends).toEqual([true]);
    expect(up.gets()).toBe(1);
    expect(await store.has(digest)).toBe(true);
    expect(ingesting.size).toBe(0);
    expect(budget.inUse).toBe(0);
    expect(fetches.stats.bytesFromUpstream).toBe(blob.length);
  });

  test("a body cut short fails the fetch, removes the temp file and returns the budget", async () => {
    const up = await upstream({ cut: 1024 * 1024 });
    const { store, budget, fetches, ends } = await setup(up.host);
    const ingest = await fetches.join({ registry: up.host, repository: "a/b", digest });
    const read = new Response(ingest.reader({ start: 0, end: blob.length - 1 }, budget)).arrayBuffer().then(
      () => "complete",
      () => "error",
    );
    expect(await read).toBe("error");
    await until(() => ends.length === 1);
    expect(ends).toEqual([false]);
    expect(await store.has(digest)).toBe(false);
    expect(await readdir(store.layout.ingest)).toEqual([]);
    expect(budget.inUse).toBe(0);
    expect(fetches.stats.failed).toBe(1);
  });

  test("an owner that cannot serve the blob is replaced by the upstream", async () => {
    const up = await upstream();
    const owner = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("", { status: 404 }) });
    servers.push(owner);
    // A peer id that owns this digest against ours.
    let peerId = "peer";
    for (let i = 0; ownerOf(digest as Digest, { selfId: "self", peers: () => [{ id: peerId, url: "" }] }) === undefined; i++) peerId = `peer${i}`;
    const cluster = { selfId: "self", peers: () => [{ id: peerId, url: `http://127.0.0.1:${owner.port}` }] };
    const { budget, fetches, ends } = await setup(up.host, cluster);
    const ingest = await fetches.join({ registry: up.host, repository: "a/b", digest });
    expect(digestBytes(new Uint8Array(await new Response(ingest.reader({ start: 0, end: blob.length - 1 }, budget)).arrayBuffer()))).toBe(digest);
    await until(() => ends.length === 1);
    expect(fetches.stats).toMatchObject({ fromUpstream: 1, fromOwner: 0 });
    expect(budget.inUse).toBe(0);
  });
});
