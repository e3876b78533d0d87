// A plain-TypeScript walker of AMD IOMMU v1 I/O page tables ("host"
// translation tables), written from the AMD I/O Virtualization Technology
// (IOMMU) Specification rev 3.x, section 2.2.3 "I/O Page Tables for Host
// Translations", and independent of assembly/walk.ts. It reads the raw
// entries through a callback, so a test can walk the very bytes the engine
// walks, hostile ones included.
//
// What the walker follows (2.2.3):
//   - The device table entry's Mode (1..6) is the level of the root table.
//     Level L indexes with IOVA bits [12 + 9L - 1 : 12 + 9(L - 1)]; level 6
//     with bits 63:57 only. With Mode < 6, IOVA bits at and above
//     12 + 9 * Mode must be 0, else an I/O page fault.
//   - Entry bits: PR (0) present; Next Level (11:9); the address (51:12);
//     IR (61) and IW (62), ANDed over every entry of the walk.
//   - Next Level 0: a PTE whose page is the level's default size
//     (2^(12 + 9(L - 1))); Next Level 7: a PTE whose page size is encoded
//     in the address: the address bits from bit 12 up are ones up to a
//     first zero at bit n, and the page is 2^(n + 1) bytes ("Example Page
//     Size Encodings": bit 12 = 0 is 8 KiB, bits 13:12 = 01b 16 KiB, ...).
//     Software repeats such a PTE over every entry the page covers, so its
//     size is at least the level's default and at most 2^8 times it.
//   - Next Level 1..6 below the current level: a PDE pointing to a table of
//     that level. When it is below L - 1 the levels between are skipped; the
//     IOVA bits that would have indexed the skipped tables must be 0, else
//     an I/O page fault.
//   - The top level (6) holds PDEs only (the spec's page-table level
//     parameters: no page can be that large).
//   - Reserved bits: 60:52 of a PDE, 58:52 of a PTE (bit 59 U and bit 60 FC
//     are PTE fields): an I/O page fault with RZ ("reserved bit not zero"),
//     checked as soon as the entry's kind (its Next Level) is known.
//
// The engine's own rules the walker states as they are (project, not spec):
//   - faults are the engine's F_* numbers; a page fault for set bits the
//     tables do not translate (above Mode, or of skipped levels) is
//     F_ADDR_WIDTH at the level of the entry that was read last (Mode for
//     the first);
//   - a Next Level at or above the entry's level, a Next Level 7 size
//     outside [default, 256 x default], an address field of all ones under
//     Next Level 7, a PTE at level 6, and address bits below a default-size
//     page's size: F_RESERVED (a malformed entry, no translation);
//   - a table must lie inside the engine's memory (tableOk), else
//     F_TABLE_ADDR; a page must lie inside one segment (physOk), else
//     F_OUT_OF_SEGMENT.

export const F_ADDR_WIDTH = 2;
export const F_NOT_PRESENT = 3;
export const F_RESERVED = 6;
export const F_TABLE_ADDR = 7;
export const F_OUT_OF_SEGMENT = 8;

export const AMD_PR = 1n;
export const AMD_IR = 1n << 61n;
export const AMD_IW = 1n << 62n;
export const AMD_ADDR_MASK = ((1n << 52n) - 1n) & ~0xfffn;

export interface AmdMemory {
  /** The u64 at a byte address of the memory the tables live in. */
  read64(addr: bigint): bigint;
  /** May a table page start here? */
  tableOk(addr: bigint): boolean;
  /** Does [pa, pa + len) lie inside one segment? */
  physOk(pa: bigint, len: bigint): boolean;
}

export type AmdWalk =
  | { ok: true; page: bigint; pageShift: number; perm: number; level: number }
  | { ok: false; fault: number; level: number };

/** The first bit a level's index uses. */
function levelBase(level: number): number {
  return 12 + 9 * (level - 1);
}

/** The index bits of `level` in `iova` (level 6: 7 bits). */
function indexAt(iova: bigint, level: number): bigint {
  const bits = level === 6 ? 7n : 9n;
  return (iova >> BigInt(levelBase(level))) & ((1n << bits) - 1n);
}

