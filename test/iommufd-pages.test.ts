// IoPages (host/iommufd/pages.ts) keeps pins as runs of pages. Seeded random
// pins and unpins of overlapping ranges against a per-page model: every
// page's pin state shows in its frame reference count (one per pin holder
// set, as get_user_pages), the locked-page charge counts pinned pages once,
// and physRuns lists the model's physical addresses merged where contiguous.

import { describe, expect, it } from 'vitest';
import { IoPages, PinAccount } from '../host/iommufd/pages.js';
import type { AddressSpace, PhysRun } from '../host/kernel/mm.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE } from '../host/kernel/mm.js';
import { testSeeds, withSeed } from './reference/rng.js';
import { memfd, newHost, PAGE } from './support/host.js';

const N = 48; // pages

describe('IoPages: pins as runs against a per-page model', () => {
  for (const seed of testSeeds(4)) {
    it(`seed ${seed}`, async () => {
      const host = await newHost();
      const mm = (host as unknown as { mm: AddressSpace }).mm;
      // A shared memfd whose pages are touched in a random order: their
      // frames are not contiguous in page order, so runs split and merge.
      const fd = memfd(host, N * PAGE);
      const va = host.mmap(N * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      withSeed(seed, (rng) => {
        const order = Array.from({ length: N }, (_, i) => i);
        for (let i = N - 1; i > 0; i--) { const j = rng.below(i + 1); [order[i], order[j]] = [order[j]!, order[i]!]; }
        // A few pages touched in page order too: some contiguous stretches.
        for (const p of order.slice(0, N / 2).sort((a, b) => a - b).concat(order.slice(N / 2))) host.mem.write(va + p * PAGE, new Uint8Array([p]));
        const pas: number[] = [];
        const probe = mm.pin(va, N * PAGE, true);
        for (const r of probe) for (let o = 0; o < r.length; o += PAGE) pas.push(r.pa + o);
        mm.unpin(probe);
        const baseRef = pas.map((pa) => host.engine.refcount(pa / PAGE)); // the file's and the mapping's
        const account = new PinAccount(false, Infinity);
        const pages = new IoPages(mm, { kind: 'user', va }, N * PAGE, true, account);
        const model = new Array<number>(N).fill(0);
        const held: [number, number][] = [];
        const check = () => {
          expect(account.lockedPages).toBe(model.filter((c) => c > 0).length);
          for (let i = 0; i < N; i++) expect(host.engine.refcount(pas[i]! / PAGE), `page ${i}`).toBe(baseRef[i]! + (model[i]! > 0 ? 1 : 0));
          // physRuns over a random pinned stretch, with byte offsets inside pages.
          const starts = model.map((c, i) => (c > 0 ? i : -1)).filter((i) => i >= 0);
          if (starts.length === 0) return;
          const a = starts[rng.below(starts.length)]!;
          let b = a;
          while (b + 1 < N && model[b + 1]! > 0 && rng.below(4) !== 0) b++;
          const off = a * PAGE + rng.below(PAGE);
          const len = Math.max(1, b * PAGE + rng.below(PAGE) + 1 - off);
          const want: PhysRun[] = [];
          for (let at = off; at < off + len;) {
            const p = Math.floor(at / PAGE), n = Math.min(PAGE - (at % PAGE), off + len - at), pa = pas[p]! + (at % PAGE);
            const last = want[want.length - 1];
            if (last && last.pa + last.length === pa) last.length += n; else want.push({ pa, length: n });
            at += n;
          }
          expect(pages.physRuns(off, len)).toEqual(want);
        };
        for (let step = 0; step < 200; step++) {
          if (held.length > 0 && rng.below(2) === 0) {
            const [a, b] = held.splice(rng.below(held.length), 1)[0]!;
            pages.unpin(a, b);
            for (let i = a; i <= b; i++) model[i]!--;
          } else {
            const a = rng.below(N), b = Math.min(N - 1, a + rng.below(12));
            pages.pin(a, b);
            held.push([a, b]);
            for (let i = a; i <= b; i++) model[i]!++;
          }
          check();
        }
        for (const [a, b] of held) pages.unpin(a, b);
        expect(account.lockedPages).toBe(0);
        for (let i = 0; i < N; i++) expect(host.engine.refcount(pas[i]! / PAGE)).toBe(baseRef[i]!);
        expect(pas.some((pa, i) => i > 0 && pa !== pas[i - 1]! + PAGE)).toBe(true); // the runs did split
      });
    });
  }
});

// AddressSpace.pinContiguous: pin()'s answer for whole pages of one VMA in
// one physical run, without the list; -1, with nothing pinned, for anything
// else (pin() then). Its errors are pin()'s (get_user_pages: EFAULT for a
// page not mapped, or not writable for a writable pin).
describe('AddressSpace.pinContiguous', () => {
  it('pins what pin() would, returns -1 untouched where it does not apply, and fails as pin() does', async () => {
    const host = await newHost();
    const mm = (host as unknown as { mm: AddressSpace }).mm;
    const va = host.mmap(4 * PAGE);
    const runs = mm.pin(va, 4 * PAGE, true);
    expect(runs).toHaveLength(1); // fresh anonymous memory: one run
    const pa = runs[0]!.pa;
    const ref = () => [0, 1, 2, 3].map((i) => host.engine.refcount(pa / PAGE + i));
    const before = ref();
    expect(mm.pinContiguous(va + PAGE, 2 * PAGE, true)).toBe(pa + PAGE);
    expect(ref()).toEqual([before[0], before[1]! + 1, before[2]! + 1, before[3]]);
    mm.unpinRun(pa + PAGE, 2 * PAGE);
    expect(ref()).toEqual(before);
    // Not whole pages, or no page at all: not its case.
    for (const [at, len] of [[va + 1, PAGE], [va, PAGE + 1], [va, 0]] as const) expect(mm.pinContiguous(at, len, true)).toBe(-1);
    expect(ref()).toEqual(before);
    // A file's pages: not its case either.
    const fd = memfd(host, 2 * PAGE);
    const shared = host.mmap(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    expect(mm.pinContiguous(shared, PAGE, true)).toBe(-1);
    // pin()'s errors: an unmapped page, a read-only one pinned writable.
    expect(() => mm.pinContiguous(va + 4 * PAGE, PAGE, false)).toThrow(/EFAULT/);
    const ro = host.mmap(PAGE, PROT_READ);
    expect(() => mm.pinContiguous(ro, PAGE, true)).toThrow(/EFAULT/);
    expect(() => mm.pin(ro, PAGE, true)).toThrow(/EFAULT/);
    expect(mm.pinContiguous(ro, PAGE, false)).toBeGreaterThanOrEqual(0);
    mm.unpin(runs);
  });
});
