/**
 * The chat webview as it runs: its real HTML (chatHtml, with the CSP) and media/chat.js in
 * headless Chromium, bridged to the real ChatController and a real botframework server. The
 * page must show a streamed answer, stop on Stop (the slot is freed), work its buttons, render
 * a model's text as text, and log no error. The first test's screenshot is
 * out/screenshots/chat.png (docs/chat.png with BOTFRAMEWORK_UPDATE_SCREENSHOT=1).
 */

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Browser, Page } from "puppeteer-core";

import { launchBrowser, openChatPage, startPageServer, type PageProblems } from "../helpers/browser.js";
import { checkUnhandledRejections, until } from "../helpers/common.js";
import { extensionRoot } from "../helpers/paths.js";
import { MODEL, freePort, startServer, waitIdle, type TestServer } from "../helpers/realServer.js";
import { stack } from "../helpers/stack.js";

checkUnhandledRejections();

let server: TestServer;
let browser: Browser;
let pages: { url: string; close(): Promise<void> };

before(async () => {
  [server, browser, pages] = await Promise.all([startServer(["--parallel", "2"]), launchBrowser(), startPageServer()]);
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await server?.stop();
});

/** The page's text of a selector (all matches joined). */
function text(page: Page, selector: string): Promise<string> {
  return page.$$eval(selector, (els) => els.map((e) => (e as HTMLElement).innerText).join("\n"));
}

function words(s: string): string[] {
  return s.match(/[A-Za-z0-9_]+/g) ?? [];
}

function assertNoProblems(problems: PageProblems): void {
  assert.deepEqual(problems.errors, [], "the page logged no errors");
}

