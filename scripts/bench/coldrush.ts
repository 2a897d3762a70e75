// Cold rush: N nodes pull the same large image at the same moment, through an upstream whose
// link is throttled (tc on the registry's namespace), first straight from the upstream, then
// through a kagami on every node (peers found by mDNS, nothing cached). Prints median and max
// pull time and the upstream's blob bytes for both. Targets (issue 6): >= 4x faster median,
// upstream bytes <= 1.2x the image. Needs root (network namespaces, tc).
//   bun scripts/bench/coldrush.ts [--nodes 5] [--image-mib 208] [--layers 4] [--rate 100mbit] [--skip-direct] [--logs DIR]
import { copyFileSync, mkdirSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import {
  buildImage,
  createNetwork,
  digestsOf,
  pushImage,
  readLayout,
  requireNetns,
  requireTools,
  skopeoCopy,
  startKagami,
  startRegistry,
  teardown,
  tempDir,
  waitFor,
  type BuiltImage,
  type Network,
  type Rate,
  type Registry,
} from "../e2e/index.ts";

const { values } = parseArgs({
  options: {
    nodes: { type: "string", default: "5" },
    "image-mib": { type: "string", default: "208" },
    layers: { type: "string", default: "4" },
    rate: { type: "string", default: "100mbit" },
    "skip-direct": { type: "boolean", default: false },
    /** Copy every kagami's log here before teardown. */
    logs: { type: "string" },
  },
});
const N = Number(values.nodes);
const imageMib = Number(values["image-mib"]);
const layerCount = Number(values.layers);
const rate = values.rate as Rate;
const MiB = 1024 * 1024;
const REPO = "rush/app";

interface Round {
  name: string;
  seconds: number[];
  upstreamBytes: number;
}

/** Every node pulls at once from its registry host; returns each pull's wall time. */
async function rush(net: Network, image: BuiltImage, hostOf: (i: number) => string, label: string): Promise<number[]> {
  const dir = tempDir(`pulls-${label}`);
  return Promise.all(
    net.nodes.slice(1).map(async (node, i) => {
      const out = join(dir, node.label);
      const started = performance.now();
      await skopeoCopy(`docker://${hostOf(i)}/${REPO}:v1`, `oci:${out}:v1`, { netns: node.netns, timeoutMs: 900_000 });
      const seconds = (performance.now() - started) / 1000;
      const pulled = await readLayout(out, "v1", { verify: true });
      if (JSON.stringify(digestsOf(pulled)) !== JSON.stringify(digestsOf(image))) throw new Error(`${node.label} pulled different digests`);
      return seconds;
    }),
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

async function main(): Promise<void> {
  requireNetns();
  requireTools("docker-registry", "skopeo", "umoci", "tc");
  if (!(N >= 2)) throw new Error("--nodes must be at least 2");
  const layerBytes = Math.floor((imageMib * MiB) / layerCount);
  console.error(`building a ${imageMib} MiB image of ${layerCount} layers…`);
  const image = await buildImage({
    dir: join(tempDir("coldrush"), "layout"),
    tag: "v1",
    layers: Array.from({ length: layerCount }, (_, i) => ({ files: { [`layer${i}.bin`]: layerBytes } })),
  });
  const blobBytes = image.config.size + image.layers.reduce((n, l) => n + l.size, 0);
  const net = await createNetwork({ nodes: ["registry", ...Array.from({ length: N }, (_, i) => `node${i + 1}`)] });
  const registry: Registry = await startRegistry({ node: net.node("registry") });
  await pushImage(image, { registry: registry.host, repo: REPO, netns: net.nodes[1]!.netns, timeoutMs: 600_000 });
  await net.limitRate(net.node("registry"), { rate });
  const rounds: Round[] = [];

  if (!values["skip-direct"]) {
    console.error(`direct: ${N} nodes pull from the upstream at once…`);
    const mark = await registry.mark();
    const seconds = await rush(net, image, () => registry.host, "direct");
    rounds.push({ name: "direct", seconds, upstreamBytes: await registry.blobBytes(mark) });
  }

  console.error(`kagami: starting ${N} nodes…`);
  const nodes = await Promise.all(
    net.nodes.slice(1).map((node) =>
      startKagami({
        name: `kagami-${node.label}`,
        node,
        mdns: true,
        logLevel: "info",
        flags: { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true" },
      }),
    ),
  );
  for (const node of net.nodes.slice(1)) {
    await waitFor(
      `${node.label} to see its ${N - 1} peers`,
      async () => {
        const r = await net.exec(node, ["curl", "-sf", `http://${node.ip}:9090/debug.json`], { allowFailure: true });
        return ((JSON.parse(r.stdout || "{}") as { peerCount?: number }).peerCount ?? 0) >= N - 1;
      },
      { timeoutMs: 60_000 },
    );
  }
  console.error(`kagami: ${N} nodes pull through their kagami at once…`);
  const mark = await registry.mark();
  const seconds = await rush(net, image, (i) => nodes[i]!.host, "kagami");
  rounds.push({ name: "kagami", seconds, upstreamBytes: await registry.blobBytes(mark) });
  if (values.logs) {
    mkdirSync(values.logs, { recursive: true });
    for (const k of nodes) copyFileSync(k.proc.logPath, join(values.logs, basename(k.proc.logPath)));
  }

  console.log(`\ncoldrush: ${N} nodes, image ${mib(blobBytes)} in ${layerCount} layers, upstream link ${rate}`);
  console.log(`${"".padEnd(8)} ${"median".padStart(9)} ${"max".padStart(9)} ${"upstream bytes".padStart(16)} ${"x image".padStart(8)}`);
  for (const r of rounds) {
    console.log(
      `${r.name.padEnd(8)} ${`${median(r.seconds).toFixed(1)} s`.padStart(9)} ${`${Math.max(...r.seconds).toFixed(1)} s`.padStart(9)} ${mib(r.upstreamBytes).padStart(16)} ${(r.upstreamBytes / blobBytes).toFixed(2).padStart(8)}`,
    );
  }
  const direct = rounds.find((r) => r.name === "direct");
  const kagami = rounds.find((r) => r.name === "kagami")!;
  if (direct) console.log(`median speedup ${(median(direct.seconds) / median(kagami.seconds)).toFixed(1)}x (target >= 4x); upstream ${(kagami.upstreamBytes / blobBytes).toFixed(2)}x the image (target <= 1.2x)`);
}

try {
  await main();
} finally {
  await teardown();
}
