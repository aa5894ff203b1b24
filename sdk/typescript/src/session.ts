/**
 * A conversation that keeps its KV cache on the server between turns.
 *
 *   await llm.session({ system }) --POST /v1/sessions--> Session(id)
 *   session.chat("next") --> llm.chat([...history, user], { sessionId: id }): the server finds
 *       the earlier turns in its cache and computes only the new tokens; the answer joins the
 *       history (kept here, on the client, and sent whole each turn: a session whose cache
 *       was evicted still answers, it only computes the prompt again)
 *   session.streamChat(...)  the same, streamed; the turn joins the history once the stream
 *       has been read to its end (an aborted turn leaves the history as it was)
 *   session.close() --DELETE /v1/sessions/{id}--> the server frees the slot and stored state
 */

import { NotFoundError } from "./errors.js";
import type { ChatStream } from "./stream.js";
import type {
  ChatInput,
  ChatMessage,
  ChatOptions,
  ChatResult,
  JSONSchema,
  RequestOptions,
  SessionInfo,
  StructuredOptions,
} from "./types.js";

/** What a Session needs from its client. */
export interface SessionHost {
  chat(input: ChatInput, options?: ChatOptions): Promise<ChatResult>;
  streamChat(input: ChatInput, options?: ChatOptions, onDone?: (result: ChatResult) => void): ChatStream;
  chatStructuredResult<T>(input: ChatInput, schema: JSONSchema, options?: StructuredOptions): Promise<{ value: T; result: ChatResult }>;
  sessionInfo(id: string, options?: RequestOptions): Promise<SessionInfo>;
  deleteSession(id: string, options?: RequestOptions): Promise<boolean>;
}

export interface SessionOptions extends ChatOptions {
  /** Use this id instead of asking the server for a new one (e.g. to continue a session). */
  id?: string;
  /** Earlier turns to start from. */
  messages?: ChatMessage[];
}

export class Session {
  /** The session id, sent as session_id with every turn. */
  readonly id: string;
  /** The conversation so far: system message, user turns, answers. */
  messages: ChatMessage[];
  private readonly defaults: ChatOptions;

  constructor(private readonly host: SessionHost, id: string, options: SessionOptions = {}) {
    const { id: _id, messages, system, ...defaults } = options;
    this.id = id;
    this.messages = [...(messages ?? [])];
    if (system !== undefined && !this.messages.some((m) => m.role === "system")) {
      this.messages.unshift({ role: "system", content: system });
    }
    this.defaults = defaults;
  }

  private turn(input: ChatInput): ChatMessage[] {
    const added: ChatMessage[] = typeof input === "string" ? [{ role: "user", content: input }] : [...input];
    if (added.length === 0) throw new TypeError("a turn needs at least one message");
    return [...this.messages, ...added];
  }

  private options(options: ChatOptions | undefined): ChatOptions {
    if (options?.system !== undefined) throw new TypeError("a session's system message is set when it is created");
    return { ...this.defaults, ...options, sessionId: this.id };
  }

  /** One turn: the history plus `input` sent with the session id; the answer joins the history. */
  async chat(input: ChatInput, options?: ChatOptions): Promise<ChatResult> {
    const messages = this.turn(input);
    const result = await this.host.chat(messages, this.options(options));
    this.messages = [...messages, result.message];
    return result;
  }

  /** One turn, streamed; it joins the history when the stream has been read to its end. */
  streamChat(input: ChatInput, options?: ChatOptions): ChatStream {
    const messages = this.turn(input);
    return this.host.streamChat(messages, this.options(options), (result) => {
      this.messages = [...messages, result.message];
    });
  }

  /** One turn whose answer is JSON for `schema`, parsed (see Client.chatStructured). */
  async chatStructured<T = unknown>(input: ChatInput, schema: JSONSchema, options?: StructuredOptions): Promise<T> {
    const messages = this.turn(input);
    const { value, result } = await this.host.chatStructuredResult<T>(messages, schema, this.options(options));
    this.messages = [...messages, result.message];
    return value;
  }

  /** Where the session's state is on the server (GET /v1/sessions/{id}): state, num_cached_tokens. */
  info(options?: RequestOptions): Promise<SessionInfo> {
    return this.host.sessionInfo(this.id, options);
  }

  /** Free the session's state on the server; false if it had none. The history stays here. */
  async close(options?: RequestOptions): Promise<boolean> {
    try {
      return await this.host.deleteSession(this.id, options);
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }
}
