// The container image that scripts/image.sh assembles with umoci: it holds the compiled
// executable, the glibc files it links and CA certificates, and nothing needs the build
// machine: the unpacked rootfs runs `kagami version` and `kagami serve` under chroot as the
// image's nonroot user, with the image's environment and a /proc as any runtime mounts it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { freePort, run, spawnProcess, waitForHttp } from "../../scripts/e2e/proc.ts";
import { startRegistry } from "../../scripts/e2e/registry.ts";
import { requireRoot, requireTools } from "../../scripts/e2e/require.ts";

const ROOT = resolve(import.meta.dir, "..", "..");
const TAG = "test";

interface ImageConfig {
  architecture: string;
  os: string;
  config: { User: string; Entrypoint: string[]; Cmd: string[]; Env: string[]; ExposedPorts: Record<string, object>; Labels: Record<string, string> };
}

let dir: string;
let bin: string;
let layout: string;
let rootfs: string;
let config: ImageConfig;
let hostVersion: { version: string; commit: string; bun: string };
let unshare: string;
let chroot: string;

/** Runs argv from the rootfs as the image runs it: chroot, the image's user and env, a private /proc. */
function inImage(argv: string[]): string[] {
  const env = config.config.Env;
  const mountProc = `mount -t proc proc "$0/proc" && exec env -i "$@"`;
  return [unshare, "--mount", "--propagation", "private", "sh", "-c", mountProc, rootfs, ...env, chroot, `--userspec=${config.config.User}`, rootfs, ...argv];
}

beforeAll(async () => {
  requireRoot();
  [unshare, chroot] = requireTools("unshare", "chroot", "umoci", "skopeo", "ldd") as [string, string];
  dir = tempDir("image");
  if (process.env.KAGAMI_BIN) {
    bin = resolve(process.env.KAGAMI_BIN);
  } else {
    bin = join(dir, "kagami");
    await run(["bun", "scripts/build.ts", `--outfile=${bin}`], { cwd: ROOT, timeoutMs: 180_000 });
  }
  hostVersion = JSON.parse((await run([bin, "version", "--json"])).stdout);
  layout = join(dir, "oci");
  const out = await run(["bash", "scripts/image.sh", "--bin", bin, "--layout", layout, "--tag", TAG], { cwd: ROOT, timeoutMs: 120_000 });
  expect(out.stdout.trim().split("\n").at(-1)).toBe(`${layout}:${TAG}`);
  config = JSON.parse((await run(["skopeo", "inspect", "--config", `oci:${layout}:${TAG}`])).stdout);
  const bundle = join(dir, "bundle");
  await run(["umoci", "unpack", "--image", `${layout}:${TAG}`, bundle]);
  rootfs = join(bundle, "rootfs");
}, 240_000);

afterAll(async () => {
  await teardown();
});

describe("scripts/image.sh", () => {
  test("the image config runs kagami serve as nonroot with the registry, router and metrics ports", () => {
    expect(config.os).toBe("linux");
    expect(config.config.Entrypoint).toEqual(["/usr/local/bin/kagami"]);
    expect(config.config.Cmd).toEqual(["serve"]);
    expect(config.config.User).toBe("65532:65532");
    expect(Object.keys(config.config.ExposedPorts).sort()).toEqual(["5000/tcp", "5001/tcp", "9090/tcp"]);
    expect(config.config.Env).toContain("KAGAMI_DATA_DIR=/var/lib/kagami");
    expect(config.config.Labels["org.opencontainers.image.revision"]).toBe(hostVersion.commit);
  });

  test("the rootfs holds the executable, every library ldd lists, CA certificates, and nothing else", async () => {
    expect(readFileSync(join(rootfs, "usr/local/bin/kagami")).equals(readFileSync(bin))).toBe(true);
    const libs = (await run(["ldd", bin])).stdout
      .split("\n")
      .map((l) => l.match(/=>\s+(\/\S+)/)?.[1] ?? l.trim().match(/^(\/\S+)/)?.[1])
      .filter((p): p is string => p !== undefined);
    expect(libs.length).toBeGreaterThan(1);
    for (const lib of libs) expect(statSync(join(rootfs, lib)).isFile()).toBe(true);
    expect(statSync(join(rootfs, "etc/ssl/certs/ca-certificates.crt")).size).toBeGreaterThan(10_000);
    expect(readdirSync(rootfs).sort()).toEqual(["dev", "etc", "lib", "lib64", "proc", "sys", "tmp", "usr", "var"].filter((d) => existsSync(join(rootfs, d))));
    expect(readdirSync(join(rootfs, "usr"))).toEqual(["local"]);
    const owner = statSync(join(rootfs, "var/lib/kagami"));
    expect([owner.uid, owner.gid]).toEqual([65532, 65532]);
  });

  test("`kagami version` runs from the unpacked rootfs and prints the build's commit", async () => {
    const out = await run(inImage(["/usr/local/bin/kagami", "version", "--json"]));
    expect(JSON.parse(out.stdout)).toEqual(hostVersion);
  });

  test("`kagami serve` runs from the rootfs as nonroot: ready, metrics served, store in /var/lib/kagami", async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const proc = spawnProcess({
      name: "kagami-in-image",
      cmd: inImage(["/usr/local/bin/kagami", "serve", "--mdns=false", `--registry-addr=127.0.0.1:${port}`, `--metrics-addr=127.0.0.1:${metricsPort}`]),
    });
    await waitForHttp(`http://127.0.0.1:${port}/readyz`, { proc, timeoutMs: 20_000 });
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toContain("# TYPE spegel_mirror_requests_total counter");
    expect(proc.log()).toContain('"dataDir":"/var/lib/kagami"');
    await proc.stop();
  }, 30_000);

  test("--push sends the image to a registry, where it has the same layers", async () => {
    const registry = await startRegistry({ name: "image-registry" });
    const out = await run(["bash", "scripts/image.sh", "--bin", bin, "--layout", layout, "--tag", TAG, "--push", `docker://${registry.host}/kagami/kagami:${TAG}`, "--insecure"], { cwd: ROOT, timeoutMs: 120_000 });
    expect(out.stdout).toContain(`pushed docker://${registry.host}/kagami/kagami:${TAG}`);
    const pushed = JSON.parse((await run(["skopeo", "inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/kagami/kagami:${TAG}`])).stdout);
    const local = JSON.parse((await run(["skopeo", "inspect", "--raw", `oci:${layout}:${TAG}`])).stdout);
    expect(pushed.layers).toEqual(local.layers);
    await registry.stop();
  }, 120_000);
});
