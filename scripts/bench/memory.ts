// Benchmark: kagami inside a memory cgroup (128Mi, like the Spegel users' cap) under many
// concurrent downloads of a large blob, with the governor on and off in the same run:
//   local: the blob is in kagami's own store (sendfile; the page cache is charged to the cgroup);
//   peer:  kagami holds nothing and proxies the blob from a peer kagami on another 127.0.0.x
//          address (static bootstrap), every byte through its userspace buffers.
// Each run gets a fresh cgroup and a fresh kagami; the blob's and the executable's page cache
// is dropped first, so what kagami reads is charged to its cgroup as it would be in a new
// container. The clients (curl | openssl dgst, one per download) run outside the cgroup and
// check every download's sha256. Prints, per scenario, peak working set (and its memory.stat
// breakdown), peak RSS, OOM kills, ok / corrupted / 404 (shed or missed) / failed downloads and throughput.
// Run as root, by hand (not in CI):
//   bun run build && KAGAMI_BIN=$PWD/dist/kagami bun scripts/bench/memory.ts \
//     [--streams 200] [--few 10] [--size-mib 256] [--limit 128Mi] [--timeout-s 300] [--modes on,off] [--scenarios local,peer] [--budget SIZE] [--logs DIR]
import { copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, closeSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { createMemoryCgroup, type MemoryCgroup } from "../e2e/cgroup.ts";
import { teardown, tempDir } from "../e2e/cleanup.ts";
import { freePort, run, spawnProcess, waitFor, waitForHttp, type Proc } from "../e2e/proc.ts";
import { requireMemoryCgroup, requireRoot, requireTools } from "../e2e/require.ts";
import { dropFileCache } from "../../src/governor/index.ts";
import type { Digest } from "../../src/oci/index.ts";
import { loadOrCreatePeerKey } from "../../src/routing/peer-key.ts";
import { LocalStore } from "../../src/store/local.ts";
import { parseBytes } from "../../src/units.ts";
import { readRss } from "./rss.ts";
import { classify, downloadAll, peakUsage, rssHighWater, sampleMemory, type MemoryPeaks, type Outcome } from "./memory-load.ts";

const { values } = parseArgs({
  options: {
    streams: { type: "string", default: "200" },
    few: { type: "string", default: "10" },
    "size-mib": { type: "string", default: "256" },
    limit: { type: "string", default: "128Mi" },
    "timeout-s": { type: "string", default: "300" },
    modes: { type: "string", default: "on,off" },
    scenarios: { type: "string", default: "local,peer" },
    /** kagami's --memory-budget (default: kagami's own, 1/12 of the limit). */
    budget: { type: "string" },
    /** Keep kagami's logs (debug level) in this directory. */
    logs: { type: "string" },
  },
});
const streams = Number(values.streams);
const few = Number(values.few);
const size = Number(values["size-mib"]) * 2 ** 20;
const limitBytes = parseBytes(values.limit!);
const timeoutS = Number(values["timeout-s"]);
const modes = values.modes!.split(",") as Mode[];
const scenarios = values.scenarios!.split(",") as Scenario[];
const budgetFlag = values.budget === undefined ? [] : [`--memory-budget=${parseBytes(values.budget)}`];
const logsDir = values.logs === undefined ? undefined : resolve(values.logs);
for (const n of [streams, few, size, timeoutS]) if (!(Number.isInteger(n) && n > 0)) throw new Error(`invalid number ${n}`);
if (streams > 500) throw new Error("at most 500 streams");
if (!modes.every((m) => m === "on" || m === "off")) throw new Error(`--modes: on and/or off, got ${values.modes}`);
if (!scenarios.every((s) => s === "local" || s === "peer")) throw new Error(`--scenarios: local and/or peer, got ${values.scenarios}`);

type Mode = "on" | "off";
type Scenario = "local" | "peer";
const MiB = 2 ** 20;
/** kagami under test (in the cgroup) and its peer (outside it): two loopback addresses. */
const NODE = "127.0.0.2";
const PEER = "127.0.0.3";

interface RunResult {
  mode: Mode;
  scenario: Scenario;
  streams: number;
  outcomes: Record<Outcome, number>;
  /** Curl's complaints about failed downloads, deduplicated. */
  failures: string[];
  seconds: number;
  verifiedBytes: number;
  peaks: MemoryPeaks;
  peakUsage: number | null;
  rssHwm: number;
  idle: { workingSet: number; rss: number };
  oomKills: number;
  /** Major page faults in the cgroup during the load: pages (of the executable, mostly) read back from disk. */
  majorFaults: number;
  survived: boolean;
  shedCounted: number | null;
  governor: { drops: number; gcRuns: number; budgetPeak: number; level: string } | null;
}

/** A random blob written to a file; its digest. */
async function randomBlob(path: string): Promise<Digest> {
  await run(["sh", "-c", `head -c ${size} /dev/urandom > "$0"`, path], { timeoutMs: 120_000 });
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream()) hasher.update(chunk);
  return `sha256:${hasher.digest("hex")}` as Digest;
}

