/**
 * Inline completion (ghost text): fill-in-the-middle when the model can, else the text before
 * the cursor continued.
 *
 *   provide(prefix, suffix, token) -> aborts the request before it (every keystroke: the SDK
 *       closes its connection and the server frees the slot) -> waits debounceMs (abortable)
 *       -> FIM: POST /v1/completions { prompt: prefix, suffix }
 *          the model has no FIM tokens (400 fim_not_supported, or /v1/capabilities says so)
 *          -> remembered for that model, and from then on: POST /v1/completions { prompt:
 *          prefix } stopping at a blank line
 *       -> the text cleaned (overlap with the suffix cut, at most maxLines) or undefined
 *
 * It never starts a server and never shows errors (it runs on every keystroke): when the
 * server is not ready it offers nothing, and failures are logged.
 */

import { BadRequestError, type Client, type CompletionOptions } from "@botframework/sdk";

import { isAbort } from "./errorPresenter.js";
import { delay, silentLog, type CancellationLike, type Disposable, type Log } from "./ports.js";
import type { ServerState } from "./serverManager.js";
import type { Settings } from "./settings.js";

export type FimSupport = "yes" | "no" | "unknown";
export type CompletionMode = "fim" | "prefix";

export interface CompletionServer {
  readonly state: ServerState;
  use<T>(fn: (client: Client) => Promise<T>): Promise<T>;
  /** GET /v1/capabilities, or undefined when it cannot be read. */
  capabilities?(signal?: AbortSignal): Promise<unknown>;
}

export interface CompletionHost {
  server: CompletionServer;
  settings(): Settings;
  log?: Log;
  /** More request options (tests: long answers to cancel). */
  requestOptions?: CompletionOptions;
}

export interface CompletionInput {
  /** The document's text before the cursor. */
  prefix: string;
  /** The document's text after the cursor. */
  suffix: string;
  languageId?: string;
}

export const MAX_PREFIX_CHARS = 3000;
export const MAX_SUFFIX_CHARS = 1000;
export const MAX_LINES = 12;

/** What /v1/capabilities says about fill-in-the-middle; "unknown" when it does not say. */
export function fimFromCapabilities(caps: unknown): FimSupport {
  const model = (caps as { model?: Record<string, unknown> } | undefined)?.model;
  if (typeof model !== "object" || model === null) return "unknown";
  const templateCaps = model["template_caps"] as Record<string, unknown> | undefined;
  for (const value of [model["fim"], model["supports_fim"], model["infill"], templateCaps?.["supports_fim"]]) {
    if (typeof value === "boolean") return value ? "yes" : "no";
  }
  return "unknown";
}

/** Whether a failure says the model has no fill-in-the-middle. */
export function isFimUnsupported(err: unknown): boolean {
  return err instanceof BadRequestError && (err.code === "fim_not_supported" || (err.param === "suffix" && err.status === 400));
}

/** The last `max` characters of the text before the cursor, starting at a line. */
export function clipPrefix(prefix: string, max = MAX_PREFIX_CHARS): string {
  if (prefix.length <= max) return prefix;
  const cut = prefix.slice(-max);
  const nl = cut.indexOf("\n");
  return nl >= 0 && nl < cut.length - 1 ? cut.slice(nl + 1) : cut;
}

/** The first `max` characters of the text after the cursor, ending at a line. */
export function clipSuffix(suffix: string, max = MAX_SUFFIX_CHARS): string {
  if (suffix.length <= max) return suffix;
  const cut = suffix.slice(0, max);
  const nl = cut.lastIndexOf("\n");
  return nl > 0 ? cut.slice(0, nl + 1) : cut;
}

/**
 * The completion to show: no doubled indentation or space at the cursor, cut at a blank line
 * (prefix mode), without what the suffix already
 * has (the model often repeats the closing bracket), at most MAX_LINES lines; undefined when
 * nothing is left.
 */
export function cleanCompletion(text: string, suffix: string, mode: CompletionMode, prefix = ""): string | undefined {
  let out = text.replace(/\r\n/g, "\n");
  // the cursor after indentation: the model's own leading spaces would indent twice
  const lineBefore = prefix.slice(prefix.lastIndexOf("\n") + 1);
  if (lineBefore !== "" && /^[ \t]*$/.test(lineBefore)) out = out.replace(/^[ \t]+/, "");
  else if (/[ \t]$/.test(lineBefore) && out.startsWith(" ")) out = out.slice(1);
  if (mode === "prefix") {
    const blank = out.search(/\n[ \t]*\n/);
    if (blank >= 0) out = out.slice(0, blank);
  }
  const lines = out.split("\n");
  if (lines.length > MAX_LINES) out = lines.slice(0, MAX_LINES).join("\n");
  out = out.replace(/\s+$/, "");
  const head = suffix.replace(/^[ \t]+/, "");
  for (let n = Math.min(out.length, head.length); n > 0; n--) {
    const part = head.slice(0, n);
    if (!out.endsWith(part) || part.trim() === "") continue;
    // a short overlap counts only when it is closing punctuation (`)`, `]`, `"`, ...)
    if (n < 3 && !/^[)\]}"'`;,>]+$/.test(part.trim())) continue;
    out = out.slice(0, out.length - n).replace(/\s+$/, "");
    break;
  }
  return out.trim() === "" ? undefined : out;
}

