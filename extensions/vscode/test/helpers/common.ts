/** What unit and integration tests share: settings, a recording chat view, an unhandled
 * rejection check, waiting by polls. */

import assert from "node:assert/strict";
import { after } from "node:test";

import type { ToWebview } from "../../src/core/chatProtocol.js";
import type { ChatView } from "../../src/core/chatController.js";
import { ACTION_TITLES, type ActionId, type Problem } from "../../src/core/errorPresenter.js";
import type { Log } from "../../src/core/ports.js";
import { DEFAULT_SETTINGS, withSettings, type DeepPartial, type Settings } from "../../src/core/settings.js";

/**
 * Record every unhandledRejection of this test file's process, and fail the file (an after()
 * hook) when there was any.
 */
export function checkUnhandledRejections(): { rejections: unknown[] } {
  const state = { rejections: [] as unknown[] };
  process.on("unhandledRejection", (reason) => {
    state.rejections.push(reason);
  });
  after(() => {
    assert.deepEqual(
      state.rejections.map((r) => (r instanceof Error ? `${r.name}: ${r.message}` : String(r))),
      [],
      "no unhandled promise rejections",
    );
  });
  return state;
}

/** Settings for tests: a mutable object and its getter. */
export function testSettings(patch: DeepPartial<Settings> = {}): { value: Settings; get: () => Settings; set(p: DeepPartial<Settings>): void } {
  const holder = {
    value: withSettings(DEFAULT_SETTINGS, { requestTimeoutMs: 20_000, completion: { debounceMs: 0 }, ...patch }),
    get: () => holder.value,
    set(p: DeepPartial<Settings>) {
      holder.value = withSettings(holder.value, p);
    },
  };
  return holder;
}

/** A chat view that keeps what it was sent. */
export class RecordingView implements ChatView {
  readonly messages: ToWebview[] = [];

  postMessage(message: ToWebview): boolean {
    this.messages.push(JSON.parse(JSON.stringify(message)) as ToWebview);
    return true;
  }

  of<T extends ToWebview["type"]>(type: T): Extract<ToWebview, { type: T }>[] {
    return this.messages.filter((m): m is Extract<ToWebview, { type: T }> => m.type === type);
  }

  /** The text streamed to a turn. */
  streamed(id: string): string {
    return this.of("delta")
      .filter((d) => d.id === id)
      .map((d) => d.text)
      .join("");
  }
}

/** A log that keeps its lines (and prints nothing). */
export function memoryLog(): Log & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => lines.push(`info: ${m}`),
    warn: (m) => lines.push(`warn: ${m}`),
    error: (m) => lines.push(`error: ${m}`),
    append: (t) => lines.push(`out: ${t}`),
  };
}

/** Poll `check` until it returns a value other than undefined / false. Bounded by a count. */
export async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, polls = 600, everyMs = 50): Promise<T> {
  for (let i = 0; i < polls; i++) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`gave up waiting: ${what}`);
}

export function actionIds(problem: Problem | undefined): ActionId[] {
  return problem?.actions ?? [];
}

export function titles(ids: ActionId[]): string[] {
  return ids.map((id) => ACTION_TITLES[id]);
}
