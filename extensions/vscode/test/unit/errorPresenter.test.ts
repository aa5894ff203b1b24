/** Every failure the extension meets, in words and with its actions; the presenter runs the
 * chosen action and never rejects or loops. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  AbortError,
  AuthenticationError,
  BadRequestError,
  BusyError,
  ContextLengthError,
  ModelNotFoundError,
  NotFoundError,
  RequestTimeoutError,
  ServerUnavailableError,
} from "@botframework/sdk";

import { ServerCrashedError, ServerMissingError, ServerStartError } from "../../src/core/errors.js";
import { ErrorPresenter, describeProblem, type ActionHandlers } from "../../src/core/errorPresenter.js";
import { checkUnhandledRejections, memoryLog, titles } from "../helpers/common.js";

checkUnhandledRejections();

const ctx = { url: "http://127.0.0.1:8000", model: "smollm2-135m-instruct" };

describe("describeProblem", () => {
  const cases: [string, unknown, string, string[], RegExp][] = [
    ["server missing", new ServerMissingError("No botframework server answers at u.", "u"), "serverMissing", ["startServer", "openSettings", "retry"], /Start one/],
    ["executable missing", new ServerMissingError("The botframework executable was not found: x.", "u", "x"), "executableMissing", ["openSettings", "retry"], /botframework.server.executable/],
    ["start failed", new ServerStartError("The botframework server exited with status 1 before it was ready.", "Traceback\nOSError: port in use", 1), "startFailed", ["showOutput", "openSettings", "retry"], /port in use/],
    ["start failed: model", new ServerStartError("exited", "botframework: error: model file not found: x", 2), "modelNotFound", ["openSettings", "showOutput", "retry"], /cannot find the model/],
    ["crashed", new ServerCrashedError("The botframework server stopped (signal SIGKILL).", "", null, "SIGKILL"), "crashed", ["restartServer", "showOutput"], /stopped \(signal SIGKILL\) while answering/],
    ["connection lost", new ServerUnavailableError("the connection broke off"), "unreachable", ["startServer", "retry", "openSettings"], /Lost the connection/],
    ["timeout", new RequestTimeoutError("no answer within 10 ms"), "timeout", ["retry", "openSettings", "restartServer"], /did not answer in time/],
    ["wrong key", new AuthenticationError({ status: 401, message: "Incorrect API key", code: "invalid_api_key" }), "auth", ["setApiKey", "openSettings"], /refused the API key/],
    ["unknown model", new ModelNotFoundError({ status: 404, message: "The model 'x' does not exist", code: "model_not_found" }), "modelNotFound", ["openSettings", "retry"], /does not know the model/],
    ["busy", new BusyError({ status: 503, message: "busy", code: "server_busy", retryAfterMs: 5000 }), "busy", ["retry"], /Try again in 5 seconds/],
    ["context", new ContextLengthError({ status: 400, message: "too long", code: "context_length_exceeded" }), "contextLength", [], /no longer fits/],
    ["not botframework", new NotFoundError({ status: 404, message: "Not Found" }), "unreachable", ["openSettings", "retry"], /not a botframework server/],
    ["bad request", new BadRequestError({ status: 400, message: "bad" }), "badRequest", ["retry"], /refused the request/],
    ["anything else", new Error("weird"), "other", ["retry", "showOutput"], /weird/],
  ];
  for (const [name, err, kind, actions, message] of cases) {
    it(name, () => {
      const problem = describeProblem(err, ctx);
      assert.equal(problem?.kind, kind);
      assert.deepEqual(problem?.actions, actions);
      assert.match(problem?.message ?? "", message);
    });
  }

  it("the user's own stop is no problem", () => {
    assert.equal(describeProblem(new AbortError(), ctx), undefined);
    assert.equal(describeProblem(new DOMException("aborted", "AbortError"), ctx), undefined);
  });
});

function handlers(calls: string[], fail: Partial<Record<keyof ActionHandlers, Error>> = {}): ActionHandlers {
  const run = (name: keyof ActionHandlers) => async () => {
    calls.push(name);
    if (fail[name]) throw fail[name];
  };
  return {
    startServer: run("startServer"),
    restartServer: run("restartServer"),
    openSettings: async (q: string) => {
      calls.push(`openSettings:${q}`);
    },
    setApiKey: run("setApiKey"),
    showOutput: run("showOutput"),
  };
}

describe("ErrorPresenter", () => {
  it("shows the message with its actions as buttons and runs the one chosen", async () => {
    const shown: { message: string; items: string[] }[] = [];
    const calls: string[] = [];
    const presenter = new ErrorPresenter(
      {
        showError: async (message, ...items) => {
          shown.push({ message, items });
          return "Open Settings";
        },
      },
      handlers(calls),
      () => ctx,
      memoryLog(),
    );
    await presenter.show(new ModelNotFoundError({ status: 404, message: "nope", code: "model_not_found" }), async () => calls.push("retry"));
    assert.deepEqual(shown[0]!.items, titles(["openSettings", "retry"]));
    assert.deepEqual(calls, ["openSettings:botframework.model"]);
  });

  it("Retry runs the retry; without one there is no Retry button", async () => {
    const shown: string[][] = [];
    const calls: string[] = [];
    const presenter = new ErrorPresenter(
      {
        showError: async (_m, ...items) => {
          shown.push(items);
          return items.includes("Retry") ? "Retry" : undefined;
        },
      },
      handlers(calls),
      () => ctx,
    );
    await presenter.show(new BusyError({ status: 503, message: "busy" }));
    assert.deepEqual(shown[0], []);
    await presenter.show(new BusyError({ status: 503, message: "busy" }), async () => calls.push("retry"));
    assert.deepEqual(calls, ["retry"]);
  });

  it("a failing action is shown in turn, once: no loop, no rejection", async () => {
    const shown: string[] = [];
    const calls: string[] = [];
    const presenter = new ErrorPresenter(
      {
        showError: async (message) => {
          shown.push(message);
          return "Start Server"; // the user keeps pressing it
        },
      },
      handlers(calls, { startServer: new ServerMissingError("No botframework server answers at u.", "u") }),
      () => ctx,
      memoryLog(),
    );
    await presenter.show(new ServerUnavailableError("refused"));
    assert.equal(shown.length, 2);
    assert.deepEqual(calls, ["startServer", "startServer"]);
  });

  it("a handler resolving false (cancelled) is not a success", async () => {
    const presenter = new ErrorPresenter({ showError: async () => undefined }, { ...handlers([]), setApiKey: async () => false }, () => ctx);
    assert.equal(await presenter.run("setApiKey", undefined), false);
    assert.equal(await presenter.run("showOutput", undefined), true);
  });

  it("a notification that fails to show is swallowed; an abort shows nothing", async () => {
    let count = 0;
    const presenter = new ErrorPresenter(
      {
        showError: async () => {
          count++;
          throw new Error("no window");
        },
      },
      handlers([]),
      () => ctx,
    );
    await presenter.show(new RequestTimeoutError("t"));
    await presenter.show(new AbortError());
    assert.equal(count, 1);
  });
});
