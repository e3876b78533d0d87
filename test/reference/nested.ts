// Plain-TypeScript reference walkers for nested (2-D) translation, the
// oracle of the engine's nested differential runs. Written from the
// specifications, not from assembly/nested*.ts:
//
// - VT-d first stage (VT-d spec 3.6, 9.7: the IA-32e paging format, 4
//   levels): P bit 0, R/W bit 1, U/S bit 2, A bit 5, D bit 6, PS bit 7,
//   address 51:12; PS allowed at levels 3 (1 GiB) and 2 (2 MiB); the IOVA
//   must be canonical (bits 63:47 equal); requests are unprivileged, so U/S
//   must be set at every level and R/W for writes; a permitted access sets A
//   in every entry used and D in the leaf of a write (3.6.2).
// - Arm VMSAv8-64 stage 1 (Arm ARM D8.2-D8.4; SMMUv3 5.4 for the CD
//   fields): granule 2^g, input 64 - T0SZ bits, start level 4 - ceil((ia -
//   g) / (g - 3)); bits [1:0] 0b11 table / page, 0b01 block (4 KiB: levels
//   1, 2; 16 / 64 KiB: level 2), output address [47:g]; APTable [62:61];
//   AP[2:1] [7:6] (AP[1] EL0 access, needed; AP[2] read-only), AF bit 10,
//   DBM bit 51; AF = 0 faults unless HA (set it) or AFFD; HD + DBM turns a
//   write to AP[2] = 1 into clearing AP[2]; output above IPS: Address size.
//
// Every guest-physical address (a table entry's or the output) goes through
// stage 2, given here as a function from a GPA to the host address of its
// byte and the stage-2 permission. A/D or AF / dirty-state writes need
// stage-2 write permission on the entry's page. The walkers report what the
// translation yields for the memory as it is; they change nothing (the
// engine makes the updates, and the next walk reads them).

export const PERM_R = 1;
export const PERM_W = 2;

/** Fault codes, the engine's F_* (assembly/layout.ts), passed in so that a test checks them once. */
export interface Faults {
  F_NONE: number; F_ADDR_WIDTH: number; F_NOT_PRESENT: number; F_READ: number; F_WRITE: number;
  F_RESERVED: number; F_ACCESS: number; F_ADDR_SIZE: number; F_STAGE2: number;
}

/**
 * Stage 2: the host address of a GPA's byte and the permission, null (not
 * mapped) or 'width' (above stage 2's input size: an address-width fault).
 */
export type Stage2 = (gpa: bigint) => { hpa: number; perm: number } | null | 'width';
/** Host memory as u64 words. */
export type Mem = (hpa: number) => bigint;

export interface Outcome { st: number; level?: number; pa?: number; perm?: number }

const bit = (v: bigint, n: number) => (v >> BigInt(n)) & 1n;

/** A stage-2 lookup's fault status, or null when it translates. */
function s2Fault(F: Faults, t: ReturnType<Stage2>): number | null {
  if (t === 'width') return F.F_ADDR_WIDTH | F.F_STAGE2;
  if (!t) return F.F_NOT_PRESENT | F.F_STAGE2;
  return null;
}

/** VT-d first-stage 4-level walk of `iova` for `access` (PERM_R or PERM_W). */
export function walkVtdS1(F: Faults, mem: Mem, s2: Stage2, root: bigint, iova: bigint, access: number): Outcome {
  const top = iova >> 47n;
  if (top !== 0n && top !== (1n << 17n) - 1n) return { st: F.F_ADDR_WIDTH, level: 4 };
  let table = root;
  let user = true, write = true;
  const used: { pte: bigint; writable: boolean; leaf: boolean }[] = [];
  let leaf = 0n, size = 0n;
  for (let level = 4; level >= 1; level--) {
    const shift = BigInt(12 + 9 * (level - 1));
    const gpa = table + ((iova >> shift) & 511n) * 8n;
    const t = s2(gpa);
    if (t === null || t === 'width') return { st: s2Fault(F, t)! };
    if (!(t.perm & PERM_R)) return { st: F.F_READ | F.F_STAGE2 };
    const pte = mem(t.hpa);
    if (!bit(pte, 0)) return { st: F.F_NOT_PRESENT, level };
    if (!bit(pte, 1)) write = false;
    if (!bit(pte, 2)) user = false;
    const isLeaf = level === 1 || bit(pte, 7) === 1n;
    used.push({ pte, writable: (t.perm & PERM_W) !== 0, leaf: isLeaf });
    const addr = pte & 0x000f_ffff_ffff_f000n;
    if (isLeaf) {
      size = 1n << shift;
      if (level === 4 || (addr & (size - 1n)) !== 0n) return { st: F.F_RESERVED, level };
      leaf = addr;
      break;
    }
    table = addr;
  }
  const gpa = leaf + (iova & (size - 1n));
  const out = s2(gpa);
  if (out === null || out === 'width') return { st: s2Fault(F, out)! };
  const perm = (user ? PERM_R | (write ? PERM_W : 0) : 0) & out.perm;
  if ((access & ~perm) !== 0) return { st: access === PERM_W ? F.F_WRITE : F.F_READ, perm };
  for (let i = 0; i < used.length; i++) {
    const need = (1n << 5n) | (i === used.length - 1 && access === PERM_W ? 1n << 6n : 0n);
    if ((used[i]!.pte & need) !== need && !used[i]!.writable) return { st: F.F_WRITE | F.F_STAGE2 };
  }
  return { st: F.F_NONE, pa: out.hpa, perm };
}

