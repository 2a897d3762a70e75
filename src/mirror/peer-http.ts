// One request to a peer's registry API, and what its answer's headers say. Every request
// carries X-Spegel-Mirrored: true (the peer answers from its own content or 404, never
// forwards) and has a deadline for the response headers. Requests go over http1.ts, not
// fetch(): its body is pull-based and cheaper per byte (measured there).
import { MAX_MANIFEST_BYTES, MANIFEST_MEDIA_TYPES, type ByteRange, type Digest } from "../oci/index.ts";
import type { Peer } from "../routing/router.ts";
import { request, type BodyReader, type Http1Response } from "./http1.ts";
import type { MirrorRequest } from "./source.ts";

/** A peer's answer: status, headers, and its body still on the socket. */
export type PeerAnswer = Http1Response;

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
export function requestPeer(r: PeerRequest): Promise<PeerAnswer> {
  const headers: Record<string, string> = { [MIRRORED_HEADER]: "true", "Accept-Encoding": "identity" };
  if (r.range !== undefined) headers.Range = r.range;
  if (r.req.kind === "manifest") headers.Accept = r.req.accept ?? MANIFEST_MEDIA_TYPES.join(", ");
  return request({ url: peerUrl(r.peer, r.req), method: r.method, headers, signal: r.signal, headerTimeoutMs: r.headerTimeoutMs });
}

/** Reads a whole body (a manifest, a small blob); aborting `signal` cancels it. */
export async function readWhole(body: BodyReader, signal: AbortSignal): Promise<Uint8Array> {
  const onAbort = (): void => void body.cancel(signal.reason).catch(() => {});
  if (signal.aborted) onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const out = new Uint8Array(body.length);
    let at = 0;
    for (;;) {
      const r = await body.read();
      if (r.done) break;
      out.set(r.value, at);
      at += r.value.byteLength;
    }
    if (at !== body.length) throw new PeerAnswerError(`got ${at} of ${body.length} bytes`);
    return out;
  } finally {
    signal.removeEventListener("abort", onAbort);
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
export function readPeerContent(res: Pick<PeerAnswer, "status" | "headers">, req: MirrorRequest, wantRange: boolean): PeerContent {
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
