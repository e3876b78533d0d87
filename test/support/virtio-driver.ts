/**
 * A guest driver for the virtio-iommu model, played through the transport
 * byte by byte as a guest kernel would (Linux's drivers/virtio/virtio_mmio.c
 * and drivers/iommu/virtio-iommu.c, in the order they touch the device):
 * MMIO register reads and writes for status, feature negotiation and queue
 * setup; split rings, descriptor chains and requests written into guest
 * RAM; the used ring and the interrupt line read back. Nothing here calls
 * into the model except through its MmioRegion and the guest memory.
 *
 * Guest RAM is GuestRam.onHost: ArrayBuffers registered with the host as
 * physical segments and mapped at VAs, so that an endpoint's DMA through an
 * IOAS lands in the bytes the guest reads.
 */
import { expect } from 'vitest';
import { DmaFault, GuestRam, VirtioIommu, virtioIommuAbi as A, type DeviceHandle, type Host, type VirtioIommuEndpoint, type VirtioIommuOptions } from '../../host/index.js';

const R = A.virtio_mmio_regs;
type Reg = Parameters<typeof R.offsetOf>[0];

/** The guest's RAM layout: rings and requests low, DMA buffers above. */
export const RING_RAM = { gpa: 0x0, size: 1 << 20 };
export const DMA_RAM = { gpa: 0x4000_0000, size: 4 << 20 };

/** A wire that records its level and rising edges. */
export class TestIrq {
  level = false;
  edges = 0;
  set(level: boolean): void {
    if (level && !this.level) this.edges++;
    this.level = level;
  }
}

/** A bump allocator over a guest RAM region; mark/release recycle what a finished request used. */
class GuestAlloc {
  private next: number;
  constructor(private readonly base: number, private readonly size: number) { this.next = base; }
  alloc(n: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + n > this.base + this.size) throw new Error('guest allocator exhausted');
    this.next = at + n;
    return at;
  }
  mark(): number { return this.next; }
  release(mark: number): void { this.next = mark; }
}

export interface Buf { addr: number; len: number; write?: boolean; flags?: number; next?: number }

/** The driver's side of one split queue. */
export class DriverQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private availIdx = 0;
  lastUsed = 0;
  private readonly free: number[];
  constructor(private readonly g: VirtioGuest, readonly index: number, readonly size: number) {
    this.desc = g.alloc.alloc(size * A.virtq_desc.size, A.VIRTQ_DESC_ALIGN);
    this.avail = g.alloc.alloc(A.virtq_avail.size + size * A.virtq_avail_elem.size + 2, A.VIRTQ_AVAIL_ALIGN);
    this.used = g.alloc.alloc(A.virtq_used.size + size * A.virtq_used_elem.size + 2, A.VIRTQ_USED_ALIGN);
    this.free = Array.from({ length: size }, (_, i) => i);
  }

  /** Write one descriptor at table index i. */
  writeDesc(i: number, d: { addr: number | bigint; len: number; flags: number; next: number }, table = this.desc): void {
    this.g.write(table + i * A.virtq_desc.size, A.virtq_desc.encode({ addr: BigInt(d.addr), len: d.len, flags: d.flags, next: d.next }));
  }

  /** Chain `bufs` through free descriptors (NEXT links, WRITE flags) and return the head. */
  addChain(bufs: Buf[]): number {
    if (bufs.length > this.free.length) throw new Error('queue full');
    const ids = bufs.map(() => this.free.shift()!);
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      const flags = b.flags ?? ((b.write ? A.VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : A.VIRTQ_DESC_F_NEXT));
      this.writeDesc(ids[k], { addr: b.addr, len: b.len, flags, next: b.next ?? (last ? 0 : ids[k + 1]) });
    });
    this.publish(ids[0]);
    return ids[0];
  }

  /** Put a head in the available ring and bump avail.idx. */
  publish(head: number): void {
    const slot = this.availIdx % this.size;
    this.g.write(this.avail + A.virtq_avail.size + slot * A.virtq_avail_elem.size, A.virtq_avail_elem.encode({ id: head }));
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.setAvailIdx(this.availIdx);
  }

  /** Write avail.idx as it is (tests also write bogus values). */
  setAvailIdx(v: number): void {
    const at = this.avail + A.virtq_avail.offsetOf('idx');
    const b = new Uint8Array(2);
    b[0] = v & 0xff; b[1] = (v >> 8) & 0xff;
    this.g.write(at, b);
  }

  setAvailFlags(v: number): void {
    const b = new Uint8Array(2);
    b[0] = v; this.g.write(this.avail + A.virtq_avail.offsetOf('flags'), b);
  }

  usedIdx(): number { return A.virtq_used.get(this.g.read(this.used, A.virtq_used.size), 'idx'); }

  /** Used elements since the last call; their descriptors return to the free list (heads only: chains are rebuilt per request). */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const slot = this.lastUsed % this.size;
      const e = A.virtq_used_elem.decode(this.g.read(this.used + A.virtq_used.size + slot * A.virtq_used_elem.size, A.virtq_used_elem.size));
      out.push({ id: e.id, len: e.len });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Return descriptors to the free list. */
  release(ids: number[]): void { for (const i of ids) if (!this.free.includes(i)) this.free.push(i); }

  kick(): void { this.g.mmioWrite('QueueNotify', this.index); }
}

