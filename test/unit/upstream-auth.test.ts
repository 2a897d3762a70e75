import { afterAll, describe, expect, test } from "bun:test";
import { AuthError, parseChallenge, TokenCache } from "../../src/mirror/auth.ts";
import { credentialKey, parseDockerConfig, DockerConfigCredentials, CredentialsFileError } from "../../src/mirror/credentials.ts";
import { mkdtempSync, rmSync, writeFileSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "kagami-creds-"));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("WWW-Authenticate", () => {
  test("parses Docker Hub's Bearer challenge", () => {
    const c = parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"');
    expect(c).toEqual({ scheme: "bearer", realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/nginx:pull" });
  });

  test("parses Basic, bare values, escapes, and prefers Bearer when both are offered", () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: "basic", realm: "Registry Realm" });
    expect(parseChallenge("Bearer realm=https://t.example/token, service=reg")).toEqual({ scheme: "bearer", realm: "https://t.example/token", service: "reg" });
    expect(parseChallenge('Bearer realm="a\\"b"')?.realm).toBe('a"b');
    expect(parseChallenge('Basic realm="x", Bearer realm="https://t/token"')?.scheme).toBe("bearer");
  });

  test("an unknown scheme or an empty header is no challenge", () => {
    expect(parseChallenge('Negotiate abc, Digest realm="x"')).toBeUndefined();
    expect(parseChallenge("")).toBeUndefined();
  });
});

type Call = { url: string; method: string; authorization: string | null; body: string };

function tokenServer(answer: (call: Call) => Response | Promise<Response>): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fn = async (input: string | URL | Request, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const call = { url: String(input), method: init?.method ?? "GET", authorization: headers.get("Authorization"), body: init?.body ? String(init.body) : "" };
    calls.push(call);
    return answer(call);
  };
  return { fetch: fn as typeof fetch, calls };
}

const challenge = { scheme: "bearer" as const, realm: "https://auth.example/token", service: "reg.example" };

describe("TokenCache", () => {
  test("fetches an anonymous token once and reuses it until it nears expiry", async () => {
    const server = tokenServer(() => Response.json({ token: "t1", expires_in: 300 }));
    const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: () => false, fetch: server.fetch });
    const [a, b] = await Promise.all([
      cache.token("k", challenge, "repository:x/y:pull", undefined),
      cache.token("k", challenge, "repository:x/y:pull", undefined),
    ]);
    expect([a, b]).toEqual(["t1", "t1"]);
    expect(await cache.token("k", challenge, "repository:x/y:pull", undefined)).toBe("t1");
    expect(server.calls.length).toBe(1);
    const url = new URL(server.calls[0]!.url);
    expect(url.searchParams.get("service")).toBe("reg.example");
    expect(url.searchParams.get("scope")).toBe("repository:x/y:pull");
    expect(server.calls[0]!.authorization).toBeNull();
  });

  test("an expired token is fetched again; a refused one is dropped", async () => {
    let n = 0;
    const server = tokenServer(() => Response.json({ access_token: `t${++n}`, expires_in: 0.001 }));
    const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: () => false, fetch: server.fetch });
    expect(await cache.token("k", challenge, "s", undefined)).toBe("t1");
    await Bun.sleep(5);
    expect(cache.cached("k")).toBeUndefined();
    expect(await cache.token("k", challenge, "s", undefined)).toBe("t2");
    cache.invalidate("k");
    expect(cache.cached("k")).toBeUndefined();
  });

  test("sends Basic credentials with the account, or an identity token as a refresh grant", async () => {
    const server = tokenServer(() => Response.json({ token: "t" }));
    const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: () => false, fetch: server.fetch });
    await cache.token("a", challenge, "s", { kind: "basic", username: "u", password: "p" });
    expect(server.calls[0]!.authorization).toBe(`Basic ${Buffer.from("u:p").toString("base64")}`);
    expect(new URL(server.calls[0]!.url).searchParams.get("account")).toBe("u");
    await cache.token("b", challenge, "s", { kind: "identity-token", token: "refresh" });
    expect(server.calls[1]!.method).toBe("POST");
    const form = new URLSearchParams(server.calls[1]!.body);
    expect(form.get("grant_type")).toBe("refresh_token");
    expect(form.get("refresh_token")).toBe("refresh");
    expect(form.get("service")).toBe("reg.example");
  });

  test("keeps at most maxEntries tokens, dropping the least recently used", async () => {
    const server = tokenServer(() => Response.json({ token: "t", expires_in: 300 }));
    const cache = new TokenCache({ timeoutMs: 1000, maxEntries: 2, allowPlainRealm: () => false, fetch: server.fetch });
    await cache.token("a", challenge, "s", undefined);
    await cache.token("b", challenge, "s", undefined);
    cache.cached("a");
    await cache.token("c", challenge, "s", undefined);
    expect(cache.size).toBe(2);
    expect(cache.cached("b")).toBeUndefined();
    expect(cache.cached("a")).toBe("t");
  });

  test("refuses to send credentials to a plain-HTTP realm it was not allowed", async () => {
    const server = tokenServer(() => Response.json({ token: "t" }));
    const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: (u) => u.hostname === "127.0.0.1", fetch: server.fetch });
    const plain = { ...challenge, realm: "http://auth.example/token" };
    await expect(cache.token("k", plain, "s", { kind: "basic", username: "u", password: "p" })).rejects.toBeInstanceOf(AuthError);
    expect(server.calls.length).toBe(0);
    expect(await cache.token("anon", plain, "s", undefined)).toBe("t");
    expect(await cache.token("local", { ...challenge, realm: "http://127.0.0.1:1/token" }, "s", { kind: "basic", username: "u", password: "p" })).toBe("t");
  });

  test("a failing, tokenless or non-JSON answer is an AuthError", async () => {
    for (const answer of [new Response("no", { status: 401 }), Response.json({}), new Response("<html>")]) {
      const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: () => false, fetch: tokenServer(() => answer).fetch });
      await expect(cache.token("k", challenge, "s", undefined)).rejects.toBeInstanceOf(AuthError);
    }
    const cache = new TokenCache({ timeoutMs: 1000, allowPlainRealm: () => false, fetch: tokenServer(() => Response.json({})).fetch });
    await expect(cache.token("k", { scheme: "bearer" }, "s", undefined)).rejects.toThrow("realm");
  });
});

