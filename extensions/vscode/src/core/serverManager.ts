/**
 * Embed-and-serve: find the botframework server, or start one, and keep track of its state.
 *
 *   client() --GET {baseUrl}/health--> answers: Client.connect there (loads the model)
 *                                   \-> nothing (refused): autoStart on a loopback URL ->
 *       `botframework serve --port P [--model M] ...args` as a child (the SDK's ServerProcess:
 *       output drained to the log, waitReady on /health) -> Client.connect
 *   use(fn)   runs a request with the client: counts it (state "busy" while any runs) and turns
 *             its failure into the one to show (diagnose: a broken connection to a child that
 *             has died is a ServerCrashedError; a wrong key or an unknown model: state "error")
 *   the child's exit (crash, kill) -> state "error", client dropped; the next client() or
 *       restart() starts it again
 *   dispose() stops the child (SIGTERM, then SIGKILL)
 *
 * The states: stopped -> connecting -> (starting ->) ready <-> busy; any -> error.
 */

import {
  AuthenticationError,
  Client,
  ModelNotFoundError,
  ServerProcess,
  ServerUnavailableError,
  serverCommand,
  serverURL,
  type FetchLike,
  type StartOptions,
} from "@botframework/sdk";

import { ServerCrashedError, ServerMissingError, ServerStartError, describeExit } from "./errors.js";
import { Emitter, silentLog, type Disposable, type Log } from "./ports.js";
import type { Settings } from "./settings.js";

export type ServerStateKind = "stopped" | "connecting" | "starting" | "ready" | "busy" | "error";

export interface ServerState {
  kind: ServerStateKind;
  /** The server's URL (the started child's, once there is one). */
  url: string;
  /** The model's id on the server, once connected; else the configured one. */
  model: string | undefined;
  /** Whether the extension started the server (and will stop it). */
  owned: boolean;
  /** The child's process id, when the extension started one. */
  pid: number | undefined;
  /** Requests running now. */
  inFlight: number;
  /** Words for a tooltip: what happens, or what went wrong. */
  detail: string;
  /** The failure behind an "error" state. */
  error?: unknown;
}

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  error?: Error | undefined;
}

/** The started server, as the manager uses it (the SDK's ServerProcess; a stub in unit tests). */
export interface ManagedProcess {
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Set once it has exited. */
  readonly exitInfo: ExitInfo | undefined;
  output(): string;
  waitReady(url: string, timeoutMs: number, fetchImpl?: FetchLike): Promise<void>;
  stop(graceMs?: number): Promise<void>;
  /** Resolves when it has exited (or could not start). */
  readonly exited: Promise<ExitInfo>;
}

export type ProcessStarter = (options: StartOptions) => ManagedProcess;

/** The SDK's ServerProcess as a ManagedProcess (its exit watched without keeping the host alive). */
export function startServerProcess(options: StartOptions): ManagedProcess {
  const proc = ServerProcess.start(options);
  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    proc.child.once("error", (error) => {
      exitInfo ??= { code: null, signal: null, error };
      resolve(exitInfo);
    });
    proc.child.once("exit", (code, signal) => {
      exitInfo ??= { code, signal };
      resolve(exitInfo);
    });
  });
  return {
    get pid() {
      return proc.child.pid;
    },
    get running() {
      return exitInfo === undefined && proc.running;
    },
    get exitInfo() {
      return exitInfo;
    },
    output: () => proc.output(),
    waitReady: (url, timeoutMs, fetchImpl) => proc.waitReady(url, timeoutMs, fetchImpl),
    stop: (graceMs) => proc.stop(graceMs),
    exited,
  };
}

export interface ServerManagerOptions {
  settings: () => Settings;
  log?: Log;
  /** Used by the clients (tests pass a fake). */
  fetch?: FetchLike;
  /** Starts the child (tests pass a stub). */
  startProcess?: ProcessStarter;
  /** Environment of the started server. */
  env?: Record<string, string | undefined>;
  /** How long GET /health may take when looking for a running server. */
  probeTimeoutMs?: number;
  /** SIGTERM -> SIGKILL grace when stopping the child. */
  stopGraceMs?: number;
  /** The SDK's retries (refused connections, a full queue). */
  retries?: number;
}

