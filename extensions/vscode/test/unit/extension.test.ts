/**
 * extension.ts with a stand-in `vscode` module (test/helpers/vscodeStub.ts) and a fake server
 * behind the global fetch: package.json and the code agree (commands, view, settings), and the
 * wiring works (status bar, chat view, inline completion, rewrite + apply, API key, failures).
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import Module, { createRequire } from "node:module";

import { activate, deactivate } from "../../src/extension.js";
import * as vscodeStub from "../helpers/vscodeStub.js";
import { TextDocument, TextEditor, Position, Range, Uri, recorded, window, workspace } from "../helpers/vscodeStub.js";
import { checkUnhandledRejections, until } from "../helpers/common.js";
import { FakeServer } from "../helpers/fakeServer.js";
import { extensionRoot } from "../helpers/paths.js";

checkUnhandledRejections();

const root = extensionRoot();
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  contributes: {
    commands: { command: string }[];
    views: Record<string, { id: string; type: string }[]>;
    configuration: { properties: Record<string, unknown> };
    menus: Record<string, { command: string }[]>;
    keybindings: { command: string }[];
  };
  main: string;
};

const fake = new FakeServer({ model: "smollm2-135m-instruct", fim: false, completionText: "return a + b" });
const realFetch = globalThis.fetch;
const secrets = new Map<string, string>();
const state = new Map<string, unknown>();
const context = {
  subscriptions: [] as { dispose(): unknown }[],
  extensionUri: Uri.file(root),
  secrets: {
    get: async (k: string) => secrets.get(k),
    store: async (k: string, v: string) => void secrets.set(k, v),
    delete: async (k: string) => void secrets.delete(k),
    onDidChange: () => ({ dispose: () => undefined }),
  },
  workspaceState: {
    get: <T>(k: string) => state.get(k) as T | undefined,
    update: async (k: string, v: unknown) => void state.set(k, v),
  },
};

before(async () => {
  globalThis.fetch = fake.fetch as typeof fetch;
  recorded.config["botframework.baseUrl"] = "http://127.0.0.1:8127";
  recorded.config["botframework.server.autoStart"] = false;
  recorded.config["botframework.completion.debounceMs"] = 0;
  await activate(context as never);
});

after(async () => {
  await deactivate();
  for (const s of context.subscriptions) s.dispose();
  globalThis.fetch = realFetch;
});

describe("the bundle VS Code loads", () => {
  it("dist/extension.js is CommonJS that exports activate and deactivate, needing only `vscode`", () => {
    const load = (Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown })._load;
    const hooked = (request: string, ...rest: unknown[]) => (request === "vscode" ? vscodeStub : load(request, ...rest));
    (Module as unknown as { _load: typeof hooked })._load = hooked;
    try {
      const bundle = createRequire(import.meta.url)(join(root, "dist", "extension.js")) as Record<string, unknown>;
      assert.equal(typeof bundle["activate"], "function");
      assert.equal(typeof bundle["deactivate"], "function");
    } finally {
      (Module as unknown as { _load: typeof load })._load = load;
    }
  });
});

describe("extension wiring", () => {
  it("registers exactly the commands package.json contributes, and menus name only those", () => {
    const contributed = manifest.contributes.commands.map((c) => c.command).sort();
    assert.deepEqual([...recorded.commands.keys()].sort(), contributed);
    for (const list of Object.values(manifest.contributes.menus)) for (const m of list) assert.ok(contributed.includes(m.command), m.command);
    for (const k of manifest.contributes.keybindings) assert.ok(contributed.includes(k.command), k.command);
    assert.equal(manifest.main, "./dist/extension.js");
  });

  it("provides the webview view package.json declares", () => {
    const views = Object.values(manifest.contributes.views).flat();
    assert.deepEqual(
      views.map((v) => [v.id, v.type]),
      [["botframework.chat", "webview"]],
    );
    assert.ok(recorded.viewProviders.has("botframework.chat"));
  });

  it("reads only settings package.json declares, and declares none it does not read", () => {
    const declared = Object.keys(manifest.contributes.configuration.properties).sort();
    assert.deepEqual([...recorded.configKeysRead].sort(), declared);
  });

  it("the status bar shows the model once the server is found", async () => {
    const item = recorded.statusItems[0]!;
    await until("ready", () => item.text === "$(hubot) smollm2-135m-instruct");
    assert.equal(item.command, "botframework.serverMenu");
    assert.equal(item.visible, true);
  });

  it("the chat view: CSP'd HTML from media/, messages both ways", async () => {
    const posted: { type: string; [k: string]: unknown }[] = [];
    let receive: ((m: unknown) => unknown) | undefined;
    const webview = {
      options: {} as { enableScripts?: boolean; localResourceRoots?: Uri[] },
      html: "",
      cspSource: "vscode-webview://abc",
      asWebviewUri: (u: Uri) => Uri.parse(`vscode-webview://abc${u.path}`),
      postMessage: async (m: { type: string }) => {
        posted.push(m);
        return true;
      },
      onDidReceiveMessage: (fn: (m: unknown) => unknown) => {
        receive = fn;
        return { dispose: () => undefined };
      },
    };
    recorded.viewProviders.get("botframework.chat")!.resolveWebviewView({ webview, onDidDispose: () => ({ dispose: () => undefined }) });
    assert.equal(webview.options.enableScripts, true);
    assert.match(webview.html, /script-src 'nonce-[A-Za-z0-9]+'/);
    assert.match(webview.html, /src="vscode-webview:[^"]*\/media\/chat\.js"/);
    assert.match(webview.html, /href="vscode-webview:[^"]*\/media\/chat\.css"/);
    await receive!({ type: "ready" });
    assert.equal(posted[0]?.type, "history");
    await receive!({ type: "ask", text: "hi" });
    assert.deepEqual(
      posted.filter((m) => m.type === "delta").map((m) => m["text"]),
      ["Hello", ", ", "world", "."],
    );
    assert.ok(state.get("botframework.chat"), "the conversation is stored in workspaceState");
    await receive!({ type: "copy", text: "code" });
    assert.deepEqual(recorded.clipboard, ["code"]);
  });

  it("Ask with a question asks it in the chat", async () => {
    const before = fake.of("POST", "/v1/chat/completions").length;
    await recorded.commands.get("botframework.ask")!("What is 2+2?");
    assert.equal(fake.of("POST", "/v1/chat/completions").length, before + 1);
    assert.ok(recorded.executed.some((e) => e.id === "botframework.chat.focus"));
  });

  it("the inline completion provider answers at the cursor (fallback: no FIM on this model)", async () => {
    const doc = new TextDocument(Uri.file("/w/a.py"), "def add(a, b):\n    \n", "python");
    const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose: () => undefined }) };
    const items = (await recorded.inlineProviders[0]!.provideInlineCompletionItems(doc, new Position(1, 4), {}, token)) as { insertText: string }[];
    assert.equal(items[0]?.insertText, "return a + b");
    const sent = fake.of("POST", "/v1/completions");
    assert.equal(sent[0]?.body?.["prompt"], "def add(a, b):\n    ");
    assert.equal(sent[0]?.body?.["suffix"], "\n");
    assert.equal(sent.at(-1)?.body?.["suffix"], undefined);
  });

  it("Rewrite Selection: a diff of a virtual document; Apply is one WorkspaceEdit", async () => {
    const doc = new TextDocument(Uri.file("/w/m.py"), "def add(a, b):\n    return a+b\n", "python");
    workspace.textDocuments.push(doc);
    window.setActiveEditor(new TextEditor(doc, new Range(new Position(0, 0), new Position(2, 0))));
    fake.options.chatPieces = ["```python\ndef add(a, b):\n    return a + b\n```"];
    recorded.answers.inputBox.push("");
    await recorded.commands.get("botframework.rewriteSelection")!();
    const diff = recorded.executed.find((e) => e.id === "vscode.diff");
    assert.ok(diff, "vscode.diff was opened");
    const proposed = diff.args[1] as Uri;
    assert.equal(proposed.scheme, "botframework-proposal");
    assert.equal(recorded.contentProviders.get("botframework-proposal")!.provideTextDocumentContent(proposed), "def add(a, b):\n    return a + b\n");
    await recorded.commands.get("botframework.applyProposal")!();
    assert.equal(recorded.appliedEdits.length, 1);
    assert.equal(doc.text, "def add(a, b):\n    return a + b\n");
  });

  it("Set API Key stores it in SecretStorage and reconnects with it", async () => {
    recorded.answers.inputBox.push("s3cret");
    await recorded.commands.get("botframework.setApiKey")!();
    assert.equal(secrets.get("botframework.apiKey"), "s3cret");
    const last = fake.requests.filter((r) => r.path !== "/health").at(-1);
    assert.equal(last?.headers["authorization"], "Bearer s3cret");
  });

  it("a failure is a notification with actions; Start Server starts", async () => {
    fake.options.down = true;
    workspace.changeConfiguration({ "botframework.baseUrl": "http://127.0.0.1:8128" });
    await until("the error", () => recorded.errors.length > 0);
    const error = recorded.errors[0]!;
    assert.match(error.message, /No botframework server answers at http:\/\/127\.0\.0\.1:8128/);
    assert.deepEqual(error.items, ["Start Server", "Open Settings", "Retry"]);
    assert.equal(recorded.statusItems[0]!.text, "$(error) Botframework");
  });
});
