#!/usr/bin/env bun
// Start-up and idle memory of the compiled executable, printed as tables (no thresholds):
//   time to listening (/livez 200) and to ready (/readyz 200) over N fresh starts, each
//   with a new data dir (so a new peer key); then idle RSS of one node alone and of two
//   nodes whose DHT is up (the second bootstraps from the first: both routing tables
//   non-empty), read from /proc/<pid>/status after an idle period: RSS, and its anonymous
//   (heap) and file-backed (executable) parts.
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

const rssMiB = (pid: number) => {
  const parts = readRssParts(pid);
  return [parts.rss, parts.anon, parts.file].map((bytes) => bytes / 2 ** 20);
};

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
  await Bun.sleep(idleSeconds * 1000);
  const rows = [
    ["one node, no peers", rssMiB(alone.proc.pid)],
    ["DHT up: node A (bootstrap target)", rssMiB(first.proc.pid)],
    ["DHT up: node B (bootstrapped from A)", rssMiB(second.proc.pid)],
  ] as const;
  for (const n of [alone, first, second]) n.proc.kill("SIGTERM");
  await Promise.all([alone, first, second].map((n) => n.proc.exited));

  const size = Bun.file(bin).size;
  console.log(`binary ${bin}: ${(size / 2 ** 20).toFixed(1)} MiB`);
  console.log(`\nstart-up over ${runs} starts (ms)       min   median      max`);
  for (const [label, xs] of [["to listening (/livez 200)", listen], ["to ready (/readyz 200)", ready]] as const) {
    const s = stats(xs);
    console.log(`${label.padEnd(32)}${fmt(s.min)} ${fmt(s.median)} ${fmt(s.max)}`);
  }
  console.log(`\n${`idle RSS after ${idleSeconds} s (MiB)`.padEnd(40)}${["rss", "anon", "file"].map((h) => h.padStart(8)).join(" ")}`);
  for (const [label, mib] of rows) console.log(`${label.padEnd(40)}${mib.map(fmt).join(" ")}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
