// Event queues (drivers/iommu/iommufd/eventq.c): FAULT and VEVENTQ.
//
// FAULT: a queue of I/O page-fault groups read from an fd as struct
// iommu_hwpt_pgfault records and answered by writing struct
// iommu_hwpt_page_response records to it. The queue is an engine ring in
// linear memory (assembly/pri.ts; layout.ts "Page requests"): the engine
// writes the page request groups of refused DMAs there on the fault path,
// and report() pushes the groups made here (a function's own Page Request
// Messages, the selftest's), so one ring keeps one order.
//
// A group is the page requests of one PRI group up to the one flagged
// LAST_PAGE. read() hands out whole groups, FIFO, each under a cookie
// (lowest free from 1); write() answers a cookie with SUCCESS or INVALID.
// Detaching or replacing the device answers its groups INVALID, as does
// destroying the FAULT.

import { KFile, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDNORM } from '../kernel/file.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_fault_alloc, iommu_hwpt_pgfault, iommu_hwpt_page_response, iommu_veventq_alloc, iommufd_vevent_header,
  IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID, IOMMU_VEVENTQ_TYPE_DEFAULT, IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, IOMMU_VEVENTQ_TYPE_SELFTEST,
  iommu_vevent_arm_smmuv3, iommu_vevent_tegra241_cmdqv, iommu_viommu_event_selftest,
} from '../uapi/iommufd.js';
import type { Engine } from '../engine/engine.js';
import type { Decoded } from '../uapi/struct.js';
import { IommufdObject, type ObjectTable } from './object.js';
import type { Viommu } from './viommu.js';

/** One page request as the IOMMU reports it (struct iommu_fault_page_request). */
export interface PageRequest {
  flags: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
}

/** A group of page requests the host made (not the engine), and who answers it. */
export interface FaultGroup {
  readonly devId: number;
  /** The attachment the group came through: device object and PASID. */
  readonly handle: { readonly dev: object; readonly pasid: number };
  readonly requests: PageRequest[];
  /** Delivers the response (IOMMUFD_PAGE_RESP_*) to the device. Called once. */
  respond(code: number): void;
  cookie?: number;
}

/**
 * Who answers the groups the engine queues for one context (an attachment
 * of a function with PRI to a HWPT with this FAULT): set by the DEVICE
 * while attached (device.ts).
 */
export interface PriRoute {
  readonly dev: object;
  readonly pasid: number;
  /** Deliver the response to the context's group `grpid` (PRG index) to the function. */
  respond(grpid: number, code: number): void;
}

/** A group read and not yet answered. */
type Delivered = { readonly ctx: number; readonly grpid: number; readonly route: PriRoute | undefined } | { readonly group: FaultGroup };
/** A group taken out of the ring unread (auto-response, destroy). */
type Taken = Delivered;

/**
 * Records of a new FAULT ring: the size of VT-d's page request queue in
 * Linux (intel/prq.c: PRQ_ORDER 4, 16 pages of 32-byte descriptors = 2048;
 * sized "to avoid overflow", commit ea661ad6e157).
 */
export const FAULT_RING_DEPTH = 2048;
/**
 * The most records a FAULT ring grows to. Linux's iommufd queue behind the
 * hardware queue is an unbounded list (iommufd_fault_iopf_handler): the
 * host doubles the ring whenever it has control and finds it more than half
 * full (after each group it is told of), up to this (32 MiB of records).
 */
export const FAULT_RING_MAX = 1 << 20;

/** A FAULT ring's records when made and at most (HostOptions.faultRing). */
export interface FaultRingSize { readonly depth: number; readonly maxDepth: number }
const PAGE = 4096;

/**
 * Cookies as xa_alloc with XA_FLAGS_ALLOC1 hands them out: the lowest free
 * from 1. Freed ones wait in a min-heap; above them, `top` is the highest
 * ever handed out, so an allocation is O(log n) however many are
 * outstanding (a scan from 1 was quadratic in a storm).
 */
