/**
 * Client: a botframework server's API as calls.
 *
 *   Client.connect({ model }) = new Client(...) + ready():
 *     GET /health (autoStart: nothing answers at a loopback URL -> spawn `botframework serve`,
 *     wait for /health) -> POST /v1/models/{model}/load (a .gguf path made absolute first)
 *     -> the returned id is the model from then on. new Client() does the same on first use.
 *   chat / streamChat / chatStructured -> POST /v1/chat/completions
 *   complete / streamComplete          -> POST /v1/completions (suffix: fill-in-the-middle)
 *   embed -> /v1/embeddings; session() -> /v1/sessions; cancel(id) -> /v1/cancel/{id};
 *   models() -> /v1/models; health() -> /health; stats() -> /v1/stats
 *   close() stops a server that autoStart started (SIGTERM, then SIGKILL).
 *
 * Every call takes an AbortSignal (options.signal). Errors are the classes of errors.ts.
 */

import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";

import {
  AbortError,
  BusyError,
  NotFoundError,
  OutputValidationError,
  ServerUnavailableError,
  isObject,
} from "./errors.js";
import { DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, Transport, isLoopback, serverURL, type SendOptions } from "./http.js";
import { ServerProcess, serverCommand } from "./server.js";
import { Session, type SessionHost, type SessionOptions } from "./session.js";
import { ChatStream, CompletionStream, parseArguments, usageOf } from "./stream.js";
import type {
  ChatInput,
  ChatMessage,
  ChatOptions,
  ChatResult,
  ClientOptions,
  CompletionOptions,
  CompletionResult,
  EmbedOptions,
  FetchLike,
  HealthStatus,
  JSONSchema,
  ModelInfo,
  RequestOptions,
  SamplingOptions,
  ServerStats,
  SessionInfo,
  StructuredOptions,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from "./types.js";

const DEFAULT_START_TIMEOUT_MS = 300_000;

/** A model as the load endpoint takes it: a name as it is; a local .gguf path made absolute
 * (the server checks that it lies inside its configured folders). */
export function modelSpec(model: string | undefined): string | undefined {
  if (model === undefined || model === "") return undefined;
  if (!model.endsWith(".gguf") || model.startsWith("hf:")) return model;
  const expanded = model === "~" || model.startsWith("~/") ? homedir() + model.slice(1) : model;
  return isAbsolute(expanded) ? expanded : resolve(expanded);
}

/** The load endpoint's path for a model (slashes of a path kept, as the server's route expects). */
export function loadPath(spec: string): string {
  const encoded = encodeURIComponent(spec).replace(/%2F/gi, "/").replace(/%3A/gi, ":").replace(/%40/gi, "@");
  return `/v1/models/${encoded}/load`;
}

/** Only the per-call fields of an options object. */
function perCall(options: RequestOptions): RequestOptions {
  return { signal: options.signal, timeoutMs: options.timeoutMs };
}

/** `promise`, or an AbortError as soon as `signal` aborts (the promise itself goes on). */
function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(new AbortError("the request was aborted", { cause: signal.reason }));
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = () => reject(new AbortError("the request was aborted", { cause: signal.reason }));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

function toolDefinition(tool: ToolDefinition): Record<string, unknown> {
  return "function" in tool && typeof tool.function === "object" ? { ...tool } : { type: "function", function: { ...tool } };
}

function toolChoice(choice: ToolChoice): unknown {
  if (typeof choice === "string") return choice;
  if ("function" in choice) return choice;
  return { type: "function", function: { name: choice.name } };
}

/** The sampling options in the server's names. */
function samplingFields(options: SamplingOptions): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    max_tokens: options.maxTokens,
    temperature: options.temperature,
    top_p: options.topP,
    top_k: options.topK,
    min_p: options.minP,
    repeat_penalty: options.repeatPenalty,
    presence_penalty: options.presencePenalty,
    frequency_penalty: options.frequencyPenalty,
    seed: options.seed,
    stop: options.stop,
    logit_bias: options.logitBias,
    ignore_eos: options.ignoreEos,
    speculative: options.speculative,
    priority: options.priority,
    context_shift: options.contextShift,
    n_keep: options.nKeep,
    session_id: options.sessionId,
  };
  for (const key of Object.keys(fields)) if (fields[key] === undefined) delete fields[key];
  return fields;
}

