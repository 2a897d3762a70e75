#!/usr/bin/env bun
// Start-up and idle memory of the compiled executable, printed as tables (no thresholds):
//   time to listening (/livez 200) and to ready (/readyz 200) over N fresh starts, each
//   with a new data dir (so a new peer key); then idle RSS of one node alone and of two
//   nodes whose DHT is up (the second bootstraps from the first: both routing tables
//   non-empty), read from /proc/<pid>/status: RSS, and its anonymous (heap) and file-backed
//   (executable) parts, at the end of the idle period and at its peak (sampled every 250 ms
//   through the whole idle period, so pages released and read back in between still count).
//   The idle period starts once start-up is over: STARTUP_SETTLE_MS + 1 s after ready, when
//   the one-off release of the start-up pages has run.
//
//   bun scripts/bench/startup.ts [--bin dist/kagami] [--runs 10] [--idle 10]
//
// Everything listens on 127.0.0.1 with mDNS off. Public equivalent of the start-up figure:
//   hyperfine -r 10 'sh -c "dist/kagami serve --mdns=false ... & until curl -sf 127.0.0.1:5000/readyz; do :; done; kill $!"'
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../e2e/proc.ts";
import { STARTUP_SETTLE_MS } from "../../src/governor/startup-pages.ts";
import { readRssParts } from "./rss.ts";

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { bin: { type: "string", default: "dist/kagami" }, runs: { type: "string", default: "10" }, idle: { type: "string", default: "10" } },
});
const bin = resolve(values.bin!);
const runs = Math.min(100, Number(values.runs));
const idleSeconds = Math.min(120, Number(values.idle));
const root = mkdtempSync(join(tmpdir(), "kagami-startup-"));

interface Node {
  proc: Bun.Subprocess;
  registry: string;
  router: number;
  log: string;
}

async function start(name: string, extra: string[] = []): Promise<Node> {
  const [port, router, metrics] = [await freePort(), await freePort(), await freePort()];
  const log = join(root, `${name}.log`);
  const proc = Bun.spawn(
    [bin, "serve", "--mdns=false", "--log-level=info", `--data-dir=${join(root, name)}`, `--registry-addr=127.0.0.1:${port}`, `--router-addr=127.0.0.1:${router}`, `--metrics-addr=127.0.0.1:${metrics}`, ...extra],
    { stdout: Bun.file(log), stderr: Bun.file(log) },
  );
  return { proc, registry: `http://127.0.0.1:${port}`, router, log };
}

/** Milliseconds from now until url answers 200 (polled every 2 ms, at most 30 s). */
async function msUntil(url: string, since: number): Promise<number> {
  const deadline = since + 30_000;
  while (performance.now() < deadline) {
    try {
      if ((await fetch(url)).status === 200) return performance.now() - since;
    } catch {
      // Not listening yet.
    }
    await Bun.sleep(2);
  }
  throw new Error(`${url} did not answer 200 within 30 s`);
}

type Parts = ReturnType<typeof readRssParts>;
const mib = (parts: Parts) => [parts.rss, parts.anon, parts.file].map((bytes) => bytes / 2 ** 20);

/** Samples pid's RSS every `everyMs` until stopped; the peak keeps the anon/file split of its sample. */
function watchPeak(pid: number, everyMs: number): { peak: () => Parts; stop: () => void } {
  let peak = readRssParts(pid);
  const timer = setInterval(() => {
    const now = readRssParts(pid);
    if (now.rss > peak.rss) peak = now;
  }, everyMs);
  return { peak: () => peak, stop: () => clearInterval(timer) };
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { min: s[0]!, median, max: s.at(-1)! };
};
const fmt = (n: number) => n.toFixed(1).padStart(8);

try {
  const listen: number[] = [];
  const ready: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const node = await start(`run-${i}`);
    listen.push(await msUntil(`${node.registry}/livez`, t0));
    ready.push(await msUntil(`${node.registry}/readyz`, t0));
    node.proc.kill("SIGTERM");
    await node.proc.exited;
  }

  const alone = await start("alone");
  await msUntil(`${alone.registry}/readyz`, performance.now());
  const first = await start("dht-a");
  await msUntil(`${first.registry}/livez`, performance.now());
  const peerId = readFileSync(first.log, "utf8").match(/"peer":"(12D3KooW\w+)"/)?.[1];
  if (!peerId) throw new Error(`no peer id in ${first.log}`);
  const second = await start("dht-b", ["--bootstrap-kind=static", `--static-bootstrap-peers=/ip4/127.0.0.1/tcp/${first.router}/p2p/${peerId}`]);
  await msUntil(`${second.registry}/readyz`, performance.now());
  await msUntil(`${first.registry}/readyz`, performance.now());
  const labelled = [
    ["one node, no peers", alone],
    ["DHT up: node A (bootstrap target)", first],
    ["DHT up: node B (bootstrapped from A)", second],
  ] as const;
  await Bun.sleep(STARTUP_SETTLE_MS + 1000);
  const watches = labelled.map(([, n]) => watchPeak(n.proc.pid, 250));
  await Bun.sleep(idleSeconds * 1000);
  const rows = labelled.map(([label, n], i) => {
    watches[i]!.stop();
    return [label, mib(readRssParts(n.proc.pid)), mib(watches[i]!.peak())] as const;
  });
  for (const n of [alone, first, second]) n.proc.kill("SIGTERM");
  await Promise.all([alone, first, second].map((n) => n.proc.exited));

  const size = Bun.file(bin).size;
  console.log(`binary ${bin}: ${(size / 2 ** 20).toFixed(1)} MiB`);
  console.log(`\nstart-up over ${runs} starts (ms)       min   median      max`);
  for (const [label, xs] of [["to listening (/livez 200)", listen], ["to ready (/readyz 200)", ready]] as const) {
    const s = stats(xs);
    console.log(`${label.padEnd(32)}${fmt(s.min)} ${fmt(s.median)} ${fmt(s.max)}`);
  }
  const heads = ["rss", "anon", "file"];
  console.log(`\n${`idle RSS over ${idleSeconds} s (MiB)`.padEnd(40)}${[...heads.map((h) => `end ${h}`), ...heads.map((h) => `peak ${h}`)].map((h) => h.padStart(10)).join(" ")}`);
  for (const [label, end, peak] of rows) console.log(`${label.padEnd(40)}${[...end, ...peak].map((n) => n.toFixed(1).padStart(10)).join(" ")}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