export interface Reply {
  /** The used length the device reported (0: buffers returned unwritten). */
  usedLen: number;
  /** The device-writable bytes as the device left them. */
  written: Uint8Array;
  /** The tail's status byte (the last 4 writable bytes). */
  status: number;
  /** The tail's reserved bytes. */
  tailReserved: number[];
}

export interface GuestOptions extends Partial<Omit<VirtioIommuOptions, 'host' | 'memory' | 'irq'>> {
  /** Feature bits the driver accepts, as a filter over the offer (default: all offered). */
  accept?: (offered: bigint) => bigint;
  requestQueueSize?: number;
  eventQueueSize?: number;
  /** Stop before DRIVER_OK. */
  noDriverOk?: boolean;
}

export class VirtioGuest {
  readonly ram: GuestRam;
  readonly irq = new TestIrq();
  readonly dev: VirtioIommu;
  readonly alloc: GuestAlloc;
  requestq!: DriverQueue;
  eventq!: DriverQueue;
  features = 0n;
  offered = 0n;

  constructor(readonly host: Host, opts: GuestOptions = {}) {
    this.ram = GuestRam.onHost(host, [RING_RAM, DMA_RAM]);
    this.alloc = new GuestAlloc(RING_RAM.gpa + 0x1000, RING_RAM.size - 0x1000);
    this.dev = new VirtioIommu({ host, memory: this.ram, irq: this.irq, ...opts });
  }

  // ---- MMIO ---------------------------------------------------------------

