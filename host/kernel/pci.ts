// An emulated PCI function behind an emulated physical IOMMU, and its DMA.
// The device owns one engine context per PASID (its context entry): what
// the context points at is what its DMA reaches; no context = blocked.

import type { Engine } from '../engine/engine.js';
import { split64, DMA_PIECES } from '../engine/engine.js';
import type { IommuDriver, IommuKind } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import { IOMMU_PGFAULT_PERM_READ, IOMMU_PGFAULT_PERM_WRITE, IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID } from '../uapi/iommufd.js';
import { Ats } from './ats.js';
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

/** Options of Dma.readAsync and Dma.writeAsync. */
export interface DmaAsyncOptions extends DmaOptions {
  /**
   * Page requests one asynchronous DMA may send for one page (default
   * DMA_PAGE_REQUESTS, 4): a page that faults again after a SUCCESS answer
   * is requested again until then; the next fault on it is final (the
   * DmaFault has `gaveUp` set, and no request is sent).
   */
  maxPageRequests?: number;
}

/** Default page requests per page of one asynchronous DMA (DmaAsyncOptions.maxPageRequests). */
export const DMA_PAGE_REQUESTS = 4;

/**
 * A page request a refused DMA sent, or joined while one for its page was
 * outstanding (a function has at most one per page and PASID).
 */
export interface PendingPageRequest {
  /** The group's first page (IOVA, 4 KiB aligned). */
  readonly addr: bigint;
  /**
   * Every page the group asks for, in address order (a DMA over several
   * missing pages sends one group with a request per page, PCIe §10.4.1).
   */
  readonly pages: readonly bigint[];
  /** The PASID it carries; undefined for a request on the requester id. */
  readonly pasid: number | undefined;
  /** IOMMU_PGFAULT_PERM_* bits asked for. */
  readonly perm: number;
  /** Page Request Group Index; -1 when the queue overflowed and the IOMMU answered at once. */
  readonly grpid: number;
  /**
   * Resolves with the IOMMUFD_PAGE_RESP_* code the VMM writes (INVALID when
   * the attachment goes first; SUCCESS at once when the fault queue
   * overflowed: the VT-d rule, assembly/layout.ts "Page requests").
   */
  readonly response: Promise<number>;
}

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
  /**
   * The page request (PRI) the fault sent or joined: set when the function
   * has PRI, its attachment has a FAULT object and the fault is one a page
   * request can fix (not present, or a permission the page lacks). The
   * synchronous read and write throw with it pending; readAsync and
   * writeAsync wait for it and retry.
   */
  pageRequest: PendingPageRequest | null = null;
  /** The response code that ended an asynchronous DMA (IOMMUFD_PAGE_RESP_INVALID), if one did. */
  response: number | null = null;
  /** An asynchronous DMA gave up: the page faulted again after maxPageRequests SUCCESS answers. */
  gaveUp = false;
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

/** Who hears that the engine queued a page request group (a FAULT object: data, not a closure, so a snapshot keeps it). */
export interface PriListener { signal(): void }

/** Where an attachment's page requests go: the iommufd FAULT path, or nowhere. */
export type PageRequestSink = (pasid: number, pasidValid: boolean, requests: PageRequestInit[], respond: (code: number) => void) => void;

/**
 * The function's Page Request Interface. Requests of one group collect until
 * the one flagged last, then the whole group is reported to the IOMMU (as
 * iommu_report_device_fault does with its partial list); every request of
 * the group resolves with the response code the VMM writes back.
 */
export class Pri {
  private readonly partial = new Map<string, { reqs: PageRequestInit[]; waiters: ((code: number) => void)[] }>();

  constructor(private readonly dev: PciFunction) {}

