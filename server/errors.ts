/**
 * The one error type the HTTP layer turns into a response: a status, a stable machine-readable code and a message.
 * Everything else thrown inside a handler becomes a 500 (or a 400 for ptq's own option and format errors).
 *
 * @module
 */

/** Stable codes of {@link HttpError}, for clients that branch on the kind of failure rather than the text. */
export type ErrorCode =
  | "bad_json"
  | "bad_request"
  | "unknown_method"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "payload_too_large"
  | "unsupported_media_type"
  | "too_many_jobs"
  | "internal";

/** An error with an HTTP status; the app's error handler answers `{ "error": { status, code, message } }`. */
export class HttpError extends Error {
  /**
   * @param status HTTP status code.
   * @param code Machine-readable kind.
   * @param message Human-readable explanation (never contains server paths outside the request's own).
   * @param headers Extra response headers (`Retry-After`, `WWW-Authenticate`).
   */
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** The JSON body of an error response. */
export interface ErrorBody {
  readonly error: { readonly status: number; readonly code: ErrorCode; readonly message: string };
}

/** The body {@link HttpError} is answered with. */
export function errorBody(e: HttpError): ErrorBody {
  return { error: { status: e.status, code: e.code, message: e.message } };
}