export class CookieAllocator {
  /** Freed cookies, a binary min-heap; every one is below or at `top`. */
  private readonly freed: number[] = [];
  /** Cookies above `top` were never handed out. */
  private top = 0;

  alloc(): number {
    const h = this.freed;
    if (h.length === 0) return ++this.top;
    const min = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      // Sift `last` down from the root.
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const c = l + 1 < h.length && h[l + 1] < h[l] ? l + 1 : l;
        if (h[c] >= last) break;
        h[i] = h[c];
        i = c;
      }
      h[i] = last;
    }
    return min;
  }

  free(cookie: number): void {
    const h = this.freed;
    let i = h.length;
    h.push(cookie);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p] <= cookie) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = cookie;
  }
}

export class Fault extends IommufdObject {
  readonly type = 'FAULT' as const;
  /** The engine ring, and the frames that hold its records. */
  readonly ring: number;
  private pfn: number;
  private pages: number;
  /** Records the ring holds now (it grows: grow()). */
  depth: number;
  /** What it may grow to. */
  readonly maxDepth: number;
  /** Who answers the engine's groups, by engine context. */
  private readonly routes = new Map<number, PriRoute>();
  /** Groups the host pushed and nobody has read, by token (the record's source, PRI_HOST | token). */
  private readonly hostGroups = new Map<number, FaultGroup>();
  private nextToken = 1;
  /** Groups read and not yet answered, by cookie. */
  private readonly response = new Map<number, Delivered>();
  private readonly cookies = new CookieAllocator();
  /** Called when a group is queued (readiness for poll and waiters). */
  onReadable: (() => void) | null = null;

  constructor(private readonly engine: Engine, size: FaultRingSize = { depth: FAULT_RING_DEPTH, maxDepth: FAULT_RING_MAX }) {
    super();
    const L = engine.layout;
    this.depth = size.depth;
    this.maxDepth = size.maxDepth;
    this.pages = Math.ceil((this.depth * L.PRI_REC) / PAGE);
    this.pfn = engine.allocFrames(this.pages); // ENOMEM before anything is made
    try {
      this.ring = engine.ringCreate(this.pfn, this.depth, L.PRI_DATA);
    } catch (e) {
      engine.putFrames(this.pfn, this.pages);
      throw e;
    }
  }

  /** Route engine context `ctx`'s groups here (its page requests go to this ring: Engine.ctxPri). */
  route(ctx: number, route: PriRoute): void { this.routes.set(ctx, route); }

  /** Tell the fd's waiters that a group arrived (the engine queued one, or report() did); make room for more. */
  signal(): void {
    this.grow(0);
    this.signalled = (this.signalled + 1) >>> 0;
    this.onReadable?.();
  }

  /**
   * Groups queued that the readers were told of: the ring's queued word
   * (RING_LOST_SEQ of a FAULT ring, layout.ts) as far as signal() went.
   * A worker's groups move the word without this host knowing.
   */
  private signalled = 0;
  private watching = false;
  private dead = false;

  /**
   * Shared-memory mode, while the fd has readiness hooks: wait (in the
   * background) on the ring's queued word, which the engine notifies when a
   * worker instance queues a group, and signal each group the owner did not
   * queue itself, so waitReadable, onReadable and doorbells hear of a
   * worker's groups too.
   */
  watchWorkers(wanted: () => boolean): void {
    if (!this.engine.shared || this.watching || this.dead) return;
    this.watching = true;
    const L = this.engine.layout;
    const at = this.engine.ringDescriptor(this.ring) + L.RING_LOST_SEQ;
    void (async () => {
      try {
        while (!this.dead && wanted()) {
          const now = new Uint32Array(this.engine.memory.buffer)[at >>> 2]!;
          if (now !== this.signalled) {
            const n = (now - this.signalled) >>> 0;
            this.signalled = now;
            this.grow(0);
            for (let i = 0; i < n; i++) this.onReadable?.();
            continue;
          }
          await this.engine.waitWord(at, now | 0, false);
        }
      } finally {
        this.watching = false;
      }
    })();
  }

