// Build with esbuild (tsc only type-checks: `npm run typecheck`).
//
//   node scripts/build.mjs               dist/extension.js: the extension, one CommonJS file (what
//                                        VS Code loads), the SDK bundled in from its TypeScript
//                                        source (the package ships src/), `vscode` left external
//   node scripts/build.mjs --production  the same, minified (vsce package runs this)
//   node scripts/build.mjs --tests       also out/test/**/*.test.mjs: each test file bundled as ESM
//
// The webview's script and style (media/) are plain files, served as they are.
import { build } from "esbuild";
import { readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = new Set(process.argv.slice(2));
const production = args.has("--production");
const sdkSource = join(root, "node_modules", "@botframework", "sdk", "src", "index.ts");
const alias = { "@botframework/sdk": sdkSource };

function testFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...testFiles(path));
    else if (name.endsWith(".test.ts")) out.push(path);
  }
  return out;
}

rmSync(join(root, "dist"), { recursive: true, force: true });
await build({
  entryPoints: [join(root, "src", "extension.ts")],
  outfile: join(root, "dist", "extension.js"),
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node18",
  external: ["vscode"],
  alias,
  sourcemap: !production,
  minify: production,
  logLevel: "warning",
});

if (args.has("--tests")) {
  rmSync(join(root, "out"), { recursive: true, force: true });
  const entries = testFiles(join(root, "test"));
  await build({
    entryPoints: entries,
    outdir: join(root, "out", "test"),
    outbase: join(root, "test"),
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // npm packages stay imports (puppeteer-core); the SDK and our modules are bundled in, and
    // `vscode` is a stand-in that records what extension.ts does with it
    external: ["puppeteer-core"],
    alias: { ...alias, vscode: join(root, "test", "helpers", "vscodeStub.ts") },
    sourcemap: true,
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    logLevel: "warning",
  });
  console.log(`built dist/extension.js and ${entries.length} test files in ${relative(process.cwd(), join(root, "out"))}`);
} else {
  console.log(`built dist/extension.js${production ? " (production)" : ""}`);
}