  request(r: PageRequestInit, answered?: (code: number) => void): Promise<number> {
    if (!this.dev.options.pri) throw new SysError('EOPNOTSUPP', 'the function has no PRI capability');
    const pasidValid = r.pasid !== undefined;
    const pasid = r.pasid ?? 0;
    const key = `${pasidValid ? pasid : -1}:${r.grpid ?? 0}`;
    const g = this.partial.get(key) ?? { reqs: [], waiters: [] };
    this.partial.set(key, g);
    g.reqs.push(r);
    const done = new Promise<number>((resolve) => g.waiters.push(answered ? (c) => { answered(c); resolve(c); } : resolve));
    if (r.last ?? true) {
      this.partial.delete(key);
      const respond = (code: number) => { for (const w of g.waiters) w(code); };
      const sink = this.dev.pageRequestSink(pasid);
      if (sink) sink(pasid, pasidValid, g.reqs, respond);
      else respond(IOMMUFD_PAGE_RESP_INVALID); // nobody handles it (iopf_error_response)
    }
    return done;
  }
}

export class PciFunction {
  readonly path: string;
  readonly dma: Dma;
  readonly pri: Pri;
  /** The ATS capability and the function's translation cache (ats.ts). */
  readonly ats: Ats;
  private readonly sinks = new Map<number, PageRequestSink>();
  private readonly faultSinks = new Map<number, DmaFaultSink>();
  /** Opens through VFIO (vfio_df_open); a cdev device is bound by one fd at a time. */
  openCount = 0;
  private readonly contexts = new Map<number, number>();
  /** PASID 0's context (-1: none), also in contexts: every DMA asks for it, and a Map probe is a tenth of a 4 KiB DMA. */
  private ctx0 = -1;

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
    this.ats = new Ats(this, engine);
  }

  /** PRG tables (assembly/pri.ts) by engine context: the frame number of each. */
  private readonly prgTables = new Map<number, number>();
  /** Groups the engine sent or a DMA joined, by engine context and PRG index, until answered. */
  private readonly waiting = new Map<number, ({ req: PendingPageRequest; resolve: (code: number) => void } | undefined)[]>();
  /** Who hears of a group the engine queued, by engine context (the FAULT, for its readiness). */
  private readonly priSignals = new Map<number, PriListener>();

  /**
   * Let the PASID's refused DMAs send page requests from the engine into
   * FAULT ring `ring` as DEVICE `devId`; `signal` tells the FAULT's
   * readers. Returns the context, or -1 when the PASID has none (a domain
   * the engine does not translate, as the selftest's mock nested domains:
   * no DMA reaches it).
   */
  enablePri(pasid: number, ring: number, devId: number, signal: PriListener): number {
    const ctx = this.context(pasid);
    if (ctx < 0) return -1;
    const L = this.engine.layout, frames = L.PRG_BYTES / L.PAGE_SIZE;
    let pfn = this.prgTables.get(ctx);
    if (pfn === undefined) {
      pfn = this.engine.allocFrames(frames);
      this.prgTables.set(ctx, pfn);
    } else this.engine.bytes.fill(0, pfn * L.PAGE_SIZE, (pfn + frames) * L.PAGE_SIZE);
    this.engine.ctxPri(ctx, ring, devId, pfn);
    this.priSignals.set(ctx, signal);
    return ctx;
  }

  /** The PASID's DMAs send no page request from now on; a group still waiting is answered INVALID. */
  disablePri(pasid: number): void {
    const ctx = this.context(pasid);
    if (ctx < 0 || !this.priSignals.has(ctx)) return;
    this.engine.ctxPri(ctx, 0, 0, 0);
    this.priSignals.delete(ctx);
    const w = this.waiting.get(ctx);
    this.waiting.delete(ctx);
    for (const e of w ?? []) e?.resolve(IOMMUFD_PAGE_RESP_INVALID);
  }

  /** The response to the engine's group `grpid` of context `ctx` reaches the function (and its waiting DMAs). */
  answerPageRequest(ctx: number, grpid: number, code: number): void {
    try { this.engine.priRespond(ctx, grpid, code); } catch (e) { if (!(e instanceof SysError)) throw e; }
    const table = this.prgTables.get(ctx);
    // A worker's DMA waits on the entry's generation (host/worker.ts).
    if (table !== undefined) this.engine.notifyWord(table * this.engine.layout.PAGE_SIZE + grpid * this.engine.layout.PRG_SIZE + this.engine.layout.PRG_GEN);
    const w = this.waiting.get(ctx);
    const e = w?.[grpid];
    if (e) { w![grpid] = undefined; e.resolve(code); }
  }

  /** The request a DMA sent (sent = true: tell the FAULT's readers) or joined: engine context ctx's group g. */
  pageRequestOf(ctx: number, g: number, sent: boolean): PendingPageRequest {
    let w = this.waiting.get(ctx);
    if (!w) this.waiting.set(ctx, w = []);
    let e = w[g];
    if (!e) {
      const L = this.engine.layout;
      const table = this.prgTables.get(ctx)! * L.PAGE_SIZE;
      const { pages, perm } = this.engine.prgGroup(table, g);
      const pasid = this.pasidOf(ctx);
      let resolve!: (code: number) => void;
      const response = new Promise<number>((r) => { resolve = r; });
      e = { req: { addr: pages[0]!, pages, pasid: pasid === 0 ? undefined : pasid, perm, grpid: g, response }, resolve };
      w[g] = e;
    }
    if (sent) this.priSignals.get(ctx)?.signal();
    return e.req;
  }

  private pasidOf(ctx: number): number {
    for (const [pasid, c] of this.contexts) if (c === ctx) return pasid;
    return 0;
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
    for (const w of this.watchers) w(f);
    return f;
  }

  private readonly watchers = new Set<DmaFaultSink>();
  /** Hear every refused DMA of this function (a device model's fault reporting); returns the function that stops it. */
  watchFaults(w: DmaFaultSink): () => void {
    this.watchers.add(w);
    return () => { this.watchers.delete(w); };
  }

  /** The engine context of a PASID, or -1 (blocked). */
  context(pasid: number): number { return pasid === 0 ? this.ctx0 : this.contexts.get(pasid) ?? -1; }

  /** Point the PASID's context at a domain; did 0 blocks (the context is freed, unless workers may hold it). */
  setContext(pasid: number, did: number): void {
    // The PASID's translations change: its ATC entries go first (the
    // device-TLB invalidation that follows a context-entry change).
    if (this.ats.size) this.ats.invalidate({ pasid });
    let ctx = this.contexts.get(pasid);
    if (did === 0) {
      if (ctx === undefined) return;
      this.disablePri(pasid);
      this.engine.ctxSet(ctx, 0, pasid);
      // A shared function's contexts stay its own: a worker may have read
      // the index, which must never come to name another function's.
      if (this.directory) return;
      this.contexts.delete(pasid);
      if (pasid === 0) this.ctx0 = -1;
      const prg = this.prgTables.get(ctx);
      if (prg !== undefined) {
        this.prgTables.delete(ctx);
        this.engine.putFrames(prg, this.engine.layout.PRG_BYTES / this.engine.layout.PAGE_SIZE);
      }
      this.pool.release(ctx);
      return;
    }
    if (ctx === undefined) {
      ctx = this.pool.alloc();
      this.contexts.set(pasid, ctx);
      if (pasid === 0) this.ctx0 = ctx;
      if (this.directory) publish(this.directory, pasid, ctx);
    }
    this.engine.ctxSet(ctx, did, pasid);
  }

  /** Shared-memory mode: the PASID -> context directory workers read (host/worker.ts), made on first use. */
  private directory: Int32Array | null = null;

  /**
   * The function's context directory for workers (shared-memory mode):
   * from now on its contexts are never freed, and every new one is
   * published here before it is used.
   */
  shareContexts(): SharedArrayBuffer {
    if (!this.directory) {
      this.directory = new Int32Array(new SharedArrayBuffer(CTX_DIRECTORY_SLOTS * 8)).fill(-1);
      for (const [pasid, ctx] of this.contexts) publish(this.directory, pasid, ctx);
    }
    return this.directory.buffer as SharedArrayBuffer;
  }
}