async function ingest(dataDir: string, path: string, digest: Digest): Promise<string> {
  const store = await LocalStore.open(dataDir);
  await store.ingest({ mediaType: "application/octet-stream", digest, size }, Bun.file(path).stream());
  await store.close();
  return join(dataDir, "blobs", "sha256", digest.slice("sha256:".length));
}

/** Writes the file's dirty pages out, then asks the kernel to drop its page cache. */
function uncache(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (!dropFileCache(path)) throw new Error(`cannot drop the page cache of ${path}`);
}

function majorFaults(cg: MemoryCgroup): number {
  const s = cg.stat();
  return (cg.version === 1 ? s.total_pgmajfault : s.pgmajfault) ?? 0;
}

async function fetchText(url: string): Promise<string | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return res.ok ? await res.text() : null;
  } catch {
    return null;
  }
}

function governorOf(debugJson: string): RunResult["governor"] {
  const g = (JSON.parse(debugJson) as { governor?: { level: string; gcRuns: number; budget: { peakInUse: number }; pageCache: { droppedFiles: number } | null } }).governor;
  return g ? { drops: g.pageCache?.droppedFiles ?? 0, gcRuns: g.gcRuns, budgetPeak: g.budget.peakInUse, level: g.level } : null;
}

function metricSum(text: string, name: string): number | null {
  let sum: number | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum = (sum ?? 0) + Number(line.trim().split(/\s+/).pop());
  }
  return sum;
}

interface Setup {
  bin: string;
  /** A copy of bin only kagami-in-the-cgroup runs, so its pages are charged to that cgroup. */
  nodeBin: string;
  nodeData: string;
  localBlob: { digest: Digest; path: string };
  peerBlob: Digest;
  registryPort: number;
  peerRouter: string;
}