  /**
   * Double the ring (up to maxDepth) while it is more than half full
   * or has fewer than `need` free records: new frames, the records copied
   * over in order under the ring's lock (producers read base and depth
   * under it), the old frames freed. Out of memory: it stays as it is
   * (overflow then takes what does not fit).
   */
  private grow(need: number): void {
    const L = this.engine.layout;
    const count = () => this.engine.withRing(this.ring, (d, w) => w[(d + L.RING_COUNT) >>> 2]!);
    const n = count();
    if (n * 2 <= this.depth && this.depth - n >= need) return;
    let depth = this.depth;
    while (depth < this.maxDepth && (n * 2 > depth || depth - n < need)) depth = Math.min(depth * 2, this.maxDepth);
    if (depth === this.depth) return;
    const pages = Math.ceil((depth * L.PRI_REC) / PAGE);
    const pfn = this.engine.tryAllocFrames(pages);
    if (pfn < 0) return;
    const REC = L.PRI_REC, old = { pfn: this.pfn, pages: this.pages, depth: this.depth };
    this.engine.withRing(this.ring, (d, w) => {
      const bytes = this.engine.bytes;
      const base = w[(d + L.RING_BASE) >>> 2]!, head = w[(d + L.RING_HEAD) >>> 2]!, c = w[(d + L.RING_COUNT) >>> 2]!;
      const to = pfn * PAGE, run = Math.min(c, old.depth - head);
      bytes.copyWithin(to, base + head * REC, base + (head + run) * REC);
      if (c > run) bytes.copyWithin(to + run * REC, base, base + (c - run) * REC);
      w[(d + L.RING_BASE) >>> 2] = to;
      w[(d + L.RING_DEPTH) >>> 2] = depth;
      w[(d + L.RING_HEAD) >>> 2] = 0;
    });
    this.pfn = pfn;
    this.pages = pages;
    this.depth = depth;
    this.engine.putFrames(old.pfn, old.pages);
  }

  /**
   * iommufd_fault_iopf_handler for a group the host made: its records go
   * into the ring after the engine's. When the ring overflows (the VT-d
   * PRO rule, layout.ts) the group is answered SUCCESS at once, as the
   * hardware answers a request its full queue cannot take.
   */
  report(group: FaultGroup): void {
    const L = this.engine.layout;
    let token = this.nextToken;
    while (this.hostGroups.has(token)) token = token >= 0x7fff_ffff ? 1 : token + 1;
    this.nextToken = token >= 0x7fff_ffff ? 1 : token + 1;
    this.grow(group.requests.length);
    const recs = new Uint8Array(group.requests.length * L.PRI_REC);
    const dv = new DataView(recs.buffer);
    group.requests.forEach((r, i) => {
      const o = i * L.PRI_REC;
      dv.setUint32(o + L.PRI_FLAGS, r.flags, true);
      dv.setUint32(o + L.PRI_DEVID, group.devId, true);
      dv.setUint32(o + L.PRI_PASID, r.pasid, true);
      dv.setUint32(o + L.PRI_GRPID, r.grpid, true);
      dv.setUint32(o + L.PRI_PERM, r.perm, true);
      dv.setUint32(o + L.PRI_SOURCE, (L.PRI_HOST | token) >>> 0, true);
      dv.setBigUint64(o + L.PRI_ADDR, r.addr, true);
    });
    let queued: boolean;
    try {
      queued = this.engine.priPush(this.ring, recs);
    } catch (e) {
      // More requests than one push carries (BATCH_IN): the IOMMU cannot take the group (iopf_error_response).
      if (e instanceof SysError && e.code === 'EINVAL') { group.respond(IOMMUFD_PAGE_RESP_INVALID); return; }
      throw e;
    }
    if (!queued) { group.respond(IOMMUFD_PAGE_RESP_SUCCESS); return; }
    this.hostGroups.set(token, group);
    this.signalled = (this.signalled + 1) >>> 0;
    this.onReadable?.();
  }