describe("the chat webview in Chromium", () => {
  it("shows a streamed answer from the real server, with code blocks, and logs no error", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL, chat: { maxTokens: 300, temperature: 0 } }, chatOptions: { seed: 1 } });
    const { page, problems } = await openChatPage(browser, pages.url, s.chat);
    try {
      await s.server.client();
      await page.waitForFunction(() => document.getElementById("server-label")?.textContent?.includes("smollm2"), { timeout: 30_000 });
      assert.equal(await page.$eval("#empty", (e) => (e as HTMLElement).hidden), false, "the welcome text before the first question");

      await page.type("#input", "Write a Python function that checks whether a number is prime.");
      await page.keyboard.press("Enter");
      // while it streams: Stop shown, Send disabled, the answer growing
      await page.waitForSelector(".turn.assistant.streaming", { timeout: 30_000 });
      const streaming = await page.evaluate(() => ({
        stop: !(document.getElementById("stop") as HTMLButtonElement).hidden,
        send: (document.getElementById("send") as HTMLButtonElement).disabled,
      }));
      assert.deepEqual(streaming, { stop: true, send: true });
      await s.chat.idle();
      await page.waitForFunction(() => !document.querySelector(".turn.streaming") && (document.getElementById("stop") as HTMLButtonElement).hidden, { timeout: 30_000 });

      const answer = s.chat.history[1]!;
      assert.equal(answer.status, "done");
      const shown = await text(page, ".turn.assistant .body");
      const missing = words(answer.text.replace(/^```.*$/gm, "")).filter((w) => !shown.includes(w));
      assert.deepEqual(missing, [], "every word of the answer is on the page");
      assert.equal(await text(page, ".turn.user .body"), "Write a Python function that checks whether a number is prime.");
      assert.equal((await page.$eval("#input", (e) => (e as HTMLTextAreaElement).value)), "", "the input was cleared");
      const blocks = await page.$$(".turn.assistant .code");
      if (answer.text.includes("```")) {
        assert.ok(blocks.length >= 1, "a fenced block is a code block");
        assert.equal(await page.$$eval(".turn.assistant .code .copy", (b) => b.length), blocks.length);
        assert.equal(await page.$$eval(".turn.assistant .code .insert", (b) => b.length), blocks.length);
      }

      const shot = join(extensionRoot(), "out", "screenshots", "chat.png");
      mkdirSync(join(extensionRoot(), "out", "screenshots"), { recursive: true });
      await page.screenshot({ path: shot as `${string}.png` });
      if (process.env["BOTFRAMEWORK_UPDATE_SCREENSHOT"] === "1") copyFileSync(shot, join(extensionRoot(), "docs", "chat.png"));
      assertNoProblems(problems);
    } finally {
      await page.close();
      await s.dispose();
    }
  });

  it("Stop ends a long answer mid-stream; the server frees the slot; the page goes on", async () => {
    const s = stack({ settings: { baseUrl: server.url, model: MODEL }, chatOptions: { maxTokens: 4000, ignoreEos: true } });
    const { page, problems } = await openChatPage(browser, pages.url, s.chat);
    try {
      await s.server.client();
      await page.type("#input", "Tell a very long story.");
      await page.click("#send");
      await page.waitForFunction(() => (document.querySelector(".turn.assistant .body")?.textContent ?? "").length > 40, { timeout: 30_000 });
      await page.click("#stop");
      await page.waitForFunction(() => document.querySelector(".turn.assistant .note")?.textContent === "Stopped.", { timeout: 30_000 });
      await s.chat.idle();
      assert.equal(s.chat.history[1]!.status, "stopped");
      const idle = await waitIdle(server.url);
      assert.equal(idle.num_busy_slots, 0);
      assert.equal(await page.$eval("#send", (b) => (b as HTMLButtonElement).disabled), false, "Send is back");
      // New chat clears the page and the session
      await page.click("#new-chat");
      await page.waitForFunction(() => document.querySelectorAll(".turn").length === 0 && !(document.getElementById("empty") as HTMLElement).hidden);
      assert.equal(s.chat.history.length, 0);
      assertNoProblems(problems);
    } finally {
      await page.close();
      await s.dispose();
    }
  });

  it("Copy and Insert on a code block reach the editor; a model's HTML is shown as text", async () => {
    const code = 'def greet(name):\n    return f"Hello, {name}!"';
    const s = stack({
      settings: { baseUrl: server.url, model: MODEL },
      restored: {
        turns: [
          { id: "t1", role: "user", text: "Greet <b>me</b>", status: "done" },
          { id: "t2", role: "assistant", text: `Here you are:\n\n\`\`\`python\n${code}\n\`\`\`\n\n<img src=x onerror="alert(1)"> **done**`, status: "done" },
        ],
        messages: [],
      },
    });
    const { page, problems } = await openChatPage(browser, pages.url, s.chat);
    try {
      await page.waitForSelector(".turn.assistant .code");
      assert.equal(await page.$eval(".turn.assistant .code pre", (e) => (e as HTMLElement).innerText), code);
      assert.equal(await page.$eval(".turn.assistant .code .lang", (e) => e.textContent), "python");
      await page.click(".turn.assistant .code .copy");
      await until("copied", () => s.copied.length === 1);
      assert.deepEqual(s.copied, [code]);
      assert.equal(await page.$eval(".turn.assistant .code .copy", (e) => e.textContent), "Copied");
      await page.click(".turn.assistant .code .insert");
      await until("inserted", () => s.inserted.length === 1);
      assert.deepEqual(s.inserted, [code]);
      // markup from a model (or a user) is text, never elements
      assert.equal(await page.$$eval(".turn img, .turn b", (e) => e.length), 0);
      assert.match(await text(page, ".turn.assistant .body"), /<img src=x onerror="alert\(1\)">/);
      assert.equal(await page.$eval(".turn.assistant strong", (e) => e.textContent), "done");
      assertNoProblems(problems);
    } finally {
      await page.close();
      await s.dispose();
    }
  });

  it("a failure is a card with its actions as buttons; a button runs the action once", async () => {
    const port = await freePort(); // nothing runs there
    const s = stack({ settings: { baseUrl: `http://127.0.0.1:${port}`, model: MODEL, server: { autoStart: false } } });
    const { page, problems } = await openChatPage(browser, pages.url, s.chat);
    try {
      await page.type("#input", "Hello?");
      await page.keyboard.press("Enter");
      await page.waitForSelector(".turn.error .actions button");
      assert.match(await text(page, ".turn.error .body p"), /No botframework server answers/);
      assert.deepEqual(await page.$$eval(".turn.error .actions button", (b) => b.map((x) => x.textContent)), ["Start Server", "Open Settings", "Retry"]);
      await page.waitForFunction(() => document.getElementById("server")?.dataset["kind"] === "error");
      await page.click('.turn.error .actions button[data-action="openSettings"]');
      await until("the action ran", () => s.handlerCalls.length === 1);
      assert.deepEqual(s.handlerCalls, ["openSettings:botframework"]);
      assert.equal(await page.$$eval(".turn.error .actions button", (b) => b.every((x) => (x as HTMLButtonElement).disabled)), true);
      // the input still works
      assert.equal(await page.$eval("#send", (b) => (b as HTMLButtonElement).disabled), false);
      assertNoProblems(problems);
    } finally {
      await page.close();
      await s.dispose();
    }
  });
});
