// An emulated PCI function behind an emulated physical IOMMU, and its DMA.
// The device owns one engine context per PASID (its context entry): what
// the context points at is what its DMA reaches; no context = blocked.

import type { Engine } from '../engine/engine.js';
import { split64 } from '../engine/engine.js';
import type { IommuDriver, IommuKind } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import type { PhysMem } from './phys.js';
import { SEG_SPAN } from './phys.js';

export interface DeviceOptions {
  /** The emulated physical IOMMU the device sits behind (default 'intel-vtd'). */
  iommu?: IommuKind;
  /** PASID width the function supports (PCIe PASID capability); 0 = no PASID. */
  pasidBits?: number;
  ats?: boolean;
  pri?: boolean;
}

export interface DmaOptions { pasid?: number }

/** Why a DMA was refused (engine F_* status). */
export type FaultReason = 'blocked' | 'address-width' | 'not-present' | 'read-denied' | 'write-denied' | 'reserved' | 'table-address' | 'out-of-segment' | 'access-flag' | 'address-size';

const REASONS: readonly FaultReason[] = ['blocked', 'address-width', 'not-present', 'read-denied', 'write-denied', 'reserved', 'table-address', 'out-of-segment', 'access-flag', 'address-size'];

/** Who records a refused DMA (an IOMMU event queue). */
export type DmaFaultSink = (fault: DmaFault) => void;

/** A DMA the IOMMU refused. No byte of it was transferred. */
export class DmaFault extends Error {
  override readonly name = 'DmaFault';
  constructor(
    /** Engine status (F_* of assembly/layout.ts). */
    readonly status: number,
    /** The IOVA whose translation failed. */
    readonly iova: bigint,
    readonly pasid: number,
    readonly access: 'read' | 'write',
    /** Page-table level where the walk stopped (0 when no walk happened). */
    readonly level: number,
  ) {
    // F_STAGE2 (0x80, assembly/layout.ts) marks the stage-2 part of a nested walk.
    const stage = status & F_STAGE2 ? 2 : 1;
    const reason = REASONS[(status & ~F_STAGE2) - 1] ?? `status-${status}`;
    super(`DMA ${access} fault at IOVA 0x${iova.toString(16)} (pasid ${pasid}): ${stage === 2 ? 'stage-2 ' : ''}${reason}${level ? ` at level ${level}` : ''}`);
    this.reason = reason as FaultReason;
    this.stage = stage;
  }
  readonly reason: FaultReason;
  /** 2 when a nested walk failed in its stage-2 part (a first-stage table or the output address), else 1. */
  readonly stage: 1 | 2;
}

const F_STAGE2 = 0x80;

/** Engine context indices, lowest free first. */
export class ContextPool {
  private readonly free: number[] = [];
  private next = 0;
  constructor(private readonly size: number) {}
  alloc(): number {
    if (this.free.length) return this.free.pop()!;
    if (this.next >= this.size) throw new SysError('ENOSPC', 'out of device contexts');
    return this.next++;
  }
  release(ctx: number): void { this.free.push(ctx); }
}

/** One PRI Page Request Message (PCIe 6.x §10.4.1) as the function sends it. */
export interface PageRequestInit {
  /** The IOVA of the page (its low 12 bits are ignored, as in the message). */
  addr: number | bigint;
  /** IOMMU_PGFAULT_PERM_* bits: READ, WRITE, EXEC, PRIV. */
  perm: number;
  /** The PASID the request carries; none for a request on the requester id. */
  pasid?: number;
  /** Page Request Group Index (9 bits). */
  grpid?: number;
  /** Last Request in PRG: the group is complete and goes to the IOMMU. Default true. */
  last?: boolean;
}

/** Where an attachment's page requests go: the iommufd FAULT path, or nowhere. */
export type PageRequestSink = (pasid: number, pasidValid: boolean, requests: PageRequestInit[], respond: (code: number) => void) => void;

/** IOMMUFD_PAGE_RESP_INVALID: what a request nobody handles is answered with (iopf_error_response). */
const RESP_INVALID = 1;

/**
 * The function's Page Request Interface. Requests of one group collect until
 * the one flagged last, then the whole group is reported to the IOMMU (as
 * iommu_report_device_fault does with its partial list); every request of
 * the group resolves with the response code the VMM writes back.
 */
export class Pri {
  private readonly partial = new Map<string, { reqs: PageRequestInit[]; waiters: ((code: number) => void)[] }>();

  constructor(private readonly dev: PciFunction) {}

