// The bits the engine writes for each entry format, read back from linear
// memory with walkers written here from the specifications (not from
// assembly/pte.ts):
//   Intel VT-d spec 9.8 (second-stage entries: R bit 0, W bit 1, PS bit 7,
//     address 51:12);
//   Arm ARM D8.3 (VMSAv8-64 stage-2 descriptors, 4 KiB granule, FEAT_LPA2:
//     bits 1:0 = 0b11 table/page, 0b01 block; MemAttr 5:2; S2AP 7:6 (6 read,
//     7 write); OA[51:50] in 9:8; AF bit 10; OA[49:12] in 49:12);
//   AMD IOMMU spec 2.2.3 (v1 I/O page table: PR bit 0, Next Level 11:9,
//     address 51:12, IR bit 61, IW bit 62).
// The walks through them agree with the engine's own walker, and corrupt
// entries fault as those specifications say.

import { describe, it, expect } from 'vitest';
import { makeEngine } from './support/engine.js';
import type { Engine } from '../host/engine/engine.js';

const RW = 3;
const GiB = 1n << 30n;

/** The domain's table root, read from the control block and domain record (assembly/layout.ts). */
function rootOf(e: Engine, did: number): number {
  const L = e.layout;
  const dv = new DataView(e.bytes.buffer);
  const domTable = dv.getUint32(L.CTRL_BASE + L.CTRL_DOM_TABLE, true);
  return dv.getUint32(domTable + did * L.DOM_SIZE + L.DOM_ROOT, true) * 4096;
}

type Spec = 'vtd' | 'arm' | 'amd';

/** Decode one entry as the specification says: null if not valid, else leaf or table and the address. */
function decode(spec: Spec, pte: bigint, level: number): { leaf: boolean; addr: bigint } | null {
  const bits = (lo: number, n: number) => (pte >> BigInt(lo)) & ((1n << BigInt(n)) - 1n);
  if (spec === 'vtd') {
    if (bits(0, 2) === 0n) return null;
    return { leaf: level === 1 || bits(7, 1) === 1n, addr: bits(12, 40) << 12n };
  }
  if (spec === 'arm') {
    if (bits(0, 1) === 0n) return null;
    const oa = (bits(12, 38) << 12n) | (bits(8, 2) << 50n);
    return { leaf: level === 1 || bits(1, 1) === 0n, addr: oa };
  }
  if (bits(0, 1) === 0n) return null;
  return { leaf: bits(9, 3) === 0n, addr: bits(12, 40) << 12n };
}

/** Walk by hand: the entries met from the root down to the leaf (or the first invalid one). */
function walk(e: Engine, spec: Spec, did: number, levels: number, iova: bigint): { pte: bigint; level: number }[] {
  const dv = new DataView(e.bytes.buffer);
  let table = BigInt(rootOf(e, did));
  const path: { pte: bigint; level: number }[] = [];
  for (let level = levels; level >= 1; level--) {
    const idx = (iova >> BigInt(12 + 9 * (level - 1))) & 511n;
    const pte = dv.getBigUint64(Number(table + idx * 8n), true);
    path.push({ pte, level });
    const d = decode(spec, pte, level);
    if (!d || d.leaf) break;
    table = d.addr;
  }
  return path;
}

const FMT: Record<Spec, number> = { vtd: 0, arm: 1, amd: 2 };

function setup(spec: Spec) {
  const e = makeEngine({ memoryLimit: 64 << 20 });
  const seg = e.addSegment(4 * 1024 ** 3);
  const pa = (off: bigint) => (BigInt(seg) << 32n) | off;
  const did = e.ptCreate(4, 7, FMT[spec]);
  return { e, did, pa };
}

