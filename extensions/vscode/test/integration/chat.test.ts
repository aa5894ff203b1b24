/**
 * The extension's code paths against a real botframework server that the test starts (two
 * slots): chat streaming in a session, stop mid-stream (the slot is freed), inline completion
 * (the model has no FIM tokens: the fallback, and cancellation on the next keystroke), the code
 * actions, an unknown model, a timeout.
 *
 * No wall-clock assertion: every wait is a bounded number of polls.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client } from "@botframework/sdk";

import { checkUnhandledRejections, until } from "../helpers/common.js";
import { MODEL, startServer, stats, waitIdle, waitStats, type TestServer } from "../helpers/realServer.js";
import { stack } from "../helpers/stack.js";

checkUnhandledRejections();

let server: TestServer;

before(async () => {
  server = await startServer(["--parallel", "2"]);
});

after(async () => {
  await server?.stop();
});

describe("chat against a real server", () => {
  it("streams an answer, in a session whose follow-up reuses the cached prefix", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, chat: { maxTokens: 24 } }, chatOptions: { seed: 1 } });
    try {
      await s.chat.handleMessage({ type: "ready" });
      assert.equal(await s.chat.ask("Say hello in three words."), true);
      const answer = s.chat.history[1]!;
      assert.equal(answer.status, "done");
      assert.ok(answer.text.length > 0, "an answer");
      const deltas = s.view.of("delta").filter((d) => d.id === answer.id);
      assert.ok(deltas.length > 1, "streamed in pieces");
      assert.equal(s.view.streamed(answer.id), answer.text);
      assert.match(s.chat.sessionId ?? "", /^sess-/);
      assert.equal(s.server.state.kind, "ready");
      assert.equal(s.server.state.model, MODEL);
      assert.equal(s.server.state.owned, false, "found, not started");

      await s.chat.ask("And in French?");
      assert.equal(s.chat.history[3]!.status, "done");
      assert.ok((s.chat.lastUsage?.cachedTokens ?? 0) > 0, `the second turn reused the session's cache: ${JSON.stringify(s.chat.lastUsage)}`);
      assert.equal(s.chat.conversation.length, 5, "system, two questions, two answers");
    } finally {
      await s.dispose();
    }
  });

  it("Stop mid-stream: the answer ends as stopped and the server's slot is freed", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL }, chatOptions: { maxTokens: 4000, ignoreEos: true } });
    try {
      const asked = s.chat.ask("Tell a very long story about a lighthouse.");
      await until("a few pieces", () => s.view.of("delta").length >= 5);
      await waitStats(server.url, (st) => (st.num_busy_slots ?? 0) >= 1, "a busy slot");
      await s.chat.handleMessage({ type: "stop" });
      await asked;
      assert.equal(s.chat.history[1]!.status, "stopped");
      assert.equal(s.view.of("end")[0]?.status, "stopped");
      assert.equal(s.chat.history.filter((t) => t.role === "error").length, 0);
      const idle = await waitIdle(server.url);
      assert.equal(idle.num_busy_slots, 0);
      // the chat goes on after a stop
      s.chatHost.chatOptions = { maxTokens: 8 };
      await s.chat.ask("Thanks.");
      s.assertAnswered();
    } finally {
      await s.dispose();
    }
  });

  it("New chat closes the session on the server", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, chat: { maxTokens: 8 } } });
    try {
      await s.chat.ask("Hi");
      const id = s.chat.sessionId!;
      const client = await s.server.client();
      assert.notEqual((await client.sessionInfo(id)).state, undefined);
      await s.chat.newConversation();
      assert.equal(s.chat.sessionId, undefined);
      assert.equal(await client.deleteSession(id), false, "already deleted");
    } finally {
      await s.dispose();
    }
  });

  it("an unknown model: an error turn to open the settings; fixed, Retry answers", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: "no-such-model", chat: { maxTokens: 8 } } });
    try {
      await s.chat.ask("Hi");
      const error = s.lastError()!;
      assert.match(error.text, /does not know the model 'no-such-model'/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["openSettings", "retry"],
      );
      assert.equal(s.server.state.kind, "error");
      await s.chat.handleMessage({ type: "action", action: "openSettings", turnId: error.id });
      assert.deepEqual(s.handlerCalls, ["openSettings:botframework.model"]);
      s.settings.set({ model: MODEL });
      await s.server.reconfigure();
      await s.chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
      s.assertAnswered();
      assert.equal(s.lastError(), undefined, "the error turn is gone");
    } finally {
      await s.dispose();
    }
  });
});

describe("inline completion against a real server", () => {
  it("the model has no FIM tokens (capabilities say so): the text before the cursor continued", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, completion: { maxTokens: 24 } } });
    try {
      await s.server.client();
      const text = await s.completion.provide({ prefix: "def add(a, b):\n    ", suffix: "\n\nprint(add(1, 2))\n", languageId: "python" });
      assert.equal(s.completion.counts.failed, 0, s.log.lines.join("\n"));
      // the server's /v1/capabilities says model.fim is false: the fallback at once, no failed FIM first
      assert.equal(s.completion.counts.requests, 1, "the prefix fallback straight away");
      assert.equal(s.completion.fimSupport(MODEL), "no");
      assert.equal(s.completion.lastMode, "prefix");
      assert.ok(text === undefined || typeof text === "string");
      await s.completion.provide({ prefix: "x = ", suffix: "", languageId: "python" });
      assert.equal(s.completion.counts.requests, 2, "the fallback from then on");
    } finally {
      await s.dispose();
    }
  });

  it("each keystroke cancels the request before it, on the server too", async () => {
    const s = stack({
      settings: { baseUrl: server.url, model: MODEL },
      completionOptions: { maxTokens: 4000, ignoreEos: true, stop: [] },
    });
    try {
      await s.server.client();
      await waitIdle(server.url);
      const first = s.completion.provide({ prefix: "Once upon a time", suffix: "", languageId: "plaintext" });
      await waitStats(server.url, (st) => (st.num_busy_slots ?? 0) >= 1, "the first completion running");
      const second = s.completion.provide({ prefix: "Once upon a time,", suffix: "", languageId: "plaintext" });
      assert.equal(await first, undefined, "the first was cancelled");
      await until("the second request sent", () => s.completion.counts.requests >= 2); // 2 prefix completions
      await waitStats(server.url, (st) => (st.num_busy_slots ?? 0) >= 1, "the second completion running");
      s.completion.cancel(); // VS Code cancels its token
      assert.equal(await second, undefined);
      const idle = await waitIdle(server.url);
      assert.equal(idle.num_busy_slots, 0, "both slots freed");
      assert.equal(s.completion.counts.cancelled, 2);
    } finally {
      await s.dispose();
    }
  });
});

describe("code actions against a real server", () => {
  it("Rewrite Selection and Generate Docstring end in a proposal or a clear note, never an error", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, chat: { maxTokens: 96, temperature: 0 } } });
    try {
      const text = "def add(a, b):\n    return a+b\n";
      s.setEditor({ uri: "file:///w/m.py", fileName: "m.py", languageId: "python", text, version: 1, start: 0, end: text.length });
      const rewrite = await s.actions.rewriteSelection("Add type hints.");
      assert.ok(rewrite !== undefined || s.uiEvents.some((e) => /^info:The model proposed/.test(e)), s.uiEvents.join("\n"));
      if (rewrite) assert.ok(s.uiEvents.includes("diff:Rewrite of m.py"));
      s.setEditor({ uri: "file:///w/m.py", fileName: "m.py", languageId: "python", text, version: 1, start: 2, end: 2 });
      const doc = await s.actions.generateDocstring();
      assert.ok(doc !== undefined || s.uiEvents.some((e) => /^info:The model wrote no description/.test(e)), s.uiEvents.join("\n"));
      if (doc) assert.match(doc.proposed, /^def add\(a, b\):\n {4}"""[^]*"""\n {4}return a\+b\n$/);
      assert.deepEqual(s.shownErrors, []);
      await s.actions.explainSelection();
      s.assertAnswered();
      assert.match(s.chat.history[0]!.text, /^Explain this code from `m\.py`/);
    } finally {
      await s.dispose();
    }
  });
});

describe("timeouts against a real server", () => {
  it("an answer that does not come in time: a timeout error turn with Retry; the UI goes on", async () => {
    // both slots taken by long answers: the chat's request waits in the queue, silent
    const llm = new Client({ baseURL: server.url, model: MODEL });
    const hog = new AbortController();
    const hogs = [0, 1].map(() => llm.chat("Count for ever.", { maxTokens: 4000, ignoreEos: true, signal: hog.signal }).catch(() => undefined));
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, requestTimeoutMs: 1500, chat: { maxTokens: 8 } } });
    try {
      await s.server.client();
      await waitStats(server.url, (st) => (st.num_busy_slots ?? 0) >= 2, "both slots busy");
      await s.chat.ask("Hello?");
      const error = s.lastError()!;
      assert.match(error.text, /did not answer in time/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["retry", "openSettings", "restartServer"],
      );
      hog.abort();
      await Promise.all(hogs);
      await waitIdle(server.url);
      // the user allows longer (Open Settings), then Retry
      s.settings.set({ requestTimeoutMs: 60_000 });
      await s.server.reconfigure();
      await s.chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
      s.assertAnswered();
      assert.equal((await stats(server.url)).num_waiting, 0);
    } finally {
      hog.abort();
      await s.dispose();
    }
  });
});
