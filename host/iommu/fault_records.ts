// Fault records of a refused DMA in the formats of the IOMMUs this project
// emulates, built from a DmaFault (host/kernel/pci.ts: engine status F_*,
// IOVA, PASID, access, level, stage):
//
//   - Intel VT-d: the 128-bit primary fault record of a Fault Recording
//     Register (VT-d spec rev 4.x, 10.4.14 "Fault Recording Registers
//     [n]"; 7.1.3 "Fault Logging"), with the fault reason of Appendix A
//     ("Non-Recoverable Fault Reason Encodings": the legacy-mode codes
//     0x1..0xD and the scalable-mode ones 0x30..0x90);
//   - AMD: the 128-bit event-log entry IO_PAGE_FAULT (AMD IOMMU spec rev
//     3.x, 2.5 "Event Logging", 2.5.3 "IO_PAGE_FAULT Event" in rev 3.00).
//
// The SMMUv3 event records are in arm_vsmmu.ts (eventRecord, dmaEvent);
// this module maps the engine's reasons the same way: one table from the
// DmaFault's reason (and stage) to the code, one function packing the bits.
// Every field's position is named next to the code that sets it, with the
// places it was checked against: Linux drivers/iommu/intel/iommu.h
// (dma_frcd_*: the fault handler's decoding of FRCD_REG) and dmar.c
// (dma_remap_fault_reasons, dma_remap_sm_fault_reasons: the reason codes);
// QEMU hw/i386/intel_iommu_internal.h (VTD_FRCD_*); Linux
// drivers/iommu/amd/amd_iommu_types.h (EVENT_*) and iommu.c
// (iommu_print_event: the decoding of an event-log entry).
//
// Records are returned as 16 bytes in memory order (little-endian, as the
// registers and the event log are read by software).

import type { DmaFault, FaultReason } from '../kernel/pci.js';

// ---- Intel VT-d ------------------------------------------------------------

/** Legacy-mode fault reasons (VT-d Appendix A; Linux dma_remap_fault_reasons[]). */
export const VTD_FR_CONTEXT_ENTRY_P = 0x2; // "Present bit in context entry is clear"
export const VTD_FR_ADDR_BEYOND_MGAW = 0x4; // "Access beyond MGAW"
export const VTD_FR_WRITE = 0x5; // "PTE Write access is not set"
export const VTD_FR_READ = 0x6; // "PTE Read access is not set"
export const VTD_FR_PAGING_ENTRY_INV = 0x7; // "Next page table ptr is invalid": a paging-entry access failed
export const VTD_FR_PAGING_ENTRY_RSVD = 0xc; // "non-zero reserved fields in PTE"

/** Scalable-mode fault reasons (VT-d Appendix A; Linux dma_remap_sm_fault_reasons[], from 0x30). */
export const VTD_FR_SM_PASID_ENTRY_P = 0x59; // "Present bit in PASID Table Entry is clear" (QEMU VTD_FR_PASID_ENTRY_P)
export const VTD_FR_SM_FS_ENTRY_INV = 0x70; // "Error attempting to access first-level paging entry"
export const VTD_FR_SM_FS_ENTRY_P = 0x71; // "Present bit in first-level paging entry is clear"
export const VTD_FR_SM_FS_ENTRY_RSVD = 0x72; // "Non-zero reserved field set in first-level paging entry"
export const VTD_FR_SM_SS_ENTRY_INV = 0x78; // "Error attempting to access second-level paging entry"
export const VTD_FR_SM_SS_ENTRY_RW = 0x79; // "Read/Write permission error in second-level paging entry" (R = W = 0)
export const VTD_FR_SM_SS_ENTRY_RSVD = 0x7a; // "Non-zero reserved field set in second-level paging entry"
export const VTD_FR_SM_FS_NON_CANONICAL = 0x80; // "Address in first-level translation is not canonical"
export const VTD_FR_SM_ADDR_BEYOND_MAX = 0x83; // "Address beyond the DMA hardware max"
export const VTD_FR_SM_SS_ADDR_BEYOND_MAX = 0x84; // "Second-level entry address beyond the max"
export const VTD_FR_SM_WRITE = 0x85; // "No write permission for Write/AtomicOp request"
export const VTD_FR_SM_READ = 0x86; // "No read permission for Read/AtomicOp request"

export interface VtdFaultOptions {
  /** Source identifier: the requester's bus/device/function (bus << 8 | devfn). */
  readonly sid: number;
  /** Translation mode of the unit (RTADDR_REG.TTM): host/iommu/intel_vtd.ts reports SMTS, so 'scalable' by default. */
  readonly mode?: 'legacy' | 'scalable';
  /**
   * The domain is a nested one (IOMMU_HWPT_DATA_VTD_S1): its stage-1 faults
   * are first-stage faults, its F_STAGE2 ones second-stage. Otherwise every
   * fault is of the second-stage table a paging domain is.
   */
  readonly nested?: boolean;
}

/** The reasons the engine gives only for Arm tables (access flag, output size): no VT-d encoding. */
function notVtd(reason: FaultReason): never {
  throw new RangeError(`fault reason '${reason}' has no VT-d encoding (an Arm stage-1/stage-2 fault)`);
}

