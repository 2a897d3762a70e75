// Building OCI responses: content from a store (zero-copy for files), and error bodies.
import { contentRange, errorBody, rangeLength, RegistryError, type Descriptor, type ErrorCode } from "../oci/index.ts";
import { MAX_READ_BYTES } from "../mirror/http1.ts";
import type { Content } from "../store/store.ts";

export const JSON_TYPE = "application/json; charset=utf-8";

export function errorResponse(code: ErrorCode, message: string, status: number, detail?: unknown): Response {
  return new Response(JSON.stringify(errorBody(code, message, detail)), { status, headers: { "Content-Type": JSON_TYPE } });
}

export function registryErrorResponse(e: RegistryError): Response {
  return errorResponse(e.code, e.message, e.status, e.detail);
}

export interface ContentHeadersInput {
  descriptor: Descriptor;
  isBlob: boolean;
  /** Set when the client asked for a satisfiable range. */
  partial: boolean;
  content: Pick<Content, "size" | "range">;
}

/** The headers every content response carries, for a local hit or a peer's bytes alike. */
export function contentHeaders({ descriptor, isBlob, partial, content }: ContentHeadersInput): Headers {
  const h = new Headers({
    "Content-Type": descriptor.mediaType,
    "Docker-Content-Digest": descriptor.digest,
    "Content-Length": String(partial ? rangeLength(content.range) : content.size),
  });
  if (isBlob) h.set("Accept-Ranges", "bytes");
  if (partial) h.set("Content-Range", contentRange(content.range, content.size));
  return h;
}

/**
 * Streamed bodies up to this size are read whole before answering: Bun.serve (1.4.5) sends a
 * Content-Length only for a body of known size (a Blob, a file, bytes) and drops a handler's
 * from a ReadableStream (oven-sh/bun#10507), so a streamed blob would go out chunked. One
 * peer socket read's worth, so holding it whole costs what streaming one read does.
 */
export const WHOLE_BODY_BYTES = MAX_READ_BYTES;

/**
 * The body of a content response: a file slice goes out by sendfile, a small stream whole (so
 * it keeps its Content-Length), a larger stream as is.
 */
export async function contentBody(content: Content): Promise<ReadableStream<Uint8Array> | Blob | Uint8Array> {
  if (content.kind === "stream") {
    const length = rangeLength(content.range);
    if (length > WHOLE_BODY_BYTES) return content.body;
    const bytes = await Bun.readableStreamToBytes(content.body);
    if (bytes.byteLength !== length) throw new Error(`content stream ended after ${bytes.byteLength} of ${length} bytes`);
    return bytes;
  }
  const file = Bun.file(content.path);
  const whole = content.range.start === 0 && content.range.end === content.size - 1;
  return whole ? file : file.slice(content.range.start, content.range.end + 1);
}