/**
 * A function's context directory (shared-memory mode): CTX_DIRECTORY_SLOTS
 * (pasid, ctx) pairs of i32, open addressing from pasid & (slots - 1), -1 a
 * free slot. A pair, once written (ctx first, then the key, seq-cst), never
 * changes: a reader that finds the key finds its context.
 */
export const CTX_DIRECTORY_SLOTS = 1024;

function publish(dir: Int32Array, pasid: number, ctx: number): void {
  for (let i = 0; i < CTX_DIRECTORY_SLOTS; i++) {
    const at = 2 * ((pasid + i) & (CTX_DIRECTORY_SLOTS - 1));
    if (Atomics.load(dir, at) !== -1) continue;
    Atomics.store(dir, at + 1, ctx);
    Atomics.store(dir, at, pasid);
    return;
  }
  throw new SysError('ENOSPC', `a shared function has at most ${CTX_DIRECTORY_SLOTS} PASID contexts`);
}

/** The context a directory names for a PASID, or -1 (blocked). */
export function directoryLookup(dir: Int32Array, pasid: number): number {
  for (let i = 0; i < CTX_DIRECTORY_SLOTS; i++) {
    const at = 2 * ((pasid + i) & (CTX_DIRECTORY_SLOTS - 1));
    const key = Atomics.load(dir, at);
    if (key === pasid) return Atomics.load(dir, at + 1);
    if (key === -1) return -1;
  }
  return -1;
}

