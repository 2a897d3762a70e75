// Benchmark of the peer path: node A holds the blobs, node C holds nothing and serves them
// from A (two kagami processes on 127.0.0.2 and 127.0.0.4, static bootstrap, mDNS off).
// (a) time to first byte of a small peer-hit blob through C, p50/p99 over N requests;
// (b) throughput of a large blob through C versus straight from A, rounds alternating, medians;
// (c) C's RSS and CPU time during (b) (CPU time is steadier than throughput on a shared
// machine). Also the ceiling that verification sets: C hashes every byte (sha256), so no
// verified path beats this machine's sha256 speed, measured here in the same run. Two proxies
// that verify nothing sit in front of A on 127.0.0.3 in the same rounds, as the reference for
// any path through userspace: nginx (proxy_pass, buffering on, one worker) and the least a Bun
// server can do (fetch from A, hand the body to the response).
//   bun scripts/bench/peer.ts [--requests 500] [--size-mib 1024] [--rounds 3]
// Public equivalent of (b): `curl -o /dev/null -w '%{speed_download}'` against A, then C.
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { spawnProcess, waitFor, waitForHttp, waitForPort, freePort, run } from "../e2e/proc.ts";
import { tempDir, teardown } from "../e2e/cleanup.ts";
import { requireTools } from "../e2e/require.ts";
import { LocalStore } from "../../src/store/local.ts";
import { DigestVerifier } from "../../src/store/verify.ts";
import { loadOrCreatePeerKey } from "../../src/routing/peer-key.ts";
import type { Digest } from "../../src/oci/index.ts";
import { peakRss, sampleRss } from "./rss.ts";

const { values } = parseArgs({
  options: { requests: { type: "string", default: "500" }, "size-mib": { type: "string", default: "1024" }, rounds: { type: "string", default: "3" } },
});
const requests = Number(values.requests);
const rounds = Math.max(1, Number(values.rounds));
const sizeMib = Number(values["size-mib"]);
requireTools("curl", "nginx");
const A = "127.0.0.2";
const C = "127.0.0.4";
/** The reference proxies. */
const B = "127.0.0.3";

async function ingest(dataDir: string, path: string): Promise<Digest> {
  const v = new DigestVerifier(`sha256:${"0".repeat(64)}` as Digest);
  for await (const chunk of Bun.file(path).stream()) v.update(chunk);
  const digest = v.digest();
  const store = await LocalStore.open(dataDir);
  await store.ingest({ mediaType: "application/octet-stream", digest, size: Bun.file(path).size }, Bun.file(path).stream());
  await store.close();
  return digest;
}

async function curl(url: string): Promise<{ seconds: number; bytes: number }> {
  const r = await run(["curl", "-sf", "--max-time", "600", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url], { timeoutMs: 650_000 });
  const [bytes, seconds] = r.stdout.trim().split(" ").map(Number);
  return { bytes: bytes ?? 0, seconds: seconds ?? 0 };
}

