/**
 * The VS Code side: wires the editor's API to the plain modules of src/core, which hold the
 * logic (and are tested without VS Code).
 *
 *   ServerManager      finds or starts the server; its state -> StatusBarPresenter
 *   ChatController     the chat view (a WebviewView: media/chat.js), Ask / Explain
 *   CodeActions        Rewrite Selection / Generate Docstring: diff of a virtual document,
 *                      applied as a WorkspaceEdit
 *   CompletionController  the inline completion provider
 *   ErrorPresenter     failures as notifications with actions
 */

import * as vscode from "vscode";

import { ChatController, type ChatSnapshot } from "./core/chatController.js";
import { chatHtml, makeNonce } from "./core/chatHtml.js";
import { CodeActions, type CodeActionsUi, type EditorSnapshot, type Proposal } from "./core/codeActions.js";
import { CompletionController } from "./core/completionController.js";
import { ErrorPresenter } from "./core/errorPresenter.js";
import { signalOf, type Log } from "./core/ports.js";
import { ServerManager } from "./core/serverManager.js";
import { readSettings, type Settings } from "./core/settings.js";
import { StatusBarPresenter } from "./core/statusBar.js";

const SECRET_KEY = "botframework.apiKey";
const CHAT_STATE_KEY = "botframework.chat";
const PROPOSAL_SCHEME = "botframework-proposal";
const VIEW_ID = "botframework.chat";

let teardown: (() => Promise<void>) | undefined;

