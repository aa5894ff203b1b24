/** Settings, the status bar, the chat page's HTML. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { chatHtml, makeNonce } from "../../src/core/chatHtml.js";
import { DEFAULT_SETTINGS, readSettings } from "../../src/core/settings.js";
import { StatusBarPresenter, statusView } from "../../src/core/statusBar.js";
import type { ServerState } from "../../src/core/serverManager.js";
import { checkUnhandledRejections } from "../helpers/common.js";

checkUnhandledRejections();

describe("settings", () => {
  it("defaults for anything missing or of the wrong type", () => {
    assert.deepEqual(readSettings(() => undefined, undefined), DEFAULT_SETTINGS);
    const s = readSettings(
      (key) =>
        ({
          baseUrl: " http://127.0.0.1:9000 ",
          model: "m",
          "server.port": 70000,
          "server.args": ["--parallel", 4, "2"],
          "requestTimeoutSeconds": 5,
          "chat.temperature": "hot",
          "completion.debounceMs": -3,
        })[key],
      "key",
    );
    assert.equal(s.baseUrl, "http://127.0.0.1:9000");
    assert.equal(s.apiKey, "key");
    assert.equal(s.server.port, 65535);
    assert.deepEqual(s.server.args, ["--parallel", "2"]);
    assert.equal(s.requestTimeoutMs, 5000);
    assert.equal(s.chat.temperature, DEFAULT_SETTINGS.chat.temperature);
    assert.equal(s.completion.debounceMs, 0);
  });
});

function state(patch: Partial<ServerState>): ServerState {
  return { kind: "ready", url: "http://127.0.0.1:8000", model: "smollm2", owned: false, pid: undefined, inFlight: 0, detail: "ready", ...patch };
}

describe("status bar", () => {
  it("starting / ready / busy / error, with the model name", () => {
    assert.match(statusView(state({ kind: "starting", detail: "starting botframework serve on port 8000" })).text, /starting/);
    assert.equal(statusView(state({})).text, "$(hubot) smollm2");
    assert.match(statusView(state({ owned: true, pid: 42 })).tooltip, /started by VS Code, pid 42/);
    assert.equal(statusView(state({ kind: "busy" })).text, "$(sync~spin) smollm2");
    const error = statusView(state({ kind: "error", detail: "No server." }));
    assert.equal(error.error, true);
    assert.match(error.tooltip, /No server/);
  });

  it("the item gets text, tooltip, command and the error background", () => {
    const item = { text: "", tooltip: undefined as unknown, command: undefined as unknown, backgroundColor: undefined as unknown, shown: false, show() { this.shown = true; } };
    const presenter = new StatusBarPresenter(item, "red", "botframework.serverMenu");
    presenter.update(state({ kind: "error", detail: "x" }));
    assert.equal(item.shown, true);
    assert.equal(item.command, "botframework.serverMenu");
    assert.equal(item.backgroundColor, "red");
    presenter.update(state({}));
    assert.equal(item.backgroundColor, undefined);
  });
});

describe("chat page", () => {
  it("a strict CSP: scripts only by nonce, no inline style, resources from the webview only", () => {
    const nonce = makeNonce();
    assert.match(nonce, /^[A-Za-z0-9]{20,}$/);
    const html = chatHtml({ cspSource: "vscode-resource:", nonce, scriptUri: "vscode-resource:/m/chat.js", styleUri: "vscode-resource:/m/chat.css" });
    const csp = /Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1] ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, new RegExp(`script-src 'nonce-${nonce}'`));
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(html, new RegExp(`<script nonce="${nonce}" src="vscode-resource:/m/chat.js"></script>`));
    assert.doesNotMatch(html, /<script(?![^>]*src=)/, "no inline script");
    assert.doesNotMatch(html, /style="/, "no inline style");
    for (const id of ["log", "input", "send", "stop", "new-chat", "server-label"]) assert.match(html, new RegExp(`id="${id}"`));
  });

  it("escapes what it puts in attributes", () => {
    const html = chatHtml({ cspSource: "x", nonce: "n", scriptUri: 'a"b', styleUri: "<c>" });
    assert.match(html, /src="a&quot;b"/);
    assert.match(html, /href="&lt;c&gt;"/);
  });
});
