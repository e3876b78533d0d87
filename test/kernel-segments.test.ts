// External segments (host/kernel/phys.ts): buffers that belong to the
// embedding emulator, registered as physical memory, mapped at a VA, mapped
// into an IOAS and reached by device DMA. Each test names its source:
//   DESIGN n      /work/shared/DESIGN.md, section n (2: the memory model,
//                 3: engine rules, 4: host rules)
//   Host API      the contract documented in host/host.ts and host/kernel/phys.ts
//   kernel: ...   the Linux behaviour the model mirrors
// The segment is to this host what a range of RAM (or of a device's memory,
// mapped with remap_pfn_range) is to Linux: its pages can be mapped at VAs
// and pinned for DMA, and it cannot be taken away while pinned.

import { describe, it, expect } from 'vitest';
import { DmaFault, type Segment, PROT_READ } from '../host/index.js';
import { newHost, outcome, expectBytes, AttachedIoas } from './support/host.js';

const PAGE = 4096;
const SEG_SPAN = 2 ** 32;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 7 + seed * 53 + (i >>> 10)) & 0xff) || 0x99;
  return b;
}

/** The four kinds of buffer an embedder can register, each with a way to see its bytes now. */
const SOURCES: { kind: string; make(size: number): { source: ArrayBuffer | SharedArrayBuffer | WebAssembly.Memory | Uint8Array; bytes(): Uint8Array } }[] = [
  { kind: 'ArrayBuffer', make: (size) => { const b = new ArrayBuffer(size); return { source: b, bytes: () => new Uint8Array(b) }; } },
  { kind: 'SharedArrayBuffer', make: (size) => { const b = new SharedArrayBuffer(size); return { source: b, bytes: () => new Uint8Array(b) }; } },
  {
    kind: 'WebAssembly.Memory',
    make: (size) => {
      const m = new WebAssembly.Memory({ initial: Math.ceil(size / 65536), maximum: 16 });
      return { source: m, bytes: () => new Uint8Array(m.buffer) };
    },
  },
  {
    kind: 'Uint8Array (a window into a larger buffer)',
    make: (size) => {
      const u = new Uint8Array(new ArrayBuffer(size + 3 * PAGE), PAGE, size);
      return { source: u, bytes: () => u };
    },
  },
];

describe('addSegment', () => {
  for (const { kind, make } of SOURCES) {
    it(`registers a ${kind}: {id, size, base} with base = id * 2^32 (Host API; DESIGN 2 "A physical address names the segment and the offset")`, async () => {
      const host = await newHost();
      const { source, bytes } = make(65536);
      const seg = host.addSegment(source);
      expect(seg.id).toBeGreaterThanOrEqual(1); // segment 0 is the engine's linear memory
      expect(seg.size).toBe(bytes().length);
      expect(seg.base).toBe(seg.id * SEG_SPAN);
    });
  }

  it('gives each live segment its own id and base (DESIGN 2)', async () => {
    const host = await newHost();
    const segs: Segment[] = SOURCES.map(({ make }) => host.addSegment(make(65536).source));
    expect(new Set(segs.map((s) => s.id)).size).toBe(segs.length);
    expect(new Set(segs.map((s) => s.base)).size).toBe(segs.length);
  });
});

