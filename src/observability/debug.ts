// What /debug shows: who this node is, its peers, what it advertises, the governor's state,
// and the last pulls, each request explained (which source served it, why the ones before it
// failed). Requests are grouped into pulls by repository; every list here is capped.
import type { Attempt } from "../mirror/source.ts";
import type { ServedRequest } from "../registry/app.ts";
import type { RouterStatus } from "../routing/router.ts";

const MAX_PULLS = 50;
const MAX_STEPS_PER_PULL = 256;
const MAX_PEERS_SHOWN = 200;
const MAX_KEYS_SHOWN = 200;
/** A request joins the open pull of its repository if that pull saw a request this recently. */
const PULL_IDLE_MS = 30_000;

export interface PullStep {
  at: string;
  kind: "manifest" | "blob";
  method: string;
  reference: string;
  digest?: string;
  source: string;
  target?: string;
  status: number;
  bytes: number;
  ms: number;
  attempts: Attempt[];
  /** One sentence: where the bytes came from, and why the sources before it did not serve them. */
  explanation: string;
}

export interface PullRecord {
  id: number;
  /** `registry/repository:tag` of the first tag asked, else `registry/repository@digest`. */
  image: string;
  registry: string;
  repository: string;
  started: string;
  updated: string;
  steps: PullStep[];
  /** Steps past the cap: counted in the totals, not listed. */
  omittedSteps: number;
  /** GET bytes by source. */
  bytesBySource: Record<string, number>;
  requests: number;
  failed: number;
}

export interface DebugProviders {
  /** The router's view: peer id, addresses, peers, routing table. */
  router?: () => RouterStatus;
  /** Up to `limit` of the keys this node advertises. */
  advertisedKeys?: (limit: number) => readonly string[];
  /** The memory governor's state, shown as a table (JSON-able values). */
  governor?: () => Record<string, unknown>;
}

export interface DebugSnapshot {
  about: Record<string, string>;
  startedAt: string;
  uptimeSeconds: number;
  node: { peerId: string; addresses: string[]; routingTableSize: number } | null;
  peers: { id: string; addresses: string[] }[];
  peerCount: number;
  advertised: { total: number | null; keys: string[] };
  governor: Record<string, unknown> | null;
  pulls: PullRecord[];
}

export class DebugState {
  readonly #about: Record<string, string>;
  readonly #started = Date.now();
  #providers: DebugProviders = {};
  /** Newest last. */
  #pulls: PullRecord[] = [];
  #nextId = 1;

  constructor(about: Record<string, string> = {}) {
    this.#about = { ...about };
  }

  /** Adds (or replaces) sources of the node's state; the router and governor call this once they exist. */
  provide(providers: DebugProviders): void {
    this.#providers = { ...this.#providers, ...providers };
  }

  /** Records one answered registry request (wire it to the registry's onServed). */
  record(r: ServedRequest, now: number = Date.now()): void {
    const step = stepOf(r, now);
    const pull = this.#pullFor(r, now);
    pull.updated = step.at;
    pull.requests++;
    if (r.status >= 400) pull.failed++;
    if (r.method === "GET" && r.bytes > 0) pull.bytesBySource[r.source] = (pull.bytesBySource[r.source] ?? 0) + r.bytes;
    if (r.kind === "manifest" && !r.reference.includes(":") && !pull.image.includes(":")) {
      pull.image = `${r.registry}/${r.repository}:${r.reference}`;
    }
    if (pull.steps.length < MAX_STEPS_PER_PULL) pull.steps.push(step);
    else pull.omittedSteps++;
  }

  #pullFor(r: ServedRequest, now: number): PullRecord {
    const byTag = r.kind === "manifest" && !r.reference.includes(":");
    for (let i = this.#pulls.length - 1; i >= 0; i--) {
      const p = this.#pulls[i]!;
      if (p.registry !== r.registry || p.repository !== r.repository) continue;
      if (now - Date.parse(p.updated) > PULL_IDLE_MS) break;
      // A tag asked again after blobs were fetched is the next pull of the repository.
      if (byTag && p.steps.some((s) => s.kind === "blob")) break;
      return p;
    }
    const at = new Date(now).toISOString();
    const image = byTag ? `${r.registry}/${r.repository}:${r.reference}` : `${r.registry}/${r.repository}@${r.reference}`;
    const pull: PullRecord = {
      id: this.#nextId++,
      image,
      registry: r.registry,
      repository: r.repository,
      started: at,
      updated: at,
      steps: [],
      omittedSteps: 0,
      bytesBySource: {},
      requests: 0,
      failed: 0,
    };
    this.#pulls.push(pull);
    if (this.#pulls.length > MAX_PULLS) this.#pulls.shift();
    return pull;
  }

  snapshot(now: number = Date.now()): DebugSnapshot {
    const p = this.#providers;
    const router = safely(() => p.router?.());
    const keys = safely(() => p.advertisedKeys?.(MAX_KEYS_SHOWN)) ?? [];
    return {
      about: this.#about,
      startedAt: new Date(this.#started).toISOString(),
      uptimeSeconds: Math.round((now - this.#started) / 1000),
      node: router ? { peerId: router.peerId, addresses: router.addresses, routingTableSize: router.routingTableSize } : null,
      peers: router ? router.peers.slice(0, MAX_PEERS_SHOWN) : [],
      peerCount: router ? router.peers.length : 0,
      advertised: { total: router ? router.advertisedKeys : null, keys: keys.slice(0, MAX_KEYS_SHOWN) },
      governor: safely(() => p.governor?.()) ?? null,
      pulls: [...this.#pulls].reverse(),
    };
  }
}

/** A provider that throws must not take the debug page down with it. */
function safely<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

function stepOf(r: ServedRequest, now: number): PullStep {
  const step: PullStep = {
    at: new Date(now).toISOString(),
    kind: r.kind,
    method: r.method,
    reference: r.reference,
    source: r.source,
    status: r.status,
    bytes: r.bytes,
    ms: Math.round(r.ms * 10) / 10,
    attempts: r.attempts ?? [],
    explanation: explain(r),
  };
  if (r.digest !== undefined) step.digest = r.digest;
  if (r.target !== undefined) step.target = r.target;
  return step;
}

export function explain(r: ServedRequest): string {
  const before = r.attempts?.length ? `; before it: ${r.attempts.map(describeAttempt).join("; ")}` : "";
  switch (r.source) {
    case "peer":
      return `served by peer ${r.target ?? "(unknown)"}${before}`;
    case "upstream":
      return `fetched from upstream ${r.target ?? r.registry}${r.attempts?.length ? "" : " (no peer holds it)"}${before}`;
    case "shed":
      return "not served: the node is under memory pressure, the client falls back to the next host";
    case "miss":
      if (r.attempts === undefined) return "not held by this node, and peers and upstream were not asked (a peer's local-only request, or no mirror configured): the client falls back to the next host";
      if (r.attempts.length === 0) return "not found: no source to ask";
      return `not found anywhere: ${r.attempts.map(describeAttempt).join("; ")}`;
    default:
      if (r.status >= 400) return `answered ${r.status} from the ${r.source} store`;
      return `served from the ${r.source} store on this node`;
  }
}

function describeAttempt(a: Attempt): string {
  return `${a.source}${a.target ? ` ${a.target}` : ""} ${a.outcome} (${Math.round(a.ms)} ms)`;
}
