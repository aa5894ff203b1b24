/**
 * Real botframework servers for the integration and webview tests, each on a free loopback
 * port. The executable is $BOTFRAMEWORK_BIN, else `botframework` on PATH; with neither, the
 * tests fail with a message saying so (they are never skipped).
 */

import { accessSync, constants } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";

import { ServerProcess } from "@botframework/sdk";

export const MODEL = process.env["BOTFRAMEWORK_TEST_MODEL"] || "smollm2-135m-instruct";

/** $BOTFRAMEWORK_BIN, else `botframework` on PATH; throws a clear error when neither exists. */
export function serverExecutable(): string {
  const fromEnv = process.env["BOTFRAMEWORK_BIN"];
  if (fromEnv) {
    try {
      accessSync(fromEnv, constants.X_OK);
      return fromEnv;
    } catch {
      throw new Error(`BOTFRAMEWORK_BIN is set to ${fromEnv}, which is not an executable file`);
    }
  }
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
    "these tests need a botframework server: set BOTFRAMEWORK_BIN to the `botframework` executable " +
      "(e.g. BOTFRAMEWORK_BIN=/path/to/botframework npm test) or put `botframework` on PATH",
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
  const proc = ServerProcess.start({ command, args: ["serve", "--port", String(port), "--model", MODEL, ...args], env: process.env });
  try {
    await proc.waitReady(url, 180_000);
  } catch (err) {
    await proc.stop(2000);
    throw err;
  }
  return { url, port, process: proc, stop: () => proc.stop(10_000) };
}

export interface Stats {
  num_busy_slots?: number;
  num_running?: number;
  num_waiting?: number;
  [key: string]: unknown;
}

export async function stats(url: string, apiKey?: string): Promise<Stats> {
  const response = await fetch(`${url}/v1/stats`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  return (await response.json()) as Stats;
}

/** Poll GET /v1/stats until `ready(stats)`; bounded by a count of polls, never by a time assertion. */
export async function waitStats(url: string, ready: (s: Stats) => boolean, what: string, apiKey?: string, polls = 600, everyMs = 50): Promise<Stats> {
  let last: Stats = {};
  for (let i = 0; i < polls; i++) {
    last = await stats(url, apiKey);
    if (ready(last)) return last;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`the server's stats never showed ${what}: ${JSON.stringify(last)}`);
}

/** Poll until no slot is busy and nothing runs or waits. */
export function waitIdle(url: string, apiKey?: string): Promise<Stats> {
  return waitStats(url, (s) => s.num_busy_slots === 0 && s.num_running === 0 && s.num_waiting === 0, "no busy slot", apiKey);
}

/** Whether a process id is alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
