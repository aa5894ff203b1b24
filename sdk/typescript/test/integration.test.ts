/**
 * The SDK against real botframework servers: one shared server (two slots) for most tests,
 * a dedicated one with an API key, one with a one-request queue (busy), and one that the
 * client starts itself (autoStart). The server executable is $BOTFRAMEWORK_BIN, else
 * `botframework` on PATH; without one these tests fail, they are not skipped.
 *
 * Nothing here asserts a duration: waits are bounded by counts of polls.
 */

import assert from "node:assert/strict";
import { basename, relative } from "node:path";
import { after, before, describe, it } from "node:test";

import {
  AbortError,
  AuthenticationError,
  BadRequestError,
  BusyError,
  Client,
  ContextLengthError,
  ModelNotFoundError,
  ServerUnavailableError,
  type ChatDelta,
} from "../src/index.js";
import { watchUnhandled } from "./helpers/fake.js";
import { validate } from "./helpers/schema.js";
import {
  MODEL,
  cachedGGUF,
  freePort,
  serverExecutable,
  sharedServer,
  startServer,
  stopSharedServer,
  waitIdle,
  waitStats,
  type TestServer,
} from "./helpers/server.js";

const unhandled = watchUnhandled();

after(async () => {
  await stopSharedServer();
  assert.deepEqual(unhandled.rejections, [], "no unhandled promise rejections");
});

/** A long answer: it is still being generated when the test stops it. */
const LONG = { maxTokens: 2000, ignoreEos: true } as const;

