// A Docker/OCI token server for the distribution registry's `auth: token` mode: GET (basic
// credentials or anonymous) and POST (OAuth2 password grant, as containerd sends) on /token
// issue RS256 JWTs carrying an x5c header with a self-signed certificate; the registry trusts
// that certificate through its rootcertbundle. Anonymous clients get pull only; users get
// pull and push on every repository.
import { createPrivateKey, randomUUID, sign, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { rootScope, type Scope } from "./cleanup.ts";
import { run } from "./proc.ts";
import { requireTool } from "./require.ts";
import type { Credentials } from "./skopeo.ts";

export interface TokenServerOptions {
  /** Default 127.0.0.1. Must be reachable by the clients (the realm is http://hostname:port/token). */
  hostname?: string;
  /** Default: any free port. */
  port?: number;
  /** Default "kagami-rig-registry". */
  service?: string;
  /** Default "kagami-rig-issuer". */
  issuer?: string;
  /** Accounts granted pull and push. */
  users?: Credentials[];
  /** Grant pull to requests without credentials. Default true. */
  anonymousPull?: boolean;
  /** Token lifetime. Default 300 s. */
  ttlSeconds?: number;
  scope?: Scope;
}

export interface TokenRequest {
  method: string;
  /** Empty for anonymous. */
  account: string;
  /** Requested scopes, e.g. repository:library/app:pull,push */
  scopes: string[];
  status: number;
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate to list in the registry's rootcertbundle. */
  certPath: string;
  /** Every request answered so far, in order. */
  readonly requests: readonly TokenRequest[];
  stop(): Promise<void>;
}

interface Access {
  type: string;
  name: string;
  actions: string[];
}

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const scope = opts.scope ?? rootScope;
  const dir = scope.tempDir("token");
  const { key, certDer, certPath } = await selfSignedCert(dir);
  const service = opts.service ?? "kagami-rig-registry";
  const issuer = opts.issuer ?? "kagami-rig-issuer";
  const ttl = opts.ttlSeconds ?? 300;
  const users = new Map((opts.users ?? []).map((u) => [u.username, u.password]));
  const anonymousPull = opts.anonymousPull ?? true;
  const requests: TokenRequest[] = [];

  const issue = (account: string, scopes: string[]): string => {
    const access: Access[] = [];
    for (const s of scopes) {
      const [type, name, actions] = parseScope(s);
      if (!type || !name) continue;
      const wanted = (actions ?? "").split(",").filter(Boolean);
      const allowed = account ? wanted.filter((a) => a === "pull" || a === "push") : anonymousPull ? wanted.filter((a) => a === "pull") : [];
      access.push({ type, name, actions: allowed });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer] };
    const claims = { iss: issuer, sub: account, aud: service, exp: now + ttl, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign("RSA-SHA256", Buffer.from(input), key))}`;
  };

  const handle = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname !== "/token") return new Response("not found", { status: 404 });
    let account = "";
    let password: string | undefined;
    let scopes = url.searchParams.getAll("scope");
    if (req.method === "POST") {
      const form = new URLSearchParams(await req.text());
      if (form.get("grant_type") === "password") {
        account = form.get("username") ?? "";
        password = form.get("password") ?? "";
      }
      scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
    } else {
      const basic = req.headers.get("authorization")?.match(/^Basic\s+(.+)$/i);
      if (basic) {
        const decoded = Buffer.from(basic[1]!, "base64").toString();
        const colon = decoded.indexOf(":");
        account = decoded.slice(0, colon);
        password = decoded.slice(colon + 1);
      }
    }
    scopes = scopes.flatMap((s) => s.split(" ")).filter(Boolean);
    const authenticated = account !== "" && users.get(account) === password;
    const deny = (account !== "" && !authenticated) || (account === "" && !anonymousPull);
    const status = deny ? 401 : 200;
    requests.push({ method: req.method, account, scopes, status });
    if (deny) return Response.json({ errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }, { status, headers: { "WWW-Authenticate": `Basic realm="${service}"` } });
    const token = issue(account, scopes);
    return Response.json({ token, access_token: token, expires_in: ttl, issued_at: new Date().toISOString() });
  };

  const server = Bun.serve({ hostname: opts.hostname ?? "127.0.0.1", port: opts.port ?? 0, fetch: handle });
  const release = scope.defer(
    `token server :${server.port}`,
    () => server.stop(true),
    () => void server.stop(true),
  );
  const host = server.hostname?.includes(":") ? `[${server.hostname}]` : server.hostname;
  return {
    realm: `http://${host}:${server.port}/token`,
    service,
    issuer,
    certPath,
    requests,
    async stop() {
      await server.stop(true);
      release();
    },
  };
}

/** "repository:name/with/slashes:pull,push" -> [type, name, actions]; names never contain ':' except a port-less host. */
function parseScope(s: string): [string | undefined, string | undefined, string | undefined] {
  const first = s.indexOf(":");
  const last = s.lastIndexOf(":");
  if (first < 0 || last === first) return [undefined, undefined, undefined];
  return [s.slice(0, first), s.slice(first + 1, last), s.slice(last + 1)];
}

function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

async function selfSignedCert(dir: string): Promise<{ key: KeyObject; certDer: string; certPath: string }> {
  const openssl = requireTool("openssl");
  const keyPath = join(dir, "token.key");
  const certPath = join(dir, "token.crt");
  await run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", "/CN=kagami-rig-token"]);
  const pem = readFileSync(certPath, "utf8");
  const certDer = pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  return { key: createPrivateKey(readFileSync(keyPath)), certDer, certPath };
}