describe('mapSegment: a VA whose bytes are the embedder\'s buffer', () => {
  for (const { kind, make } of SOURCES) {
    it(`${kind}: host.mem.write lands in the buffer and the embedder's stores show in host.mem.read (DESIGN 2 "an external segment can be mapped at a VA")`, async () => {
      const host = await newHost();
      const { source, bytes } = make(4 * PAGE);
      const seg = host.addSegment(source);
      const va = host.mapSegment(seg);
      expect(va % PAGE).toBe(0);
      const w = pattern(PAGE + 300, 1);
      host.mem.write(va + PAGE - 150, w);
      expectBytes(bytes().subarray(PAGE - 150, 2 * PAGE + 150), w);
      const e = pattern(4 * PAGE, 2);
      bytes().set(e);
      expectBytes(host.mem.read(va, 4 * PAGE), e);
    });
  }

  it('a Uint8Array window maps exactly its own bytes, not the rest of its buffer (Host API: the segment is the view)', async () => {
    const host = await newHost();
    const whole = new Uint8Array(6 * PAGE);
    const view = whole.subarray(PAGE, 5 * PAGE);
    const va = host.mapSegment(host.addSegment(view));
    host.mem.write(va, new Uint8Array(4 * PAGE).fill(0x3c));
    expectBytes(whole.subarray(0, PAGE), new Uint8Array(PAGE));
    expectBytes(whole.subarray(5 * PAGE), new Uint8Array(PAGE));
    expectBytes(view, new Uint8Array(4 * PAGE).fill(0x3c));
    expect(outcome(() => host.mem.read(va + 4 * PAGE, 1))).toBe('EFAULT');
  });

  it('maps a sub-range at an offset, and a read-only mapping refuses stores (Host API mapSegment(seg, offset, length, prot); mmap(2) PROT_READ)', async () => {
    const host = await newHost();
    const buf = new ArrayBuffer(8 * PAGE);
    const seg = host.addSegment(buf);
    const va = host.mapSegment(seg, 2 * PAGE, 3 * PAGE);
    host.mem.write(va, new Uint8Array([1, 2, 3]));
    expectBytes(new Uint8Array(buf, 2 * PAGE, 3), new Uint8Array([1, 2, 3]));
    expect(outcome(() => host.mem.read(va + 3 * PAGE, 1))).toBe('EFAULT');
    const ro = host.mapSegment(seg, 0, PAGE, PROT_READ);
    new Uint8Array(buf)[9] = 0x99;
    expect(host.mem.read(ro + 9, 1)[0]).toBe(0x99);
    expect(outcome(() => host.mem.write(ro, new Uint8Array([1])))).toBe('EFAULT');
    expect(new Uint8Array(buf)[0]).toBe(0);
  });

  it('two VAs of the same segment alias the same bytes (DESIGN 2: VAs map physical pages)', async () => {
    const host = await newHost();
    const seg = host.addSegment(new ArrayBuffer(2 * PAGE));
    const a = host.mapSegment(seg), b = host.mapSegment(seg);
    expect(a).not.toBe(b);
    host.mem.write(a + 100, new Uint8Array([5, 6]));
    expectBytes(host.mem.read(b + 100, 2), new Uint8Array([5, 6]));
  });

  it('munmap of a segment mapping leaves the embedder\'s buffer alone and takes no frames from the engine (munmap(2); DESIGN 2)', async () => {
    const host = await newHost();
    const buf = new Uint8Array(4 * PAGE).fill(0x42);
    const avail = host.engine.framesAvailable();
    const va = host.mapSegment(host.addSegment(buf));
    expect(host.engine.framesAvailable()).toBe(avail);
    host.munmap(va, 4 * PAGE);
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    expectBytes(buf, new Uint8Array(4 * PAGE).fill(0x42));
    expect(host.engine.framesAvailable()).toBe(avail);
  });
});

