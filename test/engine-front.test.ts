// The front TLB (assembly/iotlb.ts "The front TLB", record in layout.ts):
// a direct-mapped first level in front of the IOTLB that translate,
// translate_batch and dma_ranges answer from. Its rules, tested here:
//   - "DESIGN 3": invalidation is exact: after an unmap or an invalidation
//     returns, no device reaches the old page through any cache: the front
//     included, per call, batched and by DMA, in the owner and in workers;
//   - layout.ts: its key folds in the context and a 7-bit stamp of the IOTLB
//     epoch; every invalidation, context change and segment removal bumps the
//     epoch; every 128 bumps every instance's front is zeroed, so a stamp
//     never comes back to an entry of its earlier epoch; a snapshot carries
//     it empty;
//   - a cache may serve a translation the table no longer holds only until an
//     invalidation covers it (VT-d 6.5, invalidation of translation caches:
//     software invalidates after changing a present entry). The raw-edit tests change a leaf behind the engine's
//     back, which is how a guest's table changes, to see what each
//     invalidation makes the caches forget.
// No timing is asserted anywhere: these are coherence tests.

import { describe, expect, it } from 'vitest';
import { Engine } from '../host/engine/engine.js';
import { F_BLOCKED, F_NOT_PRESENT, F_READ, F_WRITE, PERM_R, PERM_RW, PERM_W, SZ_2M as REF_SZ_2M, SZ_4K as REF_SZ_4K } from './reference/vtd_sl.js';
import { type Rng, testSeeds, withSeed } from './reference/rng.js';
import { engineModule, GiB, hex, makeEngine, PAGE, segPa, SZ_2M, vtdLeaf } from './support/engine.js';

const ADDR = 0x000f_ffff_ffff_f000n;
const A = 1n << 8n;
const D = 1n << 9n;

type Out = { ok: true; pa: bigint; shift?: number } | { ok: false; fault: number };

/** The address of an answer that must be a translation. */
function paOf(o: Out): bigint {
  if (!o.ok) throw new Error(`expected a translation, got fault ${o.fault}`);
  return o.pa;
}

/** Per call: the mailbox's answer. */
function one(e: Engine, c: number, iova: bigint, access = PERM_R): Out {
  const st = e.translate(c, Number(iova & 0xffffffffn), Number(iova >> 32n), access);
  return st === 0 ? { ok: true, pa: (BigInt(e.lastPaHi) << 32n) | BigInt(e.lastPaLo), shift: e.lastShift } : { ok: false, fault: st };
}

/** Batched: each IOVA's answer. */
function batch(e: Engine, c: number, iovas: bigint[], access = PERM_R): Out[] {
  const input = e.batchIn;
  iovas.forEach((a, i) => { input[2 * i] = Number(a & 0xffffffffn); input[2 * i + 1] = Number(a >> 32n); });
  e.translateBatch(c, iovas.length, access);
  const out = e.batchOut;
  return iovas.map((_, i) => {
    const lo = out[2 * i]!, hi = out[2 * i + 1]!;
    return hi === 0xffffffff ? { ok: false, fault: lo & 0xff } : { ok: true, pa: (BigInt(hi) << 32n) | BigInt(lo) };
  });
}

/** A DMA of `len` bytes inside iova's page: its one physical range's start. */
function dma(e: Engine, c: number, iova: bigint, access = PERM_R, len = Math.min(16, Number(PAGE - (iova & 0xfffn)))): Out {
  const r = e.dmaRanges(c, iova, len, access);
  if (!Array.isArray(r)) return { ok: false, fault: r.fault };
  if (r.length !== 1) throw new Error(`a DMA inside one page took ${r.length} ranges`);
  return { ok: true, pa: BigInt(r[0]!.seg) * 0x1_0000_0000n + BigInt(r[0]!.offset) };
}

const leaf = vtdLeaf;

/** Point iova's 4 KiB leaf at pa without telling the engine (a change of a present entry, not yet invalidated). */
function rawEdit(e: Engine, did: number, iova: bigint, pa: bigint): void {
  const { at, pte, level } = leaf(e, did, iova);
  if (level !== 1) throw new Error(`rawEdit: ${hex(iova)} is in a level-${level} leaf`);
  new DataView(e.bytes.buffer).setBigUint64(at, (pte & ~ADDR) | (pa & ADDR), true);
}