async function runOnce(s: Setup, mode: Mode, scenario: Scenario, count: number): Promise<RunResult> {
  const label = `${mode}-${scenario}-${count}`;
  const cg = createMemoryCgroup({ limitBytes, name: label });
  uncache(s.nodeBin);
  uncache(s.localBlob.path);
  const metricsPort = await freePort(NODE);
  const node: Proc = spawnProcess({
    name: `kagami-${label}`,
    cgroup: cg.path,
    ...(logsDir ? { logPath: join(logsDir, `kagami-${label}.log`) } : {}),
    cmd: [
      s.nodeBin,
      "serve",
      "--mdns=false",
      `--log-level=${logsDir ? "debug" : "warn"}`,
      "--store=local",
      "--pull-through=false",
      `--memory-governor=${mode === "on"}`,
      `--data-dir=${s.nodeData}`,
      `--registry-addr=${NODE}:${s.registryPort}`,
      `--router-addr=${NODE}:${await freePort(NODE)}`,
      `--metrics-addr=${NODE}:${metricsPort}`,
      "--bootstrap-kind=static",
      `--static-bootstrap-peers=${s.peerRouter}`,
      ...budgetFlag,
    ],
  });
  try {
    const base = `http://${NODE}:${s.registryPort}`;
    await waitForHttp(`${base}/readyz`, { proc: node, timeoutMs: 30_000 });
    const digest = scenario === "local" ? s.localBlob.digest : s.peerBlob;
    const url = `${base}/v2/bench/blob/blobs/${digest}?ns=bench.test`;
    if (scenario === "peer") {
      // The peer's provider record must be found before the load starts.
      await waitFor("kagami to find the blob on its peer", async () => (await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(5000) })).status === 200, {
        proc: node,
        timeoutMs: 30_000,
        intervalMs: 250,
      });
    }
    const idle = { workingSet: cg.workingSet(), rss: readRss(node.pid) };
    const faultsBefore = majorFaults(cg);
    const sampler = sampleMemory(cg, node.pid);
    const { downloads, seconds } = await downloadAll(url, count, timeoutS);
    const peaks = await sampler.stop();
    const rssHwm = rssHighWater(node.pid);
    const survived = node.running();
    const outcomes: Record<Outcome, number> = { ok: 0, corrupted: 0, notFound: 0, failed: 0 };
    const failures = new Set<string>();
    let verifiedBytes = 0;
    for (const d of downloads) {
      const o = classify(d, size, digest.slice("sha256:".length));
      outcomes[o]++;
      if (o === "ok") verifiedBytes += d.bytes;
      if (o === "failed") failures.add(`status ${d.status}, curl exit ${d.curlExit}`);
    }
    // Best effort: a kagami that is stuck (e.g. thrashing at the limit) may not answer.
    const shedCounted = await fetchText(`http://${NODE}:${metricsPort}/metrics`).then((t) => (t === null ? null : metricSum(t, "kagami_shed_requests_total")));
    const governor = await fetchText(`http://${NODE}:${metricsPort}/debug.json`).then((t) => (t === null ? null : governorOf(t)));
    return {
      mode,
      scenario,
      streams: count,
      outcomes,
      failures: [...failures],
      seconds,
      verifiedBytes,
      peaks,
      peakUsage: peakUsage(cg),
      rssHwm,
      idle,
      oomKills: cg.oomKills(),
      majorFaults: majorFaults(cg) - faultsBefore,
      survived,
      shedCounted,
      governor,
    };
  } catch (e) {
    console.error(`--- ${node.name} log ---\n${node.tail(40)}`);
    throw e;
  } finally {
    await node.stop();
    await cg.remove();
  }
}

const mib = (n: number | null | undefined) => (n === null || n === undefined ? "-" : (n / MiB).toFixed(1));

