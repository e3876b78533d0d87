// Event queues (drivers/iommu/iommufd/eventq.c): FAULT and VEVENTQ.
//
// FAULT: a queue of I/O page-fault groups
// read from an fd as struct iommu_hwpt_pgfault records and answered by
// writing struct iommu_hwpt_page_response records to it.
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

/** A group of page requests from one device attachment, and who answers it. */
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
 * A FIFO with O(1) take from the front (Array.prototype.shift copies a
 * large array: reading 100,000 queued records one by one was quadratic).
 * Taken slots are dropped in one splice once they are most of the array.
 */
export class Fifo<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number { return this.items.length - this.head; }
  first(): T { return this.items[this.head]; }
  last(): T | undefined { return this.items.length > this.head ? this.items[this.items.length - 1] : undefined; }
  push(v: T): void { this.items.push(v); }
  popLast(): void { if (this.items.length > this.head) this.items.pop(); }
  shift(): T {
    const v = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head === this.items.length) { this.items.length = 0; this.head = 0; }
    else if (this.head >= 1024 && this.head * 2 >= this.items.length) { this.items.splice(0, this.head); this.head = 0; }
    return v;
  }
  unshift(v: T): void {
    if (this.head > 0) this.items[--this.head] = v;
    else this.items.unshift(v);
  }
  /** Take out every item `take` answers true for, in order. */
  remove(take: (v: T) => boolean): T[] {
    const out: T[] = [], keep: T[] = [];
    for (let i = this.head; i < this.items.length; i++) (take(this.items[i]) ? out : keep).push(this.items[i]);
    this.items = keep;
    this.head = 0;
    return out;
  }
}

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
  /** Groups not yet read, FIFO. */
  private readonly deliver = new Fifo<FaultGroup>();
  /** Groups read and not yet answered, by cookie. */
  private readonly response = new Map<number, FaultGroup>();
  private readonly cookies = new CookieAllocator();
  /** Called when a group is queued (readiness for poll and waiters). */
  onReadable: (() => void) | null = null;

  /** iommufd_fault_iopf_handler: queue a group for the reader. */
  report(group: FaultGroup): void {
    this.deliver.push(group);
    this.onReadable?.();
  }

  get readable(): boolean { return this.deliver.length > 0; }

  /** iommufd_fault_fops_read: whole groups that fit; 0 when none does (no error). */
  read(buf: Uint8Array): number {
    const size = iommu_hwpt_pgfault.size;
    if (buf.length % size !== 0) throw new SysError('ESPIPE');
    let done = 0;
    while (this.deliver.length > 0) {
      const g = this.deliver.first();
      if (done >= buf.length || g.requests.length * size > buf.length - done) break;
      this.deliver.shift();
      const cookie = this.cookies.alloc();
      if (cookie > 0xffff_ffff) { this.cookies.free(cookie); this.deliver.unshift(g); break; } // xa_limit_32b exhausted
      g.cookie = cookie;
      this.response.set(cookie, g);
      for (const r of g.requests) {
        iommu_hwpt_pgfault.encode({
          flags: r.flags, dev_id: g.devId, pasid: r.pasid, grpid: r.grpid, perm: r.perm, addr: r.addr, length: 0, cookie,
        }, buf, done);
        done += size;
      }
    }
    return done;
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
      g.respond(r.code);
      done += size;
    }
    if (done === 0 && err) throw err;
    return done;
  }

  /** iommufd_auto_response_faults: answer INVALID every group of one attachment. */
  autoRespond(dev: object, pasid: number): void {
    const mine = (g: FaultGroup) => g.handle.dev === dev && g.handle.pasid === pasid;
    for (const g of this.deliver.remove(mine)) g.respond(IOMMUFD_PAGE_RESP_INVALID);
    for (const [cookie, g] of this.response) {
      if (mine(g)) { this.response.delete(cookie); this.cookies.free(cookie); g.respond(IOMMUFD_PAGE_RESP_INVALID); }
    }
  }

  /** iommufd_fault_destroy: everything pending is answered INVALID. */
  destroy(): void {
    for (const g of this.deliver.remove(() => true)) g.respond(IOMMUFD_PAGE_RESP_INVALID);
    for (const g of this.response.values()) g.respond(IOMMUFD_PAGE_RESP_INVALID);
    this.response.clear();
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
  override read(buf: Uint8Array): number { return this.queue.read(buf); }
  override write(buf: Uint8Array): number { return this.queue.write(buf); }
}

/** What IOMMU_FAULT_QUEUE_ALLOC needs from the iommufd context. */
export interface FaultCtx {
  readonly objects: ObjectTable;
  readonly engine: Engine;
  /** The iommufd file itself, which the new fd keeps referenced. */
  readonly file: KFile;
  installFd(file: KFile): number;
}

/** IOMMU_FAULT_QUEUE_ALLOC: a FAULT object and its fd. */
export function faultQueueAlloc(ctx: FaultCtx, cmd: Decoded<typeof iommu_fault_alloc>): void {
  if (cmd.flags !== 0) throw new SysError('EOPNOTSUPP');
  const fault = ctx.objects.add(new Fault());
  cmd.out_fault_id = fault.id;
  cmd.out_fault_fd = ctx.installFd(new FaultFile(fault, ctx.file));
}

/** The newest kernels' cap on a vEVENTQ's depth (1 << 19 accepted, more EINVAL). */
const VEVENTQ_DEPTH_MAX = 1 << 19;
const HEADER = iommufd_vevent_header.size;
const PAGE = 4096;

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
