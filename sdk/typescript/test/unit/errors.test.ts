import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import {
  APIError,
  AbortError,
  AuthenticationError,
  BadRequestError,
  BotframeworkError,
  BusyError,
  CancelledError,
  Client,
  ContextLengthError,
  ModelNotFoundError,
  NotFoundError,
  RequestTimeoutError,
  ServerUnavailableError,
  apiError,
  parseRetryAfter,
} from "../../src/index.js";
import { fakeFetch, json, watchUnhandled } from "../helpers/fake.js";

const unhandled = watchUnhandled();
after(() => {
  assert.deepEqual(unhandled.rejections, [], "no unhandled promise rejections");
});

function body(type: string, code: string | null, message = "m", param: string | null = null) {
  return { error: { message, type, param, code } };
}

describe("apiError mapping", () => {
  const h = (headers: Record<string, string> = {}) => new Headers(headers);

  it("maps statuses and codes to classes, all BotframeworkError and APIError", () => {
    const cases: [number, unknown, Function][] = [
      [401, body("authentication_error", "invalid_api_key"), AuthenticationError],
      [404, body("invalid_request_error", "model_not_found", "no such model", "model"), ModelNotFoundError],
      [404, body("invalid_request_error", "session_not_found"), NotFoundError],
      [400, body("invalid_request_error", "context_length_exceeded"), ContextLengthError],
      [400, body("invalid_request_error", "invalid_value"), BadRequestError],
      [413, body("invalid_request_error", "request_too_large"), BadRequestError],
      [503, body("server_busy", "server_busy"), BusyError],
      [503, body("service_unavailable", "model_unavailable"), BusyError],
      [499, body("cancelled", "cancelled"), CancelledError],
      [500, body("server_error", "internal_error"), APIError],
    ];
    for (const [status, b, cls] of cases) {
      const err = apiError(status, h(), b);
      assert.ok(err instanceof cls, `${status} ${JSON.stringify(b)} -> ${err.constructor.name}`);
      assert.ok(err instanceof APIError);
      assert.ok(err instanceof BotframeworkError);
      assert.ok(err instanceof Error);
      assert.equal(err.status, status);
    }
    assert.ok(apiError(400, h(), body("invalid_request_error", "context_length_exceeded")) instanceof BadRequestError);
    assert.ok(!(apiError(404, h(), body("invalid_request_error", "session_not_found")) instanceof ModelNotFoundError));
  });

  it("keeps type, code, param and message", () => {
    const err = apiError(404, h(), body("invalid_request_error", "model_not_found", "The model 'x' does not exist", "model"));
    assert.equal(err.type, "invalid_request_error");
    assert.equal(err.code, "model_not_found");
    assert.equal(err.param, "model");
    assert.match(err.message, /HTTP 404 \(model_not_found\): The model 'x' does not exist/);
    assert.equal(err.name, "ModelNotFoundError");
  });

  it("reads Retry-After into retryAfterMs", () => {
    const err = apiError(503, h({ "retry-after": "2" }), body("server_busy", "server_busy"));
    assert.ok(err instanceof BusyError);
    assert.equal(err.retryAfterMs, 2000);
    assert.equal(parseRetryAfter("1.5"), 1500);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6_000);
    assert.equal(parseRetryAfter("soon"), undefined);
    assert.equal(parseRetryAfter(null), undefined);
    // a busy error without the header still says when to retry
    assert.equal((apiError(503, h(), body("server_busy", "server_busy")) as BusyError).retryAfterMs, 1000);
  });

  it("takes a body that is not the error shape as the message", () => {
    const err = apiError(502, h(), "Bad Gateway");
    assert.equal(err.constructor, APIError);
    assert.match(err.message, /Bad Gateway/);
    assert.equal(apiError(500, h(), "").message, "HTTP 500: HTTP 500");
  });

  it("an error event inside a stream has status 0", () => {
    const err = apiError(0, undefined, body("invalid_request_error", "context_length_exceeded"));
    assert.ok(err instanceof ContextLengthError);
    assert.equal(err.status, 0);
    assert.match(err.message, /^stream error/);
  });
});