  get readable(): boolean {
    const L = this.engine.layout;
    return this.engine.withRing(this.ring, (d, w) => w[(d + L.RING_COUNT) >>> 2] !== 0);
  }

  /** The ring's overflow state: PRO set (it takes nothing until drained), and the groups overflow answered. */
  get overflow(): { pro: boolean; groups: number } {
    const L = this.engine.layout;
    return this.engine.withRing(this.ring, (d, w) => ({ pro: (w[(d + L.RING_LOST) >>> 2]! & L.PRI_PRO) !== 0, groups: w[(d + L.RING_SEQ) >>> 2]! }));
  }

  /** Who a group in the ring belongs to, from its first record's source and grpid. */
  private owner(source: number, grpid: number, take: boolean): Delivered {
    const L = this.engine.layout;
    if ((source & L.PRI_HOST) !== 0) {
      const token = source & ~L.PRI_HOST;
      const group = this.hostGroups.get(token)!;
      if (take) this.hostGroups.delete(token);
      return { group };
    }
    return { ctx: source, grpid, route: this.routes.get(source) };
  }

  /**
   * iommufd_fault_fops_read: whole groups that fit, FIFO; 0 when none does
   * (no error). The records are copied out of the ring a group at a time;
   * once it is empty, PRO is cleared (prq_event_thread).
   */
  read(buf: Uint8Array): number {
    const size = iommu_hwpt_pgfault.size;
    if (buf.length % size !== 0) throw new SysError('ESPIPE');
    const L = this.engine.layout, REC = L.PRI_REC;
    const out = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    // Word by word when the buffer is 4-byte aligned (no view per record).
    const o32 = buf.byteOffset % 4 === 0 ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2) : null;
    const W = REC >>> 2, SRC = L.PRI_SOURCE >>> 2, OUT = size >>> 2;
    return this.engine.withRing(this.ring, (d, w) => {
      const bytes = this.engine.bytes;
      const base = w[(d + L.RING_BASE) >>> 2]!, depth = this.depth;
      let head = w[(d + L.RING_HEAD) >>> 2]!, count = w[(d + L.RING_COUNT) >>> 2]!;
      let done = 0;
      while (count > 0 && done < buf.length) {
        // The group: records up to the one flagged LAST_PAGE (written together, so all here).
        const n = this.groupLength(w, base, head, count);
        if (n * size > buf.length - done) break;
        const cookie = this.cookies.alloc();
        if (cookie > 0xffff_ffff) { this.cookies.free(cookie); break; } // xa_limit_32b exhausted
        const first = base + head * REC;
        const owner = this.owner(w[(first + L.PRI_SOURCE) >>> 2]!, w[(first + L.PRI_GRPID) >>> 2]!, true);
        this.response.set(cookie, owner);
        if ('group' in owner) owner.group.cookie = cookie;
        for (let i = 0; i < n; i++) {
          const rec = base + head * REC;
          if (o32) {
            const from = rec >>> 2, to = done >>> 2;
            for (let k = 0; k < W; k++) o32[to + k] = w[from + k]!;
            o32[to + SRC] = 0; // __reserved
            o32[to + OUT - 2] = 0; // length
            o32[to + OUT - 1] = cookie;
          } else {
            buf.set(bytes.subarray(rec, rec + REC), done);
            out.setUint32(done + L.PRI_SOURCE, 0, true); // __reserved
            out.setUint32(done + REC, 0, true); // length
            out.setUint32(done + REC + 4, cookie, true);
          }
          done += size;
          head = head + 1 === depth ? 0 : head + 1;
        }
        count -= n;
      }
      w[(d + L.RING_HEAD) >>> 2] = head;
      w[(d + L.RING_COUNT) >>> 2] = count;
      if (count === 0) w[(d + L.RING_LOST) >>> 2] = w[(d + L.RING_LOST) >>> 2]! & ~L.PRI_PRO;
      return done;
    });
  }

  /**
   * Records of the group whose first record is at ring slot `slot`: up to
   * the one flagged LAST_PAGE, at most `left` (what the ring holds from there).
   */
  private groupLength(w: Uint32Array, base: number, slot: number, left: number): number {
    const L = this.engine.layout;
    let n = 1;
    while (n < left && (w[(base + slot * L.PRI_REC + L.PRI_FLAGS) >>> 2]! & L.PRI_LAST_PAGE) === 0) {
      n++;
      slot = slot + 1 === this.depth ? 0 : slot + 1;
    }
    return n;
  }

  private answer(g: Delivered, code: number): void {
    if ('group' in g) g.group.respond(code);
    else g.route?.respond(g.grpid, code);
  }

  /** iommufd_fault_fops_write: responses in order until a bad one; bytes consumed, or the error if none. */
  write(buf: Uint8Array): number {
    const size = iommu_hwpt_page_response.size;
    if (buf.length % size !== 0) throw new SysError('ESPIPE');
    let done = 0;
    let err: SysError | null = null;
    while (done < buf.length) {
      const r = iommu_hwpt_page_response.decode(buf, done);
      if (r.code !== IOMMUFD_PAGE_RESP_SUCCESS && r.code !== IOMMUFD_PAGE_RESP_INVALID) { err = new SysError('EINVAL'); break; }
      const g = this.response.get(r.cookie);
      if (!g) { err = new SysError('EINVAL'); break; }
      this.response.delete(r.cookie);
      this.cookies.free(r.cookie);
      this.answer(g, r.code);
      done += size;
    }
    if (done === 0 && err) throw err;
    return done;
  }

  /**
   * Take the unread groups `drop` names out of the ring (under its lock),
   * keeping the others in order.
   */
  private takeQueued(drop: (g: Delivered) => boolean): Taken[] {
    const L = this.engine.layout, REC = L.PRI_REC;
    return this.engine.withRing(this.ring, (d, w) => {
      const bytes = this.engine.bytes;
      const base = w[(d + L.RING_BASE) >>> 2]!, depth = this.depth;
      const head = w[(d + L.RING_HEAD) >>> 2]!, count = w[(d + L.RING_COUNT) >>> 2]!;
      if (count === 0) return [];
      const keep = new Uint8Array(count * REC);
      const taken: Taken[] = [];
      let kept = 0;
      for (let i = 0, slot = head; i < count;) {
        const n = this.groupLength(w, base, slot, count - i);
        const first = base + slot * REC;
        const owner = this.owner(w[(first + L.PRI_SOURCE) >>> 2]!, w[(first + L.PRI_GRPID) >>> 2]!, false);
        const go = drop(owner);
        if (go) { taken.push(owner); if ('group' in owner) this.owner(w[(first + L.PRI_SOURCE) >>> 2]!, 0, true); }
        for (let k = 0; k < n; k++) {
          if (!go) { keep.set(bytes.subarray(base + slot * REC, base + (slot + 1) * REC), kept * REC); kept++; }
          slot = slot + 1 === depth ? 0 : slot + 1;
        }
        i += n;
      }
      if (taken.length === 0) return taken;
      // Write the kept records back from the head, in order.
      for (let k = 0, slot = head; k < kept; k++) {
        bytes.set(keep.subarray(k * REC, (k + 1) * REC), base + slot * REC);
        slot = slot + 1 === depth ? 0 : slot + 1;
      }
      w[(d + L.RING_COUNT) >>> 2] = kept;
      return taken;
    });
  }

  /** The attachments (device object, PASID) of every group waiting here, unread or unanswered (for checkers). */
  waiting(): { dev: object; pasid: number }[] {
    const out: { dev: object; pasid: number }[] = [];
    const add = (g: Delivered) => {
      if ('group' in g) out.push(g.group.handle);
      else out.push(g.route ? { dev: g.route.dev, pasid: g.route.pasid } : { dev: {}, pasid: -1 }); // no route: nobody answers it
    };
    const L = this.engine.layout, REC = L.PRI_REC;
    this.engine.withRing(this.ring, (d, w) => {
      const base = w[(d + L.RING_BASE) >>> 2]!, depth = w[(d + L.RING_DEPTH) >>> 2]!;
      let slot = w[(d + L.RING_HEAD) >>> 2]!, start = true;
      for (let i = 0, count = w[(d + L.RING_COUNT) >>> 2]!; i < count; i++) {
        const rec = base + slot * REC;
        if (start) add(this.owner(w[(rec + L.PRI_SOURCE) >>> 2]!, w[(rec + L.PRI_GRPID) >>> 2]!, false));
        start = (w[(rec + L.PRI_FLAGS) >>> 2]! & L.PRI_LAST_PAGE) !== 0;
        slot = slot + 1 === depth ? 0 : slot + 1;
      }
    });
    for (const g of this.response.values()) add(g);
    return out;
  }

  /**
   * iommufd_auto_response_faults: answer INVALID every group of one
   * attachment, read or not; its engine contexts are routed here no more.
   */
  autoRespond(dev: object, pasid: number): void {
    const mine = (g: Delivered) => ('group' in g ? g.group.handle.dev === dev && g.group.handle.pasid === pasid
      : g.route !== undefined && g.route.dev === dev && g.route.pasid === pasid);
    const queued = this.takeQueued(mine);
    const read: Delivered[] = [];
    for (const [cookie, g] of this.response) {
      if (mine(g)) { this.response.delete(cookie); this.cookies.free(cookie); read.push(g); }
    }
    for (const [ctx, r] of this.routes) if (r.dev === dev && r.pasid === pasid) this.routes.delete(ctx);
    for (const g of queued) this.answer(g, IOMMUFD_PAGE_RESP_INVALID);
    for (const g of read) this.answer(g, IOMMUFD_PAGE_RESP_INVALID);
  }

  /** iommufd_fault_destroy: everything pending is answered INVALID; the ring goes. */
  destroy(): void {
    this.dead = true;
    const queued = this.takeQueued(() => true);
    const read = [...this.response.values()];
    this.response.clear();
    for (const g of queued) this.answer(g, IOMMUFD_PAGE_RESP_INVALID);
    for (const g of read) this.answer(g, IOMMUFD_PAGE_RESP_INVALID);
    this.routes.clear();
    this.engine.ringDestroy(this.ring); // routed contexts send no page request from now on
    this.engine.putFrames(this.pfn, this.pages);
  }
}

