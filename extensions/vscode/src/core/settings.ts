/**
 * The extension's settings (contributes.configuration in package.json), read through a getter
 * so that tests can pass plain objects. The API key is not a setting: it lives in VS Code's
 * SecretStorage and is passed in.
 */

export interface Settings {
  /** Where to find a running server. */
  baseUrl: string;
  /** A model name or .gguf path; "" for the server's default. */
  model: string;
  apiKey: string | undefined;
  server: {
    /** Start `botframework serve` when nothing answers at a loopback baseUrl. */
    autoStart: boolean;
    /** "" for $BOTFRAMEWORK_BIN, else `botframework` on PATH. */
    executable: string;
    /** 0 for baseUrl's port. */
    port: number;
    args: string[];
    startTimeoutMs: number;
  };
  requestTimeoutMs: number;
  chat: { systemPrompt: string; maxTokens: number; temperature: number };
  completion: { enabled: boolean; debounceMs: number; maxTokens: number };
}

export const DEFAULT_SETTINGS: Settings = {
  baseUrl: "http://127.0.0.1:8000",
  model: "",
  apiKey: undefined,
  server: { autoStart: true, executable: "", port: 0, args: [], startTimeoutMs: 300_000 },
  requestTimeoutMs: 120_000,
  chat: {
    systemPrompt: "You are a helpful programming assistant. Answer concisely; put code in fenced code blocks.",
    maxTokens: 1024,
    temperature: 0.2,
  },
  completion: { enabled: true, debounceMs: 300, maxTokens: 64 },
};

/** A configuration section's getter: VS Code's `workspace.getConfiguration("botframework").get`. */
export type ConfigGetter = (key: string) => unknown;

function str(value: unknown, fallback: string): string {
  return typeof value === "string" ? value.trim() : fallback;
}

function num(value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  return typeof value === "number" && Number.isFinite(value) ? Math.min(max, Math.max(min, value)) : fallback;
}

function bool(value: unknown, fallback: boolean): boolean {
  return typeof value === "boolean" ? value : fallback;
}

/** The settings from a getter of the `botframework` section; anything missing or of the wrong
 * type takes its default. */
export function readSettings(get: ConfigGetter, apiKey: string | undefined): Settings {
  const d = DEFAULT_SETTINGS;
  const args = get("server.args");
  return {
    baseUrl: str(get("baseUrl"), d.baseUrl) || d.baseUrl,
    model: str(get("model"), d.model),
    apiKey: apiKey || undefined,
    server: {
      autoStart: bool(get("server.autoStart"), d.server.autoStart),
      executable: str(get("server.executable"), d.server.executable),
      port: Math.round(num(get("server.port"), d.server.port, 0, 65535)),
      args: Array.isArray(args) ? args.filter((a): a is string => typeof a === "string") : [],
      startTimeoutMs: num(get("server.startTimeoutSeconds"), d.server.startTimeoutMs / 1000, 1) * 1000,
    },
    requestTimeoutMs: num(get("requestTimeoutSeconds"), d.requestTimeoutMs / 1000, 0.001) * 1000,
    chat: {
      systemPrompt: str(get("chat.systemPrompt"), d.chat.systemPrompt),
      maxTokens: Math.round(num(get("chat.maxTokens"), d.chat.maxTokens, 1)),
      temperature: num(get("chat.temperature"), d.chat.temperature, 0, 2),
    },
    completion: {
      enabled: bool(get("completion.enabled"), d.completion.enabled),
      debounceMs: num(get("completion.debounceMs"), d.completion.debounceMs, 0),
      maxTokens: Math.round(num(get("completion.maxTokens"), d.completion.maxTokens, 1)),
    },
  };
}

/** Settings with some fields replaced (tests, and the extension's overrides). */
export function withSettings(base: Settings, patch: DeepPartial<Settings>): Settings {
  return {
    ...base,
    ...patch,
    server: { ...base.server, ...patch.server } as Settings["server"],
    chat: { ...base.chat, ...patch.chat },
    completion: { ...base.completion, ...patch.completion },
  } as Settings;
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };
