/**
 * ServerManager without a real server: a fake fetch, and a stub child process that "listens"
 * by bringing the fake up. One test runs the SDK's real ServerProcess on small node scripts
 * (a missing executable, one that exits at once).
 */

import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { AuthenticationError, BusyError, ModelNotFoundError, type StartOptions } from "@botframework/sdk";

import { ServerCrashedError, ServerMissingError, ServerStartError } from "../../src/core/errors.js";
import { describeProblem } from "../../src/core/errorPresenter.js";
import { ServerManager, startServerProcess, type ExitInfo, type ManagedProcess, type ServerStateKind } from "../../src/core/serverManager.js";
import { checkUnhandledRejections, memoryLog, testSettings } from "../helpers/common.js";
import { FakeServer } from "../helpers/fakeServer.js";

checkUnhandledRejections();

class StubProcess implements ManagedProcess {
  readonly pid: number;
  exitInfo: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  outputText = "";
  stopped = false;
  private resolveExit!: (info: ExitInfo) => void;

  constructor(
    readonly options: StartOptions,
    private readonly fake: FakeServer,
    private readonly behaviour: { exitWith?: ExitInfo; output?: string },
    pid: number,
  ) {
    this.pid = pid;
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    this.outputText = behaviour.output ?? "";
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  output(): string {
    return this.outputText;
  }

  async waitReady(): Promise<void> {
    await new Promise((r) => setTimeout(r, 5));
    if (this.behaviour.exitWith) {
      this.exit(this.behaviour.exitWith);
      throw new Error("exited before it answered");
    }
    this.fake.options.down = false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.exit({ code: null, signal: "SIGTERM" });
  }

  /** The process dies (crash, kill). */
  exit(info: ExitInfo): void {
    if (this.exitInfo !== undefined) return;
    this.exitInfo = info;
    this.fake.options.down = true;
    this.fake.breakStreams();
    this.resolveExit(info);
  }
}

function setup(options: { down?: boolean; behaviour?: { exitWith?: ExitInfo; output?: string }; settings?: Parameters<typeof testSettings>[0] } = {}) {
  const fake = new FakeServer({ down: options.down ?? false });
  const settings = testSettings({ baseUrl: "http://127.0.0.1:8123", ...options.settings });
  const started: StubProcess[] = [];
  const states: ServerStateKind[] = [];
  const log = memoryLog();
  const manager = new ServerManager({
    settings: settings.get,
    fetch: fake.fetch,
    log,
    startProcess: (opts) => {
      const proc = new StubProcess(opts, fake, options.behaviour ?? {}, 1000 + started.length);
      started.push(proc);
      return proc;
    },
  });
  manager.onDidChangeState((s) => states.push(s.kind));
  return { fake, settings, started, states, manager, log };
}

describe("ServerManager", () => {
  it("connects to a server that already runs, starting nothing", async () => {
    const { manager, started, states, fake } = setup();
    const client = await manager.client();
    assert.equal(client.model, "test-model");
    assert.equal(started.length, 0);
    assert.equal(manager.state.kind, "ready");
    assert.equal(manager.state.owned, false);
    assert.equal(manager.state.model, "test-model");
    assert.deepEqual(states, ["connecting", "connecting", "ready"]);
    assert.equal(fake.of("GET", "/health").length >= 1, true);
    assert.equal(await manager.client(), client, "the client is kept");
    await manager.dispose();
  });

  it("concurrent callers share one connection attempt", async () => {
    const { manager, started, fake } = setup({ down: true });
    const [a, b, c] = await Promise.all([manager.client(), manager.client(), manager.client()]);
    assert.equal(a, b);
    assert.equal(b, c);
    assert.equal(started.length, 1);
    assert.equal(fake.of("GET", "/v1/models").length, 1);
    await manager.dispose();
  });

  it("starts `botframework serve` when nothing answers, with port, model and extra args", async () => {
    const { manager, started, states } = setup({
      down: true,
      settings: { model: "test-model", server: { executable: "/opt/bf/botframework", args: ["--parallel", "2"] } },
    });
    const client = await manager.client();
    assert.equal(started.length, 1);
    assert.equal(started[0]!.options.command, "/opt/bf/botframework");
    assert.deepEqual(started[0]!.options.args, ["serve", "--port", "8123", "--model", "test-model", "--parallel", "2"]);
    assert.equal(client.model, "test-model");
    assert.deepEqual(states, ["connecting", "starting", "connecting", "ready"]);
    assert.equal(manager.state.owned, true);
    assert.equal(manager.state.pid, 1000);
    await manager.dispose();
    assert.equal(started[0]!.stopped, true, "dispose stops the child");
    assert.equal(manager.state.kind, "stopped");
  });

  it("starts on the port setting when it is set", async () => {
    const { manager, started } = setup({ down: true, settings: { server: { port: 9999 } } });
    await manager.client();
    assert.deepEqual(started[0]!.options.args.slice(0, 3), ["serve", "--port", "9999"]);
    assert.equal(manager.url, "http://127.0.0.1:9999");
    await manager.dispose();
  });

  it("autoStart off: a clear 'no server' error, and Start Server starts one all the same", async () => {
    const { manager, started } = setup({ down: true, settings: { server: { autoStart: false } } });
    await assert.rejects(manager.client(), (err: unknown) => err instanceof ServerMissingError && /starting one is turned off/.test(err.message));
    assert.equal(started.length, 0);
    assert.equal(manager.state.kind, "error");
    const problem = describeProblem(manager.state.error, { url: manager.url, model: "" });
    assert.equal(problem?.kind, "serverMissing");
    assert.deepEqual(problem?.actions, ["startServer", "openSettings", "retry"]);
    await manager.start();
    assert.equal(started.length, 1);
    assert.equal(manager.state.kind, "ready");
    await manager.dispose();
  });

  it("a URL on another machine is never started locally", async () => {
    const { manager, started } = setup({ down: true, settings: { baseUrl: "http://10.1.2.3:8000" } });
    await assert.rejects(manager.client(), ServerMissingError);
    assert.equal(started.length, 0);
    await manager.dispose();
  });

  it("a start that fails: the server's output in the error, the model named when it is the cause", async () => {
    const { manager } = setup({
      down: true,
      settings: { model: "nope" },
      behaviour: { exitWith: { code: 2, signal: null }, output: "botframework: error: model file not found: nope\n" },
    });
    const err = await manager.client().then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ServerStartError);
    assert.equal(err.exitCode, 2);
    assert.match(err.output, /model file not found/);
    const problem = describeProblem(err, { url: manager.url, model: "nope" });
    assert.equal(problem?.kind, "modelNotFound");
    assert.ok(problem?.actions.includes("openSettings"));
    await manager.dispose();
  });

  it("a missing executable is a ServerMissingError naming it", async () => {
    const { manager } = setup({
      down: true,
      behaviour: { exitWith: { code: null, signal: null, error: Object.assign(new Error("spawn x ENOENT"), { code: "ENOENT" }) } },
      settings: { server: { executable: "/nowhere/botframework" } },
    });
    await assert.rejects(manager.client(), (err: unknown) => err instanceof ServerMissingError && err.executable === "/nowhere/botframework");
    const problem = describeProblem(manager.state.error, { url: manager.url, model: "" });
    assert.equal(problem?.kind, "executableMissing");
    await manager.dispose();
  });

  it("the child dying mid-request is a ServerCrashedError; restart() starts a new one", async () => {
    const { manager, started, fake } = setup({ down: true });
    fake.options.holdStreams = true;
    await manager.client();
    const running = manager.use(async (client) => {
      const stream = client.streamChat("hi");
      for await (const _ of stream) {
        // the first pieces arrive, then the process dies
        if (stream.text.length > 3) started[0]!.exit({ code: null, signal: "SIGKILL" });
      }
    });
    const err = await running.then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ServerCrashedError, `got ${String(err)}`);
    assert.equal(err.signal, "SIGKILL");
    assert.equal(manager.state.kind, "error");
    const problem = describeProblem(err, { url: manager.url, model: "" });
    assert.equal(problem?.kind, "crashed");
    assert.deepEqual(problem?.actions, ["restartServer", "showOutput"]);
    fake.options.holdStreams = false;
    await manager.restart();
    assert.equal(started.length, 2);
    assert.equal(manager.state.kind, "ready");
    assert.equal(manager.state.pid, 1001);
    await manager.dispose();
  });