/** An event queue's fd (iommufd_eventq_init): holds its object (users + 1) and the iommufd. */
abstract class EventqFile<Q extends IommufdObject & { readonly readable: boolean; onReadable: (() => void) | null }> extends KFile {
  constructor(name: string, readonly queue: Q, private readonly ictx: KFile) {
    super(name);
    queue.users++;
    ictx.get();
    // wake_up_interruptible_poll on every record queued: poll waiters,
    // waitReadable, onReadable callbacks and doorbells (KFile.watch).
    queue.onReadable = () => this.signalReadable();
  }

  /** iommufd_eventq_fops_poll: always writable; readable while records wait. */
  override poll(events: number): number {
    const ready = POLLOUT | (this.queue.readable ? POLLIN | POLLRDNORM : 0);
    return ready & (events | POLLERR | POLLHUP);
  }

  protected override release(): void {
    this.queue.onReadable = null;
    this.queue.users--;
    this.ictx.put();
  }
}

/** The fault fd ("[iommufd-pgfault]"): page-fault groups out, responses in. */
export class FaultFile extends EventqFile<Fault> {
  constructor(fault: Fault, ictx: KFile) { super('anon_inode:[iommufd-pgfault]', fault, ictx); }
  /** A readiness hook: in shared-memory mode the FAULT also listens for workers' groups while hooks exist. */
  override watch(hook: Parameters<KFile['watch']>[0]): () => void {
    const off = super.watch(hook);
    this.queue.watchWorkers(() => this.watchers > 0);
    return off;
  }
  override read(buf: Uint8Array): number { return this.queue.read(buf); }
  override write(buf: Uint8Array): number { return this.queue.write(buf); }
}