function isLoopbackURL(url: string): boolean {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

function portOf(url: string): number {
  const u = new URL(url);
  return Number(u.port || (u.protocol === "https:" ? 443 : 80));
}

export class ServerManager implements Disposable {
  private readonly emitter = new Emitter<ServerState>();
  /** Fires on every state change. */
  readonly onDidChangeState = this.emitter.event;

  private readonly log: Log;
  private readonly startProcess: ProcessStarter;
  private current: Client | undefined;
  private connecting: Promise<Client> | undefined;
  private proc: ManagedProcess | undefined;
  private procUrl: string | undefined;
  private procKey: string | undefined;
  private inFlight = 0;
  private disposed = false;
  private stateValue: ServerState;

  constructor(private readonly options: ServerManagerOptions) {
    this.log = options.log ?? silentLog;
    this.startProcess = options.startProcess ?? startServerProcess;
    const s = options.settings();
    this.stateValue = {
      kind: "stopped",
      url: serverURL(s.baseUrl),
      model: s.model || undefined,
      owned: false,
      pid: undefined,
      inFlight: 0,
      detail: "not connected yet",
    };
  }

  get state(): ServerState {
    return this.stateValue;
  }

  /** The server's URL: the started child's, else the configured one. */
  get url(): string {
    return this.proc?.running && this.procUrl ? this.procUrl : serverURL(this.options.settings().baseUrl);
  }

  /** The child the extension started, while it runs. */
  get process(): ManagedProcess | undefined {
    return this.proc?.running ? this.proc : undefined;
  }

  /** The connected client, if connected now (no connecting). */
  get connectedClient(): Client | undefined {
    return this.current;
  }

  private setState(patch: Partial<ServerState>): void {
    const next: ServerState = { ...this.stateValue, ...patch, inFlight: this.inFlight };
    if (patch.kind !== undefined && patch.kind !== "error") delete next.error;
    next.owned = this.proc?.running === true;
    next.pid = next.owned ? this.proc?.pid : undefined;
    this.stateValue = next;
    this.emitter.fire(next);
  }

  /** "ready" or "busy", as the requests in flight say. */
  private settled(detail?: string): void {
    this.setState({
      kind: this.inFlight > 0 ? "busy" : "ready",
      detail: detail ?? (this.inFlight > 0 ? `generating (${this.inFlight} request${this.inFlight > 1 ? "s" : ""})` : "ready"),
      url: this.url,
      model: this.current?.model ?? this.stateValue.model,
    });
  }

  /**
   * The client of a server that serves the model: the one found at the base URL, else one
   * started (autoStart). Concurrent callers share one attempt; a failure rejects them all and
   * the next call tries again.
   */
  client(): Promise<Client> {
    if (this.disposed) return Promise.reject(new ServerMissingError("the extension is shutting down", this.url));
    if (this.current !== undefined) return Promise.resolve(this.current);
    this.connecting ??= this.connect(false).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Connect, starting a server even when autoStart is off ("Start Server"). */
  start(): Promise<Client> {
    if (this.current !== undefined) return Promise.resolve(this.current);
    this.connecting ??= this.connect(true).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Stop the child (if the extension started one), forget the client, connect again. */
  async restart(): Promise<Client> {
    await this.connecting?.catch(() => undefined);
    await this.stopChild();
    this.current = undefined;
    return this.start();
  }

  /** Stop the child the extension started; the state becomes "stopped". */
  async stop(): Promise<void> {
    await this.connecting?.catch(() => undefined);
    await this.stopChild();
    this.current = undefined;
    this.setState({ kind: "stopped", detail: "stopped", url: this.url });
  }

  /** Settings changed: forget the client, and stop the child when what it was started with
   * changed; connect again on the next call. */
  async reconfigure(): Promise<void> {
    await this.connecting?.catch(() => undefined);
    this.current = undefined;
    if (this.proc?.running && this.procKey !== this.childKey(this.options.settings())) await this.stopChild();
    const s = this.options.settings();
    this.setState({ kind: "stopped", detail: "settings changed", url: this.url, model: s.model || undefined });
  }

  /**
   * Run a request: counted while it runs (state "busy"), and its failure turned into the one to
   * show (see diagnose). `fn` gets the client.
   */
  async use<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    const client = await this.client();
    this.inFlight++;
    this.settled();
    try {
      return await fn(client);
    } catch (err) {
      throw await this.diagnose(err);
    } finally {
      this.inFlight--;
      if (this.current === client) this.settled();
      else this.setState({});
    }
  }

  /**
   * The failure to show for a request's error, and the state it implies: a broken or refused
   * connection to a child that has exited is a ServerCrashedError; to a server the extension
   * did not start, the client is dropped (found or started again next time); a wrong key or
   * an unknown model puts the state in "error". A 503 (busy) changes nothing: it passes.
   */
  async diagnose(err: unknown): Promise<unknown> {
    if (err instanceof ServerUnavailableError) {
      const proc = this.proc;
      if (proc !== undefined) {
        // the connection may break a moment before the exit is reported
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([proc.exited, new Promise((r) => (timer = setTimeout(r, 2000)))]);
        clearTimeout(timer);
        if (!proc.running) return this.crashError(proc);
      }
      this.current = undefined;
      this.setState({ kind: "error", detail: `no server answers at ${this.url}`, error: err });
      return err;
    }
    if (err instanceof AuthenticationError || err instanceof ModelNotFoundError) {
      this.current = undefined;
      this.setState({ kind: "error", detail: err.message, error: err });
    }
    return err;
  }

  /** GET /v1/capabilities of the connected server (the SDK has no call for it). */
  async capabilities(signal?: AbortSignal): Promise<unknown> {
    const client = this.current;
    if (client === undefined) return undefined;
    const fetchImpl = this.options.fetch ?? ((input, init) => fetch(input, init));
    const key = this.options.settings().apiKey;
    const response = await fetchImpl(`${client.baseURL}/v1/capabilities`, {
      headers: key ? { authorization: `Bearer ${key}` } : {},
      signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(5000)]) : AbortSignal.timeout(5000),
    });
    if (!response.ok) {
      await response.arrayBuffer().catch(() => undefined);
      return undefined;
    }
    return (await response.json()) as unknown;
  }

  private crashError(proc: ManagedProcess): ServerCrashedError {
    const info = proc.exitInfo ?? { code: null, signal: null };
    const output = proc.output().trim();
    return new ServerCrashedError(
      `The botframework server stopped (${describeExit(info.code, info.signal)}).`,
      output,
      info.code,
      info.signal,
    );
  }

  private childKey(s: Settings): string {
    return JSON.stringify([s.baseUrl, s.model, s.server.executable, s.server.port, s.server.args]);
  }

  private clientFor(url: string, s: Settings): Client {
    return new Client({
      baseURL: url,
      apiKey: s.apiKey ?? "",
      model: s.model || undefined,
      timeoutMs: s.requestTimeoutMs,
      retries: this.options.retries ?? 1,
      fetch: this.options.fetch,
    });
  }

  /** Whether anything answers HTTP at `url` (GET /health). */
  private async probe(url: string): Promise<boolean> {
    const fetchImpl = this.options.fetch ?? ((input, init) => fetch(input, init));
    try {
      const response = await fetchImpl(`${url}/health`, { signal: AbortSignal.timeout(this.options.probeTimeoutMs ?? 3000) });
      await response.arrayBuffer().catch(() => undefined);
      return true;
    } catch {
      return false;
    }
  }

  private async connect(forceStart: boolean): Promise<Client> {
    const s = this.options.settings();
    const configured = serverURL(s.baseUrl);
    try {
      let url = configured;
      if (this.proc?.running && this.procUrl) {
        url = this.procUrl;
      } else {
        this.setState({ kind: "connecting", detail: `looking for a server at ${configured}`, url: configured, model: s.model || undefined });
        if (!(await this.probe(configured))) {
          if (!isLoopbackURL(configured)) {
            throw new ServerMissingError(`No botframework server answers at ${configured}.`, configured);
          }
          if (!s.server.autoStart && !forceStart) {
            throw new ServerMissingError(`No botframework server answers at ${configured} (starting one is turned off).`, configured);
          }
          url = await this.spawn(s, configured);
        }
      }
      this.setState({ kind: "connecting", detail: `loading ${s.model || "the default model"}`, url });
      const client = this.clientFor(url, s);
      await client.ready({ timeoutMs: s.server.startTimeoutMs });
      if (this.disposed) throw new ServerMissingError("the extension is shutting down", url);
      this.current = client;
      this.log.info(`connected to ${url} (model ${client.model ?? "?"})`);
      this.settled();
      return client;
    } catch (err) {
      const error = err instanceof ServerUnavailableError && this.proc && !this.proc.running ? this.crashError(this.proc) : err;
      this.log.error(`cannot use the server: ${(error as Error)?.message ?? String(error)}`);
      this.setState({ kind: "error", detail: (error as Error)?.message ?? String(error), error });
      throw error;
    }
  }

  /** Start `botframework serve`; resolves with its URL once /health answers. */
  private async spawn(s: Settings, configured: string): Promise<string> {
    const port = s.server.port || portOf(configured);
    const host = new URL(configured).hostname.replace(/^\[|\]$/g, "");
    const url = s.server.port ? `http://127.0.0.1:${port}` : configured;
    const args = ["serve", "--port", String(port)];
    if (!s.server.port && host !== "localhost" && host !== "127.0.0.1") args.push("--host", host);
    if (s.model) args.push("--model", s.model);
    args.push(...s.server.args);
    const command = serverCommand(s.server.executable || undefined);
    this.log.info(`starting ${command} ${args.join(" ")}`);
    const proc = this.startProcess({
      command,
      args,
      env: this.options.env ?? process.env,
      onOutput: (text) => this.log.append(text),
    });
    this.proc = proc;
    this.procUrl = url;
    this.procKey = this.childKey(s);
    this.setState({ kind: "starting", detail: `starting ${command} serve on port ${port}`, url, model: s.model || undefined });
    void proc.exited.then((info) => this.onChildExit(proc, info));
    try {
      await proc.waitReady(url, s.server.startTimeoutMs, this.options.fetch);
    } catch (err) {
      const info = proc.exitInfo;
      await proc.stop(this.options.stopGraceMs ?? 5000).catch(() => undefined);
      const output = proc.output().trim();
      const code = (info?.error as NodeJS.ErrnoException | undefined)?.code;
      if (code === "ENOENT") {
        throw new ServerMissingError(`The botframework executable was not found: ${command}.`, url, command);
      }
      if (info?.error) throw new ServerStartError(`Cannot run ${command}: ${info.error.message}.`, output);
      if (info) {
        throw new ServerStartError(
          `The botframework server exited with ${describeExit(info.code, info.signal)} before it was ready.`,
          output,
          info.code,
          info.signal,
        );
      }
      throw new ServerStartError(`The botframework server did not get ready: ${(err as Error).message}`, output);
    }
    this.log.info(`server ready at ${url} (pid ${proc.pid})`);
    return url;
  }

  private onChildExit(proc: ManagedProcess, info: ExitInfo): void {
    if (proc !== this.proc) return;
    this.log.warn(`the server exited (${info.error ? info.error.message : describeExit(info.code, info.signal)})`);
    if (this.stoppedOnPurpose.has(proc) || this.disposed) return;
    if (this.stateValue.kind === "starting") return; // spawn() reports it
    this.current = undefined;
    const error = this.crashError(proc);
    this.setState({ kind: "error", detail: error.message, error });
  }

  /** Children stopped by stop(), restart() or dispose(): their exit is no crash. */
  private readonly stoppedOnPurpose = new WeakSet<ManagedProcess>();

  private async stopChild(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined) return;
    this.stoppedOnPurpose.add(proc);
    try {
      await proc.stop(this.options.stopGraceMs ?? 5000);
    } finally {
      if (this.proc === proc) {
        this.proc = undefined;
        this.procUrl = undefined;
        this.procKey = undefined;
      }
    }
  }

  /** Stop the child (deactivate). */
  async dispose(): Promise<void> {
    this.disposed = true;
    this.current = undefined;
    await this.stopChild().catch(() => undefined);
    this.setState({ kind: "stopped", detail: "stopped" });
    this.emitter.dispose();
  }
}
