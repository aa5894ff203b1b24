/**
 * A stand-in botframework server as a fetch function, for unit tests: the routes the extension
 * uses, answers and failures set per test, every request recorded with its AbortSignal (so a
 * test sees that a stopped stream was really closed).
 */

import type { FetchLike } from "@botframework/sdk";

export interface SeenRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string>;
  body: Record<string, unknown> | undefined;
  signal: AbortSignal | undefined;
  /** Set when the client closed a streamed answer (abort, break). */
  closed: boolean;
}

export interface Failure {
  status: number;
  code?: string;
  type?: string;
  message?: string;
  param?: string;
  retryAfter?: string;
}

export interface FakeOptions {
  model?: string;
  /** Nothing answers (connection refused) while true. */
  down?: boolean;
  /** The chat answer, sent in these pieces. */
  chatPieces?: string[];
  /** Keep chat streams open after their pieces (a long answer), until aborted. */
  holdStreams?: boolean;
  /** The completion text. */
  completionText?: string;
  /** Whether /v1/completions accepts `suffix`. */
  fim?: boolean;
  /** What /v1/capabilities says in model.fim (absent: not said). */
  capabilitiesFim?: boolean;
  /** Keep completions unanswered until aborted. */
  holdCompletions?: boolean;
  /** The API key the server wants. */
  apiKey?: string;
}

function refused(): Error {
  const err = new TypeError("fetch failed");
  (err as { cause?: unknown }).cause = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
  return err;
}

