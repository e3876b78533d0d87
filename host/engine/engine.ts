// The only module that calls the wasm engine. It turns the engine's raw
// u32 calls into a small typed API: 64-bit values are split into (lo, hi)
// halves here, engine error codes become SysErrors here, and the views over
// linear memory are re-derived here when a non-shared memory grows.

import { SysError } from '../uapi/errno.js';

/** The engine's raw exports (assembly/index.ts). */
interface Exports {
  init(limitPages: number, setsLog2: number, ways: number, domains: number, contexts: number): number;
  frames_alloc(n: number, align: number): number;
  frames_get(pfn: number, n: number): number;
  frames_put(pfn: number, n: number): number;
  frames_refcount(pfn: number): number;
  frames_available(): number;
  frames_free(): number;
  frames_in_memory(): number;
  seg_add(sizeLo: number, sizeHi: number): number;
  seg_remove(seg: number): number;
  pt_create(levels: number, sizes: number, fmt: number): number;
  pt_destroy(did: number): number;
  pt_create_nested(parent: number, rootLo: number, rootHi: number, levels: number, flags: number): number;
  pt_create_nested_arm(parent: number, ttbLo: number, ttbHi: number, cfg: number): number;
  pt_map(did: number, iovaLo: number, iovaHi: number, paLo: number, paHi: number, lenLo: number, lenHi: number, perm: number): number;
  pt_unmap(did: number, iovaLo: number, iovaHi: number, lenLo: number, lenHi: number): number;
  pt_walk(did: number, iovaLo: number, iovaHi: number): number;
  pt_mapped(did: number): void;
  pt_tables(did: number): number;
  ctx_set(ctx: number, did: number, pasid: number): number;
  ctx_domain(ctx: number): number;
  translate(ctx: number, iovaLo: number, iovaHi: number, access: number): number;
  translate_batch(ctx: number, n: number, access: number): number;
  dma_ranges(ctx: number, iovaLo: number, iovaHi: number, len: number, access: number): number;
  iotlb_flush_all(): void;
  iotlb_flush_domain(did: number): void;
  iotlb_flush_range(did: number, iovaLo: number, iovaHi: number, lenLo: number, lenHi: number): void;
  iotlb_count(did: number): number;
  pt_set_dirty_tracking(did: number, enable: number): number;
  pt_dirty_tracking(did: number): number;
  pt_read_dirty(did: number, iovaLo: number, iovaHi: number, lenLo: number, lenHi: number, pageShift: number, clear: number): number;
}

/** The layout constants the engine exports (assembly/layout.ts). */
export interface Layout {
  PAGE_SIZE: number; MAILBOX: number; BATCH_IN: number; BATCH_OUT: number; BATCH_MAX: number;
  CTRL_BASE: number; CTRL_FRAME_BASE: number; CTRL_STAT_HITS: number; CTRL_STAT_MISSES: number;
  CTRL_STAT_WALKS: number; CTRL_STAT_FAULTS: number; CTRL_STAT_INVALIDATIONS: number;
  MB_PA_LO: number; MB_PA_HI: number; MB_SHIFT: number; MB_PERM: number; MB_LEVEL: number;
  MB_COVERED: number; MB_FAULT_LO: number; MB_FAULT_HI: number;
  SZ_4K: number; SZ_2M: number; SZ_1G: number; PERM_R: number; PERM_W: number;
  FMT_VTD_SL: number; FMT_ARM_S2: number; FMT_AMD_V1: number; FMT_X86_S1: number; FMT_ARM_S1: number; F_ACCESS: number; F_ADDR_SIZE: number; F_STAGE2: number;
  ARM_S1_GRANULE_SHIFT: number; ARM_S1_IPS_SHIFT: number; ARM_S1_HA: number; ARM_S1_HD: number; ARM_S1_AFFD: number;
  F_NONE: number; F_BLOCKED: number; F_ADDR_WIDTH: number; F_NOT_PRESENT: number; F_READ: number;
  F_WRITE: number; F_RESERVED: number; F_TABLE_ADDR: number; F_OUT_OF_SEGMENT: number;
  ERR_NOMEM: number; ERR_EXISTS: number; ERR_INVAL: number; ERR_FULL: number; ERR_NOENT: number;
  [name: string]: number;
}

