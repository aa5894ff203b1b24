/**
 * Failures in words, with what to do about them.
 *
 *   describeProblem(err) -> { kind, message, actions } for every failure the extension meets:
 *       server missing / failing to start / crashed, unreachable, model not found, busy (503,
 *       Retry-After), wrong API key, timeout, ...; a user's own stop (AbortError) is none
 *   ErrorPresenter.show(err, retry) -> a notification with the actions as buttons; the chosen
 *       one runs (start or restart the server, open the settings, set the API key, retry).
 *       It never rejects: a failing action is shown in turn (once; no loops).
 *
 * The chat view shows the same problems inline, with the same actions (ChatController).
 */

import {
  AbortError,
  AuthenticationError,
  BadRequestError,
  BusyError,
  CancelledError,
  ContextLengthError,
  ModelNotFoundError,
  NotFoundError,
  RequestTimeoutError,
  ServerUnavailableError,
  APIError,
} from "@botframework/sdk";

import { ServerCrashedError, ServerMissingError, ServerStartError } from "./errors.js";
import { silentLog, type Log } from "./ports.js";

export type ActionId = "startServer" | "restartServer" | "openSettings" | "setApiKey" | "retry" | "showOutput";

export const ACTION_TITLES: Record<ActionId, string> = {
  startServer: "Start Server",
  restartServer: "Restart Server",
  openSettings: "Open Settings",
  setApiKey: "Set API Key",
  retry: "Retry",
  showOutput: "Show Output",
};

export type ProblemKind =
  | "serverMissing"
  | "executableMissing"
  | "startFailed"
  | "crashed"
  | "unreachable"
  | "modelNotFound"
  | "busy"
  | "auth"
  | "timeout"
  | "contextLength"
  | "badRequest"
  | "cancelled"
  | "other";

export interface Problem {
  kind: ProblemKind;
  /** One or two sentences for the user. */
  message: string;
  /** Buttons, most useful first. */
  actions: ActionId[];
  /** For "openSettings": the settings to show (a search query of the Settings editor). */
  settingsQuery: string;
  /** Busy: when to try again. */
  retryAfterMs?: number;
  /** More for the log (the server's last output). */
  detail?: string;
}

export interface ProblemContext {
  /** The server's URL. */
  url: string;
  /** The configured model ("" for the default). */
  model: string;
}

/** Whether an error is the user's own stop (nothing to show). */
export function isAbort(err: unknown): boolean {
  return err instanceof AbortError || (err instanceof Error && err.name === "AbortError");
}

function tail(text: string, lines = 6): string {
  return text.trim().split(/\r?\n/).slice(-lines).join("\n");
}

function seconds(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  return `${s} second${s === 1 ? "" : "s"}`;
}

/** The problem an error stands for, or undefined for the user's own stop. */
export function describeProblem(err: unknown, ctx: ProblemContext): Problem | undefined {
  if (isAbort(err)) return undefined;
  const model = ctx.model || "the default model";
  if (err instanceof ServerMissingError) {
    if (err.executable !== undefined) {
      return {
        kind: "executableMissing",
        message: `${err.message} Install botframework, or set its path in the settings (botframework.server.executable).`,
        actions: ["openSettings", "retry"],
        settingsQuery: "botframework.server",
      };
    }
    return {
      kind: "serverMissing",
      message: `${err.message} Start one, or point botframework.baseUrl at a running server.`,
      actions: ["startServer", "openSettings", "retry"],
      settingsQuery: "botframework",
    };
  }
  if (err instanceof ServerStartError) {
    const out = tail(err.output);
    if (/model file not found|model .* not found|does not exist/i.test(out)) {
      return {
        kind: "modelNotFound",
        message: `The server cannot find the model '${ctx.model}'. Check botframework.model (a catalog name or a .gguf path).`,
        actions: ["openSettings", "showOutput", "retry"],
        settingsQuery: "botframework.model",
        detail: out,
      };
    }
    return {
      kind: "startFailed",
      message: `${err.message}${out ? ` Its last output: ${out.split("\n").slice(-1)[0]}` : ""}`,
      actions: ["showOutput", "openSettings", "retry"],
      settingsQuery: "botframework.server",
      detail: out,
    };
  }
  if (err instanceof ServerCrashedError) {
    return {
      kind: "crashed",
      message: `${err.message.replace(/\.$/, "")} while answering. Restart it to go on.`,
      actions: ["restartServer", "showOutput"],
      settingsQuery: "botframework.server",
      detail: tail(err.output),
    };
  }
  if (err instanceof ServerUnavailableError) {
    return {
      kind: "unreachable",
      message: `Lost the connection to the botframework server at ${ctx.url}.`,
      actions: ["startServer", "retry", "openSettings"],
      settingsQuery: "botframework.baseUrl",
      detail: err.message,
    };
  }
  if (err instanceof RequestTimeoutError) {
    return {
      kind: "timeout",
      message: `The server at ${ctx.url} did not answer in time. It may be busy or stuck; retry, or allow longer (botframework.requestTimeoutSeconds).`,
      actions: ["retry", "openSettings", "restartServer"],
      settingsQuery: "botframework.requestTimeoutSeconds",
    };
  }
  if (err instanceof AuthenticationError) {
    return {
      kind: "auth",
      message: `The server at ${ctx.url} refused the API key. Set the key it was started with.`,
      actions: ["setApiKey", "openSettings"],
      settingsQuery: "botframework",
    };
  }
  if (err instanceof ModelNotFoundError) {
    return {
      kind: "modelNotFound",
      message: `The server does not know the model '${ctx.model}': ${err.message.replace(/^HTTP \d+ \([a-z_]+\): /, "")}`,
      actions: ["openSettings", "retry"],
      settingsQuery: "botframework.model",
    };
  }
  if (err instanceof BusyError) {
    return {
      kind: "busy",
      message: `The server is busy (all its slots and its queue are full). Try again in ${seconds(err.retryAfterMs)}.`,
      actions: ["retry"],
      settingsQuery: "botframework",
      retryAfterMs: err.retryAfterMs,
    };
  }
  if (err instanceof ContextLengthError) {
    return {
      kind: "contextLength",
      message: `The conversation no longer fits ${model}'s context. Start a new chat, or select less code.`,
      actions: [],
      settingsQuery: "botframework",
    };
  }
  if (err instanceof CancelledError) {
    return {
      kind: "cancelled",
      message: "The server stopped the request.",
      actions: ["retry"],
      settingsQuery: "botframework",
    };
  }
  if (err instanceof NotFoundError) {
    return {
      kind: "unreachable",
      message: `Something answers at ${ctx.url}, but it is not a botframework server (${err.message}).`,
      actions: ["openSettings", "retry"],
      settingsQuery: "botframework.baseUrl",
    };
  }
  if (err instanceof BadRequestError || err instanceof APIError) {
    return {
      kind: "badRequest",
      message: `The server refused the request: ${err.message}`,
      actions: ["retry"],
      settingsQuery: "botframework",
    };
  }
  return {
    kind: "other",
    message: `Botframework: ${err instanceof Error ? err.message : String(err)}`,
    actions: ["retry", "showOutput"],
    settingsQuery: "botframework",
  };
}

