/**
 * Shared-memory mode, the worker's side: DMA and translations of devices
 * from a worker (Node worker_threads, a browser Worker) over the owner's
 * engine, while the owner keeps every control operation (map, unmap,
 * attach, invalidate). The owner calls `host.shareWorker(paths)` and posts
 * the result to the worker; the worker calls `attachWorker(init)`.
 *
 * Each worker has its own engine instance over the one shared memory, with
 * its own IOTLB and caches. A DMA translates and copies between the
 * engine's enter() and leave(): the owner's changes of translations wait for
 * them, so once an unmap returns in the owner, no worker can reach the old
 * page (assembly/layout.ts, "Shared-memory mode").
 *
 * A refused DMA throws DmaFault here, in the worker. What the engine
 * records on the fault path, it records for a worker's DMA too, in the
 * same rings under their lock: vEVENTQ events of routed contexts, and page
 * request groups (assembly/pri.ts) when the function has PRI and its
 * attachment a FAULT. Such a DMA is pending: the DmaFault carries
 * `pageRequest` (its group: pages, PRG index, perm), whose `response`
 * resolves with the code the VMM writes on the owner's fault fd (the
 * owner's answer bumps the group's generation word in shared memory and
 * Atomics.notify-s it); retry the DMA after a SUCCESS. When the queue
 * overflowed, `response` is SUCCESS at once (grpid -1). The owner's poll and
 * read see a worker's groups, and its waitReadable, onReadable and
 * doorbells hear of them: the engine notifies the FAULT ring's queued word
 * and the owner's FAULT waits on it in the background (eventq.ts
 * watchWorkers). Other reporting (DmaFault listeners, events the host
 * makes) sees only the owner's own DMAs.
 */
import { Engine, type WorkerShare } from './engine/engine.js';
import { DmaFault, directoryLookup, type DmaOptions, type PendingPageRequest } from './kernel/pci.js';
import { IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_PGFAULT_PERM_READ, IOMMU_PGFAULT_PERM_WRITE } from './uapi/iommufd.js';

/** What the owner's `host.shareWorker` gives a worker (structured-cloneable). */
export interface WorkerInit {
  /** The engine's shared build, compiled (a WebAssembly.Module posts to a worker). */
  readonly module: WebAssembly.Module;
  readonly share: WorkerShare;
  /** The shared functions: their VFIO paths and PASID -> context directories. */
  readonly devices: readonly { readonly path: string; readonly contexts: SharedArrayBuffer }[];
  /** Segments over shared memory (an emulator's SharedArrayBuffer or shared WebAssembly.Memory). */
  readonly segments: readonly { readonly id: number; readonly source: SharedArrayBuffer | WebAssembly.Memory }[];
}

const SEG_SPAN = 0x1_0000_0000;

/** A worker's view of the owner's host: the shared devices' DMA. */
export class WorkerHost {
  readonly engine: Engine;
  private readonly devs = new Map<string, WorkerDevice>();
  private readonly segs = new Map<number, SharedArrayBuffer | WebAssembly.Memory>();
  private readonly views = new Map<number, Uint8Array>();

  constructor(init: WorkerInit) {
    this.engine = Engine.attach(init.module, init.share);
    for (const s of init.segments) this.segs.set(s.id, s.source);
    for (const d of init.devices) this.devs.set(d.path, new WorkerDevice(this, new Int32Array(d.contexts)));
    this.engine.setSegmentView((seg) => (seg !== 0 && this.segs.has(seg) ? this.view(seg, 0, 0) : null));
  }

  /** A shared function by its VFIO path. */
  device(path: string): WorkerDevice {
    const d = this.devs.get(path);
    if (!d) throw new Error(`${path} was not shared with this worker`);
    return d;
  }

  /** The bytes of segment `seg` holding [off, off + len), re-derived after growth. */
  view(seg: number, off: number, len: number): Uint8Array {
    if (seg === 0) {
      const b = this.engine.bytes;
      if (off + len <= b.length) return b;
    }
    let v = this.views.get(seg);
    if (!v || off + len > v.length) {
      const src = this.segs.get(seg);
      if (!src) throw new Error(`segment ${seg} is not shared with this worker`);
      v = new Uint8Array(src instanceof WebAssembly.Memory ? src.buffer : src);
      this.views.set(seg, v);
    }
    return v;
  }
}

/** One shared function, seen from a worker. */
export class WorkerDevice {
  readonly dma: WorkerDma;
  constructor(host: WorkerHost, contexts: Int32Array) {
    this.dma = new WorkerDma(host, contexts);
  }
}

/** A function's DMA from a worker: the owner's `Dma` API, synchronous forms. */
export class WorkerDma {
  constructor(private readonly host: WorkerHost, private readonly contexts: Int32Array) {}

  read(iova: number | bigint, length: number, opts?: DmaOptions): Uint8Array {
    const out = new Uint8Array(length);
    this.transfer(iova, out, opts?.pasid ?? 0, false);
    return out;
  }