/** Walk an AMD v1 table with root `root` and `mode` levels for `iova` (0 <= iova < 2^64). */
export function amdV1Walk(mem: AmdMemory, root: bigint, mode: number, iova: bigint): AmdWalk {
  if (mode < 1 || mode > 6) throw new RangeError(`mode ${mode}`);
  if (mode < 6 && iova >> BigInt(levelBase(mode + 1)) !== 0n) return { ok: false, fault: F_ADDR_WIDTH, level: mode };
  let level = mode;
  let table = root;
  let read = true;
  let write = true;
  for (let reads = 0; reads < 6; reads++) {
    const entry = mem.read64(table + indexAt(iova, level) * 8n);
    if ((entry & AMD_PR) === 0n) return { ok: false, fault: F_NOT_PRESENT, level };
    read = read && (entry & AMD_IR) !== 0n;
    write = write && (entry & AMD_IW) !== 0n;
    const next = Number((entry >> 9n) & 7n);
    const addr = entry & AMD_ADDR_MASK;
    // Reserved: PDE bits 60:52, PTE bits 58:52 (59 U and 60 FC are PTE fields).
    const reserved = next === 0 || next === 7 ? 0x7fn << 52n : 0x1ffn << 52n;
    if ((entry & reserved) !== 0n) return { ok: false, fault: F_RESERVED, level };
    if (next === 0 || next === 7) {
      if (level === 6) return { ok: false, fault: F_RESERVED, level };
      const def = levelBase(level);
      let shift = def;
      if (next === 7) {
        let n = 12;
        while (n < 52 && ((addr >> BigInt(n)) & 1n) === 1n) n++;
        if (n === 52) return { ok: false, fault: F_RESERVED, level };
        shift = n + 1;
        if (shift < def || shift > def + 8) return { ok: false, fault: F_RESERVED, level };
      } else if (addr % (1n << BigInt(def)) !== 0n) {
        return { ok: false, fault: F_RESERVED, level };
      }
      const page = addr - (addr % (1n << BigInt(shift)));
      if (!mem.physOk(page, 1n << BigInt(shift))) return { ok: false, fault: F_OUT_OF_SEGMENT, level };
      return { ok: true, page, pageShift: shift, perm: (read ? 1 : 0) | (write ? 2 : 0), level };
    }
    if (next >= level) return { ok: false, fault: F_RESERVED, level };
    for (let skipped = level - 1; skipped > next; skipped--) {
      if (indexAt(iova, skipped) !== 0n) return { ok: false, fault: F_ADDR_WIDTH, level };
    }
    if (!mem.tableOk(addr)) return { ok: false, fault: F_TABLE_ADDR, level };
    table = addr;
    level = next;
  }
  throw new Error('unreachable: every PDE goes down a level');
}

/**
 * What the engine reports for a successful walk (assembly/walk.ts amdWalk):
 * the largest of 4 KiB, 2 MiB and 1 GiB not above the page, the slice of
 * the page holding iova.
 */
export function engineSlice(w: { page: bigint; pageShift: number }, iova: bigint): { pa: bigint; shift: number } {
  const shift = w.pageShift >= 30 ? 30 : w.pageShift >= 21 ? 21 : 12;
  const inPage = iova % (1n << BigInt(w.pageShift));
  return { pa: w.page + inPage - (inPage % (1n << BigInt(shift))), shift };
}

/** A PTE of Next Level 7 for a 2^shift page at `page` (2^shift aligned), shift 13..51. */
export function amdSizedPte(page: bigint, shift: number, perm: number): bigint {
  const ones = (1n << BigInt(shift - 1)) - 1n - 0xfffn; // bits 12 .. shift-2
  return page | ones | (7n << 9n) | AMD_PR | (perm & 1 ? AMD_IR : 0n) | (perm & 2 ? AMD_IW : 0n);
}

/** A PDE pointing to the table at `table` of level `next`. */
export function amdPde(table: bigint, next: number, perm = 3): bigint {
  return table | (BigInt(next) << 9n) | AMD_PR | (perm & 1 ? AMD_IR : 0n) | (perm & 2 ? AMD_IW : 0n);
}

/** A PTE of Next Level 0 (the level's default page size). */
export function amdPte(page: bigint, perm = 3): bigint {
  return page | AMD_PR | (perm & 1 ? AMD_IR : 0n) | (perm & 2 ? AMD_IW : 0n);
}
