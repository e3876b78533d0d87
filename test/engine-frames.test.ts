// The engine's frame allocator (assembly/frames.ts): 4 KiB frames of linear
// memory, reference counted, handed out zeroed, contiguous and aligned on
// request, the memory growing on demand up to the configured limit.
//
// Where the expectations come from:
//   - assembly/frames.ts header and doc comments (the allocator's contract:
//     "n contiguous zeroed frames whose first pfn is a multiple of align",
//     "a frame whose count reaches 0 is free", "ERR_INVAL if any is free",
//     "grows on demand ... up to limitFrames");
//   - DESIGN.md section 3 ("Growth: when non-shared memory grows, every JS
//     view over it is stale; the host re-derives views in one place") and
//     section 4 ("a failed call leaves no trace", errors are SysErrors with
//     Linux's errno and code).

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import { expectSysError, makeEngine, MiB, type Variant } from './support/engine.js';
import { testSeeds, withSeed } from './reference/rng.js';

const FRAME = 4096;

/** True when the frames [pfn, pfn + n) of linear memory are all zero. */
function framesZero(e: Engine, pfn: number, n: number): boolean {
  const words = new Uint32Array(e.bytes.buffer, pfn * FRAME, (n * FRAME) / 4);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/** First pfn of an aligned run of n frames free in the model below `limit`, or -1. */
function freeRun(counts: Map<number, number>, n: number, align: number, base: number, limit: number): number {
  for (let s = Math.ceil(base / align) * align; s + n <= limit; s += align) {
    let q = s;
    while (q < s + n && !counts.has(q)) q++;
    if (q === s + n) return s;
  }
  return -1;
}

function fillFrames(e: Engine, pfn: number, n: number, byte: number): void {
  e.bytes.fill(byte, pfn * FRAME, (pfn + n) * FRAME);
}

/** Frames the limit allows in all (layout.ts: limitFrames = limit pages * 16). */
function limitFrames(e: Engine): number {
  return e.limitBytes / FRAME;
}

for (const variant of ['release', 'debug'] as Variant[]) {
  describe(`frame allocator (${variant})`, () => {
    it('hands out frames above frameBase, aligned as asked, zeroed, with a count of 1', () => {
      // frames.ts framesAlloc: "n contiguous zeroed frames whose first pfn is a multiple of align; each gets a count of 1".
      const e = makeEngine({ variant, memoryLimit: 64 * MiB });
      const base = e.frameBase;
      expect(base).toBeGreaterThan(0);
      // layout.ts: frames start on a 2 MiB boundary.
      expect(base % 512).toBe(0);
      const live: Array<[number, number]> = [];
      for (const [n, align] of [[1, 1], [1, 1], [3, 1], [8, 8], [1, 16], [5, 64], [512, 512], [2, 2], [1, 512]] as const) {
        const pfn = e.allocFrames(n, align);
        expect(pfn).toBeGreaterThanOrEqual(base);
        expect(pfn % align, `alloc(${n}, ${align}) -> ${pfn}`).toBe(0);
        expect(framesZero(e, pfn, n)).toBe(true);
        for (let q = pfn; q < pfn + n; q++) expect(e.refcount(q)).toBe(1);
        for (const [p, m] of live) expect(pfn + n <= p || p + m <= pfn, `runs overlap: ${pfn}+${n} and ${p}+${m}`).toBe(true);
        live.push([pfn, n]);
        fillFrames(e, pfn, n, 0x5a);
      }
    });

    it('every frame written and freed comes back zeroed', () => {
      // frames.ts: framesAlloc hands out zeroed frames, also when they were used before.
      const e = makeEngine({ variant, memoryLimit: 8 * MiB });
      const total = e.framesAvailable();
      const pfns: number[] = [];
      for (let i = 0; i < total; i++) pfns.push(e.allocFrames(1));
      expect(e.framesAvailable()).toBe(0);
      for (const p of pfns) fillFrames(e, p, 1, 0xa5);
      for (const p of pfns) e.putFrames(p, 1);
      expect(e.framesAvailable()).toBe(total);
      const again = new Set<number>();
      for (let i = 0; i < total; i++) {
        const p = e.allocFrames(1);
        again.add(p);
        expect(framesZero(e, p, 1), `frame ${p} not zeroed on reuse`).toBe(true);
      }
      // The same frames, all of them reused (nothing else exists under this limit).
      expect([...again].sort((a, b) => a - b)).toEqual([...pfns].sort((a, b) => a - b));
      // And a freed contiguous run comes back zeroed too (every frame is busy
      // and dirty now; frameBase is 2 MiB aligned).
      for (const p of again) fillFrames(e, p, 1, 0x3c);
      e.putFrames(e.frameBase, 64);
      const run = e.allocFrames(64, 64);
      expect(run).toBe(e.frameBase);
      expect(framesZero(e, run, 64)).toBe(true);
    });

    it('finds contiguous runs past fragmentation and never hands out a busy frame', () => {
      // frames.ts findRun: a run is n frames whose counts are all 0.
      const e = makeEngine({ variant, memoryLimit: 64 * MiB });
      const singles: number[] = [];
      for (let i = 0; i < 128; i++) singles.push(e.allocFrames(1));
      // Free every other frame: holes of one frame each.
      for (let i = 0; i < singles.length; i += 2) e.putFrames(singles[i]!, 1);
      const busy = new Set(singles.filter((_, i) => i % 2 === 1));
      for (const n of [2, 3, 16]) {
        const p = e.allocFrames(n);
        for (let q = p; q < p + n; q++) {
          expect(busy.has(q), `run ${p}+${n} includes busy frame ${q}`).toBe(false);
          busy.add(q);
          expect(e.refcount(q)).toBe(1);
        }
      }
      // Single frames still fill the holes.
      const holes = new Set(singles.filter((_, i) => i % 2 === 0));
      let filled = 0;
      for (let i = 0; i < 64; i++) if (holes.has(e.allocFrames(1))) filled++;
      expect(filled).toBeGreaterThan(0);
    });

    it('counts references: get adds one, put drops one, the frame is free only at 0', () => {
      // frames.ts framesGet / framesPut: "a frame whose count reaches 0 is free".
      const e = makeEngine({ variant, memoryLimit: 16 * MiB });
      const p = e.allocFrames(4);
      const free0 = e.framesFree();
      const avail0 = e.framesAvailable();
      e.getFrames(p, 4);
      e.getFrames(p + 1, 2);
      expect([0, 1, 2, 3].map((i) => e.refcount(p + i))).toEqual([2, 3, 3, 2]);
      e.putFrames(p, 4);
      expect([0, 1, 2, 3].map((i) => e.refcount(p + i))).toEqual([1, 2, 2, 1]);
      expect(e.framesFree()).toBe(free0);
      e.putFrames(p, 4);
      // Frames p and p+3 reached 0: free; p+1 and p+2 still held.
      expect([0, 1, 2, 3].map((i) => e.refcount(p + i))).toEqual([0, 1, 1, 0]);
      expect(e.framesFree()).toBe(free0 + 2);
      expect(e.framesAvailable()).toBe(avail0 + 2);
      e.putFrames(p + 1, 2);
      expect(e.framesFree()).toBe(free0 + 4);
      expect(e.framesAvailable()).toBe(avail0 + 4);
    });

    it('refuses to put or get a free frame (EINVAL) and then changes nothing', () => {
      // frames.ts framesPut / framesGet: "ERR_INVAL if any is free or out of range";
      // DESIGN.md 4: a failed call leaves no trace.
      const e = makeEngine({ variant, memoryLimit: 16 * MiB });
      const p = e.allocFrames(3);
      e.putFrames(p + 2, 1); // p+2 is now free
      const before = [e.refcount(p), e.refcount(p + 1), e.refcount(p + 2), e.framesFree()];
      expectSysError(() => e.putFrames(p + 2, 1), 'EINVAL');
      expectSysError(() => e.putFrames(p, 3), 'EINVAL'); // a run with a free frame in it
      expectSysError(() => e.getFrames(p + 2, 1), 'EINVAL');
      expectSysError(() => e.getFrames(p, 3), 'EINVAL');
      expect([e.refcount(p), e.refcount(p + 1), e.refcount(p + 2), e.framesFree()]).toEqual(before);
      // Out of range: below frameBase, past the memory.
      expectSysError(() => e.putFrames(e.frameBase - 1, 1), 'EINVAL');
      expectSysError(() => e.getFrames(0, 1), 'EINVAL');
      expectSysError(() => e.putFrames(e.framesInMemory(), 1), 'EINVAL');
      expectSysError(() => e.getFrames(e.framesInMemory() - 1, 2), 'EINVAL');
      // Bad arguments to alloc.
      expectSysError(() => e.allocFrames(0), 'EINVAL');
      expectSysError(() => e.allocFrames(1, 3), 'EINVAL');
      expectSysError(() => e.allocFrames(1, 0), 'EINVAL');
      expect([e.refcount(p), e.refcount(p + 1), e.refcount(p + 2), e.framesFree()]).toEqual(before);
    });

    it('grows the memory on demand, new frames zeroed, views re-derived', () => {
      // frames.ts: "The memory grows on demand, one allocation at a time, up to limitFrames";
      // DESIGN.md 3: after growth the host re-derives its views (engine.bytes).
      const e = makeEngine({ variant, memoryLimit: 256 * MiB });
      const first = e.allocFrames(1);
      const oldView = e.bytes;
      const oldLength = oldView.length;
      e.bytes.fill(0x77, first * FRAME, first * FRAME + FRAME);
      const inMemory = e.framesInMemory();
      const want = e.framesFree() + 1000; // more than is free now
      const run = e.allocFrames(want);
      expect(e.framesInMemory()).toBeGreaterThan(inMemory);
      expect(e.framesInMemory()).toBeGreaterThanOrEqual(run + want);
      // The old view is detached by the growth of a non-shared memory ...
      expect(oldView.length).toBe(0);
      // ... and engine.bytes is a fresh one over the whole memory, data kept.
      expect(e.bytes.length).toBe(e.memory.buffer.byteLength);
      expect(e.bytes.length).toBeGreaterThan(oldLength);
      expect(e.bytes.length).toBe(e.framesInMemory() * FRAME);
      expect(e.bytes[first * FRAME]).toBe(0x77);
      expect(e.bytes[first * FRAME + FRAME - 1]).toBe(0x77);
      expect(framesZero(e, run, want)).toBe(true);
      // The new frames are usable through the re-derived view.
      e.bytes[(run + want) * FRAME - 1] = 1;
      expect(e.bytes[(run + want) * FRAME - 1]).toBe(1);
    });

    it('reuses freed frames before growing', () => {
      // frames.ts framesAlloc: the free frames are searched before the memory grows.
      const e = makeEngine({ variant, memoryLimit: 256 * MiB });
      const runs: number[] = [];
      for (let i = 0; i < 64; i++) runs.push(e.allocFrames(16));
      const inMemory = e.framesInMemory();
      for (const p of runs) e.putFrames(p, 16);
      const again: number[] = [];
      for (let i = 0; i < 64; i++) again.push(e.allocFrames(16));
      expect(e.framesInMemory()).toBe(inMemory);
      expect(new Set(again)).toEqual(new Set(runs));
    });

    it('fails with ENOMEM at the memory limit, leaving the state unchanged', () => {
      // frames.ts: growth stops at limitFrames -> ERR_NOMEM; engine.ts maps it to
      // SysError ENOMEM (errno 12); DESIGN.md 4: a failed call leaves no trace.
      const e = makeEngine({ variant, memoryLimit: 4 * MiB });
      const avail = e.framesAvailable();
      expect(avail).toBe(limitFrames(e) - e.frameBase);
      const state = () => [e.framesAvailable(), e.framesFree(), e.framesInMemory()];
      const s0 = state();
      const err = expectSysError(() => e.allocFrames(avail + 1), 'ENOMEM');
      expect(err.errno).toBe(12);
      expect(state()).toEqual(s0);
      expectSysError(() => e.allocFrames(limitFrames(e) + 1), 'ENOMEM');
      expect(e.tryAllocFrames(avail + 1)).toBe(-1);
      expect(state()).toEqual(s0);
      // Take everything but 3 frames, then ask for 4.
      const big = e.allocFrames(avail - 3);
      expect(e.framesAvailable()).toBe(3);
      const s1 = state();
      expectSysError(() => e.allocFrames(4), 'ENOMEM');
      expect(state()).toEqual(s1);
      const small = [e.allocFrames(1), e.allocFrames(1), e.allocFrames(1)];
      expect(e.framesAvailable()).toBe(0);
      const s2 = state();
      expectSysError(() => e.allocFrames(1), 'ENOMEM');
      expect(state()).toEqual(s2);
      // A freed frame is found again at the limit.
      e.putFrames(small[1]!, 1);
      expect(e.allocFrames(1)).toBe(small[1]);
      e.putFrames(big + 10, 1);
      expect(e.allocFrames(1)).toBe(big + 10);
      expect(e.framesAvailable()).toBe(0);
      expect(e.framesInMemory()).toBe(limitFrames(e));
    });

    it('hands out every aligned run that fits under the limit (no ENOMEM while one exists)', () => {
      // frames.ts framesAlloc contract: ERR_NOMEM only when no aligned run of n
      // free frames exists below limitFrames. Under an 8 MiB limit the frames
      // from frameBase (2 MiB aligned, layout.ts) to the limit hold
      // (limit - frameBase) / 512 runs of 2 MiB, 2 MiB aligned: what a 2 MiB
      // leaf needs (mmap "physically contiguous where possible").
      const e = makeEngine({ variant, memoryLimit: 8 * MiB });
      const runs = (limitFrames(e) - e.frameBase) / 512;
      expect(Number.isInteger(runs) && runs >= 2).toBe(true);
      const got: number[] = [];
      for (let i = 0; i < runs; i++) {
        const p = e.tryAllocFrames(512, 512);
        expect(p, `alloc(512, 512) #${i + 1} of ${runs} failed with ${e.framesAvailable()} frames available`).not.toBe(-1);
        expect(p % 512).toBe(0);
        got.push(p);
      }
      expect(e.framesAvailable()).toBe(0);
      // The same holds for a small aligned run as the last thing that fits.
      const f = makeEngine({ variant, memoryLimit: 4 * MiB });
      const all = f.framesAvailable();
      f.allocFrames(all - 16);
      const p = f.tryAllocFrames(16, 16);
      expect(p, `alloc(16, 16) failed with ${f.framesAvailable()} frames available`).not.toBe(-1);
    });
  });
}

describe('frame allocator: seeded random alloc / get / put against a model', () => {
  for (const seed of testSeeds(3)) {
    it(`seed ${seed}`, () => {
      // The model: a count per frame (frames.ts header: 0 = free, n = n holders).
      withSeed(seed, (rng) => {
        const e = makeEngine({ memoryLimit: 64 * MiB });
        const base = e.frameBase;
        const limit = limitFrames(e);
        const counts = new Map<number, number>(); // pfn -> count (> 0)
        const runs: Array<{ pfn: number; n: number }> = []; // references we hold, one per entry
        let marker = 1;
        const checkAll = (): void => {
          for (const [pfn, c] of counts) if (e.refcount(pfn) !== c) throw new Error(`refcount(${pfn}) = ${e.refcount(pfn)}, model ${c}`);
          const busy = counts.size;
          expect(e.framesAvailable()).toBe(limit - base - busy);
          expect(e.framesFree()).toBe(e.framesInMemory() - base - busy);
        };
        for (let op = 0; op < 1500; op++) {
          const kind = runs.length === 0 ? 'alloc' : rng.weighted([[5, 'alloc'], [2, 'get'], [5, 'put']] as const);
          if (kind === 'alloc' && counts.size < 4000) {
            const n = rng.chance(0.1) ? rng.int(33, 300) : rng.int(1, 32);
            const align = rng.pick([1, 1, 1, 2, 4, 8, 16, 64, 512]);
            const before = [e.framesAvailable(), e.framesFree(), e.framesInMemory()];
            const p = e.tryAllocFrames(n, align);
            if (p === -1) {
              // Legitimate only when no aligned run of n free frames exists below the limit.
              const run = freeRun(counts, n, align, base, limit);
              if (run !== -1) throw new Error(`alloc(${n}, ${align}): ENOMEM although [${run}, ${run + n}) is free below the limit`);
              expect([e.framesAvailable(), e.framesFree(), e.framesInMemory()]).toEqual(before);
              continue;
            }
            if (p % align !== 0) throw new Error(`alloc(${n}, ${align}) = ${p}: misaligned`);
            if (p < base || p + n > limit) throw new Error(`alloc(${n}, ${align}) = ${p}: out of range`);
            for (let q = p; q < p + n; q++) {
              if (counts.has(q)) throw new Error(`alloc(${n}, ${align}) = ${p}: frame ${q} is busy (count ${counts.get(q)})`);
              counts.set(q, 1);
            }
            if (!framesZero(e, p, n)) throw new Error(`alloc(${n}, ${align}) = ${p}: not zeroed`);
            // Dirty every frame so that reuse must zero it again.
            fillFrames(e, p, n, marker);
            marker = (marker % 255) + 1;
            runs.push({ pfn: p, n });
          } else if (kind === 'get') {
            const r = rng.pick(runs);
            const off = rng.below(r.n);
            const m = rng.int(1, r.n - off);
            e.getFrames(r.pfn + off, m);
            for (let q = r.pfn + off; q < r.pfn + off + m; q++) counts.set(q, counts.get(q)! + 1);
            runs.push({ pfn: r.pfn + off, n: m });
          } else {
            const i = rng.below(runs.length);
            const r = runs[i]!;
            runs[i] = runs[runs.length - 1]!;
            runs.pop();
            e.putFrames(r.pfn, r.n);
            for (let q = r.pfn; q < r.pfn + r.n; q++) {
              const c = counts.get(q)! - 1;
              if (c === 0) counts.delete(q);
              else counts.set(q, c);
            }
          }
          if (op % 100 === 0) checkAll();
        }
        checkAll();
        for (const r of runs) e.putFrames(r.pfn, r.n);
        expect(e.framesAvailable()).toBe(limit - base);
      });
    });
  }
});
