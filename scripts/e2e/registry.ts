// The upstream of the tests: Debian's `docker-registry` (distribution 2.8) with its own
// config, filesystem storage in a temp dir, open or behind token auth, on 127.0.0.x or inside
// a namespace. Its JSON log has one "response completed" line per request, which is how
// tests count what the upstream served ("each blob exactly once", "second pull: 0 requests").
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { rootScope, type Scope } from "./cleanup.ts";
import { freePort, spawnProcess, waitFor, waitForHttp, type Proc } from "./proc.ts";
import { requireTool } from "./require.ts";
import type { TokenServer } from "./token-server.ts";

/** Where a process runs inside a namespace: the namespace and its address there. */
export interface NsTarget {
  netns: string;
  ip: string;
}

export interface RegistryOptions {
  /** Default "registry". */
  name?: string;
  /** host:port. Default 127.0.0.1:<free port>, or <node.ip>:5000 inside a namespace. */
  addr?: string;
  /** Run inside this namespace. */
  node?: NsTarget;
  /** Token auth: the registry trusts this server's certificate; clients get tokens from its realm. */
  tokenAuth?: TokenServer;
  /** Extra top-level config keys merged over the generated ones (e.g. { proxy: {...} }). */
  extraConfig?: Record<string, unknown>;
  scope?: Scope;
}

export type RequestKind = "base" | "manifest" | "blob" | "upload" | "tags" | "catalog" | "other";

export interface RegistryRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  status: number;
  /** Response body bytes written. */
  bytes: number;
  kind: RequestKind;
  repo?: string;
  /** Tag or digest of a manifest, digest of a blob. */
  reference?: string;
}

export interface RequestFilter {
  method?: string;
  kind?: RequestKind;
  repo?: string;
  reference?: string;
  status?: number;
  /** Only 2xx responses. */
  ok?: boolean;
}

/** A position in the registry's log; requests(since) returns only what came after it. */
export interface LogMark {
  readonly count: number;
}

export interface Registry {
  readonly name: string;
  /** host:port, as skopeo and kagami's ?ns= use it. */
  readonly host: string;
  readonly url: string;
  readonly proc: Proc;
  readonly storageDir: string;
  readonly configPath: string;
  /** Requests logged so far (waits until the log is quiet, so just-finished responses are in). */
  requests(filter?: RequestFilter & { since?: LogMark }): Promise<RegistryRequest[]>;
  count(filter?: RequestFilter & { since?: LogMark }): Promise<number>;
  /** GET blob responses with 2xx per digest, partial ones included: "served each blob exactly once". */
  blobServes(since?: LogMark): Promise<Map<string, number>>;
  /** Body bytes sent by GET blob responses. */
  blobBytes(since?: LogMark): Promise<number>;
  mark(): Promise<LogMark>;
  stop(): Promise<void>;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const bin = requireTool("docker-registry");
  const scope = opts.scope ?? rootScope;
  const name = opts.name ?? "registry";
  const dir = scope.tempDir(name);
  const storageDir = join(dir, "storage");
  const addr = opts.addr ?? (opts.node ? `${opts.node.ip}:5000` : `127.0.0.1:${await freePort()}`);
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: "info", formatter: "json", accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: storageDir }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr, secret: "kagami-rig-secret" },
    ...(opts.tokenAuth
      ? {
          auth: {
            token: {
              realm: opts.tokenAuth.realm,
              service: opts.tokenAuth.service,
              issuer: opts.tokenAuth.issuer,
              rootcertbundle: opts.tokenAuth.certPath,
            },
          },
        }
      : {}),
    ...opts.extraConfig,
  };
  const configPath = join(dir, "config.yml");
  writeFileSync(configPath, stringify(config));
  const proc = spawnProcess({ name, cmd: [bin, "serve", configPath], netns: opts.node?.netns, logPath: join(dir, "registry.log"), scope });
  const url = `http://${addr}`;
  // /v2/ answers 401 under token auth: up all the same.
  await waitForHttp(`${url}/v2/`, { netns: opts.node?.netns, proc, accept: (s) => s === 200 || s === 401 });

  const requests = async (filter: RequestFilter & { since?: LogMark } = {}) => {
    const all = await settledLog(proc.logPath);
    return all.slice(filter.since?.count ?? 0).filter((r) => matches(r, filter));
  };
  return {
    name,
    host: addr,
    url,
    proc,
    storageDir,
    configPath,
    requests,
    count: async (filter) => (await requests(filter)).length,
    async blobServes(since) {
      const counts = new Map<string, number>();
      for (const r of await requests({ since, method: "GET", kind: "blob", ok: true })) counts.set(r.reference!, (counts.get(r.reference!) ?? 0) + 1);
      return counts;
    },
    async blobBytes(since) {
      return (await requests({ since, method: "GET", kind: "blob" })).reduce((n, r) => n + r.bytes, 0);
    },
    async mark() {
      return { count: (await settledLog(proc.logPath)).length };
    },
    async stop() {
      await proc.stop();
    },
  };
}

