// kagami configure / cleanup on a real directory: what containerd will read, the backup,
// idempotence, and that cleanup gives back the directory exactly as it was.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "smol-toml";
import { cleanupMirrors, configureMirrors, type ConfigureOptions } from "../../src/containerd-config/configure.ts";
import { existingHostTables, renderHostsToml } from "../../src/containerd-config/hosts-toml.ts";
import { parseMirroredRegistries, parseMirrorTargets } from "../../src/containerd-config/registries.ts";
import { readTree } from "../../src/containerd-config/tree.ts";
import { InvalidError } from "../../src/errors.ts";

let dir: string;
let certs: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kagami-certs-"));
  certs = join(dir, "certs.d");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const opts = (o: Partial<ConfigureOptions> = {}): ConfigureOptions => ({
  configPath: certs,
  mirroredRegistries: [],
  mirrorTargets: ["http://127.0.0.1:5000"],
  resolveTags: true,
  prependExisting: false,
  ...o,
});

function read(rel: string): string {
  return readFileSync(join(certs, rel), "utf8");
}

/** Every path under the config dir with its bytes and mode: the byte-identical comparison. */
async function snapshot(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [path, e] of await readTree(certs)) {
    out[path] = e.type === "file" ? `file ${e.mode.toString(8)} ${Buffer.from(e.bytes).toString("base64")}` : e.type === "dir" ? `dir ${e.mode.toString(8)}` : `link ${e.target}`;
  }
  return out;
}

const EXISTING = `server = "https://registry-1.docker.io"

[host."https://corp-mirror.example"]
  capabilities = ["pull", "resolve"]
  ca = "corp-ca.pem"
  [host."https://corp-mirror.example".header]
    x-team = ["infra"]
`;

