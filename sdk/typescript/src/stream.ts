/**
 * Streamed answers: async iterables of deltas over the server's SSE chunks.
 *
 *   streamChat() --(request starts at once)--> ChatStream
 *     for await (const d of stream)   deltas: text, tool-call pieces, finish reason, usage
 *     stream.id / await stream.readId()   the response id (what cancel() takes), from the first chunk
 *     break / stream.close()          closes the connection: the server stops and frees the slot
 *     options.signal aborted          the same, and the loop throws AbortError
 *     await stream.result()           the rest read, the whole answer as a ChatResult
 *
 * A `data: {"error": ...}` event throws its APIError; a stream that ends without
 * `data: [DONE]` throws ServerUnavailableError. A stream is read once.
 */

import { AbortError, BotframeworkError, ServerUnavailableError, apiError, isObject } from "./errors.js";
import type { Call } from "./http.js";
import { readSSE } from "./sse.js";
import type {
  ChatDelta,
  ChatMessage,
  ChatResult,
  CompletionDelta,
  CompletionResult,
  ToolCall,
  ToolCallDelta,
  Usage,
} from "./types.js";

type Chunk = Record<string, unknown>;

/** What starts the HTTP request, aborted by `signal`: the open response and its call. */
export type Starter = (signal: AbortSignal) => Promise<{ response: Response; call: Call; readError: (err: unknown) => Error }>;

export function usageOf(data: unknown): Usage {
  const u = isObject(data) ? data : {};
  const details = isObject(u["prompt_tokens_details"]) ? u["prompt_tokens_details"] : {};
  const drafts = isObject(u["completion_tokens_details"]) ? u["completion_tokens_details"] : {};
  const num = (v: unknown) => (typeof v === "number" ? v : 0);
  const promptTokens = num(u["prompt_tokens"]);
  const completionTokens = num(u["completion_tokens"]);
  return {
    promptTokens,
    completionTokens,
    totalTokens: typeof u["total_tokens"] === "number" ? u["total_tokens"] : promptTokens + completionTokens,
    cachedTokens: num(details["cached_tokens"]),
    acceptedPredictionTokens: num(drafts["accepted_prediction_tokens"]),
    rejectedPredictionTokens: num(drafts["rejected_prediction_tokens"]),
  };
}

export function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The part every stream shares: starting, reading events, closing. */
abstract class EventStream<D> implements AsyncIterableIterator<D> {
  /** The response id (what Client.cancel takes); known from the first chunk on. */
  id: string | undefined;
  /** The model that answers. */
  model: string | undefined;
  finishReason: string | undefined;
  /** The usage, sent at the very end. */
  usage: Usage | undefined;
  /** Everything read: the server sent [DONE]. */
  done = false;

  private readonly started: ReturnType<Starter>;
  private readonly source: AsyncGenerator<D[], void, undefined>;
  private readonly ready: D[] = [];
  private closed = false;
  /** Aborted by close(), and by the caller's signal. */
  private readonly controller = new AbortController();
  private readonly unlink: () => void;
  private readonly onDone: (() => void) | undefined;

  /** `signal`: the caller's; `onDone`: called once the whole answer has been read. */
  constructor(start: Starter, signal?: AbortSignal, onDone?: () => void) {
    const onAbort = () => this.controller.abort(signal?.reason);
    if (signal?.aborted) this.controller.abort(signal.reason);
    else signal?.addEventListener("abort", onAbort, { once: true });
    this.unlink = () => signal?.removeEventListener("abort", onAbort);
    this.onDone = onDone;
    this.started = start(this.controller.signal);
    // a stream nobody reads must not leave an unhandled rejection behind
    this.started.catch(() => this.unlink());
    this.source = this.read();
  }

  protected abstract pieces(chunk: Chunk): D[];

