/**
 * The chat webview's HTML: a strict Content-Security-Policy (no inline script or style; the
 * script runs by its nonce), the page's skeleton, media/chat.css and media/chat.js. The same
 * function serves VS Code's webview and the browser test harness.
 */

import { randomBytes } from "node:crypto";

export interface ChatHtmlOptions {
  /** webview.cspSource: where the webview may load resources from. */
  cspSource: string;
  nonce: string;
  /** media/chat.js and media/chat.css as the webview may load them (asWebviewUri). */
  scriptUri: string;
  styleUri: string;
}

export function makeNonce(): string {
  return randomBytes(18).toString("base64").replace(/[^A-Za-z0-9]/g, "");
}

function attr(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function chatHtml(o: ChatHtmlOptions): string {
  const csp = [
    "default-src 'none'",
    `style-src ${o.cspSource}`,
    `img-src ${o.cspSource} data:`,
    `font-src ${o.cspSource}`,
    `script-src 'nonce-${o.nonce}'`,
  ].join("; ");
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="${attr(csp)}">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <link rel="stylesheet" href="${attr(o.styleUri)}">
  <title>Botframework Chat</title>
</head>
<body>
  <header class="bar">
    <span class="server" id="server" role="status" title="The botframework server">
      <span class="dot" id="server-dot"></span><span id="server-label">Connecting…</span>
    </span>
    <button class="icon-button" id="new-chat" title="New chat (forgets this conversation)" aria-label="New chat">New chat</button>
  </header>
  <main id="log" class="log" aria-live="polite">
    <section class="empty" id="empty">
      <h1>Local AI, on your machine</h1>
      <p>Ask about your code, or select code and run <b>Botframework: Explain Selection</b>,
        <b>Rewrite Selection</b> or <b>Generate Docstring</b>.</p>
      <p class="hint">Answers come from a botframework server on this machine; nothing leaves it.</p>
    </section>
  </main>
  <footer class="composer">
    <textarea id="input" rows="3" placeholder="Ask about your code… (Enter to send, Shift+Enter for a new line)" aria-label="Question"></textarea>
    <div class="composer-actions">
      <span class="hint" id="composer-hint"></span>
      <button id="stop" class="secondary" hidden title="Stop the answer">Stop</button>
      <button id="send" class="primary" title="Send (Enter)">Send</button>
    </div>
  </footer>
  <script nonce="${attr(o.nonce)}" src="${attr(o.scriptUri)}"></script>
</body>
</html>
`;
}