function outputLog(channel: vscode.LogOutputChannel): Log {
  return {
    info: (m) => channel.info(m),
    warn: (m) => channel.warn(m),
    error: (m) => channel.error(m),
    append: (text) => channel.append(text),
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const channel = vscode.window.createOutputChannel("Botframework", { log: true });
  context.subscriptions.push(channel);
  const log = outputLog(channel);

  let apiKey = (await context.secrets.get(SECRET_KEY)) || undefined;
  const settings = (): Settings => {
    const config = vscode.workspace.getConfiguration("botframework");
    return readSettings((key) => config.get(key), apiKey);
  };

  const server = new ServerManager({ settings, log });

  // -- status bar ------------------------------------------------------------------------------
  const item = vscode.window.createStatusBarItem("botframework.status", vscode.StatusBarAlignment.Right, 100);
  item.name = "Botframework";
  context.subscriptions.push(item);
  const status = new StatusBarPresenter(item, new vscode.ThemeColor("statusBarItem.errorBackground"), "botframework.serverMenu");
  status.update(server.state);
  context.subscriptions.push(server.onDidChangeState((state) => status.update(state)));

  // -- errors and their actions --------------------------------------------------------------
  const setApiKey = async (): Promise<boolean> => {
    const value = await vscode.window.showInputBox({
      title: "Botframework: API Key",
      prompt: "The API key the server was started with (--api-key). Empty: send none.",
      password: true,
      ignoreFocusOut: true,
    });
    if (value === undefined) return false;
    if (value.trim() === "") await context.secrets.delete(SECRET_KEY);
    else await context.secrets.store(SECRET_KEY, value.trim());
    apiKey = value.trim() || undefined;
    await server.reconfigure();
    await server.client();
    return true;
  };
  const presenter = new ErrorPresenter(
    { showError: (message, ...items) => vscode.window.showErrorMessage(message, ...items) },
    {
      startServer: () => server.start(),
      restartServer: () => server.restart(),
      openSettings: (query) => vscode.commands.executeCommand("workbench.action.openSettings", query),
      setApiKey,
      showOutput: () => channel.show(true),
    },
    () => ({ url: server.url, model: settings().model }),
    log,
  );
  context.subscriptions.push(
    context.secrets.onDidChange((e) => {
      if (e.key !== SECRET_KEY) return;
      context.secrets.get(SECRET_KEY).then(
        (value) => {
          apiKey = value || undefined;
        },
        (err: unknown) => log.warn(`reading the API key: ${(err as Error)?.message}`),
      );
    }),
  );

  // -- editors -----------------------------------------------------------------------------------
  let lastEditor = vscode.window.activeTextEditor;
  context.subscriptions.push(
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      if (editor !== undefined) lastEditor = editor;
    }),
  );
  const insertAtCursor = async (text: string): Promise<boolean> => {
    const editor = vscode.window.activeTextEditor ?? lastEditor;
    if (editor === undefined || editor.document.isClosed) return false;
    const shown = await vscode.window.showTextDocument(editor.document, editor.viewColumn);
    return shown.edit((edit) => {
      for (const selection of shown.selections) edit.replace(selection, text);
    });
  };

  // -- chat --------------------------------------------------------------------------------------
  const chat = new ChatController(
    {
      server,
      settings,
      describe: (err) => presenter.describe(err),
      runAction: (action, problem) => presenter.run(action, problem),
      insertAtCursor,
      copy: async (text) => {
        await vscode.env.clipboard.writeText(text);
        vscode.window.setStatusBarMessage("$(check) Copied", 2000);
      },
      info: (message) => void vscode.window.showInformationMessage(message).then(undefined, () => undefined),
      persist: (state) =>
        void context.workspaceState.update(CHAT_STATE_KEY, state).then(undefined, (err: unknown) => log.warn(`storing the chat: ${(err as Error)?.message}`)),
      log,
    },
    context.workspaceState.get<ChatSnapshot>(CHAT_STATE_KEY),
  );
  const media = vscode.Uri.joinPath(context.extensionUri, "media");
  context.subscriptions.push(
    vscode.window.registerWebviewViewProvider(
      VIEW_ID,
      {
        resolveWebviewView(view) {
          view.webview.options = { enableScripts: true, localResourceRoots: [media] };
          view.webview.html = chatHtml({
            cspSource: view.webview.cspSource,
            nonce: makeNonce(),
            scriptUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, "chat.js")).toString(),
            styleUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, "chat.css")).toString(),
          });
          const attached = chat.attach(view.webview);
          const received = view.webview.onDidReceiveMessage((message) => chat.handleMessage(message));
          view.onDidDispose(() => {
            attached.dispose();
            received.dispose();
          });
        },
      },
      { webviewOptions: { retainContextWhenHidden: true } },
    ),
  );
  const openChat = async (): Promise<void> => {
    await vscode.commands.executeCommand(`${VIEW_ID}.focus`);
  };

  // -- proposals (rewrite, docstring) as a diff ------------------------------------------------
  const proposals = new Map<string, string>();
  const proposalChanged = new vscode.EventEmitter<vscode.Uri>();
  context.subscriptions.push(
    proposalChanged,
    vscode.workspace.registerTextDocumentContentProvider(PROPOSAL_SCHEME, {
      onDidChange: proposalChanged.event,
      provideTextDocumentContent: (uri) => proposals.get(uri.toString()) ?? "",
    }),
  );
  const proposalUri = (p: Proposal): vscode.Uri => vscode.Uri.from({ scheme: PROPOSAL_SCHEME, path: `/${p.id}/${p.fileName}` });
  const ui: CodeActionsUi = {
    activeEditor(): EditorSnapshot | undefined {
      const editor = vscode.window.activeTextEditor;
      if (editor === undefined) return undefined;
      const doc = editor.document;
      return {
        uri: doc.uri.toString(),
        fileName: doc.uri.path.split("/").pop() || "untitled",
        languageId: doc.languageId,
        text: doc.getText(),
        version: doc.version,
        start: doc.offsetAt(editor.selection.start),
        end: doc.offsetAt(editor.selection.end),
      };
    },
    askInstruction: () =>
      vscode.window.showInputBox({
        title: "Botframework: Rewrite Selection",
        prompt: "How should the selection be rewritten? (Enter: make it clearer)",
        placeHolder: "e.g. simplify it, add type hints, handle errors",
      }),
    withProgress: (title, task) =>
      vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (_progress, token) => {
        const link = signalOf(token);
        return task(link.signal).finally(() => link.dispose());
      }),
    async showProposal(p) {
      const uri = proposalUri(p);
      proposals.set(uri.toString(), p.proposed);
      proposalChanged.fire(uri);
      await vscode.commands.executeCommand("setContext", "botframework.proposalOpen", true);
      await vscode.commands.executeCommand("vscode.diff", vscode.Uri.parse(p.uri), uri, `${p.title} (proposed)`, { preview: true });
    },
    async closeProposal(p) {
      const uri = proposalUri(p).toString();
      proposals.delete(uri);
      await vscode.commands.executeCommand("setContext", "botframework.proposalOpen", false);
      const tabs = vscode.window.tabGroups.all
        .flatMap((g) => g.tabs)
        .filter((t) => t.input instanceof vscode.TabInputTextDiff && t.input.modified.toString() === uri);
      if (tabs.length) await vscode.window.tabGroups.close(tabs);
    },
    choose: (message, ...items) => vscode.window.showInformationMessage(message, ...items),
    async applyEdit(p) {
      const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === p.uri);
      if (doc === undefined || doc.version !== p.version) return false;
      const edit = new vscode.WorkspaceEdit();
      edit.replace(doc.uri, new vscode.Range(doc.positionAt(p.start), doc.positionAt(p.end)), p.replacement);
      const applied = await vscode.workspace.applyEdit(edit);
      if (applied) await vscode.window.showTextDocument(doc, { preview: false });
      return applied;
    },
    info: (message) => void vscode.window.showInformationMessage(message).then(undefined, () => undefined),
    openChat,
  };
  const actions = new CodeActions({
    server,
    settings,
    ui,
    chat,
    showError: (err, retry) => presenter.show(err, retry),
    log,
  });

  // -- inline completion ---------------------------------------------------------------------
  const completion = new CompletionController({ server, settings, log });
  context.subscriptions.push(
    completion,
    vscode.languages.registerInlineCompletionItemProvider(
      { pattern: "**" },
      {
        async provideInlineCompletionItems(document, position, _context, token) {
          const end = document.lineAt(document.lineCount - 1).range.end;
          const text = await completion.provide(
            {
              prefix: document.getText(new vscode.Range(new vscode.Position(0, 0), position)),
              suffix: document.getText(new vscode.Range(position, end)),
              languageId: document.languageId,
            },
            token,
          );
          return text === undefined ? [] : [new vscode.InlineCompletionItem(text, new vscode.Range(position, position))];
        },
      },
    ),
  );

  // -- commands --------------------------------------------------------------------------------
  const guard =
    <A extends unknown[]>(name: string, fn: (...args: A) => unknown) =>
    async (...args: A): Promise<void> => {
      try {
        await fn(...args);
      } catch (err) {
        log.error(`${name}: ${(err as Error)?.message ?? String(err)}`);
        await presenter.show(err);
      }
    };
  const register = <A extends unknown[]>(id: string, fn: (...args: A) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, guard(id, fn)));

  register("botframework.ask", async (question?: unknown) => {
    await openChat();
    if (typeof question === "string" && question.trim() !== "") await chat.ask(question);
    else chat.focusInput();
  });
  register("botframework.explainSelection", () => actions.explainSelection());
  register("botframework.rewriteSelection", () => actions.rewriteSelection());
  register("botframework.generateDocstring", () => actions.generateDocstring());
  register("botframework.applyProposal", () => actions.applyProposal());
  register("botframework.discardProposal", () => actions.discardProposal());
  register("botframework.newChat", () => chat.newConversation());
  register("botframework.startServer", () => server.start().catch((err: unknown) => presenter.show(err, () => server.start())));
  register("botframework.restartServer", () => server.restart().catch((err: unknown) => presenter.show(err, () => server.restart())));
  register("botframework.stopServer", () => server.stop());
  register("botframework.setApiKey", () => setApiKey().catch((err: unknown) => presenter.show(err)));
  register("botframework.showOutput", () => channel.show());
  register("botframework.serverMenu", async () => {
    const state = server.state;
    type Pick = vscode.QuickPickItem & { run: () => unknown };
    const items: Pick[] = [];
    if (state.kind === "ready" || state.kind === "busy") {
      if (state.owned) items.push({ label: "$(debug-restart) Restart Server", run: () => vscode.commands.executeCommand("botframework.restartServer") });
      if (state.owned) items.push({ label: "$(debug-stop) Stop Server", run: () => server.stop() });
      items.push({ label: "$(comment-discussion) Open Chat", run: openChat });
    } else {
      items.push({ label: "$(play) Start Server", run: () => vscode.commands.executeCommand("botframework.startServer") });
    }
    items.push(
      { label: "$(key) Set API Key", run: () => vscode.commands.executeCommand("botframework.setApiKey") },
      { label: "$(gear) Open Settings", run: () => vscode.commands.executeCommand("workbench.action.openSettings", "botframework") },
      { label: "$(output) Show Output", run: () => channel.show() },
    );
    const where = state.owned ? `started by VS Code (pid ${state.pid})` : state.url;
    const picked = await vscode.window.showQuickPick(items, { title: `Botframework: ${state.kind} · ${state.model ?? "default model"} · ${where}`, placeHolder: state.detail });
    await picked?.run();
  });

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      const affectsServer = ["baseUrl", "model", "server", "requestTimeoutSeconds"].some((k) => e.affectsConfiguration(`botframework.${k}`));
      if (!affectsServer) return;
      server
        .reconfigure()
        .then(() => server.client())
        .catch((err: unknown) => presenter.show(err, () => server.client()));
    }),
  );

  teardown = async () => {
    await chat.dispose();
    await server.dispose();
  };

  // find the server, or start one; a failure is shown with what to do about it
  server.client().catch((err: unknown) => presenter.show(err, () => server.client()));
}

export async function deactivate(): Promise<void> {
  const stop = teardown;
  teardown = undefined;
  await stop?.();
}
