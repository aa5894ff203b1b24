/** Explain / Rewrite / Docstring: the text work, and the proposal flow with a stubbed editor. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  CodeActions,
  blockAt,
  cleanDescription,
  docstringEdit,
  extractCode,
  matchIndentation,
  type CodeActionsUi,
  type EditorSnapshot,
  type Proposal,
} from "../../src/core/codeActions.js";
import { ErrorPresenter } from "../../src/core/errorPresenter.js";
import { ServerManager } from "../../src/core/serverManager.js";
import { checkUnhandledRejections, testSettings } from "../helpers/common.js";
import { FakeServer } from "../helpers/fakeServer.js";

checkUnhandledRejections();

describe("text", () => {
  it("extractCode: the first fenced block, else the answer without fences", () => {
    assert.equal(extractCode("Here:\n```python\ndef f():\n    return 1\n```\nDone."), "def f():\n    return 1");
    assert.equal(extractCode("```\nx = 1\n"), "x = 1");
    assert.equal(extractCode("x = 1\n"), "x = 1");
    assert.equal(extractCode("```js\nlet a = 1;\n```\n```js\nother\n```"), "let a = 1;");
  });

  it("matchIndentation: the selection's base indentation and trailing newline come back", () => {
    const original = "    if x:\n        y()\n";
    assert.equal(matchIndentation("if x:\n    y()", original), "    if x:\n        y()\n");
    // the selection began after the indentation of its first line
    assert.equal(matchIndentation("if x:\n    z()", "if x:\n        y()", "    "), "if x:\n        z()");
    assert.equal(matchIndentation("a()", "a()"), "a()");
  });

  it("blockAt: the line at the cursor and what is indented under it", () => {
    const text = "import os\n\ndef f(x):\n    y = x\n\n    return y\n\nprint(f(1))\n";
    const at = text.indexOf("def f");
    const block = blockAt(text, at + 2);
    assert.equal(text.slice(block.start, block.end), "def f(x):\n    y = x\n\n    return y\n");
    const js = "function g() {\n  return 1;\n}\nconst z = 2;\n";
    const b = blockAt(js, 3);
    assert.equal(js.slice(b.start, b.end), "function g() {\n  return 1;\n}\n");
  });

  it("cleanDescription: no quotes, fences or labels; one sentence-ended paragraph", () => {
    assert.equal(cleanDescription('Docstring: """Adds two numbers\nand returns the sum"""'), "Adds two numbers and returns the sum.");
    assert.equal(cleanDescription("```python\ncode\n```"), "");
    assert.equal(cleanDescription("Returns x."), "Returns x.");
  });

  it("docstringEdit: Python docstring below the def line, at the body's indentation", () => {
    const text = "class A:\n    def f(self, x):\n        return x\n";
    const start = text.indexOf("    def");
    const block = blockAt(text, start);
    const edit = docstringEdit(text, block, "python", "Returns x.");
    const result = text.slice(0, edit.offset) + edit.insert + text.slice(edit.offset);
    assert.equal(result, 'class A:\n    def f(self, x):\n        """Returns x."""\n        return x\n');
  });

  it("docstringEdit: a long Python description is wrapped inside the quotes", () => {
    const text = "def f():\n    pass\n";
    const edit = docstringEdit(text, blockAt(text, 0), "python", "word ".repeat(40).trim() + ".");
    const lines = edit.insert.split("\n").filter(Boolean);
    assert.ok(lines.length > 2);
    assert.ok(lines[0]!.startsWith('    """word'));
    assert.equal(lines.at(-1), '    """');
    assert.ok(lines.every((l) => l.length <= 88));
  });

  it("docstringEdit: /** */ above a TypeScript function, /// in Rust, // in Go, # in Ruby", () => {
    const ts = "export class A {\n  run(): void {\n    go();\n  }\n}\n";
    const at = ts.indexOf("  run");
    const tsEdit = docstringEdit(ts, blockAt(ts, at), "typescript", "Runs it.");
    assert.equal(tsEdit.offset, at);
    assert.equal(tsEdit.insert, "  /**\n   * Runs it.\n   */\n");
    assert.equal(docstringEdit("fn main() {}\n", { start: 0, end: 13 }, "rust", "Entry.").insert, "/// Entry.\n");
    assert.equal(docstringEdit("func main() {}\n", { start: 0, end: 15 }, "go", "Entry.").insert, "// Entry.\n");
    assert.equal(docstringEdit("def run\nend\n", { start: 0, end: 12 }, "ruby", "Runs.").insert, "# Runs.\n");
  });
});

