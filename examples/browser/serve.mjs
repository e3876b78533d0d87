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

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const args = process.argv.slice(2);
const isolated = !args.includes('--no-isolation');
const portArg = args.indexOf('--port');
const port = portArg >= 0 ? Number(args[portArg + 1]) : 8080;

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

if (!existsSync(join(root, 'dist', 'index.js'))) {
  console.error('dist/index.js is missing: run "npm run build" first');
  process.exit(1);
}

const server = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
  if (path === '/') {
    res.writeHead(302, { location: '/examples/browser/' }).end();
    return;
  }
  const file = normalize(join(root, path.endsWith('/') ? path + 'index.html' : path));
  if (!file.startsWith(root.endsWith(sep) ? root : root + sep)) {
    res.writeHead(403).end();
    return;
  }
  try {
    if (!(await stat(file)).isFile()) throw new Error('not a file');
    const headers = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' };
    if (isolated) {
      headers['cross-origin-opener-policy'] = 'same-origin';
      headers['cross-origin-embedder-policy'] = 'require-corp';
    }
    res.writeHead(200, headers).end(await readFile(file));
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  }
});

server.listen(port, '127.0.0.1', () => {
  const { port: p } = server.address();
  console.log(`http://127.0.0.1:${p}/examples/browser/  (${isolated ? 'cross-origin isolated' : 'not isolated'}; Ctrl-C to stop)`);
});
