// Registry authentication as clients do it: a 401 carries `WWW-Authenticate`; for Bearer,
// kagami asks the named token server (realm) for a pull token on the repository, anonymously
// or with the registry's credential, caches it until shortly before it expires and retries;
// for Basic it sends the credential. The cache is bounded and coalesces concurrent fetches
// of one token.
import type { Credential } from "./credentials.ts";

export interface Challenge {
  scheme: "bearer" | "basic";
  realm?: string;
  service?: string;
  scope?: string;
}

export class AuthError extends Error {
  override readonly name = "AuthError";
}

/**
 * Parses a WWW-Authenticate value; the first Bearer or Basic challenge wins (Bearer first),
 * other schemes are skipped. Returns undefined when neither is offered.
 */
export function parseChallenge(header: string): Challenge | undefined {
  const found: Challenge[] = [];
  let current: Challenge | undefined;
  // scheme tokens and key=value / key="quoted" params, separated by commas and spaces
  const token = /\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?/g;
  for (const m of header.matchAll(token)) {
    const [, name = "", quoted, bare] = m;
    if (quoted === undefined && bare === undefined) {
      const scheme = name.toLowerCase();
      current = scheme === "bearer" || scheme === "basic" ? { scheme } : undefined;
      if (current) found.push(current);
      continue;
    }
    if (!current) continue;
    const value = quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : (bare ?? "");
    const key = name.toLowerCase();
    if (key === "realm" || key === "service" || key === "scope") current[key] = value;
  }
  return found.find((c) => c.scheme === "bearer") ?? found[0];
}

export function basicAuthorization(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

export interface TokenCacheOptions {
  /** Most tokens kept; the least recently used leaves first. */
  maxEntries?: number;
  /** Timeout of one token request. */
  timeoutMs: number;
  /** Is a credential allowed to go to this plain-HTTP realm? (registries in --insecure-registries) */
  allowPlainRealm: (realm: URL) => boolean;
  fetch?: typeof fetch;
}

/** Tokens are used until this fraction of their lifetime, so none expires in flight. */
const LIFETIME_USED = 0.9;
/** Distribution's default when a token response has no expires_in. */
const DEFAULT_EXPIRES_S = 60;
const MAX_TOKEN_RESPONSE_BYTES = 1 << 20;

export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  private readonly maxEntries: number;
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: TokenCacheOptions) {
    this.maxEntries = opts.maxEntries ?? 1024;
    this.fetchFn = opts.fetch ?? fetch;
  }

  get size(): number {
    return this.tokens.size;
  }

  /** A cached, unexpired token for the key. */
  cached(key: string): string | undefined {
    const hit = this.tokens.get(key);
    if (!hit) return undefined;
    if (hit.expiresAt <= Date.now()) {
      this.tokens.delete(key);
      return undefined;
    }
    // Map order is recency order.
    this.tokens.delete(key);
    this.tokens.set(key, hit);
    return hit.token;
  }

  /** Drops a token the registry refused. */
  invalidate(key: string): void {
    this.tokens.delete(key);
  }

  /** The token for key, fetched from the challenge's realm when none is cached. */
  async token(key: string, challenge: Challenge, scope: string, credential: Credential | undefined): Promise<string> {
    const hit = this.cached(key);
    if (hit) return hit;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(key, challenge, scope, credential).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async fetchToken(key: string, challenge: Challenge, scope: string, credential: Credential | undefined): Promise<string> {
    if (!challenge.realm) throw new AuthError("Bearer challenge without a realm");
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new AuthError(`invalid token realm ${JSON.stringify(challenge.realm.slice(0, 100))}`);
    }
    if (realm.protocol !== "https:" && realm.protocol !== "http:") throw new AuthError(`token realm ${realm.protocol} is not HTTP(S)`);
    if (credential && realm.protocol === "http:" && !this.opts.allowPlainRealm(realm)) {
      throw new AuthError(`refusing to send credentials to the plain-HTTP token realm ${realm.host}`);
    }
    const signal = AbortSignal.timeout(this.opts.timeoutMs);
    let res: Response;
    if (credential?.kind === "identity-token") {
      // OAuth2 refresh-token grant, as docker does with an identity token.
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: credential.token, client_id: "kagami", scope });
      if (challenge.service) form.set("service", challenge.service);
      res = await this.fetchFn(realm, { method: "POST", body: form, signal, redirect: "error" });
    } else {
      const url = new URL(realm);
      if (challenge.service) url.searchParams.set("service", challenge.service);
      url.searchParams.set("scope", scope);
      const headers = new Headers();
      if (credential?.kind === "basic") {
        url.searchParams.set("account", credential.username);
        headers.set("Authorization", basicAuthorization(credential));
      }
      res = await this.fetchFn(url, { headers, signal, redirect: "error" });
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new AuthError(`token server ${realm.host} answered ${res.status}`);
    }
    const length = Number(res.headers.get("Content-Length") ?? 0);
    if (length > MAX_TOKEN_RESPONSE_BYTES) {
      await res.body?.cancel();
      throw new AuthError("token response is too large");
    }
    const text = await res.text();
    if (text.length > MAX_TOKEN_RESPONSE_BYTES) throw new AuthError("token response is too large");
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new AuthError("token response is not JSON");
    }
    const token = typeof body.token === "string" && body.token ? body.token : typeof body.access_token === "string" ? body.access_token : "";
    if (!token) throw new AuthError("token response carries no token");
    const expiresIn = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : DEFAULT_EXPIRES_S;
    this.store(key, { token, expiresAt: Date.now() + expiresIn * 1000 * LIFETIME_USED });
    return token;
  }

  private store(key: string, entry: CachedToken): void {
    this.tokens.delete(key);
    this.tokens.set(key, entry);
    while (this.tokens.size > this.maxEntries) {
      const oldest = this.tokens.keys().next().value;
      if (oldest === undefined) break;
      this.tokens.delete(oldest);
    }
  }
}