describe("against the shared server", () => {
  let server: TestServer;
  let llm: Client;

  before(async () => {
    server = await sharedServer();
    llm = await Client.connect({ model: MODEL, baseURL: server.url });
  });

  it("connects: health, models, and the model's id", async () => {
    assert.equal(llm.model, MODEL);
    const health = await llm.health();
    assert.equal(health.status, "ok");
    const models = await llm.models();
    const card = models.find((m) => m.id === MODEL);
    assert.ok(card, `GET /v1/models lists ${MODEL}`);
    assert.equal(card.meta?.state, "loaded");
  });

  it("chat: text, finish reason, usage, id", async () => {
    const res = await llm.chat("Say hello.", { maxTokens: 16, seed: 1 });
    assert.equal(typeof res.text, "string");
    assert.ok(res.text.length > 0);
    assert.ok(["stop", "length"].includes(res.finishReason));
    assert.ok(res.usage.promptTokens > 0);
    assert.ok(res.usage.completionTokens > 0 && res.usage.completionTokens <= 16);
    assert.equal(res.usage.totalTokens, res.usage.promptTokens + res.usage.completionTokens);
    assert.match(res.id, /^chatcmpl-/);
    assert.equal(res.model, MODEL);
    assert.deepEqual(res.toolCalls, []);
    assert.deepEqual(res.message, { role: "assistant", content: res.text });
  });

  it("speculative: drafts are counted in usage", async () => {
    const code =
      "def load_config(path):\n    with open(path) as f:\n        data = f.read()\n    config = {}\n" +
      '    for line in data.splitlines():\n        key, value = line.split("=", 1)\n' +
      "        config[key.strip()] = value.strip()\n    return config\n";
    const prompt = "Repeat this code exactly:\n```python\n" + code + "```";
    const drafted = await llm.chat(prompt, { maxTokens: 48, temperature: 0, speculative: true });
    const plain = await llm.chat(prompt, { maxTokens: 48, temperature: 0, speculative: false });
    assert.ok(drafted.usage.acceptedPredictionTokens > 0, JSON.stringify(drafted.usage));
    assert.equal(plain.usage.acceptedPredictionTokens + plain.usage.rejectedPredictionTokens, 0);
  });

  it("chat with messages and a system prompt", async () => {
    const res = await llm.chat(
      [
        { role: "user", content: "My name is Ann." },
        { role: "assistant", content: "Hello Ann." },
        { role: "user", content: "What is my name?" },
      ],
      { system: "Answer in one short sentence.", maxTokens: 16 },
    );
    assert.ok(res.text.length > 0);
  });

  it("streamChat: deltas, id, finish reason and usage", async () => {
    const stream = llm.streamChat("Count from one to five.", { maxTokens: 24 });
    const deltas: ChatDelta[] = [];
    for await (const d of stream) deltas.push(d);
    const text = deltas.map((d) => d.text).join("");
    assert.ok(text.length > 0);
    assert.equal(text, stream.text);
    assert.match(stream.id ?? "", /^chatcmpl-/);
    assert.ok(["stop", "length"].includes(stream.finishReason ?? ""));
    assert.equal(deltas.filter((d) => d.finishReason !== undefined).length, 1);
    const last = deltas[deltas.length - 1];
    assert.ok(last?.usage, "the last delta carries the usage");
    assert.ok(last.usage.completionTokens > 0 && last.usage.completionTokens <= 24);
    const result = await stream.result();
    assert.equal(result.text, text);
    assert.equal(result.id, stream.id);
  });

  it("aborting a stream with an AbortSignal throws AbortError and frees the slot", async () => {
    const controller = new AbortController();
    const stream = llm.streamChat("Tell a long story about a dragon.", { ...LONG, signal: controller.signal });
    let n = 0;
    await assert.rejects(
      (async () => {
        for await (const d of stream) {
          if (d.text) n++;
          if (n === 3) controller.abort();
        }
      })(),
      (err: unknown) => err instanceof AbortError && err.name === "AbortError",
    );
    assert.equal(n, 3);
    const stats = await waitIdle(llm);
    assert.equal(stats.num_busy_slots, 0);
  });

  it("breaking out of a stream closes it and frees the slot", async () => {
    const stream = llm.streamChat("Tell a long story about a castle.", LONG);
    let n = 0;
    for await (const d of stream) {
      if (d.text) n++;
      if (n === 3) break;
    }
    assert.equal(n, 3);
    assert.equal(stream.done, false);
    await waitIdle(llm);
  });

  it("cancel(id) stops a running stream by its response id", async () => {
    const stream = llm.streamChat("Tell a long story about the sea.", LONG);
    const id = await stream.readId();
    assert.match(id ?? "", /^chatcmpl-/);
    assert.equal(await llm.cancel(id as string), 1);
    const result = await stream.result(); // the server ends the stream early
    assert.ok(result.usage.completionTokens < LONG.maxTokens, `stopped early (${result.usage.completionTokens} tokens)`);
    await waitIdle(llm);
    assert.equal(await llm.cancel(id as string), 0, "nothing left to cancel");
  });

  it("an AbortSignal also stops a whole (non-streamed) chat", async () => {
    const controller = new AbortController();
    const pending = llm.chat("Tell a long story about a forest.", { ...LONG, signal: controller.signal });
    await waitStats(llm, (s) => (s.num_running ?? 0) > 0);
    controller.abort();
    await assert.rejects(pending, AbortError);
    await waitIdle(llm);
  });

  it("chatStructured: the answer is valid for the schema", async () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string" },
        age: { type: "integer", minimum: 0, maximum: 150 },
        color: { type: "string", enum: ["red", "green", "blue"] },
        tags: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 3 },
        address: {
          type: "object",
          properties: { city: { type: "string" }, zip: { type: "string" } },
          required: ["city", "zip"],
          additionalProperties: false,
        },
      },
      required: ["name", "age", "color", "tags", "address"],
      additionalProperties: false,
    };
    interface Person {
      name: string;
      age: number;
      color: "red" | "green" | "blue";
      tags: string[];
      address: { city: string; zip: string };
    }
    const person = await llm.chatStructured<Person>("Describe a fictional person as JSON.", schema, {
      name: "person",
      maxTokens: 300,
      seed: 7,
    });
    assert.deepEqual(validate(person, schema), []);
    assert.equal(typeof person.address.city, "string");
  });

  it("tools: tool_choice required forces a call, with parsed arguments", async () => {
    const weather = {
      name: "get_weather",
      description: "The weather in a city",
      parameters: {
        type: "object",
        properties: { city: { type: "string" } },
        required: ["city"],
        additionalProperties: false,
      },
    };
    const res = await llm.chat("What is the weather in Paris?", { tools: [weather], toolChoice: "required", maxTokens: 100 });
    assert.equal(res.finishReason, "tool_calls");
    assert.ok(res.toolCalls.length >= 1);
    const call = res.toolCalls[0];
    assert.ok(call);
    assert.equal(call.name, "get_weather");
    assert.ok(call.id.length > 0);
    assert.deepEqual(validate(call.parsedArguments, weather.parameters), []);
    assert.deepEqual(JSON.parse(call.arguments), call.parsedArguments);
    assert.equal(res.message.tool_calls?.[0]?.id, call.id);

    // the result goes back as a tool turn, and the model answers
    const followUp = await llm.chat(
      [
        { role: "user", content: "What is the weather in Paris?" },
        res.message,
        { role: "tool", tool_call_id: call.id, content: '{"temperature_c": 21, "sky": "sunny"}' },
      ],
      { tools: [weather], toolChoice: "none", maxTokens: 30 },
    );
    assert.deepEqual(followUp.toolCalls, []);
    assert.ok(followUp.text.length > 0);
  });

  it("tools: a named tool choice, streamed, assembles the call", async () => {
    const tools = [
      { type: "function" as const, function: { name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
      { name: "noop", parameters: { type: "object", properties: {} } },
    ];
    const stream = llm.streamChat("Add 2 and 3.", { tools, toolChoice: { name: "add" }, maxTokens: 100 });
    let pieces = 0;
    for await (const d of stream) pieces += d.toolCalls?.length ?? 0;
    assert.ok(pieces > 1, "the arguments arrive in pieces");
    const result = stream.snapshot();
    assert.equal(result.finishReason, "tool_calls");
    assert.equal(result.toolCalls[0]?.name, "add");
    const args = result.toolCalls[0]?.parsedArguments as { a: unknown; b: unknown };
    assert.equal(typeof args.a, "number");
    assert.equal(typeof args.b, "number");
  });

  it("embed: one unit vector per text", async () => {
    const vectors = await llm.embed(["The cat sat on the mat.", "Quantum chromodynamics"]);
    assert.equal(vectors.length, 2);
    const [a, b] = vectors as [number[], number[]];
    assert.ok(a.length > 0);
    assert.equal(a.length, b.length);
    assert.ok(a.every(Number.isFinite));
    const norm = Math.sqrt(a.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-3, `unit length (${norm})`);
    assert.notDeepEqual(a, b);
    assert.equal((await llm.embed("one text")).length, 1);
  });

  it("complete: a raw prompt continued, whole and streamed", async () => {
    const res = await llm.complete("The capital of France is", { maxTokens: 8, temperature: 0 });
    assert.ok(res.text.length > 0);
    assert.match(res.id, /^cmpl-/);
    assert.ok(res.usage.completionTokens > 0);
    const stream = llm.streamComplete("def add(a, b):\n    return", { maxTokens: 8 });
    let text = "";
    for await (const d of stream) text += d.text;
    assert.ok(text.length > 0);
    assert.equal(text, (await stream.result()).text);
  });

  it("complete with a suffix (fill-in-the-middle) reaches the server", async () => {
    try {
      const res = await llm.complete("def add(a, b):\n    return ", { suffix: "\n\nprint(add(1, 2))\n", maxTokens: 8 });
      assert.equal(typeof res.text, "string");
    } catch (err) {
      // a model without fill-in-the-middle tokens (SmolLM2) says so, naming the field
      assert.ok(err instanceof BadRequestError, String(err));
      assert.equal(err.param, "suffix");
      assert.match(err.message, /fill-in-the-middle/);
    }
  });

  it("sessions: the second turn reuses the first turn's cache; close frees it", async () => {
    const session = await llm.session({ system: "Answer briefly." });
    assert.match(session.id, /^sess-/);
    const first = await session.chat("My name is Ann. Remember it.", { maxTokens: 16 });
    const second = await session.chat("What is my name?", { maxTokens: 16 });
    assert.equal(session.messages.length, 5); // system, user, assistant, user, assistant
    assert.ok(
      second.usage.cachedTokens >= first.usage.promptTokens,
      `cached ${second.usage.cachedTokens} of the first turn's ${first.usage.promptTokens} prompt tokens`,
    );
    const info = await session.info();
    assert.equal(info.id, session.id);
    assert.ok(info.num_cached_tokens > 0);

    // a streamed turn joins the history once read to its end
    const stream = session.streamChat("And my name again?", { maxTokens: 12 });
    for await (const _ of stream) {
      // read it all
    }
    assert.equal(session.messages.length, 7);
    assert.equal(session.messages[6]?.content, stream.text);
    assert.ok((stream.usage?.cachedTokens ?? 0) >= second.usage.promptTokens);

    assert.equal(await session.close(), true);
    assert.equal(await session.close(), false, "nothing left to free");
  });

  it("errors: an unknown model is a ModelNotFoundError", async () => {
    await assert.rejects(Client.connect({ model: "no-such-model-xyz", baseURL: server.url }), (err: unknown) => {
      assert.ok(err instanceof ModelNotFoundError, String(err));
      assert.equal(err.status, 404);
      assert.equal(err.code, "model_not_found");
      return true;
    });
    await assert.rejects(llm.chat("hi", { model: "no-such-model-xyz" }), ModelNotFoundError);
  });

  it("errors: a prompt longer than the context is a ContextLengthError", async () => {
    const long = "lorem ipsum dolor sit amet ".repeat(3000);
    await assert.rejects(llm.chat(long, { maxTokens: 4 }), (err: unknown) => {
      assert.ok(err instanceof ContextLengthError, String(err));
      assert.ok(err instanceof BadRequestError);
      assert.equal(err.status, 400);
      return true;
    });
  });

  it("errors: an invalid request is a BadRequestError naming the field", async () => {
    await assert.rejects(llm.chat("hi", { temperature: 5 }), (err: unknown) => {
      assert.ok(err instanceof BadRequestError, String(err));
      assert.equal(err.param, "temperature");
      return true;
    });
  });
});