function seedExisting(): void {
  mkdirSync(join(certs, "docker.io"), { recursive: true });
  writeFileSync(join(certs, "docker.io", "hosts.toml"), EXISTING);
  chmodSync(join(certs, "docker.io", "hosts.toml"), 0o600);
  writeFileSync(join(certs, "docker.io", "corp-ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  mkdirSync(join(certs, "ghcr.io"), { recursive: true });
  writeFileSync(join(certs, "ghcr.io", "hosts.toml"), 'server = "https://ghcr.io"\n');
  symlinkSync("docker.io", join(certs, "index.docker.io"));
}

describe("inputs", () => {
  test("registries as Spegel takes them: the scheme sets the server, docker.io goes to registry-1", () => {
    expect(parseMirroredRegistries(["https://docker.io", "http://10.0.0.1:5000", "ghcr.io"])).toEqual([
      { dir: "docker.io", server: "https://registry-1.docker.io" },
      { dir: "10.0.0.1:5000", server: "http://10.0.0.1:5000" },
      { dir: "ghcr.io", server: "https://ghcr.io" },
    ]);
    expect(parseMirroredRegistries([])).toEqual([{ dir: "_default" }]);
    expect(parseMirroredRegistries(["docker.io", "https://docker.io"])).toHaveLength(1);
  });

  test("refuses what would make a bad path or a bad hosts.toml", () => {
    for (const bad of ["../etc", "https://docker.io/library", "ftp://x.io", "https://user:pw@x.io", "x.io?a=1", "http://", "a b"]) {
      expect(() => parseMirroredRegistries([bad])).toThrow(InvalidError);
    }
    expect(() => parseMirroredRegistries(["http://x.io", "https://x.io"])).toThrow(InvalidError);
    expect(() => parseMirrorTargets([])).toThrow(InvalidError);
    expect(() => parseMirrorTargets(["127.0.0.1:5000"])).toThrow(InvalidError);
    expect(() => parseMirrorTargets(['http://a"b'])).toThrow(InvalidError);
    expect(parseMirrorTargets(["http://127.0.0.1:5000/", "http://127.0.0.1:5000"])).toEqual(["http://127.0.0.1:5000"]);
  });
});

describe("hosts.toml", () => {
  test("mirrors first with a 200ms dial timeout, then the server; it parses as TOML", () => {
    const text = renderHostsToml({ server: "https://registry-1.docker.io", mirrors: ["http://127.0.0.1:5000", "http://10.0.0.2:5000"], resolveTags: true });
    expect(text).toBe(
      'server = "https://registry-1.docker.io"\n\n' +
        '[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n  dial_timeout = "200ms"\n\n' +
        '[host."http://10.0.0.2:5000"]\n  capabilities = ["pull", "resolve"]\n  dial_timeout = "200ms"\n',
    );
    const doc = parse(text) as { host: Record<string, { capabilities: string[] }> };
    expect(Object.keys(doc.host)).toEqual(["http://127.0.0.1:5000", "http://10.0.0.2:5000"]);
  });

  test("without resolve-tags mirrors only pull; _default has no server line", () => {
    const text = renderHostsToml({ mirrors: ["http://127.0.0.1:5000"], resolveTags: false });
    expect(text.startsWith("server")).toBe(false);
    expect((parse(text) as { host: Record<string, { capabilities: string[] }> }).host["http://127.0.0.1:5000"]!.capabilities).toEqual(["pull"]);
  });

  test("existing host tables are kept in order, nested tables included, ours not repeated", () => {
    const kept = existingHostTables(EXISTING + '\n[host."http://127.0.0.1:5000"]\n  capabilities = ["pull"]\n', ["http://127.0.0.1:5000"]);
    const doc = parse(kept) as { host: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.host)).toEqual(["https://corp-mirror.example"]);
    expect(doc.host["https://corp-mirror.example"]!.header).toEqual({ "x-team": ["infra"] });
    expect(existingHostTables('server = "https://x.io"\n')).toBe("");
    expect(() => existingHostTables("[host.")).toThrow(InvalidError);
  });
});

describe("configure and cleanup", () => {
  test("configure then cleanup leaves a certs.d with existing files byte-identical", async () => {
    seedExisting();
    const before = await snapshot();
    await configureMirrors(opts({ mirroredRegistries: ["https://docker.io", "http://127.0.0.1:5999"] }));
    expect(await snapshot()).not.toEqual(before);
    await cleanupMirrors(certs);
    expect(await snapshot()).toEqual(before);
    expect(readdirSync(certs)).not.toContain("_backup");
  });

  test("existing configuration moves to _backup and only the mirrors' hosts.toml are active", async () => {
    seedExisting();
    const r = await configureMirrors(opts({ mirroredRegistries: ["https://docker.io"] }));
    expect(r.backup).toBe(true);
    expect(readdirSync(certs).sort()).toEqual(["_backup", "docker.io"]);
    expect(readdirSync(join(certs, "docker.io"))).toEqual(["hosts.toml"]);
    expect(read("docker.io/hosts.toml")).toBe(
      'server = "https://registry-1.docker.io"\n\n[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n  dial_timeout = "200ms"\n',
    );
    expect(statSync(join(certs, "docker.io/hosts.toml")).mode & 0o777).toBe(0o600);
    expect(read("_backup/docker.io/hosts.toml")).toBe(EXISTING);
    expect(read("_backup/ghcr.io/hosts.toml")).toBe('server = "https://ghcr.io"\n');
  });

  test("no mirrored registries: one _default/hosts.toml for all", async () => {
    await configureMirrors(opts());
    expect(readdirSync(certs).sort()).toEqual(["_backup", "_default"]);
    const doc = parse(read("_default/hosts.toml")) as Record<string, unknown>;
    expect(doc.server).toBeUndefined();
    expect(Object.keys(doc.host as object)).toEqual(["http://127.0.0.1:5000"]);
  });

  test("running configure twice changes nothing; the first backup is kept", async () => {
    seedExisting();
    await configureMirrors(opts({ mirroredRegistries: ["docker.io"] }));
    const once = await snapshot();
    const again = await configureMirrors(opts({ mirroredRegistries: ["docker.io"] }));
    expect(again).toEqual({ written: [], removed: [], backup: false });
    expect(await snapshot()).toEqual(once);
    await cleanupMirrors(certs);
    expect(await cleanupMirrors(certs)).toEqual({ written: [], removed: [], backup: false });
    expect(read("docker.io/hosts.toml")).toBe(EXISTING);
  });

  test("re-configuring with other registries replaces ours and still restores the original", async () => {
    seedExisting();
    const before = await snapshot();
    await configureMirrors(opts({ mirroredRegistries: ["docker.io"] }));
    await configureMirrors(opts({ mirroredRegistries: ["ghcr.io", "quay.io"], mirrorTargets: ["http://10.0.0.9:5000"] }));
    expect(readdirSync(certs).sort()).toEqual(["_backup", "ghcr.io", "quay.io"]);
    expect(read("quay.io/hosts.toml")).toContain('[host."http://10.0.0.9:5000"]');
    await cleanupMirrors(certs);
    expect(await snapshot()).toEqual(before);
  });

  test("--prepend-existing keeps the old host entries (and their files) after the mirrors", async () => {
    seedExisting();
    await configureMirrors(opts({ mirroredRegistries: ["https://docker.io"], prependExisting: true }));
    const doc = parse(read("docker.io/hosts.toml")) as { server: string; host: Record<string, Record<string, unknown>> };
    expect(doc.server).toBe("https://registry-1.docker.io");
    expect(Object.keys(doc.host)).toEqual(["http://127.0.0.1:5000", "https://corp-mirror.example"]);
    expect(doc.host["https://corp-mirror.example"]!.ca).toBe("corp-ca.pem");
    expect(readdirSync(join(certs, "docker.io")).sort()).toEqual(["corp-ca.pem", "hosts.toml"]);
  });

  test("invalid input or an unparsable existing hosts.toml changes nothing on disk", async () => {
    seedExisting();
    writeFileSync(join(certs, "ghcr.io", "hosts.toml"), "[host.\n");
    const before = await snapshot();
    await expect(configureMirrors(opts({ mirrorTargets: ["not a url"] }))).rejects.toBeInstanceOf(InvalidError);
    await expect(configureMirrors(opts({ mirroredRegistries: ["ghcr.io"], prependExisting: true }))).rejects.toBeInstanceOf(InvalidError);
    expect(await snapshot()).toEqual(before);
  });

  test("a config path that does not exist yet is created; no temp files are left behind", async () => {
    await configureMirrors(opts({ mirroredRegistries: ["docker.io", "ghcr.io"] }));
    const all = readdirSync(certs, { recursive: true }).map(String);
    expect(all.filter((p) => p.includes("kagami-tmp"))).toEqual([]);
    await cleanupMirrors(certs);
    expect(readdirSync(certs)).toEqual([]);
  });

  test("leftovers of an interrupted run are cleaned up by the next", async () => {
    seedExisting();
    const before = await snapshot();
    mkdirSync(join(certs, "_backup.kagami-tmp", "docker.io"), { recursive: true });
    writeFileSync(join(certs, "docker.io", ".abc.kagami-tmp"), "partial");
    await configureMirrors(opts({ mirroredRegistries: ["docker.io"] }));
    expect(readdirSync(certs).sort()).toEqual(["_backup", "docker.io"]);
    expect(readdirSync(join(certs, "_backup", "docker.io")).sort()).toEqual(["corp-ca.pem", "hosts.toml"]);
    await cleanupMirrors(certs);
    expect(await snapshot()).toEqual(before);
  });
});
