/**
 * A `botframework serve` child process, for autoStart (and for tests).
 *
 *   ServerProcess.start(command, args) --spawn (no shell)--> child; its output is read all the
 *       time (a full pipe would stall the server), handed to onOutput and its tail kept for
 *       error messages
 *   waitReady(url): GET /health until 200; fails early when the child exits
 *   stop(): SIGTERM, then SIGKILL after graceMs
 *
 * A child that is still running when this process exits gets SIGTERM (an extension host or a
 * script that forgot close() does not leave a server behind). The child does not keep this
 * process alive by itself.
 */

import { spawn, type ChildProcess } from "node:child_process";

import { ServerUnavailableError } from "./errors.js";
import type { FetchLike } from "./types.js";

const OUTPUT_TAIL_CHARS = 4000;

/** The executable: the option, else $BOTFRAMEWORK_BIN, else `botframework` (looked up on PATH). */
export function serverCommand(option?: string): string {
  return option || process.env["BOTFRAMEWORK_BIN"] || "botframework";
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllOnExit(): void {
  for (const child of live) {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the executable could not be started at all. */
  error?: Error;
}

export interface StartOptions {
  command: string;
  args: string[];
  env?: Record<string, string | undefined> | undefined;
  onOutput?: ((text: string) => void) | undefined;
}

export class ServerProcess {
  private tail = "";
  private readonly exitPromise: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;

  private constructor(readonly child: ChildProcess, readonly command: string, onOutput?: (text: string) => void) {
    const keep = (buf: Buffer) => {
      const text = buf.toString("utf8");
      this.tail = (this.tail + text).slice(-OUTPUT_TAIL_CHARS);
      if (onOutput) {
        try {
          onOutput(text);
        } catch {
          // a failing output handler must not stop the draining
        }
      }
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    this.exitPromise = new Promise((resolve) => {
      child.once("error", (error) => {
        live.delete(child);
        this.exitInfo = { code: null, signal: null, error };
        resolve(this.exitInfo);
      });
      child.once("exit", (code, signal) => {
        live.delete(child);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  /** Spawn it; never throws (a failure to start shows in `exited` and waitReady). */
  static start(options: StartOptions): ServerProcess {
    const child = spawn(options.command, options.args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env ? { ...options.env } : process.env,
      windowsHide: true,
    });
    const server = new ServerProcess(child, options.command, options.onOutput);
    live.add(child);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once("exit", killAllOnExit);
    }
    child.unref();
    (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
    (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
    return server;
  }

  /** Resolves when the child has exited (or could not start). Waiting for it keeps this
   * process alive until then. */
  get exited(): Promise<ExitInfo> {
    if (this.running) this.child.ref();
    return this.exitPromise;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** The last lines the server printed. */
  output(): string {
    return this.tail;
  }

  private describeExit(): string {
    const info = this.exitInfo;
    if (info?.error) {
      const code = (info.error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        return `cannot start \`${this.command}\`: not found (install botframework, put it on PATH, or set ` +
          "serverCommand / BOTFRAMEWORK_BIN)";
      }
      return `cannot start \`${this.command}\`: ${info.error.message}`;
    }
    const how = info?.signal ? `signal ${info.signal}` : `status ${info?.code}`;
    const out = this.tail.trim();
    return `\`${this.command} serve\` exited with ${how} before it answered${out ? `; its last output:\n${out}` : ""}`;
  }

  /** Wait until GET {url}/health answers 200 (polling), the child exits, or timeoutMs passes. */
  async waitReady(url: string, timeoutMs: number, fetchImpl: FetchLike = fetch, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const exited = this.exitPromise.then(() => "exited" as const);
    for (;;) {
      if (!this.running) throw new ServerUnavailableError(this.describeExit());
      if (signal?.aborted) throw new ServerUnavailableError("waiting for the server was aborted");
      try {
        const response = await fetchImpl(`${url}/health`, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer().catch(() => undefined);
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new ServerUnavailableError(`the server started at ${url} did not get ready within ${timeoutMs} ms`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = new Promise<"tick">((resolve) => {
        timer = setTimeout(() => resolve("tick"), 200);
      });
      await Promise.race([waited, exited]);
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL when it has not exited after graceMs; resolves once it has exited. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    const exited = this.exited; // keeps this process alive until the child is gone
    this.child.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (this.running) this.child.kill("SIGKILL");
        resolve();
      }, graceMs);
    });
    await Promise.race([exited, killed]);
    clearTimeout(timer);
    await exited;
  }
}