export interface EngineOptions {
  /** Most bytes of linear memory the engine may grow to (default 1 GiB, at most 4 GiB). */
  memoryLimit?: number;
  /** IOTLB entries (a power of two, default 4096) and ways per set (default 4). */
  iotlbEntries?: number;
  iotlbWays?: number;
  /** Page tables (domains) and device contexts that may exist at once (default 4096 each). */
  domains?: number;
  contexts?: number;
}

/** The stage-1 fields of an Arm CD a nested walk obeys (SMMUv3 5.4). */
export interface ArmS1Config {
  /** T0SZ: the input is 64 - t0sz bits. */
  readonly t0sz: number;
  /** Granule in bytes: 4096, 16384 or 65536. */
  readonly granule: number;
  /** Output (IPA) size in bits. */
  readonly ips: number;
  /** Hardware access flag, dirty state, access-flag faults disabled. */
  readonly ha: boolean;
  readonly hd: boolean;
  readonly affd: boolean;
}

/** A walk's answer: the leaf or the fault. */
export type Walk =
  | { ok: true; pa: bigint; size: number; perm: number }
  | { ok: false; fault: number; level: number };

/** A physical range of a DMA: segment, offset in it, length. */
export interface PhysRange { seg: number; offset: number; length: number }

const TWO32 = 0x1_0000_0000;
const MASK32 = 0xffffffffn;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Split a non-negative integer below 2^64 into u32 halves. */
export function split64(v: number | bigint): [number, number] {
  halves(v);
  return [LO, HI];
}

// The halves of the last halves() call (no array per call).
let LO = 0, HI = 0;
/**
 * Split into LO and HI. A bigint below 2^53 goes through one Number() and a
 * division: Number() of BigInt & and >> results costs three times as much,
 * and a double's % is a libm call.
 */
function halves(v: number | bigint): void {
  if (typeof v === 'bigint') {
    if (v < 0n || v > MAX_SAFE) { LO = Number(v & MASK32); HI = Number((v >> 32n) & MASK32); return; }
    v = Number(v);
  }
  const hi = Math.floor(v / TWO32);
  LO = (v - hi * TWO32) >>> 0;
  HI = hi >>> 0;
}

export class Engine {
  readonly memory: WebAssembly.Memory;
  readonly layout: Layout;
  readonly limitBytes: number;
  private readonly x: Exports;
  private u8!: Uint8Array;
  private u32!: Uint32Array;
  private bIn!: Uint32Array;
  private bOut!: Uint32Array;

  private constructor(instance: WebAssembly.Instance, memory: WebAssembly.Memory, limitBytes: number) {
    this.memory = memory;
    this.limitBytes = limitBytes;
    const layout: Record<string, number> = {};
    const exp: Record<string, unknown> = {};
    for (const [name, v] of Object.entries(instance.exports)) {
      if (v instanceof WebAssembly.Global) layout[name] = Number(v.value);
      else exp[name] = v;
    }
    // Built by keyed stores, these objects are in dictionary mode (a hash
    // lookup per export call and per constant read on the hot paths); a
    // copy of each is not.
    this.layout = { ...layout } as Layout;
    this.x = { ...exp } as unknown as Exports; // fast properties, as for the layout
    this.refresh();
  }