/** The VT-d fault reason (FR) for a refused DMA. */
export function vtdFaultReason(f: DmaFault, opts: Omit<VtdFaultOptions, 'sid'> = {}): number {
  const write = f.access === 'write';
  const mode = opts.mode ?? 'scalable';
  const firstStage = opts.nested === true && f.stage === 1;
  if (mode === 'legacy') {
    // Legacy mode has second-stage tables only (VT-d 3.4 / 9.3: the context
    // entry points at a second-stage table); an R = W = 0 entry is a
    // read or write refused by the entry (reason 6 or 5).
    if (firstStage) throw new RangeError('legacy mode has no first-stage translation');
    switch (f.reason) {
      case 'blocked': return VTD_FR_CONTEXT_ENTRY_P;
      case 'address-width': return VTD_FR_ADDR_BEYOND_MGAW;
      case 'not-present': return write ? VTD_FR_WRITE : VTD_FR_READ;
      case 'read-denied': return VTD_FR_READ;
      case 'write-denied': return VTD_FR_WRITE;
      case 'reserved': return VTD_FR_PAGING_ENTRY_RSVD;
      case 'table-address': case 'out-of-segment': case 'address-size': return VTD_FR_PAGING_ENTRY_INV;
      default: return notVtd(f.reason);
    }
  }
  if (firstStage) {
    switch (f.reason) {
      case 'blocked': return VTD_FR_SM_PASID_ENTRY_P;
      case 'address-width': return VTD_FR_SM_FS_NON_CANONICAL; // nested.ts: the canonical-address check
      case 'not-present': return VTD_FR_SM_FS_ENTRY_P;
      case 'read-denied': return VTD_FR_SM_READ;
      case 'write-denied': return VTD_FR_SM_WRITE;
      case 'reserved': return VTD_FR_SM_FS_ENTRY_RSVD;
      case 'table-address': case 'out-of-segment': return VTD_FR_SM_FS_ENTRY_INV;
      default: return notVtd(f.reason);
    }
  }
  switch (f.reason) {
    case 'blocked': return VTD_FR_SM_PASID_ENTRY_P;
    case 'address-width': return VTD_FR_SM_ADDR_BEYOND_MAX;
    case 'not-present': return VTD_FR_SM_SS_ENTRY_RW;
    case 'read-denied': return VTD_FR_SM_READ;
    case 'write-denied': return VTD_FR_SM_WRITE;
    case 'reserved': return VTD_FR_SM_SS_ENTRY_RSVD;
    case 'table-address': return VTD_FR_SM_SS_ENTRY_INV;
    // A leaf whose output lies in no memory: the output address is beyond what the platform has.
    case 'out-of-segment': case 'address-size': return VTD_FR_SM_SS_ADDR_BEYOND_MAX;
    default: return notVtd(f.reason);
  }
}

/**
 * The primary fault record (FRCD_REG, VT-d 10.4.14) of a refused DMA:
 *
 *   127  126  125:124  123:104  103:96  95  94   93    92   91:80  79:64  63:12  11:0
 *  +---+----+--------+--------+-------+---+----+-----+----+------+------+------+-----+
 *  | F | T1 |   AT   |   PV   |  FR   |PP |EXE |PRIV | T2 | rsvd | SID  |  FI  |rsvd |
 *  +---+----+--------+--------+-------+---+----+-----+----+------+------+------+-----+
 *
 *   F   (127)      fault: the record is valid (Linux DMA_FRCD_F, bit 31 of the top dword)
 *   T1  (126)      type: 1 a read, 0 a write (Linux dma_frcd_type: "DMA Read" when set;
 *                  QEMU VTD_FRCD_T set when !is_write)
 *   AT  (125:124)  address type of the request: 00b untranslated (no ATS here)
 *   PV  (123:104)  PASID value (Linux dma_frcd_pasid_value: bits 27:8 of the top dword)
 *   FR  (103:96)   fault reason (Linux dma_frcd_fault_reason: bits 7:0 of the top dword)
 *   PP  (95)       PASID present (Linux dma_frcd_pasid_present: bit 31 of dword 2)
 *   EXE (94), PRIV (93): execute / privileged-mode requested: 0 (DMA reads and writes)
 *   T2  (92)       type bit 2: 0 for a read or write request (1: page or atomic requests)
 *   SID (79:64)    source identifier (Linux dma_frcd_source_id)
 *   FI  (63:12)    fault information: the page address of the faulting request
 *                  (Linux dma_frcd_page_addr; QEMU VTD_FRCD_FI clears 11:0)
 *
 * PASID 0 is the request without PASID (IOMMU_NO_PASID: RID_PASID): PP = 0.
 */
