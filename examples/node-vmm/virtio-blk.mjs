// A virtio-blk-style device model over one split virtqueue (virtio 1.x,
// 2.7 "Split Virtqueues"; 5.2 "Block Device"), written as a device behind
// an IOMMU must be: it holds no reference to guest memory at all. Every
// descriptor, ring index and buffer byte it touches goes through `dma`
// (`device.dma` of a function from host.addDevice), so every address in the
// ring is an IOVA, translated and permission-checked by the vIOMMU; a
// refused access throws DmaFault and moves no byte.
//
// Guest input is not trusted: ring indices are taken modulo the queue size,
// a chain longer than the queue is an error, indirect descriptors are
// refused, lengths are checked against what the request needs.

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const SECTOR = 512;
/** The device id GET_ID returns (20 bytes, NUL-padded). */
export const DEVICE_ID = 'wasm-viommu-blk0';

/** Ring layout of a queue of `size` entries (2.7.{5,6,8}): offsets from each area's IOVA. */
export const ring = {
  descBytes: (size) => 16 * size,
  availBytes: (size) => 6 + 2 * size,
  usedBytes: (size) => 6 + 8 * size,
};

export class VirtioBlk {
  /**
   * @param dma      the function's DMA (read, readInto, write): the only way to guest memory
   * @param disk     the backing store (a Uint8Array, a multiple of 512 bytes)
   * @param onFault  told of every DmaFault the device met (the VMM logs them)
   */
  constructor(dma, disk, { onFault = () => {} } = {}) {
    this.dma = dma;
    this.disk = disk;
    this.onFault = onFault;
    this.queue = null;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.completed = 0;
    this.failed = 0;
    this.scratch = new Uint8Array(16);
  }

  /** The driver sets the queue up (what the common config registers carry). */
  setQueue({ size, desc, avail, used }) {
    if (!(size > 0 && size <= 32768 && (size & (size - 1)) === 0)) throw new RangeError('queue size must be a power of two up to 32768');
    this.queue = { size, desc: BigInt(desc), avail: BigInt(avail), used: BigInt(used) };
    this.lastAvail = 0;
    this.usedIdx = 0;
  }

  u16(iova) {
    this.dma.readInto(iova, this.scratch.subarray(0, 2));
    return this.scratch[0] | (this.scratch[1] << 8);
  }

  putU16(iova, v) { this.dma.write(iova, Uint8Array.of(v & 0xff, (v >> 8) & 0xff)); }

  /** One descriptor (2.7.5): { addr, len, flags, next }. */
  desc(i) {
    const b = this.scratch;
    this.dma.readInto(this.queue.desc + BigInt(16 * i), b);
    const dv = new DataView(b.buffer, b.byteOffset, 16);
    return { addr: dv.getBigUint64(0, true), len: dv.getUint32(8, true), flags: dv.getUint16(12, true), next: dv.getUint16(14, true) };
  }

  /** The driver's notification: take every available chain, complete it, return how many. */
  kick() {
    const q = this.queue;
    if (!q) throw new Error('virtio-blk: notified before the queue was set up');
    const availIdx = this.u16(q.avail + 2n);
    let done = 0;
    while (this.lastAvail !== availIdx) {
      const head = this.u16(q.avail + 4n + BigInt(2 * (this.lastAvail % q.size))) % q.size;
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
      const written = this.request(head);
      // used ring element (id, len), then the index (2.7.8): the index last.
      const elem = new Uint8Array(8);
      const dv = new DataView(elem.buffer);
      dv.setUint32(0, head, true);
      dv.setUint32(4, written, true);
      this.dma.write(q.used + 4n + BigInt(8 * (this.usedIdx % q.size)), elem);
      this.usedIdx = (this.usedIdx + 1) & 0xffff;
      this.putU16(q.used + 2n, this.usedIdx);
      done++;
    }
    return done;
  }

  /** Serve one chain; returns the bytes written into device-writable buffers. */
  request(head) {
    const q = this.queue;
    const chain = [];
    for (let i = head, n = 0; ; n++) {
      if (n >= q.size) return this.fail(chain, 'descriptor chain longer than the queue');
      const d = this.desc(i);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) return this.fail(chain, 'indirect descriptors are not negotiated');
      chain.push(d);
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
      i = d.next % q.size;
    }
    // header (readable, 16 bytes) | data buffers | status (writable, 1 byte)  (5.2.6)
    const header = chain[0], status = chain[chain.length - 1];
    if (chain.length < 2 || header.len < 16 || header.flags & VIRTQ_DESC_F_WRITE || status.len < 1 || !(status.flags & VIRTQ_DESC_F_WRITE)) {
      return this.fail(chain, 'malformed request');
    }
    const data = chain.slice(1, -1);
    let written = 0;
    let code = VIRTIO_BLK_S_OK;
    try {
      const h = this.dma.read(header.addr, 16);
      const hv = new DataView(h.buffer, h.byteOffset, 16);
      const type = hv.getUint32(0, true);
      const sector = hv.getBigUint64(8, true);
      if (type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_OUT) {
        const bytes = data.reduce((s, d) => s + d.len, 0);
        const start = Number(sector) * SECTOR;
        const wantWrite = type === VIRTIO_BLK_T_IN;
        if (bytes % SECTOR || sector > BigInt(this.disk.length / SECTOR) || start + bytes > this.disk.length ||
            data.some((d) => Boolean(d.flags & VIRTQ_DESC_F_WRITE) !== wantWrite)) {
          code = VIRTIO_BLK_S_IOERR;
        } else {
          let at = start;
          for (const d of data) {
            if (wantWrite) {
              this.dma.write(d.addr, this.disk.subarray(at, at + d.len)); // disk -> guest
              written += d.len;
            } else {
              this.dma.readInto(d.addr, this.disk.subarray(at, at + d.len)); // guest -> disk
            }
            at += d.len;
          }
        }
      } else if (type === VIRTIO_BLK_T_GET_ID) {
        const id = new Uint8Array(20);
        id.set(new TextEncoder().encode(DEVICE_ID));
        if (data.length !== 1 || !(data[0].flags & VIRTQ_DESC_F_WRITE) || data[0].len < 20) code = VIRTIO_BLK_S_IOERR;
        else { this.dma.write(data[0].addr, id); written += 20; }
      } else {
        code = VIRTIO_BLK_S_UNSUPP;
      }
    } catch (e) {
      if (e?.name !== 'DmaFault') throw e;
      this.onFault(e);
      code = VIRTIO_BLK_S_IOERR;
    }
    return written + this.finish(status, code);
  }

  /** Write the status byte; 1 byte written, or 0 if even that is refused. */
  finish(status, code) {
    if (code === VIRTIO_BLK_S_OK) this.completed++;
    else this.failed++;
    try {
      this.dma.write(status.addr, Uint8Array.of(code));
      return 1;
    } catch (e) {
      if (e?.name !== 'DmaFault') throw e;
      this.onFault(e);
      return 0;
    }
  }

  fail(chain, why) {
    this.onFault({ name: 'RequestError', message: why });
    const status = chain[chain.length - 1];
    if (status && status.flags & VIRTQ_DESC_F_WRITE && status.len >= 1) return this.finish(status, VIRTIO_BLK_S_IOERR);
    this.failed++;
    return 0;
  }
}
