/**
 * Server-sent events, as the WHATWG spec frames them, from a byte stream.
 *
 *   bytes --TextDecoder (stream: true: a UTF-8 character split between chunks waits for its
 *   rest)--> text --SSEParser.feed: lines ending in \n, \r\n or \r (a \r\n split between
 *   chunks is one line end)--> events: the `data:` lines up to a blank line, joined by \n
 *
 * The server sends `data: {json}` events and a final `data: [DONE]`; comments (`:` lines),
 * `event:`, `id:` and `retry:` fields are read and ignored except for the event name.
 */

export interface SSEEvent {
  /** The `event:` field; "message" when none was sent. */
  event: string;
  /** The `data:` lines, joined by "\n". */
  data: string;
}

export class SSEParser {
  private buffer = "";
  private skipLF = false; // the last chunk ended in \r: a \n starting the next one belongs to it
  private data: string[] = [];
  private event = "";

  /** Feed decoded text; returns the events it completes. */
  feed(text: string): SSEEvent[] {
    const out: SSEEvent[] = [];
    let start = 0;
    if (this.skipLF && text.startsWith("\n")) start = 1;
    this.skipLF = false;
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(this.buffer + text.slice(start, i), out);
      this.buffer = "";
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.skipLF = true;
        }
      }
      start = i + 1;
    }
    this.buffer += text.slice(start);
    return out;
  }

  /** The end of the stream: an event whose blank line never came is dispatched too. */
  end(): SSEEvent[] {
    const out: SSEEvent[] = [];
    if (this.buffer !== "") this.line(this.buffer, out);
    this.buffer = "";
    this.line("", out);
    return out;
  }

  private line(line: string, out: SSEEvent[]): void {
    if (line === "") {
      if (this.data.length > 0) out.push({ event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
  }
}

/**
 * The events of a response body; `onBytes` is called for every chunk read. Reading stops (and
 * the body is cancelled, which closes the connection) when the consumer stops iterating.
 */
export async function* readSSE(
  body: ReadableStream<Uint8Array>,
  onBytes?: () => void,
): AsyncGenerator<SSEEvent, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SSEParser();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      onBytes?.();
      const events = parser.feed(decoder.decode(value, { stream: true }));
      for (const event of events) yield event;
    }
    finished = true;
    const tail = parser.feed(decoder.decode());
    for (const event of [...tail, ...parser.end()]) yield event;
  } finally {
    if (!finished) {
      // the consumer stopped early or reading failed: close the connection; a failure to
      // cancel an already broken stream says nothing new
      await reader.cancel().catch(() => undefined);
    }
    reader.releaseLock();
  }
}