function harness(answer: string[], editor?: Partial<EditorSnapshot>) {
  const fake = new FakeServer({ chatPieces: answer });
  const settings = testSettings({ baseUrl: "http://127.0.0.1:8126", server: { autoStart: false } });
  const server = new ServerManager({ settings: settings.get, fetch: fake.fetch, retries: 0 });
  const text = editor?.text ?? "def add(a, b):\n    return a+b\n";
  let snapshot: EditorSnapshot | undefined = {
    uri: "file:///w/m.py",
    fileName: "m.py",
    languageId: "python",
    text,
    version: 3,
    start: 0,
    end: text.length,
    ...editor,
  };
  const events: string[] = [];
  const applied: Proposal[] = [];
  const asked: string[] = [];
  const errors: unknown[] = [];
  let choice: string | undefined;
  let docVersion = 3;
  const ui: CodeActionsUi = {
    activeEditor: () => snapshot,
    askInstruction: async () => "use f-strings",
    withProgress: async (title, task) => {
      events.push(`progress:${title}`);
      return task(new AbortController().signal);
    },
    showProposal: async (p) => {
      events.push(`diff:${p.title}`);
    },
    closeProposal: async (p) => {
      events.push(`close:${p.id}`);
    },
    choose: async (message, ...items) => {
      events.push(`choose:${items.join("/")}`);
      return choice;
    },
    applyEdit: async (p) => {
      if (p.version !== docVersion) return false;
      applied.push(p);
      return true;
    },
    info: (m) => events.push(`info:${m}`),
    openChat: async () => {
      events.push("openChat");
    },
  };
  const presenter = new ErrorPresenter({ showError: async () => undefined }, {
    startServer: async () => undefined,
    restartServer: async () => undefined,
    openSettings: async () => undefined,
    setApiKey: async () => undefined,
    showOutput: () => undefined,
  }, () => ({ url: "u", model: "" }));
  const actions = new CodeActions({
    server,
    settings: settings.get,
    ui,
    chat: { ask: async (t) => (asked.push(t), true) },
    showError: async (err, retry) => {
      errors.push(err);
      void retry;
      await presenter.show(err, retry);
    },
  });
  return {
    fake,
    server,
    actions,
    events,
    applied,
    asked,
    errors,
    setChoice: (c: string | undefined) => (choice = c),
    setEditor: (e: EditorSnapshot | undefined) => (snapshot = e),
    bumpVersion: () => docVersion++,
  };
}

describe("CodeActions", () => {
  it("Explain Selection asks the chat about the selected code", async () => {
    const h = harness([], { start: 0, end: 14 });
    await h.actions.explainSelection();
    assert.deepEqual(h.events, ["openChat"]);
    assert.equal(h.asked[0], "Explain this code from `m.py`:\n\n```python\ndef add(a, b):\n```");
    await h.server.dispose();
  });

  it("Rewrite: a diff of the proposal, applied as one edit on Apply", async () => {
    const h = harness(["Sure:\n```python\ndef add(a, b):\n    return a + b\n```"]);
    h.setChoice("Apply");
    const proposal = await h.actions.rewriteSelection();
    assert.ok(proposal);
    assert.equal(proposal.replacement, "def add(a, b):\n    return a + b\n");
    assert.equal(proposal.proposed, "def add(a, b):\n    return a + b\n");
    assert.deepEqual([proposal.start, proposal.end], [0, 30]);
    const sent = h.fake.of("POST", "/v1/chat/completions")[0]!;
    const user = (sent.body?.["messages"] as { content: string }[])[1]!.content;
    assert.match(user, /use f-strings/);
    assert.match(user, /```python\ndef add/);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.applied.length, 1);
    assert.equal(h.actions.pending, undefined);
    assert.deepEqual(h.events, ["progress:Botframework: rewriting the selection of m.py", "diff:Rewrite of m.py", "choose:Apply/Discard", `close:${proposal.id}`]);
    await h.server.dispose();
  });

  it("Rewrite: Discard closes the diff and edits nothing; the title buttons act on the pending one", async () => {
    const h = harness(["```python\ndef add(a, b):\n    return a + b\n```"]);
    h.setChoice("Discard");
    await h.actions.rewriteSelection();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.applied.length, 0);
    assert.equal(h.actions.pending, undefined);
    h.setChoice(undefined); // notification dismissed: the proposal waits for the title buttons
    await h.actions.rewriteSelection();
    assert.ok(h.actions.pending);
    assert.equal(await h.actions.applyProposal(), true);
    assert.equal(h.applied.length, 1);
    assert.equal(await h.actions.applyProposal(), false, "nothing pending any more");
    await h.server.dispose();
  });

  it("Rewrite: a file changed since the proposal is not edited", async () => {
    const h = harness(["```python\ndef add(a, b):\n    return a + b\n```"]);
    await h.actions.rewriteSelection();
    h.bumpVersion();
    assert.equal(await h.actions.applyProposal(), false);
    assert.equal(h.applied.length, 0);
    assert.ok(h.events.some((e) => /changed since the proposal/.test(e)));
    await h.server.dispose();
  });

  it("Rewrite: needs a selection; no change and no code are said so", async () => {
    const h = harness(["```python\ndef add(a, b):\n    return a+b\n```"], { start: 5, end: 5 });
    assert.equal(await h.actions.rewriteSelection(), undefined);
    assert.match(h.events[0]!, /Select the code to rewrite/);
    h.setEditor({ uri: "file:///w/m.py", fileName: "m.py", languageId: "python", text: "def add(a, b):\n    return a+b\n", version: 3, start: 0, end: 30 });
    assert.equal(await h.actions.rewriteSelection(), undefined);
    assert.ok(h.events.some((e) => /proposed no change/.test(e)));
    h.setEditor(undefined);
    assert.equal(await h.actions.rewriteSelection(), undefined);
    assert.ok(h.events.some((e) => /Open a file/.test(e)));
    await h.server.dispose();
  });

  it("Rewrite: a failure is shown with a retry, and nothing is proposed", async () => {
    const h = harness(["x"]);
    await h.server.client();
    h.fake.fail("POST /v1/chat/completions", { status: 503, code: "server_busy", type: "server_busy", retryAfter: "1" });
    assert.equal(await h.actions.rewriteSelection(), undefined);
    assert.equal(h.errors.length, 1);
    assert.equal(h.actions.pending, undefined);
    await h.server.dispose();
  });

  it("Generate Docstring: the block at the cursor, a docstring proposal below its def line", async () => {
    const h = harness(['"Adds a and b."'], { start: 3, end: 3 });
    h.setChoice("Apply");
    const proposal = await h.actions.generateDocstring();
    assert.ok(proposal);
    assert.equal(proposal.proposed, 'def add(a, b):\n    """Adds a and b."""\n    return a+b\n');
    assert.equal(proposal.start, proposal.end, "an insertion");
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.applied.length, 1);
    await h.server.dispose();
  });
});
