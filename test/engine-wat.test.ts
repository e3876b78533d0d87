// DESIGN.md section 3: "Keep the release .wat honest: a test proves that the
// walkers and the IOTLB probe call no runtime function." This file reads
// build/release.wat (written by `npm run build:wasm` next to release.wasm),
// follows the call graph from the hot exports (translate, translate_batch,
// dma_ranges, pt_walk) through every internal function they call, and checks
// that none of them calls into AssemblyScript's library (~lib/: the runtime,
// allocation, abort) or any import but the two embedder-segment accessors of
// a nested walk over guest tables outside the engine's memory, or calls
// indirectly. It also checks that the module imports env.memory and those
// two, nothing else (asconfig.json: importMemory, runtime stub, abort disabled).
//
// Function names in the .wat are AssemblyScript's internal names:
// `$assembly/<file>/<function>` for the project's code, `$~lib/...` for the
// standard library and runtime (e.g. `$~lib/rt/stub/__alloc`,
// `$~lib/builtins/abort`).

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildFile, engineModule, wasmPath } from './support/engine.js';

const HOT_EXPORTS = ['translate', 'translate_batch', 'dma_ranges', 'pt_walk'];

interface Wat {
  /** Function name (without `$`) -> the names it calls directly. */
  calls: Map<string, Set<string>>;
  /** Function name -> its body's text. */
  bodies: Map<string, string>;
  /** Export name -> function name, for function exports. */
  funcExports: Map<string, string>;
  /** Every import: module, field, kind, and the internal name of a function import. */
  imports: Array<{ module: string; field: string; kind: string; name?: string }>;
}

