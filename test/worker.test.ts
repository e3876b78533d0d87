// The engine and the host inside Node worker_threads workers, in
// single-thread mode (each worker owns its host; nothing is shared), run
// from the built package as a user gets it (a staged `npm run build`, see
// test/support/browser-stage.ts):
//   - `import 'wasm-viommu'` from a module inside the package resolves through
//     package.json's "exports" (types first) to the ESM bundle;
//   - the wasm may come from the default location next to the bundle, from a
//     URL (the "./wasm/release.wasm" export), from bytes, or as a compiled
//     WebAssembly.Module posted by the parent (compiled once, for every worker);
//   - the browser page's whole scenario (examples/browser/scenario.js) runs in
//     a worker unchanged, and several workers run at once, each its own machine.
// The browser Worker is in test/browser.test.ts.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Worker } from 'node:worker_threads';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { stagePackage, repoRoot, type Stage } from './support/browser-stage.js';

let stage: Stage;
let module: WebAssembly.Module;

// A module inside the staged package: a small VMM run in a worker. What it
// reports is plain data (bigints as hex strings).
const PROBE = `
import { workerData, parentPort, threadId } from 'node:worker_threads';
import { readFile } from 'node:fs/promises';
import { createHost, Iommufd, VfioDevice, DmaFault } from 'wasm-viommu';

const { source, module, tag } = workerData;
const wasm =
  source === 'default' ? undefined
  : source === 'url' ? new URL(import.meta.resolve('wasm-viommu/wasm/release.wasm'))
  : source === 'bytes' ? await readFile(new URL(import.meta.resolve('wasm-viommu/wasm/release.wasm')))
  : module;
const host = await createHost({ wasm, memoryLimit: 32 << 20 });
const iommufd = new Iommufd(host);
const ioas = iommufd.ioasAlloc();
const va = host.mmap(1 << 20);
host.mem.write(va, new TextEncoder().encode(tag));
const IOVA = 0x1000_0000n;
iommufd.ioasMap({ ioasId: ioas, userVa: va, length: 1 << 20, iova: IOVA });
const dev = host.addDevice({ iommu: 'intel-vtd' });
const vfio = new VfioDevice(host, dev.path);
vfio.bind(iommufd);
vfio.attach(ioas);
const read = new TextDecoder().decode(dev.dma.read(IOVA, tag.length));
for (let i = 0; i < 1000; i++) dev.dma.read(IOVA + BigInt((i * 4096) % (1 << 20)), 8);
dev.dma.write(IOVA + 0x800n, new TextEncoder().encode('from ' + tag));
const back = new TextDecoder().decode(host.mem.read(va + 0x800, 5 + tag.length));
iommufd.ioasUnmap(ioas, IOVA, 1 << 20);
let fault = null;
try { dev.dma.read(IOVA, 4); } catch (e) { if (e instanceof DmaFault) fault = e.reason; else throw e; }
parentPort.postMessage({ threadId, read, back, fault, stats: host.engine.stats(), sharedMemory: host.engine.memory.buffer instanceof SharedArrayBuffer });
`;

function run(entry: string | URL, workerData: Record<string, unknown>, opts: { eval?: boolean } = {}): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((resolve, reject) => {
    const w = new Worker(entry, { workerData, eval: opts.eval ?? false });
    let result: unknown;
    w.once('message', (m) => { result = m; });
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 && result !== undefined ? resolve(result) : reject(new Error(`worker exited with ${code} without a result`))));
  });
}

beforeAll(async () => {
  stage = await stagePackage(['browser']);
  await writeFile(join(stage.dir, 'probe.mjs'), PROBE);
  module = await WebAssembly.compile(await readFile(join(stage.dir, 'dist', 'release.wasm')));
});

afterAll(async () => {
  await stage?.remove();
});

describe('package.json', () => {
  it('"exports" puts "types" first, points at the ESM bundle, exposes the wasm; no runtime dependency', async () => {
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8'));
    expect(pkg.type).toBe('module');
    expect(Object.keys(pkg.exports['.'])[0]).toBe('types');
    expect(pkg.exports['.']).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' });
    expect(pkg.exports['./wasm/release.wasm']).toBe('./dist/release.wasm');
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.files).toContain('dist');
  });
});

describe('Node worker_threads, single-thread mode', () => {
  for (const source of ['default', 'url', 'bytes', 'module'] as const) {
    it(`a VMM in a worker imports 'wasm-viommu' and loads the engine (${source === 'default' ? 'default location next to the bundle' : source === 'module' ? 'a WebAssembly.Module posted by the parent' : `from ${source}`})`, async () => {
      const r = await run(pathToFileURL(join(stage.dir, 'probe.mjs')), { source, module: source === 'module' ? module : undefined, tag: `worker-${source}` });
      expect(r.threadId).toBeGreaterThan(0);
      expect(r.read).toBe(`worker-${source}`);
      expect(r.back).toBe(`from worker-${source}`);
      expect(r.fault).toBe('not-present');
      expect(r.sharedMemory).toBe(false);
      expect(r.stats.hits).toBeGreaterThan(700); // 1000 reads over 256 pages (4 KiB leaves): one miss each
    });
  }

  it('three workers at once, each its own machine, from one compiled Module', async () => {
    const results = await Promise.all([0, 1, 2].map((i) =>
      run(pathToFileURL(join(stage.dir, 'probe.mjs')), { source: 'module', module, tag: `vm${i}` })));
    expect(results.map((r) => r.read)).toEqual(['vm0', 'vm1', 'vm2']);
    expect(new Set(results.map((r) => r.threadId)).size).toBe(3);
    for (const r of results) expect(r.stats.faults).toBe(1);
  });

  it('the browser page\'s whole scenario runs in a worker unchanged', async () => {
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const lib = await import(workerData.lib);
        const { runScenario } = await import(workerData.scenario);
        const { summary } = await runScenario(lib, { wasm: workerData.module });
        parentPort.postMessage(summary);
      })().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
    `;
    const summary = await run(code, {
      lib: pathToFileURL(join(stage.dir, 'dist', 'index.js')).href,
      scenario: pathToFileURL(join(stage.dir, 'examples', 'browser', 'scenario.js')).href,
      module,
    }, { eval: true });
    expect(summary.error).toBeUndefined();
    expect(summary.checks.filter((c: { ok: boolean }) => !c.ok)).toEqual([]);
    expect(summary.ok).toBe(true);
    expect(summary.objects.map((o: { type: string }) => o.type)).toContain('VEVENTQ');
    expect(summary.hitRate).toBeGreaterThan(0.9);
  });
});
