// `kagami configure` and `kagami cleanup` on containerd's registry config_path (certs.d).
// configure keeps what was there in <config-path>/_backup/ (taken once: the first run's
// view of the directory is the one cleanup restores), then makes the directory hold exactly
// one hosts.toml per mirrored registry. cleanup restores the backup and removes it. Both
// are idempotent, and files are swapped in atomically: containerd, which reads hosts.toml
// on every pull, sees the old configuration or the new, never a gap or a partial file.
import { lstat, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { existingHostTables, renderHostsToml } from "./hosts-toml.ts";
import { parseMirroredRegistries, parseMirrorTargets } from "./registries.ts";
import { applyTree, readTree, subtree, type Tree } from "./tree.ts";

export const BACKUP_DIR = "_backup";
const BACKUP_STAGING = "_backup.kagami-tmp";

export interface ConfigureOptions {
  configPath: string;
  /** Hosts or URLs (the scheme sets the server line); empty: every registry (_default). */
  mirroredRegistries: readonly string[];
  mirrorTargets: readonly string[];
  resolveTags: boolean;
  /** Keep the host entries of each replaced hosts.toml after the mirrors. */
  prependExisting: boolean;
}

export interface ChangeReport {
  written: string[];
  removed: string[];
  /** configure: the backup was taken by this run. cleanup: a backup was restored. */
  backup: boolean;
}

async function isDir(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isDirectory() ?? false;
}

const isBackupName = (name: string) => name === BACKUP_DIR || name === BACKUP_STAGING;

export async function configureMirrors(opts: ConfigureOptions): Promise<ChangeReport> {
  const registries = parseMirroredRegistries(opts.mirroredRegistries);
  const mirrors = parseMirrorTargets(opts.mirrorTargets);
  const backupPath = join(opts.configPath, BACKUP_DIR);
  const haveBackup = await isDir(backupPath);
  const original: Tree = (await isDir(opts.configPath))
    ? await readTree(haveBackup ? backupPath : opts.configPath, isBackupName)
    : new Map();

  // Everything is computed (and an unparsable existing hosts.toml refused) before the disk changes.
  const desired: Tree = new Map();
  for (const r of registries) {
    const old = subtree(original, r.dir);
    const oldDir = original.get(r.dir);
    desired.set(r.dir, { type: "dir", mode: oldDir?.type === "dir" ? oldDir.mode : 0o755 });
    const oldHosts = old.get("hosts.toml");
    let existingHosts: string | undefined;
    if (opts.prependExisting && oldHosts?.type === "file") {
      existingHosts = existingHostTables(new TextDecoder().decode(oldHosts.bytes), mirrors);
      // Certificates and keys the kept entries may name come along.
      for (const [path, entry] of old) if (path !== "hosts.toml") desired.set(`${r.dir}/${path}`, entry);
    }
    const text = renderHostsToml({ server: r.server, mirrors, resolveTags: opts.resolveTags, existingHosts });
    desired.set(`${r.dir}/hosts.toml`, { type: "file", mode: oldHosts?.type === "file" ? oldHosts.mode : 0o644, bytes: new TextEncoder().encode(text) });
  }

  if (!haveBackup) {
    const staging = join(opts.configPath, BACKUP_STAGING);
    await rm(staging, { recursive: true, force: true });
    await applyTree(staging, original, () => false);
    await rename(staging, backupPath);
  }
  const changes = await applyTree(opts.configPath, desired, (name) => name === BACKUP_DIR);
  return { ...changes, backup: !haveBackup };
}

export async function cleanupMirrors(configPath: string): Promise<ChangeReport> {
  const backupPath = join(configPath, BACKUP_DIR);
  if (!(await isDir(backupPath))) return { written: [], removed: [], backup: false };
  const original = await readTree(backupPath);
  const changes = await applyTree(configPath, original, (name) => name === BACKUP_DIR);
  await rm(backupPath, { recursive: true, force: true });
  return { ...changes, backup: true };
}
