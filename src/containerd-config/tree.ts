// A directory tree as data (files with bytes and modes, directories, symlinks) and the one
// operation configure and cleanup need: make a directory hold exactly a given tree. Files
// are replaced by write-to-temp + rename, so containerd never reads a half-written
// hosts.toml, and unchanged files are not touched (running twice changes nothing).
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, rename, rm, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { InvalidError } from "../errors.ts";

export type TreeEntry =
  | { type: "file"; mode: number; bytes: Uint8Array }
  | { type: "dir"; mode: number }
  | { type: "symlink"; target: string };

/** Relative path (with "/") -> entry. Parents are listed before children. */
export type Tree = Map<string, TreeEntry>;

/** A certs.d is a few small files: refuse anything far beyond that rather than buffer it. */
const MAX_ENTRIES = 10_000;
const MAX_BYTES = 64 << 20;
/** Names of files being written: never part of a tree, removed when left by an interrupted run. */
const TEMP_SUFFIX = ".kagami-tmp";

/** Reads a directory tree. `skip` names top-level entries left out. */
export async function readTree(root: string, skip: (name: string) => boolean = () => false): Promise<Tree> {
  const tree: Tree = new Map();
  let bytes = 0;
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      if ((rel === "" && skip(name)) || name.endsWith(TEMP_SUFFIX)) continue;
      const path = rel === "" ? name : `${rel}/${name}`;
      if (tree.size >= MAX_ENTRIES) throw new InvalidError(`${root} has more than ${MAX_ENTRIES} entries`);
      const st = await lstat(join(root, path));
      if (st.isSymbolicLink()) tree.set(path, { type: "symlink", target: await readlink(join(root, path)) });
      else if (st.isDirectory()) {
        tree.set(path, { type: "dir", mode: st.mode & 0o7777 });
        await visit(path);
      } else if (st.isFile()) {
        bytes += st.size;
        if (bytes > MAX_BYTES) throw new InvalidError(`${root} holds more than ${MAX_BYTES >> 20} MiB`);
        tree.set(path, { type: "file", mode: st.mode & 0o7777, bytes: new Uint8Array(await readFile(join(root, path))) });
      }
    }
  };
  await visit("");
  return tree;
}

/** `prefix/…` entries of a tree, re-rooted at prefix. */
export function subtree(tree: Tree, prefix: string): Tree {
  const out: Tree = new Map();
  for (const [path, entry] of tree) if (path.startsWith(`${prefix}/`)) out.set(path.slice(prefix.length + 1), entry);
  return out;
}

/**
 * Makes `root` hold exactly `tree`, leaving top-level entries for which `keep` is true
 * alone. Returns the paths written and removed.
 */
export async function applyTree(root: string, tree: Tree, keep: (name: string) => boolean): Promise<{ written: string[]; removed: string[] }> {
  const written: string[] = [];
  const removed: string[] = [];
  await mkdir(root, { recursive: true });
  for (const [path, want] of tree) {
    const target = join(root, path);
    const have = await lstat(target).catch(() => undefined);
    if (want.type === "dir") {
      if (have && !have.isDirectory()) await rm(target, { recursive: true, force: true });
      if (!have || !have.isDirectory()) await mkdir(target);
      if (!have?.isDirectory() || (have.mode & 0o7777) !== want.mode) await chmod(target, want.mode);
      continue;
    }
    if (want.type === "symlink") {
      if (have?.isSymbolicLink() && (await readlink(target)) === want.target) continue;
      const tmp = tempName(target);
      await symlink(want.target, tmp);
      if (have?.isDirectory()) await rm(target, { recursive: true, force: true });
      await rename(tmp, target);
      written.push(path);
      continue;
    }
    if (have?.isFile() && (have.mode & 0o7777) === want.mode && have.size === want.bytes.byteLength) {
      const current = new Uint8Array(await readFile(target));
      if (Buffer.compare(current, want.bytes) === 0) continue;
    }
    if (have?.isDirectory()) await rm(target, { recursive: true, force: true });
    await writeFileAtomic(target, want.bytes, want.mode);
    written.push(path);
  }
  const extra = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(root, rel))) {
      if (rel === "" && keep(name)) continue;
      const path = rel === "" ? name : `${rel}/${name}`;
      const want = tree.get(path);
      const st = await lstat(join(root, path));
      if (!want || (want.type === "dir") !== (st.isDirectory() && !st.isSymbolicLink())) {
        await rm(join(root, path), { recursive: true, force: true });
        removed.push(path);
      } else if (want.type === "dir") {
        await extra(path);
      }
    }
  };
  await extra("");
  return { written, removed };
}

/** Writes a file so readers see the old bytes or the new, never a part: temp, fsync, rename. */
export async function writeFileAtomic(path: string, bytes: Uint8Array, mode: number): Promise<void> {
  const tmp = tempName(path);
  const fh = await open(tmp, "wx", mode);
  try {
    await fh.writeFile(bytes);
    await fh.chmod(mode);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

function tempName(path: string): string {
  return join(dirname(path), `.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
}
