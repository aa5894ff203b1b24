/**
 * The chat: one conversation at a time, kept here (the webview only shows it), streamed from a
 * server session so that each turn prefills only its new tokens.
 *
 *   ask(text) -> user turn + assistant turn (streaming) -> server.use(client ->
 *       session (made once per conversation and client: a restarted server gets a new one
 *       with the history so far) -> session.streamChat(text, signal)) -> delta* -> end
 *   stop() aborts the signal: the SDK closes the connection, the server frees the slot; the
 *       partial answer stays, in the view and in the history sent next turn
 *   a failure -> an error turn with its actions (Retry, Start / Restart Server, Open Settings,
 *       Set API Key); a recovering action that works retries the question
 *   newConversation() closes the session on the server (DELETE) and starts afresh
 *
 * Every entry point catches its failures: nothing here leaves an unhandled rejection.
 */

import { AbortError, type ChatMessage, type ChatOptions, type Client, type Session, type Usage } from "@botframework/sdk";

import type { FromWebview, ServerView, ToWebview, TurnView } from "./chatProtocol.js";
import { isFromWebview } from "./chatProtocol.js";
import { ACTION_TITLES, isAbort, type ActionId, type Problem } from "./errorPresenter.js";
import { silentLog, type Disposable, type Log } from "./ports.js";
import type { ServerState } from "./serverManager.js";
import type { Settings } from "./settings.js";

/** The webview (VS Code's Webview.postMessage), or a stub / a browser bridge in tests. */
export interface ChatView {
  postMessage(message: ToWebview): PromiseLike<boolean> | boolean | void;
}

/** What ServerManager gives the chat. */
export interface ChatServer {
  readonly state: ServerState;
  onDidChangeState(listener: (state: ServerState) => void): Disposable;
  use<T>(fn: (client: Client) => Promise<T>): Promise<T>;
}

export interface ChatHost {
  server: ChatServer;
  settings(): Settings;
  /** Describe a failure (ErrorPresenter.describe). */
  describe(err: unknown): Problem | undefined;
  /** Run an action (ErrorPresenter.run); true when it worked. */
  runAction(action: ActionId, problem: Problem | undefined): Promise<boolean>;
  /** Insert at the cursor of the last active editor; false when there is none. */
  insertAtCursor(text: string): Promise<boolean>;
  copy(text: string): Promise<void>;
  /** Tell the user something small (no editor to insert into, ...). */
  info?(message: string): void;
  /** Store the conversation (workspaceState), to show it again after a reload. */
  persist?(state: ChatSnapshot): void;
  log?: Log;
  /** More options for every turn (tests: seed, long answers). */
  chatOptions?: ChatOptions;
}

/** A conversation as stored. */
export interface ChatSnapshot {
  turns: TurnView[];
  messages: ChatMessage[];
}

interface Running {
  controller: AbortController;
  answer: TurnView;
  done: Promise<void>;
}

const MAX_STORED_TURNS = 200;

