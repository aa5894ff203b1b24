import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The extension's folder (where its package.json is), found from the running test file. */
export function extensionRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "botframework-vscode") return dir;
    dir = dirname(dir);
  }
  throw new Error("cannot find the extension's package.json");
}
