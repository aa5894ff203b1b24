import assert from "node:assert/strict";
import { resolve } from "node:path";
import { describe, it } from "node:test";

import { Client, OutputValidationError, loadPath, modelSpec, serverURL } from "../../src/index.js";
import { fakeFetch, json } from "../helpers/fake.js";

const card = (id: string) => ({ id, object: "model", meta: { state: "loaded" } });
const answer = (message: Record<string, unknown>, finish = "stop") => ({
  id: "chatcmpl-9",
  object: "chat.completion",
  model: "served",
  choices: [{ index: 0, message: { role: "assistant", ...message }, finish_reason: finish }],
  usage: {
    prompt_tokens: 5,
    completion_tokens: 2,
    total_tokens: 7,
    prompt_tokens_details: { cached_tokens: 4 },
    completion_tokens_details: { accepted_prediction_tokens: 1, rejected_prediction_tokens: 3 },
  },
});

describe("configuration", () => {
  it("normalises the base URL", () => {
    assert.equal(serverURL("http://127.0.0.1:9000/v1/"), "http://127.0.0.1:9000");
    assert.equal(serverURL("localhost:1234"), "http://localhost:1234");
    const saved = process.env["BOTFRAMEWORK_URL"];
    process.env["BOTFRAMEWORK_URL"] = "http://10.0.0.1:1";
    assert.equal(serverURL(undefined), "http://10.0.0.1:1");
    delete process.env["BOTFRAMEWORK_URL"];
    assert.equal(serverURL(undefined), "http://127.0.0.1:8000");
    if (saved !== undefined) process.env["BOTFRAMEWORK_URL"] = saved;
  });

  it("makes a .gguf path absolute and keeps its slashes in the load path", () => {
    assert.equal(modelSpec("models/a.gguf"), resolve("models/a.gguf"));
    assert.equal(modelSpec("smollm2-135m-instruct"), "smollm2-135m-instruct");
    assert.equal(modelSpec("hf:owner/repo/file.gguf"), "hf:owner/repo/file.gguf");
    assert.equal(loadPath("/m/a b.gguf"), "/v1/models//m/a%20b.gguf/load");
    assert.equal(loadPath("hf:o/r/f.gguf"), "/v1/models/hf:o/r/f.gguf/load");
  });
});