  /** Instantiate the engine over a new memory and lay out its tables. */
  static create(module: WebAssembly.Module, opts: EngineOptions = {}): Engine {
    const limit = opts.memoryLimit ?? 1 << 30;
    if (!(limit >= 4 << 20 && limit <= 4 * 2 ** 30)) throw new RangeError('memoryLimit must be between 4 MiB and 4 GiB');
    const entries = opts.iotlbEntries ?? 4096;
    const ways = opts.iotlbWays ?? 4;
    if (!(ways >= 1 && ways <= 16) || entries % ways !== 0) throw new RangeError('iotlbWays must be 1..16 and divide iotlbEntries');
    const setsLog2 = Math.log2(entries / ways);
    if (!Number.isInteger(setsLog2)) throw new RangeError('iotlbEntries / iotlbWays must be a power of two');
    const limitPages = Math.floor(limit / 65536);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: limitPages });
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const engine = new Engine(instance, memory, limitPages * 65536);
    const r = engine.x.init(limitPages, setsLog2, ways, opts.domains ?? 4096, opts.contexts ?? 4096);
    if (r !== 0) engine.fail(r, 'engine init');
    engine.refresh();
    return engine;
  }

  /** Views over linear memory; re-derived in one place when the buffer changes (growth). */
  private refresh(): void {
    const buffer = this.memory.buffer;
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    const L = this.layout;
    this.bIn = this.u32.subarray(L.BATCH_IN >>> 2, (L.BATCH_IN >>> 2) + 2 * L.BATCH_MAX);
    this.bOut = this.u32.subarray(L.BATCH_OUT >>> 2, (L.BATCH_OUT >>> 2) + 2 * L.BATCH_MAX);
  }

  /**
   * Growing a non-shared memory detaches its old buffer, and every view over
   * it reads as empty: that is the cheap test (memory.buffer is not free).
   */
  private stale(): boolean { return this.u8.byteLength === 0; }

  /** The current byte view of linear memory (segment 0). */
  get bytes(): Uint8Array {
    if (this.stale()) this.refresh();
    return this.u8;
  }

  private words(): Uint32Array {
    if (this.stale()) this.refresh();
    return this.u32;
  }

  private mb(offset: number): number { return this.words()[(this.layout.MAILBOX + offset) >>> 2]; }

  private fail(code: number, what: string): never {
    const L = this.layout;
    const name = code === L.ERR_NOMEM ? 'ENOMEM' : code === L.ERR_EXISTS ? 'EEXIST' : code === L.ERR_FULL ? 'ENOSPC'
      : code === L.ERR_NOENT ? 'ENOENT' : 'EINVAL';
    throw new SysError(name, `${what}: ${name}`);
  }

  private check(r: number, what: string): number {
    if (r < 0) this.fail(r, what);
    return r;
  }

  // ---- frames -------------------------------------------------------------

  /** n contiguous zeroed frames, the first aligned to `align` frames; returns its pfn. */
  allocFrames(n: number, align = 1): number { return this.check(this.x.frames_alloc(n, align), 'frames_alloc'); }
  /** Frame allocation that reports ENOMEM as -1 instead of throwing (for fallbacks). */
  tryAllocFrames(n: number, align = 1): number {
    const r = this.x.frames_alloc(n, align);
    return r < 0 ? -1 : r;
  }
  getFrames(pfn: number, n: number): void { this.check(this.x.frames_get(pfn, n), 'frames_get'); }
  putFrames(pfn: number, n: number): void { this.check(this.x.frames_put(pfn, n), 'frames_put'); }
  refcount(pfn: number): number { return this.x.frames_refcount(pfn); }
  /** Free frames now plus those growth up to the limit would add. */
  framesAvailable(): number { return this.x.frames_available(); }
  framesFree(): number { return this.x.frames_free(); }
  framesInMemory(): number { return this.x.frames_in_memory(); }
  get frameBase(): number { return this.words()[(this.layout.CTRL_BASE + this.layout.CTRL_FRAME_BASE) >>> 2]; }

  // ---- segments -----------------------------------------------------------

  addSegment(size: number): number { const [lo, hi] = split64(size); return this.check(this.x.seg_add(lo, hi), 'seg_add'); }
  removeSegment(seg: number): void { this.check(this.x.seg_remove(seg), 'seg_remove'); }

  // ---- I/O page tables ------------------------------------------------------

  /** A new empty table in entry format `format` (FMT_VTD_SL, FMT_ARM_S2, FMT_AMD_V1); returns its domain id. */
  ptCreate(levels: number, sizes: number, format = this.layout.FMT_VTD_SL): number {
    return this.check(this.x.pt_create(levels, sizes, format), 'pt_create');
  }
  ptDestroy(did: number): void { this.check(this.x.pt_destroy(did), 'pt_destroy'); }
  /**
   * A nested domain: the guest's x86-64 first-stage table at GPA `root`
   * (`levels` 4 or 5) over the stage-2 domain `parent` (VT-d nesting).
   * Its translations walk both; F_STAGE2 marks a fault of the stage-2 part.
   */
  ptCreateNested(parent: number, root: bigint | number, levels: number, flags = 0): number {
    const [lo, hi] = split64(root);
    return this.check(this.x.pt_create_nested(parent, lo, hi, levels, flags), 'pt_create_nested');
  }
  /**
   * A nested domain for an Arm SMMUv3 context descriptor: the guest's
   * VMSAv8-64 stage-1 table at IPA `ttb0` walked through the stage-2 domain
   * `parent`. Returns the domain id; a T0SZ, granule or IPS the walker does
   * not take (assembly/nested_arm.ts) is EINVAL.
   */
  ptCreateNestedArm(parent: number, ttb0: bigint | number, cd: ArmS1Config): number {
    const L = this.layout;
    const cfg = cd.t0sz | (Math.log2(cd.granule) << L.ARM_S1_GRANULE_SHIFT) | (cd.ips << L.ARM_S1_IPS_SHIFT) |
      (cd.ha ? L.ARM_S1_HA : 0) | (cd.hd ? L.ARM_S1_HD : 0) | (cd.affd ? L.ARM_S1_AFFD : 0);
    const [lo, hi] = split64(ttb0);
    return this.check(this.x.pt_create_nested_arm(parent, lo, hi, cfg), 'pt_create_nested_arm');
  }
  ptMap(did: number, iova: bigint | number, pa: bigint | number, length: bigint | number, perm: number): void {
    halves(iova); const il = LO, ih = HI;
    halves(pa); const pl = LO, ph = HI;
    halves(length);
    this.check(this.x.pt_map(did, il, ih, pl, ph, LO, HI, perm), 'pt_map');
  }
  ptUnmap(did: number, iova: bigint | number, length: bigint | number): void {
    halves(iova); const il = LO, ih = HI;
    halves(length);
    this.check(this.x.pt_unmap(did, il, ih, LO, HI), 'pt_unmap');
  }
  ptWalk(did: number, iova: bigint | number): Walk {
    const [il, ih] = split64(iova);
    const st = this.x.pt_walk(did, il, ih);
    if (st !== 0) return { ok: false, fault: st, level: this.mb(this.layout.MB_LEVEL) };
    const L = this.layout;
    return {
      ok: true,
      pa: (BigInt(this.mb(L.MB_PA_HI)) << 32n) | BigInt(this.mb(L.MB_PA_LO)),
      size: 2 ** this.mb(L.MB_SHIFT),
      perm: this.mb(L.MB_PERM),
    };
  }
  ptMapped(did: number): number {
    this.x.pt_mapped(did);
    return this.mb(this.layout.MB_PA_HI) * TWO32 + this.mb(this.layout.MB_PA_LO);
  }
  ptTables(did: number): number { return this.x.pt_tables(did); }

  // ---- contexts and translation ---------------------------------------------

  ctxSet(ctx: number, did: number, pasid: number): void { this.check(this.x.ctx_set(ctx, did, pasid), 'ctx_set'); }
  ctxDomain(ctx: number): number { return this.x.ctx_domain(ctx); }

  /**
   * Translate one IOVA through the IOTLB. Returns 0 and leaves the result in
   * lastPaLo, lastPaHi, lastShift and lastPerm, or a fault status (lastLevel, lastFaultIova).
   */
  translate(ctx: number, iovaLo: number, iovaHi: number, access: number): number {
    return this.x.translate(ctx, iovaLo, iovaHi, access);
  }
  get lastPaLo(): number { return this.mb(this.layout.MB_PA_LO); }
  get lastPaHi(): number { return this.mb(this.layout.MB_PA_HI); }
  get lastShift(): number { return this.mb(this.layout.MB_SHIFT); }
  get lastPerm(): number { return this.mb(this.layout.MB_PERM); }
  get lastLevel(): number { return this.mb(this.layout.MB_LEVEL); }
  get lastFaultIova(): bigint { return (BigInt(this.mb(this.layout.MB_FAULT_HI)) << 32n) | BigInt(this.mb(this.layout.MB_FAULT_LO)); }

  /** The batch areas as u32 views: fill `batchIn` with (lo, hi) pairs, read `batchOut`. */
  get batchIn(): Uint32Array { if (this.stale()) this.refresh(); return this.bIn; }
  get batchOut(): Uint32Array { if (this.stale()) this.refresh(); return this.bOut; }
  /** Translate batchIn[0..2n) into batchOut; returns the number of faults. */
  translateBatch(ctx: number, n: number, access: number): number { return this.x.translate_batch(ctx, n, access); }

  /**
   * Translate a whole DMA into physical ranges, or report its fault. Every
   * page is translated before any byte moves, so a fault touches no memory.
   */
  dmaRanges(ctx: number, iova: bigint | number, length: number, access: number): PhysRange[] | { fault: number; level: number; iova: bigint } {
    const ranges: PhysRange[] = [];
    let [lo, hi] = split64(iova);
    let left = length;
    const outBase = this.layout.BATCH_OUT >>> 2;
    while (left > 0) {
      // The engine takes a u32 length: longer DMAs go in pieces of 2 GiB.
      const n = this.x.dma_ranges(ctx, lo, hi, Math.min(left, 0x8000_0000), access);
      if (n < 0) return { fault: -n, level: this.lastLevel, iova: this.lastFaultIova };
      const w = this.words();
      for (let i = 0, p = outBase; i < n; i++, p += 3) ranges.push({ offset: w[p], seg: w[p + 1], length: w[p + 2] });
      const covered = this.mb(this.layout.MB_COVERED);
      left -= covered;
      lo += covered;
      if (lo >= TWO32) { lo -= TWO32; hi = (hi + 1) >>> 0; }
    }
    return ranges;
  }

  /** The raw dma_ranges call for hot paths: count, or -fault; triples in batchOut. */
  dmaRangesRaw(ctx: number, iovaLo: number, iovaHi: number, length: number, access: number): number {
    return this.x.dma_ranges(ctx, iovaLo, iovaHi, length, access);
  }
  get dmaCovered(): number { return this.mb(this.layout.MB_COVERED); }
  /**
   * After dmaRangesRaw returned 1: the range's physical address (segment *
   * 2^32 + offset) if it covers all `length` bytes, else -1. One view check
   * for both words (the DMA hot path).
   */
  dmaSingle(length: number): number {
    const w = this.words(), L = this.layout;
    if (w[(L.MAILBOX + L.MB_COVERED) >>> 2] !== length) return -1;
    const p = L.BATCH_OUT >>> 2;
    return w[p + 1] * TWO32 + w[p];
  }

  // ---- IOTLB ------------------------------------------------------------------

  flushAll(): void { this.x.iotlb_flush_all(); }
  flushDomain(did: number): void { this.x.iotlb_flush_domain(did); }
  flushRange(did: number, iova: bigint | number, length: bigint | number): void {
    const [il, ih] = split64(iova), [ll, lh] = split64(length);
    this.x.iotlb_flush_range(did, il, ih, ll, lh);
  }
  /** Live IOTLB entries of a domain. */
  iotlbCount(did: number): number { return this.x.iotlb_count(did); }

  /** Counters since creation. */
  stats(): { hits: number; misses: number; walks: number; faults: number; invalidations: number } {
    const L = this.layout;
    const w = this.words();
    const c = (off: number) => w[(L.CTRL_BASE + off) >>> 2] + w[((L.CTRL_BASE + off) >>> 2) + 1] * TWO32;
    return {
      hits: c(L.CTRL_STAT_HITS), misses: c(L.CTRL_STAT_MISSES), walks: c(L.CTRL_STAT_WALKS),
      faults: c(L.CTRL_STAT_FAULTS), invalidations: c(L.CTRL_STAT_INVALIDATIONS),
    };
  }

  // ---- Dirty tracking (VT-d second-stage A/D) ------------------------------------
  //
  // The engine sets D in a leaf when a device write (PERM_W through translate,
  // translateBatch or dmaRanges) goes through it while the domain tracks dirty
  // pages (its SSADE). Clearing D drops the IOTLB entries of those leaves in
  // the engine, so the next write sets D again: the caller flushes nothing.


  /** Turn hardware dirty tracking of a domain on or off. Enabling clears every D bit first (as iommufd does). */
  ptSetDirtyTracking(did: number, enable: boolean): void {
    this.check(this.x.pt_set_dirty_tracking(did, enable ? 1 : 0), 'pt_set_dirty_tracking');
  }

  /** Whether the domain tracks dirty pages (ENOENT for no such domain). */
  ptDirtyTracking(did: number): boolean {
    return this.check(this.x.pt_dirty_tracking(did), 'pt_dirty_tracking') === 1;
  }

  /**
   * The dirty bitmap of [iova, iova + length): bit n (u64 little-endian
   * words, as Linux's iommufd bitmap: byte n >> 3, bit n & 7) is set when a
   * leaf covering any byte of page n (pageSize bytes from iova) is dirty.
   * Clears the D bits it reports when `clear` (a leaf the range only cuts
   * keeps its D). The array holds whole u64 words: ceil(length / pageSize / 64) * 8 bytes.
   * EINVAL: pageSize not a power of two >= 4096, length 0, iova or length not
   * pageSize-aligned, range past 2^64 or past the table's address width.
   */
  ptReadDirty(did: number, iova: bigint | number, length: bigint | number, pageSize: number, clear: boolean): Uint8Array {
    const { nbits } = this.dirtyArgs(iova, length, pageSize);
    const out = new Uint8Array(Number((nbits + 63n) / 64n) * 8);
    this.ptReadDirtyInto(did, iova, length, pageSize, clear, out);
    return out;
  }

  /**
   * ptReadDirty into a caller's bitmap from bit `bitOffset` on: bits of dirty
   * pages are set, no bit is cleared (Linux's iova_bitmap sets bits only;
   * zero the bitmap first). `out` needs ceil((bitOffset + pages) / 8) bytes.
   */
  ptReadDirtyInto(did: number, iova: bigint | number, length: bigint | number, pageSize: number, clear: boolean,
    out: Uint8Array, bitOffset = 0): void {
    const { shift, nbits } = this.dirtyArgs(iova, length, pageSize);
    if (!(Number.isSafeInteger(bitOffset) && bitOffset >= 0) || BigInt(out.length) * 8n < BigInt(bitOffset) + nbits) {
      throw new RangeError('ptReadDirtyInto: the bitmap is too small for the range');
    }
    let cur = BigInt(iova);
    let left = BigInt(length);
    let bit = bitOffset;
    const base = this.layout.BATCH_OUT;
    while (left > 0n) {
      const [il, ih] = split64(cur), [ll, lh] = split64(left);
      const pages = this.check(this.x.pt_read_dirty(did, il, ih, ll, lh, shift, clear ? 1 : 0), 'pt_read_dirty');
      // OR the piece's bits into out at bit `bit` (any alignment): byte-wise, shifted.
      const src = this.bytes;
      const s = bit & 7;
      let d = (bit - s) / 8;
      const nbytes = Math.ceil(pages / 8);
      for (let j = 0; j < nbytes; j++, d++) {
        const v = src[base + j]!;
        if (v === 0) continue;
        out[d] = out[d]! | ((v << s) & 0xff);
        if (s !== 0 && v >>> (8 - s) !== 0) out[d + 1] = out[d + 1]! | (v >>> (8 - s));
      }
      const step = BigInt(pages) << BigInt(shift);
      cur += step;
      left -= step;
      bit += pages;
    }
  }

  /** Checks of ptReadDirty's arguments: page shift and bit count, or EINVAL. */
  private dirtyArgs(iova: bigint | number, length: bigint | number, pageSize: number): { shift: number; nbits: bigint } {
    const shift = Math.log2(pageSize);
    const ok = (v: bigint | number) => typeof v === 'bigint' || Number.isSafeInteger(v);
    if (!Number.isInteger(shift) || shift < 12 || shift > 63 || !ok(iova) || !ok(length)) this.fail(this.layout.ERR_INVAL, 'pt_read_dirty');
    const i = BigInt(iova), l = BigInt(length), ps = 1n << BigInt(shift);
    if (i < 0n || l <= 0n || i % ps !== 0n || l % ps !== 0n || i + l > 1n << 64n) this.fail(this.layout.ERR_INVAL, 'pt_read_dirty');
    return { shift, nbits: l / ps };
  }
}

