// The Range header of blob requests: one range of the `bytes` unit, or a suffix range.
// Multiple ranges are refused: no registry client asks for them and multipart bodies
// cannot go out by sendfile.

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export type RangeRequest =
  | { kind: "range"; first: number; last?: number }
  | { kind: "suffix"; length: number };

export class RangeError416 extends Error {
  override readonly name = "RangeError";
  /** `malformed`: the header does not parse; `unsatisfiable`: it parses but misses the content. */
  constructor(message: string, readonly reason: "malformed" | "unsatisfiable" | "multiple") {
    super(message);
  }
}

const MAX_DIGITS = 15; // < 2^53: sizes stay exact as numbers

/** Parses a Range header value; throws RangeError416 on anything but one byte range. */
export function parseRange(header: string): RangeRequest {
  const value = header.trim();
  const eq = value.indexOf("=");
  if (eq < 0 || value.slice(0, eq).trim().toLowerCase() !== "bytes") {
    throw new RangeError416(`unsupported range unit in ${JSON.stringify(value.slice(0, 40))}`, "malformed");
  }
  const spec = value.slice(eq + 1).trim();
  if (spec.includes(",")) throw new RangeError416("multiple ranges are not supported", "multiple");
  const m = spec.match(/^(\d*)-(\d*)$/);
  if (!m || (m[1] === "" && m[2] === "")) throw new RangeError416(`malformed range ${JSON.stringify(spec.slice(0, 40))}`, "malformed");
  const [, a = "", b = ""] = m;
  if (a.length > MAX_DIGITS || b.length > MAX_DIGITS) throw new RangeError416("range bound is too large", "malformed");
  if (a === "") return { kind: "suffix", length: Number(b) };
  const first = Number(a);
  if (b === "") return { kind: "range", first };
  const last = Number(b);
  if (last < first) throw new RangeError416(`range end ${last} is before its start ${first}`, "malformed");
  return { kind: "range", first, last };
}

/** Applies a parsed range to content of `size` bytes (RFC 9110 §14.1.2). */
export function resolveRange(req: RangeRequest, size: number): ByteRange {
  if (req.kind === "suffix") {
    if (req.length === 0 || size === 0) throw new RangeError416("suffix range selects no bytes", "unsatisfiable");
    return { start: Math.max(0, size - req.length), end: size - 1 };
  }
  if (req.first >= size) throw new RangeError416(`range starts at ${req.first}, content has ${size} bytes`, "unsatisfiable");
  return { start: req.first, end: Math.min(req.last ?? size - 1, size - 1) };
}

export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}

export function rangeLength(range: ByteRange): number {
  return range.end - range.start + 1;
}