describe('ARM VMSAv8-64 stage-2 descriptors (Arm ARM D8.3)', () => {
  it('a 4 KiB page: bits 1:0 = 0b11 at ARM level 3, AF, S2AP = RW, Normal WB, the output address; tables above are 0b11', () => {
    const { e, did, pa } = setup('arm');
    e.ptMap(did, 0x1234_5000n, pa(0x7000n), 0x1000n, RW);
    const path = walk(e, 'arm', did, 4, 0x1234_5000n);
    expect(path.map((p) => p.level)).toEqual([4, 3, 2, 1]);
    for (const t of path.slice(0, 3)) expect(t.pte & 3n).toBe(3n); // table descriptors
    const leaf = path[3].pte;
    expect(leaf & 3n).toBe(3n); // page
    expect((leaf >> 10n) & 1n).toBe(1n); // AF
    expect((leaf >> 6n) & 3n).toBe(3n); // S2AP read + write
    expect((leaf >> 2n) & 0xfn).toBe(0xfn); // MemAttr: Normal, write-back
    expect(decode('arm', leaf, 1)!.addr).toBe(pa(0x7000n));
  });

  it('a 2 MiB block is 0b01 at ARM level 2; read-only is S2AP = 0b01; write-only 0b10', () => {
    const { e, did, pa } = setup('arm');
    e.ptMap(did, 0x4020_0000n, pa(0x20_0000n), 0x20_0000n, 1);
    e.ptMap(did, 0x5000_0000n, pa(0x40_0000n), 0x1000n, 2);
    const block = walk(e, 'arm', did, 4, 0x4020_0000n);
    expect(block.length).toBe(3);
    expect(block[2].pte & 3n).toBe(1n);
    expect((block[2].pte >> 6n) & 3n).toBe(1n);
    expect((walk(e, 'arm', did, 4, 0x5000_0000n)[3].pte >> 6n) & 3n).toBe(2n);
    expect(e.ptWalk(did, 0x4020_1234n)).toMatchObject({ ok: true, size: 2 << 20, perm: 1 });
  });

  it('a 1 GiB block is 0b01 at ARM level 1', () => {
    const { e, did, pa } = setup('arm');
    e.ptMap(did, 2n * GiB, pa(GiB), GiB, RW);
    const path = walk(e, 'arm', did, 4, 2n * GiB);
    expect(path.length).toBe(2);
    expect(path[1].pte & 3n).toBe(1n);
    expect(decode('arm', path[1].pte, 3)!.addr).toBe(pa(GiB));
  });

  it('faults: AF clear is an access-flag fault, a block at ARM level 3 is reserved, an invalid entry is not present', () => {
    const { e, did, pa } = setup('arm');
    e.ptMap(did, 0x1000n, pa(0x1000n), 0x1000n, RW);
    const path = walk(e, 'arm', did, 4, 0x1000n);
    const leafAt = Number(decode('arm', path[2].pte, 2)!.addr) + 1 * 8; // index 1 of the level-3 table
    const dv = new DataView(e.bytes.buffer);
    const good = dv.getBigUint64(leafAt, true);
    e.flushAll();
    dv.setBigUint64(leafAt, good & ~(1n << 10n), true);
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: false, fault: e.layout.F_ACCESS, level: 1 });
    dv.setBigUint64(leafAt, good & ~2n, true); // 0b01 at level 3: not a page
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: false, fault: e.layout.F_RESERVED, level: 1 });
    dv.setBigUint64(leafAt, good & ~1n, true);
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: false, fault: e.layout.F_NOT_PRESENT, level: 1 });
  });

  it('has no hardware dirty flag here: dirty tracking is refused (EINVAL)', () => {
    const { e, did } = setup('arm');
    expect(() => e.ptSetDirtyTracking(did, true)).toThrow(/EINVAL/);
  });
});