  it("a child that exits while idle puts the state in error; the next call starts it again", async () => {
    const { manager, started } = setup({ down: true });
    await manager.client();
    started[0]!.exit({ code: 1, signal: null });
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(manager.state.kind, "error");
    assert.match(manager.state.detail, /stopped \(status 1\)/);
    await manager.client();
    assert.equal(started.length, 2);
    await manager.dispose();
  });

  it("use() counts requests: busy while any runs, ready after", async () => {
    const { manager, states } = setup();
    await manager.client();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = manager.use(() => gate);
    const b = manager.use(() => gate);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(manager.state.kind, "busy");
    assert.equal(manager.state.inFlight, 2);
    release();
    await Promise.all([a, b]);
    assert.equal(manager.state.kind, "ready");
    assert.ok(states.includes("busy"));
    await manager.dispose();
  });

  it("a wrong API key and an unknown model put the state in error", async () => {
    const { manager, fake, settings } = setup();
    fake.options.apiKey = "right";
    settings.set({ apiKey: "wrong" });
    await assert.rejects(manager.client(), AuthenticationError);
    assert.equal(manager.state.kind, "error");
    settings.set({ apiKey: "right", model: "other-model" });
    await manager.reconfigure();
    await assert.rejects(manager.client(), ModelNotFoundError);
    settings.set({ model: "test-model" });
    await manager.reconfigure();
    await manager.client();
    assert.equal(manager.state.kind, "ready");
    await manager.dispose();
  });

