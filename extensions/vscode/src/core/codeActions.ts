/**
 * The editor commands: Explain Selection (into the chat), Rewrite Selection and Generate
 * Docstring (a proposal shown as a diff, applied as one undoable edit).
 *
 *   explainSelection -> the chat view, a question with the code (a turn of the chat's session)
 *   rewriteSelection -> instruction (input box) -> chat (cancellable progress) -> the code of
 *       the answer, indented as the selection was -> Proposal -> diff (the file <-> a virtual
 *       document with the change) -> Apply (WorkspaceEdit; refused if the file changed since)
 *       or Discard
 *   generateDocstring -> the selection, or the block at the cursor -> a one-paragraph
 *       description from the model -> formatted as the language's doc comment (a Python
 *       docstring below the def line, /** *\/ above a function, ...) -> Proposal, as above
 *
 * The text work (prompts, extracting code, indentation, comment syntax) is plain functions.
 */

import type { ChatMessage, Client } from "@botframework/sdk";

import { isAbort } from "./errorPresenter.js";
import { silentLog, type Log } from "./ports.js";
import type { Settings } from "./settings.js";

/** The active editor as the commands need it: offsets into its text. */
export interface EditorSnapshot {
  uri: string;
  /** The file's name, for prompts and titles. */
  fileName: string;
  languageId: string;
  text: string;
  version: number;
  /** The selection (start === end: none). */
  start: number;
  end: number;
}

/** A change waiting for Apply / Discard. */
export interface Proposal {
  id: number;
  kind: "rewrite" | "docstring";
  uri: string;
  fileName: string;
  version: number;
  /** [start, end) of the original text is replaced by `replacement` (start === end: inserted). */
  start: number;
  end: number;
  replacement: string;
  /** The whole document after the change (the diff's right side). */
  proposed: string;
  title: string;
}

export interface CodeActionsUi {
  activeEditor(): EditorSnapshot | undefined;
  /** The rewrite's instruction (an input box); undefined: the user cancelled. */
  askInstruction(): PromiseLike<string | undefined>;
  /** A cancellable progress notification; its cancel button aborts the signal. */
  withProgress<T>(title: string, task: (signal: AbortSignal) => Promise<T>): PromiseLike<T>;
  showProposal(proposal: Proposal): PromiseLike<void>;
  closeProposal(proposal: Proposal): PromiseLike<void>;
  /** A notification with buttons; undefined when dismissed. */
  choose(message: string, ...items: string[]): PromiseLike<string | undefined>;
  /** Replace the proposal's range in its document (one undoable edit); false when the
   * document's version is no longer the proposal's, or the edit failed. */
  applyEdit(proposal: Proposal): PromiseLike<boolean>;
  info(message: string): void;
  /** Show the chat view. */
  openChat(): PromiseLike<void>;
}

export interface CodeActionsHost {
  server: { use<T>(fn: (client: Client) => Promise<T>): Promise<T> };
  settings(): Settings;
  ui: CodeActionsUi;
  chat: { ask(text: string): Promise<boolean> };
  /** ErrorPresenter.show. */
  showError(err: unknown, retry?: () => Promise<unknown>): Promise<void>;
  log?: Log;
}

// -- text -----------------------------------------------------------------------------------

