import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { SSEParser, readSSE } from "../../src/sse.js";
import { splitBytes, streamResponse } from "../helpers/fake.js";

async function collect(chunks: Uint8Array[]): Promise<string[]> {
  const { response } = streamResponse(chunks);
  const out: string[] = [];
  for await (const event of readSSE(response.body as ReadableStream<Uint8Array>)) out.push(event.data);
  return out;
}

const enc = new TextEncoder();

describe("SSEParser", () => {
  it("reads data events separated by blank lines", () => {
    const p = new SSEParser();
    assert.deepEqual(
      p.feed('data: {"a":1}\n\ndata: [DONE]\n\n').map((e) => e.data),
      ['{"a":1}', "[DONE]"],
    );
  });

  it("joins multi-line data, ignores comments and other fields, keeps the event name", () => {
    const p = new SSEParser();
    const events = p.feed(": keep-alive\nid: 7\nevent: note\ndata: one\ndata:two\nretry: 5\n\n");
    assert.deepEqual(events, [{ event: "note", data: "one\ntwo" }]);
    assert.deepEqual(p.feed("data: x\n\n"), [{ event: "message", data: "x" }]);
  });

  it("accepts \\r\\n and \\r line ends, also when \\r\\n is split between chunks", () => {
    const p = new SSEParser();
    const a = p.feed("data: a\r");
    const b = p.feed("\n\r");
    const c = p.feed("\ndata: b\r\rdata: c\n\n");
    assert.deepEqual([...a, ...b, ...c].map((e) => e.data), ["a", "b", "c"]);
  });

  it("dispatches an event whose blank line never came at the end", () => {
    const p = new SSEParser();
    assert.deepEqual(p.feed("data: last"), []);
    assert.deepEqual(p.end().map((e) => e.data), ["last"]);
  });
});

describe("readSSE", () => {
  const text =
    'data: {"t":"héllo wörld 🙂 日本語"}\r\n\r\n' +
    ": comment\n" +
    'data: {"t":"second"}\n\n' +
    "data: [DONE]\n\n";
  const bytes = enc.encode(text);
  const expected = ['{"t":"héllo wörld 🙂 日本語"}', '{"t":"second"}', "[DONE]"];

  it("gives the same events for any split of the bytes (one byte at a time)", async () => {
    assert.deepEqual(await collect(splitBytes(bytes, [1])), expected);
  });

  it("gives the same events for odd chunk sizes (multi-byte characters split)", async () => {
    for (const sizes of [[2], [3], [5, 1, 7], [13, 2], [4, 4, 1]]) {
      assert.deepEqual(await collect(splitBytes(bytes, sizes)), expected, `sizes ${sizes.join(",")}`);
    }
  });

  it("splits every multi-byte character across two chunks", async () => {
    // cut in the middle of each non-ASCII character
    const cuts: number[] = [];
    let offset = 0;
    for (const ch of text) {
      const n = enc.encode(ch).length;
      if (n > 1) cuts.push(offset + 1);
      offset += n;
    }
    const chunks: Uint8Array[] = [];
    let start = 0;
    for (const cut of cuts) {
      chunks.push(bytes.slice(start, cut));
      start = cut;
    }
    chunks.push(bytes.slice(start));
    assert.ok(chunks.length > 5);
    assert.deepEqual(await collect(chunks), expected);
  });

  it("cancels the body when the reader stops early", async () => {
    const { response, control } = streamResponse(['data: 1\n\n', 'data: 2\n\n'], { open: true });
    for await (const event of readSSE(response.body as ReadableStream<Uint8Array>)) {
      assert.equal(event.data, "1");
      break;
    }
    assert.equal(control.cancelled, true);
  });
});
