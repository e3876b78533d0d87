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
  pt_create_arm_s2(granuleShift: number, ias: number, oas: number, sizes: number): number;
  pt_destroy(did: number): number;
  pt_create_nested(parent: number, rootLo: number, rootHi: number, levels: number, flags: number): number;
  pt_create_nested_arm(parent: number, ttbLo: number, ttbHi: number, cfg: number): number;
  ring_create(base: number, depth: number, dataBytes: number): number;
  ring_destroy(id: number): number;
  ring_push(id: number, a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number): number;
  ctx_route(ctx: number, id: number, tag: number): number;
  snapshot_prepare(): void;
  resume(): number;
  ctx_pri(ctx: number, id: number, devid: number, table: number): number;
  pri_push(id: number, n: number): number;
  pri_respond(ctx: number, g: number, code: number): number;
  instance_bytes(): number;
  attach(region: number): number;
  instance_set(slot: number, iotlb: number): number;
  mailbox_base(): number;
  batch_in_base(): number;
  batch_out_base(): number;
  stats_base(): number;
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
  SZ_4K: number; SZ_2M: number; SZ_1G: number; PERM_R: number; PERM_W: number; PT_HAW_SHIFT: number; PT_CONCAT_SHIFT: number; PT_GRANULE_SHIFT: number; PT_IAS_SHIFT: number;
  FMT_VTD_SL: number; FMT_ARM_S2: number; FMT_AMD_V1: number; FMT_X86_S1: number; FMT_ARM_S1: number; F_ACCESS: number; F_ADDR_SIZE: number; F_STAGE2: number;
  CTRL_RINGS: number; RING_SIZE: number; RING_LOCK: number; RING_BASE: number; RING_DEPTH: number; RING_HEAD: number;
  RING_COUNT: number; RING_SEQ: number; RING_LOST: number; RING_LOST_SEQ: number; RING_HEADER: number;
  INST_MAX: number; IO_BYTES: number; PRIV_BYTES: number; CTRL_LOCK_WRITER: number; CTRL_LOCK_INFLIGHT: number; LOCK_STRIDE: number;
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
  /**
   * Over a shared `WebAssembly.Memory` (a SharedArrayBuffer), so that
   * workers can attach (`shareWorker`, `Engine.attach`). Needs the engine's
   * shared build (build/shared.wasm) and, in browsers, cross-origin isolation.
   */
  shared?: boolean;
}

/**
 * What a worker needs to attach to an owner's engine (structured-cloneable:
 * post it with the compiled module to a Worker).
 */
export interface WorkerShare {
  readonly memory: WebAssembly.Memory;
  /** The worker's slot (0..INST_MAX-1) and the offset of its zeroed frames. */
  readonly slot: number;
  readonly region: number;
  readonly limitBytes: number;
}

/**
 * The exports that change translations: in shared-memory mode with workers
 * attached, the owner calls them under the writer lock (layout.ts).
 */
const WRITERS = [
  'seg_add', 'seg_remove', 'pt_create', 'pt_create_arm_s2', 'pt_destroy', 'pt_create_nested', 'pt_create_nested_arm', 'pt_map', 'pt_unmap',
  'ctx_set', 'iotlb_flush_all', 'iotlb_flush_domain', 'iotlb_flush_range', 'pt_set_dirty_tracking', 'pt_read_dirty',
] as const;
/** How long the owner waits for a worker to leave a translation before it calls the worker stuck. */
const STUCK_MS = 2000;

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

/** What Engine.onInvalidate listeners hear. 'flush' without a range is the whole domain. */
export type EngineEvent =
  | { kind: 'flush-all' }
  // The range as the caller gave it: a listener with nothing cached makes no BigInt of it.
  | { kind: 'flush'; did: number; iova?: bigint | number; length?: bigint | number }
  | { kind: 'destroy'; did: number }
  | { kind: 'nested'; did: number; parent: number };

/** A walk's answer: the leaf or the fault. */
export type Walk =
  | { ok: true; pa: bigint; size: number; perm: number }
  | { ok: false; fault: number; level: number };

/** A physical range of a DMA: segment, offset in it, length. */
export interface PhysRange { seg: number; offset: number; length: number }

