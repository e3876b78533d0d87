#!/usr/bin/env node
// Serve the repository for the browser page:
//
//   npm run build                       # dist/: the ESM bundle and the wasm
//   node examples/browser/serve.mjs     # then open the URL it prints
//
// Any static server will do (the page needs no bundler and no plugin), as
// long as .js is served as JavaScript and, for compileStreaming, .wasm as
// application/wasm. This one also sends the two headers that make the page
// cross-origin isolated, which SharedArrayBuffer (the shared-memory mode)
// needs:
//   Cross-Origin-Opener-Policy: same-origin
//   Cross-Origin-Embedder-Policy: require-corp
// `--no-isolation` leaves them out: the page then runs in single-thread
// mode, unchanged. `--port N` picks the port (default 8080; 0 = any).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveStatic } from './static-server.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const args = process.argv.slice(2);
const isolated = !args.includes('--no-isolation');
const portArg = args.indexOf('--port');
const port = portArg >= 0 ? Number(args[portArg + 1]) : 8080;

if (!existsSync(join(root, 'dist', 'index.js'))) {
  console.error('dist/index.js is missing: run "npm run build" first');
  process.exit(1);
}

const server = await serveStatic(root, { isolated, port, redirect: '/examples/browser/' });
console.log(`${server.url}/examples/browser/  (${isolated ? 'cross-origin isolated' : 'not isolated'}; Ctrl-C to stop)`);