function client(fake: ReturnType<typeof fakeFetch>, options: Record<string, unknown> = {}) {
  const c = new Client({ model: "m", baseURL: "http://test", fetch: fake.fetch, ...options });
  (c as unknown as { modelId: string }).modelId = "m";
  return c;
}

const ok = { id: "chatcmpl-1", object: "chat.completion", model: "m", choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } };

describe("transport errors and retries", () => {
  it("retries a 503 server_busy POST after its Retry-After, then answers", async () => {
    const fake = fakeFetch((_req, i) =>
      i === 0 ? json(body("server_busy", "server_busy"), 503, { "retry-after": "0" }) : json(ok),
    );
    const result = await client(fake).chat("x");
    assert.equal(result.text, "hi");
    assert.equal(fake.requests.length, 2);
  });

  it("throws BusyError with retryAfterMs once the retries are spent", async () => {
    const fake = fakeFetch(() => json(body("server_busy", "server_busy"), 503, { "retry-after": "0" }));
    await assert.rejects(client(fake, { retries: 1 }).chat("x"), (err: unknown) => err instanceof BusyError && err.retryAfterMs === 0);
    assert.equal(fake.requests.length, 2);
  });

  it("never sends a POST again after a 503 that may have started generating", async () => {
    const fake = fakeFetch(() => json(body("service_unavailable", "model_unavailable"), 503, { "retry-after": "0" }));
    await assert.rejects(client(fake).chat("x"), BusyError);
    assert.equal(fake.requests.length, 1);
  });

  it("sends a GET again after any 503", async () => {
    const fake = fakeFetch((_req, i) =>
      i < 2 ? json(body("service_unavailable", "model_unavailable"), 503, { "retry-after": "0" }) : json({ object: "list", data: [{ id: "m", object: "model" }] }),
    );
    const models = await client(fake).models();
    assert.equal(models[0]?.id, "m");
    assert.equal(fake.requests.length, 3);
  });

  it("does not retry 4xx answers", async () => {
    const fake = fakeFetch(() => json(body("authentication_error", "invalid_api_key"), 401));
    await assert.rejects(client(fake).chat("x"), AuthenticationError);
    assert.equal(fake.requests.length, 1);
  });

  it("a refused connection is a ServerUnavailableError (after the retries: nothing was sent)", async () => {
    const refused = () => {
      throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }) });
    };
    const fake = fakeFetch(refused);
    await assert.rejects(client(fake, { retries: 1 }).chat("x"), (err: unknown) => {
      assert.ok(err instanceof ServerUnavailableError);
      assert.match(err.message, /no botframework server answers at http:\/\/test/);
      return true;
    });
    assert.equal(fake.requests.length, 2);
  });

  it("a connection that broke after sending is not retried", async () => {
    const fake = fakeFetch(() => {
      throw new TypeError("fetch failed", { cause: Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }) });
    });
    await assert.rejects(client(fake).chat("x"), ServerUnavailableError);
    assert.equal(fake.requests.length, 1);
  });

  it("timeoutMs gives a RequestTimeoutError", async () => {
    const fake = fakeFetch(() => new Promise<Response>(() => undefined));
    await assert.rejects(client(fake, { timeoutMs: 30 }).chat("x"), RequestTimeoutError);
  });

  it("an aborted call rejects with AbortError whose cause is the signal's reason", async () => {
    const fake = fakeFetch(() => new Promise<Response>(() => undefined));
    const controller = new AbortController();
    const pending = client(fake).chat("x", { signal: controller.signal });
    controller.abort("user went away");
    await assert.rejects(pending, (err: unknown) => err instanceof AbortError && err.cause === "user went away");
    // already aborted: nothing is sent
    await assert.rejects(client(fake).embed("x", { signal: controller.signal }), AbortError);
  });

  it("an abort while waiting to retry stops the wait", async () => {
    const fake = fakeFetch(() => json(body("server_busy", "server_busy"), 503, { "retry-after": "20" }));
    const controller = new AbortController();
    const pending = client(fake).chat("x", { signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(pending, AbortError);
    assert.equal(fake.requests.length, 1);
  });
});
