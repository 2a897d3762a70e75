// How a node finds its first peers in a cluster (mDNS is separate, in node.ts): a static list
// of multiaddrs, the A/AAAA records of a DNS name (a headless Service), or an HTTP endpoint
// answering [{"ID","Addrs"}] (Spegel's format; every node serves its own record at /id).
// runBootstrap dials them, again with backoff whenever the routing table is empty.
import { lookup as dnsLookup } from "node:dns/promises";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import type { Logger } from "../observability/log.ts";
import type { Config } from "../config.ts";
import { errorMessage } from "../errors.ts";
import { ipTcp } from "./addresses.ts";
import type { DhtNode } from "./p2p.ts";

/** A peer to dial: addresses with or without /p2p/<id>. */
export interface BootstrapPeer {
  id?: string;
  addrs: Multiaddr[];
}

export interface Bootstrapper {
  readonly kind: string;
  peers(signal: AbortSignal): Promise<BootstrapPeer[]>;
}

/** Spegel keeps the first three peers of each DNS family and of an HTTP answer. */
const PER_SOURCE_LIMIT = 3;
const MAX_HTTP_BODY_BYTES = 64 * 1024;

export class BootstrapConfigError extends Error {
  override readonly name = "BootstrapConfigError";
}

export class StaticBootstrapper implements Bootstrapper {
  readonly kind = "static";
  readonly #peers: BootstrapPeer[];

  constructor(addrs: readonly string[]) {
    this.#peers = addrs.map((s) => {
      let addr: Multiaddr;
      try {
        addr = multiaddr(s);
      } catch (e) {
        throw new BootstrapConfigError(`--static-bootstrap-peers: ${JSON.stringify(s)} is not a multiaddr: ${errorMessage(e)}`);
      }
      if (!ipTcp(addr)) throw new BootstrapConfigError(`--static-bootstrap-peers: ${s} is not an /ip4|/ip6 + /tcp address`);
      const id = addr.getComponents().find((c) => c.name === "p2p")?.value;
      return id === undefined ? { addrs: [addr] } : { id, addrs: [addr] };
    });
  }

  async peers(): Promise<BootstrapPeer[]> {
    return this.#peers;
  }
}

export class DnsBootstrapper implements Bootstrapper {
  readonly kind = "dns";
  constructor(
    readonly domain: string,
    readonly routerPort: number,
    readonly timeoutMs = 5000,
  ) {}

  async peers(signal: AbortSignal): Promise<BootstrapPeer[]> {
    const query = dnsLookup(this.domain, { all: true, verbatim: true });
    const results = await raceAbort(query, AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]));
    const out: BootstrapPeer[] = [];
    for (const family of [4, 6]) {
      const ips = [...new Set(results.filter((r) => r.family === family).map((r) => r.address))].sort();
      for (const ip of ips.slice(0, PER_SOURCE_LIMIT)) {
        out.push({ addrs: [multiaddr(`/${family === 4 ? "ip4" : "ip6"}/${ip}/tcp/${this.routerPort}`)] });
      }
    }
    return out;
  }
}

export class HttpBootstrapper implements Bootstrapper {
  readonly kind = "http";
  constructor(
    readonly url: string,
    readonly timeoutMs = 5000,
  ) {}

  async peers(signal: AbortSignal): Promise<BootstrapPeer[]> {
    const res = await fetch(this.url, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new Error(`${this.url} answered ${res.status}`);
    }
    const declared = Number(res.headers.get("content-length") ?? 0);
    if (declared > MAX_HTTP_BODY_BYTES) {
      await res.body?.cancel();
      throw new Error(`${this.url}: answer is larger than 64 KiB`);
    }
    const text = await res.text();
    if (text.length > MAX_HTTP_BODY_BYTES) throw new Error(`${this.url}: answer is larger than 64 KiB`);
    return parsePeerRecords(JSON.parse(text)).slice(0, PER_SOURCE_LIMIT);
  }
}

/** Parses Spegel's bootstrap answer: [{"ID": "12D3KooW...", "Addrs": ["/ip4/.../tcp/5001"]}]. */
export function parsePeerRecords(doc: unknown): BootstrapPeer[] {
  if (!Array.isArray(doc)) throw new Error("bootstrap answer is not a JSON array");
  return doc.map((entry, i) => {
    const e = entry as { ID?: unknown; Addrs?: unknown };
    if (!Array.isArray(e.Addrs) || e.Addrs.some((a) => typeof a !== "string")) throw new Error(`entry ${i} has no Addrs list`);
    const addrs = (e.Addrs as string[]).map((a) => multiaddr(a)).filter((a) => ipTcp(a) !== undefined);
    return typeof e.ID === "string" && e.ID.length > 0 ? { id: e.ID, addrs } : { addrs };
  });
}

