/**
 * The shapes the SDK takes and returns. Messages and tool definitions are OpenAI's wire shapes
 * (snake_case), so they can be passed through and stored as they are; options and results are
 * the SDK's own (camelCase).
 */

/** A fetch-compatible function (the global fetch, or a wrapper / fake of it). */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** A model name the server knows (declared, or a catalog model in its cache), or a path to a
   * .gguf file inside the server's configured folders (resolved to an absolute path first).
   * Default: the server's default model. */
  model?: string;
  /** The server: default $BOTFRAMEWORK_URL, else http://127.0.0.1:8000. A trailing /v1
   * (OpenAI clients' base URL) is accepted. */
  baseURL?: string;
  /** Sent as `Authorization: Bearer <key>`. Default $BOTFRAMEWORK_API_KEY. */
  apiKey?: string;
  /** How long a request may wait for its answer, and a stream for its next data (ms).
   * Default 600000. */
  timeoutMs?: number;
  /** Used instead of the global fetch (tests, proxies, instrumentation). */
  fetch?: FetchLike;
  /** How many times a request is sent again when that is safe: a refused connection (nothing
   * reached the server), a 503 on a GET, or a 503 server_busy (the queue was full, nothing
   * started), after its Retry-After. Default 2; 0 disables. */
  retries?: number;
  /** Start `botframework serve` on the base URL's port when nothing answers there (loopback
   * URLs only); close() stops it. Default false. */
  autoStart?: boolean;
  /** The executable autoStart runs: default $BOTFRAMEWORK_BIN, else `botframework` on PATH. */
  serverCommand?: string;
  /** More arguments for `botframework serve` (e.g. ["--parallel", "4"]). */
  serverArgs?: string[];
  /** Environment of the started server; default this process's. */
  serverEnv?: Record<string, string | undefined>;
  /** How long autoStart waits for the started server's /health (ms). Default 300000. */
  startTimeoutMs?: number;
  /** Receives the started server's output (stdout and stderr), e.g. for an output channel. */
  onServerOutput?: (text: string) => void;
}

export type Role = "system" | "developer" | "user" | "assistant" | "tool";

export interface TextPart {
  type: "text";
  text: string;
}

/** A tool call as it appears in an assistant message (OpenAI's shape). */
export interface MessageToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** A chat turn, OpenAI's shape. */
export interface ChatMessage {
  role: Role;
  content?: string | TextPart[] | null;
  name?: string;
  /** Assistant turns that called tools. */
  tool_calls?: MessageToolCall[];
  /** Tool turns: the id of the call this answers. */
  tool_call_id?: string;
  reasoning_content?: string;
}

/** What chat() takes: a user prompt, or the whole conversation. */
export type ChatInput = string | ChatMessage[];

export type JSONSchema = Record<string, unknown>;

/** A tool the model may call: OpenAI's definition, or just its function part. */
export type ToolDefinition =
  | { type: "function"; function: FunctionDefinition }
  | FunctionDefinition;

export interface FunctionDefinition {
  name: string;
  description?: string;
  /** A JSON schema for the arguments. */
  parameters?: JSONSchema;
  strict?: boolean;
}

/** "auto", "none", "required" (some tool must be called), or the one tool to call. */
export type ToolChoice =
  | "auto"
  | "none"
  | "required"
  | { name: string }
  | { type: "function"; function: { name: string } };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name?: string; schema: JSONSchema; strict?: boolean } };

/** Options of every call. */
export interface RequestOptions {
  /** Aborting it stops the request; for a stream it closes the connection, and the server
   * stops generating and frees the slot. */
  signal?: AbortSignal;
  /** Overrides the client's timeoutMs for this call. */
  timeoutMs?: number;
}

