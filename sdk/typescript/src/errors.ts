/**
 * Errors: every failure the SDK reports is a BotframeworkError, and each cause has its own
 * class so that callers tell them apart with `instanceof`.
 *
 *   BotframeworkError
 *   ├─ ServerUnavailableError   nothing answers at the base URL, or the connection broke
 *   ├─ RequestTimeoutError      no answer (or no new stream data) within timeoutMs
 *   ├─ AbortError               the caller's AbortSignal fired (name "AbortError", as DOM's)
 *   ├─ OutputValidationError    a structured answer that is not the JSON asked for (cut off)
 *   └─ APIError                 the server answered with an error: status, type, code, param
 *      ├─ AuthenticationError   401: missing or wrong API key
 *      ├─ NotFoundError         404
 *      │  └─ ModelNotFoundError 404 model_not_found
 *      ├─ BadRequestError       400 / 413 / 422: the server refused the request as invalid
 *      │  └─ ContextLengthError 400 context_length_exceeded
 *      ├─ BusyError             503: retryAfterMs says when to try again
 *      └─ CancelledError        499 / code "cancelled": the server stopped the request
 *
 * apiError() is the one mapping from an error answer (or an error event inside a stream,
 * status 0) to these classes.
 */

/** The base of every error this package throws. */
export class BotframeworkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** No server answers at the base URL (connection refused, unknown host), or the connection
 * broke before the answer was complete. */
export class ServerUnavailableError extends BotframeworkError {}

/** The server did not answer, or a stream sent nothing, within `timeoutMs`. */
export class RequestTimeoutError extends BotframeworkError {}

/** The request was stopped by the caller's AbortSignal (or by breaking out of a stream).
 * Its `name` is "AbortError", as for fetch's own DOMException; `cause` is the signal's reason. */
export class AbortError extends BotframeworkError {
  constructor(message = "the request was aborted", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AbortError";
  }
}

/** A structured answer that cannot be the JSON asked for: cut off by max_tokens, or not JSON. */
export class OutputValidationError extends BotframeworkError {
  /** The text the model produced. */
  readonly output: string;
  readonly finishReason: string | undefined;

  constructor(message: string, output: string, finishReason?: string) {
    super(message);
    this.output = output;
    this.finishReason = finishReason;
  }
}

export interface APIErrorFields {
  /** HTTP status; 0 for an error event that arrived inside a stream. */
  status: number;
  message: string;
  type?: string | undefined;
  code?: string | undefined;
  param?: string | undefined;
  /** From the Retry-After header, in milliseconds. */
  retryAfterMs?: number | undefined;
}

/** An error the server answered with: OpenAI's `{"error": {message, type, param, code}}`. */
export class APIError extends BotframeworkError {
  /** HTTP status; 0 for an error event that arrived inside a stream. */
  readonly status: number;
  readonly type: string | undefined;
  readonly code: string | undefined;
  readonly param: string | undefined;
  /** From the Retry-After header, in milliseconds (503 answers); undefined when none. */
  readonly retryAfterMs: number | undefined;

  constructor(fields: APIErrorFields) {
    super(describe(fields));
    this.status = fields.status;
    this.type = fields.type;
    this.code = fields.code;
    this.param = fields.param;
    this.retryAfterMs = fields.retryAfterMs;
  }
}

/** 401: the server wants an API key and got none, or a wrong one. */
export class AuthenticationError extends APIError {}

/** 404: an unknown route, session, ... */
export class NotFoundError extends APIError {}

/** 404 model_not_found: the server does not know the model (nor can it find it). */
export class ModelNotFoundError extends NotFoundError {}

/** 400 / 413 / 422: the server refused the request as invalid. */
export class BadRequestError extends APIError {}

/** 400 context_length_exceeded: the prompt does not fit the model's context. */
export class ContextLengthError extends BadRequestError {}

/** 503: the server cannot take the request now (its queue is full, or the model is not
 * available yet). `retryAfterMs` says when to try again. */
export class BusyError extends APIError {
  override readonly retryAfterMs: number;

  constructor(fields: APIErrorFields) {
    super(fields);
    this.retryAfterMs = fields.retryAfterMs ?? 1000;
  }
}

/** 499 / code "cancelled": the server stopped the request before it answered. */
export class CancelledError extends APIError {}

function describe(f: APIErrorFields): string {
  const where = f.status ? `HTTP ${f.status}` : "stream error";
  const what = f.code ?? f.type;
  return `${where}${what ? ` (${what})` : ""}: ${f.message}`;
}

function str(value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * The error for an error answer: `status` (0 for an error event in a stream), the response
 * headers (Retry-After) and the body (parsed JSON, or text).
 */
export function apiError(status: number, headers: Headers | undefined, body: unknown): APIError {
  const error = isObject(body) && isObject(body["error"]) ? body["error"] : undefined;
  let message: string;
  if (error !== undefined) {
    message = str(error["message"]) ?? `HTTP ${status}`;
  } else if (typeof body === "string" && body.trim() !== "") {
    message = body.trim().slice(0, 512);
  } else {
    message = `HTTP ${status}`;
  }
  const fields: APIErrorFields = {
    status,
    message,
    type: str(error?.["type"]),
    code: str(error?.["code"]),
    param: str(error?.["param"]),
    retryAfterMs: headers ? parseRetryAfter(headers.get("retry-after")) : undefined,
  };
  const { code, type } = fields;
  if (status === 401 || code === "invalid_api_key" || type === "authentication_error") {
    return new AuthenticationError(fields);
  }
  if (code === "model_not_found") return new ModelNotFoundError(fields);
  if (code === "context_length_exceeded") return new ContextLengthError(fields);
  if (status === 503 || code === "server_busy" || type === "server_busy") return new BusyError(fields);
  if (status === 499 || code === "cancelled" || type === "cancelled") return new CancelledError(fields);
  if (status === 404) return new NotFoundError(fields);
  if (status === 400 || status === 413 || status === 422 || (status === 0 && type === "invalid_request_error")) {
    return new BadRequestError(fields);
  }
  return new APIError(fields);
}

/** Retry-After: delay-seconds or an HTTP date, in milliseconds; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (text === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
