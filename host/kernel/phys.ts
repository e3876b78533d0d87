// Host physical memory as the kernel sees it: segment 0 is the engine's
// linear memory, the others are the embedder's buffers (DESIGN 2). A
// physical address is a number: segment * 2^32 + offset (exact in a double,
// since segments are below 2^20).

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';

export const SEG_SPAN = 0x1_0000_0000;
export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/**
 * x % unit for an integer x (a VA, a physical address, a length) and a
 * power of two unit, from 0 to unit - 1. Beyond 2^31 a double's % is a
 * call to fmod, which cost more than the rest of a 4 KiB pin; dividing by
 * a power of two is exact, so this is too. Equal to % wherever that is 0
 * (and NaN for NaN or an infinity, as %), so `offIn(x, u) === 0` tests
 * alignment as % did.
 */
export function offIn(x: number, unit: number): number {
  return x - Math.floor(x / unit) * unit;
}

/** offIn() of a 4 KiB frame. */
export function pageOff(x: number): number { return offIn(x, PAGE_SIZE); }

/** A buffer an embedder registers as physical memory. */
export type SegmentSource = ArrayBuffer | SharedArrayBuffer | WebAssembly.Memory | Uint8Array;

export interface Segment {
  readonly id: number;
  readonly size: number;
  /** Physical address of the segment's first byte. */
  readonly base: number;
}

interface SegEntry { source: SegmentSource; size: number; view: Uint8Array; pins: number }

export class PhysMem {
  private readonly segs = new Map<number, SegEntry>();

  constructor(readonly engine: Engine) {
    // Guest tables in an embedder's segment are walked through these views.
    engine.setSegmentView((seg) => (seg !== 0 && this.segs.has(seg) ? this.view(seg) : null));
  }

  /** The size a buffer would have as a segment. */
  static sizeOf(source: SegmentSource): number { return viewOf(source).byteLength; }

  /** The external segments, in order of registration. */
  segments(): Segment[] {
    return [...this.segs].map(([id, s]) => ({ id, size: s.size, base: id * SEG_SPAN }));
  }

  /** Register an embedder buffer; its current length is the segment size. */
  addSegment(source: SegmentSource): Segment {
    const view = viewOf(source);
    if (view.byteLength === 0 || view.byteLength > SEG_SPAN) throw new SysError('EINVAL', 'segment size must be 1 byte to 4 GiB');
    const id = this.engine.addSegment(view.byteLength);
    this.segs.set(id, { source, size: view.byteLength, view, pins: 0 });
    return { id, size: view.byteLength, base: id * SEG_SPAN };
  }

  /** ENOENT for an unknown segment, EBUSY while pages of it are pinned (an IOAS maps them). */
  checkRemovable(id: number): void {
    const s = this.segs.get(id);
    if (!s) throw new SysError('ENOENT');
    if (s.pins > 0) throw new SysError('EBUSY');
  }

  removeSegment(id: number): void {
    this.checkRemovable(id);
    this.engine.removeSegment(id);
    this.segs.delete(id);
  }

  segmentSize(id: number): number {
    if (id === 0) return this.engine.memory.buffer.byteLength;
    const s = this.segs.get(id);
    if (!s) throw new SysError('EFAULT');
    return s.size;
  }

  pinSegment(id: number, delta: number): void {
    const s = this.segs.get(id);
    if (s) s.pins += delta;
  }

  /** Segments a worker can reach too: those over a SharedArrayBuffer or a shared WebAssembly.Memory. */
  sharedSegments(): { id: number; source: SharedArrayBuffer | WebAssembly.Memory }[] {
    const out: { id: number; source: SharedArrayBuffer | WebAssembly.Memory }[] = [];
    for (const [id, s] of this.segs) {
      const src = s.source;
      if (typeof SharedArrayBuffer === 'undefined') break;
      if (src instanceof SharedArrayBuffer || (src instanceof WebAssembly.Memory && src.buffer instanceof SharedArrayBuffer)) out.push({ id, source: src });
    }
    return out;
  }

  /** The bytes of a segment (re-derived when a WebAssembly.Memory has grown). */
  view(seg: number): Uint8Array {
    if (seg === 0) return this.engine.bytes;
    const s = this.segs.get(seg);
    if (!s) throw new SysError('EFAULT');
    // A grown non-shared Memory detached the old buffer: the view reads as empty.
    // (.length: a typed array's byteLength is a slow path in Node 20's V8.)
    if (s.source instanceof WebAssembly.Memory && s.view.length === 0) s.view = new Uint8Array(s.source.buffer, 0, s.size);
    return s.view;
  }

  /** Copy [pa, pa + dst.length) into dst. The range must lie in one segment. */
  read(pa: number, dst: Uint8Array): void {
    const seg = Math.floor(pa / SEG_SPAN), off = pa - seg * SEG_SPAN;
    dst.set(this.view(seg).subarray(off, off + dst.length));
  }

  write(pa: number, src: Uint8Array): void {
    const seg = Math.floor(pa / SEG_SPAN), off = pa - seg * SEG_SPAN;
    this.view(seg).set(src, off);
  }
}

/** The bytes of a segment source (a Memory's current buffer). */
export function viewOf(source: SegmentSource): Uint8Array {
  if (source instanceof WebAssembly.Memory) return new Uint8Array(source.buffer);
  if (source instanceof Uint8Array) return source;
  return new Uint8Array(source);
}