export class CompletionController implements Disposable {
  private current: AbortController | undefined;
  private readonly fim = new Map<string, FimSupport>();
  private readonly log: Log;
  /** Counters (tests, the log). */
  readonly counts = { provided: 0, requests: 0, fim: 0, prefix: 0, cancelled: 0, failed: 0 };
  /** The mode of the last request sent. */
  lastMode: CompletionMode | undefined;

  constructor(private readonly host: CompletionHost) {
    this.log = host.log ?? silentLog;
  }

  /** What is known about a model's fill-in-the-middle. */
  fimSupport(model: string): FimSupport {
    return this.fim.get(model) ?? "unknown";
  }

  /**
   * A completion at the cursor, or undefined (nothing, cancelled by the token or by the next
   * call, server not ready, failed). Never rejects.
   */
  async provide(input: CompletionInput, token?: CancellationLike): Promise<string | undefined> {
    this.counts.provided++;
    this.current?.abort(new Error("superseded by a newer completion request"));
    const controller = new AbortController();
    this.current = controller;
    const link = token?.onCancellationRequested(() => controller.abort(new Error("cancelled")));
    if (token?.isCancellationRequested) controller.abort(new Error("cancelled"));
    try {
      const settings = this.host.settings();
      if (!settings.completion.enabled) return undefined;
      if (!(await delay(settings.completion.debounceMs, controller.signal))) {
        this.counts.cancelled++;
        return undefined;
      }
      const kind = this.host.server.state.kind;
      if (kind !== "ready" && kind !== "busy") return undefined;
      return await this.host.server.use((client) => this.request(client, input, settings, controller.signal));
    } catch (err) {
      if (isAbort(err) || controller.signal.aborted) {
        this.counts.cancelled++;
        return undefined;
      }
      this.counts.failed++;
      this.log.warn(`inline completion failed: ${(err as Error)?.message ?? String(err)}`);
      return undefined;
    } finally {
      link?.dispose();
      if (this.current === controller) this.current = undefined;
    }
  }

  private async fimFor(client: Client, signal: AbortSignal): Promise<FimSupport> {
    const model = client.model ?? "";
    const known = this.fim.get(model);
    if (known !== undefined) return known;
    let support: FimSupport = "unknown";
    try {
      support = fimFromCapabilities(await this.host.server.capabilities?.(signal));
    } catch (err) {
      if (signal.aborted) throw err;
    }
    if (support !== "unknown") this.fim.set(model, support);
    return support;
  }

  private async request(client: Client, input: CompletionInput, settings: Settings, signal: AbortSignal): Promise<string | undefined> {
    const prefix = clipPrefix(input.prefix);
    const suffix = clipSuffix(input.suffix);
    const options: CompletionOptions = {
      maxTokens: settings.completion.maxTokens,
      temperature: 0.1,
      priority: "completion",
      ...this.host.requestOptions,
      signal,
    };
    const model = client.model ?? "";
    if ((await this.fimFor(client, signal)) !== "no") {
      try {
        this.counts.requests++;
        this.lastMode = "fim";
        const result = await client.complete(prefix, { ...options, suffix });
        this.fim.set(model, "yes");
        this.counts.fim++;
        return cleanCompletion(result.text, suffix, "fim", prefix);
      } catch (err) {
        if (!isFimUnsupported(err)) throw err;
        this.fim.set(model, "no");
        this.log.info(`${model || "the model"} has no fill-in-the-middle: completing the text before the cursor instead`);
      }
    }
    this.counts.requests++;
    this.lastMode = "prefix";
    const result = await client.complete(prefix, { stop: ["\n\n"], ...options });
    this.counts.prefix++;
    return cleanCompletion(result.text, suffix, "prefix", prefix);
  }

  /** Abort the request in flight. */
  cancel(): void {
    this.current?.abort(new Error("cancelled"));
  }

  dispose(): void {
    this.cancel();
  }
}
