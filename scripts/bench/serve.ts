// Benchmark: N concurrent downloads of one large blob over loopback, kagami beside nginx
// (Debian's nginx, sendfile on, one worker like kagami's one event loop) serving the same
// file. Prints throughput of each, the ratio, and kagami's peak RSS.
//   bun scripts/bench/serve.ts [--clients 50] [--size-mib 1024] [--rounds 2]
import { parseArgs } from "node:util";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { startKagami } from "../e2e/kagami.ts";
import { spawnProcess, waitForPort, freePort, run, type Proc } from "../e2e/proc.ts";
import { tempDir, teardown } from "../e2e/cleanup.ts";
import { requireTools } from "../e2e/require.ts";
import { LocalStore } from "../../src/store/local.ts";
import { DigestVerifier } from "../../src/store/verify.ts";
import type { Digest } from "../../src/oci/index.ts";
import { peakRss, type RssSampler, sampleRss } from "./rss.ts";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "50" },
    "size-mib": { type: "string", default: "1024" },
    rounds: { type: "string", default: "3" },
  },
});
const clients = Number(values.clients);
const sizeMib = Number(values["size-mib"]);
const rounds = Number(values.rounds);
requireTools("nginx", "curl");

async function makeBlob(dataDir: string): Promise<Digest> {
  const store = await LocalStore.open(dataDir);
  const raw = join(dataDir, "raw.bin");
  await run(["sh", "-c", `head -c ${sizeMib}M /dev/urandom > ${raw}`], { timeoutMs: 300_000 });
  const v = new DigestVerifier(`sha256:${"0".repeat(64)}` as Digest);
  for await (const chunk of Bun.file(raw).stream()) v.update(chunk);
  const digest = v.digest();
  await store.ingest({ mediaType: "application/octet-stream", digest, size: sizeMib * 2 ** 20 }, Bun.file(raw).stream());
  await store.close();
  await run(["rm", "-f", raw]);
  return digest;
}

async function download(urls: string[]): Promise<{ seconds: number; bytes: number }> {
  const started = performance.now();
  const results = await Promise.all(
    urls.map((url) => run(["curl", "-sf", "--max-time", "600", "-o", "/dev/null", "-w", "%{size_download}", url], { timeoutMs: 650_000 })),
  );
  const bytes = results.reduce((n, r) => n + Number(r.stdout), 0);
  return { seconds: (performance.now() - started) / 1000, bytes };
}

async function main(): Promise<void> {
  const dir = tempDir("bench-serve");
  const dataDir = join(dir, "data");
  console.error(`making a ${sizeMib} MiB blob…`);
  const digest = await makeBlob(dataDir);
  const hex = digest.slice(7);

  const kagami = await startKagami({ dataDir, logLevel: "warn" });
  const kagamiUrl = kagami.url;

  const nginxPort = await freePort();
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `user root; worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; client_body_temp_path ${dir}/nginx-tmp;
  server { listen 127.0.0.1:${nginxPort}; root ${dataDir}/blobs/sha256; location / { } } }
`,
  );
  const nginx: Proc = spawnProcess({ name: "nginx", cmd: ["nginx", "-c", conf, "-e", `${dir}/nginx-error.log`] });
  await waitForPort({ host: "127.0.0.1", port: nginxPort });

  // kagami gives back its start-up pages 5 s after it is ready: measure idle after that.
  await Bun.sleep(6000);
  const rss: RssSampler = sampleRss(kagami.proc.pid, 50);
  const rows: { server: string; round: number; seconds: number; gbps: number }[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const [server, url] of [
      ["nginx", `http://127.0.0.1:${nginxPort}/${hex}`],
      ["kagami", `${kagamiUrl}/v2/bench/blob/blobs/${digest}?ns=bench.test`],
    ] as const) {
      const r = await download(Array.from({ length: clients }, () => url));
      if (r.bytes !== clients * sizeMib * 2 ** 20) throw new Error(`${server}: got ${r.bytes} bytes`);
      rows.push({ server, round, seconds: r.seconds, gbps: r.bytes / r.seconds / 1e9 });
      console.error(`${server} round ${round}: ${(r.bytes / r.seconds / 1e9).toFixed(2)} GB/s`);
    }
  }
  const peak = peakRss(rss);
  await kagami.proc.stop();
  await nginx.stop();

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  };
  const k = median(rows.filter((r) => r.server === "kagami").map((r) => r.gbps));
  const n = median(rows.filter((r) => r.server === "nginx").map((r) => r.gbps));
  console.log(`\n${clients} concurrent downloads of a ${sizeMib} MiB blob over loopback, ${rounds} rounds each (median)\n`);
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log("| server | throughput | kagami / nginx | kagami RSS idle -> peak | of which anonymous |");
  console.log("|---|---|---|---|---|");
  console.log(`| nginx (sendfile, 1 worker) | ${n.toFixed(2)} GB/s | | | |`);
  console.log(`| kagami | ${k.toFixed(2)} GB/s | ${(k / n).toFixed(3)} | ${mib(rss.first)} -> ${mib(peak)} | ${mib(rss.firstAnon)} -> ${mib(rss.peakAnon)} |`);
}

try {
  await main();
} finally {
  await teardown();
}