  request(r: PageRequestInit): Promise<number> {
    if (!this.dev.options.pri) throw new SysError('EOPNOTSUPP', 'the function has no PRI capability');
    const pasidValid = r.pasid !== undefined;
    const pasid = r.pasid ?? 0;
    const key = `${pasidValid ? pasid : -1}:${r.grpid ?? 0}`;
    const g = this.partial.get(key) ?? { reqs: [], waiters: [] };
    this.partial.set(key, g);
    g.reqs.push(r);
    const done = new Promise<number>((resolve) => g.waiters.push(resolve));
    if (r.last ?? true) {
      this.partial.delete(key);
      const respond = (code: number) => { for (const w of g.waiters) w(code); };
      const sink = this.dev.pageRequestSink(pasid);
      if (sink) sink(pasid, pasidValid, g.reqs, respond);
      else respond(RESP_INVALID);
    }
    return done;
  }
}

export class PciFunction {
  readonly path: string;
  readonly dma: Dma;
  readonly pri: Pri;
  private readonly sinks = new Map<number, PageRequestSink>();
  private readonly faultSinks = new Map<number, DmaFaultSink>();
  /** Opens through VFIO (vfio_df_open); a cdev device is bound by one fd at a time. */
  openCount = 0;
  private readonly contexts = new Map<number, number>();

  constructor(
    readonly index: number,
    readonly driver: IommuDriver,
    readonly options: Required<DeviceOptions>,
    private readonly engine: Engine,
    private readonly pool: ContextPool,
    phys: PhysMem,
  ) {
    this.path = `/dev/vfio/devices/vfio${index}`;
    this.dma = new Dma(this, engine, phys);
    this.pri = new Pri(this);
  }

  /** Route a PASID's page requests (set while attached to a fault-capable HWPT). */
  setPageRequestSink(pasid: number, sink: PageRequestSink | null): void {
    if (sink) this.sinks.set(pasid, sink);
    else this.sinks.delete(pasid);
  }

  pageRequestSink(pasid: number): PageRequestSink | undefined { return this.sinks.get(pasid); }

  /** Route a PASID's refused DMAs to the IOMMU's event reporting (set while attached to a vIOMMU's HWPT). */
  setFaultSink(pasid: number, sink: DmaFaultSink | null): void {
    if (sink) this.faultSinks.set(pasid, sink);
    else this.faultSinks.delete(pasid);
  }

  /** The IOMMU records a refused DMA (an event), then the device sees it: returns the fault to throw. */
  fault(f: DmaFault): DmaFault {
    this.faultSinks.get(f.pasid)?.(f);
    return f;
  }

  /** The engine context of a PASID, or -1 (blocked). */
  context(pasid: number): number { return this.contexts.get(pasid) ?? -1; }

  /** Point the PASID's context at a domain; did 0 blocks (the context is freed). */
  setContext(pasid: number, did: number): void {
    let ctx = this.contexts.get(pasid);
    if (did === 0) {
      if (ctx === undefined) return;
      this.engine.ctxSet(ctx, 0, pasid);
      this.contexts.delete(pasid);
      this.pool.release(ctx);
      return;
    }
    if (ctx === undefined) {
      ctx = this.pool.alloc();
      this.contexts.set(pasid, ctx);
    }
    this.engine.ctxSet(ctx, did, pasid);
  }
}

const TWO32 = 0x1_0000_0000;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Views kept by Dma.copy (a power of two). */
const VIEWS = 16;

/** The device's DMA through whatever it is attached to. */
export class Dma {
  /**
   * Views of segment bytes that DMAs read from, direct-mapped by page: a
   * read of bytes some DMA read before (rings, descriptors, buffers) reuses
   * the view instead of cutting a subarray, which costs about as much as a
   * cache-hot 4 KiB copy. A view is kept with the segment view it was cut
   * from: after growth, or for a segment registered again, that differs
   * and the view is cut anew.
   */
  private readonly viewOf: (Uint8Array | null)[] = new Array<Uint8Array | null>(VIEWS).fill(null);
  private readonly viewAt = new Array<number>(VIEWS).fill(-1);
  private readonly views = new Array<Uint8Array>(VIEWS).fill(new Uint8Array(0));
  /** The last bigint IOVA and its halves: Number() of a bigint costs as much as the rest of a small DMA's setup. */
  private lastIova = -1n;
  private lastLo = 0;
  private lastHi = 0;

  constructor(private readonly dev: PciFunction, private readonly engine: Engine, private readonly phys: PhysMem) {}

  /** Read `length` bytes at `iova`. Throws DmaFault (no byte moved) if any page is refused. */
  read(iova: number | bigint, length: number, opts?: DmaOptions): Uint8Array {
    const out = new Uint8Array(length);
    this.readInto(iova, out, opts);
    return out;
  }

  /** Read into a caller's buffer (no allocation). */
  readInto(iova: number | bigint, dst: Uint8Array, opts?: DmaOptions): void {
    this.transfer(iova, dst, opts?.pasid ?? 0, false);
  }