describe("docker config.json credentials", () => {
  test("reads auth, username/password and identity tokens, keyed like references", () => {
    const creds = parseDockerConfig(
      JSON.stringify({
        auths: {
          "https://index.docker.io/v1/": { auth: Buffer.from("hub:pw:with:colons").toString("base64") },
          "ghcr.io": { username: "gh", password: "tok" },
          "https://registry.example:5000/v2/": { identitytoken: "refresh" },
          "broken.example": { auth: "!!!" },
        },
        credsStore: "desktop",
      }),
    );
    expect(creds.get("docker.io")).toEqual({ kind: "basic", username: "hub", password: "pw:with:colons" });
    expect(creds.get("ghcr.io")).toEqual({ kind: "basic", username: "gh", password: "tok" });
    expect(creds.get("registry.example:5000")).toEqual({ kind: "identity-token", token: "refresh" });
    expect(creds.has("broken.example")).toBe(false);
    expect(credentialKey("registry-1.docker.io")).toBe("docker.io");
  });

  test("a malformed file is an error at start; a later broken rewrite keeps the last good credentials", () => {
    const dir = tempDir();
    const path = join(dir, "config.json");
    writeFileSync(path, "{");
    expect(() => new DockerConfigCredentials(path)).toThrow(CredentialsFileError);
    writeFileSync(path, JSON.stringify({ auths: { "r.example": { username: "a", password: "b" } } }));
    const errors: Error[] = [];
    const creds = new DockerConfigCredentials(path, (e) => errors.push(e));
    expect(creds.get("r.example")).toEqual({ kind: "basic", username: "a", password: "b" });
    expect(creds.get("other.example")).toBeUndefined();
    writeFileSync(path, "{ half written");
    utimesSync(path, new Date(), new Date(Date.now() + 10_000));
    (creds as unknown as { checkedAt: number }).checkedAt = 0;
    expect(creds.get("r.example")).toEqual({ kind: "basic", username: "a", password: "b" });
    expect(errors.length).toBe(1);
  });

  test("picks up a rewritten file", async () => {
    const dir = tempDir();
    const path = join(dir, "config.json");
    writeFileSync(path, JSON.stringify({ auths: { "r.example": { username: "a", password: "1" } } }));
    const creds = new DockerConfigCredentials(path);
    writeFileSync(path, JSON.stringify({ auths: { "r.example": { username: "a", password: "22" } } }));
    utimesSync(path, new Date(), new Date(Date.now() + 10_000));
    // The file is looked at again at most every few seconds.
    (creds as unknown as { checkedAt: number }).checkedAt = 0;
    expect(creds.get("r.example")).toEqual({ kind: "basic", username: "a", password: "22" });
  });
});