function matches(r: RegistryRequest, f: RequestFilter): boolean {
  return (
    (f.method === undefined || r.method === f.method) &&
    (f.kind === undefined || r.kind === f.kind) &&
    (f.repo === undefined || r.repo === f.repo) &&
    (f.reference === undefined || r.reference === f.reference) &&
    (f.status === undefined || r.status === f.status) &&
    (!f.ok || (r.status >= 200 && r.status < 300))
  );
}

/**
 * The registry writes a request's log line just after the response's last byte, so a client
 * can finish before its line exists. Read until the log has been unchanged for 150 ms
 * (at most 3 s).
 */
async function settledLog(path: string): Promise<RegistryRequest[]> {
  let text = readFileSync(path, "utf8");
  let quietSince = Date.now();
  const deadline = Date.now() + 3000;
  while (Date.now() - quietSince < 150 && Date.now() < deadline) {
    await Bun.sleep(30);
    const next = readFileSync(path, "utf8");
    if (next.length !== text.length) {
      text = next;
      quietSince = Date.now();
    }
  }
  return parseRegistryLog(text);
}

/**
 * Parses distribution's JSON log into one entry per request: "response completed[ with
 * error]" lines, plus "error authorizing context" lines, which are the only trace of a 401
 * under token auth. A response cut short by the client still logs 200 with the bytes written.
 */
export function parseRegistryLog(text: string): RegistryRequest[] {
  const out: RegistryRequest[] = [];
  for (const line of text.split("\n")) {
    const completed = line.includes('"msg":"response completed');
    const unauthorized = line.includes('"msg":"error authorizing context');
    if (!completed && !unauthorized) continue;
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    const uri = String(e["http.request.uri"] ?? "");
    const path = uri.split("?")[0] ?? "";
    out.push({
      method: String(e["http.request.method"] ?? ""),
      path,
      status: completed ? Number(e["http.response.status"] ?? 0) : 401,
      bytes: Number(e["http.response.written"] ?? 0),
      ...classify(path),
    });
  }
  return out;
}

function classify(path: string): Pick<RegistryRequest, "kind" | "repo" | "reference"> {
  if (path === "/v2/" || path === "/v2") return { kind: "base" };
  if (path === "/v2/_catalog") return { kind: "catalog" };
  let m = path.match(/^\/v2\/(.+)\/manifests\/([^/]+)$/);
  if (m) return { kind: "manifest", repo: m[1], reference: decodeURIComponent(m[2]!) };
  m = path.match(/^\/v2\/(.+)\/blobs\/uploads\/.*$/);
  if (m) return { kind: "upload", repo: m[1] };
  m = path.match(/^\/v2\/(.+)\/blobs\/([^/]+)$/);
  if (m) return { kind: "blob", repo: m[1], reference: decodeURIComponent(m[2]!) };
  m = path.match(/^\/v2\/(.+)\/tags\/list$/);
  if (m) return { kind: "tags", repo: m[1] };
  return { kind: "other" };
}

/** Waits until the registry has logged at least n requests matching filter (bounded). */
export function waitForRequests(registry: Registry, n: number, filter: RequestFilter & { since?: LogMark } = {}, timeoutMs = 10_000): Promise<true> {
  return waitFor(`${n} matching requests in ${registry.name}'s log`, async () => (await registry.count(filter)) >= n || undefined, { timeoutMs, intervalMs: 200 });
}
