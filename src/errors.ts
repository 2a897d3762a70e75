// Errors a caller decides on. Each layer throws these; the registry maps them to OCI
// responses (NotFound -> 404, Invalid -> 400, Unavailable -> 503 or fallback).

export class NotFoundError extends Error {
  override readonly name = "NotFoundError";
}

export class InvalidError extends Error {
  override readonly name = "InvalidError";
}

export class UnavailableError extends Error {
  override readonly name = "UnavailableError";
}

/** Content whose bytes do not hash to the digest they were asked for. */
export class DigestMismatchError extends Error {
  override readonly name = "DigestMismatchError";
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