async function main(): Promise<void> {
  const dir = tempDir("bench-peer");
  const dataA = join(dir, "a");
  const dataC = join(dir, "c");
  mkdirSync(dataC, { recursive: true });
  console.error(`making a ${sizeMib} MiB blob on A…`);
  await run(["sh", "-c", `head -c ${sizeMib}M /dev/urandom > ${dir}/big.bin && head -c 4096 /dev/urandom > ${dir}/small.bin`], { timeoutMs: 300_000 });
  const big = await ingest(dataA, `${dir}/big.bin`);
  const small = await ingest(dataA, `${dir}/small.bin`);
  await run(["rm", "-f", `${dir}/big.bin`]);

  const registryPort = await freePort(A);
  const routerPort = await freePort(A);
  const idA = peerIdFromPrivateKey((await loadOrCreatePeerKey(dataA)).key).toString();
  const bin = process.env.KAGAMI_BIN ? [process.env.KAGAMI_BIN] : ["bun", "src/main.ts"];
  const start = async (name: string, host: string, dataDir: string, bootstrap: string[]) =>
    spawnProcess({
      name,
      cmd: [...bin, "serve", "--mdns=false", "--log-level=warn", `--data-dir=${dataDir}`, `--registry-addr=${host}:${registryPort}`,
        `--router-addr=${host}:${routerPort}`, `--metrics-addr=${host}:${await freePort(host)}`, ...bootstrap],
    });
  await start("kagami-a", A, dataA, []);
  const c = await start("kagami-c", C, dataC, ["--bootstrap-kind=static", `--static-bootstrap-peers=/ip4/${A}/tcp/${routerPort}/p2p/${idA}`]);
  await waitForHttp(`http://${A}:${registryPort}/readyz`);
  await waitForHttp(`http://${C}:${registryPort}/readyz`);
  const via = (host: string, digest: Digest) => `http://${host}:${registryPort}/v2/bench/blob/blobs/${digest}?ns=bench.test`;
  await waitFor("C finds the blobs on A", async () => (await fetch(via(C, small), { method: "HEAD" })).status === 200 && (await fetch(via(C, big), { method: "HEAD" })).status === 200, { timeoutMs: 30_000 });

  const proxies = await startReferenceProxies(dir, via(A, big));

  const ttfb: number[] = [];
  for (let i = 0; i < requests; i++) {
    const t = performance.now();
    const res = await fetch(via(C, small));
    const reader = res.body!.getReader();
    await reader.read();
    ttfb.push(performance.now() - t);
    while (!(await reader.read()).done);
    if (res.status !== 200) throw new Error(`request ${i}: ${res.status}`);
  }
  ttfb.sort((x, y) => x - y);
  const pct = (p: number) => ttfb[Math.min(ttfb.length - 1, Math.floor((p / 100) * ttfb.length))]!;

  const gbps = (r: { bytes: number; seconds: number }) => r.bytes / r.seconds / 1e9;
  const directs: number[] = [];
  const throughs: number[] = [];
  const byProxy = new Map<string, number[]>(proxies.map((p) => [p.name, []]));
  const rss = sampleRss(c.pid, 50);
  let cpu = 0;
  for (let round = 0; round < rounds; round++) {
    const direct = await curl(via(A, big));
    const cpuBefore = cpuSeconds(c.pid);
    const through = await curl(via(C, big));
    cpu += cpuSeconds(c.pid) - cpuBefore;
    for (const r of [direct, through]) if (r.bytes !== sizeMib * 2 ** 20) throw new Error(`got ${r.bytes} bytes`);
    directs.push(gbps(direct));
    throughs.push(gbps(through));
    for (const p of proxies) {
      const r = await curl(p.url);
      if (r.bytes !== sizeMib * 2 ** 20) throw new Error(`${p.name}: got ${r.bytes} bytes`);
      byProxy.get(p.name)!.push(gbps(r));
    }
  }
  const peak = peakRss(rss);
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const [direct, through] = [median(directs), median(throughs)];
  const hash = sha256Speed();
  const gib = (sizeMib / 1024) * rounds;

  console.log(`\nPeer path on loopback (A holds, C fetches from A), Bun ${Bun.version}\n`);
  console.log("| measure | value | target |");
  console.log("|---|---|---|");
  console.log(`| (a) TTFB of a 4 KiB peer-hit blob through C, p50 (${requests} requests) | ${pct(50).toFixed(2)} ms | <= 5 ms |`);
  console.log(`| (a) same, p99 | ${pct(99).toFixed(2)} ms | |`);
  const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(", ");
  console.log(`| (b) ${sizeMib} MiB straight from A, median of ${rounds} | ${direct.toFixed(2)} GB/s (${list(directs)}) | |`);
  console.log(`| (b) ${sizeMib} MiB through C, median of ${rounds} | ${through.toFixed(2)} GB/s (${list(throughs)}) | |`);
  console.log(`| (b) ratio through C / from A | ${(through / direct).toFixed(3)} | >= 0.85 |`);
  for (const [name, xs] of byProxy) {
    console.log(`| (b) ${sizeMib} MiB through ${name}, no verification, median of ${rounds} | ${median(xs).toFixed(2)} GB/s (${list(xs)}) | |`);
    console.log(`| (b) ratio through ${name} / from A | ${(median(xs) / direct).toFixed(3)} | |`);
  }
  console.log(`| sha256 on one core (node:crypto, 512 KiB chunks) | ${hash.toFixed(2)} GB/s | |`);
  console.log(`| ceiling of any verified path: sha256 / from A | ${(hash / direct).toFixed(3)} | |`);
  console.log(`| (c) C's peak RSS during (b) | ${(peak / 2 ** 20).toFixed(1)} MiB (before ${(rss.first / 2 ** 20).toFixed(1)} MiB) | |`);
  console.log(`| (c) C's CPU time during (b) | ${cpu.toFixed(2)} s (${(cpu / gib).toFixed(2)} s per GiB) | |`);
}

/** nginx and a bare Bun proxy on B, each forwarding every request to `target` (A's blob). */
async function startReferenceProxies(dir: string, target: string): Promise<{ name: string; url: string }[]> {
  const nginxPort = await freePort(B);
  const conf = join(dir, "nginx-proxy.conf");
  writeFileSync(
    conf,
    `user root; worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 64; }
http { access_log off; client_body_temp_path ${dir}/nginx-tmp; proxy_temp_path ${dir}/nginx-tmp;
  server { listen ${B}:${nginxPort};
    location / { proxy_pass ${target}; proxy_buffering on; proxy_max_temp_file_size 0; proxy_buffer_size 256k; proxy_buffers 16 256k; } } }
`,
  );
  spawnProcess({ name: "nginx-proxy", cmd: ["nginx", "-c", conf, "-e", `${dir}/nginx-error.log`] });
  const bunPort = await freePort(B);
  const bare = `Bun.serve({ hostname: "${B}", port: ${bunPort}, fetch: async () => new Response((await fetch(${JSON.stringify(target)})).body) });`;
  spawnProcess({ name: "bun-proxy", cmd: [process.execPath, "-e", bare] });
  await waitForPort({ host: B, port: nginxPort });
  await waitForPort({ host: B, port: bunPort });
  return [
    { name: "nginx proxy_pass", url: `http://${B}:${nginxPort}/` },
    { name: "a bare Bun proxy", url: `http://${B}:${bunPort}/` },
  ];
}

/** How fast this machine hashes sha256 on one core, GB/s: best of 3 passes over 1 GiB. */
function sha256Speed(): number {
  const chunk = new Uint8Array(512 * 1024);
  crypto.getRandomValues(chunk.subarray(0, 65_536));
  let best = 0;
  for (let pass = 0; pass < 3; pass++) {
    const hash = createHash("sha256");
    const t = performance.now();
    for (let i = 0; i < 2048; i++) hash.update(chunk);
    hash.digest();
    best = Math.max(best, 2 ** 30 / ((performance.now() - t) / 1000) / 1e9);
  }
  return best;
}

/** User + system CPU time of a process so far, from /proc (clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

try {
  await main();
} finally {
  await teardown();
}
