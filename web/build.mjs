// Builds the live view into exactly three files that `flowgraph ui` embeds at compile time:
//   dist/index.html   dist/app.js   dist/app.css
// Usage: node build.mjs [--outdir DIR]      (default: dist beside this file)
//
// Deterministic: the same sources and node_modules give the same bytes (esbuild is, and nothing
// here writes a time or a path). index.html refers to the assets with a content hash in the
// query string, so a browser never mixes a cached old app.js with a new page.

import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  let outdir = join(here, "dist");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--outdir") outdir = resolve(argv[++i] ?? "");
    else if (a.startsWith("--outdir=")) outdir = resolve(a.slice("--outdir=".length));
    else throw new Error(`unknown argument: ${a} (usage: node build.mjs [--outdir DIR])`);
  }
  return { outdir };
}

const common = {
  bundle: true,
  minify: true,
  write: false,
  charset: "utf8",
  legalComments: "eof", // keep the libraries' license headers, at the end of the file
  logLevel: "warning",
  absWorkingDir: here,
};

async function bundle(entry, extra) {
  const result = await build({ ...common, ...extra, entryPoints: [join(here, entry)], outdir: "out" });
  if (result.outputFiles.length !== 1) {
    throw new Error(`${entry}: expected one output file, got ${result.outputFiles.map((f) => f.path).join(", ")}`);
  }
  return Buffer.from(result.outputFiles[0].contents);
}

// An unchanged file keeps its modification time, so cargo does not rebuild the binary that
// embeds it for nothing.
async function writeIfChanged(path, buf) {
  const old = await readFile(path).catch(() => null);
  if (old === null || !old.equals(buf)) await writeFile(path, buf);
}

const hash = (buf) => createHash("sha256").update(buf).digest("hex").slice(0, 12);

async function main() {
  const { outdir } = parseArgs(process.argv.slice(2));
  const js = await bundle("src/app.js", {
    format: "esm",
    platform: "browser",
    // Browsers of the last few years; fetch streams and TextDecoderStream are needed anyway.
    target: ["es2022", "chrome111", "firefox111", "safari16.4"],
  });
  const css = await bundle("src/app.css", { loader: { ".css": "css" }, target: ["chrome111", "firefox111", "safari16.4"] });
  let html = await readFile(join(here, "src/index.html"), "utf8");
  for (const [name, buf] of [
    ["app.js", js],
    ["app.css", css],
  ]) {
    const ref = `assets/${name}"`;
    if (!html.includes(ref)) throw new Error(`src/index.html does not refer to assets/${name}`);
    html = html.replace(ref, `assets/${name}?v=${hash(buf)}"`);
  }
  await mkdir(outdir, { recursive: true });
  await writeIfChanged(join(outdir, "index.html"), Buffer.from(html));
  await writeIfChanged(join(outdir, "app.js"), js);
  await writeIfChanged(join(outdir, "app.css"), css);
  const kib = (b) => `${(b.length / 1024).toFixed(1)} KiB`;
  console.log(`web: built ${outdir}: index.html ${kib(Buffer.from(html))}, app.js ${kib(js)}, app.css ${kib(css)}`);
}

main().catch((e) => {
  console.error(`web: build failed: ${e.message}`);
  process.exit(1);
});