describe('device DMA into a segment', () => {
  for (const { kind, make } of SOURCES) {
    it(`${kind}: dma.write lands in the embedder's buffer and dma.read reads it, through an IOAS (DESIGN 2 "external segments through one imported accessor")`, async () => {
      const host = await newHost();
      const { source, bytes } = make(16 * PAGE);
      const seg = host.addSegment(source);
      const va = host.mapSegment(seg);
      const io = new AttachedIoas(host);
      const iova = 0x8000_0000n;
      io.map(va, 16 * PAGE, iova);
      const dev = io.attach();
      const t = dev.dma.translate(iova + BigInt(5 * PAGE));
      expect(t.pa).toBe(seg.base + 5 * PAGE);
      const w = pattern(3 * PAGE + 17, 3);
      dev.dma.write(iova + BigInt(PAGE - 9), w);
      expectBytes(bytes().subarray(PAGE - 9, PAGE - 9 + w.length), w);
      const e = pattern(16 * PAGE, 4);
      bytes().set(e);
      expectBytes(dev.dma.read(iova, 16 * PAGE), e);
      const into = new Uint8Array(100);
      dev.dma.readInto(iova + BigInt(8 * PAGE - 50), into);
      expectBytes(into, e.subarray(8 * PAGE - 50, 8 * PAGE + 50));
    });
  }

  it('a DMA spanning engine memory and a segment (two areas contiguous in IOVA) reaches both (DESIGN 2: a DMA is a list of physical ranges)', async () => {
    const host = await newHost();
    const buf = new Uint8Array(2 * PAGE);
    const segVa = host.mapSegment(host.addSegment(buf));
    const ram = host.mmap(2 * PAGE);
    const io = new AttachedIoas(host);
    io.map(ram, 2 * PAGE, 0x10_0000n);
    io.map(segVa, 2 * PAGE, 0x10_2000n);
    const dev = io.attach();
    const w = pattern(2 * PAGE, 5);
    dev.dma.write(0x10_1000n, w);
    expectBytes(host.mem.read(ram + PAGE, PAGE), w.subarray(0, PAGE));
    expectBytes(buf.subarray(0, PAGE), w.subarray(PAGE));
    expectBytes(dev.dma.read(0x10_1000n, 2 * PAGE), w);
  });

  it('a WebAssembly.Memory the embedder grows after registration stays valid: host.mem and DMA use the new buffer (DESIGN 3 "when non-shared memory grows, every JS view over it is stale; the host re-derives views")', async () => {
    const host = await newHost();
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 8 });
    const seg = host.addSegment(mem);
    expect(seg.size).toBe(65536);
    const va = host.mapSegment(seg);
    const io = new AttachedIoas(host);
    io.map(va, 65536, 0x4000_0000n);
    const dev = io.attach();
    dev.dma.write(0x4000_0010n, new Uint8Array([1, 2, 3]));
    const old = mem.buffer;
    mem.grow(2);
    expect(mem.buffer).not.toBe(old);
    expect(old.byteLength).toBe(0); // detached: any cached view over it is dead
    // The bytes written before growth are in the new buffer, and reads see them.
    expectBytes(new Uint8Array(mem.buffer, 0x10, 3), new Uint8Array([1, 2, 3]));
    expectBytes(dev.dma.read(0x4000_0010n, 3), new Uint8Array([1, 2, 3]));
    expectBytes(host.mem.read(va + 0x10, 3), new Uint8Array([1, 2, 3]));
    // Writes after growth land in the new buffer, from both sides.
    dev.dma.write(0x4000_2000n, new Uint8Array([9, 8]));
    host.mem.write(va + 0x3000, new Uint8Array([7]));
    const now = new Uint8Array(mem.buffer);
    expectBytes(now.subarray(0x2000, 0x2002), new Uint8Array([9, 8]));
    expect(now[0x3000]).toBe(7);
    new Uint8Array(mem.buffer)[0xfff0] = 0x66;
    expect(dev.dma.read(0x4000_fff0n, 1)[0]).toBe(0x66);
    // Grown again: still valid.
    mem.grow(1);
    expectBytes(dev.dma.read(0x4000_2000n, 2), new Uint8Array([9, 8]));
  });

  it('an unmapped IOVA of the segment faults and leaves the buffer alone (DESIGN 3 "Invalidation is exact")', async () => {
    const host = await newHost();
    const buf = new Uint8Array(4 * PAGE);
    const va = host.mapSegment(host.addSegment(buf));
    const io = new AttachedIoas(host);
    io.map(va, 4 * PAGE, 0x50_0000n);
    const dev = io.attach();
    dev.dma.write(0x50_0000n, new Uint8Array([1]));
    io.unmap(0x50_0000n, BigInt(4 * PAGE));
    let fault: unknown;
    try { dev.dma.write(0x50_0000n, new Uint8Array([2])); } catch (e) { fault = e; }
    expect(fault).toBeInstanceOf(DmaFault);
    expect((fault as DmaFault).reason).toBe('not-present');
    expect(buf[0]).toBe(1);
  });
});