function messagesOf(input: ChatInput, system: string | undefined): ChatMessage[] {
  const messages: ChatMessage[] = typeof input === "string" ? [{ role: "user", content: input }] : [...input];
  if (messages.length === 0) throw new TypeError("chat needs at least one message");
  if (system !== undefined) messages.unshift({ role: "system", content: system });
  return messages;
}

function chatResult(data: unknown): ChatResult {
  const d = isObject(data) ? data : {};
  const choices = Array.isArray(d["choices"]) ? d["choices"] : [];
  const choice = isObject(choices[0]) ? choices[0] : {};
  const msg = isObject(choice["message"]) ? choice["message"] : {};
  const rawCalls = Array.isArray(msg["tool_calls"]) ? msg["tool_calls"].filter(isObject) : [];
  const toolCalls: ToolCall[] = rawCalls.map((call) => {
    const fn = isObject(call["function"]) ? call["function"] : {};
    const args = typeof fn["arguments"] === "string" ? fn["arguments"] : "";
    return {
      id: typeof call["id"] === "string" ? call["id"] : "",
      type: "function",
      name: typeof fn["name"] === "string" ? fn["name"] : "",
      arguments: args,
      parsedArguments: parseArguments(args),
    };
  });
  const text = typeof msg["content"] === "string" ? msg["content"] : "";
  const message: ChatMessage = { role: "assistant", content: toolCalls.length && !text ? null : text };
  if (toolCalls.length) {
    message.tool_calls = toolCalls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }));
  }
  const result: ChatResult = {
    text,
    finishReason: typeof choice["finish_reason"] === "string" ? choice["finish_reason"] : "stop",
    usage: usageOf(d["usage"]),
    toolCalls,
    id: typeof d["id"] === "string" ? d["id"] : "",
    model: typeof d["model"] === "string" ? d["model"] : "",
    message,
  };
  if (typeof msg["reasoning_content"] === "string" && msg["reasoning_content"]) result.reasoning = msg["reasoning_content"];
  return result;
}

function completionResult(data: unknown): CompletionResult {
  const d = isObject(data) ? data : {};
  const choices = Array.isArray(d["choices"]) ? d["choices"] : [];
  const choice = isObject(choices[0]) ? choices[0] : {};
  return {
    text: typeof choice["text"] === "string" ? choice["text"] : "",
    finishReason: typeof choice["finish_reason"] === "string" ? choice["finish_reason"] : "stop",
    usage: usageOf(d["usage"]),
    id: typeof d["id"] === "string" ? d["id"] : "",
    model: typeof d["model"] === "string" ? d["model"] : "",
  };
}

/** The JSON of a structured answer, parsed; an answer cut off or not JSON is an OutputValidationError. */
export function parseStructured<T>(result: ChatResult): T {
  if (result.finishReason !== "stop") {
    throw new OutputValidationError(
      `the answer was cut off (${result.finishReason}) before its JSON was complete: raise maxTokens`,
      result.text,
      result.finishReason,
    );
  }
  try {
    return JSON.parse(result.text) as T;
  } catch (err) {
    throw new OutputValidationError(`the answer is not JSON: ${(err as Error).message}`, result.text, result.finishReason);
  }
}

export class Client {
  /** The server's root URL. */
  readonly baseURL: string;
  private readonly options: ClientOptions;
  private readonly fetchImpl: FetchLike;
  private readonly transport: Transport;
  private readonly spec: string | undefined;
  private modelId: string | undefined;
  private modelPromise: Promise<string> | undefined;
  private server: ServerProcess | undefined;
  private starting: Promise<boolean> | undefined;

  /** A client; nothing is sent until the first call (see Client.connect). */
  constructor(options: ClientOptions = {}) {
    this.options = { ...options };
    this.baseURL = serverURL(options.baseURL);
    this.spec = modelSpec(options.model);
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    const transport: ConstructorParameters<typeof Transport>[0] = {
      baseURL: this.baseURL,
      apiKey: options.apiKey ?? process.env["BOTFRAMEWORK_API_KEY"] ?? undefined,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      retries: Math.max(0, options.retries ?? DEFAULT_RETRIES),
      fetch: this.fetchImpl,
    };
    if (options.autoStart) transport.onUnreachable = () => this.startServer();
    this.transport = new Transport(transport);
  }

