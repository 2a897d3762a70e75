// OCI distribution error codes and the JSON body every error response carries.

export type ErrorCode =
  | "BLOB_UNKNOWN"
  | "MANIFEST_UNKNOWN"
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "DIGEST_INVALID"
  | "MANIFEST_INVALID"
  | "RANGE_INVALID"
  | "UNAUTHORIZED"
  | "DENIED"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS";

/** Status a registry answers with for each code when nothing more specific applies. */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
};

export interface ErrorBody {
  errors: { code: ErrorCode; message: string; detail?: unknown }[];
}

export function errorBody(code: ErrorCode, message: string, detail?: unknown): ErrorBody {
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] };
}

/** An error that maps straight to an OCI error response. */
export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status: number = ERROR_STATUS[code],
    readonly detail?: unknown,
  ) {
    super(message);
  }
  body(): ErrorBody {
    return errorBody(this.code, this.message, this.detail);
  }
}