  private async *read(): AsyncGenerator<D[], void, undefined> {
    const { response, call, readError } = await this.started;
    let sawDone = false;
    const events = readSSE(response.body as ReadableStream<Uint8Array>, () => call.touch());
    try {
      for (;;) {
        let next: IteratorResult<{ data: string }>;
        try {
          next = await events.next();
        } catch (err) {
          throw readError(err);
        }
        if (next.done) break;
        const data = next.value.data;
        if (sawDone) continue; // nothing should follow [DONE]; read to the end all the same
        if (data === "[DONE]") {
          sawDone = true;
          continue;
        }
        let chunk: unknown;
        try {
          chunk = JSON.parse(data);
        } catch {
          throw new BotframeworkError(`the server sent an unreadable stream event: ${data.slice(0, 200)}`);
        }
        if (!isObject(chunk)) continue;
        if ("error" in chunk) throw apiError(0, undefined, chunk);
        if (this.id === undefined && typeof chunk["id"] === "string") this.id = chunk["id"];
        if (this.model === undefined && typeof chunk["model"] === "string") this.model = chunk["model"];
        if (isObject(chunk["usage"])) this.usage = usageOf(chunk["usage"]);
        yield this.pieces(chunk);
      }
      if (!sawDone) throw new ServerUnavailableError("the server closed the stream before its end");
      this.done = true;
      this.onDone?.();
    } finally {
      if (!this.done) call.abort(); // stopped early: close the connection
      await events.return(undefined).catch(() => undefined);
      call.dispose();
      this.unlink();
    }
  }

  /** The next delta. After close() (or a break out of a for-await loop) the stream is over. */
  async next(): Promise<IteratorResult<D, undefined>> {
    for (;;) {
      if (!this.closed && !this.done && this.controller.signal.aborted) {
        // the caller's signal: nothing more is handed out, not even what was already read
        this.ready.length = 0;
        await this.source.return(undefined).catch(() => undefined);
        throw new AbortError("the request was aborted", { cause: this.controller.signal.reason });
      }
      const piece = this.ready.shift();
      if (piece !== undefined) return { value: piece, done: false };
      if (this.closed) return { value: undefined, done: true };
      let result: IteratorResult<D[], void>;
      try {
        result = await this.source.next();
      } catch (err) {
        if (this.closed) return { value: undefined, done: true };
        throw err;
      }
      if (result.done) return { value: undefined, done: true };
      this.ready.push(...result.value);
    }
  }

  /** Called by `break` in a for-await loop: closes the stream. */
  async return(): Promise<IteratorResult<D, undefined>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Wait for the first chunk (its deltas are kept for the loop) and return the response id. */
  async readId(): Promise<string | undefined> {
    while (this.id === undefined && !this.done && !this.closed) {
      const result = await this.source.next();
      if (result.done) break;
      this.ready.push(...result.value);
    }
    return this.id;
  }

  /** Stop reading and close the connection; the server stops generating and frees the slot.
   * Iterating afterwards ends at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.done) this.controller.abort(new AbortError("the stream was closed"));
    this.unlink();
    await this.source.return(undefined).catch(() => undefined);
  }

  /** Read what is left, so that the accumulated fields are complete. */
  protected async drain(): Promise<void> {
    for (;;) {
      const result = await this.next();
      if (result.done) break;
    }
  }
}

/** A streamed chat answer. See the module's comment. */
export class ChatStream extends EventStream<ChatDelta> {
  /** The answer's text so far. */
  text = "";
  /** The reasoning text so far (models that think first). */
  reasoning = "";
  private readonly calls: { id: string; name: string; arguments: string }[] = [];

  /** The tool calls so far, their arguments assembled from the pieces. */
  get toolCalls(): ToolCall[] {
    return this.calls.map((c) => ({
      id: c.id,
      type: "function",
      name: c.name,
      arguments: c.arguments,
      parsedArguments: parseArguments(c.arguments),
    }));
  }