/** What the actions do (extension.ts: commands; tests: spies). */
export interface ActionHandlers {
  startServer(): PromiseLike<unknown>;
  restartServer(): PromiseLike<unknown>;
  openSettings(query: string): PromiseLike<unknown>;
  /** Resolves false when the user cancelled. */
  setApiKey(): PromiseLike<unknown>;
  showOutput(): PromiseLike<unknown> | void;
}

/** window.showErrorMessage, or a stub. */
export interface NotificationUi {
  showError(message: string, ...items: string[]): PromiseLike<string | undefined>;
}

export class ErrorPresenter {
  constructor(
    private readonly ui: NotificationUi,
    private readonly handlers: ActionHandlers,
    private readonly context: () => ProblemContext,
    private readonly log: Log = silentLog,
  ) {}

  describe(err: unknown): Problem | undefined {
    return describeProblem(err, this.context());
  }

  /**
   * Show `err` as a notification with its actions and run the one chosen; `retry` is what
   * "Retry" does (no Retry button without it). Never rejects.
   */
  show(err: unknown, retry?: () => Promise<unknown>): Promise<void> {
    return this.present(err, retry, true);
  }

  /** `followUp`: a failing action is shown in its turn, whose own failure is only logged (no loops). */
  private async present(err: unknown, retry: (() => Promise<unknown>) | undefined, followUp: boolean): Promise<void> {
    const problem = this.describe(err);
    if (problem === undefined) return;
    this.log.error(`${problem.message}${problem.detail ? `\n${problem.detail}` : ""}`);
    const actions = problem.actions.filter((a) => a !== "retry" || retry !== undefined);
    let chosen: string | undefined;
    try {
      chosen = await this.ui.showError(problem.message, ...actions.map((a) => ACTION_TITLES[a]));
    } catch {
      return;
    }
    const action = actions.find((a) => ACTION_TITLES[a] === chosen);
    if (action !== undefined) await this.run(action, problem, retry, followUp);
  }

  /**
   * Run an action; true when it succeeded (a handler that resolves false was cancelled). A failure is shown as a notification when
   * `showFailure` (its own actions' failures then only logged), else logged. Never rejects.
   */
  async run(action: ActionId, problem: Problem | undefined, retry?: () => Promise<unknown>, showFailure = true): Promise<boolean> {
    try {
      let result: unknown;
      switch (action) {
        case "startServer":
          result = await this.handlers.startServer();
          break;
        case "restartServer":
          result = await this.handlers.restartServer();
          break;
        case "openSettings":
          result = await this.handlers.openSettings(problem?.settingsQuery ?? "botframework");
          break;
        case "setApiKey":
          result = await this.handlers.setApiKey();
          break;
        case "showOutput":
          result = await this.handlers.showOutput();
          break;
        case "retry":
          result = await retry?.();
          break;
      }
      return result !== false; // a handler's false: the user cancelled it
    } catch (err) {
      if (showFailure) await this.present(err, retry, false);
      else this.log.error(`${ACTION_TITLES[action]} failed: ${(err as Error)?.message ?? String(err)}`);
      return false;
    }
  }
}