  it("a 503 passes through as the BusyError with its Retry-After", async () => {
    const { manager, fake } = setup();
    await manager.client();
    fake.fail("POST /v1/chat/completions", { status: 503, type: "server_busy", code: "server_busy", retryAfter: "1" }, 5);
    const err = await manager.use((c) => c.chat("hi")).then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof BusyError);
    assert.equal(err.retryAfterMs, 1000);
    assert.equal(describeProblem(err, { url: "u", model: "" })?.kind, "busy");
    await manager.dispose();
  });

  it("reconfigure() stops a child started with other settings", async () => {
    const { manager, started, settings } = setup({ down: true });
    await manager.client();
    settings.set({ server: { args: ["--parallel", "3"] } });
    await manager.reconfigure();
    assert.equal(started[0]!.stopped, true);
    await manager.client();
    assert.equal(started.length, 2);
    assert.deepEqual(started[1]!.options.args.slice(-2), ["--parallel", "3"]);
    await manager.dispose();
  });

  it("with the SDK's real ServerProcess: a missing executable, and one that exits at once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bf-ext-"));
    const script = join(dir, "botframework");
    writeFileSync(script, `#!/usr/bin/env node\nconsole.error("botframework: error: model file not found: nope");\nprocess.exit(2);\n`);
    chmodSync(script, 0o755);
    const settings = testSettings({ baseUrl: "http://127.0.0.1:9", server: { executable: join(dir, "missing"), startTimeoutMs: 20_000 } });
    const manager = new ServerManager({ settings: settings.get, startProcess: startServerProcess });
    await assert.rejects(manager.client(), (err: unknown) => err instanceof ServerMissingError && err.executable === join(dir, "missing"));
    settings.set({ server: { executable: script }, model: "nope" });
    const err = await manager.client().then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ServerStartError, String(err));
    assert.equal(err.exitCode, 2);
    assert.match(err.output, /model file not found: nope/);
    assert.equal(describeProblem(err, { url: manager.url, model: "nope" })?.kind, "modelNotFound");
    await manager.dispose();
  });
});