/** The configured bootstrapper; undefined for --bootstrap-kind none. Throws BootstrapConfigError. */
export function bootstrapperFromConfig(config: Config): Bootstrapper | undefined {
  switch (config.bootstrapKind) {
    case "static":
      if (config.staticBootstrapPeers.length === 0) throw new BootstrapConfigError("--bootstrap-kind static needs --static-bootstrap-peers");
      return new StaticBootstrapper(config.staticBootstrapPeers);
    case "dns":
      if (!config.dnsBootstrapDomain) throw new BootstrapConfigError("--bootstrap-kind dns needs --dns-bootstrap-domain");
      return new DnsBootstrapper(config.dnsBootstrapDomain, config.routerAddr.port);
    case "http":
      if (!config.httpBootstrapUrl) throw new BootstrapConfigError("--bootstrap-kind http needs --http-bootstrap-url");
      try {
        new URL(config.httpBootstrapUrl);
      } catch {
        throw new BootstrapConfigError(`--http-bootstrap-url: ${JSON.stringify(config.httpBootstrapUrl)} is not a URL`);
      }
      return new HttpBootstrapper(config.httpBootstrapUrl);
    default:
      return undefined;
  }
}

/** This node's record in the bootstrap format (served at /id, an array of one like Spegel). */
export function peerRecord(node: DhtNode): { ID: string; Addrs: string[] }[] {
  const id = node.peerId.toString();
  const addrs = node.getMultiaddrs().map((a) => a.toString().replace(`/p2p/${id}`, ""));
  return [{ ID: id, Addrs: [...new Set(addrs)] }];
}

/** A handler the metrics or registry server mounts at GET /id. */
export function peerRecordHandler(node: DhtNode): (req: Request) => Response {
  return () => Response.json(peerRecord(node), { headers: { "cache-control": "no-store" } });
}

export interface BootstrapLoopOptions {
  node: DhtNode;
  bootstrapper: Bootstrapper;
  log: Logger;
  signal: AbortSignal;
  /** Size of the DHT routing table. */
  tableSize: () => number;
  dialTimeoutMs?: number;
  /** How often a connected node checks that its table is still non-empty. */
  checkMs?: number;
  /** Bootstrap again even while connected (Spegel: every 30 min). */
  refreshMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * Runs until the signal aborts: bootstraps when the routing table is empty, with exponential
 * backoff (50 ms -> 10 s) while it stays empty, and again every refreshMs.
 */
export async function runBootstrap(opts: BootstrapLoopOptions): Promise<void> {
  const { log, signal } = opts;
  const minBackoff = opts.minBackoffMs ?? 50;
  const maxBackoff = opts.maxBackoffMs ?? 10_000;
  let backoff = minBackoff;
  let last = 0;
  let failures = 0;
  while (!signal.aborted) {
    const empty = opts.tableSize() === 0;
    if (empty || Date.now() - last >= (opts.refreshMs ?? 30 * 60_000)) {
      try {
        const dialled = await bootstrapOnce(opts);
        last = Date.now();
        if (failures > 0 || empty) log.info({ kind: opts.bootstrapper.kind, dialled }, "bootstrap dialled peers");
        failures = 0;
      } catch (e) {
        if (signal.aborted) return;
        // The first failure is worth a warning; a node waiting for its peers to start is not.
        (failures++ === 0 ? log.warn : log.debug).call(log, { kind: opts.bootstrapper.kind, err: errorMessage(e) }, "bootstrap failed");
      }
    }
    // Identify adds a dialled peer to the table shortly after the dial.
    await sleep(empty ? backoff : (opts.checkMs ?? 1000), signal);
    backoff = opts.tableSize() === 0 ? Math.min(backoff * 2, maxBackoff) : minBackoff;
  }
}

/** Dials every bootstrap peer that is not this node; resolves with how many answered. */
export async function bootstrapOnce(opts: BootstrapLoopOptions): Promise<number> {
  const { node, signal } = opts;
  const self = node.peerId.toString();
  const own = new Set(node.getMultiaddrs().map((a) => hostPort(a)));
  const peers = (await opts.bootstrapper.peers(signal)).filter((p) => p.id !== self);
  const targets = peers.flatMap((p) =>
    p.addrs
      .filter((a) => !own.has(hostPort(a)))
      .map((a) => (p.id !== undefined && !a.getComponents().some((c) => c.name === "p2p") ? a.encapsulate(`/p2p/${p.id}`) : a)),
  );
  if (targets.length === 0) throw new Error("no bootstrap peer other than this node");
  const results = await Promise.allSettled(
    targets.map((addr) =>
      node.dial(addr, { signal: AbortSignal.any([signal, AbortSignal.timeout(opts.dialTimeoutMs ?? 5000)]) }).then((conn) => {
        // Dialling our own address by another name (a DNS record of this node) connects to ourselves.
        if (conn.remotePeer.toString() === self) throw new Error("dialled self");
      }),
    ),
  );
  const ok = results.filter((r) => r.status === "fulfilled").length;
  if (ok === 0) {
    const first = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    throw new Error(`no bootstrap peer answered (${targets.length} tried): ${errorMessage(first?.reason)}`);
  }
  return ok;
}

function hostPort(addr: Multiaddr): string {
  const a = ipTcp(addr);
  return a ? `${a.ip}:${a.port}` : addr.toString();
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
