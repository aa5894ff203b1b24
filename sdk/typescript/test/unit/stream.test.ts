import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import {
  APIError,
  AbortError,
  BadRequestError,
  BusyError,
  CancelledError,
  ChatStream,
  Client,
  ServerUnavailableError,
  type ChatDelta,
} from "../../src/index.js";
import {
  chatChunk,
  fakeFetch,
  json,
  splitBytes,
  sse,
  streamResponse,
  usageChunk,
  watchUnhandled,
  type BodyControl,
} from "../helpers/fake.js";

const unhandled = watchUnhandled();
after(() => {
  assert.deepEqual(unhandled.rejections, [], "no unhandled promise rejections");
});

const enc = new TextEncoder();

/** A client whose chat streams answer with `body` (bytes split by `sizes`). */
function clientFor(body: string, options: { sizes?: number[]; open?: boolean } = {}) {
  const controls: BodyControl[] = [];
  const fake = fakeFetch((req) => {
    const chunks = options.sizes ? splitBytes(enc.encode(body), options.sizes) : [body];
    const { response, control } = streamResponse(chunks, { signal: req.signal, open: options.open ?? false });
    controls.push(control);
    return response;
  });
  const client = new Client({ model: "m", fetch: fake.fetch, baseURL: "http://test" });
  // the model is known: no load request first
  (client as unknown as { modelId: string }).modelId = "m";
  return { client, fake, controls };
}

const story = [
  chatChunk({ role: "assistant", content: "" }),
  chatChunk({ content: "Grüße " }),
  chatChunk({ content: "🙂 from " }),
  chatChunk({ content: "日本" }),
  chatChunk({}, "stop"),
  usageChunk(10, 4, 3),
];

