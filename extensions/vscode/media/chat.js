// @ts-check
/**
 * The chat webview: shows the conversation ChatController keeps, and sends it what the user
 * does. It builds every element with the DOM API (never innerHTML), so a model's answer can
 * hold any text. Protocol: src/core/chatProtocol.ts.
 */
(function () {
  "use strict";

  // @ts-ignore: provided by VS Code (or by the test harness)
  const vscode = acquireVsCodeApi();

  /** @type {{ prompts: string[], draft: string }} */
  const saved = Object.assign({ prompts: [], draft: "" }, vscode.getState() || {});

  const log = /** @type {HTMLElement} */ (document.getElementById("log"));
  const empty = /** @type {HTMLElement} */ (document.getElementById("empty"));
  const input = /** @type {HTMLTextAreaElement} */ (document.getElementById("input"));
  const send = /** @type {HTMLButtonElement} */ (document.getElementById("send"));
  const stop = /** @type {HTMLButtonElement} */ (document.getElementById("stop"));
  const newChat = /** @type {HTMLButtonElement} */ (document.getElementById("new-chat"));
  const serverDot = /** @type {HTMLElement} */ (document.getElementById("server-dot"));
  const serverLabel = /** @type {HTMLElement} */ (document.getElementById("server-label"));
  const server = /** @type {HTMLElement} */ (document.getElementById("server"));
  const hint = /** @type {HTMLElement} */ (document.getElementById("composer-hint"));

  /** @type {Map<string, {turn: any, el: HTMLElement, body: HTMLElement, dirty: boolean}>} */
  const turns = new Map();
  let generating = false;
  let promptIndex = -1;
  let frame = 0;

  input.value = saved.draft;

  function save() {
    vscode.setState({ prompts: saved.prompts.slice(-50), draft: input.value });
  }

  /** @param {any} message */
  function post(message) {
    vscode.postMessage(message);
  }

  // -- markdown (a small, safe subset) -----------------------------------------------------

  /**
   * Inline markdown into `parent`: `code`, **bold**, *italic*, [links](url) as text.
   * @param {HTMLElement} parent @param {string} text
   */
  function inline(parent, text) {
    const pattern = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      const token = match[0];
      let el;
      if (match[1]) {
        el = document.createElement("code");
        el.textContent = token.slice(1, -1);
      } else if (match[2]) {
        el = document.createElement("strong");
        el.textContent = token.slice(2, -2);
      } else {
        el = document.createElement("em");
        el.textContent = token.slice(1, -1);
      }
      parent.appendChild(el);
      last = match.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  /** @param {HTMLElement} parent @param {string} text */
  function prose(parent, text) {
    const blocks = text.split(/\n{2,}/);
    for (const block of blocks) {
      if (block.trim() === "") continue;
      const lines = block.split("\n");
      const listItem = /^\s*(?:[-*+]|\d+[.)])\s+/;
      if (lines.every((l) => l.trim() === "" || listItem.test(l))) {
        const ordered = /^\s*\d/.test(lines[0] || "");
        const list = document.createElement(ordered ? "ol" : "ul");
        for (const line of lines) {
          if (line.trim() === "") continue;
          const li = document.createElement("li");
          inline(li, line.replace(listItem, ""));
          list.appendChild(li);
        }
        parent.appendChild(list);
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(lines[0] || "");
      if (heading && lines.length === 1) {
        const h = document.createElement("p");
        h.className = "heading";
        inline(h, heading[2] || "");
        parent.appendChild(h);
        continue;
      }
      const p = document.createElement("p");
      lines.forEach((line, i) => {
        if (i > 0) p.appendChild(document.createElement("br"));
        inline(p, line);
      });
      parent.appendChild(p);
    }
  }

  /** @param {string} label @param {string} title @param {() => void} onClick */
  function button(label, title, onClick) {
    const b = document.createElement("button");
    b.className = "small";
    b.textContent = label;
    b.title = title;
    b.addEventListener("click", onClick);
    return b;
  }

  /** @param {HTMLElement} parent @param {string} lang @param {string} code @param {boolean} open */
  function codeBlock(parent, lang, code, open) {
    const wrap = document.createElement("div");
    wrap.className = open ? "code streaming-code" : "code";
    const head = document.createElement("div");
    head.className = "code-head";
    const label = document.createElement("span");
    label.className = "lang";
    label.textContent = lang || "code";
    head.appendChild(label);
    const copy = button("Copy", "Copy to the clipboard", () => {
      post({ type: "copy", text: code });
      copy.textContent = "Copied";
      setTimeout(() => (copy.textContent = "Copy"), 1200);
    });
    copy.classList.add("copy");
    const insert = button("Insert", "Insert at the cursor of the editor", () => post({ type: "insert", text: code }));
    insert.classList.add("insert");
    head.appendChild(copy);
    head.appendChild(insert);
    const pre = document.createElement("pre");
    const codeEl = document.createElement("code");
    codeEl.textContent = code;
    pre.appendChild(codeEl);
    wrap.appendChild(head);
    wrap.appendChild(pre);
    parent.appendChild(wrap);
  }

  /** Markdown into `parent`; a fence still open (streaming) is shown as code. @param {HTMLElement} parent @param {string} text */
  function markdown(parent, text) {
    const fence = /```([^\n`]*)\n([\s\S]*?)(?:```|$)/g;
    let last = 0;
    let match;
    while ((match = fence.exec(text)) !== null) {
      if (match.index > last) prose(parent, text.slice(last, match.index));
      const closed = match[0].endsWith("```") && match[0].length > 3 + (match[1] || "").length + 1;
      codeBlock(parent, (match[1] || "").trim(), (match[2] || "").replace(/\n$/, ""), !closed);
      last = match.index + match[0].length;
      if (match[0].length === 0) break;
    }
    if (last < text.length) prose(parent, text.slice(last));
  }

  // -- turns -------------------------------------------------------------------------------

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  /** @param {any} turn @param {HTMLElement} body */
  function renderBody(turn, body) {
    body.textContent = "";
    if (turn.role === "error") {
      const p = document.createElement("p");
      p.textContent = turn.text;
      body.appendChild(p);
      const actions = document.createElement("div");
      actions.className = "actions";
      for (const action of turn.actions || []) {
        const b = button(action.title, action.title, () => {
          for (const other of actions.querySelectorAll("button")) /** @type {HTMLButtonElement} */ (other).disabled = true;
          post({ type: "action", action: action.id, turnId: turn.id });
        });
        b.dataset.action = action.id;
        actions.appendChild(b);
      }
      if (actions.childElementCount) body.appendChild(actions);
      return;
    }
    if (turn.role === "user") {
      markdown(body, turn.text);
      return;
    }
    if (turn.text === "" && turn.status === "streaming") {
      const wait = document.createElement("span");
      wait.className = "thinking";
      wait.textContent = "Thinking";
      body.appendChild(wait);
      return;
    }
    markdown(body, turn.text);
    if (turn.status === "stopped") {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = "Stopped.";
      body.appendChild(note);
    }
  }

  /** @param {any} turn */
  function addTurn(turn) {
    empty.hidden = true;
    const follow = nearBottom();
    const el = document.createElement("article");
    el.className = `turn ${turn.role}`;
    el.dataset.id = turn.id;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = turn.role === "user" ? "You" : turn.role === "assistant" ? "Botframework" : "Problem";
    const body = document.createElement("div");
    body.className = "body";
    el.appendChild(who);
    el.appendChild(body);
    log.appendChild(el);
    const entry = { turn: Object.assign({}, turn), el, body, dirty: false };
    turns.set(turn.id, entry);
    paint(entry);
    if (follow || turn.role !== "assistant") scrollDown();
  }

  /** @param {{turn: any, el: HTMLElement, body: HTMLElement, dirty: boolean}} entry */
  function paint(entry) {
    entry.dirty = false;
    entry.el.classList.toggle("streaming", entry.turn.status === "streaming");
    entry.el.classList.toggle("failed", entry.turn.status === "failed");
    renderBody(entry.turn, entry.body);
  }

  function flush() {
    frame = 0;
    const follow = nearBottom();
    for (const entry of turns.values()) if (entry.dirty) paint(entry);
    if (follow) scrollDown();
  }

  function schedule() {
    if (frame === 0) frame = requestAnimationFrame(flush);
  }

  /** @param {boolean} value */
  function setGenerating(value) {
    generating = value;
    stop.hidden = !value;
    send.disabled = value;
    hint.textContent = value ? "Generating…" : "";
    document.body.classList.toggle("generating", value);
  }

  /** @param {any} s */
  function setServer(s) {
    if (!s) return;
    server.dataset.kind = s.kind;
    serverDot.className = `dot ${s.kind}`;
    const model = s.model || "default model";
    const words = {
      stopped: "not connected",
      connecting: "connecting…",
      starting: "starting the server…",
      ready: model,
      busy: `${model} · generating`,
      error: "server problem",
    };
    serverLabel.textContent = words[/** @type {keyof typeof words} */ (s.kind)] || s.kind;
    server.title = s.detail || "";
  }

  function reset() {
    for (const entry of turns.values()) entry.el.remove();
    turns.clear();
    empty.hidden = false;
  }

  // -- messages from the extension -----------------------------------------------------------

  window.addEventListener("message", (event) => {
    const m = event.data;
    if (!m || typeof m.type !== "string") return;
    switch (m.type) {
      case "history":
        reset();
        for (const turn of m.turns) addTurn(turn);
        setGenerating(!!m.generating);
        setServer(m.server);
        scrollDown();
        break;
      case "turn":
        addTurn(m.turn);
        break;
      case "delta": {
        const entry = turns.get(m.id);
        if (!entry) break;
        entry.turn.text += m.text;
        entry.dirty = true;
        schedule();
        break;
      }
      case "end": {
        const entry = turns.get(m.id);
        if (!entry) break;
        entry.turn.status = m.status;
        entry.dirty = true;
        schedule();
        break;
      }
      case "update": {
        const entry = turns.get(m.turn.id);
        if (!entry) break;
        entry.turn = Object.assign({}, m.turn);
        paint(entry);
        break;
      }
      case "remove": {
        const entry = turns.get(m.id);
        if (!entry) break;
        entry.el.remove();
        turns.delete(m.id);
        if (turns.size === 0) empty.hidden = false;
        break;
      }
      case "generating":
        setGenerating(!!m.generating);
        break;
      case "server":
        setServer(m.server);
        break;
      case "focus":
        input.focus();
        break;
      case "prefill":
        input.value = m.text;
        input.focus();
        save();
        break;
    }
  });

  // -- user input ----------------------------------------------------------------------------

  function submit() {
    const text = input.value.trim();
    if (text === "" || generating) return;
    post({ type: "ask", text });
    if (saved.prompts[saved.prompts.length - 1] !== text) saved.prompts.push(text);
    promptIndex = -1;
    input.value = "";
    save();
  }

  send.addEventListener("click", submit);
  stop.addEventListener("click", () => post({ type: "stop" }));
  newChat.addEventListener("click", () => post({ type: "new" }));
  input.addEventListener("input", save);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
      return;
    }
    if (event.key === "Escape" && generating) {
      post({ type: "stop" });
      return;
    }
    // Up / Down in a one-line input: earlier questions
    if ((event.key === "ArrowUp" || event.key === "ArrowDown") && !input.value.includes("\n") && saved.prompts.length) {
      if (event.key === "ArrowUp") promptIndex = promptIndex < 0 ? saved.prompts.length - 1 : Math.max(0, promptIndex - 1);
      else if (promptIndex >= 0) promptIndex = promptIndex + 1 < saved.prompts.length ? promptIndex + 1 : -1;
      else return;
      input.value = promptIndex >= 0 ? saved.prompts[promptIndex] || "" : "";
      event.preventDefault();
    }
  });

  post({ type: "ready" });
})();
