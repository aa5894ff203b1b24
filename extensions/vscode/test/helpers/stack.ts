/**
 * The extension's modules wired as extension.ts wires them, with VS Code's UI replaced by
 * recorders: for the integration tests (real servers) and the webview test.
 */

import type { ChatOptions, CompletionOptions } from "@botframework/sdk";

import { ChatController, type ChatSnapshot, type ChatView } from "../../src/core/chatController.js";
import { CodeActions, type CodeActionsUi, type EditorSnapshot, type Proposal } from "../../src/core/codeActions.js";
import { CompletionController } from "../../src/core/completionController.js";
import { ErrorPresenter, type ActionHandlers } from "../../src/core/errorPresenter.js";
import { ServerManager } from "../../src/core/serverManager.js";
import type { DeepPartial, Settings } from "../../src/core/settings.js";
import { RecordingView, memoryLog, testSettings } from "./common.js";

export interface StackOptions {
  settings?: DeepPartial<Settings>;
  chatOptions?: ChatOptions;
  completionOptions?: CompletionOptions;
  /** The chat's view; a RecordingView by default. */
  view?: ChatView;
  /** Instead of the real action handlers (start, restart, set key, ...). */
  handlers?: Partial<ActionHandlers>;
  retries?: number;
  /** A stored conversation to start from. */
  restored?: ChatSnapshot;
}

export function stack(options: StackOptions = {}) {
  const settings = testSettings({ requestTimeoutMs: 60_000, ...options.settings });
  const log = memoryLog();
  const server = new ServerManager({ settings: settings.get, log, retries: options.retries ?? 0, stopGraceMs: 5000 });
  const notifications: { message: string; items: string[] }[] = [];
  const handlerCalls: string[] = [];
  const handlers: ActionHandlers = {
    startServer: () => (handlerCalls.push("startServer"), server.start()),
    restartServer: () => (handlerCalls.push("restartServer"), server.restart()),
    openSettings: async (query: string) => void handlerCalls.push(`openSettings:${query}`),
    setApiKey: async () => void handlerCalls.push("setApiKey"),
    showOutput: () => void handlerCalls.push("showOutput"),
    ...options.handlers,
  };
  const presenter = new ErrorPresenter(
    {
      showError: async (message, ...items) => {
        notifications.push({ message, items });
        return undefined;
      },
    },
    handlers,
    () => ({ url: server.url, model: settings.value.model }),
    log,
  );
  const copied: string[] = [];
  const inserted: string[] = [];
  const infos: string[] = [];
  const chatHost = {
    server,
    settings: settings.get,
    describe: (err: unknown) => presenter.describe(err),
    runAction: (action: Parameters<ErrorPresenter["run"]>[0], problem: Parameters<ErrorPresenter["run"]>[1]) => presenter.run(action, problem),
    insertAtCursor: async (text: string) => (inserted.push(text), true),
    copy: async (text: string) => void copied.push(text),
    info: (m: string) => void infos.push(m),
    log,
    chatOptions: options.chatOptions,
  };
  const chat = new ChatController(chatHost, options.restored);
  const view = options.view ?? new RecordingView();
  chat.attach(view);
  const completion = new CompletionController({ server, settings: settings.get, log, requestOptions: options.completionOptions });

  const uiEvents: string[] = [];
  const applied: Proposal[] = [];
  let editor: EditorSnapshot | undefined;
  const ui: CodeActionsUi = {
    activeEditor: () => editor,
    askInstruction: async () => "",
    withProgress: (title, task) => {
      uiEvents.push(`progress:${title}`);
      return task(new AbortController().signal);
    },
    showProposal: async (p) => void uiEvents.push(`diff:${p.title}`),
    closeProposal: async (p) => void uiEvents.push(`close:${p.id}`),
    choose: async () => undefined,
    applyEdit: async (p) => (applied.push(p), true),
    info: (m) => void uiEvents.push(`info:${m}`),
    openChat: async () => void uiEvents.push("openChat"),
  };
  const shownErrors: unknown[] = [];
  const actions = new CodeActions({
    server,
    settings: settings.get,
    ui,
    chat,
    showError: async (err, retry) => {
      shownErrors.push(err);
      await presenter.show(err, retry);
    },
    log,
  });

  return {
    settings,
    log,
    server,
    presenter,
    notifications,
    handlerCalls,
    chat,
    chatHost,
    view: view as RecordingView,
    copied,
    inserted,
    infos,
    completion,
    actions,
    uiEvents,
    applied,
    shownErrors,
    setEditor: (e: EditorSnapshot | undefined) => (editor = e),
    /** Assert that the last turn is an answer that finished; the chat and the log in the message. */
    assertAnswered(what = "the last turn is a finished answer") {
      const last = chat.history.at(-1);
      if (last?.role === "assistant" && last.status === "done") return;
      throw new Error(`${what}: ${JSON.stringify(chat.history, null, 1)}\nlog:\n${log.lines.slice(-30).join("\n")}`);
    },
    /** The last error turn of the chat. */
    lastError: () => [...chat.history].reverse().find((t) => t.role === "error"),
    async dispose() {
      await chat.dispose();
      completion.dispose();
      await server.dispose();
    },
  };
}