export function vtdFaultRecord(f: DmaFault, opts: VtdFaultOptions): Uint8Array {
  if (!Number.isInteger(opts.sid) || opts.sid < 0 || opts.sid > 0xffff) throw new RangeError(`sid ${opts.sid}`);
  if (!Number.isInteger(f.pasid) || f.pasid < 0 || f.pasid > 0xfffff) throw new RangeError(`pasid ${f.pasid}`);
  const fr = vtdFaultReason(f, opts);
  const lo = f.iova & 0xffff_ffff_ffff_f000n;
  const pp = f.pasid !== 0;
  let hi = BigInt(opts.sid); // 79:64
  if (pp) hi |= 1n << 31n; // 95
  hi |= BigInt(fr) << 32n; // 103:96
  if (pp) hi |= BigInt(f.pasid) << 40n; // 123:104
  if (f.access === 'read') hi |= 1n << 62n; // 126
  hi |= 1n << 63n; // 127
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, lo, true);
  dv.setBigUint64(8, hi, true);
  return out;
}

// ---- AMD -------------------------------------------------------------------

/** Event code of IO_PAGE_FAULT (AMD 2.5.3; Linux EVENT_TYPE_IO_FAULT). */
export const AMD_EVENT_IO_PAGE_FAULT = 0x2;
/** IO_PAGE_FAULT flags, bits 27:16 of the second dword, as flag bit n = dword bit 16 + n (Linux EVENT_FLAG_*). */
export const AMD_FLAG_GN = 0x001; // the PASID field holds a PASID (else a DomainID)
export const AMD_FLAG_NX = 0x002; // an execute request
export const AMD_FLAG_US = 0x004; // a user-mode request
export const AMD_FLAG_I = 0x008; // an interrupt request (Linux EVENT_FLAG_I)
export const AMD_FLAG_PR = 0x010; // the page was present (Linux EVENT_FLAG_PR)
export const AMD_FLAG_RW = 0x020; // a write (Linux EVENT_FLAG_RW)
export const AMD_FLAG_PE = 0x040; // permission error: the entries did not allow the access
export const AMD_FLAG_RZ = 0x080; // a reserved bit of a page-table entry was not zero
export const AMD_FLAG_TR = 0x100; // a translation request (ATS) rather than a transaction (Linux EVENT_FLAG_TR)

export interface AmdFaultOptions {
  /** DeviceID: the requester's bus/device/function. */
  readonly deviceId: number;
  /** The DTE's DomainID, carried when the request has no PASID (GN = 0). */
  readonly domainId?: number;
}

/** The IO_PAGE_FAULT flags for a refused DMA (the engine's reason -> PR / PE / RZ; RW from the access). */
export function amdFaultFlags(f: DmaFault): number {
  let flags = f.access === 'write' ? AMD_FLAG_RW : 0;
  if (f.pasid !== 0) flags |= AMD_FLAG_GN;
  switch (f.reason) {
    // A DTE allowing no access (IR = IW = 0, the blocked domain): refused by permission, no page.
    case 'blocked': return flags | AMD_FLAG_PE;
    // No page: not present, or IOVA bits the tables do not translate (above Mode, skipped levels).
    case 'not-present': case 'address-width': return flags;
    case 'read-denied': case 'write-denied': return flags | AMD_FLAG_PR | AMD_FLAG_PE;
    case 'reserved': return flags | AMD_FLAG_PR | AMD_FLAG_RZ;
    // A present entry that leads to no memory (a table or a page outside it).
    case 'table-address': case 'out-of-segment': return flags | AMD_FLAG_PR;
    default: throw new RangeError(`fault reason '${f.reason}' has no AMD encoding (an Arm fault)`);
  }
}

/**
 * The IO_PAGE_FAULT event-log entry (AMD 2.5.3) of a refused DMA:
 *
 *   dword 0: 15:0 DeviceID                 19:16 PASID[19:16]        31:20 reserved
 *   dword 1: 15:0 PASID[15:0] or DomainID  27:16 flags (GN NX US I PR RW PE RZ TR)
 *            31:28 EventCode = 2h
 *   dword 2: Address[31:0]                 dword 3: Address[63:32]
 *
 * As Linux iommu_print_event decodes it: devid = event[0] & 0xffff; pasid =
 * (event[0] & 0xf0000) | (event[1] & 0xffff); flags = (event[1] >> 16) &
 * 0xfff; type = event[1] >> 28; address = event[3] << 32 | event[2].
 * The address is the faulting IOVA itself (not page aligned).
 */
export function amdIoPageFault(f: DmaFault, opts: AmdFaultOptions): Uint8Array {
  if (!Number.isInteger(opts.deviceId) || opts.deviceId < 0 || opts.deviceId > 0xffff) throw new RangeError(`deviceId ${opts.deviceId}`);
  if (!Number.isInteger(f.pasid) || f.pasid < 0 || f.pasid > 0xfffff) throw new RangeError(`pasid ${f.pasid}`);
  const flags = amdFaultFlags(f);
  const tag = f.pasid !== 0 ? f.pasid : (opts.domainId ?? 0) & 0xffff;
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, (opts.deviceId | ((tag >> 16) << 16)) >>> 0, true);
  dv.setUint32(4, ((tag & 0xffff) | (flags << 16) | (AMD_EVENT_IO_PAGE_FAULT << 28)) >>> 0, true);
  dv.setBigUint64(8, f.iova & 0xffff_ffff_ffff_ffffn, true);
  return out;
}