function table(scenario: Scenario, results: RunResult[]): string {
  const cols = modes.flatMap((m) => [few, streams].map((n) => results.find((r) => r.mode === m && r.scenario === scenario && r.streams === n)));
  const head = modes.flatMap((m) => [few, streams].map((n) => `governor ${m}, ${n}`));
  const on = results.find((r) => r.mode === "on" && r.scenario === scenario && r.streams === streams);
  const off = results.find((r) => r.mode === "off" && r.scenario === scenario && r.streams === streams);
  const withRatio = on && off;
  const rows: [string, (r: RunResult) => string, ((r: RunResult) => number) | undefined][] = [
    ["peak working set (MiB)", (r) => mib(r.peaks.workingSet), (r) => r.peaks.workingSet],
    ["- anon at that peak", (r) => mib(r.peaks.atPeak.anon), (r) => r.peaks.atPeak.anon],
    ["- active_file at that peak", (r) => mib(r.peaks.atPeak.activeFile), (r) => r.peaks.atPeak.activeFile],
    ["- inactive_file at that peak (not in WS)", (r) => mib(r.peaks.atPeak.inactiveFile), undefined],
    ["- mapped_file at that peak", (r) => mib(r.peaks.atPeak.mappedFile), (r) => r.peaks.atPeak.mappedFile],
    ["peak anon (MiB)", (r) => mib(r.peaks.anon), (r) => r.peaks.anon],
    ["peak usage incl. page cache (MiB)", (r) => mib(r.peakUsage), (r) => r.peakUsage ?? 0],
    ["peak RSS, VmHWM (MiB)", (r) => mib(r.rssHwm), (r) => r.rssHwm],
    ["- file-backed part of the RSS peak", (r) => mib(r.peaks.rssFile), undefined],
    ["idle working set / RSS before load (MiB)", (r) => `${mib(r.idle.workingSet)} / ${mib(r.idle.rss)}`, undefined],
    ["OOM kills", (r) => String(r.oomKills), undefined],
    ["major page faults during the load", (r) => String(r.majorFaults), undefined],
    ["kagami survived", (r) => (r.survived ? "yes" : "**no**"), undefined],
    ["downloads ok (sha256 checked)", (r) => `${r.outcomes.ok}/${r.streams}`, undefined],
    ["corrupted", (r) => String(r.outcomes.corrupted), undefined],
    ["404, containerd falls back (of them shed)", (r) => `${r.outcomes.notFound} (${r.shedCounted ?? "-"})`, undefined],
    ["failed", (r) => String(r.outcomes.failed), undefined],
    ["throughput of verified bytes (GB/s)", (r) => (r.verifiedBytes / r.seconds / 1e9).toFixed(2), (r) => r.verifiedBytes / r.seconds],
    ["wall time (s)", (r) => r.seconds.toFixed(1), undefined],
    ["page-cache drops (fadvise DONTNEED of a file)", (r) => String(r.governor?.drops ?? "-"), undefined],
    ["GC runs / budget peak in use (MiB)", (r) => (r.governor ? `${r.governor.gcRuns} / ${mib(r.governor.budgetPeak)}` : "-"), undefined],
  ];
  const lines = [
    `| ${scenario === "local" ? "local disk (sendfile)" : "proxied from a peer"} | ${head.join(" | ")} |${withRatio ? ` off / on at ${streams} |` : ""}`,
    `|---|${head.map(() => "---:").join("|")}|${withRatio ? "---:|" : ""}`,
  ];
  for (const [name, show, value] of rows) {
    const cells = cols.map((r) => (r ? show(r) : "-"));
    const ratio = withRatio && value ? (value(on) > 0 ? (value(off) / value(on)).toFixed(2) : "-") : "";
    lines.push(`| ${name} | ${cells.join(" | ")} |${withRatio ? ` ${ratio} |` : ""}`);
  }
  return lines.join("\n");
}

function verdicts(results: RunResult[]): string[] {
  const out: string[] = [];
  const check = (ok: boolean, what: string) => out.push(`${ok ? "PASS" : "FAIL"}  ${what}`);
  const on = results.filter((r) => r.mode === "on");
  check(on.every((r) => r.oomKills === 0 && r.survived), `governor on: 0 OOM kills, kagami survived (${on.map((r) => r.oomKills).join(", ")})`);
  check(results.every((r) => r.outcomes.corrupted === 0), "0 corrupted downloads in every run");
  for (const scenario of scenarios) {
    const big = on.find((r) => r.scenario === scenario && r.streams === streams);
    const small = on.find((r) => r.scenario === scenario && r.streams === few);
    if (big) check(big.peaks.workingSet <= limitBytes / 2, `${scenario}: peak working set ${mib(big.peaks.workingSet)} MiB <= ${mib(limitBytes / 2)} MiB at ${streams} streams`);
    if (big && small) {
      const d = big.rssHwm - small.rssHwm;
      check(d <= 16 * MiB, `${scenario}: peak RSS at ${streams} streams is ${mib(d)} MiB above the peak at ${few} (<= 16 MiB)`);
    }
  }
  return out;
}

