/**
 * The extension's own failures, beside the SDK's error classes: what went wrong with the
 * server the extension looks for or starts.
 */

/** No server answers and none can be started: autoStart is off, the URL is not on this
 * machine, or the executable is missing. */
export class ServerMissingError extends Error {
  constructor(
    message: string,
    readonly url: string,
    /** The executable that was not found, when that is the reason. */
    readonly executable?: string,
  ) {
    super(message);
    this.name = "ServerMissingError";
  }
}

/** The started server exited (or never answered) before it was ready. */
export class ServerStartError extends Error {
  constructor(
    message: string,
    /** The server's last output lines. */
    readonly output: string,
    readonly exitCode: number | null = null,
    readonly signal: string | null = null,
  ) {
    super(message);
    this.name = "ServerStartError";
  }
}

/** The server this extension started died while a request was running (or since). */
export class ServerCrashedError extends Error {
  constructor(
    message: string,
    readonly output: string,
    readonly exitCode: number | null,
    readonly signal: string | null,
  ) {
    super(message);
    this.name = "ServerCrashedError";
  }
}

/** How a process ended, in words: "status 2", "signal SIGKILL". */
export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `signal ${signal}`;
  return `status ${code ?? "unknown"}`;
}
