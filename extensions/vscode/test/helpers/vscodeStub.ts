/**
 * A stand-in for the `vscode` module, as much of it as extension.ts uses, recording what the
 * extension does with it. The test build aliases `vscode` to this file (scripts/build.mjs), so
 * extension.ts is tested as it is, wiring included.
 */

export interface Recorded {
  commands: Map<string, (...args: unknown[]) => unknown>;
  executed: { id: string; args: unknown[] }[];
  errors: { message: string; items: string[] }[];
  infos: { message: string; items: string[] }[];
  inputBoxes: unknown[];
  viewProviders: Map<string, { resolveWebviewView(view: unknown): void }>;
  inlineProviders: { provideInlineCompletionItems(...args: unknown[]): unknown }[];
  contentProviders: Map<string, { provideTextDocumentContent(uri: Uri): string }>;
  statusItems: StatusBarItem[];
  appliedEdits: WorkspaceEdit[];
  clipboard: string[];
  output: string[];
  config: Record<string, unknown>;
  configKeysRead: Set<string>;
  /** The next answers of showInputBox / showErrorMessage / showInformationMessage. */
  answers: { inputBox: (string | undefined)[]; error: (string | undefined)[]; info: (string | undefined)[] };
}

export const recorded: Recorded = {
  commands: new Map(),
  executed: [],
  errors: [],
  infos: [],
  inputBoxes: [],
  viewProviders: new Map(),
  inlineProviders: [],
  contentProviders: new Map(),
  statusItems: [],
  appliedEdits: [],
  clipboard: [],
  output: [],
  config: {},
  configKeysRead: new Set(),
  answers: { inputBox: [], error: [], info: [] },
};

const disposable = { dispose: () => undefined };

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly path: string,
  ) {}
  static file(path: string): Uri {
    return new Uri("file", path);
  }
  static parse(value: string): Uri {
    const m = /^([a-z-]+):(?:\/\/)?(.*)$/.exec(value);
    return new Uri(m?.[1] ?? "file", m?.[2] ?? value);
  }
  static from(parts: { scheme: string; path: string }): Uri {
    return new Uri(parts.scheme, parts.path);
  }
  static joinPath(base: Uri, ...segments: string[]): Uri {
    return new Uri(base.scheme, [base.path, ...segments].join("/"));
  }
  toString(): string {
    return this.scheme === "file" ? `file://${this.path}` : `${this.scheme}:${this.path}`;
  }
}

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  constructor(
    readonly start: Position,
    readonly end: Position,
  ) {}
}

export class InlineCompletionItem {
  constructor(
    readonly insertText: string,
    readonly range?: Range,
  ) {}
}

