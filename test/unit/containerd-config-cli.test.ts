// `kagami configure` and `kagami cleanup` as commands: flags, exit codes, refusal of bad input.
import { afterEach, beforeEach, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanupCommand } from "../../src/cli/cleanup.ts";
import { configureCommand } from "../../src/cli/configure.ts";
import { ConfigError } from "../../src/config.ts";

let dir: string;
let certs: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kagami-cli-certs-"));
  certs = join(dir, "certs.d");
  mkdirSync(join(certs, "docker.io"), { recursive: true });
  writeFileSync(join(certs, "docker.io", "hosts.toml"), 'server = "https://registry-1.docker.io"\n');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const quiet = ["--log-level", "error"];

test("configure writes each mirrored registry's hosts.toml from flags; cleanup restores", async () => {
  const code = await configureCommand([
    ...quiet,
    "--containerd-registry-config-path", certs,
    "--mirrored-registries", "https://docker.io,http://10.0.0.1:5000",
    "--mirror-targets", "http://127.0.0.1:5000,http://127.0.0.1:5001",
    "--no-resolve-tags",
  ]);
  expect(code).toBe(0);
  expect(readdirSync(certs).sort()).toEqual(["10.0.0.1:5000", "_backup", "docker.io"]);
  const text = readFileSync(join(certs, "10.0.0.1:5000", "hosts.toml"), "utf8");
  expect(text.split("\n")[0]).toBe('server = "http://10.0.0.1:5000"');
  expect(text).toContain('[host."http://127.0.0.1:5001"]\n  capabilities = ["pull"]');
  expect(await cleanupCommand([...quiet, "--containerd-registry-config-path", certs])).toBe(0);
  expect(readdirSync(certs)).toEqual(["docker.io"]);
  expect(readFileSync(join(certs, "docker.io", "hosts.toml"), "utf8")).toBe('server = "https://registry-1.docker.io"\n');
});

test("the mirror target defaults to the node's own kagami; registries default to _default", async () => {
  expect(await configureCommand([...quiet, "--containerd-registry-config-path", certs])).toBe(0);
  expect(readFileSync(join(certs, "_default", "hosts.toml"), "utf8")).toBe(
    '[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n  dial_timeout = "200ms"\n',
  );
});

test("bad input is a usage error and nothing is written", async () => {
  const before = readdirSync(certs);
  await expect(configureCommand([...quiet, "--containerd-registry-config-path", certs, "--mirror-targets", "127.0.0.1:5000"])).rejects.toBeInstanceOf(ConfigError);
  await expect(configureCommand([...quiet, "--containerd-registry-config-path", certs, "--mirrored-registries", "https://docker.io/x"])).rejects.toBeInstanceOf(ConfigError);
  await expect(configureCommand([...quiet, "stray"])).rejects.toBeInstanceOf(ConfigError);
  await expect(cleanupCommand([...quiet, "--mirror-targets", "http://x.io"])).rejects.toBeInstanceOf(ConfigError);
  expect(readdirSync(certs)).toEqual(before);
});
