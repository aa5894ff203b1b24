/**
 * The server's state in the status bar: "$(loading~spin) Botframework: starting",
 * "$(hubot) smollm2-135m-instruct", "$(sync~spin) smollm2-135m-instruct" (generating),
 * "$(error) Botframework" (error, on an error background). A click opens the server menu.
 */

import type { ServerState } from "./serverManager.js";

/** VS Code's StatusBarItem, as far as it is used. */
export interface StatusBarItemLike {
  text: string;
  tooltip: unknown;
  command: unknown;
  /** A ThemeColor in VS Code; `errorBackground` is passed in. */
  backgroundColor: unknown;
  show(): void;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

export function statusView(state: ServerState): StatusView {
  const model = state.model ?? "default model";
  const where = `${state.url}${state.owned ? ` (started by VS Code, pid ${state.pid})` : ""}`;
  switch (state.kind) {
    case "stopped":
      return { text: "$(circle-slash) Botframework", tooltip: `Botframework: ${state.detail}. Click for actions.`, error: false };
    case "connecting":
      return { text: "$(loading~spin) Botframework", tooltip: `Botframework: ${state.detail}`, error: false };
    case "starting":
      return { text: "$(loading~spin) Botframework: starting", tooltip: `Botframework: ${state.detail}`, error: false };
    case "ready":
      return { text: `$(hubot) ${model}`, tooltip: `Botframework: ready, ${model} at ${where}`, error: false };
    case "busy":
      return { text: `$(sync~spin) ${model}`, tooltip: `Botframework: ${state.detail}, ${model} at ${where}`, error: false };
    case "error":
      return { text: "$(error) Botframework", tooltip: `Botframework: ${state.detail} Click for actions.`, error: true };
  }
}

export class StatusBarPresenter {
  constructor(
    private readonly item: StatusBarItemLike,
    private readonly errorBackground: unknown,
    command: string,
  ) {
    item.command = command;
    item.show();
  }

  update(state: ServerState): void {
    const view = statusView(state);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? this.errorBackground : undefined;
  }
}