/** What IOMMU_FAULT_QUEUE_ALLOC needs from the iommufd context. */
export interface FaultCtx {
  readonly objects: ObjectTable;
  readonly engine: Engine;
  /** The FAULT ring's size (HostOptions.faultRing). */
  readonly faultRing?: FaultRingSize;
  /** The iommufd file itself, which the new fd keeps referenced. */
  readonly file: KFile;
  installFd(file: KFile): number;
}

/** IOMMU_FAULT_QUEUE_ALLOC: a FAULT object and its fd. */
export function faultQueueAlloc(ctx: FaultCtx, cmd: Decoded<typeof iommu_fault_alloc>): void {
  if (cmd.flags !== 0) throw new SysError('EOPNOTSUPP');
  const fault = ctx.objects.add(new Fault(ctx.engine, ctx.faultRing));
  cmd.out_fault_id = fault.id;
  cmd.out_fault_fd = ctx.installFd(new FaultFile(fault, ctx.file));
}

/** The newest kernels' cap on a vEVENTQ's depth (1 << 19 accepted, more EINVAL). */
const VEVENTQ_DEPTH_MAX = 1 << 19;
const HEADER = iommufd_vevent_header.size;

/** The event data a vEVENTQ type carries (its payload struct); a type no unit produces gets the largest. */
function dataBytes(vtype: number): number {
  switch (vtype) {
    case IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: return iommu_vevent_arm_smmuv3.size;
    case IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: return iommu_vevent_tegra241_cmdqv.size;
    case IOMMU_VEVENTQ_TYPE_SELFTEST: return iommu_viommu_event_selftest.size;
    default: return iommu_vevent_arm_smmuv3.size;
  }
}

