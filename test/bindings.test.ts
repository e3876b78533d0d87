// bindings/: compiling the engine from every kind of source, and instantiating
// it with a host-created WebAssembly.Memory.
// Needs build/release.wasm and build/debug.wasm (`npm test` runs build:wasm first).

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  compileEngine,
  defaultWasmUrl,
  EngineLoadError,
  instantiateEngine,
} from '../bindings/index.js';

const releaseUrl = new URL('../build/release.wasm', import.meta.url);
const debugUrl = new URL('../build/debug.wasm', import.meta.url);
let releaseBytes: Uint8Array;

/** The limits of the `env.memory` import, read from the module's import section. */
function importedMemoryLimits(bytes: Uint8Array): { initial: number; maximum?: number; shared: boolean } | undefined {
  let p = 8; // magic + version
  const u32 = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[p++]!;
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
      shift += 7;
    }
  };
  const name = (): string => {
    const n = u32();
    const s = new TextDecoder().decode(bytes.subarray(p, p + n));
    p += n;
    return s;
  };
  while (p < bytes.length) {
    const id = bytes[p++]!;
    const size = u32();
    const end = p + size;
    if (id !== 2) {
      p = end;
      continue;
    }
    const count = u32();
    for (let i = 0; i < count; i++) {
      const mod = name();
      const field = name();
      const kind = bytes[p++]!;
      if (kind === 0) u32(); // func: type index
      else if (kind === 1) { p++; const f = u32(); u32(); if (f & 1) u32(); } // table
      else if (kind === 3) p += 2; // global: valtype + mut (MVP types)
      else if (kind === 2) {
        const flags = u32();
        const initial = u32();
        const maximum = flags & 1 ? u32() : undefined;
        if (mod === 'env' && field === 'memory') {
          return { initial, shared: (flags & 2) !== 0, ...(maximum === undefined ? {} : { maximum }) };
        }
      } else throw new Error(`unexpected import kind ${kind}`);
    }
    return undefined;
  }
  return undefined;
}

function memoryFor(bytes: Uint8Array): WebAssembly.Memory {
  const limits = importedMemoryLimits(bytes);
  if (!limits) throw new Error('the engine does not import env.memory');
  return new WebAssembly.Memory({
    initial: limits.initial,
    ...(limits.maximum === undefined ? {} : { maximum: limits.maximum }),
    ...(limits.shared ? { shared: true } : {}),
  });
}

async function expectInstantiable(module: WebAssembly.Module): Promise<WebAssembly.Instance> {
  const memory = memoryFor(releaseBytes);
  const instance = await instantiateEngine(module, { env: { memory } });
  expect(instance).toBeInstanceOf(WebAssembly.Instance);
  return instance;
}

function sameShape(module: WebAssembly.Module): void {
  expect(WebAssembly.Module.exports(module)).toEqual(
    WebAssembly.Module.exports(new WebAssembly.Module(releaseBytes as BufferSource)),
  );
}

beforeAll(async () => {
  releaseBytes = new Uint8Array(await readFile(releaseUrl));
});