/** Sampling options that chat and completions share (sent in the server's snake_case). */
export interface SamplingOptions extends RequestOptions {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** The same seed and prompt give the same answer. */
  seed?: number;
  stop?: string | string[];
  logitBias?: Record<string, number>;
  /** Keep generating past end-of-generation tokens (benchmarks, tests). */
  ignoreEos?: boolean;
  /** n-gram drafts (speculative decoding) for this request, or none; unset: the server's --draft.
   * usage.acceptedPredictionTokens says how it went. */
  speculative?: boolean;
  /** "interactive" (default), "completion" or "batch": who goes first when slots are scarce. */
  priority?: "interactive" | "completion" | "batch";
  /** At the context limit, drop old tokens and keep generating. */
  contextShift?: boolean;
  /** Tokens a context shift never drops. */
  nKeep?: number;
  /** Keep this conversation's KV cache on the server between turns (see Client.session). */
  sessionId?: string;
  /** The model for this call, instead of the client's. */
  model?: string;
  /** More request fields, sent as they are (they override the SDK's). */
  extraBody?: Record<string, unknown>;
}

export interface ChatOptions extends SamplingOptions {
  /** A system message put before the messages. */
  system?: string;
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  parallelToolCalls?: boolean;
  responseFormat?: ResponseFormat;
  /** A GBNF grammar the answer must follow (expert use). */
  grammar?: string;
  /** What to do when the chat does not fit the context: "error" (default) or "truncate". */
  overflow?: "error" | "truncate";
}

export interface StructuredOptions extends ChatOptions {
  /** The schema's name, sent in response_format.json_schema.name. Default "output". */
  name?: string;
}

export interface CompletionOptions extends SamplingOptions {
  /** The text after the cursor: the model fills in between the prompt and it
   * (fill-in-the-middle, for code completion). */
  suffix?: string;
}

export interface EmbedOptions extends RequestOptions {
  /** The first `dimensions` components, re-normalised. */
  dimensions?: number;
  model?: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens the server found in its KV cache (not computed again). */
  cachedTokens: number;
  /** Speculative decoding, for a request that drafted: draft tokens the model kept (no decode step of their own). */
  acceptedPredictionTokens: number;
  /** ...and draft tokens it rejected. */
  rejectedPredictionTokens: number;
}

/** A tool call of an answer. */
export interface ToolCall {
  id: string;
  type: "function";
  name: string;
  /** The arguments as the model wrote them: a JSON text. */
  arguments: string;
  /** The arguments parsed; undefined when they are not valid JSON. */
  parsedArguments: unknown;
}

export type FinishReason = "stop" | "length" | "tool_calls" | (string & {});

export interface ChatResult {
  /** The answer's text ("" when the model only called tools). */
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  toolCalls: ToolCall[];
  /** The response id: what cancel() takes. */
  id: string;
  model: string;
  /** Reasoning text, for models that think before answering. */
  reasoning?: string;
  /** The assistant message to append to a conversation (OpenAI's shape). */
  message: ChatMessage;
}

export interface CompletionResult {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  id: string;
  model: string;
}

/** A piece of a tool call in a stream: the first piece of a call has its id and name, the
 * next ones more of its arguments. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  name?: string;
  arguments: string;
}

/** One piece of a streamed chat answer. */
export interface ChatDelta {
  /** New answer text ("" when this piece carries something else). */
  text: string;
  reasoning?: string;
  toolCalls?: ToolCallDelta[];
  /** Set on the last piece of the answer. */
  finishReason?: FinishReason;
  /** Set on the usage piece at the very end. */
  usage?: Usage;
}

/** One piece of a streamed completion. */
export interface CompletionDelta {
  text: string;
  finishReason?: FinishReason;
  usage?: Usage;
}

/** A model card from GET /v1/models. */
export interface ModelInfo {
  id: string;
  object: "model";
  created?: number;
  owned_by?: string;
  meta?: {
    state?: "loaded" | "loading" | "unloaded" | "failed" | (string & {});
    n_ctx?: number;
    num_slots?: number;
    kind?: string;
    error?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface HealthStatus {
  status: "ok" | "loading" | "degraded" | (string & {});
  model: string | null;
  models?: Record<string, string>;
  error?: string | null;
  [key: string]: unknown;
}

export interface SessionInfo {
  id: string;
  object: "session";
  model: string | null;
  /** "new", "busy", "idle", "evicted", "parked", ... */
  state: string;
  num_cached_tokens: number;
  [key: string]: unknown;
}

/** GET /v1/stats: the scheduler's counters (num_busy_slots, num_waiting, ...). */
export interface ServerStats {
  model?: string;
  num_waiting?: number;
  num_running?: number;
  num_busy_slots?: number;
  [key: string]: unknown;
}
