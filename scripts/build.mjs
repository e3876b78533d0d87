#!/usr/bin/env node
// Bundles the package for npm (npm run build:js).
//
//   host/index.ts  --esbuild-->  dist/index.js (+ .map)   one ESM build for Node, browsers, workers
//   build/release.wasm      -->  dist/release.wasm       (npm run build:wasm makes build/)
//   build/debug.wasm        -->  dist/debug.wasm
//   build/shared.wasm       -->  dist/shared.wasm        (over a SharedArrayBuffer)
//   dist/index.d.ts            re-exports ./host/index.js; tsc -p tsconfig.build.json
//                              (npm run build:types) writes dist/host/ and dist/bindings/
//
// The bundle is platform-neutral: no Node builtin may be imported statically.
// bindings/index.ts reaches node:fs/promises through a dynamic import with a
// variable specifier; node:* is external anyway, and the output is checked.
//
// esbuild does not copy assets referenced by `new URL('./x.wasm', import.meta.url)`
// (evanw/esbuild#795), hence the copy step. `__WASM_BASE__` = "./" tells
// bindings/index.ts that the .wasm files sit next to the bundle.
//
// `node scripts/build.mjs --outdir DIR` writes the same files to DIR instead
// of dist/ (the browser, worker and node-vmm tests stage a private copy, so
// they never race with a `npm run build` of dist/ in the same tree).

import { build } from 'esbuild';
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = outdirArg();
const dist = outdir ?? join(root, 'dist');
const entry = join(root, 'host', 'index.ts');
const variants = ['release', 'debug', 'shared'];

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

function outdirArg() {
  const args = process.argv.slice(2);
  let out;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--outdir') out = args[++i];
    else if (a.startsWith('--outdir=')) out = a.slice('--outdir='.length);
    else fail(`unknown argument ${a} (usage: node scripts/build.mjs [--outdir DIR])`);
    if (!out) fail('--outdir needs a directory');
  }
  if (out === undefined) return undefined;
  const dir = resolve(out);
  const rel = relative(dir, root);
  if (rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))) fail(`--outdir ${out} is the repository or holds it`);
  return dir;
}

async function exists(path) {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

// 1. Inputs first: fail loudly before touching dist/.
if (!(await exists(entry))) fail(`missing entry ${relative(root, entry)}`);
const missing = [];
for (const v of variants) {
  const wasm = join(root, 'build', `${v}.wasm`);
  if (!(await exists(wasm))) missing.push(relative(root, wasm));
}
if (missing.length > 0) {
  fail(`missing ${missing.join(', ')}; run "npm run build:wasm" first`);
}

// dist/ is ours to empty; another --outdir only gets its files overwritten.
if (outdir === undefined) await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

// 2. The bundle.
const result = await build({
  absWorkingDir: root,
  entryPoints: [entry],
  outfile: join(dist, 'index.js'),
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2022',
  mainFields: ['module', 'main'],
  conditions: ['import', 'default'],
  external: ['node:*'],
  define: { __WASM_BASE__: JSON.stringify('./') },
  // Folds `typeof "./" === "string"` and drops the build/ branch of bindings,
  // without renaming anything or removing whitespace.
  minifySyntax: true,
  sourcemap: true,
  sourcesContent: true,
  legalComments: 'inline',
  logLevel: 'warning',
  metafile: true,
});
if (result.errors.length > 0) fail('esbuild reported errors');

// 3. The bundle must not import Node builtins statically, nor point at build/.
const js = await readFile(join(dist, 'index.js'), 'utf8');
for (const input of Object.values(result.metafile.outputs).flatMap((o) => o.imports ?? [])) {
  if (input.kind === 'import-statement' || input.kind === 'require-call') {
    fail(`dist/index.js keeps a static import of ${input.path} (Node builtins only dynamically, in bindings/)`);
  }
}
if (js.includes('../build/')) fail('dist/index.js still refers to ../build/ (is __WASM_BASE__ defined?)');

// 4. The wasm next to the bundle.
for (const v of variants) {
  await copyFile(join(root, 'build', `${v}.wasm`), join(dist, `${v}.wasm`));
}

// 5. Types entry point. tsc (build:types) emits dist/host/index.d.ts because
//    rootDir is the repo root; this file gives package.json's "types" its target.
const hostSource = await readFile(entry, 'utf8');
const hasDefault = /^\s*export\s+default\b|export\s*\{[^}]*\bas\s+default\b/m.test(hostSource);
await writeFile(
  join(dist, 'index.d.ts'),
  "export * from './host/index.js';\n" +
    (hasDefault ? "export { default } from './host/index.js';\n" : ''),
);

const sizes = [];
for (const f of ['index.js', ...variants.map((v) => `${v}.wasm`)]) {
  sizes.push(`${f} ${(await stat(join(dist, f))).size} B`);
}
console.log(`build.mjs: ${outdir ?? 'dist'}/ ready (${sizes.join(', ')})`);