describe('the built engine', () => {
  it('imports its memory as env.memory, unshared, with a small initial size', () => {
    const module = new WebAssembly.Module(releaseBytes as BufferSource);
    expect(WebAssembly.Module.imports(module)).toContainEqual({ module: 'env', name: 'memory', kind: 'memory' });
    const limits = importedMemoryLimits(releaseBytes)!;
    expect(limits.shared).toBe(false);
    expect(limits.initial).toBeLessThanOrEqual(16);
  });

  it('does not import env.abort (built with --use abort=)', () => {
    const module = new WebAssembly.Module(releaseBytes as BufferSource);
    expect(WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}`)).not.toContain('env.abort');
  });
});

describe('compileEngine', () => {
  it('compiles the default release wasm next to the code (build/ when run from source)', async () => {
    expect(defaultWasmUrl().href).toBe(releaseUrl.href);
    expect(defaultWasmUrl('debug').href).toBe(debugUrl.href);
    const module = await compileEngine();
    expect(module).toBeInstanceOf(WebAssembly.Module);
    sameShape(module);
    await expectInstantiable(module);
  });

  it('caches the default module per variant', async () => {
    const [a, b] = await Promise.all([compileEngine(), compileEngine(undefined, 'release')]);
    expect(a).toBe(b);
    expect(await compileEngine()).toBe(a);
    const debug = await compileEngine(undefined, 'debug');
    expect(debug).toBe(await compileEngine(undefined, 'debug'));
    expect(debug).not.toBe(a);
    await expectInstantiable(debug);
  });

  it('compiles from an ArrayBuffer', async () => {
    const buffer = releaseBytes.slice().buffer;
    expect(buffer).toBeInstanceOf(ArrayBuffer);
    const module = await compileEngine(buffer);
    sameShape(module);
    await expectInstantiable(module);
  });

  it('compiles from a Uint8Array, also one at an offset in a larger buffer', async () => {
    sameShape(await compileEngine(releaseBytes.slice()));
    const padded = new Uint8Array(releaseBytes.length + 24);
    padded.set(releaseBytes, 16);
    const view = padded.subarray(16, 16 + releaseBytes.length);
    const module = await compileEngine(view);
    sameShape(module);
    await expectInstantiable(module);
  });

  it('compiles from other ArrayBufferViews and from SharedArrayBuffer-backed bytes', async () => {
    const dv = new DataView(releaseBytes.slice().buffer);
    sameShape(await compileEngine(dv));
    const sab = new SharedArrayBuffer(releaseBytes.length);
    new Uint8Array(sab).set(releaseBytes);
    sameShape(await compileEngine(new Uint8Array(sab)));
  });

  it('compiles from a file: URL, its href, and a plain path', async () => {
    sameShape(await compileEngine(releaseUrl));
    sameShape(await compileEngine(releaseUrl.href));
    sameShape(await compileEngine(fileURLToPath(releaseUrl)));
    const debug = await compileEngine(debugUrl);
    expect(WebAssembly.Module.exports(debug).length).toBeGreaterThan(0);
  });

  it('returns a precompiled WebAssembly.Module as is', async () => {
    const module = new WebAssembly.Module(releaseBytes as BufferSource);
    expect(await compileEngine(module)).toBe(module);
    expect(await compileEngine(module, 'debug')).toBe(module);
  });

  it('compiles from a Response, streaming when the MIME type is application/wasm', async () => {
    const wasm = new Response(releaseBytes.slice(), { headers: { 'content-type': 'application/wasm' } });
    sameShape(await compileEngine(wasm));
    const octets = new Response(releaseBytes.slice(), { headers: { 'content-type': 'application/octet-stream' } });
    sameShape(await compileEngine(octets));
    const promised = Promise.resolve(new Response(releaseBytes.slice()));
    sameShape(await compileEngine(promised));
  });

  it('falls back to arrayBuffer() when WebAssembly.compileStreaming is missing', async () => {
    const original = WebAssembly.compileStreaming;
    try {
      (WebAssembly as { compileStreaming?: unknown }).compileStreaming = undefined;
      const response = new Response(releaseBytes.slice(), { headers: { 'content-type': 'application/wasm' } });
      sameShape(await compileEngine(response));
    } finally {
      WebAssembly.compileStreaming = original;
    }
  });

  describe('over http', () => {
    let server: Server;
    let base: string;
    beforeAll(async () => {
      server = createServer((req, res) => {
        if (req.url === '/engine.wasm') {
          res.writeHead(200, { 'content-type': 'application/wasm' }).end(releaseBytes);
        } else if (req.url === '/wrong-mime.wasm') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end(releaseBytes);
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        }
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('fetches with the right and with a wrong MIME type', async () => {
      sameShape(await compileEngine(new URL('/engine.wasm', base)));
      sameShape(await compileEngine(`${base}/wrong-mime.wasm`));
      sameShape(await compileEngine(fetch(`${base}/engine.wasm`)));
    });

    it('reports an HTTP error status', async () => {
      await expect(compileEngine(`${base}/missing.wasm`)).rejects.toThrow(/HTTP 404/);
    });
  });
});

describe('errors', () => {
  it('rejects an unsupported source with a clear EngineLoadError', async () => {
    for (const bad of [42, true, {}, [1, 2, 3], () => 0]) {
      const p = compileEngine(bad as never);
      await expect(p).rejects.toBeInstanceOf(EngineLoadError);
      await expect(compileEngine(bad as never)).rejects.toThrow(/unsupported wasm source/);
    }
  });

  it('names a missing file and says how to build it', async () => {
    const missing = new URL('../build/no-such-engine.wasm', import.meta.url);
    const error = await compileEngine(missing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EngineLoadError);
    expect((error as EngineLoadError).message).toMatch(/cannot read the engine wasm at file:.*no-such-engine\.wasm.*ENOENT/);
    expect((error as EngineLoadError).message).toMatch(/npm run build:wasm/);
    expect((error as EngineLoadError).source).toBe(missing.href);
    expect((error as EngineLoadError).cause).toBeDefined();
  });

  it('reports bytes that are not wasm as an invalid module', async () => {
    const garbage = new TextEncoder().encode('definitely not wasm');
    await expect(compileEngine(garbage)).rejects.toThrow(/not a valid engine wasm module/);
    await expect(compileEngine(new ArrayBuffer(0))).rejects.toThrow(EngineLoadError);
    const text = new Response('nope', { headers: { 'content-type': 'application/wasm' } });
    await expect(compileEngine(text)).rejects.toThrow(/not a valid engine wasm module/);
  });

  it('rejects a promise that resolves to something other than a Response', async () => {
    await expect(compileEngine(Promise.resolve(releaseBytes) as never)).rejects.toThrow(/not a Response/);
    await expect(compileEngine(Promise.reject(new Error('offline')) as never)).rejects.toThrow(/offline/);
  });

  it('rejects an unknown variant', async () => {
    await expect(compileEngine(undefined, 'fast' as never)).rejects.toThrow(/unknown engine variant "fast"/);
  });

  it('asks for env.memory when instantiating without it', async () => {
    const module = await compileEngine();
    await expect(instantiateEngine(module, {})).rejects.toThrow(/imports\.env\.memory/);
    await expect(instantiateEngine(module, { env: { memory: new ArrayBuffer(65536) as never } })).rejects.toThrow(
      EngineLoadError,
    );
  });

  it('surfaces a shared/unshared memory mismatch as a LinkError', async () => {
    const module = await compileEngine();
    const shared = new WebAssembly.Memory({ initial: 16, maximum: 16, shared: true });
    await expect(instantiateEngine(module, { env: { memory: shared } })).rejects.toBeInstanceOf(
      WebAssembly.LinkError,
    );
  });
});