async function main(): Promise<void> {
  requireRoot();
  const cgroupVersion = requireMemoryCgroup();
  requireTools("curl", "openssl", "timeout");
  const bin = resolve(process.env.KAGAMI_BIN ?? "dist/kagami");
  if (!existsSync(bin)) throw new Error(`${bin} not found: run \`bun run build\` or set KAGAMI_BIN`);
  const dir = tempDir("bench-memory");
  const nodeData = join(dir, "node");
  const peerData = join(dir, "peer");
  mkdirSync(nodeData);
  mkdirSync(peerData);
  if (logsDir) mkdirSync(logsDir, { recursive: true });
  console.error(`making two ${mib(size)} MiB blobs…`);
  const raw = join(dir, "raw.bin");
  const localDigest = await randomBlob(raw);
  const localPath = await ingest(nodeData, raw, localDigest);
  const peerBlob = await randomBlob(raw);
  await ingest(peerData, raw, peerBlob);
  await run(["rm", "-f", raw]);
  const nodeBin = join(dir, "kagami-in-cgroup");
  copyFileSync(bin, nodeBin);

  const registryPort = await freePort(NODE);
  const peerRouterPort = await freePort(PEER);
  const peerId = peerIdFromPrivateKey((await loadOrCreatePeerKey(peerData)).key).toString();
  const peer = spawnProcess({
    name: "kagami-peer",
    cmd: [bin, "serve", "--mdns=false", "--log-level=warn", "--store=local", "--pull-through=false", `--data-dir=${peerData}`,
      `--registry-addr=${PEER}:${registryPort}`, `--router-addr=${PEER}:${peerRouterPort}`, `--metrics-addr=${PEER}:${await freePort(PEER)}`],
  });
  await waitForHttp(`http://${PEER}:${registryPort}/readyz`, { proc: peer, timeoutMs: 30_000 });
  const setup: Setup = {
    bin,
    nodeBin,
    nodeData,
    localBlob: { digest: localDigest, path: localPath },
    peerBlob,
    registryPort,
    peerRouter: `/ip4/${PEER}/tcp/${peerRouterPort}/p2p/${peerId}`,
  };

  const results: RunResult[] = [];
  for (const mode of modes) {
    for (const scenario of scenarios) {
      for (const count of [few, streams]) {
        console.error(`governor ${mode}, ${scenario}, ${count} streams…`);
        const r = await runOnce(setup, mode, scenario, count);
        console.error(
          `  ${r.seconds.toFixed(1)} s: ok ${r.outcomes.ok}, 404 ${r.outcomes.notFound} (shed ${r.shedCounted ?? "?"}), failed ${r.outcomes.failed}, corrupted ${r.outcomes.corrupted}; ` +
            `peak WS ${mib(r.peaks.workingSet)} MiB, RSS ${mib(r.rssHwm)} MiB, OOM kills ${r.oomKills}${r.failures.length ? `; ${r.failures.join("; ")}` : ""}`,
        );
        results.push(r);
      }
    }
  }
  await peer.stop();

  const version = (await run([bin, "version"], { allowFailure: true })).stdout.trim();
  console.log(
    `\nkagami in a ${mib(limitBytes)} MiB memory cgroup (v${cgroupVersion}), ${few} and ${streams} concurrent downloads of a ${mib(size)} MiB blob; ` +
      `${version}, ${navigator.hardwareConcurrency} cores; clients: curl | openssl dgst -sha256 outside the cgroup; ` +
      `working set sampled every 10 ms (longest gap ${Math.max(...results.map((r) => r.peaks.maxGapMs)).toFixed(0)} ms), RSS peak = VmHWM.\n`,
  );
  for (const scenario of scenarios) console.log(`${table(scenario, results)}\n`);
  for (const line of verdicts(results)) console.log(line);
}

try {
  await main();
} finally {
  await teardown();
}
