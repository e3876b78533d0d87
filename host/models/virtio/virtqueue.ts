/**
 * The device side of a split virtqueue ([VIRTIO] 1.2 section 2.7) in guest
 * memory reached through a GuestMemory. Everything the driver wrote is
 * untrusted: indices, heads, `next` links, lengths, addresses and flags are
 * checked before use, chains are bounded (a loop cannot hang the device),
 * and a queue the driver broke raises VirtqueueError, which the transport
 * answers with DEVICE_NEEDS_RESET ([VIRTIO] 2.1.2) instead of acting on it.
 * Layouts come from virtio_iommu_abi.ts.
 */
import type { GuestMemory } from '../interfaces.js';
import {
  virtq_desc, virtq_avail, virtq_avail_elem, virtq_used, virtq_used_elem,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_ALIGN, VIRTQ_AVAIL_ALIGN, VIRTQ_USED_ALIGN, VIRTQ_MAX_SIZE,
} from '../virtio_iommu_abi.js';

/** The driver broke the queue's rules: the device needs a reset. */
export class VirtqueueError extends Error {
  override readonly name = 'VirtqueueError';
}

/** One buffer of a chain: a guest-physical address and a length. */
export interface VirtqBuffer { readonly addr: number; readonly len: number }

/** A descriptor chain taken from the available ring. */
export interface VirtqChain {
  /** The head index, to return in the used ring. */
  readonly head: number;
  /** Device-readable buffers, in order. */
  readonly readable: readonly VirtqBuffer[];
  /** Device-writable buffers, in order (after every readable one). */
  readonly writable: readonly VirtqBuffer[];
  readonly readableLength: number;
  readonly writableLength: number;
}

const TWO32 = 0x1_0000_0000;
const DESC = virtq_desc.size;
const AVAIL_RING = virtq_avail.size;
const AVAIL_ELEM = virtq_avail_elem.size;
const USED_RING = virtq_used.size;
const USED_ELEM = virtq_used_elem.size;

/** A 64-bit guest address as a number, NaN when it is not a safe integer (never backed). */
export function addr64(lo: number, hi: number): number {
  const v = (hi >>> 0) * TWO32 + (lo >>> 0);
  return Number.isSafeInteger(v) ? v : NaN;
}

function bigAddr(v: bigint): number {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : NaN;
}

export class SplitQueue {
  /** Queue size the driver chose (QueueNum). */
  size = 0;
  /** Guest-physical addresses of the three parts (QueueDesc, QueueDriver, QueueDevice). */
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  ready = false;
  /** Next available-ring entry the device takes, and the used index it next writes (free-running u16). */
  private lastAvail = 0;
  private usedIdx = 0;
  private readonly scratch = new Uint8Array(DESC);

  constructor(
    private readonly mem: GuestMemory,
    /** QueueNumMax. */
    readonly maxSize: number,
    /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
    private readonly indirect: () => boolean,
  ) {}

  private readonly halves = { desc: [0, 0], avail: [0, 0], used: [0, 0] };

  /** A write of one 32-bit half of a part's address (QueueDescLow/High, QueueDriver*, QueueDevice*). */
  setAddress(part: 'desc' | 'avail' | 'used', high: boolean, value: number): void {
    const h = this.halves[part];
    h[high ? 1 : 0] = value >>> 0;
    const a = addr64(h[0], h[1]);
    if (part === 'desc') this.descAddr = a;
    else if (part === 'avail') this.availAddr = a;
    else this.usedAddr = a;
  }

  /** Back to the reset state ([VIRTIO] 4.2.2: QueueReady 0, queue forgotten). */
  reset(): void {
    this.size = 0;
    this.descAddr = this.availAddr = this.usedAddr = 0;
    for (const h of Object.values(this.halves)) h.fill(0);
    this.ready = false;
    this.lastAvail = this.usedIdx = 0;
  }

  /** Whether the driver's configuration is usable: a power-of-2 size within QueueNumMax, aligned parts. */
  valid(): boolean {
    const s = this.size;
    return s > 0 && s <= this.maxSize && s <= VIRTQ_MAX_SIZE && (s & (s - 1)) === 0 &&
      this.descAddr % VIRTQ_DESC_ALIGN === 0 && this.availAddr % VIRTQ_AVAIL_ALIGN === 0 && this.usedAddr % VIRTQ_USED_ALIGN === 0;
  }

  /** Start a freshly configured queue: both indices from 0 ([VIRTIO] 2.7.13.1, 2.7.14: the driver zeroes the rings before QueueReady). */
  enable(): void {
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.ready = true;
  }

  private readU16(gpa: number): number {
    const b = this.scratch.subarray(0, 2);
    if (!this.mem.read(gpa, b)) throw new VirtqueueError(`ring read at 0x${gpa.toString(16)} is not guest RAM`);
    return b[0] | (b[1] << 8);
  }

  /** Whether the driver made buffers available that the device has not taken. */
  hasAvailable(): boolean {
    return this.readU16(this.availAddr + virtq_avail.offsetOf('idx')) !== this.lastAvail;
  }

  /**
   * Take the next available chain, or null when none waits. Throws
   * VirtqueueError when the driver broke the rules ([VIRTIO] 2.7.5.x, 2.7.13).
   */
  pop(): VirtqChain | null {
    const availIdx = this.readU16(this.availAddr + virtq_avail.offsetOf('idx'));
    if (availIdx === this.lastAvail) return null;
    // The driver may be at most a whole ring ahead ([VIRTIO] 2.7.6: idx wraps at 2^16).
    if (((availIdx - this.lastAvail) & 0xffff) > this.size) throw new VirtqueueError(`avail idx ${availIdx} runs ${(availIdx - this.lastAvail) & 0xffff} ahead of a ${this.size}-entry ring`);
    const slot = this.lastAvail % this.size;
    const head = this.readU16(this.availAddr + AVAIL_RING + slot * AVAIL_ELEM);
    const chain = this.walk(head);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return chain;
  }