  /** A client whose server answers and serves the model (started first with autoStart). */
  static async connect(options: ClientOptions = {}, requestOptions?: RequestOptions): Promise<Client> {
    const client = new Client(options);
    try {
      await client.ready(requestOptions);
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    return client;
  }

  /** Check the server (GET /health, waiting while it loads) and ask it to serve the model;
   * returns the model's id. */
  async ready(options: RequestOptions = {}): Promise<string> {
    const deadline = Date.now() + (this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    for (;;) {
      const health = await this.health(options);
      if (health.status !== "loading" || Date.now() > deadline) break;
      await raceSignal(new Promise((r) => setTimeout(r, 250)), options.signal);
    }
    return raceSignal(this.ensureModel(), options.signal);
  }

  /** The model's id on the server once known (after connect() or a first call), else the
   * model as given. */
  get model(): string | undefined {
    return this.modelId ?? this.spec;
  }

  /** The server that autoStart started, if any. */
  get serverProcess(): ServerProcess | undefined {
    return this.server;
  }

  private ensureModel(): Promise<string> {
    if (this.modelId !== undefined) return Promise.resolve(this.modelId);
    if (this.modelPromise === undefined) {
      const loading = (async () => {
        if (this.spec === undefined) {
          const models = await this.models();
          const first = models[0];
          if (first === undefined) throw new ServerUnavailableError("the server has no model");
          return first.id;
        }
        return (await this.loadModel(this.spec)).id;
      })();
      this.modelPromise = loading;
      loading.then(
        (id) => {
          this.modelId = id;
        },
        () => {
          this.modelPromise = undefined; // a later call tries again
        },
      );
    }
    return this.modelPromise;
  }

  /** autoStart: start a server when nothing answers (once at a time; again if the one this
   * client started has exited since). */
  private startServer(): Promise<boolean> {
    if (!isLoopback(this.baseURL)) return Promise.resolve(false);
    if (this.server !== undefined && !this.server.running) {
      this.server = undefined;
      this.starting = undefined;
    }
    if (this.starting === undefined) {
      const starting = this.spawnServer();
      this.starting = starting;
      starting.catch(() => {
        this.starting = undefined;
      });
    }
    return this.starting;
  }

  private async spawnServer(): Promise<boolean> {
    const url = new URL(this.baseURL);
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    const args = ["serve", "--port", port];
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (host !== "localhost" && host !== "127.0.0.1") args.push("--host", host);
    if (this.spec !== undefined) {
      args.push("--model", this.spec);
      if (this.spec.endsWith(".gguf") && isAbsolute(this.spec)) args.push("--models-dir", dirname(this.spec));
    }
    args.push(...(this.options.serverArgs ?? []));
    const server = ServerProcess.start({
      command: serverCommand(this.options.serverCommand),
      args,
      env: this.options.serverEnv,
      onOutput: this.options.onServerOutput,
    });
    this.server = server;
    try {
      await server.waitReady(this.baseURL, this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, this.fetchImpl);
    } catch (err) {
      await server.stop().catch(() => undefined);
      this.server = undefined;
      throw err;
    }
    return true;
  }

  /** Stop the server that autoStart started (SIGTERM, then SIGKILL after `graceMs`). */
  async close(graceMs = 10_000): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.starting = undefined;
    if (server !== undefined) await server.stop(graceMs);
  }

  private request<T>(options: SendOptions): Promise<T> {
    return this.transport.json<T>(options);
  }

  // -- server and models ------------------------------------------------------------------

  /** GET /health: "ok", or "loading" / "degraded" (answered with 503, returned all the same). */
  health(options: RequestOptions = {}): Promise<HealthStatus> {
    return this.request<HealthStatus>({ method: "GET", path: "/health", okStatuses: [503], ...perCall(options) });
  }

  /** GET /v1/models: the declared models and their state. */
  async models(options: RequestOptions = {}): Promise<ModelInfo[]> {
    const data = await this.request<{ data?: ModelInfo[] }>({ method: "GET", path: "/v1/models", ...perCall(options) });
    return Array.isArray(data.data) ? data.data : [];
  }

  /** POST /v1/models/{model}/load: have the server serve a model (a name, or a .gguf path
   * inside its configured folders); returns its card. Does not change this client's model. */
  loadModel(model: string, options: RequestOptions = {}): Promise<ModelInfo> {
    const spec = modelSpec(model) ?? model;
    return this.request<ModelInfo>({ method: "POST", path: loadPath(spec), ...perCall(options) });
  }

  /** GET /v1/stats: the scheduler's counters (busy slots, waiting requests, ...). */
  stats(options: RequestOptions = {}): Promise<ServerStats> {
    return this.request<ServerStats>({ method: "GET", path: "/v1/stats", ...perCall(options) });
  }

  /** POST /v1/cancel/{id}: stop a running or queued request (its response id) or a session's
   * requests; returns how many were stopped. */
  async cancel(id: string, options: RequestOptions = {}): Promise<number> {
    const data = await this.request<{ num_cancelled?: number }>({
      method: "POST",
      path: `/v1/cancel/${encodeURIComponent(id)}`,
      ...perCall(options),
    });
    return typeof data.num_cancelled === "number" ? data.num_cancelled : 0;
  }

  // -- chat -------------------------------------------------------------------------------

  private chatBody(model: string, input: ChatInput, options: ChatOptions, stream: boolean): Record<string, unknown> {
    const body: Record<string, unknown> = {
      model,
      messages: messagesOf(input, options.system),
      ...samplingFields(options),
    };
    if (options.tools?.length) body["tools"] = options.tools.map(toolDefinition);
    if (options.toolChoice !== undefined) body["tool_choice"] = toolChoice(options.toolChoice);
    if (options.parallelToolCalls !== undefined) body["parallel_tool_calls"] = options.parallelToolCalls;
    if (options.responseFormat !== undefined) body["response_format"] = options.responseFormat;
    if (options.grammar !== undefined) body["grammar"] = options.grammar;
    if (options.overflow !== undefined) body["overflow"] = options.overflow;
    if (stream) {
      body["stream"] = true;
      body["stream_options"] = { include_usage: true };
    }
    return { ...body, ...options.extraBody };
  }

  private async modelFor(options: SamplingOptions | EmbedOptions): Promise<string> {
    return options.model ?? raceSignal(this.ensureModel(), options.signal);
  }

  /** A whole chat answer. `input`: a user prompt, or the conversation's messages. */
  async chat(input: ChatInput, options: ChatOptions = {}): Promise<ChatResult> {
    const model = await this.modelFor(options);
    const data = await this.request<unknown>({
      method: "POST",
      path: "/v1/chat/completions",
      body: this.chatBody(model, input, options, false),
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    });
    return chatResult(data);
  }

  /** A chat answer as it is generated: iterate it with for await. The request starts at once;
   * breaking out of the loop, stream.close() or options.signal close the connection, and the
   * server stops generating. */
  streamChat(input: ChatInput, options: ChatOptions = {}): ChatStream {
    return this.openChatStream(input, options);
  }

  private openChatStream(input: ChatInput, options: ChatOptions, onDone?: (result: ChatResult) => void): ChatStream {
    const stream: ChatStream = new ChatStream(
      async (signal) => {
        const model = await this.modelFor({ ...options, signal });
        const { response, call } = await this.transport.stream({
          method: "POST",
          path: "/v1/chat/completions",
          body: this.chatBody(model, input, options, true),
          signal,
          timeoutMs: options.timeoutMs,
        });
        return { response, call, readError: (err: unknown) => this.transport.readError(err, call) };
      },
      options.signal,
      onDone ? () => onDone(stream.snapshot()) : undefined,
    );
    return stream;
  }

  /** Structured output: the answer is JSON valid for `schema` (the server enforces it with a
   * grammar), parsed and returned as T. */
  async chatStructured<T = unknown>(input: ChatInput, schema: JSONSchema, options: StructuredOptions = {}): Promise<T> {
    return (await this.chatStructuredResult<T>(input, schema, options)).value;
  }

  /** chatStructured, with the whole ChatResult (id, usage, text) beside the parsed value. */
  async chatStructuredResult<T = unknown>(
    input: ChatInput,
    schema: JSONSchema,
    options: StructuredOptions = {},
  ): Promise<{ value: T; result: ChatResult }> {
    const { name, ...rest } = options;
    const result = await this.chat(input, {
      ...rest,
      responseFormat: { type: "json_schema", json_schema: { name: name ?? "output", schema, strict: true } },
    });
    return { value: parseStructured<T>(result), result };
  }

  // -- completions ------------------------------------------------------------------------

  private completionBody(model: string, prompt: string, options: CompletionOptions, stream: boolean): Record<string, unknown> {
    const body: Record<string, unknown> = { model, prompt, ...samplingFields(options) };
    if (options.suffix !== undefined) body["suffix"] = options.suffix;
    if (stream) {
      body["stream"] = true;
      body["stream_options"] = { include_usage: true };
    }
    return { ...body, ...options.extraBody };
  }

  /** A raw prompt continued (/v1/completions); with `suffix`, the text between the prompt and
   * the suffix (fill-in-the-middle, for code completion). */
  async complete(prompt: string, options: CompletionOptions = {}): Promise<CompletionResult> {
    const model = await this.modelFor(options);
    const data = await this.request<unknown>({
      method: "POST",
      path: "/v1/completions",
      body: this.completionBody(model, prompt, options, false),
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    });
    return completionResult(data);
  }

  /** complete(), streamed. */
  streamComplete(prompt: string, options: CompletionOptions = {}): CompletionStream {
    return new CompletionStream(async (signal) => {
      const model = await this.modelFor({ ...options, signal });
      const { response, call } = await this.transport.stream({
        method: "POST",
        path: "/v1/completions",
        body: this.completionBody(model, prompt, options, true),
        signal,
        timeoutMs: options.timeoutMs,
      });
      return { response, call, readError: (err: unknown) => this.transport.readError(err, call) };
    }, options.signal);
  }

  // -- embeddings -------------------------------------------------------------------------

  /** One embedding vector per text (/v1/embeddings). */
  async embed(texts: string | string[], options: EmbedOptions = {}): Promise<number[][]> {
    const input = typeof texts === "string" ? [texts] : [...texts];
    if (input.length === 0) return [];
    const model = await this.modelFor(options);
    const body: Record<string, unknown> = { model, input };
    if (options.dimensions !== undefined) body["dimensions"] = options.dimensions;
    const data = await this.request<{ data?: { index: number; embedding: number[] }[] }>({
      method: "POST",
      path: "/v1/embeddings",
      body,
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    });
    return [...(data.data ?? [])].sort((a, b) => a.index - b.index).map((item) => item.embedding);
  }

  // -- sessions ---------------------------------------------------------------------------

  /** A conversation whose turns reuse the server's KV cache: POST /v1/sessions makes its id
   * (or options.id is used). `options`: the system message and chat options for every turn. */
  async session(options: SessionOptions = {}): Promise<Session> {
    let id = options.id;
    if (id === undefined) {
      const model = await this.modelFor(options);
      const data = await this.request<{ id: string }>({
        method: "POST",
        path: "/v1/sessions",
        query: { model },
        signal: options.signal,
        timeoutMs: options.timeoutMs,
      });
      id = data.id;
    }
    const { signal: _signal, timeoutMs: _timeout, ...turnOptions } = options;
    return new Session(this.sessionHost(), id, turnOptions);
  }

  private sessionHost(): SessionHost {
    return {
      chat: (input, options) => this.chat(input, options),
      streamChat: (input, options, onDone) => this.openChatStream(input, options ?? {}, onDone),
      chatStructuredResult: (input, schema, options) => this.chatStructuredResult(input, schema, options),
      sessionInfo: (id, options) => this.sessionInfo(id, options),
      deleteSession: (id, options) => this.deleteSession(id, options),
    };
  }

  /** GET /v1/sessions/{id}: where a session's state is, and how many tokens it has cached. */
  sessionInfo(id: string, options: RequestOptions = {}): Promise<SessionInfo> {
    return this.request<SessionInfo>({ method: "GET", path: `/v1/sessions/${encodeURIComponent(id)}`, ...perCall(options) });
  }

  /** DELETE /v1/sessions/{id}: free a session's state; false if the server had none. */
  async deleteSession(id: string, options: RequestOptions = {}): Promise<boolean> {
    try {
      await this.request<unknown>({ method: "DELETE", path: `/v1/sessions/${encodeURIComponent(id)}`, ...perCall(options) });
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }
}