  /** Write `bytes` at `iova`. Throws DmaFault (no byte moved) if any page is refused. */
  write(iova: number | bigint, bytes: Uint8Array, opts?: DmaOptions): void {
    this.transfer(iova, bytes, opts?.pasid ?? 0, true);
  }

  /** Translate one IOVA as the device would (through the IOTLB). */
  translate(iova: number | bigint, opts?: DmaOptions & { write?: boolean }): { pa: number; size: number; perm: number } {
    const pasid = opts?.pasid ?? 0;
    const write = opts?.write ?? false;
    const [lo, hi] = split64(checkIova(iova));
    const ctx = this.dev.context(pasid);
    const L = this.engine.layout;
    if (ctx < 0) throw this.dev.fault(new DmaFault(L.F_BLOCKED, BigInt(iova), pasid, write ? 'write' : 'read', 0));
    const st = this.engine.translate(ctx, lo, hi, write ? L.PERM_W : L.PERM_R);
    if (st !== 0) throw this.dev.fault(new DmaFault(st, this.engine.lastFaultIova, pasid, write ? 'write' : 'read', this.engine.lastLevel));
    return { pa: this.engine.lastPaHi * SEG_SPAN + this.engine.lastPaLo, size: 2 ** this.engine.lastShift, perm: this.engine.lastPerm };
  }

  private transfer(iova: number | bigint, buf: Uint8Array, pasid: number, write: boolean): void {
    const len = buf.length;
    if (len === 0) return;
    const L = this.engine.layout;
    const access = write ? L.PERM_W : L.PERM_R;
    const ctx = this.dev.context(pasid);
    let lo: number, hi: number;
    // The common case, a safe integer below 2^32, without allocating.
    if (typeof iova === 'number' && iova >= 0 && iova < TWO32 && Number.isInteger(iova)) { lo = iova; hi = 0; }
    else if (iova === this.lastIova) { lo = this.lastLo; hi = this.lastHi; }
    else if (typeof iova === 'bigint' && iova >= 0n && iova <= MAX_SAFE) {
      // A bigint below 2^53: one Number() (Number() of BigInt & and >> results costs three).
      const v = Number(iova);
      hi = Math.floor(v / TWO32);
      lo = v - hi * TWO32; // not v % TWO32: a double's % is a libm call
      this.lastIova = iova; this.lastLo = lo; this.lastHi = hi;
    } else [lo, hi] = split64(checkIova(iova));
    if (ctx < 0) throw this.dev.fault(new DmaFault(L.F_BLOCKED, BigInt(iova), pasid, write ? 'write' : 'read', 0));
    if (len >= TWO32) throw new RangeError('a DMA is at most 4 GiB - 1 bytes');
    // Fast path: the whole transfer is one physically contiguous range.
    const n = this.engine.dmaRangesRaw(ctx, lo, hi, len, access);
    if (n < 0) throw this.dev.fault(new DmaFault(-n, this.engine.lastFaultIova, pasid, write ? 'write' : 'read', this.engine.lastLevel));
    if (n === 1) {
      const pa = this.engine.dmaSingle(len);
      if (pa >= 0) {
        const seg = Math.floor(pa / TWO32);
        this.copy(seg, pa - seg * TWO32, buf, 0, len, write);
        return;
      }
    }
    const ranges = this.engine.dmaRanges(ctx, iova, len, access);
    if (!Array.isArray(ranges)) throw this.dev.fault(new DmaFault(ranges.fault, ranges.iova, pasid, write ? 'write' : 'read', ranges.level));
    let at = 0;
    for (const r of ranges) {
      this.copy(r.seg, r.offset, buf, at, r.length, write);
      at += r.length;
    }
  }

  private copy(seg: number, offset: number, buf: Uint8Array, at: number, n: number, write: boolean): void {
    const mem = this.phys.view(seg);
    if (write) { mem.set(at === 0 && n === buf.length ? buf : buf.subarray(at, at + n), offset); return; }
    const slot = (offset >>> 12) & (VIEWS - 1);
    let view = this.views[slot];
    if (this.viewOf[slot] !== mem || this.viewAt[slot] !== offset || view.length !== n) {
      view = mem.subarray(offset, offset + n);
      this.views[slot] = view;
      this.viewOf[slot] = mem;
      this.viewAt[slot] = offset;
    }
    buf.set(view, at);
  }
}

function checkIova(iova: number | bigint): number | bigint {
  if (typeof iova === 'bigint' ? iova < 0n || iova >= 1n << 64n : !Number.isSafeInteger(iova) || iova < 0) {
    throw new RangeError(`bad IOVA ${iova}`);
  }
  return iova;
}
