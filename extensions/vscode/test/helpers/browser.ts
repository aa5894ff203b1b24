/**
 * The chat webview in headless Chromium (Debian's package), driven by puppeteer-core.
 *
 *   a local HTTP server serves the page from chatHtml() (the extension's own function, CSP and
 *   all) and media/chat.js, media/chat.css as they are
 *   a script run before the page's own stands in for VS Code's webview host: acquireVsCodeApi()
 *   whose postMessage goes over a CDP binding to the real ChatController (handleMessage), and
 *   VS Code's dark theme variables; the controller's messages come back as `message` events
 *   (page.evaluate), as VS Code delivers them
 *   everything the page logs as an error (console, uncaught exceptions, CSP violations, failed
 *   loads) is collected for the tests to assert on
 */

import { accessSync, constants, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

import type { Browser, Page } from "puppeteer-core";

import type { ToWebview } from "../../src/core/chatProtocol.js";
import { ChatController, type ChatView } from "../../src/core/chatController.js";
import { chatHtml, makeNonce } from "../../src/core/chatHtml.js";
import { extensionRoot } from "./paths.js";

/** $CHROMIUM_BIN, else Debian's chromium; a clear error when there is none. */
export function chromiumExecutable(): string {
  const candidates = [process.env["CHROMIUM_BIN"], "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter((c): c is string => !!c);
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(`no Chromium found (${candidates.join(", ")}): apt-get install -y chromium, or set CHROMIUM_BIN`);
}

export async function launchBrowser(): Promise<Browser> {
  const puppeteer = (await import("puppeteer-core")).default;
  return puppeteer.launch({
    executablePath: chromiumExecutable(),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--font-render-hinting=none"],
  });
}

/** Serves the chat page and its media. */
export async function startPageServer(): Promise<{ url: string; close(): Promise<void> }> {
  const media = join(extensionRoot(), "media");
  let origin = "";
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(chatHtml({ cspSource: origin, nonce: makeNonce(), scriptUri: `${origin}/media/chat.js`, styleUri: `${origin}/media/chat.css` }));
      return;
    }
    if (path === "/favicon.ico") {
      res.writeHead(204).end(); // the browser asks; a webview has none
      return;
    }
    const file = /^\/media\/(chat\.js|chat\.css)$/.exec(path)?.[1];
    if (file === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file.endsWith(".js") ? "text/javascript" : "text/css" });
    res.end(readFileSync(join(media, file)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `${origin}/`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** VS Code's Dark Modern theme, the variables the page uses (VS Code sets them on <html>). */
const THEME: Record<string, string> = {
  "--vscode-font-family": "-apple-system, BlinkMacSystemFont, 'Segoe UI', 'Ubuntu', 'Droid Sans', 'DejaVu Sans', sans-serif",
  "--vscode-font-size": "13px",
  "--vscode-editor-font-family": "'Droid Sans Mono', 'DejaVu Sans Mono', monospace",
  "--vscode-editor-font-size": "13px",
  "--vscode-foreground": "#cccccc",
  "--vscode-descriptionForeground": "#9d9d9d",
  "--vscode-sideBar-background": "#181818",
  "--vscode-editor-background": "#1f1f1f",
  "--vscode-panel-border": "#2b2b2b",
  "--vscode-textCodeBlock-background": "#2b2b2b",
  "--vscode-input-background": "#313131",
  "--vscode-input-foreground": "#cccccc",
  "--vscode-input-border": "#3c3c3c",
  "--vscode-focusBorder": "#0078d4",
  "--vscode-button-background": "#0078d4",
  "--vscode-button-foreground": "#ffffff",
  "--vscode-button-hoverBackground": "#026ec1",
  "--vscode-button-secondaryBackground": "#313131",
  "--vscode-button-secondaryForeground": "#cccccc",
  "--vscode-errorForeground": "#f85149",
  "--vscode-testing-iconPassed": "#73c991",
};

/** Runs in the page before its own script: VS Code's part of a webview. */
function hostShim(theme: Record<string, string>): void {
  let state: unknown;
  const w = window as unknown as Record<string, unknown>;
  w["acquireVsCodeApi"] = () => ({
    postMessage: (message: unknown) => {
      void (w["__toExtension"] as (m: unknown) => Promise<unknown>)(message);
    },
    getState: () => state,
    setState: (value: unknown) => {
      state = value;
      return value;
    },
  });
  document.addEventListener("DOMContentLoaded", () => {
    for (const [name, value] of Object.entries(theme)) document.documentElement.style.setProperty(name, value);
    document.body.classList.add("vscode-dark");
  });
}

export interface PageProblems {
  /** Console errors, uncaught exceptions, failed requests. */
  errors: string[];
}

/** Open the chat page in a new tab, bridged to `chat`; returns the page and a ChatView to attach. */
export async function openChatPage(browser: Browser, url: string, chat: ChatController): Promise<{ page: Page; view: ChatView & { posted: ToWebview[] }; problems: PageProblems }> {
  const page = await browser.newPage();
  await page.setViewport({ width: 440, height: 700, deviceScaleFactor: 2 });
  const problems: PageProblems = { errors: [] };
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "assert") problems.errors.push(`console.${msg.type()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.errors.push(`uncaught: ${err instanceof Error ? err.message : String(err)}`));
  page.on("requestfailed", (req) => problems.errors.push(`request failed: ${req.url()} ${req.failure()?.errorText ?? ""}`));
  page.on("response", (res) => {
    if (res.status() >= 400) problems.errors.push(`HTTP ${res.status()}: ${res.url()}`);
  });
  page.on("dialog", (dialog) => {
    problems.errors.push(`dialog: ${dialog.message()}`);
    void dialog.dismiss();
  });
  await page.exposeFunction("__toExtension", (message: unknown) => chat.handleMessage(message));
  await page.evaluateOnNewDocument(hostShim, THEME);
  const posted: ToWebview[] = [];
  const view = {
    posted,
    postMessage(message: ToWebview) {
      posted.push(message);
      return page
        .evaluate((m) => {
          window.dispatchEvent(new MessageEvent("message", { data: m }));
        }, message as unknown as Record<string, unknown>)
        .then(
          () => true,
          () => false,
        );
    },
  };
  chat.attach(view);
  await page.goto(url, { waitUntil: "load" });
  return { page, view, problems };
}
