// The nesting half of the emulated Arm SMMUv3 (Linux:
// drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c): what a guest's
// virtual STE may say, the context descriptor it points at, the guest's
// invalidation commands and the event records forwarded to it.
//
// Field positions are the SMMUv3 specification's (Arm IHI 0070: 5.2 STE,
// 5.4 CD, 4.4 / 4.5 commands, 7.3 event records), as arm-smmu-v3.h names
// them. All words are little-endian u64.

import type { Engine } from '../engine/engine.js';
import type { PhysMem } from '../kernel/phys.js';
import type { DmaFault } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';

/** Bits hi..lo of a 64-bit word. */
export function bits(word: bigint, hi: number, lo: number): number {
  return Number((word >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
}
const mask = (hi: number, lo: number) => ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);

// ---- STE (5.2), the fields a guest may set (STRTAB_STE_*_NESTING_ALLOWED) --
/** STE.Config (word 0 [3:1]). */
export const STE_CFG_ABORT = 0;
export const STE_CFG_BYPASS = 4;
export const STE_CFG_S1_TRANS = 5;
/** STE.EATS (word 1 [29:28]): 0 = ATS aborted, 1 = full ATS. */
const EATS_ABT = 0;
const EATS_TRANS = 1;
/** Word 0: V, Config, S1Fmt, S1ContextPtr [51:6], S1CDMax [63:59]. */
const STE0_NESTING_ALLOWED = 1n | mask(3, 1) | mask(5, 4) | mask(51, 6) | mask(63, 59);
/** Word 1: S1DSS [1:0], S1CIR, S1COR, S1CSH [7:2], S1STALLD [27], EATS [29:28]. */
const STE1_NESTING_ALLOWED = mask(1, 0) | mask(3, 2) | mask(5, 4) | mask(7, 6) | (1n << 27n) | mask(29, 28);

/** A guest STE as a nested domain keeps it. */
export interface VSte {
  readonly valid: boolean;
  readonly cfg: number;
  /** S1Fmt: 0 linear CD table, 1 / 2 two-level with 4 KiB / 64 KiB leaf tables. */
  readonly s1fmt: number;
  /** S1ContextPtr: the IPA of the CD (table). */
  readonly s1ctxptr: bigint;
  readonly s1cdmax: number;
  /** S1DSS: what a transaction without a SubstreamID does when S1CDMax > 0. */
  readonly s1dss: number;
  readonly ats: boolean;
}

/**
 * arm_smmu_validate_vste: a non-valid STE is taken as all zero (the domain
 * aborts); a bit outside the nesting-allowed fields, a Config other than
 * abort / bypass / stage-1 translate, or an EATS other than 0 / 1 is EIO.
 */
export function validateVste(ste0: bigint, ste1: bigint): VSte {
  if ((ste0 & 1n) === 0n) return { valid: false, cfg: STE_CFG_ABORT, s1fmt: 0, s1ctxptr: 0n, s1cdmax: 0, s1dss: 0, ats: false };
  if ((ste0 & ~STE0_NESTING_ALLOWED) !== 0n || (ste1 & ~STE1_NESTING_ALLOWED) !== 0n) throw new SysError('EIO');
  const cfg = bits(ste0, 3, 1);
  if (cfg !== STE_CFG_ABORT && cfg !== STE_CFG_BYPASS && cfg !== STE_CFG_S1_TRANS) throw new SysError('EIO');
  const eats = bits(ste1, 29, 28);
  if (eats !== EATS_ABT && eats !== EATS_TRANS) throw new SysError('EIO');
  return {
    valid: true, cfg, s1fmt: bits(ste0, 5, 4), s1ctxptr: ste0 & mask(51, 6), s1cdmax: bits(ste0, 63, 59),
    s1dss: bits(ste1, 1, 0), ats: cfg === STE_CFG_S1_TRANS && eats === EATS_TRANS,
  };
}

// ---- CD (5.4) -----------------------------------------------------------

/** The stage-1 configuration a valid CD gives (CD word 0 and TTB0 of word 1). */
export interface ContextDescriptor {
  readonly t0sz: number;
  /** TG0 as a granule in bytes (CD.TG0: 0b00 4 KiB, 0b01 64 KiB, 0b10 16 KiB). */
  readonly granule: number;
  /** CD.IPS, the output size in bits (0b000 32 ... 0b110 52). */
  readonly ips: number;
  readonly affd: boolean;
  readonly ha: boolean;
  readonly hd: boolean;
  readonly asid: number;
  readonly ttb0: bigint;
}

const IPS_BITS = [32, 36, 40, 42, 44, 48, 52];
const TG0_GRANULE = [4096, 65536, 16384];

/**
 * Decode the first two words of a CD. A CD that is not valid (V, word 0
 * bit 31) or that an SMMU must call ILLEGAL (5.4.1: AA64 = 0 with a 64-bit
 * only unit (IDR0.TTF = 0b10), a reserved TG0 or IPS, EPD0 = 1 leaves TTB0
 * unused: every transaction without TTB1 faults) is C_BAD_CD: null.
 */
export function decodeCd(w0: bigint, w1: bigint): ContextDescriptor | null {
  if (bits(w0, 31, 31) === 0 || bits(w0, 41, 41) === 0) return null;
  const tg0 = bits(w0, 7, 6), ips = bits(w0, 34, 32);
  if (tg0 >= TG0_GRANULE.length || ips >= IPS_BITS.length || bits(w0, 14, 14) === 1) return null;
  return {
    t0sz: bits(w0, 5, 0), granule: TG0_GRANULE[tg0], ips: IPS_BITS[ips],
    affd: bits(w0, 35, 35) === 1, hd: bits(w0, 42, 42) === 1, ha: bits(w0, 43, 43) === 1,
    asid: bits(w0, 63, 48), ttb0: w1 & mask(51, 4),
  };
}

// ---- Commands (4.4, 4.5) ------------------------------------------------
export const CMD_CFGI_CD = 0x05;
export const CMD_CFGI_CD_ALL = 0x06;
export const CMD_TLBI_NH_ALL = 0x10;
export const CMD_TLBI_NH_ASID = 0x11;
export const CMD_TLBI_NH_VA = 0x12;
export const CMD_TLBI_NH_VAA = 0x13;
export const CMD_TLBI_NSNH_ALL = 0x30;
export const CMD_ATC_INV = 0x40;

/** A guest command, decoded into what the vIOMMU acts on. */
export type VCommand =
  | { op: 'tlbi-all' }
  | { op: 'tlbi-asid'; asid: number }
  /** NH_VA (asid) or NH_VAA (asid null): the pages of [addr, addr + length). */
  | { op: 'tlbi-va'; asid: number | null; addr: bigint; length: bigint }
  | { op: 'cfgi-cd'; vsid: number }
  | { op: 'atc-inv'; vsid: number };

/**
 * arm_vsmmu_convert_user_cmd: the commands a guest may pass through, any
 * other EIO. TLBI ranges (4.4.1, IDR3.RIL): TG [11:10] selects the granule,
 * then (NUM + 1) << SCALE granules from the address; TG = 0 is one address,
 * which drops every cached translation that covers it.
 */
export function decodeCommand(c0: bigint, c1: bigint): VCommand {
  const op = bits(c0, 7, 0);
  switch (op) {
    case CMD_TLBI_NSNH_ALL:
    case CMD_TLBI_NH_ALL:
      return { op: 'tlbi-all' };
    case CMD_TLBI_NH_ASID:
      return { op: 'tlbi-asid', asid: bits(c0, 63, 48) };
    case CMD_TLBI_NH_VA:
    case CMD_TLBI_NH_VAA: {
      const tg = bits(c1, 11, 10);
      const granule = [0n, 4096n, 16384n, 65536n][tg];
      const length = tg === 0 ? 1n : BigInt(bits(c0, 16, 12) + 1) * (granule << BigInt(bits(c0, 24, 20)));
      return { op: 'tlbi-va', asid: op === CMD_TLBI_NH_VA ? bits(c0, 63, 48) : null, addr: c1 & mask(63, 12), length };
    }
    case CMD_CFGI_CD:
    case CMD_CFGI_CD_ALL:
      return { op: 'cfgi-cd', vsid: bits(c0, 63, 32) };
    case CMD_ATC_INV:
      return { op: 'atc-inv', vsid: bits(c0, 63, 32) };
    default:
      throw new SysError('EIO');
  }
}

// ---- Event records (7.3) ------------------------------------------------
export const EVT_F_STREAM_DISABLED = 0x06;
export const EVT_C_BAD_SUBSTREAMID = 0x08;
export const EVT_F_CD_FETCH = 0x09;
export const EVT_C_BAD_CD = 0x0a;
export const EVT_F_TRANSLATION = 0x10;
export const EVT_F_ADDR_SIZE = 0x11;
export const EVT_F_ACCESS = 0x12;
export const EVT_F_PERMISSION = 0x13;
export const EVT_F_WALK_EABT = 0x0b;
/** Event CLASS (word 1 [41:40]) of a stage-2 fault: what the faulting stage-2 translation was for. */
export const CLASS_CD = 0b00;
export const CLASS_TT = 0b01;
export const CLASS_IN = 0b10;

/** One event record as four words (the layout of struct iommu_vevent_arm_smmuv3). */
export function eventRecord(e: {
  type: number; sid: number; write: boolean; stage2: boolean; cls: number; input: bigint; ipa?: bigint;
}): bigint[] {
  const w0 = BigInt(e.type) | (BigInt(e.sid) << 32n);
  // RnW [35] is 1 for a read; InD [34] 0 (data); PnU [33] 0 (unprivileged); S2 [39]; CLASS [41:40].
  const w1 = ((e.write ? 0n : 1n) << 35n) | ((e.stage2 ? 1n : 0n) << 39n) | (BigInt(e.cls) << 40n);
  const w3 = (e.ipa ?? 0n) & mask(51, 12);
  return [w0, w1, e.input, w3];
}

// ---- The nested domain of a vSTE ------------------------------------------

/** Why a stream's stage-1 configuration is unusable: the event each of its transactions records. */
export interface ConfigFault { readonly type: number; readonly stage2: boolean; readonly ipa: bigint }

/** What the domain needs of the engine and of physical memory. */
export interface VsmmuEnv {
  readonly engine: Engine;
  readonly phys: PhysMem;
  /** The vIOMMU's stage-2 (nest-parent) engine domain. */
  readonly s2: number;
}

/**
 * The translation a vSTE gives a stream (arm_smmu_make_nested_domain_ste):
 * non-valid or abort -> terminated (did 0, no event: the physical STE is an
 * abort STE); bypass -> stage 2 only; stage-1 translate -> the guest's CD
 * for SubstreamID 0, read through stage 2 as the SMMU fetches it (5.3, 5.4),
 * and re-read when the guest says CFGI_CD. A CD that cannot be fetched or is
 * ILLEGAL leaves the stream terminated with the event it records.
 */
export class VsmmuDomain {
  /** The engine domain attached contexts point at; 0 terminates. */
  did = 0;
  cd: ContextDescriptor | null = null;
  configFault: ConfigFault | null = null;
  private owned = 0;

  constructor(private readonly env: VsmmuEnv, readonly ste: VSte) {
    this.configure();
  }

  /** (Re)fetch the configuration: at allocation and on CFGI_CD / CFGI_CD_ALL. */
  configure(): void {
    this.release();
    this.cd = null;
    this.configFault = null;
    const ste = this.ste;
    if (!ste.valid || ste.cfg === STE_CFG_ABORT) { this.did = 0; return; }
    if (ste.cfg === STE_CFG_BYPASS) { this.did = this.env.s2; return; }
    // 5.2 S1DSS, for a transaction without a SubstreamID when substreams are on.
    if (ste.s1cdmax > 0 && ste.s1dss === 0b01) { this.did = this.env.s2; return; }
    if (ste.s1cdmax > 0 && ste.s1dss !== 0b10) return this.fail({ type: EVT_F_STREAM_DISABLED, stage2: false, ipa: 0n });
    let cdAddr = ste.s1ctxptr;
    if (ste.s1cdmax > 0 && ste.s1fmt !== 0) {
      // Two-level CD table (5.3): L1CD[0] (V bit 0, L2Ptr [51:12]) for SubstreamID 0.
      const l1 = this.fetch(cdAddr);
      if (typeof l1 !== 'bigint') return this.fail(l1);
      if ((l1 & 1n) === 0n) return this.fail({ type: EVT_C_BAD_SUBSTREAMID, stage2: false, ipa: 0n });
      cdAddr = l1 & mask(51, 12);
    }
    const w0 = this.fetch(cdAddr), w1 = this.fetch(cdAddr + 8n);
    if (typeof w0 !== 'bigint') return this.fail(w0);
    if (typeof w1 !== 'bigint') return this.fail(w1);
    const cd = decodeCd(w0, w1);
    if (!cd) return this.fail({ type: EVT_C_BAD_CD, stage2: false, ipa: 0n });
    let did: number;
    try {
      did = this.env.engine.ptCreateNestedArm(this.env.s2, cd.ttb0, cd);
    } catch (e) {
      // A T0SZ / granule / IPS combination the walker does not take: ILLEGAL.
      if (e instanceof SysError && e.code === 'EINVAL') return this.fail({ type: EVT_C_BAD_CD, stage2: false, ipa: 0n });
      throw e;
    }
    this.cd = cd;
    this.owned = this.did = did;
  }

  destroy(): void { this.release(); }

  private release(): void {
    if (this.owned) this.env.engine.ptDestroy(this.owned);
    this.owned = 0;
  }

  private fail(f: ConfigFault): void {
    this.did = 0;
    this.configFault = f;
  }

  /** A u64 of guest memory at an IPA, through stage 2; a stage-2 miss is an F_TRANSLATION of CLASS CD. */
  private fetch(ipa: bigint): bigint | ConfigFault {
    const w = this.env.engine.ptWalk(this.env.s2, ipa);
    if (!w.ok) return { type: EVT_F_TRANSLATION, stage2: true, ipa };
    const b = new Uint8Array(8);
    try {
      // The walk names the leaf's first byte; the offset in the leaf is the IPA's.
      this.env.phys.read(Number(w.pa + (ipa & BigInt(w.size - 1))), b);
    } catch {
      return { type: EVT_F_CD_FETCH, stage2: false, ipa };
    }
    return new DataView(b.buffer).getBigUint64(0, true);
  }
}

/** The event type an SMMU records for a refused translation, by the engine's reason (7.3). */
const EVENT_OF: Record<string, number> = {
  'not-present': EVT_F_TRANSLATION, 'address-width': EVT_F_TRANSLATION, reserved: EVT_F_TRANSLATION,
  'read-denied': EVT_F_PERMISSION, 'write-denied': EVT_F_PERMISSION, 'access-flag': EVT_F_ACCESS,
  'address-size': EVT_F_ADDR_SIZE, 'table-address': EVT_F_WALK_EABT, 'out-of-segment': EVT_F_WALK_EABT,
};

/**
 * The event record of a refused DMA of the stream `vsid` (arm_vmaster_report_event:
 * the StreamID field carries the virtual id), or null when the SMMU records
 * none (a stream its vSTE aborts). A stage-2 fault of the walk is CLASS TT
 * with the IPA unknown to the engine (0), of the output CLASS IN.
 */
export function dmaEvent(domain: VsmmuDomain, vsid: number, f: DmaFault): bigint[] | null {
  const write = f.access === 'write';
  if (f.reason === 'blocked') {
    const c = domain.configFault;
    return c && eventRecord({ type: c.type, sid: vsid, write, stage2: c.stage2, cls: CLASS_CD, input: f.iova, ipa: c.ipa });
  }
  const type = EVENT_OF[f.reason] ?? EVT_F_TRANSLATION;
  return eventRecord({ type, sid: vsid, write, stage2: f.stage === 2, cls: f.stage === 2 ? CLASS_TT : CLASS_IN, input: f.iova });
}
