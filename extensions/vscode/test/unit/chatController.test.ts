/**
 * ChatController over the real SDK Client and ServerManager, with a fake server behind fetch:
 * streaming into the view, sessions, stop, failures as error turns with actions.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ChatController, type ChatHost, type ChatSnapshot } from "../../src/core/chatController.js";
import { isFromWebview } from "../../src/core/chatProtocol.js";
import { ErrorPresenter, type ActionId } from "../../src/core/errorPresenter.js";
import { ServerManager } from "../../src/core/serverManager.js";
import { RecordingView, checkUnhandledRejections, memoryLog, testSettings, until } from "../helpers/common.js";
import { FakeServer } from "../helpers/fakeServer.js";

checkUnhandledRejections();

function setup(fakeOptions: ConstructorParameters<typeof FakeServer>[0] = {}, restored?: ChatSnapshot) {
  const fake = new FakeServer(fakeOptions);
  const settings = testSettings({ baseUrl: "http://127.0.0.1:8124", server: { autoStart: false } });
  const log = memoryLog();
  const server = new ServerManager({ settings: settings.get, fetch: fake.fetch, log, retries: 0 });
  const ran: ActionId[] = [];
  const actionResults: Partial<Record<ActionId, boolean>> = {};
  const inserted: string[] = [];
  const copied: string[] = [];
  const infos: string[] = [];
  const persisted: ChatSnapshot[] = [];
  const presenter = new ErrorPresenter(
    { showError: async () => undefined },
    {
      startServer: () => server.start(),
      restartServer: () => server.restart(),
      openSettings: async () => undefined,
      setApiKey: async () => undefined,
      showOutput: () => undefined,
    },
    () => ({ url: server.url, model: settings.value.model }),
  );
  let editorOpen = true;
  const host: ChatHost = {
    server,
    settings: settings.get,
    describe: (err) => presenter.describe(err),
    runAction: async (action, problem) => {
      ran.push(action);
      if (action in actionResults) return actionResults[action]!;
      return presenter.run(action, problem);
    },
    insertAtCursor: async (text) => {
      if (!editorOpen) return false;
      inserted.push(text);
      return true;
    },
    copy: async (text) => {
      copied.push(text);
    },
    info: (m) => infos.push(m),
    persist: (s) => persisted.push(JSON.parse(JSON.stringify(s)) as ChatSnapshot),
    log,
  };
  const chat = new ChatController(host, restored);
  const view = new RecordingView();
  chat.attach(view);
  return {
    fake,
    settings,
    server,
    chat,
    view,
    ran,
    actionResults,
    inserted,
    copied,
    infos,
    persisted,
    log,
    closeEditor: () => {
      editorOpen = false;
    },
  };
}

describe("ChatController", () => {
  it("streams an answer into the view, in a server session", async () => {
    const { chat, view, fake, server } = setup();
    await chat.handleMessage({ type: "ready" });
    assert.equal(view.of("history").length, 1);
    assert.equal(await chat.ask("Say hello"), true);
    const turns = view.of("turn").map((t) => t.turn);
    assert.deepEqual(
      turns.map((t) => t.role),
      ["user", "assistant"],
    );
    const answerId = turns[1]!.id;
    assert.equal(view.streamed(answerId), "Hello, world.");
    assert.deepEqual(view.of("end"), [{ type: "end", id: answerId, status: "done" }]);
    assert.deepEqual(
      view.of("generating").map((g) => g.generating),
      [true, false],
    );
    assert.equal(chat.history[1]!.text, "Hello, world.");
    // one session, and the turn carries its id
    assert.equal(fake.of("POST", "/v1/sessions").length, 1);
    const request = fake.of("POST", "/v1/chat/completions")[0]!;
    assert.equal(request.body?.["session_id"], "sess-1");
    assert.equal(request.body?.["stream"], true);
    const messages = request.body?.["messages"] as { role: string; content: string }[];
    assert.equal(messages[0]!.role, "system");
    assert.equal(messages[1]!.content, "Say hello");
    assert.equal(server.state.kind, "ready");
    await server.dispose();
  });

  it("a follow-up turn sends the history in the same session (the server reuses its cache)", async () => {
    const { chat, fake, server } = setup();
    await chat.ask("first");
    await chat.ask("second");
    assert.equal(fake.of("POST", "/v1/sessions").length, 1);
    const second = fake.of("POST", "/v1/chat/completions")[1]!;
    assert.equal(second.body?.["session_id"], "sess-1");
    const contents = (second.body?.["messages"] as { content: string }[]).map((m) => m.content);
    assert.deepEqual(contents.slice(1), ["first", "Hello, world.", "second"]);
    assert.equal(chat.lastUsage?.cachedTokens, 7);
    await server.dispose();
  });

  it("stop() closes the stream (the server frees the slot) and keeps the partial answer", async () => {
    const { chat, view, fake, server } = setup({ holdStreams: true });
    const asked = chat.ask("Tell a long story");
    const request = await fake.waitFor("/v1/chat/completions");
    await until("the first pieces", () => chat.history[1]?.text === "Hello, world.");
    assert.equal(chat.generating, true);
    await chat.handleMessage({ type: "stop" });
    await asked;
    assert.equal(request.closed, true, "the connection was closed");
    assert.equal(chat.generating, false);
    const end = view.of("end")[0]!;
    assert.equal(end.status, "stopped");
    assert.equal(view.of("turn").filter((t) => t.turn.role === "error").length, 0, "a stop is no error");
    // the next turn's history has the partial answer
    fake.options.holdStreams = false;
    await chat.ask("go on");
    const next = fake.of("POST", "/v1/chat/completions")[1]!;
    const contents = (next.body?.["messages"] as { content: string }[]).map((m) => m.content);
    assert.deepEqual(contents.slice(1), ["Tell a long story", "Hello, world.", "go on"]);
    await server.dispose();
  });

  it("stop works while the server is still being found", async () => {
    const { chat, fake, server, view } = setup();
    const release = fake.pause();
    const asked = chat.ask("hi");
    await fake.waitFor("/health");
    chat.stop();
    await asked;
    assert.equal(view.of("end")[0]?.status, "stopped");
    assert.equal(chat.generating, false);
    release();
    await server.client();
    await server.dispose();
  });

  it("busy: an error turn with Retry; Retry asks again and replaces it", async () => {
    const { chat, view, fake, server } = setup();
    await server.client();
    fake.fail("POST /v1/chat/completions", { status: 503, type: "server_busy", code: "server_busy", retryAfter: "2" });
    await chat.ask("hi");
    const error = view.of("turn").find((t) => t.turn.role === "error")!.turn;
    assert.match(error.text, /busy.*Try again in 2 seconds/);
    assert.deepEqual(
      error.actions?.map((a) => a.id),
      ["retry"],
    );
    assert.equal(chat.history.find((t) => t.role === "assistant")?.status, "failed");
    await chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
    assert.deepEqual(
      chat.history.map((t) => `${t.role}:${t.status}`),
      ["user:done", "assistant:done"],
    );
    assert.ok(view.of("remove").some((r) => r.id === error.id));
    await server.dispose();
  });

  it("wrong API key: Set API Key; when it works the question is asked again", async () => {
    const { chat, view, fake, server, settings, ran } = setup({ apiKey: "right" });
    settings.set({ apiKey: "wrong" });
    await chat.ask("hi");
    const error = view.of("turn").find((t) => t.turn.role === "error")!.turn;
    assert.match(error.text, /refused the API key/);
    assert.equal(error.actions?.[0]?.id, "setApiKey");
    // the action handler stores the key; here: the settings change
    settings.set({ apiKey: "right" });
    await server.reconfigure();
    await chat.handleMessage({ type: "action", action: "setApiKey", turnId: error.id });
    assert.deepEqual(ran, ["setApiKey"]);
    assert.equal(chat.history.at(-1)?.status, "done");
    assert.equal(chat.history.at(-1)?.text, "Hello, world.");
    assert.equal(fake.of("POST", "/v1/chat/completions").at(-1)?.headers["authorization"], "Bearer right");
    await server.dispose();
  });

  it("unknown model: Open Settings, no retry until asked", async () => {
    const { chat, view, server, settings, ran, actionResults } = setup();
    settings.set({ model: "no-such-model" });
    await chat.ask("hi");
    const error = view.of("turn").find((t) => t.turn.role === "error")!.turn;
    assert.match(error.text, /does not know the model 'no-such-model'/);
    assert.deepEqual(
      error.actions?.map((a) => a.id),
      ["openSettings", "retry"],
    );
    actionResults.openSettings = true;
    await chat.handleMessage({ type: "action", action: "openSettings", turnId: error.id });
    assert.deepEqual(ran, ["openSettings"]);
    assert.equal(chat.history.at(-1)?.role, "error", "opening the settings does not retry");
    settings.set({ model: "test-model" });
    await server.reconfigure();
    await chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
    assert.equal(chat.history.at(-1)?.status, "done");
    await server.dispose();
  });

  it("no server: Start Server starts it and asks again", async () => {
    const { chat, view, server, fake } = setup({ down: true });
    await chat.ask("hi");
    const error = view.of("turn").find((t) => t.turn.role === "error")!.turn;
    assert.match(error.text, /No botframework server answers/);
    assert.equal(error.actions?.[0]?.id, "startServer");
    fake.options.down = false; // "started" (the fake answers again)
    await chat.handleMessage({ type: "action", action: "startServer", turnId: error.id });
    assert.equal(chat.history.at(-1)?.status, "done");
    await server.dispose();
  });

  it("a new turn takes the buttons off older errors; asking while generating is refused", async () => {
    const { chat, view, fake, server, infos } = setup();
    await server.client();
    fake.fail("POST /v1/chat/completions", { status: 500, message: "boom" });
    await chat.ask("one");
    const error = view.of("turn").find((t) => t.turn.role === "error")!.turn;
    fake.options.holdStreams = true;
    const running = chat.ask("two");
    await until("streaming", () => chat.generating && chat.history.at(-1)?.text !== "");
    const updated = view.of("update").find((u) => u.turn.id === error.id);
    assert.deepEqual(updated?.turn.actions, []);
    assert.equal(await chat.ask("three"), false);
    assert.equal(infos.length, 1);
    chat.stop();
    await running;
    await server.dispose();
  });

  it("copy / insert from code blocks; insert without an editor says so", async () => {
    const { chat, copied, inserted, infos, closeEditor, server } = setup();
    await chat.handleMessage({ type: "copy", text: "x = 1" });
    await chat.handleMessage({ type: "insert", text: "y = 2" });
    closeEditor();
    await chat.handleMessage({ type: "insert", text: "z = 3" });
    assert.deepEqual(copied, ["x = 1"]);
    assert.deepEqual(inserted, ["y = 2"]);
    assert.match(infos[0]!, /Open an editor/);
    await server.dispose();
  });

  it("ignores messages it does not know (the webview is not trusted)", async () => {
    const { chat, log, server } = setup();
    await chat.handleMessage({ type: "ask" });
    await chat.handleMessage({ type: "rm -rf" });
    await chat.handleMessage(null);
    assert.equal(isFromWebview({ type: "action", action: "retry" }), false);
    assert.equal(log.lines.filter((l) => l.startsWith("warn: unknown message")).length, 3);
    assert.equal(chat.history.length, 0);
    await server.dispose();
  });

  it("new conversation: deletes the server session, clears the view", async () => {
    const { chat, view, fake, server } = setup();
    await chat.ask("hi");
    await chat.handleMessage({ type: "new" });
    assert.equal(fake.of("DELETE", "/v1/sessions/sess-1").length, 1);
    assert.deepEqual(view.of("history").at(-1)?.turns, []);
    await chat.ask("again");
    assert.equal(fake.of("POST", "/v1/sessions").length, 2);
    const last = fake.of("POST", "/v1/chat/completions").at(-1)!;
    assert.equal((last.body?.["messages"] as unknown[]).length, 2, "system + the new question only");
    await server.dispose();
  });

  it("a reconnected server gets a new session with the history so far", async () => {
    const { chat, fake, server } = setup();
    await chat.ask("first");
    await server.reconfigure(); // a new client, as after a restart
    await chat.ask("second");
    assert.equal(fake.of("POST", "/v1/sessions").length, 2);
    const contents = (fake.of("POST", "/v1/chat/completions")[1]!.body?.["messages"] as { content: string }[]).map((m) => m.content);
    assert.deepEqual(contents.slice(1), ["first", "Hello, world.", "second"]);
    await server.dispose();
  });

  it("the conversation is stored, and shown again by a new controller", async () => {
    const first = setup();
    await first.chat.ask("remember me");
    const snapshot = first.persisted.at(-1)!;
    assert.equal(snapshot.turns.length, 2);
    await first.server.dispose();
    const second = setup({}, snapshot);
    await second.chat.handleMessage({ type: "ready" });
    const history = second.view.of("history")[0]!;
    assert.deepEqual(
      history.turns.map((t) => t.text),
      ["remember me", "Hello, world."],
    );
    await second.chat.ask("and now?");
    const contents = (second.fake.of("POST", "/v1/chat/completions")[0]!.body?.["messages"] as { content: string }[]).map((m) => m.content);
    assert.deepEqual(contents.slice(1), ["remember me", "Hello, world.", "and now?"]);
    await second.server.dispose();
  });

  it("a view that attaches mid-answer gets the answer so far, then the rest", async () => {
    const { chat, fake, server } = setup({ holdStreams: true });
    chat.detach(chat as never);
    const running = chat.ask("hi");
    await until("streaming", () => chat.history[1]?.text === "Hello, world.");
    const late = new RecordingView();
    chat.attach(late);
    await chat.handleMessage({ type: "ready" });
    const history = late.of("history")[0]!;
    assert.equal(history.generating, true);
    assert.equal(history.turns[1]!.text, "Hello, world.");
    chat.stop();
    await running;
    assert.equal(late.of("end")[0]?.status, "stopped");
    void fake;
    await server.dispose();
  });
});
