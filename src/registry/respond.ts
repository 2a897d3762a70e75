// Building OCI responses: content from a store (zero-copy for files), and error bodies.
import { contentRange, errorBody, rangeLength, RegistryError, type Descriptor, type ErrorCode } from "../oci/index.ts";
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

/** The body of a content response: a file slice goes out by sendfile, a stream as is. */
export function contentBody(content: Content): ReadableStream<Uint8Array> | Blob {
  if (content.kind === "stream") return content.body;
  const file = Bun.file(content.path);
  const whole = content.range.start === 0 && content.range.end === content.size - 1;
  return whole ? file : file.slice(content.range.start, content.range.end + 1);
}