/**
 * VEVENTQ (eventq.c): the events a vIOMMU forwards, of one type, read from
 * an fd as struct iommufd_vevent_header + payload. The queue is an engine
 * ring in linear memory (assembly/events.ts): the engine records the
 * refused translations of routed contexts there on the fault path, and
 * report() adds the events made here, so one ring keeps one order and one
 * sequence. At most `depth` events wait; when full, an event is dropped and
 * the single LOST_EVENTS header moves to the tail with the next sequence
 * number, so every lost event still takes a number and the gap shows how
 * many went (iommufd_viommu_report_event).
 */
export class Veventq extends IommufdObject {
  readonly type = 'VEVENTQ' as const;
  /** The engine ring, and the frames that hold its records. */
  readonly ring: number;
  private readonly pfn: number;
  private readonly pages: number;
  readonly dataBytes: number;
  onReadable: (() => void) | null = null;

  constructor(readonly viommu: Viommu, readonly vtype: number, readonly depth: number, private readonly engine: Engine) {
    super();
    this.dataBytes = dataBytes(vtype);
    this.pages = Math.ceil((depth * (HEADER + this.dataBytes)) / PAGE);
    this.pfn = engine.allocFrames(this.pages); // ENOMEM before anything is linked
    try {
      this.ring = engine.ringCreate(this.pfn, depth, this.dataBytes);
    } catch (e) {
      engine.putFrames(this.pfn, this.pages);
      throw e;
    }
    viommu.users++;
    viommu.veventqs.set(vtype, this);
  }

  /** iommufd_viommu_report_event for this queue: `payload` is the event data (dataBytes long). */
  report(payload: Uint8Array): void {
    const w = [0n, 0n, 0n, 0n];
    const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    for (let i = 0; i * 8 < payload.length; i++) {
      w[i] = payload.length - i * 8 >= 8 ? dv.getBigUint64(i * 8, true) : BigInt(dv.getUint32(i * 8, true));
    }
    this.engine.ringPush(this.ring, w);
    this.signal();
  }

  /** Tell the fd's waiters that records arrived (the engine recorded some, or report() did). */
  signal(): void { this.onReadable?.(); }

