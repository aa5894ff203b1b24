/**
 * @botframework/sdk: the TypeScript client for botframework, a local-LLM server with an
 * OpenAI-compatible API.
 *
 *   import { Client } from "@botframework/sdk";
 *   const llm = await Client.connect({ model: "smollm2-135m-instruct" });
 *   const res = await llm.chat("Summarize this module");
 *   console.log(res.text);
 */

export { Client, loadPath, modelSpec, parseStructured } from "./client.js";
export { Session, type SessionOptions } from "./session.js";
export { ChatStream, CompletionStream } from "./stream.js";
export { ServerProcess, serverCommand, type ExitInfo, type StartOptions } from "./server.js";
export { SSEParser, readSSE, type SSEEvent } from "./sse.js";
export { serverURL } from "./http.js";
export {
  APIError,
  AbortError,
  AuthenticationError,
  BadRequestError,
  BotframeworkError,
  BusyError,
  CancelledError,
  ContextLengthError,
  ModelNotFoundError,
  NotFoundError,
  OutputValidationError,
  RequestTimeoutError,
  ServerUnavailableError,
  apiError,
  parseRetryAfter,
  type APIErrorFields,
} from "./errors.js";
export type * from "./types.js";