  protected pieces(chunk: Chunk): ChatDelta[] {
    const out: ChatDelta[] = [];
    const choices = Array.isArray(chunk["choices"]) ? chunk["choices"] : [];
    for (const choice of choices) {
      if (!isObject(choice) || (typeof choice["index"] === "number" && choice["index"] !== 0)) continue;
      const delta = isObject(choice["delta"]) ? choice["delta"] : {};
      const piece: ChatDelta = { text: "" };
      let any = false;
      if (typeof delta["content"] === "string" && delta["content"] !== "") {
        piece.text = delta["content"];
        this.text += piece.text;
        any = true;
      }
      if (typeof delta["reasoning_content"] === "string" && delta["reasoning_content"] !== "") {
        piece.reasoning = delta["reasoning_content"];
        this.reasoning += piece.reasoning;
        any = true;
      }
      if (Array.isArray(delta["tool_calls"]) && delta["tool_calls"].length > 0) {
        piece.toolCalls = delta["tool_calls"].filter(isObject).map((call) => this.toolCallPiece(call));
        any = true;
      }
      if (typeof choice["finish_reason"] === "string") {
        piece.finishReason = choice["finish_reason"];
        this.finishReason = piece.finishReason;
        any = true;
      }
      if (any) out.push(piece);
    }
    if (choices.length === 0 && isObject(chunk["usage"]) && this.usage !== undefined) {
      out.push({ text: "", usage: this.usage });
    }
    return out;
  }

  private toolCallPiece(call: Record<string, unknown>): ToolCallDelta {
    const fn = isObject(call["function"]) ? call["function"] : {};
    const index = typeof call["index"] === "number" ? call["index"] : 0;
    const piece: ToolCallDelta = { index, arguments: typeof fn["arguments"] === "string" ? fn["arguments"] : "" };
    if (typeof call["id"] === "string") piece.id = call["id"];
    if (typeof fn["name"] === "string") piece.name = fn["name"];
    const known = (this.calls[index] ??= { id: "", name: "", arguments: "" });
    if (piece.id) known.id = piece.id;
    if (piece.name) known.name = piece.name;
    known.arguments += piece.arguments;
    return piece;
  }

  /** The whole answer: reads what is left of the stream first. */
  async result(): Promise<ChatResult> {
    await this.drain();
    return this.snapshot();
  }

  /** The answer as read so far, as a ChatResult. */
  snapshot(): ChatResult {
    const toolCalls = this.toolCalls;
    const message: ChatMessage = { role: "assistant", content: toolCalls.length && !this.text ? null : this.text };
    if (toolCalls.length) {
      message.tool_calls = toolCalls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    }
    const result: ChatResult = {
      text: this.text,
      finishReason: this.finishReason ?? "stop",
      usage: this.usage ?? usageOf(undefined),
      toolCalls,
      id: this.id ?? "",
      model: this.model ?? "",
      message,
    };
    if (this.reasoning) result.reasoning = this.reasoning;
    return result;
  }
}

/** A streamed completion (/v1/completions). */
export class CompletionStream extends EventStream<CompletionDelta> {
  /** The text so far. */
  text = "";

  protected pieces(chunk: Chunk): CompletionDelta[] {
    const out: CompletionDelta[] = [];
    const choices = Array.isArray(chunk["choices"]) ? chunk["choices"] : [];
    for (const choice of choices) {
      if (!isObject(choice) || (typeof choice["index"] === "number" && choice["index"] !== 0)) continue;
      const piece: CompletionDelta = { text: typeof choice["text"] === "string" ? choice["text"] : "" };
      this.text += piece.text;
      if (typeof choice["finish_reason"] === "string") {
        piece.finishReason = choice["finish_reason"];
        this.finishReason = piece.finishReason;
      }
      if (piece.text || piece.finishReason) out.push(piece);
    }
    if (choices.length === 0 && isObject(chunk["usage"]) && this.usage !== undefined) {
      out.push({ text: "", usage: this.usage });
    }
    return out;
  }

  /** The whole completion: reads what is left of the stream first. */
  async result(): Promise<CompletionResult> {
    await this.drain();
    return {
      text: this.text,
      finishReason: this.finishReason ?? "stop",
      usage: this.usage ?? usageOf(undefined),
      id: this.id ?? "",
      model: this.model ?? "",
    };
  }
}
