// HTTP to upstream registries: the endpoint of a registry name (docker.io is served by
// registry-1.docker.io; HTTPS unless the registry is listed as insecure), authentication
// on 401 (auth.ts), redirects followed by hand so a credential never leaves for another
// host (Docker Hub redirects blobs to a CDN), and a timeout on every wait for headers.
import { canonicalRegistry } from "../oci/index.ts";
import { AuthError, basicAuthorization, parseChallenge, pullScope, TokenCache, type Challenge } from "./auth.ts";
import type { CredentialSource } from "./credentials.ts";

export const USER_AGENT = "kagami";
const MAX_REDIRECTS = 5;
const MAX_BASIC_REGISTRIES = 1024;

export class UpstreamError extends Error {
  override readonly name = "UpstreamError";
  constructor(
    message: string,
    /** The upstream's status when it answered; undefined when it could not be reached. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface UpstreamClientOptions {
  /** Registries (host or host:port, as in references) reached over plain HTTP. */
  insecureRegistries: readonly string[];
  credentials: CredentialSource;
  /** Longest wait for response headers (and for a token). */
  timeoutMs: number;
  maxTokens?: number;
  fetch?: typeof fetch;
}

export interface UpstreamRequest {
  registry: string;
  repository: string;
  /** Below /v2/<repository>/: `manifests/<ref>` or `blobs/<digest>`. */
  path: string;
  method: "GET" | "HEAD";
  headers?: Record<string, string>;
  /** Aborts the request and its body; one per request (its listener stays until it aborts or is collected). */
  signal: AbortSignal;
}

export class UpstreamClient {
  private readonly insecure: Set<string>;
  private readonly tokens: TokenCache;
  private readonly fetchFn: typeof fetch;
  /** Registries that asked for Basic: later requests send it at once (bounded: ?ns= is the client's). */
  private readonly basicRegistries = new Set<string>();

  constructor(private readonly opts: UpstreamClientOptions) {
    this.insecure = new Set(opts.insecureRegistries.map((r) => canonicalRegistry(r.toLowerCase())));
    this.fetchFn = opts.fetch ?? fetch;
    this.tokens = new TokenCache({
      timeoutMs: opts.timeoutMs,
      maxEntries: opts.maxTokens ?? 1024,
      fetch: this.fetchFn,
      allowPlainRealm: (realm) => this.insecure.has(realm.host.toLowerCase()) || isLoopbackHost(realm.hostname),
    });
  }

  get cachedTokens(): number {
    return this.tokens.size;
  }

  /** `https://registry-1.docker.io`, `http://127.0.0.1:5001` (insecure). */
  endpoint(registry: string): string {
    const name = canonicalRegistry(registry.toLowerCase());
    const host = name === "docker.io" ? "registry-1.docker.io" : name;
    return `${this.insecure.has(name) ? "http" : "https"}://${host}`;
  }

  /**
   * Sends the request, authenticating on a 401 once. Resolves with the final response
   * (any status; the caller decides); rejects with UpstreamError when the registry cannot
   * be reached or the headers do not arrive in time, or when the caller's signal aborts.
   */
  async request(req: UpstreamRequest): Promise<Response> {
    const url = `${this.endpoint(req.registry)}/v2/${req.repository}/${req.path}`;
    const tokenKey = `${canonicalRegistry(req.registry)}\n${req.repository}`;
    const credential = this.opts.credentials.get(req.registry);
    let authorization = this.tokens.cached(tokenKey);
    if (authorization) authorization = `Bearer ${authorization}`;
    else if (credential?.kind === "basic" && this.basicRegistries.has(req.registry)) authorization = basicAuthorization(credential);

    let res = await this.send(url, req, authorization);
    if (res.status !== 401) return res;
    const challenge = parseChallenge(res.headers.get("WWW-Authenticate") ?? "");
    await res.body?.cancel();
    if (!challenge) throw new UpstreamError(`${req.registry} answered 401 without a usable challenge`, 401);
    this.tokens.invalidate(tokenKey);
    authorization = await this.authorize(req, tokenKey, challenge);
    res = await this.send(url, req, authorization);
    if (res.status === 401) {
      this.tokens.invalidate(tokenKey);
      await res.body?.cancel();
      throw new UpstreamError(`${req.registry} refused the ${credential ? "credentials" : "anonymous token"} for ${req.repository}`, 401);
    }
    return res;
  }

  private async authorize(req: UpstreamRequest, tokenKey: string, challenge: Challenge): Promise<string> {
    const credential = this.opts.credentials.get(req.registry);
    if (challenge.scheme === "basic") {
      if (credential?.kind !== "basic") throw new UpstreamError(`${req.registry} asks for Basic credentials and none are configured`, 401);
      if (this.basicRegistries.size >= MAX_BASIC_REGISTRIES) this.basicRegistries.clear();
      this.basicRegistries.add(req.registry);
      return basicAuthorization(credential);
    }
    try {
      // Our own scope, not the challenge's: a registry may name the scope of another action.
      return `Bearer ${await this.tokens.token(tokenKey, challenge, pullScope(req.repository), credential)}`;
    } catch (e) {
      if (e instanceof AuthError) throw new UpstreamError(`${req.registry}: ${e.message}`, 401);
      throw new UpstreamError(`${req.registry}: token server unreachable: ${(e as Error).message}`);
    }
  }

  /** One request with redirects followed by hand; the Authorization stays on its origin. */
  private async send(url: string, req: UpstreamRequest, authorization: string | undefined): Promise<Response> {
    let target = new URL(url);
    const origin = target.origin;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const headers = new Headers({ "User-Agent": USER_AGENT, ...req.headers });
      if (authorization && target.origin === origin) headers.set("Authorization", authorization);
      const res = await this.withHeaderTimeout(target, { method: req.method, headers, redirect: "manual" }, req.signal);
      if (res.status < 300 || res.status >= 400 || res.status === 304) return res;
      const location = res.headers.get("Location");
      await res.body?.cancel();
      if (!location) throw new UpstreamError(`${target.host} redirected without a Location`, res.status);
      target = new URL(location, target);
      if (target.protocol !== "https:" && target.protocol !== "http:") throw new UpstreamError(`redirect to ${target.protocol} refused`);
    }
    throw new UpstreamError(`more than ${MAX_REDIRECTS} redirects from ${req.registry}`);
  }

  /** fetch whose wait for headers is bounded; the body stays governed by the caller's signal. */
  private async withHeaderTimeout(url: URL, init: RequestInit, signal: AbortSignal): Promise<Response> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => controller.abort(new UpstreamError(`no response from ${url.host} within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    try {
      return await this.fetchFn(url, { ...init, signal: controller.signal });
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      if (controller.signal.aborted) throw controller.signal.reason;
      throw new UpstreamError(`${url.host} unreachable: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname.startsWith("127.") || hostname === "[::1]" || hostname === "::1";
}