const TWO32 = 0x1_0000_0000;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Views kept by Dma.copy (a power of two). */
export const DMA_VIEWS = 16;

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
  private readonly viewOf: (Uint8Array | null)[] = new Array<Uint8Array | null>(DMA_VIEWS).fill(null);
  private readonly viewAt = new Array<number>(DMA_VIEWS).fill(-1);
  private readonly views = new Array<Uint8Array>(DMA_VIEWS).fill(new Uint8Array(0));
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

  /**
   * Read `length` bytes at `iova`, waiting out I/O page faults: when a page
   * is missing (or lacks the permission) on an attachment with a FAULT
   * object and the function has PRI, the page request goes out, the DMA
   * waits for the VMM's response (struct iommu_hwpt_page_response on the
   * fault fd) and is retried. Rejects with the DmaFault when the answer is
   * INVALID (`response` set; detaching answers INVALID too), when the fault
   * is not one a page request can fix or nothing takes page requests (as
   * read would throw), or when a page faults again after maxPageRequests
   * SUCCESS answers (`gaveUp`). No byte moves before the whole DMA can.
   */
  async readAsync(iova: number | bigint, length: number, opts?: DmaAsyncOptions): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.transferAsync(iova, out, opts, false);
    return out;
  }

  /** Write `bytes` at `iova`, waiting out I/O page faults as readAsync does. */
  async writeAsync(iova: number | bigint, bytes: Uint8Array, opts?: DmaAsyncOptions): Promise<void> {
    await this.transferAsync(iova, bytes, opts, true);
  }

  /** The PASID's engine context; a PASID with none is blocked: that DmaFault, reported, is thrown. */
  private contextOf(iova: number | bigint, pasid: number, write: boolean): number {
    const ctx = this.dev.context(pasid);
    if (ctx < 0) throw this.dev.fault(new DmaFault(this.engine.layout.F_BLOCKED, BigInt(iova), pasid, write ? 'write' : 'read', 0));
    return ctx;
  }

  /** Translate one IOVA as the device would (through the IOTLB). */
  translate(iova: number | bigint, opts?: DmaOptions & { write?: boolean }): { pa: number; size: number; perm: number } {
    const pasid = opts?.pasid ?? 0;
    const write = opts?.write ?? false;
    const [lo, hi] = split64(checkIova(iova));
    const ctx = this.contextOf(iova, pasid, write);
    const L = this.engine.layout;
    const st = this.engine.translate(ctx, lo, hi, write ? L.PERM_W : L.PERM_R);
    if (st !== 0) throw this.dev.fault(new DmaFault(st, this.engine.lastFaultIova, pasid, write ? 'write' : 'read', this.engine.lastLevel));
    return { pa: this.engine.lastPaHi * SEG_SPAN + this.engine.lastPaLo, size: 2 ** this.engine.lastShift, perm: this.engine.lastPerm };
  }

  /**
   * Zero-copy: [iova, iova + length) as a view of the memory it lives in,
   * when its translation is one physically contiguous range in one segment
   * (else null: copy with read / write). A refused access throws DmaFault as
   * read / write would (no page request). Safe only until the next change of
   * translations (an unmap may hand the pages to someone else) or growth of
   * the engine's memory (which detaches an unshared buffer): use it at once
   * and keep nothing. Not offered to workers, whose DMA must stay inside
   * enter() / leave().
   */
  view(iova: number | bigint, length: number, opts?: DmaOptions & { write?: boolean }): Uint8Array | null {
    const pasid = opts?.pasid ?? 0;
    const write = opts?.write ?? false;
    checkIova(iova);
    if (!Number.isSafeInteger(length) || length <= 0 || length >= TWO32) throw new RangeError(`a DMA view is 1 byte to 4 GiB - 1, not ${length}`);
    const ctx = this.contextOf(iova, pasid, write);
    const L = this.engine.layout;
    const r = this.quiet(() => this.engine.dmaRanges(ctx, iova, length, write ? L.PERM_W : L.PERM_R));
    if (!Array.isArray(r)) throw this.dev.fault(new DmaFault(r.fault, r.iova, pasid, write ? 'write' : 'read', r.level));
    if (r.length !== 1) return null;
    const { seg, offset } = r[0]!;
    return this.phys.view(seg).subarray(offset, offset + length);
  }

  /** A round of readAsync / writeAsync whose fault may not be final: refused() reports nothing. */
  private muted = false;

  /**
   * Run `fn` with the engine's page requests off for this instance's DMA
   * faults (view, and the bounded retries of readAsync / writeAsync).
   */
  private quiet<T>(fn: () => T): T {
    this.engine.setPriOff(true);
    try {
      return fn();
    } finally {
      this.engine.setPriOff(false);
    }
  }

  private async transferAsync(iova: number | bigint, buf: Uint8Array, opts: DmaAsyncOptions | undefined, write: boolean): Promise<void> {
    const pasid = opts?.pasid ?? 0;
    const limit = opts?.maxPageRequests ?? DMA_PAGE_REQUESTS;
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`bad maxPageRequests ${limit}`);
    /** Page requests this DMA waited for, per page. */
    const asked = new Map<bigint, number>();
    let spent = limit === 0;
    for (;;) {
      let fault: DmaFault;
      try {
        // Once some page has had its requests, a round first runs without
        // page requests: a fault on a spent page is final.
        if (spent) {
          this.muted = true;
          try {
            this.quiet(() => this.transfer(iova, buf, pasid, write));
            return;
          } catch (e) {
            if (!(e instanceof DmaFault)) throw e;
            if (e.reason === 'blocked') throw e; // nothing attached: final, and reported where it was thrown
            // Final: reported now, as any refused DMA (not when the round runs again with page requests).
            if ((asked.get(e.iova & ~0xfffn) ?? 0) >= limit) { e.gaveUp = true; throw this.dev.fault(e); }
          } finally {
            this.muted = false;
          }
        }
        this.transfer(iova, buf, pasid, write);
        return;
      } catch (e) {
        if (!(e instanceof DmaFault) || e.gaveUp) throw e;
        fault = e;
      }
      const req = fault.pageRequest;
      if (!req) throw fault;
      for (const p of req.pages) {
        const n = (asked.get(p) ?? 0) + 1;
        asked.set(p, n);
        if (n >= limit) spent = true;
      }
      const code = await req.response;
      if (code !== IOMMUFD_PAGE_RESP_SUCCESS) {
        fault.response = code;
        throw fault;
      }
    }
  }

  /**
   * A refused DMA. The engine has already done what PRI does about it
   * (assembly/pri.ts; its outcome in the mailbox): sent a page request
   * group to the FAULT queue, joined an outstanding one, or found the queue
   * full; else the fault is reported as before. Returns the DmaFault to throw.
   */
  private refused(status: number, iova: bigint, pasid: number, write: boolean, level: number): DmaFault {
    const f = new DmaFault(status, iova, pasid, write ? 'write' : 'read', level);
    const L = this.engine.layout;
    const st = this.engine.priStatus;
    if (st === L.PRI_SENT || st === L.PRI_JOINED) {
      f.pageRequest = this.dev.pageRequestOf(this.dev.context(pasid), this.engine.priGroup, st === L.PRI_SENT);
      return f;
    }
    if (st === L.PRI_OVERFLOW) {
      // The full queue took nothing: the IOMMU answered Success itself (layout.ts "Page requests").
      const addr = iova & ~0xfffn;
      f.pageRequest = { addr, pages: [addr], pasid: pasid === 0 ? undefined : pasid, perm: write ? IOMMU_PGFAULT_PERM_WRITE : IOMMU_PGFAULT_PERM_READ, grpid: -1, response: Promise.resolve(IOMMUFD_PAGE_RESP_SUCCESS) };
      return f;
    }
    return this.muted ? f : this.dev.fault(f);
  }

  private transfer(iova: number | bigint, buf: Uint8Array, pasid: number, write: boolean): void {
    const len = buf.length;
    if (len === 0) return;
    const L = this.engine.layout;
    const access = write ? L.PERM_W : L.PERM_R;
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
    const ctx = this.contextOf(iova, pasid, write);
    if (len >= TWO32) throw new RangeError('a DMA is at most 4 GiB - 1 bytes');
    // Fast path: the whole transfer is one physically contiguous range.
    const pa = this.engine.dmaContiguous(ctx, lo, hi, len, access);
    if (pa >= 0) {
      if (pa < TWO32) {
        // Segment 0, the engine's memory: its view was just checked by dmaContiguous.
        this.copy(this.engine.bytesChecked, pa, buf, 0, len, write);
      } else {
        const seg = Math.floor(pa / TWO32);
        this.copy(this.phys.view(seg), pa - seg * TWO32, buf, 0, len, write);
      }
      return;
    }
    if (pa !== DMA_PIECES) throw this.refused(-pa, this.engine.lastFaultIova, pasid, write, this.engine.lastLevel);
    const ranges = this.engine.dmaRanges(ctx, iova, len, access);
    if (!Array.isArray(ranges)) throw this.refused(ranges.fault, ranges.iova, pasid, write, ranges.level);
    let at = 0;
    for (const r of ranges) {
      this.copy(this.phys.view(r.seg), r.offset, buf, at, r.length, write);
      at += r.length;
    }
  }

  /** Copy n bytes between buf[at..] and mem[offset..] (the bytes of the segment the range is in). */
  private copy(mem: Uint8Array, offset: number, buf: Uint8Array, at: number, n: number, write: boolean): void {
    if (write) { mem.set(at === 0 && n === buf.length ? buf : buf.subarray(at, at + n), offset); return; }
    const slot = (offset >>> 12) & (DMA_VIEWS - 1);
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