/** Per call, batched and by DMA, `want` for every iova (twice: a fill, then whatever cache answers). */
function expectBoth(e: Engine, c: number, iovas: bigint[], want: (iova: bigint) => Out, access = PERM_R): void {
  for (let round = 0; round < 2; round++) {
    for (const iova of iovas) {
      const got = one(e, c, iova, access);
      const w = want(iova);
      expect({ ok: got.ok, v: got.ok ? hex(got.pa) : got.fault }, `per call ctx ${c} ${hex(iova)} round ${round}`)
        .toEqual({ ok: w.ok, v: w.ok ? hex(w.pa) : w.fault });
    }
    const got = batch(e, c, iovas, access);
    iovas.forEach((iova, i) => {
      const w = want(iova);
      const g = got[i]!;
      expect({ ok: g.ok, v: g.ok ? hex(g.pa) : g.fault }, `batch ctx ${c} ${hex(iova)} round ${round}`).toEqual({ ok: w.ok, v: w.ok ? hex(w.pa) : w.fault });
    });
    for (const iova of iovas) {
      const g = dma(e, c, iova, access);
      const w = want(iova);
      expect({ ok: g.ok, v: g.ok ? hex(g.pa) : g.fault }, `dma ctx ${c} ${hex(iova)} round ${round}`).toEqual({ ok: w.ok, v: w.ok ? hex(w.pa) : w.fault });
    }
  }
}

const BASE = 0x40_0000n; // IOVA of the first page
const PAGES = 8;
const iovasOf = (n = PAGES, off = 0x10n): bigint[] => Array.from({ length: n }, (_, i) => BASE + BigInt(i) * PAGE + off);

/** An engine with a segment, a 4 KiB-only domain (and a second one) and contexts 1 (PASID 0) and 2 (PASID 3) on the first. */
function setup(opts: { shared?: boolean } = {}) {
  const e = makeEngine({ memoryLimit: 64 << 20, ...opts });
  const seg = e.addSegment(4 * GiB);
  const d1 = e.ptCreate(4, REF_SZ_4K | REF_SZ_2M);
  const d2 = e.ptCreate(4, REF_SZ_4K | REF_SZ_2M);
  e.ctxSet(1, d1, 0);
  e.ctxSet(2, d1, 3);
  const pa1 = (i: bigint) => segPa(seg, 0x100_0000n + i * PAGE);
  const pa2 = (i: bigint) => segPa(seg, 0x800_0000n + i * PAGE);
  e.ptMap(d1, BASE, pa1(0n), BigInt(PAGES) * PAGE, PERM_RW);
  e.ptMap(d2, BASE, segPa(seg, 0x200_0000n), BigInt(PAGES) * PAGE, PERM_R);
  const at = (pa: (i: bigint) => bigint) => (iova: bigint): Out => ({ ok: true, pa: pa((iova - BASE) / PAGE) + (iova & 0xfffn) });
  return { e, seg, d1, d2, pa1, pa2, want1: at(pa1), want2: at(pa2), wantD2: at((i) => segPa(seg, 0x200_0000n + i * PAGE)) };
}