  get readable(): boolean {
    const L = this.engine.layout;
    return this.engine.withRing(this.ring, (d, w) => w[(d + L.RING_COUNT) >>> 2] !== 0 || (w[(d + L.RING_LOST) >>> 2]! & 1) !== 0);
  }

  /**
   * iommufd_veventq_fops_read: whole records in order, then a LOST_EVENTS
   * header waiting at the tail; one that does not fit stays queued. A
   * buffer shorter than a header, or one that takes no record while one
   * waits, is EINVAL (the newest kernels, as their selftest expects). The
   * records are copied out of the ring as they lie, a run at a time.
   */
  read(buf: Uint8Array): number {
    if (buf.length < HEADER) throw new SysError('EINVAL');
    const L = this.engine.layout, rec = HEADER + this.dataBytes;
    return this.engine.withRing(this.ring, (d, w) => {
      const bytes = this.engine.bytes;
      const base = w[(d + L.RING_BASE) >>> 2]!;
      let head = w[(d + L.RING_HEAD) >>> 2]!, count = w[(d + L.RING_COUNT) >>> 2]!;
      const lost = w[(d + L.RING_LOST) >>> 2]!;
      let done = 0;
      let n = Math.min(count, Math.floor(buf.length / rec));
      if (count > 0 && n === 0) throw new SysError('EINVAL');
      while (n > 0) {
        const run = Math.min(n, this.depth - head);
        buf.set(bytes.subarray(base + head * rec, base + (head + run) * rec), done);
        done += run * rec;
        head = head + run === this.depth ? 0 : head + run;
        count -= run;
        n -= run;
      }
      w[(d + L.RING_HEAD) >>> 2] = head;
      w[(d + L.RING_COUNT) >>> 2] = count;
      if (count === 0 && (lost & 1) !== 0) {
        if (buf.length - done >= HEADER) {
          iommufd_vevent_header.encode({ flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: w[(d + L.RING_LOST_SEQ) >>> 2]! }, buf, done);
          done += HEADER;
          w[(d + L.RING_LOST) >>> 2] = lost & ~1;
        }
      }
      return done;
    });
  }

  destroy(): void {
    this.engine.ringDestroy(this.ring); // routed contexts record nothing from now on
    this.engine.putFrames(this.pfn, this.pages);
    this.viommu.veventqs.delete(this.vtype);
    this.viommu.refreshRoutes();
    this.viommu.users--;
  }
}

/** The vEVENTQ fd ("[iommufd-viommu-event]"): records out; no write method (EINVAL). */
export class VeventqFile extends EventqFile<Veventq> {
  constructor(veventq: Veventq, ictx: KFile) { super('anon_inode:[iommufd-viommu-event]', veventq, ictx); }
  override read(buf: Uint8Array): number { return this.queue.read(buf); }
}

/**
 * IOMMU_VEVENTQ_ALLOC (eventq.c iommufd_veventq_alloc): flags, __reserved
 * and the DEFAULT type EOPNOTSUPP, the depth EINVAL, the vIOMMU ENOENT, a
 * second queue of one type on a vIOMMU EEXIST. The type is not checked
 * against the driver.
 */
export function veventqAlloc(ctx: FaultCtx, cmd: Decoded<typeof iommu_veventq_alloc>): void {
  if (cmd.flags !== 0 || cmd.__reserved !== 0 || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  if (cmd.veventq_depth === 0 || cmd.veventq_depth > VEVENTQ_DEPTH_MAX) throw new SysError('EINVAL');
  const viommu = ctx.objects.get<Viommu>(cmd.viommu_id, 'VIOMMU');
  if (viommu.veventqs.has(cmd.type)) throw new SysError('EEXIST');
  const q = ctx.objects.add(new Veventq(viommu, cmd.type, cmd.veventq_depth, ctx.engine));
  viommu.refreshRoutes();
  cmd.out_veventq_id = q.id;
  cmd.out_veventq_fd = ctx.installFd(new VeventqFile(q, ctx.file));
}