describe('AMD v1 I/O page table entries (AMD IOMMU spec 2.2.3)', () => {
  it('tables name the next level (Next Level = level - 1); a leaf has Next Level 0, PR, IR, IW and the address', () => {
    const { e, did, pa } = setup('amd');
    e.ptMap(did, 0x1234_5000n, pa(0x7000n), 0x1000n, RW);
    const path = walk(e, 'amd', did, 4, 0x1234_5000n);
    expect(path.map((p) => p.level)).toEqual([4, 3, 2, 1]);
    for (const t of path.slice(0, 3)) {
      expect(t.pte & 1n).toBe(1n);
      expect((t.pte >> 9n) & 7n).toBe(BigInt(t.level - 1));
    }
    const leaf = path[3].pte;
    expect(leaf & 1n).toBe(1n);
    expect((leaf >> 9n) & 7n).toBe(0n);
    expect((leaf >> 61n) & 3n).toBe(3n); // IR, IW
    expect(decode('amd', leaf, 1)!.addr).toBe(pa(0x7000n));
  });

  it('a 2 MiB page is a level-2 leaf; read-only clears IW', () => {
    const { e, did, pa } = setup('amd');
    e.ptMap(did, 0x4020_0000n, pa(0x20_0000n), 0x20_0000n, 1);
    const path = walk(e, 'amd', did, 4, 0x4020_0000n);
    expect(path.length).toBe(3);
    expect((path[2].pte >> 9n) & 7n).toBe(0n);
    expect((path[2].pte >> 61n) & 3n).toBe(1n);
  });

  it('faults: IR/IW cleared on a table entry deny through it; a Next Level not below the entry\'s level cannot be walked', () => {
    const { e, did, pa } = setup('amd');
    e.ptMap(did, 0x1000n, pa(0x1000n), 0x1000n, RW);
    const path = walk(e, 'amd', did, 4, 0x1000n);
    const root = rootOf(e, did);
    const dv = new DataView(e.bytes.buffer);
    e.flushAll();
    dv.setBigUint64(root, path[0].pte & ~(1n << 62n), true); // the level-4 entry loses IW
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: true, perm: 1 });
    // 2.2.3: a PDE points down (Next Level 1..level-1; 0 and 7 are PTEs).
    // Next Level 4 at level 4 would not go down: no walk through it.
    dv.setBigUint64(root, (path[0].pte & ~(7n << 9n)) | (4n << 9n), true);
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: false, fault: e.layout.F_RESERVED, level: 4 });
    // Next Level 1 from level 4 skips levels 3 and 2 (test/engine-amd-v1.test.ts has the rules):
    // the level-3 table is read as a level-1 table, whose entry 1 is empty.
    dv.setBigUint64(root, (path[0].pte & ~(7n << 9n)) | (1n << 9n), true);
    expect(e.ptWalk(did, 0x1000n)).toMatchObject({ ok: false, fault: e.layout.F_NOT_PRESENT, level: 1 });
  });

  it('a DMA write through a tracking domain sets HD (bit 6) and HA (bit 5) in the leaf', () => {
    const { e, did, pa } = setup('amd');
    e.ptMap(did, 0x1000n, pa(0x1000n), 0x1000n, RW);
    e.ptSetDirtyTracking(did, true);
    e.ctxSet(1, did, 0);
    expect(e.translate(1, 0x1000, 0, 2)).toBe(0);
    const leaf = walk(e, 'amd', did, 4, 0x1000n)[3].pte;
    expect((leaf >> 5n) & 3n).toBe(3n);
  });
});

describe('VT-d second-stage entries (VT-d spec 9.8)', () => {
  it('R and W in bits 0-1, PS (bit 7) only on large leaves, the address in 51:12', () => {
    const { e, did, pa } = setup('vtd');
    e.ptMap(did, 0x4020_0000n, pa(0x20_0000n), 0x20_0000n, RW);
    e.ptMap(did, 0x5000_0000n, pa(0x40_0000n), 0x1000n, 1);
    const big = walk(e, 'vtd', did, 4, 0x4020_0000n);
    expect(big.length).toBe(3);
    expect(big[2].pte & 0x83n).toBe(0x83n);
    const small = walk(e, 'vtd', did, 4, 0x5000_0000n);
    expect(small[3].pte & 0x83n).toBe(1n);
    expect(decode('vtd', small[3].pte, 1)!.addr).toBe(pa(0x40_0000n));
  });
});