describe('front TLB: every invalidation kind reaches it (per call, batched, by DMA)', () => {
  it('an unmap faults the pages at once; a new map of them is seen', () => {
    const { e, d1, pa2, want1, want2 } = setup();
    const iovas = iovasOf();
    expectBoth(e, 1, iovas, want1);
    e.ptUnmap(d1, BASE, BigInt(PAGES) * PAGE);
    expectBoth(e, 1, iovas, () => ({ ok: false, fault: F_NOT_PRESENT }));
    e.ptMap(d1, BASE, pa2(0n), BigInt(PAGES) * PAGE, PERM_RW);
    expectBoth(e, 1, iovas, want2);
  });

  for (const kind of ['range', 'domain', 'all'] as const) {
    it(`a flush (${kind}) makes a changed leaf seen, in every PASID's context`, () => {
      const { e, d1, pa2, want1, want2 } = setup();
      const iovas = iovasOf();
      expectBoth(e, 1, iovas, want1);
      expectBoth(e, 2, iovas, want1);
      for (const iova of iovas) rawEdit(e, d1, iova, pa2((iova - BASE) / PAGE));
      // Not yet invalidated: a cache may still serve the old leaf, and here
      // one does (so what follows tests a cache, not only the walk).
      expect(paOf(one(e, 1, iovas[0]!))).toBe(paOf(want1(iovas[0]!)));
      if (kind === 'range') e.flushRange(d1, BASE, BigInt(PAGES) * PAGE);
      else if (kind === 'domain') e.flushDomain(d1);
      else e.flushAll();
      expectBoth(e, 1, iovas, want2);
      expectBoth(e, 2, iovas, want2);
    });
  }

  it('a range flush of one page leaves the others as cached (and exact for that page)', () => {
    const { e, d1, pa2, want1, want2 } = setup();
    const iovas = iovasOf();
    expectBoth(e, 1, iovas, want1);
    rawEdit(e, d1, iovas[3]!, pa2(3n));
    e.flushRange(d1, iovas[3]! & ~0xfffn, PAGE);
    expectBoth(e, 1, iovas, (iova) => ((iova - BASE) / PAGE === 3n ? want2(iova) : want1(iova)));
  });

  it('a context moved to another domain, another PASID, or blocked, is followed at once', () => {
    const { e, d1, d2, want1, wantD2 } = setup();
    const iovas = iovasOf();
    expectBoth(e, 1, iovas, want1);
    e.ctxSet(1, d2, 0);
    expectBoth(e, 1, iovas, wantD2);
    // Writes: d2 is read-only.
    expectBoth(e, 1, iovas, () => ({ ok: false, fault: F_WRITE }), PERM_W);
    e.ctxSet(1, d1, 7);
    expectBoth(e, 1, iovas, want1);
    e.ctxSet(1, 0, 0);
    expectBoth(e, 1, iovas, () => ({ ok: false, fault: F_BLOCKED }));
    e.ctxSet(1, d1, 0);
    expectBoth(e, 1, iovas, want1);
  });

  it('two contexts on different domains with the same IOVAs never see each other (the key holds the context)', () => {
    const { e, d2, seg, want1, wantD2 } = setup();
    e.ctxSet(3, d2, 0);
    const iovas = iovasOf();
    for (let round = 0; round < 3; round++) {
      expectBoth(e, 1, iovas, want1);
      expectBoth(e, 3, iovas, wantD2);
    }
    // Pages of two contexts in the same slot (layout.ts: slot = (vpn + ctx *
    // FRONT_CTX_MIX) mod FRONT_ENTRIES), same vpn >> FRONT_LOG2: only the
    // key's context field tells them apart.
    const L = e.layout;
    const slot = (c: number, vpn: number) => ((vpn + Math.imul(c, L.FRONT_CTX_MIX)) >>> 0) % L.FRONT_ENTRIES;
    const vpn1 = Number(BASE / PAGE);
    const vpn3 = (vpn1 + Math.imul(1 - 3, L.FRONT_CTX_MIX) % L.FRONT_ENTRIES + 2 * L.FRONT_ENTRIES) % L.FRONT_ENTRIES;
    expect(slot(3, vpn3)).toBe(slot(1, vpn1));
    const same = BigInt(vpn3) * PAGE;
    e.ptMap(d2, same, segPa(seg, 0x500_0000n), PAGE, PERM_RW);
    for (let round = 0; round < 3; round++) {
      expect(paOf(one(e, 1, BASE + 8n))).toBe(paOf(want1(BASE + 8n)));
      expect(paOf(one(e, 3, same + 8n))).toBe(segPa(seg, 0x500_0000n) + 8n);
      expect(paOf(batch(e, 1, [BASE + 8n])[0]!)).toBe(paOf(want1(BASE + 8n)));
      expect(paOf(batch(e, 3, [same + 8n])[0]!)).toBe(segPa(seg, 0x500_0000n) + 8n);
    }
    // Context ids past the table: blocked, whatever a slot holds.
    for (const c of [4096, 65536 + 1, 65536 + 3, 0x7fffffff]) expectBoth(e, c, iovas, () => ({ ok: false, fault: F_BLOCKED }));
  });

  it('the permission test: a read-only entry refuses a write, through the front as through the IOTLB', () => {
    const { e, d1, seg } = setup();
    e.ptMap(d1, 0x1000_0000n, segPa(seg, 0x300_0000n), 4n * PAGE, PERM_R);
    const iovas = [0x1000_0000n, 0x1000_1000n, 0x1000_3fffn];
    const ok = (iova: bigint): Out => ({ ok: true, pa: segPa(seg, 0x300_0000n) + (iova - 0x1000_0000n) });
    expectBoth(e, 1, iovas, ok, PERM_R);
    expectBoth(e, 1, iovas, () => ({ ok: false, fault: F_WRITE }), PERM_W);
    expectBoth(e, 1, iovas, () => ({ ok: false, fault: F_WRITE }), PERM_RW);
    e.ptMap(d1, 0x2000_0000n, segPa(seg, 0x400_0000n), PAGE, PERM_W);
    expectBoth(e, 1, [0x2000_0010n], () => ({ ok: false, fault: F_READ }), PERM_R);
    // An access with bits other than R and W faults, hit or not (translate.ts accessOf).
    expect(one(e, 1, 0x1000_0000n, 8).ok).toBe(false);
    expect(batch(e, 1, [0x1000_0000n], 8)[0]!.ok).toBe(false);
  });

  it('pages of a 2 MiB leaf each get their record and report the leaf shift; splitting the leaf by an unmap is seen', () => {
    const { e, d1, seg } = setup();
    const pa = segPa(seg, 0x4000_0000n);
    e.ptMap(d1, 0x4000_0000n, pa, SZ_2M, PERM_RW);
    const iovas = [0x4000_0000n, 0x4000_1234n, 0x401f_f000n, 0x4010_0008n];
    for (let r = 0; r < 2; r++) {
      for (const iova of iovas) expect(one(e, 1, iova)).toEqual({ ok: true, pa: pa + (iova - 0x4000_0000n), shift: 21 });
    }
    e.ptUnmap(d1, 0x4010_0000n, PAGE);
    expectBoth(e, 1, iovas, (iova) => ((iova & ~0xfffn) === 0x4010_0000n ? { ok: false, fault: F_NOT_PRESENT } : { ok: true, pa: pa + (iova - 0x4000_0000n) }));
  });

  it('dirty tracking: the first write after tracking starts, and after each clear, sets D again', () => {
    const { e, d1 } = setup();
    const iova = BASE + 0x20n;
    const flags = () => { const p = leaf(e, d1, iova).pte; return ((p & A) !== 0n ? 'A' : '') + ((p & D) !== 0n ? 'D' : ''); };
    // Warm the front with reads and writes before tracking starts.
    for (const access of [PERM_R, PERM_W, PERM_R, PERM_W]) one(e, 1, iova, access);
    batch(e, 1, [iova], PERM_W);
    e.ptSetDirtyTracking(d1, true);
    expect(flags()).toBe('');
    one(e, 1, iova, PERM_R);
    one(e, 1, iova, PERM_R);
    expect(flags()).toBe('A');
    one(e, 1, iova, PERM_W);
    expect(flags()).toBe('AD');
    for (let round = 0; round < 3; round++) {
      e.ptReadDirty(d1, BASE, BigInt(PAGES) * PAGE, 4096, true);
      expect(flags(), `round ${round}: cleared`).toBe('A');
      // Reads through the front must not pass for the write that owes D.
      one(e, 1, iova, PERM_R);
      batch(e, 1, [iova, iova], PERM_R);
      expect(flags()).toBe('A');
      if (round % 2 === 0) one(e, 1, iova, PERM_W);
      else batch(e, 1, [iova], PERM_W);
      expect(flags(), `round ${round}: written`).toBe('AD');
    }
  });

  it('the epoch stamp wraps: after any number of bumps, up to past two wraps, an old record never answers again', () => {
    const { e, d1, d2, pa2, want1, want2 } = setup();
    const iova = BASE + 0x40n;
    const old = paOf(want1(iova)), now = paOf(want2(iova));
    for (let extra = 0; extra <= 260; extra++) {
      // A record of the old leaf at epoch E; the leaf changed and invalidated
      // (E + 1), then `extra` bumps that invalidate nothing of this domain.
      rawEdit(e, d1, iova, old);
      e.flushRange(d1, BASE, PAGE);
      const batchFirst = extra % 2 === 1;
      if (batchFirst) expect(paOf(batch(e, 1, [iova])[0]!)).toBe(old);
      else expect(paOf(one(e, 1, iova))).toBe(old);
      rawEdit(e, d1, iova, pa2(0n));
      e.flushRange(d1, BASE, PAGE);
      for (let k = 0; k < extra; k++) e.flushRange(d2, 0x7000_0000n, PAGE);
      const got = batchFirst ? batch(e, 1, [iova])[0]! : one(e, 1, iova);
      expect(paOf(got), `${extra} bumps after the invalidation (${batchFirst ? 'batch' : 'per call'} first)`).toBe(now);
      expect(paOf(batchFirst ? one(e, 1, iova) : batch(e, 1, [iova])[0]!)).toBe(now);
    }
  });

  it('a snapshot carries an empty front; the engine saved and the one resumed translate as before; a later unmap is exact', () => {
    const { e, d1, want1 } = setup();
    const iovas = iovasOf();
    expectBoth(e, 1, iovas, want1);
    const L = e.layout;
    const frontOf = (x: Engine) => {
      const w = new DataView(x.bytes.buffer);
      const base = w.getUint32(L.CTRL_BASE + L.CTRL_IOTLB, true);
      const entries = (1 << w.getUint32(L.CTRL_BASE + L.CTRL_IOTLB_SETS_LOG2, true)) * w.getUint32(L.CTRL_BASE + L.CTRL_IOTLB_WAYS, true);
      const at = base + Math.ceil((entries * (L.TLBE_SIZE + 8)) / 64) * 64;
      return x.bytes.subarray(at, at + L.FRONT_BYTES);
    };
    expect(frontOf(e).some((b) => b !== 0), 'the front is warm').toBe(true);
    const bytes = e.snapshotBytes().slice();
    expect(frontOf(e).some((b) => b !== 0), 'the snapshot\'s front is empty').toBe(false);
    const r = Engine.restore(engineModule('release'), e.limitBytes, bytes.length, false, (m) => m.set(bytes));
    expectBoth(r, 1, iovas, want1);
    expectBoth(e, 1, iovas, want1);
    r.ptUnmap(d1, BASE, PAGE);
    expectBoth(r, 1, iovas, (iova) => (iova < BASE + PAGE ? { ok: false, fault: F_NOT_PRESENT } : want1(iova)));
    expectBoth(e, 1, iovas, want1);
  });

  it('a worker instance (shared memory) forgets its front on the owner\'s unmap, flush, context change and stamp wrap', () => {
    const { e, d1, d2, pa2, want1, want2, wantD2 } = setup({ shared: true });
    const share = e.shareWorker();
    const w = Engine.attach(engineModule('shared'), share);
    const iovas = iovasOf();
    const onWorker = (body: () => void) => { w.enter(); try { body(); } finally { w.leave(); } };
    onWorker(() => expectBoth(w, 1, iovas, want1));
    for (const iova of iovas) rawEdit(e, d1, iova, pa2((iova - BASE) / PAGE));
    e.flushRange(d1, BASE, BigInt(PAGES) * PAGE);
    onWorker(() => expectBoth(w, 1, iovas, want2));
    e.ctxSet(1, d2, 0);
    onWorker(() => expectBoth(w, 1, iovas, wantD2));
    e.ctxSet(1, d1, 0);
    onWorker(() => expectBoth(w, 1, iovas, want2));
    // Around the wrap: leaf changed and invalidated, then 127..129 more bumps.
    for (const extra of [126, 127, 128, 129]) {
      onWorker(() => expectBoth(w, 1, [iovas[0]!], want2));
      rawEdit(e, d1, iovas[0]!, paOf(want1(iovas[0]!)));
      e.flushRange(d1, BASE, PAGE);
      onWorker(() => expectBoth(w, 1, [iovas[0]!], want1));
      rawEdit(e, d1, iovas[0]!, pa2(0n));
      e.flushRange(d1, BASE, PAGE);
      for (let k = 0; k < extra; k++) e.flushRange(d2, 0x7000_0000n, PAGE);
    }
    e.ptUnmap(d1, BASE, BigInt(PAGES) * PAGE);
    onWorker(() => expectBoth(w, 1, iovas, () => ({ ok: false, fault: F_NOT_PRESENT })));
    e.releaseWorker(share.slot);
  });

  it('hits are counted once per translation, whichever level answers', () => {
    const { e } = setup();
    const iovas = iovasOf();
    one(e, 1, iovas[0]!); // a miss: walk and fill
    const s0 = e.stats();
    for (let i = 0; i < 5; i++) one(e, 1, iovas[0]!);
    batch(e, 1, [iovas[0]!, iovas[0]!, iovas[0]!]);
    e.flushAll(); // the next translation misses both levels
    one(e, 1, iovas[0]!);
    e.ctxSet(2, 0, 0); // the front forgets; the IOTLB still holds the entry
    one(e, 1, iovas[0]!);
    batch(e, 1, [iovas[0]!, iovas[0]!]);
    const s = e.stats();
    expect({ hits: s.hits - s0.hits, misses: s.misses - s0.misses }).toEqual({ hits: 5 + 3 + 1 + 2, misses: 1 });
  });
});

