/**
 * Embed-and-serve against the real `botframework serve`: nothing runs at the base URL, so the
 * extension's ServerManager starts the server as its child. Then: the child killed (SIGKILL)
 * mid-answer -> the crash message with Restart Server -> restarted, the question answered;
 * dispose stops the child; a missing executable and a start that fails (unknown model) are
 * error turns whose Retry works once the settings are fixed.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { checkUnhandledRejections, until } from "../helpers/common.js";
import { MODEL, alive, freePort, serverExecutable, waitIdle, waitStats } from "../helpers/realServer.js";
import { stack } from "../helpers/stack.js";

checkUnhandledRejections();

describe("embed-and-serve with a real server", () => {
  it("starts the server as a child when none runs; a SIGKILL mid-stream shows the crash, Restart Server recovers", async () => {
    const port = await freePort();
    const s = stack({
      settings: {
        baseUrl: `http://127.0.0.1:${port}`,
        model: MODEL,
        server: { autoStart: true, executable: serverExecutable(), args: ["--parallel", "2"], startTimeoutMs: 180_000 },
      },
      chatOptions: { maxTokens: 4000, ignoreEos: true },
    });
    const states: string[] = [];
    s.server.onDidChangeState((st) => states.push(st.kind));
    try {
      await s.server.client();
      assert.equal(s.server.state.kind, "ready");
      assert.equal(s.server.state.owned, true);
      assert.equal(s.server.state.model, MODEL);
      const pid = s.server.state.pid!;
      assert.ok(pid > 0 && alive(pid));
      assert.deepEqual(states.slice(0, 3), ["connecting", "starting", "connecting"]);
      assert.ok(s.log.lines.some((l) => l.startsWith("out: ")), "the server's output goes to the log");

      // mid-stream, the server process is killed
      const asked = s.chat.ask("Tell a very long story about a comet.");
      await until("a few pieces", () => s.view.of("delta").length >= 5);
      assert.equal(s.server.state.kind, "busy");
      process.kill(pid, "SIGKILL");
      await asked;
      const error = s.lastError()!;
      assert.match(error.text, /stopped \(signal SIGKILL\) while answering/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["restartServer", "showOutput", "retry"],
      );
      assert.equal(s.chat.history.find((t) => t.role === "assistant")?.status, "failed");
      assert.equal(s.chat.generating, false, "the UI is usable");
      assert.equal(s.server.state.kind, "error");

      // Restart Server: a new child, and the question is asked again
      s.chatHost.chatOptions = { maxTokens: 12 };
      await s.chat.handleMessage({ type: "action", action: "restartServer", turnId: error.id });
      assert.deepEqual(s.handlerCalls, ["restartServer"]);
      assert.equal(s.server.state.kind, "ready");
      const newPid = s.server.state.pid!;
      assert.notEqual(newPid, pid);
      assert.ok(alive(newPid));
      assert.equal(s.chat.history.at(-1)?.role, "assistant");
      s.assertAnswered();
      assert.equal(s.lastError(), undefined);
      await waitIdle(s.server.url);

      // deactivate: the child is stopped
      await s.dispose();
      assert.equal(alive(newPid), false, "the child was stopped");
      assert.equal(s.server.state.kind, "stopped");
    } finally {
      await s.dispose();
    }
  });

  it("the executable is missing: an error turn; the settings fixed, Retry starts the server and answers", async () => {
    const port = await freePort();
    const s = stack({
      settings: {
        baseUrl: `http://127.0.0.1:${port}`,
        model: MODEL,
        chat: { maxTokens: 8 },
        server: { autoStart: true, executable: "/nonexistent/bin/botframework", startTimeoutMs: 180_000 },
      },
    });
    try {
      await s.chat.ask("Hi");
      const error = s.lastError()!;
      assert.match(error.text, /executable was not found: \/nonexistent\/bin\/botframework/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["openSettings", "retry"],
      );
      assert.equal(s.server.state.kind, "error");
      s.settings.set({ server: { executable: serverExecutable() } });
      await s.server.reconfigure();
      await s.chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
      s.assertAnswered();
      assert.equal(s.server.state.owned, true);
    } finally {
      await s.dispose();
    }
  });

  it("the server fails to start (unknown model): the model named, Show Output / Open Settings; fixed, Retry works", async () => {
    const port = await freePort();
    const s = stack({
      settings: {
        baseUrl: `http://127.0.0.1:${port}`,
        model: "no-such-model",
        chat: { maxTokens: 8 },
        server: { autoStart: true, executable: serverExecutable(), startTimeoutMs: 180_000 },
      },
    });
    try {
      await s.chat.ask("Hi");
      const error = s.lastError()!;
      assert.match(error.text, /cannot find the model 'no-such-model'/);
      assert.deepEqual(
        error.actions?.map((a) => a.id),
        ["openSettings", "showOutput", "retry"],
      );
      assert.equal(s.server.process, undefined, "no child left running");
      s.settings.set({ model: MODEL });
      await s.server.reconfigure();
      await s.chat.handleMessage({ type: "action", action: "retry", turnId: error.id });
      s.assertAnswered();
    } finally {
      await s.dispose();
    }
  });

  it("autoStart off and nothing running: Start Server from the error turn starts it and answers", async () => {
    const port = await freePort();
    const s = stack({
      settings: {
        baseUrl: `http://127.0.0.1:${port}`,
        model: MODEL,
        chat: { maxTokens: 8 },
        server: { autoStart: false, executable: serverExecutable(), startTimeoutMs: 180_000 },
      },
    });
    try {
      await s.chat.ask("Hi");
      const error = s.lastError()!;
      assert.match(error.text, /No botframework server answers .* \(starting one is turned off\)/);
      assert.equal(error.actions?.[0]?.id, "startServer");
      await s.chat.handleMessage({ type: "action", action: "startServer", turnId: error.id });
      s.assertAnswered();
      assert.equal(s.server.state.owned, true);
      await waitStats(s.server.url, (st) => st.num_busy_slots === 0, "idle");
    } finally {
      await s.dispose();
    }
  });
});
