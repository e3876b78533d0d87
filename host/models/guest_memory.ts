/**
 * A ready-made GuestMemory: guest RAM as byte buffers (an emulator's
 * ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory view) at
 * guest-physical addresses, each optionally visible in the host's simulated
 * process at a VA (so that an iommufd-backed model can IOAS_MAP it).
 *
 * `GuestRam.onHost(host, layout)` builds one whose buffers are registered
 * with the host as physical segments and mapped at VAs: DMA that the host's
 * emulated devices do through an IOMMU lands in the same bytes the guest
 * (and the emulator) reads.
 */
import type { Host } from '../host.js';
import type { GuestMemory, GuestRamRegion } from './interfaces.js';

/** One region of GuestRam: its bytes and, if the host can map it, its VA there. */
export interface GuestRamBacking extends GuestRamRegion {
  readonly bytes: Uint8Array;
  /** The VA of the first byte in the host's simulated process; undefined = not host-mappable. */
  readonly va?: number;
}

export class GuestRam implements GuestMemory {
  private readonly list: GuestRamBacking[];

  constructor(regions: readonly GuestRamBacking[]) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i];
      if (!Number.isSafeInteger(r.gpa) || r.gpa < 0 || r.size !== r.bytes.length || r.size <= 0 || !Number.isSafeInteger(r.gpa + r.size)) {
        throw new RangeError(`bad guest RAM region at 0x${r.gpa.toString(16)}`);
      }
      if (i > 0 && sorted[i - 1].gpa + sorted[i - 1].size > r.gpa) throw new RangeError('guest RAM regions overlap');
    }
    this.list = sorted;
  }

  /**
   * Guest RAM at the given guest-physical addresses, each region a fresh
   * ArrayBuffer registered with the host (`addSegment`) and mapped at a VA
   * (`mapSegment`). Sizes must be multiples of 4 KiB.
   */
  static onHost(host: Host, layout: readonly { gpa: number; size: number }[]): GuestRam {
    return new GuestRam(layout.map(({ gpa, size }) => {
      const buffer = new ArrayBuffer(size);
      const seg = host.addSegment(buffer);
      return { gpa, size, bytes: new Uint8Array(buffer), va: host.mapSegment(seg) };
    }));
  }

  /** The region holding [gpa, gpa + length), or undefined. */
  private find(gpa: number, length: number): GuestRamBacking | undefined {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(length) || length < 0) return undefined;
    for (const r of this.list) {
      if (gpa >= r.gpa && gpa + length <= r.gpa + r.size) return r;
    }
    return undefined;
  }

  read(gpa: number, dst: Uint8Array): boolean {
    const r = this.find(gpa, dst.length);
    if (!r) return false;
    dst.set(r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + dst.length));
    return true;
  }

  write(gpa: number, src: Uint8Array): boolean {
    const r = this.find(gpa, src.length);
    if (!r) return false;
    r.bytes.set(src, gpa - r.gpa);
    return true;
  }

  hostAddress(gpa: number): { va: number; length: number } | null {
    const r = this.find(gpa, 1);
    if (!r || r.va === undefined) return null;
    return { va: r.va + (gpa - r.gpa), length: r.gpa + r.size - gpa };
  }

  regions(): Iterable<GuestRamRegion> { return this.list.map(({ gpa, size }) => ({ gpa, size })); }

  /** The bytes of a region (for an emulator or a test that looks at guest RAM directly). */
  bytesAt(gpa: number, length: number): Uint8Array | null {
    const r = this.find(gpa, length);
    return r ? r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + length) : null;
  }
}
