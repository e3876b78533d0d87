// A plain-TypeScript walker of raw Intel VT-d second-stage page tables
// (VT-d spec rev 4.x, section 3.7 "Second-Stage Translation" and section
// 9.8 "Second-Stage Paging Entries"), reading the entries through a
// callback: the oracle for walks over hostile tables the engine holds.
// Independent of assembly/walk.ts and assembly/pte.ts; test/reference/
// vtd_sl.ts is the model of the map/unmap rules, this is the walk alone.
//
// From the specification:
//   - 3, 4 or 5 levels (AGAW 39, 48, 57 bits, 3.7); an input address at or
//     above 2^AGAW faults before any entry is read;
//   - level L indexes with bits [12 + 9L - 1 : 12 + 9(L - 1)];
//   - R (bit 0) and W (bit 1): an entry with neither is not present, and
//     none of its other bits mean anything (9.8); permissions are the AND
//     of R and W over every entry of the walk (3.7.1);
//   - PS (bit 7) at level 3 (1 GiB) and level 2 (2 MiB) makes a leaf when
//     the hardware supports that size (CAP_REG.SLLPS), and is reserved at
//     levels 4 and 5 and where the size is not supported; bit 7 of a level-1
//     entry is ignored;
//   - address bits 51:HAW are reserved in every entry (HAW, the host
//     address width); the address bits below a large page's size are
//     reserved (20:12 for 2 MiB, 29:12 for 1 GiB);
//   - in a non-leaf entry bit 11 and bit 62 are reserved (SNP and TM are
//     leaf fields; QEMU hw/i386/intel_iommu_internal.h
//     VTD_SPTE_PAGE_L2..L4_RSVD_MASK hold 0x800, and bit 62 lies outside
//     VTD_SL_IGN_COM); bits 6:3, 10, 61:52 and 63 of a non-leaf entry are
//     ignored;
//   - in a leaf SNP (bit 11, scalable mode), TM (bit 62), EMT / IPAT (6:3),
//     A / D (8, 9), bit 10, 61:52 and 63 do not stop a translation.
// The engine's own rules, as they are:
//   - fault numbers are the engine's F_*; a reserved bit is F_RESERVED at
//     the level of the entry holding it;
//   - a next table must lie in the engine's memory (tableOk), else
//     F_TABLE_ADDR; a page inside one segment (physOk), else
//     F_OUT_OF_SEGMENT; reserved bits are checked before either.

export const F_ADDR_WIDTH = 2;
export const F_NOT_PRESENT = 3;
export const F_RESERVED = 6;
export const F_TABLE_ADDR = 7;
export const F_OUT_OF_SEGMENT = 8;

export interface RawMemory {
  read64(addr: bigint): bigint;
  tableOk(addr: bigint): boolean;
  physOk(pa: bigint, len: bigint): boolean;
}

export type RawWalk =
  | { ok: true; pa: bigint; shift: number; perm: number }
  | { ok: false; fault: number; level: number };

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;

/**
 * Walk a VT-d second-stage table. `sizes`: SZ_4K | SZ_2M | SZ_1G bits (1, 2, 4);
 * `haw`: the host address width in bits (52 when no bit below 52 is reserved).
 */
export function vtdSlWalkRaw(mem: RawMemory, root: bigint, levels: number, sizes: number, haw: number, iova: bigint): RawWalk {
  if (iova >= 1n << BigInt(12 + 9 * levels)) return { ok: false, fault: F_ADDR_WIDTH, level: levels };
  const addrMask = ((1n << 52n) - 1n) & ~0xfffn;
  const above = addrMask & ~((1n << BigInt(haw)) - 1n);
  let table = root;
  let perm = 3;
  for (let level = levels; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const entry = mem.read64(table + ((iova >> BigInt(shift)) & 511n) * 8n);
    const rw = Number(entry & 3n);
    if (rw === 0) return { ok: false, fault: F_NOT_PRESENT, level };
    if ((entry & above) !== 0n) return { ok: false, fault: F_RESERVED, level };
    perm &= rw;
    const addr = entry & addrMask;
    const leaf = level === 1 || bit(entry, 7);
    if (leaf) {
      if (level >= 4) return { ok: false, fault: F_RESERVED, level };
      if (level > 1 && (sizes & (1 << (level - 1))) === 0) return { ok: false, fault: F_RESERVED, level };
      if (addr % (1n << BigInt(shift)) !== 0n) return { ok: false, fault: F_RESERVED, level };
      if (!mem.physOk(addr, 1n << BigInt(shift))) return { ok: false, fault: F_OUT_OF_SEGMENT, level };
      return { ok: true, pa: addr, shift, perm };
    }
    if (bit(entry, 11) || bit(entry, 62)) return { ok: false, fault: F_RESERVED, level };
    if (!mem.tableOk(addr)) return { ok: false, fault: F_TABLE_ADDR, level };
    table = addr;
  }
  throw new Error('unreachable: level 1 is always a leaf');
}