  private readDesc(table: number, i: number): { addr: number; len: number; flags: number; next: number } {
    const b = this.scratch;
    if (!this.mem.read(table + i * DESC, b)) throw new VirtqueueError(`descriptor ${i} at 0x${(table + i * DESC).toString(16)} is not guest RAM`);
    return { addr: bigAddr(virtq_desc.get(b, 'addr')), len: virtq_desc.get(b, 'len'), flags: virtq_desc.get(b, 'flags'), next: virtq_desc.get(b, 'next') };
  }

  private walk(head: number): VirtqChain {
    if (head >= this.size) throw new VirtqueueError(`chain head ${head} outside a ${this.size}-entry table`);
    const readable: VirtqBuffer[] = [];
    const writable: VirtqBuffer[] = [];
    let readableLength = 0, writableLength = 0;
    let table = this.descAddr;
    let tableSize = this.size;
    let inIndirect = false;
    let i = head;
    // A chain visits at most every descriptor of its table once ([VIRTIO] 2.7.5.2: no longer than the queue size).
    let budget = tableSize;
    for (;;) {
      if (budget-- <= 0) throw new VirtqueueError('descriptor chain loops or is longer than its table');
      const d = this.readDesc(table, i);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        // [VIRTIO] 2.7.5.3: only with the feature, never inside an indirect table, never with NEXT; a whole number of descriptors.
        if (!this.indirect()) throw new VirtqueueError('INDIRECT descriptor without VIRTIO_RING_F_INDIRECT_DESC');
        if (inIndirect) throw new VirtqueueError('INDIRECT descriptor inside an indirect table');
        if (d.flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError('INDIRECT descriptor with NEXT');
        if (d.len === 0 || d.len % DESC !== 0 || d.len / DESC > VIRTQ_MAX_SIZE) throw new VirtqueueError(`indirect table of ${d.len} bytes`);
        table = d.addr;
        tableSize = d.len / DESC;
        budget = tableSize;
        inIndirect = true;
        i = 0;
        continue;
      }
      if (d.len > 0) {
        if (d.flags & VIRTQ_DESC_F_WRITE) {
          writable.push({ addr: d.addr, len: d.len });
          writableLength += d.len;
        } else {
          // [VIRTIO] 2.7.4.2: device-readable elements come before device-writable ones.
          if (writable.length > 0) throw new VirtqueueError('device-readable descriptor after a device-writable one');
          readable.push({ addr: d.addr, len: d.len });
          readableLength += d.len;
        }
      }
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
      if (d.next >= tableSize) throw new VirtqueueError(`next ${d.next} outside a ${tableSize}-entry table`);
      i = d.next;
    }
    return { head, readable, writable, readableLength, writableLength };
  }

  /** Return a chain to the driver with the number of bytes written into it ([VIRTIO] 2.7.8). */
  push(head: number, written: number): void {
    const slot = this.usedIdx % this.size;
    const elem = virtq_used_elem.encode({ id: head, len: written });
    if (!this.mem.write(this.usedAddr + USED_RING + slot * USED_ELEM, elem)) throw new VirtqueueError('used ring is not guest RAM');
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    // The element is written before the index that publishes it.
    const hdr = virtq_used.encode({ flags: 0, idx: this.usedIdx });
    const at = virtq_used.offsetOf('idx');
    if (!this.mem.write(this.usedAddr + at, hdr.subarray(at, virtq_used.offsetofend('idx')))) {
      throw new VirtqueueError('used ring is not guest RAM');
    }
  }

  /** Whether the driver wants an interrupt for used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT clear; no EVENT_IDX). */
  wantsInterrupt(): boolean {
    return (this.readU16(this.availAddr + virtq_avail.offsetOf('flags')) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Up to `max` bytes of the chain's readable part, gathered. `bytes` holds
   * what was read before the first buffer that is not guest RAM (`complete`
   * false then): the caller decides what a half-readable request means.
   */
  gather(chain: VirtqChain, max: number): { bytes: Uint8Array; complete: boolean } {
    const out = new Uint8Array(Math.min(max, chain.readableLength));
    let at = 0;
    for (const b of chain.readable) {
      if (at >= out.length) break;
      const n = Math.min(b.len, out.length - at);
      if (!this.mem.read(b.addr, out.subarray(at, at + n))) return { bytes: out.subarray(0, at), complete: false };
      at += n;
    }
    return { bytes: out, complete: true };
  }

  /** Whether the first `length` bytes of the chain's writable part are all guest RAM (checked before a request acts). */
  writableIsRam(chain: VirtqChain, length: number): boolean {
    let left = length;
    for (const b of chain.writable) {
      if (left <= 0) break;
      const n = Math.min(b.len, left);
      if (!this.mem.read(b.addr, new Uint8Array(n))) return false;
      left -= n;
    }
    return left <= 0;
  }

  /** Scatter `data` over the chain's writable part from its start (it must fit). Throws VirtqueueError where a buffer is not RAM. */
  scatter(chain: VirtqChain, data: Uint8Array): void {
    if (data.length > chain.writableLength) throw new RangeError('scatter: more bytes than the chain can take');
    let at = 0;
    for (const b of chain.writable) {
      if (at >= data.length) break;
      const n = Math.min(b.len, data.length - at);
      if (!this.mem.write(b.addr, data.subarray(at, at + n))) throw new VirtqueueError(`buffer at 0x${b.addr.toString(16)} is not guest RAM`);
      at += n;
    }
  }
}
