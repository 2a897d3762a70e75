// Finds a named section in a 64-bit little-endian ELF file (x86_64, arm64) by reading only its
// header, section headers and section name table: a few KiB of a 100+ MiB executable.
import { closeSync, openSync, readSync } from "node:fs";

export interface Section {
  /** Where the section's bytes start in the file. */
  offset: number;
  size: number;
}

// Bounds for a malformed file: a real executable has tens of sections and a name table of a few hundred bytes.
const MAX_SECTIONS = 4096;
const MAX_NAMES_BYTES = 1 << 20;

/** The section called `name` in the ELF file at `path`; null when absent or not a 64-bit LE ELF. */
export function elfSection(path: string, name: string): Section | null {
  const fd = openSync(path, "r");
  try {
    const read = (position: number, length: number): DataView => {
      const bytes = new Uint8Array(length);
      const n = readSync(fd, bytes, 0, length, position);
      if (n !== length) throw new Error(`${path}: short read at ${position}`);
      return new DataView(bytes.buffer);
    };
    const header = read(0, 64);
    // \x7fELF, class 2 (64-bit), data 1 (little-endian).
    if (header.getUint32(0, false) !== 0x7f454c46 || header.getUint8(4) !== 2 || header.getUint8(5) !== 1) return null;
    const shoff = Number(header.getBigUint64(0x28, true));
    const shentsize = header.getUint16(0x3a, true);
    const shnum = header.getUint16(0x3c, true);
    const shstrndx = header.getUint16(0x3e, true);
    if (shoff === 0 || shentsize < 64 || shnum > MAX_SECTIONS || shstrndx >= shnum) return null;
    const table = read(shoff, shnum * shentsize);
    const entry = (i: number) => ({
      name: table.getUint32(i * shentsize, true),
      offset: Number(table.getBigUint64(i * shentsize + 24, true)),
      size: Number(table.getBigUint64(i * shentsize + 32, true)),
    });
    const names = entry(shstrndx);
    if (names.size > MAX_NAMES_BYTES) return null;
    const text = new TextDecoder().decode(read(names.offset, names.size));
    for (let i = 0; i < shnum; i++) {
      const s = entry(i);
      const end = text.indexOf("\0", s.name);
      if (text.slice(s.name, end < 0 ? undefined : end) === name) return { offset: s.offset, size: s.size };
    }
    return null;
  } finally {
    closeSync(fd);
  }
}
