// Fake peers for the mirror tests: real HTTP servers on 127.0.0.1 (node:http, which keeps the
// Content-Length of a streamed answer) that serve a blob well, die or stall half way, lie
// about its bytes, answer 404, or never answer.
import { afterEach } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { silentLogger } from "../../src/observability/log.ts";
import type { Digest } from "../../src/oci/index.ts";
import type { Budget } from "../../src/mirror/budget.ts";
import { PeerMirror, type PeerMirrorOptions } from "../../src/mirror/peers.ts";
import type { MirrorRequest } from "../../src/mirror/source.ts";
import { MemoryNetwork } from "../../src/routing/memory.ts";
import type { Router } from "../../src/routing/router.ts";

export type Behaviour = "good" | "die-half" | "stall-half" | "lie" | "missing" | "silent" | "short";

export interface Content {
  bytes: Uint8Array;
  digest: Digest;
  mediaType: string;
}

export function content(size: number, mediaType = "application/octet-stream"): Content {
  const bytes = new Uint8Array(randomBytes(size));
  return { bytes, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest, mediaType };
}

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export interface FakePeer {
  id: string;
  url: string;
  behaviour: Behaviour;
  requests: { method: string; url: string; headers: IncomingHttpHeaders }[];
  /** Requests whose answer the client stopped reading (aborted). */
  aborted: number;
  stop(): Promise<void>;
}

const CHUNK = 16 * 1024;

/** A peer serving `items` (by digest, and by tag for manifests) with a behaviour. */
export async function fakePeer(id: string, behaviour: Behaviour, items: Content[], tags: Record<string, Content> = {}): Promise<FakePeer> {
  const peer: FakePeer = { id, url: "", behaviour, requests: [], aborted: 0, stop: async () => {} };
  const byRef = new Map<string, Content>(items.map((c) => [c.digest as string, c]));
  for (const [tag, c] of Object.entries(tags)) byRef.set(tag, c);
  const server: Server = createServer((req, res) => {
    peer.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    res.on("close", () => {
      if (!res.writableFinished) peer.aborted++;
    });
    const reference = decodeURIComponent((req.url ?? "").split("?")[0]!.split("/").pop() ?? "");
    const item = byRef.get(reference);
    if (behaviour === "silent") return; // never answers
    if (!item || behaviour === "missing") {
      res.writeHead(404, { "content-type": "application/json" }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}');
      return;
    }
    const size = item.bytes.byteLength;
    let start = 0;
    let end = size - 1;
    const range = req.headers.range?.match(/^bytes=(\d*)-(\d*)$/);
    if (range) {
      if (range[1] === "") start = Math.max(0, size - Number(range[2]));
      else {
        start = Number(range[1]);
        if (range[2] !== "") end = Math.min(size - 1, Number(range[2]));
      }
      if (start >= size) {
        res.writeHead(416, { "content-range": `bytes */${size}` }).end();
        return;
      }
    }
    const headers: Record<string, string> = {
      "content-type": item.mediaType,
      "content-length": String(end - start + 1),
      "docker-content-digest": item.digest,
      "accept-ranges": "bytes",
    };
    if (range) headers["content-range"] = `bytes ${start}-${end}/${size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === "HEAD") return void res.end();
    let body = item.bytes.subarray(start, end + 1);
    if (behaviour === "lie") body = new Uint8Array(randomBytes(body.byteLength));
    const half = Math.floor(size / 2);
    let at = start;
    const pump = (): void => {
      while (at <= end) {
        if (at >= half && behaviour === "die-half") return void res.destroy();
        if (at >= half && behaviour === "stall-half") return; // keeps the connection open, sends nothing
        if (at >= half && behaviour === "short") return void res.end();
        const piece = body.subarray(at - start, Math.min(at - start + CHUNK, body.byteLength));
        at += piece.byteLength;
        if (!res.write(piece)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  peer.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  peer.stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return peer;
}

/** A mirror whose router finds `providers` (in this order) for every key they hold. */
export function mirrorWith(
  providers: { peer: FakePeer; keys: string[] }[],
  opts: Partial<PeerMirrorOptions> = {},
): { mirror: PeerMirror; router: Router; lookups: () => number } {
  const net = new MemoryNetwork();
  for (const { peer, keys } of providers) void net.join(peer.id, peer.url).advertise(keys);
  const self = net.join("self", "http://127.0.0.1:1");
  let lookups = 0;
  const router: Router = {
    peerId: self.peerId,
    advertise: (keys) => self.advertise(keys),
    withdraw: (keys) => self.withdraw(keys),
    lookup: (key, count, signal) => {
      lookups++;
      return self.lookup(key, count, signal);
    },
    ready: () => self.ready(),
    status: () => self.status(),
    close: () => self.close(),
  };
  const mirror = new PeerMirror({ router, log: silentLogger(), resolveTimeoutMs: 50, resolveRetries: 3, stallTimeoutMs: 300, ...opts });
  return { mirror, router, lookups: () => lookups };
}

export function blobRequest(digest: Digest, extra: Partial<MirrorRequest> = {}): MirrorRequest {
  return { kind: "blob", method: "GET", registry: "docker.io", repository: "library/app", digest, signal: AbortSignal.timeout(20_000), ...extra };
}

/**
 * Fake peers started by a test file, stopped after each test: call once at the top of the
 * file; the returned function starts peers.
 */
export function peersPerTest(): (...specs: Parameters<typeof fakePeer>[]) => Promise<FakePeer[]> {
  let peers: FakePeer[] = [];
  afterEach(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    peers = [];
  });
  return async (...specs) => {
    const started = await Promise.all(specs.map((s) => fakePeer(...s)));
    peers.push(...started);
    return started;
  };
}

/** Reads a response body to the end; the error when the stream breaks. */
export async function drain(res: Response): Promise<{ bytes: Uint8Array; error?: Error }> {
  const parts: Uint8Array[] = [];
  const reader = res.body!.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      // A chunk's memory is freed once the next one is asked for (peer-stream.ts): keep a copy.
      parts.push(value.slice());
    }
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: e as Error };
  }
  return { bytes: new Uint8Array(Buffer.concat(parts)) };
}

/** A byte budget that grants everything and counts: bytes in use now, at most, and ever taken. */
export function countingBudget(): Budget & { inUse: number; peak: number; acquired: number } {
  const budget = {
    inUse: 0,
    peak: 0,
    acquired: 0,
    acquire: async (n: number) => {
      budget.inUse += n;
      budget.acquired += n;
      budget.peak = Math.max(budget.peak, budget.inUse);
    },
    release: (n: number) => {
      budget.inUse -= n;
    },
  };
  return budget;
}
