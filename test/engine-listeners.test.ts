// Engine.onInvalidate (host/engine/engine.ts): what a listener hears, and
// the `holding` answer that keeps flushes from being told while no listener
// holds anything (the ATC directory: a device's ATC must see every flush
// that can reach its entries, PCIe 6.0 10.3.1, VT-d 6.5.2.x). And split64,
// the (lo, hi) halves every u64 argument crosses into the engine as: lo is
// the value mod 2^32, hi the value divided by 2^32, as C's (u32)v and
// (u32)(v >> 32) of a u64.

import { describe, expect, it } from 'vitest';
import { split64, type EngineEvent } from '../host/engine/engine.js';
import { makeEngine } from './support/engine.js';

describe('Engine.onInvalidate', () => {
  it('hears unmaps, flushes, nested domains and destruction; stops when told', () => {
    const e = makeEngine({ memoryLimit: 16 << 20 });
    const heard: EngineEvent[] = [];
    const stop = e.onInvalidate((ev) => heard.push(ev));
    const R = e.layout.PERM_R;
    const did = e.ptCreate(4, e.layout.SZ_4K);
    const pa = e.allocFrames(1) * 4096;
    e.ptMap(did, 0x10000, pa, 4096, R);
    e.ptUnmap(did, 0x10000, 4096);
    e.flushRange(did, 0x20000, 4096);
    e.flushDomain(did);
    e.flushAll();
    const nested = e.ptCreateNested(did, 0x1000n, 4);
    e.ptDestroy(nested);
    expect(heard).toEqual([
      { kind: 'flush', did, iova: 0x10000, length: 4096 },
      { kind: 'flush', did, iova: 0x20000, length: 4096 },
      { kind: 'flush', did },
      { kind: 'flush-all' },
      { kind: 'nested', did: nested, parent: did },
      { kind: 'destroy', did: nested },
    ]);
    stop();
    e.flushAll();
    expect(heard).toHaveLength(6);
  });

  it('tells no flush while the listener holds nothing, but always the domains it must follow', () => {
    const e = makeEngine({ memoryLimit: 16 << 20 });
    const heard: string[] = [];
    let holding = false;
    e.onInvalidate((ev) => heard.push(ev.kind), () => holding);
    const did = e.ptCreate(4, e.layout.SZ_4K);
    const pa = e.allocFrames(1) * 4096;
    e.ptMap(did, 0x10000, pa, 4096, e.layout.PERM_R);
    e.ptUnmap(did, 0x10000, 4096);
    e.flushAll();
    const nested = e.ptCreateNested(did, 0x1000n, 4);
    e.ptDestroy(nested);
    expect(heard).toEqual(['nested', 'destroy']);
    holding = true;
    e.ptMap(did, 0x10000, pa, 4096, e.layout.PERM_R);
    e.ptUnmap(did, 0x10000, 4096);
    e.flushDomain(did);
    expect(heard).toEqual(['nested', 'destroy', 'flush', 'flush']);
  });

  it('tells a flush when any one listener holds something, and tells it to all', () => {
    const e = makeEngine({ memoryLimit: 16 << 20 });
    const a: string[] = [], b: string[] = [];
    e.onInvalidate((ev) => a.push(ev.kind), () => false);
    e.onInvalidate((ev) => b.push(ev.kind), () => true);
    e.flushAll();
    expect(a).toEqual(['flush-all']);
    expect(b).toEqual(['flush-all']);
  });
});

describe('split64', () => {
  it('gives (v mod 2^32, v / 2^32) for numbers and bigints, past 2^30, 2^32 and 2^53', () => {
    const cases: [number | bigint, number, number][] = [
      [0, 0, 0],
      [2 ** 30, 2 ** 30, 0], // the first value a 31-bit small integer cannot hold
      [2 ** 32 - 1, 0xffffffff, 0],
      [2 ** 32, 0, 1],
      [2 ** 53 - 1, 0xffffffff, 0x1fffff],
      [0x1234_5678_9abcn, 0x5678_9abc, 0x1234],
      [2n ** 64n - 1n, 0xffffffff, 0xffffffff],
      [2n ** 63n + 5n, 5, 0x80000000],
    ];
    for (const [v, lo, hi] of cases) expect(split64(v), String(v)).toEqual([lo, hi]);
  });

  it('keeps its halves apart from call to call (no value left over from the last one)', () => {
    expect(split64(2 ** 40 + 7)).toEqual([7, 256]);
    expect(split64(3)).toEqual([3, 0]);
  });
});
