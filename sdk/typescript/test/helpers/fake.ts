/**
 * A fake fetch for unit tests: answers from a handler, records every request, and behaves as
 * fetch does on abort (the pending call and a body being read fail with an AbortError).
 */

import type { FetchLike } from "../../src/types.js";

export interface SeenRequest {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: unknown;
  signal: AbortSignal | undefined;
}

export type Handler = (req: SeenRequest, index: number) => Response | Promise<Response>;

export interface FakeFetch {
  fetch: FetchLike;
  requests: SeenRequest[];
}

function abortError(): Error {
  return new DOMException("This operation was aborted", "AbortError");
}

export function fakeFetch(handler: Handler): FakeFetch {
  const requests: SeenRequest[] = [];
  const fetchImpl: FetchLike = async (input, init) => {
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, key) => {
      headers[key] = value;
    });
    const raw = init?.body;
    const req: SeenRequest = {
      url: String(input),
      method: init?.method ?? "GET",
      headers,
      body: typeof raw === "string" ? JSON.parse(raw) : undefined,
      signal: init?.signal ?? undefined,
    };
    requests.push(req);
    if (req.signal?.aborted) throw abortError();
    const answer = Promise.resolve(handler(req, requests.length - 1));
    if (req.signal === undefined) return answer;
    const signal = req.signal;
    return new Promise<Response>((resolve, reject) => {
      const onAbort = () => reject(abortError());
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
  return { fetch: fetchImpl, requests };
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

export interface BodyControl {
  /** Whether the reader cancelled the body (closed the connection). */
  cancelled: boolean;
}

/**
 * A streamed answer whose body gives `chunks` one read at a time; `open`: do not end after them
 * (a server still generating). The body fails with an AbortError when `signal` aborts.
 */
export function streamResponse(
  chunks: (string | Uint8Array)[],
  options: { signal?: AbortSignal | undefined; open?: boolean; status?: number } = {},
): { response: Response; control: BodyControl } {
  const encoder = new TextEncoder();
  const queue = chunks.map((c) => (typeof c === "string" ? encoder.encode(c) : c));
  const control: BodyControl = { cancelled: false };
  let wake: (() => void) | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      options.signal?.addEventListener(
        "abort",
        () => {
          try {
            controller.error(abortError());
          } catch {
            // already closed
          }
          wake?.();
        },
        { once: true },
      );
    },
    async pull(controller) {
      const next = queue.shift();
      if (next !== undefined) {
        controller.enqueue(next);
        return;
      }
      if (!options.open) {
        controller.close();
        return;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    },
    cancel() {
      control.cancelled = true;
      wake?.();
    },
  });
  const response = new Response(body, {
    status: options.status ?? 200,
    headers: { "content-type": "text/event-stream" },
  });
  return { response, control };
}

/** SSE text for chunks: `data: {json}\n\n` each, then `data: [DONE]\n\n` unless done is false. */
export function sse(events: unknown[], done = true): string {
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + (done ? "data: [DONE]\n\n" : "");
}

/** Split bytes into pieces of the given sizes (cycled). */
export function splitBytes(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  let k = 0;
  while (i < bytes.length) {
    const size = Math.max(1, sizes[k++ % sizes.length] ?? 1);
    out.push(bytes.slice(i, i + size));
    i += size;
  }
  return out;
}

export function chatChunk(delta: Record<string, unknown>, finish: string | null = null, id = "chatcmpl-1"): unknown {
  return {
    id,
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
}

export function usageChunk(prompt: number, completion: number, cached = 0, id = "chatcmpl-1"): unknown {
  return {
    id,
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: cached },
    },
  };
}

/** Fails the current test file when a promise rejection is left unhandled. */
export function watchUnhandled(): { rejections: unknown[] } {
  const state = { rejections: [] as unknown[] };
  process.on("unhandledRejection", (reason) => {
    state.rejections.push(reason);
  });
  return state;
}