// A seeded random interleaving against a model of what a cache may answer:
// per domain and page, the leaf's current address and the addresses it held
// since the last invalidation that covered the page (a raw edit adds one; a
// flush covering the page, or an unmap, clears them). Every translation, per
// call or batched, by any context (two domains, two PASIDs, a blocked one),
// or by DMA, must give the current address or one of those, or the fault the table
// gives. Epoch bumps come in runs long enough to cross the stamp's wrap.
function coherenceRun(rng: Rng, ops: number): void {
  const e = makeEngine({ memoryLimit: 64 << 20, iotlbEntries: rng.chance(0.5) ? 64 : 4096 });
  const seg = e.addSegment(4 * GiB);
  const doms = [e.ptCreate(4, REF_SZ_4K), e.ptCreate(4, REF_SZ_4K)];
  const ctxs = new Map<number, number>([[1, doms[0]!], [2, doms[0]!], [3, doms[1]!], [4, doms[1]!], [5, 0]]);
  for (const [c, d] of ctxs) e.ctxSet(c, d, c === 2 || c === 4 ? 9 : 0);
  const WINDOW = 96; // pages of IOVA from BASE
  // did -> page index -> { pa (current), perm, stale }
  const model = new Map<number, Map<number, { pa: bigint; perm: number; stale: Set<bigint> }>>(doms.map((d) => [d, new Map()]));
  const log: string[] = [];
  const note = (s: string) => { log.push(s); if (log.length > 24) log.shift(); };
  const fail = (msg: string): never => { throw new Error(`${msg}\n  last operations:\n    ${log.join('\n    ')}`); };
  const newPa = () => segPa(seg, BigInt(rng.int(1, 0xf000)) * PAGE);
  const check = (c: number, iova: bigint, access: number, got: Out, how: string): void => {
    const did = ctxs.get(c)!;
    const page = Number((iova - BASE) / PAGE);
    const m = did === 0 ? undefined : model.get(did)!.get(page);
    let ok: boolean;
    if (did === 0) ok = !got.ok && got.fault === F_BLOCKED;
    else if (m === undefined) ok = !got.ok && got.fault === F_NOT_PRESENT;
    else if ((access & ~m.perm) !== 0) ok = !got.ok && got.fault === ((access & ~m.perm & PERM_W) !== 0 ? F_WRITE : F_READ);
    else {
      const off = iova & 0xfffn;
      ok = got.ok && (got.pa === m.pa + off || m.stale.has(got.pa - off));
    }
    if (!ok) {
      fail(`${how} ctx ${c} (d${did}) ${hex(iova)} access ${access}: got ${got.ok ? hex(got.pa) : `fault ${got.fault}`}, ` +
        `allowed ${m ? [m.pa, ...m.stale].map(hex).join(' | ') : 'a fault'}`);
    }
  };
  const pickIova = () => BASE + BigInt(rng.below(WINDOW)) * PAGE + BigInt(rng.below(4096));
  const forget = (did: number, first: number, last: number) => {
    for (const [p, m] of model.get(did)!) if (p >= first && p <= last) m.stale.clear();
  };

  for (let op = 0; op < ops; op++) {
    const kind = rng.weighted([
      [10, 'map'], [6, 'unmap'], [10, 'edit'], [30, 'translate'], [10, 'batch'], [8, 'dma'], [6, 'flushRange'], [3, 'flushDomain'], [1, 'flushAll'],
      [4, 'ctxSet'], [3, 'bumps'],
    ] as const);
    const d = rng.pick(doms);
    const pages = model.get(d)!;
    if (kind === 'map') {
      const first = rng.below(WINDOW), n = rng.int(1, 8);
      const free = Array.from({ length: n }, (_, i) => first + i).every((p) => p < WINDOW && !pages.has(p));
      if (!free) continue;
      const perm = rng.weighted([[6, PERM_RW], [1, PERM_R], [1, PERM_W]] as const);
      const pa = newPa();
      e.ptMap(d, BASE + BigInt(first) * PAGE, pa, BigInt(n) * PAGE, perm);
      for (let i = 0; i < n; i++) pages.set(first + i, { pa: pa + BigInt(i) * PAGE, perm, stale: new Set() });
      note(`map d${d} page ${first} x${n} -> ${hex(pa)} perm ${perm}`);
    } else if (kind === 'unmap') {
      const first = rng.below(WINDOW), n = rng.int(1, 8);
      e.ptUnmap(d, BASE + BigInt(first) * PAGE, BigInt(n) * PAGE);
      for (let p = first; p < first + n; p++) pages.delete(p);
      note(`unmap d${d} page ${first} x${n}`);
    } else if (kind === 'edit') {
      const mapped = [...pages.keys()];
      if (mapped.length === 0) continue;
      const p = rng.pick(mapped);
      const m = pages.get(p)!;
      const pa = newPa();
      rawEdit(e, d, BASE + BigInt(p) * PAGE, pa);
      m.stale.add(m.pa);
      m.pa = pa;
      note(`edit d${d} page ${p} -> ${hex(pa)} (not invalidated)`);
    } else if (kind === 'translate') {
      for (let k = 0; k < 12; k++) {
        const c = rng.int(1, 5), iova = pickIova(), access = rng.pick([PERM_R, PERM_W, PERM_RW]);
        check(c, iova, access, one(e, c, iova, access), 'translate');
      }
    } else if (kind === 'batch') {
      const c = rng.int(1, 5), access = rng.pick([PERM_R, PERM_W, PERM_RW]);
      const iovas = Array.from({ length: rng.int(1, 200) }, pickIova);
      const got = batch(e, c, iovas, access);
      iovas.forEach((iova, i) => check(c, iova, access, got[i]!, `batch[${i}]`));
    } else if (kind === 'dma') {
      for (let k = 0; k < 6; k++) {
        const c = rng.int(1, 5), iova = pickIova(), access = rng.pick([PERM_R, PERM_W, PERM_RW]);
        const len = rng.int(1, Number(PAGE - (iova & 0xfffn)));
        check(c, iova, access, dma(e, c, iova, access, len), 'dma');
        if (rng.chance(0.5)) check(c, iova, access, dma(e, c, iova, access, len), 'dma again');
      }
    } else if (kind === 'flushRange') {
      const first = rng.below(WINDOW), n = rng.int(1, 12);
      e.flushRange(d, BASE + BigInt(first) * PAGE, BigInt(n) * PAGE);
      forget(d, first, first + n - 1);
      note(`flushRange d${d} page ${first} x${n}`);
    } else if (kind === 'flushDomain') {
      e.flushDomain(d);
      forget(d, 0, WINDOW);
      note(`flushDomain d${d}`);
    } else if (kind === 'flushAll') {
      e.flushAll();
      for (const dd of doms) forget(dd, 0, WINDOW);
      note('flushAll');
    } else if (kind === 'ctxSet') {
      const c = rng.int(1, 5), to = rng.pick([0, ...doms]);
      e.ctxSet(c, to, rng.chance(0.5) ? 0 : 9);
      ctxs.set(c, to);
      note(`ctxSet ${c} -> d${to}`);
    } else {
      // Epoch bumps that invalidate nothing the model holds (a flush past the window).
      const n = rng.int(1, 200);
      for (let k = 0; k < n; k++) e.flushRange(d, BASE + BigInt(WINDOW + 16) * PAGE, PAGE);
      note(`${n} bumps`);
    }
  }
}

describe('front TLB: seeded random map / unmap / raw edit / flush / context change / translate against a model', () => {
  for (const seed of testSeeds(3)) {
    it(`600 ops, seed ${seed}`, () => { withSeed(seed, (rng) => coherenceRun(rng, 600)); });
  }
});