function abortError(): Error {
  return new DOMException("This operation was aborted", "AbortError");
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

function failure(f: Failure): Response {
  const headers: Record<string, string> = {};
  if (f.retryAfter !== undefined) headers["retry-after"] = f.retryAfter;
  return json(
    { error: { message: f.message ?? `failure ${f.status}`, type: f.type ?? "invalid_request_error", code: f.code ?? null, param: f.param ?? null } },
    f.status,
    headers,
  );
}

export class FakeServer {
  readonly requests: SeenRequest[] = [];
  /** The next answers of a route ("POST /v1/chat/completions"), used once each before the normal one. */
  readonly failures = new Map<string, Failure[]>();
  options: Required<Omit<FakeOptions, "capabilitiesFim" | "apiKey">> & Pick<FakeOptions, "capabilitiesFim" | "apiKey">;
  private sessionCount = 0;
  private readonly openStreams = new Set<(err: Error) => void>();
  private readonly waiters: (() => void)[] = [];

  constructor(options: FakeOptions = {}) {
    this.options = {
      model: "test-model",
      down: false,
      chatPieces: ["Hello", ", ", "world", "."],
      holdStreams: false,
      completionText: "return a + b",
      fim: true,
      holdCompletions: false,
      ...options,
    };
  }

  /** The server process died: every open stream breaks off, as a dropped connection does. */
  breakStreams(): void {
    for (const breakOff of [...this.openStreams]) breakOff(new TypeError("terminated"));
    this.openStreams.clear();
  }

  /** Fail the next request(s) of a route ("POST /v1/chat/completions") with `f`. */
  fail(route: string, f: Failure, times = 1): void {
    const list = this.failures.get(route) ?? [];
    for (let i = 0; i < times; i++) list.push(f);
    this.failures.set(route, list);
  }

  of(method: string, path: string): SeenRequest[] {
    return this.requests.filter((r) => r.method === method && r.path === path);
  }

  /** Resolves when a request arrives whose path is `path` (after `after` of them). */
  async waitFor(path: string, count = 1): Promise<SeenRequest> {
    for (let i = 0; i < 500; i++) {
      const seen = this.requests.filter((r) => r.path === path);
      if (seen.length >= count) return seen[count - 1]!;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
    throw new Error(`no request to ${path} arrived`);
  }

  private gate: Promise<void> | undefined;

  /** Hold every request until the returned function is called (a server slow to answer). */
  pause(): () => void {
    let release!: () => void;
    this.gate = new Promise<void>((r) => (release = r));
    return () => {
      this.gate = undefined;
      release();
    };
  }

  fetch: FetchLike = async (input, init) => {
    const url = new URL(String(input));
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, key) => {
      headers[key] = value;
    });
    const raw = init?.body;
    const req: SeenRequest = {
      method: init?.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      headers,
      body: typeof raw === "string" ? (JSON.parse(raw) as Record<string, unknown>) : undefined,
      signal: init?.signal ?? undefined,
      closed: false,
    };
    this.requests.push(req);
    for (const wake of this.waiters.splice(0)) wake();
    if (this.gate !== undefined) await this.gate;
    if (this.options.down) throw refused();
    if (req.signal?.aborted) throw abortError();
    const answer = this.answer(req);
    const signal = req.signal;
    if (signal === undefined) return answer;
    return new Promise<Response>((resolve, reject) => {
      const onAbort = () => {
        req.closed = true;
        reject(abortError());
      };
      signal.addEventListener("abort", onAbort, { once: true });
      answer.then(
        (r) => {
          signal.removeEventListener("abort", onAbort);
          resolve(r);
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  };

  private async answer(req: SeenRequest): Promise<Response> {
    const route = `${req.method} ${req.path}`;
    const queued = this.failures.get(route);
    if (queued?.length) return failure(queued.shift()!);
    if (req.path === "/health") return json({ status: "ok", model: this.options.model, models: { [this.options.model]: "loaded" } });
    if (this.options.apiKey !== undefined && req.headers["authorization"] !== `Bearer ${this.options.apiKey}`) {
      return failure({ status: 401, type: "authentication_error", code: "invalid_api_key", message: "Incorrect or missing API key." });
    }
    const model = this.options.model;
    if (req.method === "GET" && req.path === "/v1/models") {
      return json({ object: "list", data: [{ id: model, object: "model", meta: { state: "loaded" } }] });
    }
    const load = /^\/v1\/models\/(.+)\/load$/.exec(req.path);
    if (req.method === "POST" && load) {
      const name = decodeURIComponent(load[1]!);
      if (name !== model) {
        return failure({ status: 404, code: "model_not_found", param: "model", message: `The model '${name}' does not exist` });
      }
      return json({ id: model, object: "model", meta: { state: "loaded" } });
    }
    if (req.method === "GET" && req.path === "/v1/capabilities") {
      const m: Record<string, unknown> = { id: model };
      if (this.options.capabilitiesFim !== undefined) m["fim"] = this.options.capabilitiesFim;
      return json({ object: "capabilities", model: m });
    }
    if (req.method === "GET" && req.path === "/v1/stats") return json({ model, num_busy_slots: 0, num_running: 0, num_waiting: 0 });
    if (req.method === "POST" && req.path === "/v1/sessions") {
      this.sessionCount++;
      return json({ id: `sess-${this.sessionCount}`, object: "session", model, state: "new", num_cached_tokens: 0 });
    }
    if (req.method === "DELETE" && req.path.startsWith("/v1/sessions/")) return json({ id: req.path.split("/").pop(), deleted: true });
    if (req.method === "POST" && req.path === "/v1/chat/completions") return this.chat(req);
    if (req.method === "POST" && req.path === "/v1/completions") return this.completion(req);
    return failure({ status: 404, message: `no route ${route}` });
  }

  private chat(req: SeenRequest): Response {
    const pieces = this.options.chatPieces;
    if (!req.body?.["stream"]) {
      return json({
        id: "chatcmpl-1",
        object: "chat.completion",
        model: this.options.model,
        choices: [{ index: 0, message: { role: "assistant", content: pieces.join("") }, finish_reason: "stop" }],
        usage: { prompt_tokens: 10, completion_tokens: pieces.length, total_tokens: 10 + pieces.length },
      });
    }
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: this.options.model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const events = [chunk({ role: "assistant", content: "" }), ...pieces.map((p) => chunk({ content: p }))];
    if (!this.options.holdStreams) {
      events.push(chunk({}, "stop"));
      const cached = req.body?.["session_id"] && Array.isArray(req.body["messages"]) && req.body["messages"].length > 2 ? 7 : 0;
      events.push(
        `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: this.options.model, choices: [], usage: { prompt_tokens: 10, completion_tokens: pieces.length, total_tokens: 10 + pieces.length, prompt_tokens_details: { cached_tokens: cached } } })}\n\n`,
      );
      events.push("data: [DONE]\n\n");
    }
    return this.stream(req, events, this.options.holdStreams);
  }

  private completion(req: SeenRequest): Promise<Response> | Response {
    if (req.body?.["suffix"] !== undefined && !this.options.fim) {
      return failure({ status: 400, code: "fim_not_supported", param: "suffix", message: `model '${this.options.model}' has no fill-in-the-middle tokens` });
    }
    const answer = () =>
      json({
        id: "cmpl-1",
        object: "text_completion",
        model: this.options.model,
        choices: [{ index: 0, text: this.options.completionText, finish_reason: "stop" }],
        usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
      });
    if (!this.options.holdCompletions) return answer();
    return new Promise<Response>(() => undefined); // answered never: only an abort ends it
  }

  /** An SSE body: the events, then (open) nothing until the client closes it. */
  private stream(req: SeenRequest, events: string[], open: boolean): Response {
    const encoder = new TextEncoder();
    const queue = [...events];
    let wake: (() => void) | undefined;
    const openStreams = this.openStreams;
    let breakOff: ((err: Error) => void) | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        breakOff = (err) => {
          try {
            controller.error(err);
          } catch {
            // closed already
          }
          wake?.();
        };
        openStreams.add(breakOff);
        req.signal?.addEventListener(
          "abort",
          () => {
            req.closed = true;
            try {
              controller.error(abortError());
            } catch {
              // closed already
            }
            wake?.();
          },
          { once: true },
        );
      },
      async pull(controller) {
        const next = queue.shift();
        if (next !== undefined) {
          await new Promise((r) => setTimeout(r, 1));
          controller.enqueue(encoder.encode(next));
          return;
        }
        if (!open) {
          if (breakOff) openStreams.delete(breakOff);
          controller.close();
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      },
      cancel() {
        req.closed = true;
        wake?.();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  }
}