export interface ArmCd { t0sz: number; granule: number; ips: number; ha: boolean; hd: boolean; affd: boolean }

/** Arm VMSAv8-64 stage-1 walk of `iova` for `access` under the CD fields `cd`, TTB0 = `ttb`. */
export function walkArmS1(F: Faults, mem: Mem, s2: Stage2, cd: ArmCd, ttb: bigint, iova: bigint, access: number): Outcome {
  const g = Math.log2(cd.granule), s = g - 3, ia = 64 - cd.t0sz;
  const levels = Math.ceil((ia - g) / s);
  const start = 4 - levels;
  if (iova >> BigInt(ia) !== 0n) return { st: F.F_ADDR_WIDTH, level: start };
  const oaOf = (d: bigint) => d & ((1n << 48n) - 1n) & ~((1n << BigInt(g)) - 1n);
  const topBits = ia - (g + s * (levels - 1));
  let table = ttb & ~((8n << BigInt(topBits)) - 1n);
  if (table >> BigInt(cd.ips) !== 0n) return { st: F.F_ADDR_SIZE, level: start };
  let el0 = true, ro = false;
  let leaf = 0n, leafOa = 0n, size = 0n, leafLevel = 0, leafWritable = false;
  for (let level = start; level <= 3; level++) {
    const shift = BigInt(g + s * (3 - level));
    const bitsHere = level === start ? topBits : s;
    const gpa = table + ((iova >> shift) & ((1n << BigInt(bitsHere)) - 1n)) * 8n;
    const t = s2(gpa);
    if (t === null || t === 'width') return { st: s2Fault(F, t)! };
    if (!(t.perm & PERM_R)) return { st: F.F_READ | F.F_STAGE2 };
    const d = mem(t.hpa);
    if (!bit(d, 0)) return { st: F.F_NOT_PRESENT, level };
    const oa = oaOf(d);
    if (level < 3 && bit(d, 1)) {
      if (oa >> BigInt(cd.ips) !== 0n) return { st: F.F_ADDR_SIZE, level };
      if (bit(d, 61)) el0 = false;
      if (bit(d, 62)) ro = true;
      table = oa;
      continue;
    }
    const blockOk = level === 3 ? bit(d, 1) === 1n : level >= (g === 12 ? 1 : 2);
    if (!blockOk) return { st: F.F_RESERVED, level };
    if (oa >> BigInt(cd.ips) !== 0n) return { st: F.F_ADDR_SIZE, level };
    leaf = d; leafOa = oa; size = 1n << shift; leafLevel = level; leafWritable = (t.perm & PERM_W) !== 0;
    break;
  }
  const af = bit(leaf, 10) === 1n;
  if (!af && !cd.ha && !cd.affd) return { st: F.F_ACCESS, level: leafLevel };
  const dbm = cd.hd && bit(leaf, 51) === 1n;
  if (!bit(leaf, 6)) el0 = false;
  if (bit(leaf, 7) && !dbm) ro = true;
  const gpa = (leafOa & ~(size - 1n)) | (iova & (size - 1n));
  const out = s2(gpa);
  if (out === null || out === 'width') return { st: s2Fault(F, out)! };
  const perm = (el0 ? PERM_R | (ro ? 0 : PERM_W) : 0) & out.perm;
  if ((access & ~perm) !== 0) return { st: access === PERM_W ? F.F_WRITE : F.F_READ, perm };
  if (cd.ha) {
    const update = !af || (access === PERM_W && dbm && bit(leaf, 7) === 1n);
    if (update && !leafWritable) return { st: F.F_WRITE | F.F_STAGE2 };
  }
  return { st: F.F_NONE, pa: out.hpa, perm };
}