/** Split a binaryen-printed module into its top-level fields and read what we need. */
function parseWat(text: string): Wat {
  const calls = new Map<string, Set<string>>();
  const bodies = new Map<string, string>();
  const funcExports = new Map<string, string>();
  const imports: Wat['imports'] = [];
  // Top-level fields start at an indentation of one space: " (func ...", " (import ...".
  const fields = text.split(/\n(?= \()/);
  for (const field of fields) {
    const head = field.trimStart();
    let m: RegExpMatchArray | null;
    if ((m = head.match(/^\(func \$([^\s()]+)/))) {
      const name = m[1]!;
      const callees = new Set<string>();
      for (const c of field.matchAll(/\b(?:return_)?call \$([^\s()]+)/g)) callees.add(c[1]!);
      calls.set(name, callees);
      bodies.set(name, field);
    } else if ((m = head.match(/^\(import "([^"]*)" "([^"]*)" \((\w+)(?: \$([^\s()]+))?/))) {
      imports.push({ module: m[1]!, field: m[2]!, kind: m[3]!, name: m[4] });
    } else if ((m = head.match(/^\(export "([^"]*)" \(func \$([^\s()]+)\)\)/))) {
      funcExports.set(m[1]!, m[2]!);
    }
  }
  return { calls, bodies, funcExports, imports };
}

/** Every function reachable by direct calls from `roots` (roots included). */
function reachable(wat: Wat, roots: string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const g of wat.calls.get(f) ?? []) todo.push(g);
  }
  return seen;
}

/** The number of entries of a wasm binary's function section (id 3): its defined functions. */
function definedFunctions(bytes: Uint8Array): number {
  let p = 8; // magic + version
  const leb = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[p++]!;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
  };
  while (p < bytes.length) {
    const id = bytes[p++]!;
    const size = leb();
    const end = p + size;
    if (id === 3) return leb();
    p = end;
  }
  return 0;
}

const watUrl = buildFile('release.wat');

function loadWat(): { text: string; wat: Wat } {
  const text = readFileSync(watUrl, 'utf8');
  return { text, wat: parseWat(text) };
}

describe('release.wat: the hot paths call no runtime function', () => {
  it('is the text of the release.wasm being tested', () => {
    const { wat } = loadWat();
    const mod = engineModule('release');
    const wasmFuncExports = WebAssembly.Module.exports(mod).filter((x) => x.kind === 'function').map((x) => x.name).sort();
    expect([...wat.funcExports.keys()].sort()).toEqual(wasmFuncExports);
    const wasmImports = WebAssembly.Module.imports(mod).map((x) => `${x.module}.${x.name}:${x.kind}`).sort();
    const kinds: Record<string, string> = { func: 'function' };
    expect(wat.imports.map((x) => `${x.module}.${x.field}:${kinds[x.kind] ?? x.kind}`).sort()).toEqual(wasmImports);
    // As many defined functions as the binary's function section declares.
    expect(wat.bodies.size, 'release.wat and release.wasm come from different builds: run `npm run build:wasm`')
      .toBe(definedFunctions(readFileSync(wasmPath('release'))));
  });

  it('imports env.memory and the two embedder-segment accessors, nothing else (release and debug)', () => {
    const { wat } = loadWat();
    expect(wat.imports.map((i) => `${i.module}.${i.field}:${i.kind}`).sort()).toEqual(['env.memory:memory', 'env.seg_load:func', 'env.seg_store:func']);
    for (const variant of ['release', 'debug'] as const) {
      expect(WebAssembly.Module.imports(engineModule(variant)).map((i) => `${i.module}.${i.name}:${i.kind}`).sort())
        .toEqual(['env.memory:memory', 'env.seg_load:function', 'env.seg_store:function']);
    }
  });

  it('finds the call graph (control: the map path reaches the frame allocator)', () => {
    // If parsing went wrong, every reachable set would be trivially clean.
    const { wat } = loadWat();
    expect(wat.bodies.size).toBeGreaterThan(20);
    const mapPath = reachable(wat, [wat.funcExports.get('pt_map')!]);
    expect([...mapPath].some((f) => /frames\/framesAlloc$/.test(f)), [...mapPath].join(', ')).toBe(true);
  });

  it('translate, translate_batch, dma_ranges and pt_walk reach only project code, with no runtime call', () => {
    const { wat } = loadWat();
    const roots = HOT_EXPORTS.map((name) => {
      const f = wat.funcExports.get(name);
      expect(f, `export ${name} missing from release.wat`).toBeDefined();
      return f!;
    });
    const hot = reachable(wat, roots);
    const importedFuncs = new Set(wat.imports.filter((i) => i.kind === 'func').map((i) => i.name!));
    // The one way out: a nested walk whose guest table lies in an embedder's
    // segment (another wasm memory, or a buffer) has the host copy the entry
    // (assembly/nested.ts seg_load / seg_store); tables in the engine's own
    // memory never take it. Those two imports are allowed, nothing else.
    const segmentAccess = [...importedFuncs].filter((f) => /nested\/seg(Load|Store)$/.test(f));
    expect(segmentAccess.length).toBe(2);
    for (const f of segmentAccess) hot.delete(f);
    const problems: string[] = [];
    for (const f of hot) {
      const body = wat.bodies.get(f);
      if (importedFuncs.has(f)) problems.push(`${f} is an import`);
      else if (body === undefined) problems.push(`${f} has no body in the module`);
      if (!f.startsWith('assembly/')) problems.push(`${f} is not project code (runtime / library function)`);
      if (/~lib\/|__new|__alloc|__realloc|__free|__collect|__pin|__unpin|__link|__visit|__renew|abort/.test(f)) {
        problems.push(`${f} is a runtime, allocation or abort function`);
      }
      if (body !== undefined) {
        if (/\b(?:return_)?call_(?:indirect|ref)\b/.test(body)) problems.push(`${f} calls indirectly`);
        // Growth detaches the host's views (DESIGN 3); a hot path must never grow.
        if (/\bmemory\.grow\b/.test(body)) problems.push(`${f} grows the memory`);
      }
    }
    expect(problems, `hot functions: ${[...hot].join(', ')}`).toEqual([]);
    // The walker and the IOTLB are in the hot set, called or inlined.
    const text = [...hot].map((f) => wat.bodies.get(f)).join('\n');
    expect(hot.has(wat.funcExports.get('pt_walk')!)).toBe(true);
    expect(text.length).toBeGreaterThan(1000);
  });

  it('the front TLB probe is inline in translate and translate_batch, and a front hit of translate returns before any call', () => {
    // assembly/iotlb.ts "The front TLB": the probe reads this instance's
    // front base (a global) in the export's own body; no function is called
    // on the way to the hit's return (the counter and mailbox stores are inline too).
    const { wat } = loadWat();
    for (const name of ['translate', 'translate_batch']) {
      const body = wat.bodies.get(wat.funcExports.get(name)!)!;
      expect(body, `${name} reads the front base`).toMatch(/global\.get \$assembly\/state\/frontBase\b/);
    }
    const body = wat.bodies.get(wat.funcExports.get('translate')!)!;
    const probe = body.indexOf('global.get $assembly/state/frontBase');
    const hitReturn = body.indexOf('return', probe);
    expect(hitReturn).toBeGreaterThan(probe);
    const upToHit = body.slice(0, hitReturn);
    expect(upToHit, 'no call before the front hit returns').not.toMatch(/\bcall(?:_indirect|_ref)? /);
    // And the loop of translate_batch probes the front first: it reads the base inside the loop, before any call.
    const batchBody = wat.bodies.get(wat.funcExports.get('translate_batch')!)!;
    const loop = batchBody.indexOf('loop ');
    const front = batchBody.indexOf('global.get $assembly/state/frontBase', loop);
    expect(loop).toBeGreaterThan(0);
    expect(front).toBeGreaterThan(loop);
    expect(batchBody.slice(loop, front)).not.toMatch(/\bcall /);
  });
});
