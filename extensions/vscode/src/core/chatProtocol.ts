/**
 * The messages between the chat webview (media/chat.js) and ChatController.
 *
 *   webview -> extension: ready | ask | stop | new | copy | insert | action
 *   extension -> webview: history (everything, on ready) | turn (a new one) | delta (more text
 *       of the answer being streamed) | end (its status) | server (state for the header) |
 *       focus | prefill
 */

import type { ActionId } from "./errorPresenter.js";
import type { ServerStateKind } from "./serverManager.js";

export type TurnRole = "user" | "assistant" | "error";
export type TurnStatus = "streaming" | "done" | "stopped" | "failed";

export interface TurnView {
  id: string;
  role: TurnRole;
  /** Markdown (user, assistant) or plain text (error). */
  text: string;
  status?: TurnStatus;
  /** Error turns: the buttons (only the latest error has any). */
  actions?: { id: ActionId; title: string }[];
}

export interface ServerView {
  kind: ServerStateKind;
  model: string | undefined;
  detail: string;
}

export type ToWebview =
  | { type: "history"; turns: TurnView[]; generating: boolean; server: ServerView }
  | { type: "turn"; turn: TurnView }
  | { type: "delta"; id: string; text: string }
  | { type: "end"; id: string; status: TurnStatus }
  | { type: "update"; turn: TurnView }
  | { type: "remove"; id: string }
  | { type: "generating"; generating: boolean }
  | { type: "server"; server: ServerView }
  | { type: "focus" }
  | { type: "prefill"; text: string };

export type FromWebview =
  | { type: "ready" }
  | { type: "ask"; text: string }
  | { type: "stop" }
  | { type: "new" }
  | { type: "copy"; text: string }
  | { type: "insert"; text: string }
  | { type: "action"; action: ActionId; turnId: string };

/** Whether a value from the webview is a message this side understands (the webview is not trusted). */
export function isFromWebview(value: unknown): value is FromWebview {
  if (typeof value !== "object" || value === null) return false;
  const m = value as Record<string, unknown>;
  switch (m["type"]) {
    case "ready":
    case "stop":
    case "new":
      return true;
    case "ask":
    case "copy":
    case "insert":
      return typeof m["text"] === "string";
    case "action":
      return typeof m["action"] === "string" && typeof m["turnId"] === "string";
    default:
      return false;
  }
}
