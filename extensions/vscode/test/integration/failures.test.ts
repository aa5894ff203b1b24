/**
 * Failures from real servers started by the test: a wrong API key (`--api-key`), and a busy
 * server (`--parallel 1 --max-queue 1`: one long answer running, one waiting, so the next
 * request gets 503 with Retry-After).
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client } from "@botframework/sdk";

import { checkUnhandledRejections } from "../helpers/common.js";
import { MODEL, startServer, waitIdle, waitStats, type TestServer } from "../helpers/realServer.js";
import { stack } from "../helpers/stack.js";

checkUnhandledRejections();

describe("a server with an API key", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(["--api-key", "right-key"]);
  });
  after(async () => {
    await server?.stop();
  });

  it("a wrong key: an error turn with Set API Key; the key set, the question is answered", async () => {
    const s = stack({
      settings: { baseUrl: server.url, model: MODEL, apiKey: "wrong-key", chat: { maxTokens: 8 } },
      handlers: {
        // what "Set API Key" does in VS Code: store the key, reconnect
        setApiKey: async () => {
          s.settings.set({ apiKey: "right-key" });
          await s.server.reconfigure();
          return true;
        },
      },
    });
    try {
      await s.chat.ask("Hi");
      const error = s.lastError()!;
      assert.match(error.text, /refused the API key/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["setApiKey", "openSettings", "retry"],
      );
      assert.equal(s.server.state.kind, "error");
      await s.chat.handleMessage({ type: "action", action: "setApiKey", turnId: error.id });
      s.assertAnswered();
      assert.equal(s.server.state.kind, "ready");
    } finally {
      await s.dispose();
    }
  });

  it("no key at all is the same clear message", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL } });
    try {
      await assert.rejects(s.server.client());
      assert.equal(s.presenter.describe(s.server.state.error)?.kind, "auth");
    } finally {
      await s.dispose();
    }
  });
});

describe("a busy server", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(["--parallel", "1", "--max-queue", "1"]);
  });
  after(async () => {
    await server?.stop();
  });

  it("503 with Retry-After: an error turn with Retry and when; free again, Retry answers", async () => {
    const llm = new Client({ baseURL: server.url, model: MODEL, retries: 0 });
    const hog = new AbortController();
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, chat: { maxTokens: 8 } } });
    try {
      await s.server.client();
      // one long answer in the slot, one waiting: the queue is full
      const running = llm.chat("Count for ever.", { maxTokens: 4000, ignoreEos: true, signal: hog.signal }).catch(() => undefined);
      await waitStats(server.url, (st) => st.num_busy_slots === 1, "the slot busy");
      const waiting = llm.chat("And again.", { maxTokens: 4000, ignoreEos: true, signal: hog.signal }).catch(() => undefined);
      await waitStats(server.url, (st) => st.num_waiting === 1, "one request waiting");

      await s.chat.ask("Hello?");
      const error = s.lastError()!;
      assert.match(error.text, /The server is busy .* Try again in \d+ seconds?\./);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["retry"],
      );
      assert.equal(s.chat.generating, false, "the UI is usable");

      hog.abort();
      await Promise.all([running, waiting]);
      await waitIdle(server.url);
      await s.chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
      s.assertAnswered();
      assert.equal(s.lastError(), undefined);
    } finally {
      hog.abort();
      await s.dispose();
    }
  });

  it("inline completion offers nothing while the server is full, and logs why", async () => {
    const llm = new Client({ baseURL: server.url, model: MODEL, retries: 0 });
    const hog = new AbortController();
    const s = stack({ settings: { baseUrl: server.url, model: MODEL } });
    try {
      await s.server.client();
      const running = llm.chat("Count.", { maxTokens: 4000, ignoreEos: true, signal: hog.signal }).catch(() => undefined);
      await waitStats(server.url, (st) => st.num_busy_slots === 1, "the slot busy");
      const waiting = llm.chat("Count.", { maxTokens: 4000, ignoreEos: true, signal: hog.signal }).catch(() => undefined);
      await waitStats(server.url, (st) => st.num_waiting === 1, "one waiting");
      assert.equal(await s.completion.provide({ prefix: "x = ", suffix: "", languageId: "python" }), undefined);
      assert.equal(s.completion.counts.failed, 1);
      assert.ok(s.log.lines.some((l) => /inline completion failed: .*503/.test(l)), s.log.lines.join("\n"));
      hog.abort();
      await Promise.all([running, waiting]);
      await waitIdle(server.url);
    } finally {
      hog.abort();
      await s.dispose();
    }
  });
});
