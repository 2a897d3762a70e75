// A minimal ustar writer for test layers: regular files and their parent directories, owner
// root, fixed mtime (so equal specs give equal layers). Random file content comes straight
// from the kernel CSPRNG in 4 MiB chunks (~5 GB/s): incompressible, so gzip cannot shrink
// a "256 MiB" layer into a small one.
import { randomFillSync } from "node:crypto";
import { closeSync, openSync, writeSync } from "node:fs";

/** File content: bytes, UTF-8 text, or a byte count of random content. */
export type FileContent = Uint8Array | string | number;

const BLOCK = 512;
const CHUNK = 4 << 20;
const MTIME = 1_700_000_000;

/** Validated relative path: no leading slash, no `.`/`..` segments, no empty segments. */
export function layerPath(path: string): string {
  const parts = path.split("/");
  if (path.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..") || path.includes("\0")) {
    throw new Error(`invalid layer path ${JSON.stringify(path)} (use a relative path like "etc/app.conf")`);
  }
  return parts.join("/");
}

/** Writes files (with their parent directories) as a tar archive to `out`. */
export function writeTar(out: string, files: Readonly<Record<string, FileContent | undefined>>): void {
  const entries = Object.entries(files).flatMap(([p, c]) => (c === undefined ? [] : [[layerPath(p), c] as const]));
  const dirs = new Set<string>();
  for (const [p] of entries) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  const fd = openSync(out, "w");
  try {
    for (const d of [...dirs].sort()) writeSync(fd, header(`${d}/`, 0, "5", 0o755));
    for (const [p, content] of entries.sort(([a], [b]) => (a < b ? -1 : 1))) {
      const size = typeof content === "number" ? content : typeof content === "string" ? Buffer.byteLength(content) : content.length;
      if (!Number.isSafeInteger(size) || size < 0 || size >= 8 ** 11) throw new Error(`invalid size ${size} for ${p} (0 to 8 GiB)`);
      writeSync(fd, header(p, size, "0", 0o644));
      if (typeof content === "number") writeRandom(fd, size);
      else writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (pad > 0) writeSync(fd, new Uint8Array(pad));
    }
    writeSync(fd, new Uint8Array(BLOCK * 2));
  } finally {
    closeSync(fd);
  }
}

function writeRandom(fd: number, size: number): void {
  const buf = new Uint8Array(Math.min(CHUNK, Math.max(size, 1)));
  for (let left = size; left > 0; ) {
    const n = Math.min(left, buf.length);
    const view = buf.subarray(0, n);
    randomFillSync(view);
    writeSync(fd, view);
    left -= n;
  }
}

function header(path: string, size: number, type: "0" | "5", mode: number): Uint8Array {
  const h = new Uint8Array(BLOCK);
  let name = path;
  let prefix = "";
  if (Buffer.byteLength(name) > 100) {
    // ustar splits long paths at a slash: prefix (<=155) + name (<=100).
    const cut = path.lastIndexOf("/", path.length - 2);
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
    if (cut < 0 || Buffer.byteLength(prefix) > 155 || Buffer.byteLength(name) > 100) throw new Error(`layer path too long: ${path}`);
  }
  const put = (offset: number, len: number, value: string) => h.set(Buffer.from(value).subarray(0, len), offset);
  const octal = (offset: number, len: number, value: number) => put(offset, len, value.toString(8).padStart(len - 1, "0") + "\0");
  put(0, 100, name);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, MTIME);
  put(148, 8, "        ");
  put(156, 1, type);
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  put(265, 32, "root");
  put(297, 32, "root");
  put(345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}
