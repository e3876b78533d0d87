// The guest's side of the virtqueue: a driver running on the guest CPU.
// It writes its own RAM directly (a DataView over the emulator's memory, as
// a CPU emulator's stores would), and hands the device IOVAs it got from its
// DMA API (`dmaMap`), never guest-physical addresses: with a vIOMMU, what a
// device may reach is what the guest mapped for it.

import { ring, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID } from './virtio-blk.mjs';

const PAGE = 4096;
const up = (n, a) => Math.ceil(n / a) * a;

export class GuestDriver {
  /**
   * @param ram     the guest's RAM (an ArrayBuffer-backed view the CPU writes)
   * @param dmaApi  { map(gpa, length, { write }): iova, unmap(iova, length) }
   */
  constructor(ram, dmaApi, { queueSize = 64 } = {}) {
    this.ram = ram;
    this.dmaApi = dmaApi;
    this.size = queueSize;
    this.next = 0x10_0000; // a bump allocator for driver memory, from 1 MiB
    this.freeDesc = [];
    this.lastUsed = 0;
    this.availIdx = 0;
    this.inflight = new Map(); // head -> request
  }

  get dv() { return new DataView(this.ram.buffer, this.ram.byteOffset, this.ram.byteLength); }

  /** Page-aligned guest-physical memory. */
  alloc(length) {
    const gpa = this.next;
    this.next += up(length, PAGE);
    if (this.next > this.ram.byteLength) throw new RangeError('guest RAM exhausted');
    return gpa;
  }

  /** Allocate the rings in one DMA-coherent area, mapped for the device once. */
  setup() {
    const s = this.size;
    const descOff = 0, availOff = up(ring.descBytes(s), 2), usedOff = up(availOff + ring.availBytes(s), 4);
    const bytes = usedOff + ring.usedBytes(s);
    this.ringGpa = this.alloc(bytes);
    this.ram.fill(0, this.ringGpa, this.ringGpa + up(bytes, PAGE));
    this.ringIova = this.dmaApi.map(this.ringGpa, up(bytes, PAGE), { write: true });
    this.gpa = { desc: this.ringGpa + descOff, avail: this.ringGpa + availOff, used: this.ringGpa + usedOff };
    this.freeDesc = Array.from({ length: s }, (_, i) => s - 1 - i);
    return { size: s, desc: this.ringIova + BigInt(descOff), avail: this.ringIova + BigInt(availOff), used: this.ringIova + BigInt(usedOff) };
  }

  /** A buffer the device may use: guest memory plus its IOVA. */
  buffer(length, { write }) {
    const gpa = this.alloc(length);
    const iova = this.dmaApi.map(gpa, up(length, PAGE), { write });
    return { gpa, iova, length, mappedLength: up(length, PAGE) };
  }

  release(buf) { this.dmaApi.unmap(buf.iova, buf.mappedLength); }

  /**
   * Queue one request: a chain of header (device-readable), data buffers,
   * status (device-writable). `data` are buffers from `buffer()`.
   */
  submit(type, sector, data, { header, status } = {}) {
    const dv = this.dv;
    header ??= this.buffer(16, { write: false });
    status ??= this.buffer(1, { write: true });
    dv.setUint32(header.gpa, type, true);
    dv.setUint32(header.gpa + 4, 0, true);
    dv.setBigUint64(header.gpa + 8, BigInt(sector), true);
    this.ram[status.gpa] = 0xff; // not answered yet
    const deviceWrites = type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_GET_ID;
    const parts = [
      { addr: header.iova, len: 16, write: false },
      ...data.map((b) => ({ addr: b.iova, len: b.length, write: deviceWrites })),
      { addr: status.iova, len: 1, write: true },
    ];
    if (parts.length > this.freeDesc.length) throw new Error('virtqueue full');
    const ids = parts.map(() => this.freeDesc.pop());
    parts.forEach((p, k) => {
      const at = this.gpa.desc + 16 * ids[k];
      dv.setBigUint64(at, BigInt(p.addr), true);
      dv.setUint32(at + 8, p.len, true);
      dv.setUint16(at + 12, (k < parts.length - 1 ? VIRTQ_DESC_F_NEXT : 0) | (p.write ? VIRTQ_DESC_F_WRITE : 0), true);
      dv.setUint16(at + 14, k < parts.length - 1 ? ids[k + 1] : 0, true);
    });
    // avail ring entry, then the index (2.7.13): the index last
    dv.setUint16(this.gpa.avail + 4 + 2 * (this.availIdx % this.size), ids[0], true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    dv.setUint16(this.gpa.avail + 2, this.availIdx, true);
    const req = { type, sector, data, header, status, ids, head: ids[0] };
    this.inflight.set(ids[0], req);
    return req;
  }

  /** Reap the used ring: the requests the device completed, with their status and length. */
  reap() {
    const dv = this.dv;
    const usedIdx = dv.getUint16(this.gpa.used + 2, true);
    const out = [];
    while (this.lastUsed !== usedIdx) {
      const at = this.gpa.used + 4 + 8 * (this.lastUsed % this.size);
      const id = dv.getUint32(at, true), len = dv.getUint32(at + 4, true);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      const req = this.inflight.get(id);
      if (!req) throw new Error(`the device completed descriptor ${id}, which is not a request head`);
      this.inflight.delete(id);
      this.freeDesc.push(...req.ids);
      req.statusCode = this.ram[req.status.gpa];
      req.usedLen = len;
      out.push(req);
    }
    return out;
  }
}

export { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID };
