// One request to a peer's registry API, and what its answer's headers say. Every request
// carries X-Spegel-Mirrored: true (the peer answers from its own content or 404, never
// forwards) and has a deadline for the response headers.
import { MAX_MANIFEST_BYTES, MANIFEST_MEDIA_TYPES, type ByteRange, type Digest } from "../oci/index.ts";
import type { Peer } from "../routing/router.ts";
import type { MirrorRequest } from "./source.ts";

export const MIRRORED_HEADER = "X-Spegel-Mirrored";

export interface PeerRequest {
  peer: Peer;
  req: MirrorRequest;
  method: "GET" | "HEAD";
  /** Raw Range header value to send. */
  range?: string;
  headerTimeoutMs: number;
  signal: AbortSignal;
}

export class PeerAnswerError extends Error {
  override readonly name = "PeerAnswerError";
  constructor(
    message: string,
    readonly notFound = false,
  ) {
    super(message);
  }
}

export function peerUrl(peer: Peer, req: MirrorRequest): string {
  const endpoint = req.kind === "manifest" ? "manifests" : "blobs";
  const reference = req.digest ?? req.tag ?? "";
  return `${peer.url}/v2/${req.repository}/${endpoint}/${reference}?ns=${encodeURIComponent(req.registry)}`;
}

/** Sends the request; rejects when no headers came within the deadline or the peer is unreachable. */
export async function requestPeer(r: PeerRequest): Promise<Response> {
  const headers: Record<string, string> = { [MIRRORED_HEADER]: "true", "Accept-Encoding": "identity" };
  if (r.range !== undefined) headers.Range = r.range;
  if (r.req.kind === "manifest") headers.Accept = r.req.accept ?? MANIFEST_MEDIA_TYPES.join(", ");
  const headerDeadline = new AbortController();
  const timer = setTimeout(() => headerDeadline.abort(new Error(`no answer within ${r.headerTimeoutMs} ms`)), r.headerTimeoutMs);
  try {
    return await fetch(peerUrl(r.peer, r.req), {
      method: r.method,
      headers,
      redirect: "manual",
      signal: AbortSignal.any([r.signal, headerDeadline.signal]),
    });
  } catch (e) {
    if (headerDeadline.signal.aborted) throw headerDeadline.signal.reason;
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** The framing of a peer's content answer, checked against what was asked. */
export interface PeerContent {
  status: 200 | 206;
  contentType: string;
  /** Digest the peer says the content has (the asked digest for digest requests). */
  digest: Digest | undefined;
  /** Size of the whole content. */
  size: number;
  /** Bytes in this answer. */
  range: ByteRange;
}

/**
 * Reads a 200/206 answer's headers; throws PeerAnswerError on anything else (404 is notFound).
 * `wantRange` says whether a 206 is expected.
 */
export function readPeerContent(res: Response, req: MirrorRequest, wantRange: boolean): PeerContent {
  if (res.status === 404) throw new PeerAnswerError("404", true);
  if (res.status !== 200 && res.status !== 206) throw new PeerAnswerError(`status ${res.status}`);
  if (wantRange && res.status !== 206) throw new PeerAnswerError("peer ignored the Range");
  if (!wantRange && res.status !== 200) throw new PeerAnswerError("unasked partial answer");
  const said = res.headers.get("Docker-Content-Digest") ?? undefined;
  if (req.digest !== undefined && said !== undefined && said !== req.digest) {
    throw new PeerAnswerError(`peer answered for ${said}`);
  }
  const digest = (req.digest ?? said) as Digest | undefined;
  const length = lengthOf(res.headers.get("Content-Length"));
  if (length === undefined) throw new PeerAnswerError("no Content-Length");
  let size = length;
  let range: ByteRange = { start: 0, end: length - 1 };
  if (res.status === 206) {
    const m = (res.headers.get("Content-Range") ?? "").match(/^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/);
    if (!m) throw new PeerAnswerError("206 without a valid Content-Range");
    range = { start: Number(m[1]), end: Number(m[2]) };
    size = Number(m[3]);
    if (range.end < range.start || range.end >= size || range.end - range.start + 1 !== length) {
      throw new PeerAnswerError("Content-Range does not match Content-Length");
    }
  }
  if (req.kind === "manifest" && size > MAX_MANIFEST_BYTES) throw new PeerAnswerError("manifest larger than 4 MiB");
  return {
    status: res.status,
    contentType: res.headers.get("Content-Type") ?? "application/octet-stream",
    digest,
    size,
    range,
  };
}

function lengthOf(value: string | null): number | undefined {
  if (value === null || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}