describe("ChatStream", () => {
  it("yields text deltas, the finish reason and usage; knows its id", async () => {
    const { client, fake } = clientFor(sse(story));
    const stream = client.streamChat("hi", { maxTokens: 5 });
    const deltas: ChatDelta[] = [];
    for await (const d of stream) deltas.push(d);
    assert.deepEqual(
      deltas.map((d) => d.text),
      ["Grüße ", "🙂 from ", "日本", "", ""],
    );
    assert.equal(deltas[3]?.finishReason, "stop");
    assert.deepEqual(deltas[4]?.usage, {
      promptTokens: 10,
      completionTokens: 4,
      totalTokens: 14,
      cachedTokens: 3,
      acceptedPredictionTokens: 0,
      rejectedPredictionTokens: 0,
    });
    assert.equal(stream.id, "chatcmpl-1");
    assert.equal(stream.text, "Grüße 🙂 from 日本");
    assert.equal(stream.done, true);
    const body = fake.requests[0]?.body as Record<string, unknown>;
    assert.equal(body["stream"], true);
    assert.deepEqual(body["stream_options"], { include_usage: true });
    assert.equal(body["max_tokens"], 5);
  });

  it("gives the same answer whatever the byte boundaries (multi-byte characters split)", async () => {
    for (const sizes of [[1], [2], [3], [7, 1, 2], [64, 5]]) {
      const { client } = clientFor(sse(story), { sizes });
      const result = await client.streamChat("hi").result();
      assert.equal(result.text, "Grüße 🙂 from 日本", `sizes ${sizes.join(",")}`);
      assert.equal(result.usage.totalTokens, 14);
    }
  });

  it("assembles tool calls from their pieces", async () => {
    const events = [
      chatChunk({ role: "assistant", content: "" }),
      chatChunk({ tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }] }),
      chatChunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
      chatChunk({ tool_calls: [{ index: 0, function: { arguments: ' "Paris"}' } }] }),
      chatChunk({}, "tool_calls"),
    ];
    const { client } = clientFor(sse(events), { sizes: [3] });
    const stream = client.streamChat("weather?");
    const pieces: string[] = [];
    for await (const d of stream) for (const t of d.toolCalls ?? []) pieces.push(t.arguments);
    assert.deepEqual(pieces, ["", '{"city":', ' "Paris"}']);
    const result = stream.snapshot();
    assert.equal(result.finishReason, "tool_calls");
    assert.deepEqual(result.toolCalls, [
      { id: "call_1", type: "function", name: "get_weather", arguments: '{"city": "Paris"}', parsedArguments: { city: "Paris" } },
    ]);
    assert.equal(result.message.content, null);
    assert.equal(result.message.tool_calls?.[0]?.function.name, "get_weather");
  });

  it("throws the error event's APIError and closes the stream", async () => {
    const events = [
      chatChunk({ content: "par" }),
      { error: { message: "the answer does not match the schema", type: "server_error", param: null, code: "output_validation_failed" } },
    ];
    const { client, fake, controls } = clientFor(sse(events, false), { sizes: [5], open: true });
    const stream = client.streamChat("x");
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const d of stream) seen.push(d.text);
      })(),
      (err: unknown) => {
        assert.ok(err instanceof APIError);
        assert.equal(err.status, 0);
        assert.equal(err.code, "output_validation_failed");
        assert.match(err.message, /does not match/);
        return true;
      },
    );
    assert.deepEqual(seen, ["par"]);
    assert.equal(controls[0]?.cancelled || fake.requests[0]?.signal?.aborted, true, "the connection is closed");
  });

  it("maps error events by code: busy, cancelled, invalid request", async () => {
    const cases: [unknown, new (...args: never[]) => Error][] = [
      [{ error: { message: "m", type: "server_busy", code: "server_busy" } }, BusyError],
      [{ error: { message: "m", type: "cancelled", code: "cancelled" } }, CancelledError],
      [{ error: { message: "m", type: "invalid_request_error", code: null } }, BadRequestError],
    ];
    for (const [event, cls] of cases) {
      const { client } = clientFor(sse([event]));
      await assert.rejects(client.streamChat("x").result(), cls);
    }
  });

  it("a stream that ends without [DONE] is a ServerUnavailableError", async () => {
    const { client } = clientFor(sse([chatChunk({ content: "a" })], false));
    await assert.rejects(client.streamChat("x").result(), ServerUnavailableError);
  });

  it("readId waits for the first chunk without losing its deltas", async () => {
    const { client } = clientFor(sse(story), { sizes: [9] });
    const stream = client.streamChat("x");
    assert.equal(stream.id, undefined);
    assert.equal(await stream.readId(), "chatcmpl-1");
    const result = await stream.result();
    assert.equal(result.text, "Grüße 🙂 from 日本");
  });

  it("breaking out of the loop closes the connection", async () => {
    const { client, fake, controls } = clientFor(sse(story.slice(0, 3), false), { open: true });
    const stream = client.streamChat("x");
    for await (const d of stream) {
      assert.equal(d.text, "Grüße ");
      break;
    }
    assert.equal(fake.requests[0]?.signal?.aborted || controls[0]?.cancelled, true);
    // iterating a closed stream ends at once
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
  });

  it("an AbortSignal stops the stream with an AbortError and closes the connection", async () => {
    const { client, fake } = clientFor(sse(story.slice(0, 3), false), { open: true });
    const controller = new AbortController();
    const stream = client.streamChat("x", { signal: controller.signal });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const d of stream) {
          seen.push(d.text);
          controller.abort();
        }
      })(),
      (err: unknown) => err instanceof AbortError && err.name === "AbortError",
    );
    assert.deepEqual(seen, ["Grüße "]);
    assert.equal(fake.requests[0]?.signal?.aborted, true);
  });

  it("an AbortSignal aborted before the answer starts rejects the first read", async () => {
    const fake = fakeFetch(() => new Promise<Response>(() => undefined)); // never answers
    const client = new Client({ model: "m", fetch: fake.fetch, baseURL: "http://test" });
    (client as unknown as { modelId: string }).modelId = "m";
    const controller = new AbortController();
    const stream = client.streamChat("x", { signal: controller.signal });
    setTimeout(() => controller.abort(), 5);
    await assert.rejects(stream.readId(), AbortError);
  });

  it("a stream nobody reads leaves no unhandled rejection behind, and close() before the answer is quiet", async () => {
    const fake = fakeFetch(() => json({ error: { message: "no", type: "invalid_request_error" } }, 400));
    const client = new Client({ model: "m", fetch: fake.fetch, baseURL: "http://test" });
    (client as unknown as { modelId: string }).modelId = "m";
    client.streamChat("never read");
    const closed = client.streamChat("closed at once");
    await closed.close();
    assert.deepEqual(await closed.next(), { value: undefined, done: true });
    const controller = new AbortController();
    client.streamChat("aborted, never read", { signal: controller.signal });
    controller.abort();
    await new Promise((r) => setTimeout(r, 20));
  });

  it("an HTTP error before the stream starts is thrown by the first read", async () => {
    const fake = fakeFetch(() => json({ error: { message: "bad", type: "invalid_request_error", param: "messages", code: "invalid_value" } }, 400));
    const client = new Client({ model: "m", fetch: fake.fetch, baseURL: "http://test" });
    (client as unknown as { modelId: string }).modelId = "m";
    const stream: ChatStream = client.streamChat("x");
    await assert.rejects(
      (async () => {
        for await (const _ of stream) assert.fail("no delta expected");
      })(),
      (err: unknown) => err instanceof BadRequestError && err.param === "messages" && err.status === 400,
    );
  });

  it("streamComplete yields text pieces", async () => {
    const events = [
      { id: "cmpl-1", object: "text_completion", model: "m", choices: [{ index: 0, text: "a + ", finish_reason: null }] },
      { id: "cmpl-1", object: "text_completion", model: "m", choices: [{ index: 0, text: "b", finish_reason: "stop" }] },
      { id: "cmpl-1", object: "text_completion", model: "m", choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } },
    ];
    const fake = fakeFetch((req) => streamResponse(splitBytes(enc.encode(sse(events)), [4]), { signal: req.signal }).response);
    const client = new Client({ model: "m", fetch: fake.fetch, baseURL: "http://test" });
    (client as unknown as { modelId: string }).modelId = "m";
    const stream = client.streamComplete("def f():", { suffix: "\n" });
    const texts: string[] = [];
    for await (const d of stream) texts.push(d.text);
    assert.deepEqual(texts, ["a + ", "b", ""]);
    const result = await stream.result();
    assert.equal(result.text, "a + b");
    assert.equal(result.finishReason, "stop");
    assert.equal(result.usage.totalTokens, 5);
    assert.equal((fake.requests[0]?.body as Record<string, unknown>)["suffix"], "\n");
    assert.ok(fake.requests[0]?.url.endsWith("/v1/completions"));
  });
});
