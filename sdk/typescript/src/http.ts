/**
 * The transport: one HTTP call to the server, with the caller's AbortSignal, a timeout,
 * error mapping and the retries that are safe.
 *
 *   send(method, path, body) --fetch--> 2xx: the parsed JSON (or, for a stream, the open
 *   Response and its Call, which the stream reader keeps alive and closes)
 *   fetch throws --> AbortError (the caller's signal) | RequestTimeoutError | nothing reached
 *       the server (refused, unknown host): autoStart's hook, else retry, else
 *       ServerUnavailableError | ServerUnavailableError (the connection broke)
 *   4xx/5xx --> apiError(status, headers, body); sent again only after a 503 on a GET or a
 *       503 server_busy (the queue was full: nothing started), after its Retry-After
 *
 * A POST that may have started generating is never sent twice.
 */

import {
  AbortError,
  BusyError,
  RequestTimeoutError,
  ServerUnavailableError,
  apiError,
  type APIError,
} from "./errors.js";
import type { FetchLike } from "./types.js";

export const DEFAULT_URL = "http://127.0.0.1:8000";
export const DEFAULT_TIMEOUT_MS = 600_000;
export const DEFAULT_RETRIES = 2;
/** The longest wait between two tries, whatever Retry-After says. */
export const MAX_RETRY_WAIT_MS = 30_000;

/** The server's root URL: the option, else $BOTFRAMEWORK_URL, else 127.0.0.1:8000; a trailing
 * "/" or "/v1" is dropped, and a URL without a scheme gets http://. */
export function serverURL(baseURL: string | undefined): string {
  let url = (baseURL || process.env["BOTFRAMEWORK_URL"] || DEFAULT_URL).trim().replace(/\/+$/, "");
  if (url.endsWith("/v1")) url = url.slice(0, -3).replace(/\/+$/, "");
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) url = `http://${url}`;
  return url;
}