/** `promise`, or an AbortError as soon as `signal` aborts (the promise goes on; its failure is
 * then ignored). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  promise.catch(() => undefined);
  if (signal.aborted) return Promise.reject(new AbortError("stopped", { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError("stopped", { cause: signal.reason }));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

export function serverView(state: ServerState): ServerView {
  return { kind: state.kind, model: state.model, detail: state.detail };
}

export class ChatController implements Disposable {
  private turns: TurnView[] = [];
  /** The conversation as the model sees it (system message first once a session exists). */
  private messages: ChatMessage[] = [];
  private session: Session | undefined;
  private sessionClient: Client | undefined;
  private running: Running | undefined;
  private view: ChatView | undefined;
  private lastPrompt: string | undefined;
  private nextId = 1;
  /** The token counts of the last finished answer (cachedTokens: the prefix the server reused). */
  lastUsage: Usage | undefined;
  private readonly log: Log;
  private readonly problems = new Map<string, Problem>();
  private readonly subscription: Disposable;

  constructor(private readonly host: ChatHost, restored?: ChatSnapshot) {
    this.log = host.log ?? silentLog;
    if (restored !== undefined) {
      this.turns = restored.turns
        .filter((t) => t.role !== "error")
        .map((t) => ({ ...t, status: t.status === "streaming" ? "stopped" : t.status }));
      this.messages = [...restored.messages];
      this.nextId = this.turns.length + 1;
    }
    this.subscription = host.server.onDidChangeState((state) => this.post({ type: "server", server: serverView(state) }));
  }

  /** The turns shown (tests). */
  get history(): readonly TurnView[] {
    return this.turns;
  }

  /** The conversation sent to the model (tests). */
  get conversation(): readonly ChatMessage[] {
    return this.session?.messages ?? this.messages;
  }

  /** The server session in use, if any. */
  get sessionId(): string | undefined {
    return this.session?.id;
  }

  get generating(): boolean {
    return this.running !== undefined;
  }

  /** Resolves when the answer being generated (if any) has ended. */
  async idle(): Promise<void> {
    await this.running?.done;
  }

  /** Show the chat in a (new) view; it asks for the history with "ready". */
  attach(view: ChatView): Disposable {
    this.view = view;
    return { dispose: () => this.detach(view) };
  }

  detach(view: ChatView): void {
    if (this.view === view) this.view = undefined;
  }

  private post(message: ToWebview): void {
    const view = this.view;
    if (view === undefined) return;
    try {
      const result = view.postMessage(message);
      if (result && typeof (result as PromiseLike<boolean>).then === "function") {
        (result as PromiseLike<boolean>).then(undefined, () => undefined);
      }
    } catch {
      // a disposed webview: the next "ready" gets the history
    }
  }

  private id(): string {
    return `t${this.nextId++}`;
  }

  private store(): void {
    if (this.host.persist === undefined) return;
    try {
      this.host.persist({
        turns: this.turns.filter((t) => t.role !== "error").slice(-MAX_STORED_TURNS),
        messages: [...this.conversation],
      });
    } catch (err) {
      this.log.warn(`cannot store the chat: ${(err as Error).message}`);
    }
  }

  /** A message from the webview. Never rejects. */
  async handleMessage(raw: unknown): Promise<void> {
    if (!isFromWebview(raw)) {
      this.log.warn(`unknown message from the chat view: ${JSON.stringify(raw)?.slice(0, 200)}`);
      return;
    }
    const message: FromWebview = raw;
    try {
      switch (message.type) {
        case "ready":
          this.post({ type: "history", turns: this.turns, generating: this.generating, server: serverView(this.host.server.state) });
          break;
        case "ask":
          await this.ask(message.text);
          break;
        case "stop":
          this.stop();
          break;
        case "new":
          await this.newConversation();
          break;
        case "copy":
          await this.host.copy(message.text);
          break;
        case "insert":
          if (!(await this.host.insertAtCursor(message.text))) this.host.info?.("Open an editor to insert the code into.");
          break;
        case "action":
          await this.runAction(message.action, message.turnId);
          break;
      }
    } catch (err) {
      this.log.error(`chat: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  /**
   * Ask a question (Ask, Explain Selection, the view's input). Resolves when the answer has
   * ended (done, stopped or failed); false when another answer is still being generated.
   * Never rejects.
   */
  async ask(text: string): Promise<boolean> {
    const prompt = text.trim();
    if (prompt === "") return false;
    if (this.running !== undefined) {
      this.host.info?.("Wait for the answer, or stop it, before asking again.");
      return false;
    }
    this.clearErrorActions();
    const user: TurnView = { id: this.id(), role: "user", text: prompt, status: "done" };
    this.turns.push(user);
    this.post({ type: "turn", turn: user });
    await this.answer(prompt);
    return true;
  }

  /** Stop the answer being generated (the server frees its slot). */
  stop(): void {
    this.running?.controller.abort(new Error("stopped by the user"));
  }

  private async sessionFor(client: Client, signal: AbortSignal): Promise<Session> {
    if (this.session !== undefined && this.sessionClient === client) return this.session;
    const chat = this.host.settings().chat;
    const history = this.session?.messages ?? this.messages;
    const session = await client.session({
      system: history.some((m) => m.role === "system") ? undefined : chat.systemPrompt || undefined,
      messages: history,
      maxTokens: chat.maxTokens,
      temperature: chat.temperature,
      signal,
    });
    this.session = session;
    this.sessionClient = client;
    return session;
  }

  private answer(prompt: string): Promise<void> {
    const controller = new AbortController();
    const answer: TurnView = { id: this.id(), role: "assistant", text: "", status: "streaming" };
    this.lastPrompt = prompt;
    this.turns.push(answer);
    this.post({ type: "turn", turn: answer });
    this.post({ type: "generating", generating: true });
    const done = this.stream(prompt, answer, controller).finally(() => {
      this.running = undefined;
      this.post({ type: "generating", generating: false });
      this.store();
    });
    this.running = { controller, answer, done };
    return done;
  }

  private async stream(prompt: string, answer: TurnView, controller: AbortController): Promise<void> {
    let session: Session | undefined;
    try {
      // stopping works also while the server is still being found or started
      await untilAborted(this.host.server.use(async (client) => {
        session = await this.sessionFor(client, controller.signal);
        const stream = session.streamChat(prompt, { ...this.host.chatOptions, signal: controller.signal });
        for await (const delta of stream) {
          if (delta.text) {
            answer.text += delta.text;
            this.post({ type: "delta", id: answer.id, text: delta.text });
          }
        }
        this.lastUsage = stream.usage;
      }), controller.signal);
      answer.status = "done";
      this.post({ type: "end", id: answer.id, status: "done" });
    } catch (err) {
      if (isAbort(err) && controller.signal.aborted) {
        answer.status = "stopped";
        // the model sees what the user saw: the question and the answer so far
        const turn: ChatMessage[] = [{ role: "user", content: prompt }, { role: "assistant", content: answer.text }];
        if (session !== undefined) session.messages = [...session.messages, ...turn];
        else this.messages = [...this.messages, ...turn];
        this.post({ type: "end", id: answer.id, status: "stopped" });
        return;
      }
      answer.status = "failed";
      this.post({ type: "end", id: answer.id, status: "failed" });
      this.showError(err);
    }
  }

  private showError(err: unknown): void {
    const problem = this.host.describe(err) ?? {
      kind: "other" as const,
      message: String(err),
      actions: [],
      settingsQuery: "botframework",
    };
    const actions = [...problem.actions];
    if (!actions.includes("retry") && problem.kind !== "contextLength") actions.push("retry");
    const turn: TurnView = {
      id: this.id(),
      role: "error",
      text: problem.message,
      actions: actions.map((id) => ({ id, title: ACTION_TITLES[id] })),
    };
    this.problems.set(turn.id, problem);
    this.turns.push(turn);
    this.post({ type: "turn", turn });
  }

  /** Only the latest error keeps its buttons. */
  private clearErrorActions(): void {
    for (const turn of this.turns) {
      if (turn.role === "error" && turn.actions?.length) {
        turn.actions = [];
        this.post({ type: "update", turn });
      }
    }
  }

  /** A button of an error turn. Recovering actions that work (start / restart the server, a new
   * API key) ask the question again. */
  private async runAction(action: ActionId, turnId: string): Promise<void> {
    const index = this.turns.findIndex((t) => t.id === turnId && t.role === "error");
    const turn = this.turns[index];
    if (turn === undefined || this.running !== undefined) return;
    const problem = this.problems.get(turnId);
    if (action === "retry") {
      await this.retry(turnId);
      return;
    }
    const worked = await this.host.runAction(action, problem);
    if (worked && (action === "startServer" || action === "restartServer" || action === "setApiKey")) {
      await this.retry(turnId);
    }
  }

  /** Remove the error turn and the failed answer before it, and ask the last question again. */
  private async retry(errorTurnId: string): Promise<void> {
    const prompt = this.lastPrompt;
    if (prompt === undefined || this.running !== undefined) return;
    const index = this.turns.findIndex((t) => t.id === errorTurnId);
    if (index < 0) return;
    const removed = [this.turns[index]];
    const before = this.turns[index - 1];
    if (before?.role === "assistant" && before.status === "failed") removed.push(before);
    this.turns = this.turns.filter((t) => !removed.includes(t));
    for (const t of removed) if (t) this.post({ type: "remove", id: t.id });
    this.problems.delete(errorTurnId);
    this.clearErrorActions();
    await this.answer(prompt);
  }

  /** Start a new conversation: stop the answer, free the old session on the server. */
  async newConversation(): Promise<void> {
    this.stop();
    await this.running?.done;
    const session = this.session;
    this.session = undefined;
    this.sessionClient = undefined;
    this.turns = [];
    this.messages = [];
    this.problems.clear();
    this.lastPrompt = undefined;
    this.post({ type: "history", turns: [], generating: false, server: serverView(this.host.server.state) });
    this.store();
    if (session !== undefined) {
      await session.close({ timeoutMs: 5000 }).catch((err: unknown) => this.log.info(`closing the session: ${(err as Error).message}`));
    }
  }

  /** Put the cursor in the view's input. */
  focusInput(): void {
    this.post({ type: "focus" });
  }

  /** Stop generating; close the session (best effort). */
  async dispose(): Promise<void> {
    this.subscription.dispose();
    this.stop();
    await this.running?.done.catch(() => undefined);
    const session = this.session;
    this.session = undefined;
    await session?.close({ timeoutMs: 2000 }).catch(() => undefined);
  }
}
