// Shared-memory mode (assembly/layout.ts, DESIGN 2): the engine over a
// SharedArrayBuffer-backed memory, worker_threads instances attached to it
// translating at once, the owner changing translations. What must hold:
// every worker's translations are the owner's; and once an unmap returns,
// no worker can reach the old page (the owner's writer flag and the
// workers' in-flight words). The workers run test/support/shared-worker.ts,
// bundled here with esbuild.

import { describe, it, expect, beforeAll } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { makeEngine, engineModule } from './support/engine.js';
import { testSeeds, withSeed } from './reference/rng.js';
import type { Engine } from '../host/engine/engine.js';

let workerUrl: URL;

beforeAll(() => {
  const out = buildSync({
    entryPoints: [fileURLToPath(new URL('./support/shared-worker.ts', import.meta.url))],
    bundle: true, write: false, format: 'esm', platform: 'node', target: 'node20',
  });
  workerUrl = new URL(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0]!.text).toString('base64')}`);
});

function run<T>(data: object): { worker: Worker; done: Promise<T> } {
  const worker = new Worker(workerUrl, { workerData: data });
  const done = new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => { if (code !== 0) reject(new Error(`worker exited with ${code}`)); });
  });
  return { worker, done };
}

const R = 1, W = 2;

describe('shared-memory mode', () => {
  it('the engine needs its shared build over a shared memory, and the owner alone shares it', () => {
    expect(() => makeEngine({ shared: true, variant: 'release', memoryLimit: 16 << 20 })).toThrow(/shared build/);
    const e = makeEngine({ memoryLimit: 16 << 20 });
    expect(() => e.shareWorker()).toThrow(/owner of a shared-memory engine/);
  });

  for (const seed of testSeeds(1)) {
    it(`two workers translate at once and every answer is the owner's (seed ${seed})`, async () => {
      const e = makeEngine({ shared: true, memoryLimit: 64 << 20 });
      const { iovas, want } = withSeed(seed, (rng) => {
        const did = e.ptCreate(4, 7);
        const frames = e.allocFrames(256, 1);
        const iovas: number[] = [];
        for (let i = 0; i < 256; i++) {
          const iova = (rng.below(1 << 16) << 12) >>> 0; // a random 4 KiB page below 256 MiB
          if (e.ptWalk(did, iova).ok) continue;
          e.ptMap(did, iova, (frames + i) * 4096, 4096, R | W);
          iovas.push(iova + rng.below(4096));
        }
        iovas.push(0x1000_0000); // unmapped: a fault, the same in every instance
        e.ctxSet(1, did, 0);
        const want = iovas.map((v) => { const w = e.ptWalk(did, v); return w.ok ? Number(w.pa) + (v % 4096) : -1; });
        return { iovas, want };
      });
      const jobs = [0, 1].map(() => run<{ pas: number[]; stats: { hits: number; misses: number } }>({
        module: engineModule('shared'), share: e.shareWorker(), kind: 'batch', ctx: 1, iovas, rounds: 20,
      }));
      const results = await Promise.all(jobs.map((j) => j.done));
      for (const r of results) {
        expect(r.pas).toEqual(want);
        // Each worker has its own IOTLB and counters: the first round missed, the rest hit (the fault misses each round).
        expect(r.stats.misses).toBe(iovas.length - 1 + 20);
        expect(r.stats.hits).toBe(19 * (iovas.length - 1));
      }
      expect(e.stats().hits + e.stats().misses).toBe(0); // the owner translated nothing itself
    });
  }

  it('once an unmap returns no worker reaches the old page, though the page is rewritten at once', async () => {
    const e: Engine = makeEngine({ shared: true, memoryLimit: 64 << 20 });
    const did = e.ptCreate(4, 7);
    const page = e.allocFrames(1, 1) * 4096;
    const IOVA = 0x40_0000, POISON = 0xbb;
    e.ctxSet(1, did, 0);
    const control = new SharedArrayBuffer(64);
    const ctl = new Int32Array(control);
    const jobs = [0, 1].map(() => run<{ ok: number; faults: number; poisoned: number }>({
      module: engineModule('shared'), share: e.shareWorker(), kind: 'hammer', ctx: 1, iova: IOVA, poison: POISON, control,
    }));
    const readsBy = (slot: number) => Atomics.load(ctl, 1 + slot);
    const until = async (cond: () => boolean) => { while (!cond()) await new Promise((r) => setTimeout(r, 1)); };
    await until(() => readsBy(0) > 0 && readsBy(1) > 0);
    for (let round = 0; round < 300; round++) {
      e.bytes.fill(0xaa, page, page + 4096);
      e.ptMap(did, IOVA, page, 4096, R);
      const before = [readsBy(0), readsBy(1)];
      while (readsBy(0) < before[0]! + 2 || readsBy(1) < before[1]! + 2) { /* let both read the live mapping */ }
      e.ptUnmap(did, IOVA, 4096);
      // The page goes back to the allocator and is reused at once: no worker may read this.
      e.bytes.fill(POISON, page, page + 4096);
    }
    Atomics.store(ctl, 0, 1);
    const results = await Promise.all(jobs.map((j) => j.done));
    for (const r of results) {
      expect(r.poisoned).toBe(0);
      expect(r.ok).toBeGreaterThanOrEqual(600); // they read the mapping while it lived ...
      expect(r.faults).toBeGreaterThan(0); // ... and were refused after it went
    }
  }, 60_000);
});
