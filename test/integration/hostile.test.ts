// At least 200 malformed or malicious requests against a real kagami process: each gets a
// 4xx (an OCI error body whenever it reached the registry), the server keeps serving, and
// strace shows no file outside the data dir was opened while they were answered.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { startKagami } from "../../scripts/e2e/kagami.ts";
import { spawnProcess, waitFor, type Proc } from "../../scripts/e2e/proc.ts";
import { requireTools } from "../../scripts/e2e/require.ts";
import { LocalStore } from "../../src/store/local.ts";
import { makeSeedImage } from "../store-conformance.ts";

const SECRET = "kagami-canary-7f3e";
let dir: string;
let dataDir: string;
let port: number;
let kagami: Proc;
let strace: Proc;
const image = makeSeedImage({ registry: "docker.io", repository: "library/app", tag: "v1" });
const [layerDigest] = [...image.blobs.keys()];

beforeAll(async () => {
  requireTools("strace");
  dir = tempDir("hostile");
  dataDir = join(dir, "data");
  mkdirSync(join(dir, "outside"));
  writeFileSync(join(dir, "outside", "secret"), SECRET);
  writeFileSync(join(dir, "secret"), SECRET);
  const store = await LocalStore.open(dataDir);
  for (const [digest, b] of image.blobs) await store.ingest({ mediaType: b.mediaType, digest, size: b.bytes.byteLength }, b.bytes);
  await store.tag(image.reference, image.root);
  await store.close();
  const node = await startKagami({ name: "kagami-hostile", dataDir, logLevel: "info" });
  kagami = node.proc;
  port = Number(new URL(node.url).port);
  strace = spawnProcess({ name: "strace", cmd: ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,stat,newfstatat,statx", "-o", join(dir, "strace.log"), "-p", String(kagami.pid)] });
  await waitFor("strace to attach", () => strace.log().length >= 0 && Bun.sleep(500).then(() => true));
});

afterAll(async () => {
  await teardown();
});

const D = `sha256:${"a".repeat(64)}`;
function hostilePaths(): string[] {
  const names = ["..", "../..", "a/../b", "a/./b", "%2e%2e", "a%2fb", "a%2Fb", "%2e%2e%2f%2e%2e", "A", "UPPER/case", "a//b", "-a", "a-", "a..b", "a\\b", "a%00b", "a%20b", "x".repeat(300), "a/".repeat(130) + "a", "a%252fb", "a;b", "a?b=", "*", "a|b", "$(id)", "a\u00e9b", "%c0%af", "a/%2e%2e/b", ".a", "_a", "a__", "a/-b"];
  const digests = [
    "sha256:../../../secret",
    "sha256:..%2f..%2fsecret",
    `sha256:${"a".repeat(63)}`,
    `sha256:${"a".repeat(65)}`,
    `sha256:${"A".repeat(64)}`,
    `sha256:${"g".repeat(64)}`,
    `sha512:${"a".repeat(64)}`,
    `md5:${"a".repeat(32)}`,
    "sha256:",
    ":",
    "latest",
    `sha256:${"a".repeat(64)}%00`,
    `sha256%3a${"a".repeat(64)}`,
    "..",
  ];
  const paths: string[] = [];
  for (const n of names) {
    paths.push(`/v2/${n}/manifests/latest`, `/v2/${n}/blobs/${D}`);
  }
  for (const d of digests) {
    paths.push(`/v2/library/app/blobs/${d}`, `/v2/library/app/manifests/${d}`);
  }
  paths.push(
    "/v2/library/app/manifests/..",
    "/v2/library/app/manifests/-bad",
    `/v2/library/app/manifests/${"t".repeat(200)}`,
    "/v2/library/app/tags/list",
    "/v2/library/app/blobs/uploads/",
    "/v2/_catalog",
    "/v2/library/app/manifests/v1?ns=../../etc",
    "/v2/library/app/manifests/v1?ns=host%2f..",
    "/v2/library/app/manifests/v1?ns=a b",
    `/v2/library/app/manifests/v1?ns=${"h".repeat(300)}`,
    "/v2/library/app/referrers/" + D,
    "/etc/passwd",
    "/../../../etc/passwd",
    "/v2/../../etc/passwd",
    "/blobs/sha256/" + "a".repeat(64),
    "/debug/pprof",
    "/v1/_ping",
  );
  return paths;
}

interface Outcome {
  what: string;
  status: number;
  body: string;
}

async function raw(request: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    let data = "";
    const timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(request.slice(0, 60))}`)), 5000);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          s.write(request);
        },
        data(_s, chunk) {
          data += chunk.toString();
        },
        close() {
          clearTimeout(timer);
          const status = Number(data.match(/^HTTP\/1\.1 (\d{3})/)?.[1] ?? 0);
          resolve({ what: request.slice(0, 80), status, body: data });
        },
        error(_s, e) {
          clearTimeout(timer);
          reject(e);
        },
      },
    }).catch(reject);
  });
}

test("200+ hostile requests get 4xx, the server keeps serving, nothing outside the data dir is opened", async () => {
  const outcomes: Outcome[] = [];
  const get = async (path: string, init: RequestInit = {}) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, init);
    outcomes.push({ what: `${init.method ?? "GET"} ${path.slice(0, 80)}`, status: r.status, body: await r.text() });
  };
  for (const p of hostilePaths()) {
    await get(p);
    await get(p, { method: "HEAD" });
  }
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    await get(`/v2/library/app/blobs/${layerDigest}`, { method });
    await get("/v2/library/app/manifests/v1", { method });
  }
  for (const range of ["bytes=0-1,2-3", "bytes=9-1", "bytes=-0", "bytes=99999999-", "lines=0-1", "bytes=a-b", "bytes=" + "9".repeat(30) + "-", "bytes=--1"]) {
    await get(`/v2/library/app/blobs/${layerDigest}`, { headers: { Range: range } });
  }
  // Raw requests a fetch client would normalise or refuse to send.
  const rawRequests = [
    `GET /v2/library/app/blobs/sha256:${"a".repeat(63)}\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library%2f..%2f..%2fsecret/blobs/${D} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(70_000)}\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 300 }, (_, i) => `X-H${i}: v`).join("\r\n")}\r\nConnection: close\r\n\r\n`,
    `GET ${"/v2".repeat(5000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/blobs/${layerDigest} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\0\r\nConnection: close\r\n\r\n`,
    `BREW /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/manifests/v1 HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET \\..\\..\\secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/blobs/sha256:..%5c..%5csecret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    `GET /v2/library/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n`,
  ];
  const garbage = new Set(
    [rawRequests[0]!, rawRequests[6]!, rawRequests[7]!, rawRequests[8]!, rawRequests[9]!].map((r) => r.slice(0, 80)),
  );
  for (const r of rawRequests) outcomes.push(await raw(r));

  expect(outcomes.length).toBeGreaterThanOrEqual(200);
  for (const o of outcomes) {
    // Requests that are not HTTP/1.1 at all (a NUL in the request line, an unknown method or
    // version) are refused by Bun's HTTP parser before the registry sees them: 400, 505, or
    // a closed connection. Everything that is HTTP gets a 4xx.
    const protocolGarbage = garbage.has(o.what) && (o.status === 0 || o.status === 505);
    if (!protocolGarbage && (o.status < 400 || o.status >= 500)) throw new Error(`${o.what} answered ${o.status}: ${o.body.slice(0, 200)}`);
    expect(o.body).not.toContain(SECRET);
    expect(o.body).not.toMatch(/\n\s+at /);
    if (o.body.includes("application/json") || o.body.startsWith("{")) {
      const json = o.body.slice(o.body.indexOf("{"));
      if (json.length > 0 && !o.what.startsWith("HEAD")) {
        const parsed = JSON.parse(json) as { errors: { code: string; message: string }[] };
        expect(parsed.errors[0]!.code).toMatch(/^[A-Z_]+$/);
      }
    }
  }

  // Still serving real content.
  const ok = await fetch(`http://127.0.0.1:${port}/v2/library/app/manifests/v1`);
  expect(ok.status).toBe(200);
  expect(ok.headers.get("Docker-Content-Digest")).toBe(image.root.digest);
  expect(kagami.running()).toBe(true);

  await strace.stop();
  const opened = readFileSync(join(dir, "strace.log"), "utf8")
    .split("\n")
    .map((l) => l.match(/"([^"]*)"/)?.[1])
    .filter((p): p is string => p !== undefined && p.startsWith("/"));
  // strace saw the store being read (so an empty "outside" list is not vacuous).
  expect(opened.some((p) => p.startsWith(`${dataDir}/`))).toBe(true);
  const outside = opened.filter((p) => !p.startsWith(dataDir + "/") && !/^\/(proc|sys|dev)\//.test(p));
  expect(outside).toEqual([]);
  expect(opened.some((p) => p.includes("secret"))).toBe(false);
});