/** The code of an answer: its first fenced block, else the answer without stray fences. */
export function extractCode(answer: string): string {
  const fence = /```[^\n`]*\n([\s\S]*?)(?:\n```|$)/.exec(answer);
  if (fence?.[1] !== undefined) return fence[1].replace(/\s+$/, "");
  return answer.replace(/^\s*```[^\n]*\n?/, "").replace(/\n?```\s*$/, "").replace(/\s+$/, "");
}

function indentOf(line: string): string {
  return /^[ \t]*/.exec(line)?.[0] ?? "";
}

/** The smallest indentation of the non-blank lines. */
export function commonIndent(text: string): string {
  let common: string | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const indent = indentOf(line);
    if (common === undefined || indent.length < common.length) common = indent;
  }
  return common ?? "";
}

/** `code` indented the way `original` was (models tend to drop the base indentation), with
 * the original's trailing newline kept. */
export function matchIndentation(code: string, original: string, firstLineOffset = ""): string {
  const want = commonIndent(firstLineOffset + original);
  const have = commonIndent(code);
  let lines = code.split("\n");
  if (want.length > have.length) {
    const add = want.slice(have.length);
    lines = lines.map((l) => (l.trim() === "" ? l : add + l));
  }
  let out = lines.join("\n");
  // the selection began after its line's indentation: don't indent the first line twice
  if (firstLineOffset !== "" && out.startsWith(firstLineOffset)) out = out.slice(firstLineOffset.length);
  if (/\n$/.test(original) && !out.endsWith("\n")) out += "\n";
  return out;
}

/** What precedes the selection on its first line, when that is only indentation. */
function leadingIndent(text: string, start: number): string {
  const lineStart = text.lastIndexOf("\n", start - 1) + 1;
  const before = text.slice(lineStart, start);
  return /^[ \t]*$/.test(before) ? before : "";
}

/** [start, end) of the block at `offset`: its line and the lines after it that are indented
 * deeper (or blank), plus a closing line at the same indentation (`}` / `end`). */
export function blockAt(text: string, offset: number): { start: number; end: number } {
  const lines = text.split("\n");
  let pos = 0;
  let index = 0;
  for (; index < lines.length; index++) {
    const len = (lines[index] ?? "").length + 1;
    if (pos + len > offset) break;
    pos += len;
  }
  index = Math.min(index, lines.length - 1);
  const start = pos;
  const first = lines[index] ?? "";
  const base = indentOf(first).length;
  let last = index;
  for (let i = index + 1; i < lines.length; i++) {
    const line = lines[i] ?? "";
    if (line.trim() === "") continue;
    const indent = indentOf(line).length;
    if (indent > base) {
      last = i;
      continue;
    }
    if (indent === base && /^\s*[}\])]|^\s*end\b/.test(line)) last = i;
    break;
  }
  let end = start;
  for (let i = index; i <= last; i++) end += (lines[i] ?? "").length + 1;
  return { start, end: Math.min(end, text.length) };
}

/** The model's description, cleaned: no quotes, fences or "Docstring:" label; one paragraph. */
export function cleanDescription(text: string): string {
  let out = text.replace(/```[\s\S]*?```/g, " ").replace(/`/g, "");
  out = out.replace(/^\s*(docstring|description|summary|comment)\s*:\s*/i, "");
  out = out.replace(/("""|'''|\/\*\*|\*\/)/g, " ");
  out = out.replace(/\s+/g, " ").trim().replace(/^["']+|["']+$/g, "").trim();
  if (out.length > 600) out = `${out.slice(0, 600).replace(/\s+\S*$/, "")}...`;
  if (out !== "" && !/[.!?]$/.test(out)) out += ".";
  return out;
}

/** Words wrapped into lines of at most `width` characters. */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(line);
  return lines.length ? lines : [""];
}

const BLOCK_COMMENT = new Set([
  "javascript", "typescript", "javascriptreact", "typescriptreact", "java", "c", "cpp", "csharp",
  "php", "kotlin", "swift", "scala", "dart", "groovy", "objective-c", "objective-cpp",
]);
const HASH_COMMENT = new Set(["ruby", "shellscript", "perl", "r", "powershell", "yaml", "elixir", "julia", "coffeescript", "makefile", "dockerfile", "toml"]);

/**
 * Where and what to insert for a doc comment of `block` (offsets into `text`), in the
 * language's style: a Python docstring after the header line, else a comment above.
 */
export function docstringEdit(text: string, block: { start: number; end: number }, languageId: string, description: string): { offset: number; insert: string } {
  const blockText = text.slice(block.start, block.end);
  const lines = blockText.split("\n");
  const firstLine = lines[0] ?? "";
  const indent = indentOf(firstLine);
  const width = Math.max(40, 88 - indent.length);
  if (languageId === "python") {
    // after the header: the first line ending with ":" (a signature may span lines)
    let headerEnd = 0;
    let offset = block.start;
    for (let i = 0; i < lines.length; i++) {
      offset += (lines[i] ?? "").length + 1;
      if (/:\s*(#.*)?$/.test(lines[i] ?? "")) {
        headerEnd = i;
        break;
      }
    }
    const body = lines.slice(headerEnd + 1).find((l) => l.trim() !== "");
    const bodyIndent = body !== undefined && indentOf(body).length > indent.length ? indentOf(body) : `${indent}    `;
    const wrapped = wrap(description, width - 6);
    const doc =
      wrapped.length === 1
        ? `${bodyIndent}"""${wrapped[0]}"""\n`
        : `${bodyIndent}"""${wrapped[0]}\n${wrapped.slice(1).map((l) => `${bodyIndent}${l}\n`).join("")}${bodyIndent}"""\n`;
    return { offset: Math.min(offset, text.length), insert: (offset > text.length ? "\n" : "") + doc };
  }
  const wrapped = wrap(description, width - 3);
  let comment: string;
  if (BLOCK_COMMENT.has(languageId)) {
    comment = `${indent}/**\n${wrapped.map((l) => `${indent} * ${l}\n`).join("")}${indent} */\n`;
  } else {
    const marker = languageId === "rust" ? "///" : languageId === "lua" || languageId === "sql" || languageId === "haskell" ? "--" : HASH_COMMENT.has(languageId) ? "#" : "//";
    comment = wrapped.map((l) => `${indent}${marker} ${l}\n`).join("");
  }
  return { offset: block.start, insert: comment };
}

function fence(languageId: string): string {
  return languageId === "plaintext" ? "" : languageId;
}

export function explainPrompt(ed: EditorSnapshot, code: string): string {
  return `Explain this code from \`${ed.fileName}\`:\n\n\`\`\`${fence(ed.languageId)}\n${code.replace(/\s+$/, "")}\n\`\`\``;
}

export function rewriteMessages(ed: EditorSnapshot, code: string, instruction: string): ChatMessage[] {
  return [
    {
      role: "system",
      content: "You rewrite code as asked. Answer with the complete rewritten code in one fenced code block and nothing else.",
    },
    {
      role: "user",
      content: `Rewrite this ${ed.languageId} code from ${ed.fileName}. ${instruction}\n\n\`\`\`${fence(ed.languageId)}\n${code}\n\`\`\``,
    },
  ];
}

export function docstringMessages(ed: EditorSnapshot, code: string): ChatMessage[] {
  return [
    { role: "system", content: "You write documentation. Answer with plain text only: no code, no quotes, no markdown." },
    {
      role: "user",
      content: `In one to three sentences, describe what this ${ed.languageId} code does, for its docstring.\n\n\`\`\`${fence(ed.languageId)}\n${code}\n\`\`\``,
    },
  ];
}

// -- commands ---------------------------------------------------------------------------------

export class CodeActions {
  private pendingProposal: Proposal | undefined;
  private nextId = 1;
  private readonly log: Log;

  constructor(private readonly host: CodeActionsHost) {
    this.log = host.log ?? silentLog;
  }

  /** The proposal waiting for Apply / Discard. */
  get pending(): Proposal | undefined {
    return this.pendingProposal;
  }

  private editor(what: string, needSelection: boolean): EditorSnapshot | undefined {
    const ed = this.host.ui.activeEditor();
    if (ed === undefined) {
      this.host.ui.info(`Open a file to ${what}.`);
      return undefined;
    }
    if (needSelection && ed.start === ed.end) {
      this.host.ui.info(`Select the code to ${what} first.`);
      return undefined;
    }
    return ed;
  }

  /** The selection, else the block at the cursor. */
  private target(ed: EditorSnapshot): { start: number; end: number } {
    return ed.start !== ed.end ? { start: ed.start, end: ed.end } : blockAt(ed.text, ed.start);
  }

  /** Ask the chat to explain the selection (or the block at the cursor). */
  async explainSelection(): Promise<void> {
    const ed = this.editor("explain", false);
    if (ed === undefined) return;
    const { start, end } = this.target(ed);
    const code = ed.text.slice(start, end);
    if (code.trim() === "") {
      this.host.ui.info("Select the code to explain first.");
      return;
    }
    await this.host.ui.openChat();
    await this.host.chat.ask(explainPrompt(ed, code));
  }

  private chat(title: string, messages: ChatMessage[]): Promise<string> {
    const settings = this.host.settings();
    return Promise.resolve(
      this.host.ui.withProgress(title, (signal) =>
        this.host.server.use(async (client) => {
          const result = await client.chat(messages, { maxTokens: settings.chat.maxTokens, temperature: settings.chat.temperature, signal });
          return result.text;
        }),
      ),
    );
  }

  /** Rewrite the selection as instructed; returns the proposal shown (undefined: none). */
  async rewriteSelection(instruction?: string): Promise<Proposal | undefined> {
    const ed = this.editor("rewrite", true);
    if (ed === undefined) return undefined;
    const asked = instruction ?? (await this.host.ui.askInstruction());
    if (asked === undefined) return undefined;
    const what = asked.trim() || "Make it clearer and more idiomatic; keep its behaviour.";
    const original = ed.text.slice(ed.start, ed.end);
    let answer: string;
    try {
      answer = await this.chat(`Botframework: rewriting the selection of ${ed.fileName}`, rewriteMessages(ed, original, what));
    } catch (err) {
      if (!isAbort(err)) await this.host.showError(err, () => this.rewriteSelection(what));
      return undefined;
    }
    const code = extractCode(answer);
    if (code.trim() === "") {
      this.host.ui.info("The model proposed no code. Try again, or with another instruction.");
      return undefined;
    }
    const replacement = matchIndentation(code, original, leadingIndent(ed.text, ed.start));
    if (replacement === original) {
      this.host.ui.info("The model proposed no change.");
      return undefined;
    }
    return this.propose("rewrite", ed, ed.start, ed.end, replacement, `Rewrite of ${ed.fileName}`);
  }

  /** A doc comment for the selection (or the block at the cursor); returns the proposal shown. */
  async generateDocstring(): Promise<Proposal | undefined> {
    const ed = this.editor("document", false);
    if (ed === undefined) return undefined;
    const block = this.target(ed);
    const code = ed.text.slice(block.start, block.end);
    if (code.trim() === "") {
      this.host.ui.info("Put the cursor on a function or class, or select it.");
      return undefined;
    }
    // a selection that starts mid-line is widened to its whole first line
    const lineStart = ed.text.lastIndexOf("\n", block.start - 1) + 1;
    const widened = { start: lineStart, end: block.end };
    let answer: string;
    try {
      answer = await this.chat(`Botframework: writing a docstring for ${ed.fileName}`, docstringMessages(ed, code));
    } catch (err) {
      if (!isAbort(err)) await this.host.showError(err, () => this.generateDocstring());
      return undefined;
    }
    const description = cleanDescription(answer);
    if (description === "") {
      this.host.ui.info("The model wrote no description. Try again.");
      return undefined;
    }
    const edit = docstringEdit(ed.text, widened, ed.languageId, description);
    return this.propose("docstring", ed, edit.offset, edit.offset, edit.insert, `Docstring for ${ed.fileName}`);
  }

  private async propose(kind: Proposal["kind"], ed: EditorSnapshot, start: number, end: number, replacement: string, title: string): Promise<Proposal> {
    if (this.pendingProposal !== undefined) await this.discardProposal();
    const proposal: Proposal = {
      id: this.nextId++,
      kind,
      uri: ed.uri,
      fileName: ed.fileName,
      version: ed.version,
      start,
      end,
      replacement,
      proposed: ed.text.slice(0, start) + replacement + ed.text.slice(end),
      title,
    };
    this.pendingProposal = proposal;
    await this.host.ui.showProposal(proposal);
    // the notification's buttons, or the diff editor's title buttons (applyProposal / discardProposal)
    void Promise.resolve(this.host.ui.choose(`${title}: apply the proposed change?`, "Apply", "Discard")).then(
      async (choice) => {
        if (this.pendingProposal?.id !== proposal.id) return;
        if (choice === "Apply") await this.applyProposal();
        else if (choice === "Discard") await this.discardProposal();
      },
      (err: unknown) => this.log.warn(`proposal notification: ${(err as Error)?.message}`),
    );
    return proposal;
  }

  /** Apply the pending proposal as one edit (undo reverts it); false when there is none or the
   * file changed since. */
  async applyProposal(): Promise<boolean> {
    const proposal = this.pendingProposal;
    if (proposal === undefined) return false;
    this.pendingProposal = undefined;
    let applied = false;
    try {
      applied = await this.host.ui.applyEdit(proposal);
    } catch (err) {
      this.log.error(`applying the change: ${(err as Error)?.message}`);
    }
    await Promise.resolve(this.host.ui.closeProposal(proposal)).catch(() => undefined);
    if (!applied) this.host.ui.info(`${proposal.fileName} changed since the proposal was made; nothing was applied. Run the command again.`);
    return applied;
  }

  /** Drop the pending proposal and close its diff. */
  async discardProposal(): Promise<void> {
    const proposal = this.pendingProposal;
    if (proposal === undefined) return;
    this.pendingProposal = undefined;
    await Promise.resolve(this.host.ui.closeProposal(proposal)).catch(() => undefined);
  }
}