describe('removeSegment', () => {
  it('while an IOAS maps it for an attached device (pinned) -> EBUSY; after IOAS_UNMAP it succeeds (Host API "EBUSY while pages of it are pinned"; kernel: memory with pinned pages cannot be offlined)', async () => {
    const host = await newHost();
    const buf = new Uint8Array(4 * PAGE);
    const seg = host.addSegment(buf);
    const va = host.mapSegment(seg);
    const io = new AttachedIoas(host);
    io.map(va, 4 * PAGE, 0x100_0000n);
    const dev = io.attach();
    expect(outcome(() => host.removeSegment(seg.id))).toBe('EBUSY');
    // Still usable after the refused removal.
    dev.dma.write(0x100_0000n, new Uint8Array([0xab]));
    expect(buf[0]).toBe(0xab);
    io.unmap(0x100_0000n, BigInt(4 * PAGE));
    host.removeSegment(seg.id);
  });

  it('stays EBUSY until every IOAS area over it is unmapped (Host API; kernel: one pin per pinned range)', async () => {
    const host = await newHost();
    const seg = host.addSegment(new ArrayBuffer(4 * PAGE));
    const va = host.mapSegment(seg);
    const io = new AttachedIoas(host);
    io.attach();
    io.map(va, 2 * PAGE, 0x100_0000n);
    io.map(va + 2 * PAGE, 2 * PAGE, 0x200_0000n);
    io.map(va, 4 * PAGE, 0x300_0000n);
    io.unmap(0x100_0000n, BigInt(2 * PAGE));
    expect(outcome(() => host.removeSegment(seg.id))).toBe('EBUSY');
    io.unmap(0x300_0000n, BigInt(4 * PAGE));
    expect(outcome(() => host.removeSegment(seg.id))).toBe('EBUSY');
    io.unmap(0x200_0000n, BigInt(2 * PAGE));
    host.removeSegment(seg.id);
  });

  it('a mapping pinned by attaching after IOAS_MAP is EBUSY too, and closing the device and iommufd fds unpins it (DESIGN 4 "closing the fd tears everything down and unpins every page")', async () => {
    const host = await newHost();
    const seg = host.addSegment(new ArrayBuffer(2 * PAGE));
    const va = host.mapSegment(seg);
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x100_0000n);
    const dev = io.attach(); // the new domain pins the area
    expect(outcome(() => host.removeSegment(seg.id))).toBe('EBUSY');
    host.close(dev.fd);
    host.close(io.fd);
    host.removeSegment(seg.id);
  });

  it('after removal the old VA reaches no buffer: EFAULT, even once a new segment is registered in its place (DESIGN 3 "nothing ... can make the engine read or write outside the memory it was given"; kernel: a removed physical range has no live PTEs)', async () => {
    const host = await newHost();
    const oldBuf = new Uint8Array(4 * PAGE);
    const seg = host.addSegment(oldBuf);
    const va = host.mapSegment(seg);
    host.removeSegment(seg.id);
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    const newBuf = new Uint8Array(4 * PAGE).fill(0xaa);
    host.addSegment(newBuf);
    expect(outcome(() => host.mem.read(va, 4))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va, new Uint8Array([1, 2, 3, 4])))).toBe('EFAULT');
    expectBytes(newBuf, new Uint8Array(4 * PAGE).fill(0xaa));
  });

  it('after removal the VA cannot be pinned into an IOAS: EFAULT (kernel: pin_user_pages on a VA with no page behind it -> EFAULT; DESIGN 3)', async () => {
    const host = await newHost();
    const seg = host.addSegment(new ArrayBuffer(2 * PAGE));
    const va = host.mapSegment(seg);
    host.removeSegment(seg.id);
    const io = new AttachedIoas(host);
    io.attach();
    expect(outcome(() => io.map(va, 2 * PAGE, 0x100_0000n))).toBe('EFAULT');
  });

  it('after removal the old VA cannot be pinned onto a segment registered later, so no device reaches that buffer through it (DESIGN 3 "nothing ... can make the engine read or write outside the memory it was given")', async () => {
    const host = await newHost();
    const seg = host.addSegment(new ArrayBuffer(2 * PAGE));
    const va = host.mapSegment(seg);
    host.removeSegment(seg.id);
    const other = new Uint8Array(2 * PAGE).fill(0x5c);
    host.addSegment(other); // may take the same id
    const io = new AttachedIoas(host);
    const dev = io.attach();
    const mapped = outcome(() => io.map(va, 2 * PAGE, 0x100_0000n));
    if (mapped === 'OK') {
      // Whatever the IOAS pinned, it must not be the other embedder buffer.
      try { dev.dma.write(0x100_0000n, new Uint8Array(2 * PAGE)); } catch { /* a fault is fine */ }
    }
    expectBytes(other, new Uint8Array(2 * PAGE).fill(0x5c), 'the later segment');
    expect(mapped).toBe('EFAULT');
  });

  it('of an unknown id -> ENOENT (Host API, host/kernel/phys.ts)', async () => {
    const host = await newHost();
    expect(outcome(() => host.removeSegment(42))).toBe('ENOENT');
    const seg = host.addSegment(new ArrayBuffer(PAGE));
    host.removeSegment(seg.id);
    expect(outcome(() => host.removeSegment(seg.id))).toBe('ENOENT');
  });
});
