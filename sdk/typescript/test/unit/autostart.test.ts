/**
 * autoStart with a stand-in for `botframework serve`: a small Node HTTP server written to a
 * temporary executable, which notes every start in a file.
 */

import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";

import { Client, ServerUnavailableError } from "../../src/index.js";
import { freePort } from "../helpers/server.js";

const dir = mkdtempSync(join(tmpdir(), "bf-sdk-autostart-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const startsFile = join(dir, "starts.txt");
const fakeServe = join(dir, "fake-botframework");
writeFileSync(
  fakeServe,
  `#!${process.execPath}
const http = require("node:http");
const fs = require("node:fs");
const args = process.argv.slice(2);
const port = Number(args[args.indexOf("--port") + 1]);
fs.appendFileSync(${JSON.stringify(startsFile)}, args.join(" ") + "\\n");
if (args.includes("--fail")) { console.error("boom: bad flag"); process.exit(3); }
const send = (res, body) => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(body)); };
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    if (req.url === "/health") return send(res, { status: "ok", model: "fake" });
    if (req.url === "/v1/models") return send(res, { object: "list", data: [{ id: "fake", object: "model" }] });
    if (req.url.startsWith("/v1/chat/completions")) return send(res, {
      id: "chatcmpl-fake", object: "chat.completion", model: "fake",
      choices: [{ index: 0, message: { role: "assistant", content: "pong" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } });
    res.writeHead(404); res.end();
  });
});
console.log("fake server on port " + port);
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`,
);
chmodSync(fakeServe, 0o755);

function starts(): string[] {
  try {
    return readFileSync(startsFile, "utf8").trim().split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

describe("autoStart", () => {
  it("starts one server for concurrent calls, starts it again after it died, and close() stops it", async () => {
    writeFileSync(startsFile, "");
    const port = await freePort();
    let output = "";
    const llm = new Client({
      baseURL: `http://127.0.0.1:${port}`,
      autoStart: true,
      serverCommand: fakeServe,
      serverArgs: ["--parallel", "3"],
      onServerOutput: (text) => {
        output += text;
      },
    });
    const [a, b] = await Promise.all([llm.chat("ping"), llm.chat("ping")]);
    assert.equal(a.text, "pong");
    assert.equal(b.text, "pong");
    assert.deepEqual(starts(), [`serve --port ${port} --parallel 3`]);
    assert.match(output, /fake server on port/);

    const first = llm.serverProcess;
    assert.ok(first?.running);
    first.child.kill("SIGKILL");
    await first.exited;
    assert.equal((await llm.chat("ping again")).text, "pong");
    assert.equal(starts().length, 2, "started again");

    const second = llm.serverProcess;
    assert.ok(second?.running && second !== first);
    await llm.close();
    assert.equal(second.running, false);
    assert.equal((await second.exited).code, 0, "stopped by SIGTERM, gracefully");
    assert.equal(llm.serverProcess, undefined);
  });

  it("a server that exits before it answers is a ServerUnavailableError with its output", async () => {
    const port = await freePort();
    const llm = new Client({ baseURL: `http://127.0.0.1:${port}`, autoStart: true, serverCommand: fakeServe, serverArgs: ["--fail"], retries: 0 });
    await assert.rejects(llm.health(), (err: unknown) => {
      assert.ok(err instanceof ServerUnavailableError);
      assert.match(err.message, /exited with status 3/);
      assert.match(err.message, /boom: bad flag/);
      return true;
    });
  });

  it("does not start anything for a URL that is not loopback", async () => {
    const before = starts().length;
    const llm = new Client({
      baseURL: "http://192.0.2.1:9",
      autoStart: true,
      serverCommand: fakeServe,
      retries: 0,
      fetch: async () => {
        throw new TypeError("fetch failed", { cause: Object.assign(new Error("refused"), { code: "ECONNREFUSED" }) });
      },
    });
    await assert.rejects(llm.health(), ServerUnavailableError);
    assert.equal(starts().length, before);
  });
});
