/**
 * Real botframework servers for the integration tests, each on a free loopback port.
 *
 * The executable is $BOTFRAMEWORK_BIN, else `botframework` on PATH. When there is neither,
 * starting a server throws (the tests fail with that message; they are never skipped).
 */

import { accessSync, constants, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";

import { Client, ServerProcess, type ServerStats } from "../../src/index.js";

export const MODEL = process.env["BOTFRAMEWORK_TEST_MODEL"] || "smollm2-135m-instruct";

/** $BOTFRAMEWORK_BIN, else `botframework` found on PATH; throws a clear error when neither exists. */
export function serverExecutable(): string {
  const fromEnv = process.env["BOTFRAMEWORK_BIN"];
  if (fromEnv) return fromEnv;
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "botframework");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(
    "the integration tests need a botframework server: set BOTFRAMEWORK_BIN to the `botframework` " +
      "executable (e.g. BOTFRAMEWORK_BIN=/path/to/botframework npm test) or put `botframework` on PATH",
  );
}

/**
 * The test model's .gguf file: $BOTFRAMEWORK_TEST_GGUF, else SmolLM2-135M-Instruct*.gguf in
 * botframework's model cache ($BOTFRAMEWORK_CACHE, else $XDG_CACHE_HOME/botframework, else
 * ~/.cache/botframework). Throws when there is none.
 */
export function cachedGGUF(): string {
  const explicit = process.env["BOTFRAMEWORK_TEST_GGUF"];
  if (explicit) return explicit;
  const roots: string[] = [];
  if (process.env["BOTFRAMEWORK_CACHE"]) roots.push(process.env["BOTFRAMEWORK_CACHE"]);
  if (process.env["XDG_CACHE_HOME"]) roots.push(join(process.env["XDG_CACHE_HOME"], "botframework"));
  roots.push(join(homedir(), ".cache", "botframework"));
  for (const root of roots) {
    const dir = join(root, "models");
    try {
      const found = readdirSync(dir).filter((f) => /^SmolLM2-135M-Instruct.*\.gguf$/.test(f)).sort();
      if (found[0] !== undefined) return join(dir, found[0]);
    } catch {
      // no such folder
    }
  }
  throw new Error(
    `no SmolLM2-135M-Instruct .gguf in botframework's model cache (${roots.join(", ")}): ` +
      "pull the model (botframework pull smollm2-135m-instruct) or set BOTFRAMEWORK_TEST_GGUF",
  );
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface TestServer {
  url: string;
  port: number;
  process: ServerProcess;
  stop(): Promise<void>;
}

/** `botframework serve --port P --model MODEL ...args`, ready (GET /health is 200). */
export async function startServer(args: string[] = []): Promise<TestServer> {
  const command = serverExecutable();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = ServerProcess.start({
    command,
    args: ["serve", "--port", String(port), "--model", MODEL, ...args],
    env: process.env,
  });
  try {
    await proc.waitReady(url, 120_000);
  } catch (err) {
    await proc.stop(2000);
    throw err;
  }
  return { url, port, process: proc, stop: () => proc.stop(10_000) };
}

let shared: Promise<TestServer> | undefined;

/** The server most tests share (two slots), started on first use. */
export function sharedServer(): Promise<TestServer> {
  shared ??= startServer(["--parallel", "2", "--draft-always"]); // a call that asks for drafts gets them
  return shared;
}

export async function stopSharedServer(): Promise<void> {
  if (shared === undefined) return;
  const server = await shared.catch(() => undefined);
  shared = undefined;
  await server?.stop();
}

/**
 * Poll GET /v1/stats until no slot is busy and nothing runs or waits; returns the last stats.
 * Bounded by a number of polls, not by a timing assertion.
 */
export async function waitIdle(client: Client, polls = 300, everyMs = 100): Promise<ServerStats> {
  let stats: ServerStats = {};
  for (let i = 0; i < polls; i++) {
    stats = await client.stats();
    if (stats.num_busy_slots === 0 && stats.num_running === 0 && stats.num_waiting === 0) return stats;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`the server still has busy slots after ${polls} polls: ${JSON.stringify(stats)}`);
}

/** Poll GET /v1/stats until `ready(stats)`. */
export async function waitStats(client: Client, ready: (s: ServerStats) => boolean, polls = 300, everyMs = 50): Promise<ServerStats> {
  let stats: ServerStats = {};
  for (let i = 0; i < polls; i++) {
    stats = await client.stats();
    if (ready(stats)) return stats;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`the server's stats never reached the expected state: ${JSON.stringify(stats)}`);
}