  readInto(iova: number | bigint, dst: Uint8Array, opts?: DmaOptions): void { this.transfer(iova, dst, opts?.pasid ?? 0, false); }

  write(iova: number | bigint, bytes: Uint8Array, opts?: DmaOptions): void { this.transfer(iova, bytes, opts?.pasid ?? 0, true); }

  /** The PASID's context from the owner's directory; none is blocked (DmaFault). */
  private contextOf(iova: number | bigint, pasid: number, write: boolean): number {
    const ctx = directoryLookup(this.contexts, pasid);
    if (ctx < 0) throw new DmaFault(this.host.engine.layout.F_BLOCKED, BigInt(iova), pasid, write ? 'write' : 'read', 0);
    return ctx;
  }

  /** The translation of one address, as Dma.translate. */
  translate(iova: number | bigint, opts?: DmaOptions & { write?: boolean }): { pa: number; size: number; perm: number } {
    const e = this.host.engine, L = e.layout;
    const pasid = opts?.pasid ?? 0, write = opts?.write ?? false;
    const ctx = this.contextOf(iova, pasid, write);
    const v = BigInt(iova);
    e.enter();
    try {
      const st = e.translate(ctx, Number(v & 0xffff_ffffn), Number(v >> 32n), write ? L.PERM_W : L.PERM_R);
      if (st !== 0) throw new DmaFault(st, e.lastFaultIova, pasid, write ? 'write' : 'read', e.lastLevel);
      return { pa: e.lastPaHi * SEG_SPAN + e.lastPaLo, size: 2 ** e.lastShift, perm: e.lastPerm };
    } finally {
      e.leave();
    }
  }

  /**
   * What the engine did about page requests for the fault just taken
   * (mailbox MB_PRI): the group sent or joined, read from the context's PRG
   * table, with a response that waits on the entry's generation; SUCCESS at
   * once after an overflow; null when no request went out.
   */
  private pageRequest(ctx: number, iova: bigint, pasid: number, write: boolean): PendingPageRequest | null {
    const e = this.host.engine, L = e.layout;
    const st = e.priStatus;
    const pasidOut = pasid === 0 ? undefined : pasid;
    if (st === L.PRI_OVERFLOW) {
      const addr = iova & ~0xfffn;
      return { addr, pages: [addr], pasid: pasidOut, perm: write ? IOMMU_PGFAULT_PERM_WRITE : IOMMU_PGFAULT_PERM_READ, grpid: -1, response: Promise.resolve(IOMMUFD_PAGE_RESP_SUCCESS) };
    }
    if (st !== L.PRI_SENT && st !== L.PRI_JOINED) return null;
    const g = e.priGroup;
    const w = new Uint32Array(e.memory.buffer);
    const ctxTable = w[(L.CTRL_BASE + L.CTRL_CTX_TABLE) >>> 2]!;
    const table = w[(ctxTable + ctx * L.CTX_SIZE + L.CTX_PRG) >>> 2]!;
    const entry = table + g * L.PRG_SIZE;
    // Taken before the entry is read: an answer after this moves the generation on.
    const gen = Atomics.load(new Int32Array(e.memory.buffer), (entry + L.PRG_GEN) >>> 2);
    const { pages, perm } = e.prgGroup(table, g);
    const answered = async () => {
      if (perm !== 0) await e.waitWord(entry + L.PRG_GEN, gen);
      return new Uint32Array(e.memory.buffer)[(entry + L.PRG_CODE) >>> 2]!;
    };
    return { addr: pages[0] ?? (iova & ~0xfffn), pages, pasid: pasidOut, perm, grpid: g, response: answered() };
  }

  /** Translate every page, then copy: all between enter() and leave(), so no unmap can land in between. */
  private transfer(iova: number | bigint, buf: Uint8Array, pasid: number, write: boolean): void {
    const e = this.host.engine, L = e.layout;
    const ctx = this.contextOf(iova, pasid, write);
    e.enter();
    try {
      const r = e.dmaRanges(ctx, iova, buf.length, write ? L.PERM_W : L.PERM_R);
      if (!Array.isArray(r)) {
        const f = new DmaFault(r.fault, r.iova, pasid, write ? 'write' : 'read', r.level);
        f.pageRequest = this.pageRequest(ctx, r.iova, pasid, write);
        throw f;
      }
      let at = 0;
      for (const { seg, offset, length } of r) {
        const mem = this.host.view(seg, offset, length);
        if (write) mem.set(buf.subarray(at, at + length), offset);
        else buf.set(mem.subarray(offset, offset + length), at);
        at += length;
      }
    } finally {
      e.leave();
    }
  }
}

/** In a worker: attach to the owner's host (what `host.shareWorker` returned, posted here). */
export function attachWorker(init: WorkerInit): WorkerHost { return new WorkerHost(init); }