const TWO32 = 0x1_0000_0000;
const MASK32 = 0xffffffffn;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The default of Engine.onInvalidate's `holding`: the listener hears every flush. */
const always = (): boolean => true;

/** Engine.dmaContiguous: the DMA takes more than one physical range (below every -status). */
export const DMA_PIECES = -0x1_0000_0000;

/** Split a non-negative integer below 2^64 into u32 halves. */
export function split64(v: number | bigint): [number, number] {
  halves(v);
  return [HALF[0], HALF[1]];
}

// The halves of the last halves() call, [lo, hi]: no array per call, and
// no HeapNumber either (a module `let` holds a tagged value, so a half at
// or above 2^30 was boxed on every call).
const HALF = new Uint32Array(2);
/**
 * Split into HALF[0] (lo) and HALF[1] (hi). A bigint below 2^53 goes
 * through one Number() and a division: Number() of BigInt & and >> results
 * costs three times as much, and a double's % is a libm call.
 */
function halves(v: number | bigint): void {
  // A Uint32Array store is ToUint32: of a non-negative double, its value
  // mod 2^32, truncated (the halves without Math.floor).
  if (typeof v === 'number' && v >= 0) { HALF[0] = v; HALF[1] = v / TWO32; return; }
  halvesOther(v);
}
/** halves() of a bigint or a negative number: apart, so that halves() stays small enough to inline everywhere. */
function halvesOther(v: number | bigint): void {
  if (typeof v === 'bigint') {
    if (v < 0n || v > MAX_SAFE) { HALF[0] = Number(v & MASK32); HALF[1] = Number((v >> 32n) & MASK32); return; }
    v = Number(v);
    HALF[0] = v; HALF[1] = v / TWO32;
    return;
  }
  const hi = Math.floor(v / TWO32);
  HALF[0] = v - hi * TWO32;
  HALF[1] = hi;
}

/**
 * The engine's window on embedder segments (assembly/nested.ts seg_load /
 * seg_store): guest tables in an emulator's memory are read and written
 * back 8 bytes at a time. `view` is set by whoever knows the segments.
 */
class SegmentAccess {
  view: (seg: number) => Uint8Array | null = () => null;
  engineBytes: () => Uint8Array = () => new Uint8Array(0);
  /** Copy 8 bytes at (seg, off) to engine memory at dst: 1, or 0 past the segment. */
  load = (seg: number, off: number, dst: number): number => {
    const v = this.view(seg);
    if (!v || off + 8 > v.length) return 0;
    this.engineBytes().set(v.subarray(off, off + 8), dst);
    return 1;
  };
  store = (seg: number, off: number, src: number): void => {
    const v = this.view(seg);
    if (v && off + 8 <= v.length) v.set(this.engineBytes().subarray(src, src + 8), off);
  };
}

function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory, ext: SegmentAccess): WebAssembly.Instance {
  try {
    return new WebAssembly.Instance(module, { env: { memory, seg_load: ext.load, seg_store: ext.store } });
  } catch (e) {
    // A memory import must match in sharedness: build/shared.wasm for a shared memory.
    if (e instanceof WebAssembly.LinkError) {
      const want = memory.buffer instanceof ArrayBuffer ? 'release or debug' : 'shared';
      throw new WebAssembly.LinkError(`${e.message} (this memory needs the engine's ${want} build)`);
    }
    throw e;
  }
}

export class Engine {
  readonly memory: WebAssembly.Memory;
  readonly layout: Layout;
  readonly limitBytes: number;
  /** Over a SharedArrayBuffer (shared-memory mode). */
  readonly shared: boolean;
  /** -1 for the owner; a worker instance's slot otherwise. */
  readonly slot: number;
  private x: Exports;
  private u8!: Uint8Array;
  private u32!: Uint32Array;
  private bIn!: Uint32Array;
  private bOut!: Uint32Array;
  // This instance's mailbox, batch areas and counters (byte offsets).
  private readonly mbBase: number;
  private readonly bInBase: number;
  private readonly bOutBase: number;
  private readonly statsBase: number;
  /** The lock words of the control block (shared-memory mode), else null. */
  private sync: Int32Array | null = null;
  /** Owner: worker slots in use, and their frames. */
  private readonly workers = new Map<number, { region: number; pages: number }>();