  mmioRead(reg: Reg): number { return this.dev.mmio.read(R.offsetOf(reg), 4); }
  mmioWrite(reg: Reg, v: number): void { this.dev.mmio.write(R.offsetOf(reg), 4, v); }
  configRead(field: Parameters<typeof A.virtio_iommu_config.offsetOf>[0], size: 1 | 2 | 4 = 4): number {
    return this.dev.mmio.read(R.offsetOf('Config') + A.virtio_iommu_config.offsetOf(field), size);
  }
  configWrite(field: Parameters<typeof A.virtio_iommu_config.offsetOf>[0], size: 1 | 2 | 4, value: number): void {
    this.dev.mmio.write(R.offsetOf('Config') + A.virtio_iommu_config.offsetOf(field), size, value);
  }
  /** A 64-bit config field as two 32-bit reads, low then high ([VIRTIO] 4.2.2.2). */
  configRead64(field: Parameters<typeof A.virtio_iommu_config.offsetOf>[0]): bigint {
    const at = R.offsetOf('Config') + A.virtio_iommu_config.offsetOf(field);
    const lo = this.dev.mmio.read(at, 4), hi = this.dev.mmio.read(at + 4, 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  read(gpa: number, n: number): Uint8Array {
    const b = new Uint8Array(n);
    if (!this.ram.read(gpa, b)) throw new Error(`guest read at 0x${gpa.toString(16)}`);
    return b;
  }
  write(gpa: number, b: Uint8Array): void {
    if (!this.ram.write(gpa, b)) throw new Error(`guest write at 0x${gpa.toString(16)}`);
  }

  // ---- Initialisation, as virtio_mmio.c + virtio.c do it -------------------

  /** Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. Returns the negotiated features. */
  init(opts: GuestOptions = {}): bigint {
    expect(this.mmioRead('MagicValue')).toBe(A.VIRTIO_MMIO_MAGIC);
    expect(this.mmioRead('Version')).toBe(A.VIRTIO_MMIO_VERSION);
    expect(this.mmioRead('DeviceID')).toBe(A.VIRTIO_ID_IOMMU);
    this.mmioWrite('Status', 0);
    this.mmioWrite('Status', A.VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.mmioWrite('Status', A.VIRTIO_CONFIG_S_ACKNOWLEDGE | A.VIRTIO_CONFIG_S_DRIVER);
    this.offered = this.readDeviceFeatures();
    this.features = opts.accept ? opts.accept(this.offered) : this.offered;
    this.writeDriverFeatures(this.features);
    const s = A.VIRTIO_CONFIG_S_ACKNOWLEDGE | A.VIRTIO_CONFIG_S_DRIVER | A.VIRTIO_CONFIG_S_FEATURES_OK;
    this.mmioWrite('Status', s);
    if (!(this.mmioRead('Status') & A.VIRTIO_CONFIG_S_FEATURES_OK)) return -1n;
    this.requestq = this.setupQueue(A.VIRTIO_IOMMU_REQUESTQ, opts.requestQueueSize ?? 64);
    this.eventq = this.setupQueue(A.VIRTIO_IOMMU_EVENTQ, opts.eventQueueSize ?? 16);
    if (!opts.noDriverOk) this.mmioWrite('Status', s | A.VIRTIO_CONFIG_S_DRIVER_OK);
    return this.features;
  }

  readDeviceFeatures(): bigint {
    this.mmioWrite('DeviceFeaturesSel', 0);
    const lo = this.mmioRead('DeviceFeatures');
    this.mmioWrite('DeviceFeaturesSel', 1);
    const hi = this.mmioRead('DeviceFeatures');
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  writeDriverFeatures(f: bigint): void {
    this.mmioWrite('DriverFeaturesSel', 0);
    this.mmioWrite('DriverFeatures', Number(f & 0xffffffffn));
    this.mmioWrite('DriverFeaturesSel', 1);
    this.mmioWrite('DriverFeatures', Number(f >> 32n));
  }

  setupQueue(index: number, size: number): DriverQueue {
    this.mmioWrite('QueueSel', index);
    expect(this.mmioRead('QueueReady')).toBe(0);
    const max = this.mmioRead('QueueNumMax');
    expect(max).toBeGreaterThanOrEqual(size);
    const q = new DriverQueue(this, index, size);
    this.mmioWrite('QueueNum', size);
    this.mmioWrite('QueueDescLow', q.desc);
    this.mmioWrite('QueueDescHigh', 0);
    this.mmioWrite('QueueDriverLow', q.avail);
    this.mmioWrite('QueueDriverHigh', 0);
    this.mmioWrite('QueueDeviceLow', q.used);
    this.mmioWrite('QueueDeviceHigh', 0);
    this.mmioWrite('QueueReady', 1);
    return q;
  }

  /** The interrupt handler: read InterruptStatus and ACK it (vm_interrupt). */
  interrupt(): number {
    const s = this.mmioRead('InterruptStatus');
    if (s) this.mmioWrite('InterruptACK', s);
    return s;
  }

  // ---- Requests -------------------------------------------------------------

  /**
   * Send one request: `readable` in device-readable buffers (one per array
   * element), `writable` sizes as device-writable buffers, kick, and read
   * the used element back. The writable buffers are pre-filled with 0xa5 so
   * that what the device wrote shows.
   */
  request(readable: Uint8Array[], writable: number[]): Reply {
    // Requests complete before this returns: their buffers are recycled for the next one.
    const mark = this.alloc.mark();
    try {
      return this.requestAt(readable, writable);
    } finally {
      this.alloc.release(mark);
    }
  }

  private requestAt(readable: Uint8Array[], writable: number[]): Reply {
    const bufs: Buf[] = [];
    for (const r of readable) {
      const at = this.alloc.alloc(Math.max(r.length, 1), 8);
      this.write(at, r);
      bufs.push({ addr: at, len: r.length });
    }
    const wr: { addr: number; len: number }[] = [];
    for (const n of writable) {
      const at = this.alloc.alloc(Math.max(n, 1), 8);
      this.write(at, new Uint8Array(n).fill(0xa5));
      wr.push({ addr: at, len: n });
      bufs.push({ addr: at, len: n, write: true });
    }
    return this.sendChain(bufs, wr);
  }

  /** Publish a chain, kick, and collect the reply from the writable buffers `wr`. */
  sendChain(bufs: Buf[], wr: { addr: number; len: number }[]): Reply {
    const q = this.requestq;
    const before = q.usedIdx();
    const head = q.addChain(bufs);
    q.kick();
    const used = q.takeUsed();
    expect(used.length, 'one used element per request').toBe(1);
    expect(used[0].id).toBe(head);
    expect(q.usedIdx()).toBe((before + 1) & 0xffff);
    q.release(this.chainIds(head, bufs.length));
    const total = wr.reduce((n, b) => n + b.len, 0);
    const written = new Uint8Array(total);
    let at = 0;
    for (const b of wr) { written.set(this.read(b.addr, b.len), at); at += b.len; }
    const tail = written.subarray(Math.max(0, used[0].len - 4), used[0].len);
    return { usedLen: used[0].len, written, status: used[0].len >= 4 ? tail[0] : -1, tailReserved: used[0].len >= 4 ? [...tail.subarray(1)] : [] };
  }

  /** The descriptor ids of a chain of n starting at head (as addChain allotted them). */
  private chainIds(head: number, n: number): number[] {
    const ids = [head];
    let i = head;
    for (let k = 1; k < n; k++) {
      const d = A.virtq_desc.decode(this.read(this.requestq.desc + i * A.virtq_desc.size, A.virtq_desc.size));
      i = d.next;
      ids.push(i);
    }
    return ids;
  }

  /** A request of the spec's shape: the readable struct, then a 4-byte tail. Asserts the tail's reserved bytes are zero (qtest read_tail_status). */
  private simple(bytes: Uint8Array): number {
    const r = this.request([bytes], [A.virtio_iommu_req_tail.size]);
    expect(r.usedLen).toBe(A.virtio_iommu_req_tail.size);
    expect(r.tailReserved, 'tail reserved bytes are zero').toEqual([0, 0, 0]);
    return r.status;
  }

  attach(domain: number, endpoint: number, flags = 0): number {
    const b = A.virtio_iommu_req_attach.encode({ head_type: A.VIRTIO_IOMMU_T_ATTACH, domain, endpoint, flags });
    return this.simple(b.subarray(0, A.ATTACH_READABLE_SIZE));
  }

  detach(domain: number, endpoint: number): number {
    const b = A.virtio_iommu_req_detach.encode({ head_type: A.VIRTIO_IOMMU_T_DETACH, domain, endpoint });
    return this.simple(b.subarray(0, A.DETACH_READABLE_SIZE));
  }

  map(domain: number, virtStart: bigint | number, virtEnd: bigint | number, physStart: bigint | number, flags: number): number {
    const b = A.virtio_iommu_req_map.encode({ head_type: A.VIRTIO_IOMMU_T_MAP, domain, virt_start: BigInt(virtStart), virt_end: BigInt(virtEnd), phys_start: BigInt(physStart), flags });
    return this.simple(b.subarray(0, A.MAP_READABLE_SIZE));
  }

  unmap(domain: number, virtStart: bigint | number, virtEnd: bigint | number): number {
    const b = A.virtio_iommu_req_unmap.encode({ head_type: A.VIRTIO_IOMMU_T_UNMAP, domain, virt_start: BigInt(virtStart), virt_end: BigInt(virtEnd) });
    return this.simple(b.subarray(0, A.UNMAP_READABLE_SIZE));
  }

  /** PROBE with a probe_size properties buffer: the status and the properties parsed as the Linux driver walks them. */
  probe(endpoint: number): { status: number; raw: Uint8Array; props: { type: number; length: number; value: Uint8Array }[] } {
    const probeSize = this.configRead('probe_size');
    const b = A.virtio_iommu_req_probe.encode({ head_type: A.VIRTIO_IOMMU_T_PROBE, endpoint });
    const r = this.request([b.subarray(0, A.PROBE_READABLE_SIZE)], [probeSize + A.virtio_iommu_req_tail.size]);
    expect(r.tailReserved).toEqual([0, 0, 0]);
    const raw = r.written.subarray(0, probeSize);
    const props: { type: number; length: number; value: Uint8Array }[] = [];
    let at = 0;
    while (at + A.virtio_iommu_probe_property.size <= probeSize) {
      const p = A.virtio_iommu_probe_property.decode(raw, at);
      const type = p.type & A.VIRTIO_IOMMU_PROBE_T_MASK;
      if (type === A.VIRTIO_IOMMU_PROBE_T_NONE) break;
      props.push({ type, length: p.length, value: raw.subarray(at, at + A.virtio_iommu_probe_property.size + p.length) });
      at += A.virtio_iommu_probe_property.size + p.length;
    }
    return { status: r.status, raw, props };
  }

  // ---- Events -----------------------------------------------------------------

  private eventBufs = new Map<number, number>();

  /** Post n device-writable buffers of `size` bytes on the event queue and kick it. */
  postEventBuffers(n: number, size: number = A.virtio_iommu_fault.size): void {
    for (let i = 0; i < n; i++) {
      const at = this.alloc.alloc(size, 8);
      const head = this.eventq.addChain([{ addr: at, len: size, write: true }]);
      this.eventBufs.set(head, at);
    }
    this.eventq.kick();
  }

  /** Used event buffers, decoded as virtio_iommu_fault records. */
  takeEvents(): { len: number; fault: ReturnType<typeof A.virtio_iommu_fault.decode> | null }[] {
    return this.eventq.takeUsed().map((u) => {
      const at = this.eventBufs.get(u.id)!;
      this.eventBufs.delete(u.id);
      this.eventq.release([u.id]);
      return { len: u.len, fault: u.len >= A.virtio_iommu_fault.size ? A.virtio_iommu_fault.decode(this.read(at, A.virtio_iommu_fault.size)) : null };
    });
  }

  /** Add an endpoint (a device the host created) to the device. */
  addEndpoint(id: number, device: DeviceHandle) { return this.dev.addEndpoint(id, device); }
}

// ---- Endpoint DMA, seen from the test ----------------------------------------

const P = 0x1000;

/** Pages of RING_RAM the harness's allocator never reaches (its rings and requests stay far below). */
export const TAGGED_RING = 0x80000;

/**
 * Each 4 KiB page of DMA_RAM, and of RING_RAM from TAGGED_RING up, starts
 * with its page number (u32): a DMA read tells which page it reached.
 */
export function tagPages(g: VirtioGuest): void {
  const tag = (gpa: number, size: number) => {
    const bytes = g.ram.bytesAt(gpa, size)!;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 0; at < size; at += P) view.setUint32(at, (gpa + at) / P, true);
  };
  tag(DMA_RAM.gpa, DMA_RAM.size);
  tag(RING_RAM.gpa + TAGGED_RING, RING_RAM.size - TAGGED_RING);
}

/** The page tag the endpoint reads at `iova` (raw device DMA, no fault report), or null when the IOMMU refuses it. */
export function reach(ep: VirtioIommuEndpoint, iova: number | bigint): number | null {
  try {
    const b = ep.device.dma.read(iova, 4);
    return new DataView(b.buffer).getUint32(0, true);
  } catch (e) {
    if (e instanceof DmaFault) return null;
    throw e;
  }
}

export function canWrite(ep: VirtioIommuEndpoint, iova: number | bigint, g: VirtioGuest, gpa: number): boolean {
  const before = g.read(gpa + 8, 4);
  const data = new Uint8Array([0xde, 0xad, 0xbe, 0xef]);
  try {
    ep.device.dma.write(BigInt(iova) + 8n, data);
  } catch (e) {
    if (!(e instanceof DmaFault)) throw e;
    expect(g.read(gpa + 8, 4), 'a refused DMA moves no byte').toEqual(before);
    return false;
  }
  expect(g.read(gpa + 8, 4)).toEqual(data);
  g.write(gpa + 8, before);
  return true;
}

/** Status names, for readable assertions. */
export const S = {
  OK: A.VIRTIO_IOMMU_S_OK, IOERR: A.VIRTIO_IOMMU_S_IOERR, UNSUPP: A.VIRTIO_IOMMU_S_UNSUPP, DEVERR: A.VIRTIO_IOMMU_S_DEVERR,
  INVAL: A.VIRTIO_IOMMU_S_INVAL, RANGE: A.VIRTIO_IOMMU_S_RANGE, NOENT: A.VIRTIO_IOMMU_S_NOENT, FAULT: A.VIRTIO_IOMMU_S_FAULT, NOMEM: A.VIRTIO_IOMMU_S_NOMEM,
} as const;