export function isLoopback(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return host === "localhost" || host === "[::1]" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

/** The lifetime of one call: an AbortController tied to the caller's signal and a timeout
 * that can be re-armed (a stream re-arms it on every event). */
export class Call {
  readonly controller = new AbortController();
  private timedOut = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort: () => void;

  constructor(private readonly outer: AbortSignal | undefined, private readonly timeoutMs: number) {
    this.onAbort = () => this.controller.abort(outer?.reason);
    if (outer?.aborted) this.controller.abort(outer.reason);
    else outer?.addEventListener("abort", this.onAbort, { once: true });
    this.touch();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  /** (Re)start the timeout. */
  touch(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.timeoutMs > 0 && Number.isFinite(this.timeoutMs) && !this.aborted) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort(new RequestTimeoutError(`no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    }
  }

  /** Stop the timeout (while a server is being started: that has its own limit). */
  pause(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Stop the request (closes its connection). */
  abort(reason?: unknown): void {
    this.controller.abort(reason);
  }

  /** The error for a call that was aborted: a timeout, or the caller's wish. */
  abortError(cause?: unknown): AbortError | RequestTimeoutError {
    if (this.timedOut) return new RequestTimeoutError(`the server sent nothing within ${this.timeoutMs} ms`);
    const reason = this.outer?.aborted ? this.outer.reason : this.controller.signal.reason;
    return new AbortError("the request was aborted", { cause: reason ?? cause });
  }

  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.outer?.removeEventListener("abort", this.onAbort);
  }
}

export interface SendOptions {
  method: "GET" | "POST" | "DELETE";
  path: string;
  body?: unknown;
  query?: Record<string, string | undefined>;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  /** Error statuses whose body is the answer all the same (e.g. 503 for /health). */
  okStatuses?: number[];
}

export interface TransportOptions {
  baseURL: string;
  apiKey: string | undefined;
  timeoutMs: number;
  retries: number;
  fetch: FetchLike;
  /** Called when nothing answers at the base URL; true if it started a server (autoStart),
   * and the request is then sent again. */
  onUnreachable?: () => Promise<boolean>;
}

/** Codes of network errors that mean the request never reached a server. */
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);

function errorCodes(err: unknown, seen = new Set<unknown>()): string[] {
  if (typeof err !== "object" || err === null || seen.has(err)) return [];
  seen.add(err);
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  const out = typeof e.code === "string" ? [e.code] : [];
  out.push(...errorCodes(e.cause, seen));
  if (Array.isArray(e.errors)) for (const inner of e.errors) out.push(...errorCodes(inner, seen));
  return out;
}

/** Whether a fetch failure means nothing reached the server (so any request may be sent again). */
export function isNotSent(err: unknown): boolean {
  return errorCodes(err).some((code) => NOT_SENT.has(code));
}

function describeNetworkError(err: unknown): string {
  const codes = errorCodes(err);
  const message = err instanceof Error ? err.message : String(err);
  return codes.length ? `${message} (${[...new Set(codes)].join(", ")})` : message;
}

/** Wait `ms`, or reject with the call's abort error when it is aborted meanwhile. */
function sleep(ms: number, call: Call): Promise<void> {
  return new Promise((resolve, reject) => {
    if (call.aborted) {
      reject(call.abortError());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(call.abortError());
    };
    const timer = setTimeout(() => {
      call.signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    call.signal.addEventListener("abort", onAbort, { once: true });
  });
}

export class Transport {
  constructor(readonly options: TransportOptions) {}

  get baseURL(): string {
    return this.options.baseURL;
  }

  url(path: string, query?: Record<string, string | undefined>): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined) params.set(key, value);
    const qs = params.toString();
    return `${this.options.baseURL}${path}${qs ? `?${qs}` : ""}`;
  }

  headers(hasBody: boolean, stream: boolean): Record<string, string> {
    const headers: Record<string, string> = { accept: stream ? "text/event-stream" : "application/json" };
    if (hasBody) headers["content-type"] = "application/json";
    if (this.options.apiKey) headers["authorization"] = `Bearer ${this.options.apiKey}`;
    return headers;
  }

  /** A call answered with JSON. */
  async json<T>(options: SendOptions): Promise<T> {
    const call = new Call(options.signal, options.timeoutMs ?? this.options.timeoutMs);
    try {
      const response = await this.send(options, call, false);
      let text: string;
      try {
        text = await response.text();
      } catch (err) {
        throw this.readError(err, call);
      }
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new ServerUnavailableError(`${this.options.baseURL}${options.path} answered with something that is not JSON: ${text.slice(0, 200)}`);
      }
    } finally {
      call.dispose();
    }
  }

  /** A streamed call: the open Response and its Call; the caller reads the body and disposes
   * the call. */
  async stream(options: SendOptions): Promise<{ response: Response; call: Call }> {
    const call = new Call(options.signal, options.timeoutMs ?? this.options.timeoutMs);
    try {
      const response = await this.send(options, call, true);
      if (response.body === null) throw new ServerUnavailableError("the server sent a stream without a body");
      return { response, call };
    } catch (err) {
      call.dispose();
      throw err;
    }
  }

  /** The error for a failure while reading an answer's body. */
  readError(err: unknown, call: Call): Error {
    if (call.aborted) return call.abortError(err);
    return new ServerUnavailableError(`the connection to ${this.options.baseURL} broke off: ${describeNetworkError(err)}`, { cause: err });
  }

  private async send(options: SendOptions, call: Call, stream: boolean): Promise<Response> {
    const { method, path, body } = options;
    const url = this.url(path, options.query);
    const init: RequestInit = {
      method,
      headers: this.headers(body !== undefined, stream),
      signal: call.signal,
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    let attempt = 0;
    let triedStart = false;
    for (;;) {
      if (call.aborted) throw call.abortError();
      call.touch();
      let response: Response;
      try {
        response = await this.options.fetch(url, init);
      } catch (err) {
        if (call.aborted) throw call.abortError(err);
        if (!isNotSent(err)) {
          throw new ServerUnavailableError(`the connection to ${this.options.baseURL} failed: ${describeNetworkError(err)}`, { cause: err });
        }
        if (!triedStart && this.options.onUnreachable !== undefined) {
          triedStart = true;
          call.pause();
          const started = await this.options.onUnreachable();
          call.touch();
          if (started) continue;
        }
        if (attempt < this.options.retries) {
          attempt++;
          await sleep(250 * 2 ** attempt, call);
          continue;
        }
        throw new ServerUnavailableError(
          `no botframework server answers at ${this.options.baseURL} (${describeNetworkError(err)}); ` +
            "start one with `botframework serve`, or pass autoStart: true",
          { cause: err },
        );
      }
      if (response.ok || options.okStatuses?.includes(response.status)) return response;
      const error = await this.errorOf(response, call);
      if (this.retryable(method, error) && attempt < this.options.retries) {
        attempt++;
        await sleep(Math.min(MAX_RETRY_WAIT_MS, Math.max(100, error.retryAfterMs ?? 1000)), call);
        continue;
      }
      throw error;
    }
  }

  /** Safe to send again: a GET, or a request the server refused before starting it. */
  private retryable(method: string, error: APIError): boolean {
    if (!(error instanceof BusyError)) return false;
    return method === "GET" || error.code === "server_busy";
  }

  private async errorOf(response: Response, call: Call): Promise<APIError> {
    let text = "";
    try {
      text = await response.text();
    } catch (err) {
      if (call.aborted) throw call.abortError(err);
      // the error body was lost; the status still says what happened
    }
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: the text is the message
    }
    return apiError(response.status, response.headers, body);
  }
}