describe("without a server", () => {
  it("connect to a port where nothing listens is a ServerUnavailableError", async () => {
    const port = await freePort();
    await assert.rejects(Client.connect({ model: MODEL, baseURL: `http://127.0.0.1:${port}`, retries: 1 }), (err: unknown) => {
      assert.ok(err instanceof ServerUnavailableError, String(err));
      assert.match(err.message, /no botframework server answers/);
      return true;
    });
  });

  it("autoStart starts `botframework serve` for a relative .gguf path, and close() stops it", async () => {
    const gguf = cachedGGUF();
    const model = relative(process.cwd(), gguf); // the client makes it absolute
    const port = await freePort();
    const baseURL = `http://127.0.0.1:${port}`;
    let output = "";
    const llm = await Client.connect({
      model,
      baseURL,
      autoStart: true,
      serverCommand: serverExecutable(),
      serverArgs: ["--parallel", "1"],
      onServerOutput: (text) => {
        output += text;
      },
    });
    try {
      const proc = llm.serverProcess;
      assert.ok(proc?.running, "the client started a server");
      assert.ok(proc.child.spawnargs.includes(gguf), `the server was given the absolute path: ${proc.child.spawnargs.join(" ")}`);
      assert.equal(llm.model, basename(gguf, ".gguf"), "the id the load endpoint answered");
      const res = await llm.chat("Hi", { maxTokens: 4 });
      assert.ok(res.text.length > 0);
      assert.equal(res.model, llm.model);
    } finally {
      await llm.close();
    }
    assert.equal(llm.serverProcess, undefined);
    assert.ok(output.length > 0, "the server's output reached onServerOutput");
    const after = new Client({ baseURL, retries: 0 });
    await assert.rejects(after.health(), ServerUnavailableError);
  });

  it("autoStart with a missing executable says so", async () => {
    const port = await freePort();
    await assert.rejects(
      Client.connect({ baseURL: `http://127.0.0.1:${port}`, autoStart: true, serverCommand: "/nonexistent/botframework", retries: 0 }),
      (err: unknown) => err instanceof ServerUnavailableError && /not found/.test(err.message),
    );
  });
});