  /** The engine's window on embedder segments (its seg_load / seg_store imports). */
  private readonly ext = new SegmentAccess();

  private constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, limitBytes: number, slot: number, region: number) {
    const instance = instantiate(module, memory, this.ext);
    this.ext.engineBytes = () => this.bytes;
    this.memory = memory;
    this.limitBytes = limitBytes;
    this.shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
    this.slot = slot;
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
    this.translate = this.x.translate;
    this.translateBatch = this.x.translate_batch;
    if (slot >= 0 && this.x.attach(region) !== 0) throw new Error('Engine.attach: the memory holds no engine of this layout version');
    this.mbBase = this.x.mailbox_base();
    this.bInBase = this.x.batch_in_base();
    this.bOutBase = this.x.batch_out_base();
    this.statsBase = this.x.stats_base();
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
    const memory = new WebAssembly.Memory({ initial: 1, maximum: limitPages, shared: opts.shared === true });
    const engine = new Engine(module, memory, limitPages * 65536, -1, 0);
    const r = engine.x.init(limitPages, setsLog2, ways, opts.domains ?? 4096, opts.contexts ?? 4096);
    if (r !== 0) engine.fail(r, 'engine init');
    engine.refresh();
    return engine;
  }

  /**
   * An owner over a copy of another owner's memory (host/snapshot.ts):
   * a memory of `bytes` (the snapshot's length, a multiple of 64 KiB) that
   * `fill` writes, then `resume` takes the tables, IOTLB, rings and
   * allocator as they were. EINVAL if the memory holds no engine of this
   * layout version.
   */
  static restore(module: WebAssembly.Module, limitBytes: number, bytes: number, shared: boolean, fill: (mem: Uint8Array) => void): Engine {
    const limitPages = Math.floor(limitBytes / 65536);
    if (!(bytes % 65536 === 0 && bytes >= 65536 && bytes <= limitPages * 65536)) throw new SysError('EINVAL', 'snapshot: bad engine memory size');
    const memory = new WebAssembly.Memory({ initial: bytes / 65536, maximum: limitPages, shared });
    fill(new Uint8Array(memory.buffer));
    const engine = new Engine(module, memory, limitPages * 65536, -1, 0);
    if (engine.x.resume() !== 0) throw new SysError('EINVAL', 'snapshot: the memory holds no engine of this layout version');
    return engine;
  }

  /**
   * The bytes a snapshot copies: linear memory, with the allocator's
   * globals written into it first. EBUSY while workers share the engine
   * (their translations and private regions are theirs, not state to keep).
   * Copy the view before the engine runs again.
   */
  snapshotBytes(): Uint8Array {
    if (this.slot >= 0 || this.workers.size > 0) throw new SysError('EBUSY', 'snapshot: release the workers first');
    this.x.snapshot_prepare();
    return this.bytes;
  }

  /**
   * A worker's instance over the owner's shared memory (`share` from the
   * owner's shareWorker). It translates and reads the owner's tables; it
   * changes none (no map, unmap or flush from here). Every translation, and
   * every use of its result (a DMA's copy), goes between enter() and leave().
   */
  static attach(module: WebAssembly.Module, share: WorkerShare): Engine {
    return new Engine(module, share.memory, share.limitBytes, share.slot, share.region);
  }

  /**
   * Where the bytes of embedder segment `seg` are (null: unknown), for walks
   * of guest tables that lie there (PhysMem and WorkerHost set it).
   */
  setSegmentView(view: (seg: number) => Uint8Array | null): void { this.ext.view = view; }

  // ---- Shared-memory mode (assembly/layout.ts: the writer flag and in-flight words) ----

  /**
   * Owner: give a worker an instance slot: zeroed frames for its mailbox,
   * batch areas, caches and IOTLB, registered so that every invalidation
   * reaches its IOTLB. From now on the owner's table changes wait for
   * workers to leave their translations.
   */
  shareWorker(): WorkerShare {
    if (!this.shared || this.slot >= 0) throw new Error('shareWorker: only the owner of a shared-memory engine shares it');
    const L = this.layout;
    let slot = 0;
    while (this.workers.has(slot)) slot++;
    if (slot >= L.INST_MAX) throw new SysError('ENOSPC', 'shareWorker: every worker slot is taken');
    const pages = Math.ceil(this.x.instance_bytes() / L.PAGE_SIZE);
    const region = this.allocFrames(pages, 16) * L.PAGE_SIZE;
    this.check(this.x.instance_set(slot, region + L.IO_BYTES + L.PRIV_BYTES), 'instance_set');
    this.workers.set(slot, { region, pages });
    if (this.workers.size === 1) this.lockWriters();
    return { memory: this.memory, slot, region, limitBytes: this.limitBytes };
  }

  /** Owner: take a worker's slot back (the worker must be gone or idle for good). */
  releaseWorker(slot: number): void {
    const w = this.workers.get(slot);
    if (!w) return;
    this.writerEnter();
    try {
      this.check(this.x.instance_set(slot, 0), 'instance_set');
    } finally {
      this.writerLeave();
    }
    this.putFrames(w.region / this.layout.PAGE_SIZE, w.pages);
    this.workers.delete(slot);
  }

  /** Route the exports that change translations through the writer lock (once, when the first worker comes). */
  private lockWriters(): void {
    const x = { ...this.x } as unknown as Record<string, (...a: number[]) => number>;
    for (const name of WRITERS) {
      const fn = x[name]!;
      x[name] = (...a: number[]) => {
        this.writerEnter();
        try {
          return fn(...a);
        } finally {
          this.writerLeave();
        }
      };
    }
    this.x = { ...x } as unknown as Exports;
  }

  /** Owner: raise the writer flag and wait until no worker is inside a translation. */
  private writerEnter(): void {
    const s = this.sync!, L = this.layout;
    Atomics.store(s, L.CTRL_LOCK_WRITER >>> 2, 1);
    for (const slot of this.workers.keys()) {
      const at = (L.CTRL_LOCK_INFLIGHT + slot * L.LOCK_STRIDE) >>> 2;
      if (Atomics.load(s, at) === 0) continue;
      const until = Date.now() + STUCK_MS;
      while (Atomics.load(s, at) !== 0) {
        if (Date.now() > until) {
          Atomics.store(s, L.CTRL_LOCK_WRITER >>> 2, 0);
          throw new Error(`shared engine: worker ${slot} stayed inside a translation for ${STUCK_MS} ms`);
        }
      }
    }
  }

  private writerLeave(): void { Atomics.store(this.sync!, this.layout.CTRL_LOCK_WRITER >>> 2, 0); }

  /**
   * Worker: enter a translation (and the copy that uses it): wait while the
   * owner changes translations, then hold it off until leave(). Seq-cst
   * stores and loads on both sides: either the owner sees this worker's
   * word, or this worker sees the owner's flag.
   */
  enter(): void {
    const s = this.sync!, L = this.layout;
    const at = (L.CTRL_LOCK_INFLIGHT + this.slot * L.LOCK_STRIDE) >>> 2, wr = L.CTRL_LOCK_WRITER >>> 2;
    for (;;) {
      Atomics.store(s, at, 1);
      if (Atomics.load(s, wr) === 0) return;
      Atomics.store(s, at, 0);
      while (Atomics.load(s, wr) !== 0) { /* the owner's change takes microseconds */ }
    }
  }

  /** Worker: leave the translation entered last. */
  leave(): void {
    Atomics.store(this.sync!, (this.layout.CTRL_LOCK_INFLIGHT + this.slot * this.layout.LOCK_STRIDE) >>> 2, 0);
  }

  /** Views over linear memory; re-derived in one place when the buffer changes (growth). */
  private refresh(): void {
    const buffer = this.memory.buffer;
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    const L = this.layout;
    this.bIn = this.u32.subarray(this.bInBase >>> 2, (this.bInBase >>> 2) + 2 * L.BATCH_MAX);
    this.bOut = this.u32.subarray(this.bOutBase >>> 2, (this.bOutBase >>> 2) + 2 * L.BATCH_MAX);
    // The control block exists once init has grown the memory past it.
    if (this.shared && this.sync === null && buffer.byteLength >= L.CTRL_BASE + 4096) this.sync = new Int32Array(buffer, L.CTRL_BASE, 1024);
  }

  /**
   * Growing a non-shared memory detaches its old buffer, and every view over
   * it reads as empty: that is the cheap test (memory.buffer is not free).
   * A shared memory grows in place: its views keep their old length.
   */
  private stale(): boolean {
    // .length, not .byteLength (the same for a Uint8Array, 0 once detached):
    // Node 20's V8 reads a typed array's byteLength through a slow path
    // (~20 ns, a fifth of a 4 KiB DMA), its length inline.
    return this.u8.length === 0 || (this.shared && this.u8.length !== this.memory.buffer.byteLength);
  }

  /** The current byte view of linear memory (segment 0). */
  get bytes(): Uint8Array {
    if (this.stale()) this.refresh();
    return this.u8;
  }

  /**
   * The byte view as of the last call that checked it (dmaContiguous, or
   * bytes): current right after such a call, and stale once memory may
   * have grown (any later engine call). For the DMA hot path, which would
   * otherwise check the view twice per DMA.
   */
  get bytesChecked(): Uint8Array { return this.u8; }

  private words(): Uint32Array {
    if (this.stale()) this.refresh();
    return this.u32;
  }

  private mb(offset: number): number { return this.words()[(this.mbBase + offset) >>> 2]; }

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

  /**
   * A new empty table in entry format `format` (FMT_VTD_SL, FMT_ARM_S2,
   * FMT_AMD_V1); returns its domain id. `levels`: 3..5 (AMD v1: 1..6).
   * `sizes`: bits 2:0 the leaf sizes (SZ_4K | SZ_2M | SZ_1G); bits 15:8 the
   * VT-d host address width (0: 52; address bits above it are reserved);
   * bits 19:16 log2 of the ARM stage-2 root tables concatenated (0..4).
   */
  ptCreate(levels: number, sizes: number, format = this.layout.FMT_VTD_SL): number {
    return this.check(this.x.pt_create(levels, sizes, format), 'pt_create');
  }
  /**
   * A new empty ARM VMSAv8-64 stage-2 table (FMT_ARM_S2) with a `granule`
   * of 4096, 16384 or 65536 bytes for an `ias`-bit IPA (25..48) and an
   * `oas`-bit output (40, 42, 44, 48): the start level and the
   * concatenation of the root follow from them as Linux's io-pgtable-arm
   * chooses (assembly/radix.ts ptCreateArmS2). `sizes`: bit 0 the
   * granule's page, bit 1 its block (2 MiB / 32 MiB / 512 MiB), bit 2 the
   * 1 GiB block (4 KiB granule only). Maps and unmaps must then be aligned
   * to the granule (EINVAL otherwise).
   */
  ptCreateArmS2(granule: number, ias: number, oas: number, sizes: number): number {
    const shift = Math.log2(granule);
    return this.check(this.x.pt_create_arm_s2(Number.isInteger(shift) ? shift : 0, ias, oas, sizes), 'pt_create_arm_s2');
  }
  ptDestroy(did: number): void {
    this.check(this.x.pt_destroy(did), 'pt_destroy');
    if (this.heard.length) this.tell({ kind: 'destroy', did });
  }
  /**
   * A nested domain: the guest's x86-64 first-stage table at GPA `root`
   * (`levels` 4 or 5) over the stage-2 domain `parent` (VT-d nesting).
   * Its translations walk both; F_STAGE2 marks a fault of the stage-2 part.
   */
  ptCreateNested(parent: number, root: bigint | number, levels: number, flags = 0): number {
    const [lo, hi] = split64(root);
    const did = this.check(this.x.pt_create_nested(parent, lo, hi, levels, flags), 'pt_create_nested');
    if (this.heard.length) this.tell({ kind: 'nested', did, parent });
    return did;
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
    const did = this.check(this.x.pt_create_nested_arm(parent, lo, hi, cfg), 'pt_create_nested_arm');
    if (this.heard.length) this.tell({ kind: 'nested', did, parent });
    return did;
  }
  ptMap(did: number, iova: bigint | number, pa: bigint | number, length: bigint | number, perm: number): void {
    halves(iova); const il = HALF[0], ih = HALF[1];
    halves(pa); const pl = HALF[0], ph = HALF[1];
    halves(length);
    this.check(this.x.pt_map(did, il, ih, pl, ph, HALF[0], HALF[1], perm), 'pt_map');
  }
  ptUnmap(did: number, iova: bigint | number, length: bigint | number): void {
    halves(iova); const il = HALF[0], ih = HALF[1];
    halves(length);
    const r = this.x.pt_unmap(did, il, ih, HALF[0], HALF[1]);
    // Told even when it fails: a failed unmap changed nothing, and a cache above drops a little too much.
    if (this.flushHeard()) this.tell({ kind: 'flush', did, iova, length });
    this.check(r, 'pt_unmap');
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
   *
   * The engine's own `translate` export, set per instance (constructor), not
   * a method that forwards to it: a method is one function for every engine,
   * so its call of the export sees the exports of every engine that ever
   * translated and, past one, no longer calls the wasm function directly (a
   * few ns per call, a third of a hit); a caller's own call site here sees
   * the engines that call site uses. Nothing to convert or check: the
   * arguments are u32s already.
   */
  readonly translate: (ctx: number, iovaLo: number, iovaHi: number, access: number) => number;
  get lastPaLo(): number { return this.mb(this.layout.MB_PA_LO); }
  get lastPaHi(): number { return this.mb(this.layout.MB_PA_HI); }
  get lastShift(): number { return this.mb(this.layout.MB_SHIFT); }
  get lastPerm(): number { return this.mb(this.layout.MB_PERM); }
  get lastLevel(): number { return this.mb(this.layout.MB_LEVEL); }
  get lastFaultIova(): bigint { return (BigInt(this.mb(this.layout.MB_FAULT_HI)) << 32n) | BigInt(this.mb(this.layout.MB_FAULT_LO)); }

  /** The batch areas as u32 views: fill `batchIn` with (lo, hi) pairs, read `batchOut`. */
  get batchIn(): Uint32Array { if (this.stale()) this.refresh(); return this.bIn; }
  get batchOut(): Uint32Array { if (this.stale()) this.refresh(); return this.bOut; }
  /**
   * Translate batchIn[0..2n) into batchOut; returns the number of faults.
   * The engine's `translate_batch` export itself, as `translate` is (a
   * forwarding method cost a few ns per call: half of a batch of one).
   */
  readonly translateBatch: (ctx: number, n: number, access: number) => number;

  /**
   * Translate a whole DMA into physical ranges, or report its fault. Every
   * page is translated before any byte moves, so a fault touches no memory.
   */
  dmaRanges(ctx: number, iova: bigint | number, length: number, access: number): PhysRange[] | { fault: number; level: number; iova: bigint } {
    const ranges: PhysRange[] = [];
    let [lo, hi] = split64(iova);
    let left = length;
    const outBase = this.bOutBase >>> 2;
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

  /**
   * dma_ranges for a DMA that is usually one physical range (the 4 KiB DMA
   * hot path: one call, one view check): the range's physical address
   * (segment * 2^32 + offset) when one range covers all `length` bytes;
   * else -status when a page is refused (the fault in the mailbox, as after
   * dmaRangesRaw), or DMA_PIECES when it takes more than one range (ask
   * dmaRanges for them).
   */
  dmaContiguous(ctx: number, iovaLo: number, iovaHi: number, length: number, access: number): number {
    const n = this.x.dma_ranges(ctx, iovaLo, iovaHi, length, access);
    if (n !== 1) return n < 0 ? n : DMA_PIECES;
    const w = this.words(); // refreshes the views if memory grew: bytesChecked is current after this
    if (w[(this.mbBase + this.layout.MB_COVERED) >>> 2] !== length) return DMA_PIECES;
    const p = this.bOutBase >>> 2;
    return w[p + 1] * TWO32 + w[p];
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
    if (w[(this.mbBase + L.MB_COVERED) >>> 2] !== length) return -1;
    const p = this.bOutBase >>> 2;
    return w[p + 1] * TWO32 + w[p];
  }

  // ---- Event rings (assembly/events.ts) -------------------------------------------

  /**
   * A vEVENTQ's ring: `depth` records of `dataBytes` event data in `frames`
   * zeroed frames at pfn (the caller's), filled by the engine on the fault
   * path of routed contexts and by ringPush. Returns the ring id.
   */
  ringCreate(pfn: number, depth: number, dataBytes: number): number {
    return this.check(this.x.ring_create(pfn * this.layout.PAGE_SIZE, depth, dataBytes), 'ring_create');
  }
  ringDestroy(id: number): void { this.check(this.x.ring_destroy(id), 'ring_destroy'); }
  /** Record an event: four u64 words of data (the ring keeps its data bytes of them). */
  ringPush(id: number, w: readonly bigint[]): void {
    const h = (i: number) => split64(w[i] ?? 0n);
    const [a, b] = h(0), [c, d] = h(1), [e, f] = h(2), [g, k] = h(3);
    this.check(this.x.ring_push(id, a, b, c, d, e, f, g, k), 'ring_push');
  }
  /** Route a context's refused translations to ring `id` (0: none), with StreamID `tag`. */
  ctxRoute(ctx: number, id: number, tag: number): void { this.check(this.x.ctx_route(ctx, id, tag >>> 0), 'ctx_route'); }
  /** The byte offset of ring id's descriptor (layout.ts RING_*), for a reader that holds its lock. */
  ringDescriptor(id: number): number { return this.layout.CTRL_BASE + this.layout.CTRL_RINGS + (id - 1) * this.layout.RING_SIZE; }
  /**
   * Run `fn` holding ring id's lock (producers in worker instances take it
   * too). Over an unshared memory nothing else can hold it.
   */
  withRing<T>(id: number, fn: (desc: number, words: Uint32Array) => T): T {
    const desc = this.ringDescriptor(id);
    const w = this.words();
    if (!this.shared) return fn(desc, w);
    const s = this.sync!, at = (desc - this.layout.CTRL_BASE + this.layout.RING_LOCK) >>> 2;
    while (Atomics.compareExchange(s, at, 0, 1) !== 0) { /* a producer's push takes nanoseconds */ }
    try {
      return fn(desc, w);
    } finally {
      Atomics.store(s, at, 0);
    }
  }

  // ---- Page requests (assembly/pri.ts) -----------------------------------------

  /**
   * Route a context's page requests to FAULT ring `id` (a ring made with
   * PRI_DATA bytes of data) as DEVICE `devId`, its PRG table in the
   * PRG_BYTES of zeroed frames at `tablePfn`; id 0 stops them (the table is
   * the caller's to free).
   */
  ctxPri(ctx: number, id: number, devId: number, tablePfn: number): void {
    this.check(this.x.ctx_pri(ctx, id, devId >>> 0, tablePfn * this.layout.PAGE_SIZE), 'ctx_pri');
  }
  /**
   * Queue a group the host made: `records` holds n records of PRI_REC bytes
   * as the ring keeps them. False when the overflow rule took it (PRO set).
   */
  priPush(id: number, records: Uint8Array): boolean {
    const L = this.layout;
    if (records.length === 0 || records.length % L.PRI_REC !== 0 || records.length > L.BATCH_MAX * 8) throw new SysError('EINVAL', 'pri_push: bad group');
    this.bytes.set(records, this.bInBase);
    const r = this.x.pri_push(id, records.length / L.PRI_REC);
    if (r === L.ERR_FULL) return false;
    this.check(r, 'pri_push');
    return true;
  }
  /** Answer a context's group g: its index is free again. EINVAL if not outstanding. */
  priRespond(ctx: number, g: number, code: number): void { this.check(this.x.pri_respond(ctx, g, code >>> 0), 'pri_respond'); }
  /** What the last DMA fault of this instance did about page requests (PRI_* of layout.ts), and its group. */
  get priStatus(): number { return this.mb(this.layout.MB_PRI); }
  get priGroup(): number { return this.mb(this.layout.MB_PRI_GRP); }
  /** Page requests off (true) or on for this instance's DMA faults (the mailbox's MB_PRI_OFF word). */
  setPriOff(off: boolean): void { this.words()[(this.mbBase + this.layout.MB_PRI_OFF) >>> 2] = off ? 1 : 0; }
  /**
   * Group g of the PRG table at byte `tableByte` (layout.ts PRG entries):
   * its pages as IOVAs, in order, and the permissions it asks for.
   */
  prgGroup(tableByte: number, g: number): { pages: bigint[]; perm: number } {
    const L = this.layout, w = this.words();
    const e = (tableByte + g * L.PRG_SIZE) >>> 2;
    const first = (BigInt(w[e + (L.PRG_FIRST >>> 2) + 1]!) << 32n) | BigInt(w[e + (L.PRG_FIRST >>> 2)]!);
    const mask = (BigInt(w[e + (L.PRG_MASK >>> 2) + 1]!) << 32n) | BigInt(w[e + (L.PRG_MASK >>> 2)]!);
    const pages: bigint[] = [];
    for (let i = 0n, m = mask; m !== 0n; i++, m >>= 1n) if (m & 1n) pages.push(first + (i << 12n));
    return { pages, perm: w[e + (L.PRG_PERM >>> 2)]! };
  }

  /**
   * Shared-memory mode: wake whoever waits on the i32 at byte `addr` of
   * linear memory (a PRG entry's generation, answered). Nothing otherwise.
   */
  notifyWord(addr: number): void {
    if (this.shared) Atomics.notify(new Int32Array(this.memory.buffer), addr >>> 2);
  }
  /**
   * Resolves once the i32 at byte `addr` of linear memory is no longer
   * `value` (Atomics.waitAsync where the engine has it, else polled).
   * keepAlive: hold a timer meanwhile (a pending waitAsync alone does not
   * keep Node's event loop alive); false for a background watch.
   */
  async waitWord(addr: number, value: number, keepAlive = true): Promise<void> {
    const i32 = () => new Int32Array(this.memory.buffer);
    const waitAsync = (Atomics as unknown as { waitAsync?: (a: Int32Array, i: number, v: number) => { async: boolean; value: Promise<string> | string } }).waitAsync;
    while (Atomics.load(i32(), addr >>> 2) === value) {
      if (this.shared && waitAsync) {
        // A pending waitAsync alone does not keep Node's event loop (a worker's) alive: a timer does.
        const keep = keepAlive ? setInterval(() => {}, 1 << 30) : undefined;
        try {
          const r = waitAsync(i32(), addr >>> 2, value);
          if (r.async) await r.value;
        } finally {
          clearInterval(keep);
        }
      } else await new Promise((ok) => setTimeout(ok, 1));
    }
  }

  // ---- IOTLB ------------------------------------------------------------------

  flushAll(): void {
    this.x.iotlb_flush_all();
    if (this.flushHeard()) this.tell({ kind: 'flush-all' });
  }
  flushDomain(did: number): void {
    this.x.iotlb_flush_domain(did);
    if (this.flushHeard()) this.tell({ kind: 'flush', did });
  }
  flushRange(did: number, iova: bigint | number, length: bigint | number): void {
    const [il, ih] = split64(iova), [ll, lh] = split64(length);
    this.x.iotlb_flush_range(did, il, ih, ll, lh);
    if (this.flushHeard()) this.tell({ kind: 'flush', did, iova, length });
  }

  /**
   * Hear every invalidation (flushes, unmaps, a domain's destruction) and
   * every nested domain's creation, once the engine has done it: caches
   * kept above the engine (a device's ATC) follow the IOTLB this way.
   * `holding`, when given, says whether the listener holds anything a
   * flush could reach: while no listener does, flushes and unmaps are not
   * told (no event made: a 4 KiB unmap's only garbage here). Returns the
   * function that stops it.
   */
  onInvalidate(listener: (e: EngineEvent) => void, holding: () => boolean = always): () => void {
    const h = { listener, holding };
    this.heard.push(h);
    return () => { const i = this.heard.indexOf(h); if (i >= 0) this.heard.splice(i, 1); };
  }
  private readonly heard: { listener: (e: EngineEvent) => void; holding: () => boolean }[] = [];
  private tell(e: EngineEvent): void { for (const h of this.heard) h.listener(e); }
  /** Whether a flush is to be told: some listener holds something. */
  private flushHeard(): boolean {
    for (let i = 0; i < this.heard.length; i++) if (this.heard[i].holding()) return true;
    return false;
  }
  /** Live IOTLB entries of a domain. */
  iotlbCount(did: number): number { return this.x.iotlb_count(did); }

  /** This instance's counters since creation (a worker counts its own). */
  stats(): { hits: number; misses: number; walks: number; faults: number; invalidations: number } {
    const L = this.layout;
    const w = this.words();
    const c = (off: number) => w[(this.statsBase + off) >>> 2] + w[((this.statsBase + off) >>> 2) + 1] * TWO32;
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
    const base = this.bOutBase;
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