export class WorkspaceEdit {
  readonly replacements: { uri: Uri; range: Range; text: string }[] = [];
  replace(uri: Uri, range: Range, text: string): void {
    this.replacements.push({ uri, range, text });
  }
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class TabInputTextDiff {
  constructor(
    readonly original: Uri,
    readonly modified: Uri,
  ) {}
}

export class EventEmitter<T> {
  private listeners: ((v: T) => void)[] = [];
  event = (listener: (v: T) => void) => {
    this.listeners.push(listener);
    return disposable;
  };
  fire(v: T): void {
    for (const l of this.listeners) l(v);
  }
  dispose(): void {
    this.listeners = [];
  }
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}

export enum ProgressLocation {
  Notification = 15,
}

export class StatusBarItem {
  text = "";
  tooltip: unknown;
  command: unknown;
  backgroundColor: unknown;
  name = "";
  visible = false;
  show(): void {
    this.visible = true;
  }
  dispose(): void {
    this.visible = false;
  }
}

/** A text document of offsets over one string (lines split on \n). */
export class TextDocument {
  version = 1;
  isClosed = false;
  constructor(
    readonly uri: Uri,
    public text: string,
    readonly languageId: string,
  ) {}
  getText(range?: Range): string {
    if (range === undefined) return this.text;
    return this.text.slice(this.offsetAt(range.start), this.offsetAt(range.end));
  }
  offsetAt(p: Position): number {
    const lines = this.text.split("\n");
    let offset = 0;
    for (let i = 0; i < p.line && i < lines.length; i++) offset += lines[i]!.length + 1;
    return Math.min(this.text.length, offset + p.character);
  }
  positionAt(offset: number): Position {
    const before = this.text.slice(0, offset).split("\n");
    return new Position(before.length - 1, before.at(-1)!.length);
  }
  get lineCount(): number {
    return this.text.split("\n").length;
  }
  lineAt(line: number): { range: Range } {
    const text = this.text.split("\n")[line] ?? "";
    return { range: new Range(new Position(line, 0), new Position(line, text.length)) };
  }
}

export class TextEditor {
  selection: Range & { isEmpty?: boolean };
  selections: Range[];
  viewColumn = 1;
  constructor(
    readonly document: TextDocument,
    selection: Range,
  ) {
    this.selection = selection;
    this.selections = [selection];
  }
  async edit(fn: (b: { replace(r: Range, t: string): void }) => void): Promise<boolean> {
    fn({
      replace: (r, t) => {
        const d = this.document;
        d.text = d.text.slice(0, d.offsetAt(r.start)) + t + d.text.slice(d.offsetAt(r.end));
        d.version++;
      },
    });
    return true;
  }
}

const activeEditorChanged = new EventEmitter<TextEditor | undefined>();
const configChanged = new EventEmitter<{ affectsConfiguration(section: string): boolean }>();

export const window = {
  activeTextEditor: undefined as TextEditor | undefined,
  tabGroups: { all: [] as { tabs: { input: unknown }[] }[], close: async () => true },
  createOutputChannel: (_name: string, _opts?: unknown) => ({
    info: (m: string) => recorded.output.push(`info: ${m}`),
    warn: (m: string) => recorded.output.push(`warn: ${m}`),
    error: (m: string) => recorded.output.push(`error: ${m}`),
    append: (t: string) => recorded.output.push(t),
    show: () => undefined,
    dispose: () => undefined,
  }),
  createStatusBarItem: () => {
    const item = new StatusBarItem();
    recorded.statusItems.push(item);
    return item;
  },
  showErrorMessage: async (message: string, ...items: string[]) => {
    recorded.errors.push({ message, items });
    return recorded.answers.error.shift();
  },
  showInformationMessage: async (message: string, ...items: string[]) => {
    recorded.infos.push({ message, items });
    return recorded.answers.info.shift();
  },
  showInputBox: async (options: unknown) => {
    recorded.inputBoxes.push(options);
    return recorded.answers.inputBox.shift();
  },
  showQuickPick: async () => undefined,
  setStatusBarMessage: () => disposable,
  showTextDocument: async (doc: TextDocument) => {
    const editor = window.activeTextEditor?.document === doc ? window.activeTextEditor : new TextEditor(doc, new Range(new Position(0, 0), new Position(0, 0)));
    return editor;
  },
  withProgress: async <T>(_options: unknown, task: (progress: unknown, token: unknown) => Promise<T>) =>
    task({ report: () => undefined }, { isCancellationRequested: false, onCancellationRequested: () => disposable }),
  registerWebviewViewProvider: (id: string, provider: { resolveWebviewView(view: unknown): void }) => {
    recorded.viewProviders.set(id, provider);
    return disposable;
  },
  onDidChangeActiveTextEditor: activeEditorChanged.event,
  /** Test helper: make `editor` the active one. */
  setActiveEditor(editor: TextEditor | undefined) {
    window.activeTextEditor = editor;
    activeEditorChanged.fire(editor);
  },
};

export const workspace = {
  textDocuments: [] as TextDocument[],
  getConfiguration: (section: string) => ({
    get: (key: string) => {
      recorded.configKeysRead.add(`${section}.${key}`);
      return recorded.config[`${section}.${key}`];
    },
  }),
  onDidChangeConfiguration: configChanged.event,
  /** Test helper: settings changed. */
  changeConfiguration(values: Record<string, unknown>) {
    Object.assign(recorded.config, values);
    configChanged.fire({ affectsConfiguration: (s: string) => Object.keys(values).some((k) => k === s || k.startsWith(`${s}.`)) });
  },
  registerTextDocumentContentProvider: (scheme: string, provider: { provideTextDocumentContent(uri: Uri): string }) => {
    recorded.contentProviders.set(scheme, provider);
    return disposable;
  },
  applyEdit: async (edit: WorkspaceEdit) => {
    recorded.appliedEdits.push(edit);
    for (const r of edit.replacements) {
      const doc = workspace.textDocuments.find((d) => d.uri.toString() === r.uri.toString());
      if (!doc) return false;
      doc.text = doc.text.slice(0, doc.offsetAt(r.range.start)) + r.text + doc.text.slice(doc.offsetAt(r.range.end));
      doc.version++;
    }
    return true;
  },
};

export const commands = {
  registerCommand: (id: string, fn: (...args: unknown[]) => unknown) => {
    if (recorded.commands.has(id)) throw new Error(`command ${id} registered twice`);
    recorded.commands.set(id, fn);
    return { dispose: () => recorded.commands.delete(id) };
  },
  executeCommand: async (id: string, ...args: unknown[]) => {
    recorded.executed.push({ id, args });
    const own = recorded.commands.get(id);
    return own ? own(...args) : undefined;
  },
};

export const languages = {
  registerInlineCompletionItemProvider: (_selector: unknown, provider: { provideInlineCompletionItems(...args: unknown[]): unknown }) => {
    recorded.inlineProviders.push(provider);
    return disposable;
  },
};

export const env = {
  clipboard: {
    writeText: async (text: string) => {
      recorded.clipboard.push(text);
    },
  },
};