describe("a server with an API key", () => {
  let server: TestServer;

  before(async () => {
    server = await startServer(["--api-key", "sdk-test-key", "--parallel", "1"]);
  });

  after(async () => {
    await server?.stop();
  });

  it("a wrong key is an AuthenticationError", async () => {
    await assert.rejects(Client.connect({ model: MODEL, baseURL: server.url, apiKey: "wrong" }), (err: unknown) => {
      assert.ok(err instanceof AuthenticationError, String(err));
      assert.equal(err.status, 401);
      return true;
    });
  });

  it("no key is an AuthenticationError", async () => {
    const saved = process.env["BOTFRAMEWORK_API_KEY"];
    delete process.env["BOTFRAMEWORK_API_KEY"];
    try {
      await assert.rejects(new Client({ model: MODEL, baseURL: server.url }).chat("hi"), AuthenticationError);
    } finally {
      if (saved !== undefined) process.env["BOTFRAMEWORK_API_KEY"] = saved;
    }
  });

  it("the right key works, for whole and streamed answers", async () => {
    const llm = await Client.connect({ model: MODEL, baseURL: server.url, apiKey: "sdk-test-key" });
    assert.ok((await llm.chat("Hi", { maxTokens: 4 })).text.length > 0);
    assert.ok((await llm.streamChat("Hi", { maxTokens: 4 }).result()).text.length > 0);
  });
});

describe("a busy server (one slot, one waiting request)", () => {
  let server: TestServer;

  before(async () => {
    server = await startServer(["--parallel", "1", "--max-queue", "1"]);
  });

  after(async () => {
    await server?.stop();
  });

  it("a request beyond the queue is a BusyError with retryAfterMs", async () => {
    const llm = await Client.connect({ model: MODEL, baseURL: server.url, retries: 0 });
    const controller = new AbortController();
    const running = llm.streamChat("Tell a long story.", { ...LONG, signal: controller.signal });
    await running.readId(); // it has the slot
    const waiting = llm.streamChat("Tell another long story.", { ...LONG, signal: controller.signal });
    await waitStats(llm, (s) => (s.num_running ?? 0) >= 1 && (s.num_waiting ?? 0) >= 1);
    try {
      await assert.rejects(llm.chat("One more.", LONG), (err: unknown) => {
        assert.ok(err instanceof BusyError, String(err));
        assert.equal(err.status, 503);
        assert.equal(err.code, "server_busy");
        assert.ok(err.retryAfterMs > 0, `retryAfterMs ${err.retryAfterMs}`);
        return true;
      });
    } finally {
      controller.abort();
    }
    await assert.rejects(running.result(), AbortError);
    await assert.rejects(waiting.result(), AbortError);
    await waitIdle(llm);
  });
});
