#!/usr/bin/env bun
// `bun run build`: one self-contained executable, dist/kagami. Everything the program reads
// at run time is imported (the containerd .proto files and the debug page are text imports),
// so `bun build --compile` embeds it and the binary needs only glibc and CA certificates.
// The commit is stamped in with --define; `kagami version` prints it.
//
//   bun scripts/build.ts [--outfile dist/kagami] [--target bun-linux-arm64]
//
// Env KAGAMI_COMMIT overrides the commit (a build from a source tarball has no git).
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dir, "..");

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    outfile: { type: "string", default: "dist/kagami" },
    target: { type: "string" },
  },
});
const outfile = resolve(ROOT, values.outfile!);

function git(...args: string[]): string | undefined {
  const r = Bun.spawnSync(["git", ...args], { cwd: ROOT, stderr: "ignore" });
  return r.success ? r.stdout.toString().trim() : undefined;
}

function commit(): string {
  if (process.env.KAGAMI_COMMIT) return process.env.KAGAMI_COMMIT;
  const head = git("rev-parse", "--short=12", "HEAD");
  if (!head) return "unknown";
  // Uncommitted changes to tracked files: the binary is not exactly that commit.
  return git("status", "--porcelain", "--untracked-files=no") ? `${head}-dirty` : head;
}

const stamp = commit();
const cmd = [
  process.execPath,
  "build",
  "--compile",
  "--bytecode",
  "--format=esm",
  "--minify",
  "--sourcemap=none",
  // Start-up and idle timers run code rarely: a JIT tier-up threshold 1000x the default leaves
  // it in the interpreter, and only code that stays hot (the data path) is compiled. Measured
  // with scripts/bench/startup.ts --idle 60 (peak RSS of two DHT-up nodes): x1 4-7 MiB above
  // x10; x10 50.1 / 52.3 MiB, x100 47.4 / 49.1, x1000 46.4-47.2 / 47.5-48.9 (three runs). CPU per
  // GiB through the peer path (scripts/bench/peer.ts, two runs each): x10 2.54 / 2.22 s, x1000
  // 2.79 / 2.09 s, within the machine's noise; time to first byte alike (1.2-1.5 ms).
  "--compile-jit-policy=1000",
  `--define=KAGAMI_COMMIT=${JSON.stringify(stamp)}`,
  `--outfile=${outfile}`,
  ...(values.target ? [`--target=${values.target}`] : []),
  "src/main.ts",
  // The governor drops page cache from a worker thread; a compiled binary embeds the
  // worker only when it is an entry point.
  "src/governor/pagecache-worker.ts",
  // Whole blobs from peers are hashed on a worker thread (src/mirror/hasher.ts).
  "src/mirror/hasher-worker.ts",
];
const started = performance.now();
const build = Bun.spawnSync(cmd, { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
if (!build.success) {
  console.error(`build failed: ${cmd.join(" ")}`);
  process.exit(1);
}
const seconds = ((performance.now() - started) / 1000).toFixed(1);

// A binary for this machine is run once: a build that cannot start is not a build.
if (!values.target) {
  const check = Bun.spawnSync([outfile, "version", "--json"], { stderr: "pipe" });
  const printed = check.success ? (JSON.parse(check.stdout.toString()) as { commit: string }) : undefined;
  if (printed?.commit !== stamp) {
    console.error(`${outfile} version did not print commit ${stamp}:\n${check.stdout}${check.stderr}`);
    process.exit(1);
  }
}
const size = statSync(outfile).size;
console.log(`built ${values.outfile} (commit ${stamp}, ${(size / 2 ** 20).toFixed(1)} MiB, ${seconds} s)`);
