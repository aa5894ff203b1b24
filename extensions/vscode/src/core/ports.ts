/**
 * The few shapes the plain modules need from their host. extension.ts adapts VS Code's API to
 * them; tests pass stubs. Nothing under src/core imports `vscode`.
 */

export interface Disposable {
  dispose(): void;
}

/** VS Code's CancellationToken, as far as the modules use it. */
export interface CancellationLike {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): Disposable;
}

/** An output channel. */
export interface Log {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** Raw text (the server's own output). */
  append(text: string): void;
}

export const silentLog: Log = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  append: () => undefined,
};

/** An AbortSignal that aborts when the token is cancelled; dispose() unlinks it. */
export function signalOf(token: CancellationLike | undefined): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  if (token === undefined) return { signal: controller.signal, dispose: () => undefined };
  if (token.isCancellationRequested) controller.abort(new Error("cancelled"));
  const sub = token.onCancellationRequested(() => controller.abort(new Error("cancelled")));
  return { signal: controller.signal, dispose: () => sub.dispose() };
}

/** Wait `ms`; false (at once) when `signal` aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A small event emitter (VS Code's EventEmitter without the dependency). */
export class Emitter<T> {
  private readonly listeners = new Set<(value: T) => void>();

  event = (listener: (value: T) => void): Disposable => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  fire(value: T): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(value);
      } catch {
        // one failing listener must not stop the others
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}