describe("Client with a fake server", () => {
  it("connect checks /health, loads the model and uses the returned id", async () => {
    const fake = fakeFetch((req) => {
      if (req.url.endsWith("/health")) return json({ status: "ok", model: "x" });
      if (req.url.includes("/load")) return json(card("served"));
      return json(answer({ content: "hello" }));
    });
    const llm = await Client.connect({ model: "rel/x.gguf", baseURL: "http://h:1", fetch: fake.fetch, apiKey: "k" });
    assert.equal(llm.model, "served");
    const res = await llm.chat("hi", { system: "be brief", maxTokens: 3, topK: 2, seed: 1, ignoreEos: true, speculative: true, extraBody: { min_p: 0.1 } });
    assert.deepEqual(
      fake.requests.map((r) => `${r.method} ${r.url}`),
      ["GET http://h:1/health", `POST http://h:1${loadPath(resolve("rel/x.gguf"))}`, "POST http://h:1/v1/chat/completions"],
    );
    assert.equal(fake.requests[2]?.headers["authorization"], "Bearer k");
    assert.deepEqual(fake.requests[2]?.body, {
      model: "served",
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: "hi" },
      ],
      max_tokens: 3,
      top_k: 2,
      seed: 1,
      ignore_eos: true,
      speculative: true,
      min_p: 0.1,
    });
    assert.equal(res.text, "hello");
    assert.equal(res.id, "chatcmpl-9");
    assert.deepEqual(res.usage, {
      promptTokens: 5,
      completionTokens: 2,
      totalTokens: 7,
      cachedTokens: 4,
      acceptedPredictionTokens: 1,
      rejectedPredictionTokens: 3,
    });
    await llm.close();
  });

  it("connect waits while the server says it is loading", async () => {
    let healthCalls = 0;
    const fake = fakeFetch((req) => {
      if (req.url.endsWith("/health")) {
        healthCalls++;
        return healthCalls < 3 ? json({ status: "loading", model: null }, 503) : json({ status: "ok", model: "d" });
      }
      return json({ object: "list", data: [card("d")] });
    });
    const llm = await Client.connect({ baseURL: "http://h:1", fetch: fake.fetch, retries: 0 });
    assert.equal(llm.model, "d");
    assert.equal(healthCalls, 3);
  });

  it("sends tools, a named tool choice, and parses tool calls", async () => {
    const fake = fakeFetch(() =>
      json(answer({ content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: '{"a": 1}' } }] }, "tool_calls")),
    );
    const llm = new Client({ model: "m", baseURL: "http://h", fetch: fake.fetch });
    (llm as unknown as { modelId: string }).modelId = "m";
    const res = await llm.chat("call f", {
      tools: [{ name: "f", parameters: { type: "object" } }, { type: "function", function: { name: "g" } }],
      toolChoice: { name: "f" },
    });
    const sent = fake.requests[0]?.body as Record<string, unknown>;
    assert.deepEqual(sent["tools"], [
      { type: "function", function: { name: "f", parameters: { type: "object" } } },
      { type: "function", function: { name: "g" } },
    ]);
    assert.deepEqual(sent["tool_choice"], { type: "function", function: { name: "f" } });
    assert.equal(res.finishReason, "tool_calls");
    assert.deepEqual(res.toolCalls, [{ id: "call_1", type: "function", name: "f", arguments: '{"a": 1}', parsedArguments: { a: 1 } }]);
    assert.deepEqual(res.message, {
      role: "assistant",
      content: null,
      tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: '{"a": 1}' } }],
    });
  });

  it("chatStructured sends a strict json_schema and returns the parsed value", async () => {
    const fake = fakeFetch(() => json(answer({ content: '{"name": "Ann", "age": 3}' })));
    const llm = new Client({ model: "m", baseURL: "http://h", fetch: fake.fetch });
    (llm as unknown as { modelId: string }).modelId = "m";
    const schema = { type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] };
    const person = await llm.chatStructured<{ name: string; age: number }>("a person", schema, { name: "person" });
    assert.equal(person.name, "Ann");
    assert.equal(person.age, 3);
    assert.deepEqual((fake.requests[0]?.body as Record<string, unknown>)["response_format"], {
      type: "json_schema",
      json_schema: { name: "person", schema, strict: true },
    });
  });

  it("chatStructured: an answer cut off by max_tokens is an OutputValidationError", async () => {
    const fake = fakeFetch(() => json(answer({ content: '{"name": "An' }, "length")));
    const llm = new Client({ model: "m", baseURL: "http://h", fetch: fake.fetch });
    (llm as unknown as { modelId: string }).modelId = "m";
    await assert.rejects(llm.chatStructured("a person", { type: "object" }), (err: unknown) => {
      return err instanceof OutputValidationError && err.output === '{"name": "An' && err.finishReason === "length";
    });
  });

  it("a session sends the whole history and its id each turn, and keeps the answers", async () => {
    const fake = fakeFetch((req) => {
      if (req.url.endsWith("/v1/sessions?model=m")) return json({ id: "sess-1", object: "session" });
      if (req.method === "DELETE") return json({ id: "sess-1", deleted: true });
      return json(answer({ content: `answer ${(req.body as { messages: unknown[] }).messages.length}` }));
    });
    const llm = new Client({ model: "m", baseURL: "http://h", fetch: fake.fetch });
    (llm as unknown as { modelId: string }).modelId = "m";
    const session = await llm.session({ system: "sys", temperature: 0 });
    assert.equal(session.id, "sess-1");
    await session.chat("one");
    await session.chat("two");
    const second = fake.requests[2]?.body as Record<string, unknown>;
    assert.equal(second["session_id"], "sess-1");
    assert.equal(second["temperature"], 0);
    assert.deepEqual(second["messages"], [
      { role: "system", content: "sys" },
      { role: "user", content: "one" },
      { role: "assistant", content: "answer 2" },
      { role: "user", content: "two" },
    ]);
    assert.equal(session.messages.length, 5);
    assert.equal(await session.close(), true);
    assert.equal(fake.requests[3]?.url, "http://h/v1/sessions/sess-1");
  });

  it("embed returns the vectors in input order", async () => {
    const fake = fakeFetch(() =>
      json({ object: "list", data: [{ index: 1, embedding: [0, 1] }, { index: 0, embedding: [1, 0] }] }),
    );
    const llm = new Client({ model: "m", baseURL: "http://h", fetch: fake.fetch });
    (llm as unknown as { modelId: string }).modelId = "m";
    assert.deepEqual(await llm.embed(["a", "b"]), [[1, 0], [0, 1]]);
    assert.deepEqual((fake.requests[0]?.body as Record<string, unknown>)["input"], ["a", "b"]);
  });
});
