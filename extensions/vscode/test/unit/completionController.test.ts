/**
 * CompletionController over the real SDK and ServerManager with a fake server: fill-in-the-
 * middle when the model has it, the fallback when it has not (told by the 400
 * fim_not_supported or by /v1/capabilities), debounce, and cancellation on every keystroke.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  CompletionController,
  cleanCompletion,
  clipPrefix,
  clipSuffix,
  fimFromCapabilities,
} from "../../src/core/completionController.js";
import type { CancellationLike } from "../../src/core/ports.js";
import { ServerManager } from "../../src/core/serverManager.js";
import { checkUnhandledRejections, memoryLog, testSettings, until } from "../helpers/common.js";
import { FakeServer } from "../helpers/fakeServer.js";

checkUnhandledRejections();

async function setup(fakeOptions: ConstructorParameters<typeof FakeServer>[0] = {}, debounceMs = 0) {
  const fake = new FakeServer(fakeOptions);
  const settings = testSettings({ baseUrl: "http://127.0.0.1:8125", server: { autoStart: false }, completion: { debounceMs } });
  const log = memoryLog();
  const server = new ServerManager({ settings: settings.get, fetch: fake.fetch, retries: 0 });
  await server.client();
  const completion = new CompletionController({ server, settings: settings.get, log });
  return { fake, settings, server, completion, log };
}

class Token implements CancellationLike {
  isCancellationRequested = false;
  private listeners: (() => void)[] = [];
  onCancellationRequested(listener: () => void) {
    this.listeners.push(listener);
    return { dispose: () => (this.listeners = this.listeners.filter((l) => l !== listener)) };
  }
  cancel() {
    this.isCancellationRequested = true;
    for (const l of this.listeners) l();
  }
}

const input = { prefix: "def add(a, b):\n    ", suffix: "\n\nprint(add(1, 2))\n", languageId: "python" };

describe("CompletionController", () => {
  it("FIM: sends the text after the cursor as suffix, at completion priority", async () => {
    const { fake, completion, server } = await setup({ fim: true, completionText: "return a + b" });
    const text = await completion.provide(input);
    assert.equal(text, "return a + b");
    const sent = fake.of("POST", "/v1/completions");
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.body?.["prompt"], input.prefix);
    assert.equal(sent[0]!.body?.["suffix"], input.suffix);
    assert.equal(sent[0]!.body?.["priority"], "completion");
    assert.equal(sent[0]!.body?.["max_tokens"], 64);
    assert.equal(completion.fimSupport("test-model"), "yes");
    assert.equal(completion.lastMode, "fim");
    await server.dispose();
  });

  it("no FIM tokens (400 fim_not_supported): the text before the cursor continued, remembered", async () => {
    const { fake, completion, server, log } = await setup({ fim: false, completionText: "return a + b\n\ndef other():" });
    const text = await completion.provide(input);
    assert.equal(text, "return a + b", "cut at the blank line");
    const sent = fake.of("POST", "/v1/completions");
    assert.equal(sent.length, 2);
    assert.equal(sent[0]!.body?.["suffix"], input.suffix);
    assert.equal(sent[1]!.body?.["suffix"], undefined);
    assert.deepEqual(sent[1]!.body?.["stop"], ["\n\n"]);
    assert.equal(completion.fimSupport("test-model"), "no");
    assert.ok(log.lines.some((l) => /has no fill-in-the-middle/.test(l)));
    // the next keystroke goes straight to the fallback
    await completion.provide(input);
    assert.equal(fake.of("POST", "/v1/completions").length, 3);
    assert.equal(completion.lastMode, "prefix");
    assert.deepEqual(completion.counts, { provided: 2, requests: 3, fim: 0, prefix: 2, cancelled: 0, failed: 0 });
    await server.dispose();
  });

  it("/v1/capabilities saying there is no FIM skips the FIM attempt", async () => {
    const { fake, completion, server } = await setup({ fim: false, capabilitiesFim: false });
    await completion.provide(input);
    const sent = fake.of("POST", "/v1/completions");
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.body?.["suffix"], undefined);
    await server.dispose();
  });

  it("/v1/capabilities saying there is FIM: FIM", async () => {
    const { fake, completion, server } = await setup({ fim: true, capabilitiesFim: true });
    await completion.provide(input);
    assert.equal(fake.of("POST", "/v1/completions")[0]!.body?.["suffix"], input.suffix);
    assert.equal(completion.fimSupport("test-model"), "yes");
    await server.dispose();
  });

  it("debounce: keystrokes in quick succession send one request, for the last", async () => {
    const { fake, completion, server } = await setup({}, 40);
    const results = await Promise.all([
      completion.provide({ ...input, prefix: "def a" }),
      completion.provide({ ...input, prefix: "def ad" }),
      completion.provide({ ...input, prefix: "def add" }),
    ]);
    assert.deepEqual(results.slice(0, 2), [undefined, undefined]);
    assert.equal(results[2], "return a + b");
    const sent = fake.of("POST", "/v1/completions");
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.body?.["prompt"], "def add");
    assert.equal(completion.counts.cancelled, 2);
    await server.dispose();
  });

  it("a keystroke aborts the request in flight (its connection closed: the server frees the slot)", async () => {
    const { fake, completion, server } = await setup({ holdCompletions: true });
    const first = completion.provide(input);
    const request = await fake.waitFor("/v1/completions");
    const second = completion.provide({ ...input, prefix: `${input.prefix}r` });
    assert.equal(await first, undefined);
    assert.equal(request.closed, true);
    assert.equal(request.signal?.aborted, true);
    // the token of the second (VS Code cancels it on the next keystroke)
    const secondRequest = await fake.waitFor("/v1/completions", 2);
    completion.cancel();
    assert.equal(await second, undefined);
    assert.equal(secondRequest.closed, true);
    assert.equal(completion.counts.cancelled, 2);
    await server.dispose();
  });

  it("VS Code's cancellation token aborts the request", async () => {
    const { fake, completion, server } = await setup({ holdCompletions: true });
    const token = new Token();
    const pending = completion.provide(input, token);
    const request = await fake.waitFor("/v1/completions");
    token.cancel();
    assert.equal(await pending, undefined);
    assert.equal(request.closed, true);
    await server.dispose();
  });

  it("offers nothing, and starts nothing, while the server is not ready; failures are only logged", async () => {
    const { fake, completion, server, log } = await setup();
    await server.reconfigure(); // state "stopped"
    assert.equal(await completion.provide(input), undefined);
    assert.equal(fake.of("POST", "/v1/completions").length, 0);
    await server.client();
    fake.fail("POST /v1/completions", { status: 500, message: "boom" });
    assert.equal(await completion.provide(input), undefined);
    assert.equal(completion.counts.failed, 1);
    assert.ok(log.lines.some((l) => /inline completion failed/.test(l)));
    await server.dispose();
  });

  it("disabled in the settings: nothing", async () => {
    const { fake, completion, server, settings } = await setup();
    settings.set({ completion: { enabled: false } });
    assert.equal(await completion.provide(input), undefined);
    assert.equal(fake.of("POST", "/v1/completions").length, 0);
    await until("idle", () => server.state.kind === "ready");
    await server.dispose();
  });
});

describe("completion text", () => {
  it("cleanCompletion: blank line cut (prefix mode), suffix overlap removed, empty is none", () => {
    assert.equal(cleanCompletion("return a + b\n\nmore", "", "prefix"), "return a + b");
    assert.equal(cleanCompletion("return a + b\n\nmore", "", "fim"), "return a + b\n\nmore");
    assert.equal(cleanCompletion("foo(a, b))", ")\n", "fim"), "foo(a, b)");
    assert.equal(cleanCompletion("x = [1, 2]\n", "]\nprint(x)", "fim"), "x = [1, 2");
    assert.equal(cleanCompletion("x = 1", "1 + y", "fim"), "x = 1", "a short overlap that is not punctuation stays");
    assert.equal(cleanCompletion("total = add(a, b)", "add(a, b)\n", "fim"), "total =");
    assert.equal(cleanCompletion("   \n  ", "", "fim"), undefined);
    assert.equal(cleanCompletion(" return a + b", "", "prefix", "def add(a, b):\n    "), "return a + b", "after indentation");
    assert.equal(cleanCompletion(" b", "", "fim", "x = a +"), " b");
    assert.equal(cleanCompletion(" b", "", "fim", "x = a + "), "b", "one space at the cursor is enough");
    assert.equal(cleanCompletion(Array.from({ length: 30 }, (_, i) => `l${i}`).join("\n"), "", "fim")?.split("\n").length, 12);
  });

  it("clips the prefix and suffix at line boundaries", () => {
    const long = Array.from({ length: 500 }, (_, i) => `line ${i}`).join("\n");
    const p = clipPrefix(long, 100);
    assert.ok(p.length <= 100);
    assert.ok(p.startsWith("line "));
    assert.ok(long.endsWith(p));
    const s = clipSuffix(long, 100);
    assert.ok(s.length <= 100);
    assert.ok(s.endsWith("\n"));
    assert.ok(long.startsWith(s));
  });

  it("fimFromCapabilities reads what a server may say, else unknown", () => {
    assert.equal(fimFromCapabilities({ model: { id: "m", tool_format: "generic" } }), "unknown");
    assert.equal(fimFromCapabilities({ model: { id: "m", fim: true } }), "yes");
    assert.equal(fimFromCapabilities({ model: { template_caps: { supports_fim: false } } }), "no");
    assert.equal(fimFromCapabilities(undefined), "unknown");
    assert.equal(fimFromCapabilities({ model: null }), "unknown");
  });
});
