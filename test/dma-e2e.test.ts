// End to end, the scenario of DESIGN 2: process memory mapped with mmap, an
// IOAS mapping IOVAs to it, a VFIO device bound to the iommufd and attached
// to the IOAS, and the device's DMA through the emulated VT-d. Everything
// goes through the binary face (open / ioctl with the uapi table) and the
// device's dma.read/readInto/write/translate. Each test names its source:
//   DESIGN n      /work/shared/DESIGN.md, section n
//   VT-d n        Intel VT-d specification, section n (the emulated IOMMU)
//   kernel: ...   Linux iommufd / VFIO behaviour
// Fault rules checked everywhere: a refused DMA throws DmaFault naming the
// first IOVA the IOMMU refused (a bigint), its reason and access, and moves
// no byte (host/kernel/pci.ts "No byte of it was transferred"; DESIGN 3).

import { describe, it, expect } from 'vitest';
import { PROT_READ } from '../host/index.js';
import { newHost, outcome, dmaFault, expectBytes, AttachedIoas, uapi } from './support/host.js';
import { rng } from './support/engine.js';

const PAGE = 4096;
const MiB = 1 << 20;
const HPAGE = 2 * MiB;
const RW = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 131 + seed * 17 + (i >>> 11)) & 0xff) || 0xa1;
  return b;
}

describe('the DESIGN 2 scenario', () => {
  it('mmap, IOAS_MAP, bind, attach: a DMA write lands in the process memory at the VA, a DMA read returns it, translate names the frame (DESIGN 2; kernel: iommufd IOAS_MAP + VFIO cdev BIND/ATTACH)', async () => {
    const host = await newHost();
    const len = 16 * PAGE;
    const va = host.mmap(len);
    const initial = pattern(len, 1);
    host.mem.write(va, initial);

    const io = new AttachedIoas(host);
    const iova = 0x1000_0000n;
    io.map(va, len, iova);
    const dev = io.attach();

    // Read what the CPU wrote.
    expectBytes(dev.dma.read(iova, len), initial);
    // A device write shows at the VA.
    const w = pattern(200, 2);
    dev.dma.write(iova + 0x1100n, w);
    expectBytes(host.mem.read(va + 0x1100, 200), w);
    // And reads back through the IOMMU.
    expectBytes(dev.dma.read(iova + 0x1100n, 200), w);
    // The rest is untouched.
    expectBytes(host.mem.read(va, 0x1100), initial.subarray(0, 0x1100));
    expectBytes(host.mem.read(va + 0x1100 + 200, len - 0x1100 - 200), initial.subarray(0x1100 + 200));
    // translate: a 4 KiB leaf with read and write permission, onto segment 0.
    const t = dev.dma.translate(iova + 0x3010n);
    expect(t.size).toBe(PAGE);
    expect(t.pa % PAGE).toBe(0x010);
    expect(t.pa).toBeLessThan(2 ** 32);
    expect(host.engine.refcount(Math.floor(t.pa / PAGE))).toBeGreaterThanOrEqual(2); // mapped + pinned
  });

  it('the same works when the device is attached before IOAS_MAP (kernel: iopt_map_user_pages fills every attached domain)', async () => {
    const host = await newHost();
    const io = new AttachedIoas(host);
    const dev = io.attach();
    const va = host.mmap(4 * PAGE);
    io.map(va, 4 * PAGE, 0x2000_0000n);
    const w = pattern(4 * PAGE, 3);
    dev.dma.write(0x2000_0000n, w);
    expectBytes(host.mem.read(va, 4 * PAGE), w);
  });

  it('CPU stores after mapping are seen by the device: no stale copy (DESIGN 2: the IOAS maps the process\'s pages, not a snapshot)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE);
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x3000_0000n);
    const dev = io.attach();
    expectBytes(dev.dma.read(0x3000_0000n, 8), new Uint8Array(8));
    host.mem.write(va + 4, new Uint8Array([1, 2, 3, 4]));
    expectBytes(dev.dma.read(0x3000_0000n, 8), new Uint8Array([0, 0, 0, 0, 1, 2, 3, 4]));
  });

  it('two devices attached to one IOAS see the same memory (kernel: one HWPT_PAGING per IOAS and IOMMU, shared by compatible devices)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE);
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x3000_0000n);
    const d1 = io.attach(), d2 = io.attach();
    d1.dma.write(0x3000_0100n, new Uint8Array([0x77, 0x78]));
    expectBytes(d2.dma.read(0x3000_0100n, 2), new Uint8Array([0x77, 0x78]));
  });
});

describe('DMA across boundaries', () => {
  it('crosses 4 KiB page boundaries at odd offsets and lengths (DESIGN 2: a DMA is translated page by page)', async () => {
    const host = await newHost();
    const len = 8 * PAGE;
    const va = host.mmap(len);
    const io = new AttachedIoas(host);
    io.map(va, len, 0x1000_0000n);
    const dev = io.attach();
    const model = new Uint8Array(len);
    for (const [off, n] of [[PAGE - 1, 2], [PAGE - 100, 3 * PAGE + 201], [5, len - 10], [3 * PAGE + 1, 1], [0, len]]) {
      const w = pattern(n, off + n);
      dev.dma.write(0x1000_0000n + BigInt(off), w);
      model.set(w, off);
      expectBytes(host.mem.read(va, len), model);
      expectBytes(dev.dma.read(0x1000_0000n + BigInt(off), n), w);
    }
  });

  it('crosses a 2 MiB boundary between two 2 MiB IOPTEs (DESIGN 2 large IOPTEs; VT-d 3.7 super-pages)', async () => {
    const host = await newHost();
    const len = 2 * HPAGE;
    const va = host.mmap(len);
    const io = new AttachedIoas(host);
    const iova = 0x4000_0000n;
    io.map(va, len, iova);
    const dev = io.attach();
    expect(dev.dma.translate(iova).size).toBe(HPAGE);
    expect(dev.dma.translate(iova + BigInt(HPAGE)).size).toBe(HPAGE);
    const off = HPAGE - 3000;
    const w = pattern(6000, 4);
    dev.dma.write(iova + BigInt(off), w);
    expectBytes(host.mem.read(va + off, 6000), w);
    expectBytes(host.mem.read(va + off - 10, 10), new Uint8Array(10));
    expectBytes(host.mem.read(va + off + 6000, 10), new Uint8Array(10));
    expectBytes(dev.dma.read(iova + BigInt(off), 6000), w);
    // A whole-mapping DMA.
    const all = pattern(len, 5);
    dev.dma.write(iova, all);
    expectBytes(host.mem.read(va, len), all);
    expectBytes(dev.dma.read(iova, len), all);
  });

  it('crosses from one IOAS area into the next: contiguous in IOVA, not in physical memory (two mmaps) (DESIGN 2: a DMA becomes a list of physical ranges)', async () => {
    const host = await newHost();
    const a = host.mmap(2 * PAGE);
    host.mmap(3 * PAGE); // a spacer between the two mappings' frames
    const b = host.mmap(2 * PAGE);
    const io = new AttachedIoas(host);
    io.map(a, 2 * PAGE, 0x5000_0000n);
    io.map(b, 2 * PAGE, 0x5000_2000n);
    const dev = io.attach();
    const endOfA = dev.dma.translate(0x5000_1000n).pa + PAGE;
    expect(dev.dma.translate(0x5000_2000n).pa, 'the areas are not physically contiguous').not.toBe(endOfA);
    const w = pattern(2 * PAGE, 6);
    dev.dma.write(0x5000_1000n, w);
    expectBytes(host.mem.read(a + PAGE, PAGE), w.subarray(0, PAGE));
    expectBytes(host.mem.read(b, PAGE), w.subarray(PAGE));
    expectBytes(dev.dma.read(0x5000_1000n, 2 * PAGE), w);
    const odd = pattern(777, 7);
    dev.dma.write(0x5000_2000n - 333n, odd);
    expectBytes(host.mem.read(a + 2 * PAGE - 333, 333), odd.subarray(0, 333));
    expectBytes(host.mem.read(b, 444), odd.subarray(333));
  });

  it('sub-page areas cannot meet a 4 KiB-page domain: IOAS_MAP at an unaligned IOVA -> EINVAL once attached, and attaching to an IOAS holding one -> EADDRINUSE (kernel: iopt_check_iova alignment; iopt_check_iova_alignment in iopt_table_add_domain)', async () => {
    const host = await newHost();
    const va = host.mmap(3 * PAGE);
    const io = new AttachedIoas(host);
    io.map(va + 0x100, 2 * PAGE, 0x6000_0100n);
    const dev = io.bind();
    expect(outcome(() => io.attachDevice(dev))).toBe('EADDRINUSE');
    expect(dmaFault(() => dev.dma.read(0x6000_0100n, 1)).reason).toBe('blocked');
    io.unmap(0x6000_0100n, BigInt(2 * PAGE));
    io.attachDevice(dev);
    expect(outcome(() => io.map(va + 0x100, 2 * PAGE, 0x6000_0100n))).toBe('EINVAL');
  });
});

describe('dma.readInto', () => {
  it('fills exactly the caller\'s view (a subarray at an offset), touching nothing around it (Host API: "Read into a caller\'s buffer")', async () => {
    const host = await newHost();
    const va = host.mmap(4 * PAGE);
    const bytes = pattern(4 * PAGE, 9);
    host.mem.write(va, bytes);
    const io = new AttachedIoas(host);
    io.map(va, 4 * PAGE, 0x1000_0000n);
    const dev = io.attach();
    const big = new Uint8Array(3 * PAGE).fill(0xee);
    const dst = big.subarray(100, 100 + 2 * PAGE + 7);
    dev.dma.readInto(0x1000_0000n + BigInt(PAGE - 3), dst);
    expectBytes(dst, bytes.subarray(PAGE - 3, 3 * PAGE + 4));
    expectBytes(big.subarray(0, 100), new Uint8Array(100).fill(0xee));
    expectBytes(big.subarray(100 + 2 * PAGE + 7), new Uint8Array(3 * PAGE - 100 - 2 * PAGE - 7).fill(0xee));
  });

  it('a faulting readInto leaves the destination unchanged (host/kernel/pci.ts "no byte moved")', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE);
    host.mem.write(va, pattern(2 * PAGE, 10));
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x1000_0000n);
    const dev = io.attach();
    const dst = new Uint8Array(3 * PAGE).fill(0x5a);
    const f = dmaFault(() => dev.dma.readInto(0x1000_0000n, dst));
    expect(f.reason).toBe('not-present');
    expect(f.access).toBe('read');
    expect(f.iova).toBe(0x1000_2000n);
    expectBytes(dst, new Uint8Array(3 * PAGE).fill(0x5a));
  });
});

describe('faults', () => {
  it('after IOAS_UNMAP the same DMA faults: DmaFault(not-present), the IOVA as a bigint, access read or write, no memory touched (DESIGN 3 "Invalidation is exact"; VT-d 7.1 non-present fault)', async () => {
    const host = await newHost();
    const len = 4 * PAGE;
    const va = host.mmap(len);
    const io = new AttachedIoas(host);
    const iova = 0x1000_0000n;
    io.map(va, len, iova);
    const dev = io.attach();
    const w = pattern(len, 11);
    dev.dma.write(iova, w);
    expectBytes(dev.dma.read(iova, len), w); // warms the IOTLB
    expect(io.unmap(iova, BigInt(len))).toBe(BigInt(len));

    const r = dmaFault(() => dev.dma.read(iova + 0x10n, 32));
    expect(r).toBeInstanceOf(Error);
    expect(typeof r.iova).toBe('bigint');
    expect(r.iova).toBe(iova + 0x10n);
    expect(r.reason).toBe('not-present');
    expect(r.access).toBe('read');

    const wf = dmaFault(() => dev.dma.write(iova + 0x2000n, new Uint8Array(64).fill(0xff)));
    expect(wf.iova).toBe(iova + 0x2000n);
    expect(wf.reason).toBe('not-present');
    expect(wf.access).toBe('write');
    // The process memory still holds what was there (the VA is still mapped).
    expectBytes(host.mem.read(va, len), w);
    // A number IOVA reports the fault IOVA as a bigint too.
    const n = dmaFault(() => dev.dma.read(0x1000_3000, 1));
    expect(n.iova).toBe(0x1000_3000n);
    // translate faults the same way.
    const t = dmaFault(() => dev.dma.translate(iova));
    expect(t.reason).toBe('not-present');
  });

  it('a write DMA whose LAST page is unmapped faults at that page and leaves the first pages unchanged (host/kernel/pci.ts "No byte of it was transferred"; DESIGN 3 "a fault touches no memory")', async () => {
    const host = await newHost();
    const va = host.mmap(4 * PAGE);
    const before = pattern(4 * PAGE, 12);
    host.mem.write(va, before);
    const io = new AttachedIoas(host);
    io.map(va, 3 * PAGE, 0x1000_0000n); // the 4th page is not in the IOAS
    const dev = io.attach();
    const f = dmaFault(() => dev.dma.write(0x1000_0000n + 100n, new Uint8Array(3 * PAGE + 10).fill(0x11)));
    expect(f.iova).toBe(0x1000_3000n);
    expect(f.reason).toBe('not-present');
    expect(f.access).toBe('write');
    expectBytes(host.mem.read(va, 4 * PAGE), before);
    // Unmapping the middle page of the area is refused as a partial unmap; a
    // DMA over a hole in the middle (two areas with a gap) faults at the gap.
    io.map(va + 3 * PAGE, PAGE, 0x1000_5000n);
    const g = dmaFault(() => dev.dma.write(0x1000_2000n, new Uint8Array(4 * PAGE).fill(0x22)));
    expect(g.iova).toBe(0x1000_3000n);
    expectBytes(host.mem.read(va, 4 * PAGE), before);
  });

  it('a read-only mapping (IOAS_MAP with READABLE only) refuses a DMA write: write-denied, nothing written; reads work (VT-d 3.6 second-stage W bit; kernel: IOMMU_IOAS_MAP_WRITEABLE)', async () => {
    const host = await newHost();
    const va = host.mmap(4 * PAGE);
    const before = pattern(4 * PAGE, 13);
    host.mem.write(va, before);
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x1000_0000n, RW);
    io.map(va + 2 * PAGE, 2 * PAGE, 0x1000_2000n, uapi.IOMMU_IOAS_MAP_READABLE);
    const dev = io.attach();
    expectBytes(dev.dma.read(0x1000_2000n, 2 * PAGE), before.subarray(2 * PAGE));
    const f = dmaFault(() => dev.dma.write(0x1000_2010n, new Uint8Array(16)));
    expect(f.reason).toBe('write-denied');
    expect(f.access).toBe('write');
    expect(f.iova).toBe(0x1000_2010n);
    // A write starting in the writable area and running into the read-only one moves nothing.
    const g = dmaFault(() => dev.dma.write(0x1000_1000n, new Uint8Array(2 * PAGE).fill(0x33)));
    expect(g.reason).toBe('write-denied');
    expect(g.iova).toBe(0x1000_2000n);
    expectBytes(host.mem.read(va, 4 * PAGE), before);
    const t = dev.dma.translate(0x1000_2000n);
    expect(t.perm & 2).toBe(0);
    expect(dmaFault(() => dev.dma.translate(0x1000_2000n, { write: true })).reason).toBe('write-denied');
  });

  it('a read-only mapping can map a PROT_READ VA; a writeable one cannot (kernel: pin_user_pages(FOLL_WRITE) on a read-only VMA -> EFAULT)', async () => {
    const host = await newHost();
    const ro = host.mmap(2 * PAGE, PROT_READ);
    const io = new AttachedIoas(host);
    const dev = io.attach();
    expect(outcome(() => io.map(ro, 2 * PAGE, 0x1000_0000n, RW))).toBe('EFAULT');
    io.map(ro, 2 * PAGE, 0x1000_0000n, uapi.IOMMU_IOAS_MAP_READABLE);
    expectBytes(dev.dma.read(0x1000_0000n, 2 * PAGE), new Uint8Array(2 * PAGE));
  });

  it('a device that is not attached is blocked: never opened, bound only, and detached again (kernel: a VFIO cdev device starts in the blocked domain and returns to it on DETACH; VT-d context entry not present)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE);
    host.mem.write(va, pattern(2 * PAGE, 14));
    const io = new AttachedIoas(host);
    io.map(va, 2 * PAGE, 0x1000_0000n);

    const lone = host.addDevice();
    const f1 = dmaFault(() => lone.dma.read(0x1000_0000n, 4));
    expect(f1.reason).toBe('blocked');
    expect(f1.iova).toBe(0x1000_0000n);
    expect(f1.access).toBe('read');

    const dev = io.bind();
    const f2 = dmaFault(() => dev.dma.write(0x1000_0004n, new Uint8Array(4)));
    expect(f2.reason).toBe('blocked');
    expect(f2.access).toBe('write');
    expect(f2.iova).toBe(0x1000_0004n);

    io.attachDevice(dev);
    expectBytes(dev.dma.read(0x1000_0000n, 4), pattern(2 * PAGE, 14).subarray(0, 4));
    io.detachDevice(dev);
    const f3 = dmaFault(() => dev.dma.write(0x1000_0000n, new Uint8Array(4).fill(0xff)));
    expect(f3.reason).toBe('blocked');
    expectBytes(host.mem.read(va, 2 * PAGE), pattern(2 * PAGE, 14));
    expect(dmaFault(() => dev.dma.translate(0x1000_0000n)).reason).toBe('blocked');
  });

  it('closing the device fd blocks its DMA (kernel: vfio_df_unbind_iommufd detaches the device)', async () => {
    const host = await newHost();
    const va = host.mmap(PAGE);
    const io = new AttachedIoas(host);
    io.map(va, PAGE, 0x1000_0000n);
    const dev = io.bind();
    io.attachDevice(dev);
    dev.dma.read(0x1000_0000n, 1);
    host.close(dev.fd);
    expect(dmaFault(() => dev.dma.read(0x1000_0000n, 1)).reason).toBe('blocked');
  });

  it('an IOVA at or above 2^48 faults address-width, and cannot be mapped once the 48-bit domain is attached (VT-d 3.6 AGAW / intel_vtd.ts addressWidth 48; kernel: iopt_check_iova -> EINVAL on the reserved range past the aperture)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE);
    host.mem.write(va, pattern(2 * PAGE, 15));
    const io = new AttachedIoas(host);
    const dev = io.attach();
    const top = 2n ** 48n;
    for (const iova of [top, top + 0x1234n, 2n ** 63n]) {
      const r = dmaFault(() => dev.dma.read(iova, 8));
      expect(r.reason).toBe('address-width');
      expect(r.iova).toBe(iova);
      expect(r.access).toBe('read');
    }
    const w = dmaFault(() => dev.dma.write(top, new Uint8Array(8)));
    expect(w.reason).toBe('address-width');
    expect(w.access).toBe('write');
    expect(outcome(() => io.map(va, PAGE, top))).toBe('EINVAL');
    // The last page below 2^48 can be mapped; a DMA running past 2^48 faults there and moves nothing.
    io.map(va, PAGE, top - BigInt(PAGE));
    expectBytes(dev.dma.read(top - 16n, 16), pattern(2 * PAGE, 15).subarray(PAGE - 16, PAGE));
    const x = dmaFault(() => dev.dma.write(top - 16n, new Uint8Array(32).fill(0x44)));
    expect(x.reason).toBe('address-width');
    expect(x.iova).toBe(top);
    expectBytes(host.mem.read(va, 2 * PAGE), pattern(2 * PAGE, 15));
  });

  it('every fault is counted (DESIGN 3 engine stats)', async () => {
    const host = await newHost();
    const io = new AttachedIoas(host);
    const dev = io.attach();
    const before = host.engine.stats().faults;
    dmaFault(() => dev.dma.read(0x1000n, 1));
    dmaFault(() => dev.dma.write(0x2000n, new Uint8Array(1)));
    expect(host.engine.stats().faults).toBeGreaterThanOrEqual(before + 2);
  });
});

describe('IOAS_UNMAP: no DMA reaches unmapped pages', () => {
  it('after each unmap, the unmapped pages fault even with a warm IOTLB, and the other areas still work (DESIGN 3 "after an unmap ... returns, no device can reach the old page through any cache")', async () => {
    const host = await newHost();
    const n = 6;
    const vas = Array.from({ length: n }, () => host.mmap(2 * PAGE));
    const io = new AttachedIoas(host);
    const iovaOf = (i: number) => 0x1000_0000n + BigInt(i * 2 * PAGE);
    vas.forEach((va, i) => { host.mem.write(va, pattern(2 * PAGE, 20 + i)); io.map(va, 2 * PAGE, iovaOf(i)); });
    const dev = io.attach();
    const d2 = io.attach(); // a second device on the same domain also caches
    const gone = new Set<number>();
    for (const i of [3, 0, 5, 1, 4, 2]) {
      for (let k = 0; k < 3; k++) { dev.dma.read(iovaOf(i), 2 * PAGE); d2.dma.read(iovaOf(i) + 0x1000n, 8); }
      io.unmap(iovaOf(i), BigInt(2 * PAGE));
      gone.add(i);
      for (let j = 0; j < n; j++) {
        if (gone.has(j)) {
          for (const d of [dev, d2]) {
            expect(dmaFault(() => d.dma.read(iovaOf(j), 1)).reason).toBe('not-present');
            expect(dmaFault(() => d.dma.read(iovaOf(j) + 0x1fffn, 1)).reason).toBe('not-present');
            expect(dmaFault(() => d.dma.write(iovaOf(j) + 0x1000n, new Uint8Array([0xff]))).reason).toBe('not-present');
          }
        } else {
          expectBytes(dev.dma.read(iovaOf(j), 2 * PAGE), pattern(2 * PAGE, 20 + j));
        }
      }
    }
    vas.forEach((va, i) => expectBytes(host.mem.read(va, 2 * PAGE), pattern(2 * PAGE, 20 + i)));
  });

  it('unmapping an area mapped with 2 MiB IOPTEs removes the large leaves from the IOTLB too (DESIGN 3; VT-d 6.5 IOTLB invalidation)', async () => {
    const host = await newHost();
    const va = host.mmap(HPAGE);
    const io = new AttachedIoas(host);
    io.map(va, HPAGE, 0x4000_0000n);
    const dev = io.attach();
    expect(dev.dma.translate(0x4000_0000n).size).toBe(HPAGE);
    dev.dma.read(0x4010_0000n, 16);
    io.unmap(0x4000_0000n, BigInt(HPAGE));
    for (const off of [0n, 0x10_0000n, BigInt(HPAGE - 1)]) {
      expect(dmaFault(() => dev.dma.read(0x4000_0000n + off, 1)).reason).toBe('not-present');
    }
    // Re-mapping other memory at the same IOVA reaches the new memory, not the old.
    const va2 = host.mmap(HPAGE);
    host.mem.write(va2 + 0x10_0000, new Uint8Array([0xbe, 0xef]));
    io.map(va2, HPAGE, 0x4000_0000n);
    expectBytes(dev.dma.read(0x4010_0000n, 2), new Uint8Array([0xbe, 0xef]));
  });

  it('closing the iommufd and device fds unpins every page: all frames return (DESIGN 4 "closing the fd tears everything down and unpins every page")', async () => {
    const host = await newHost();
    const va = host.mmap(8 * PAGE);
    const avail = host.engine.framesAvailable();
    const io = new AttachedIoas(host);
    io.map(va, 8 * PAGE, 0x1000_0000n);
    const dev = io.bind();
    io.attachDevice(dev);
    host.close(dev.fd);
    host.close(io.fd);
    host.munmap(va, 8 * PAGE);
    expect(host.engine.framesAvailable()).toBe(avail + 8);
  });
});

interface Region { iova: number; len: number; va: number; live: boolean; model: Uint8Array }

/**
 * Many DMA reads and writes at random IOVAs against a plain byte-array model
 * of the mapped memory, with IOAS_UNMAPs interleaved (DESIGN 5: seeded
 * random differential tests). Regions: a 64 KiB area, a 2 MiB area (2 MiB
 * IOPTEs), then two small areas contiguous in IOVA with it but separate
 * mmaps; gaps around them.
 */
async function randomDma(seed: number, steps: number): Promise<void> {
  const rand = rng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const host = await newHost();
  const io = new AttachedIoas(host);
  const dev = io.attach();
  const layout: [number, number][] = [
    [0x1000_0000, 16 * PAGE],
    [0x1020_0000, HPAGE],
    [0x1040_0000, 5 * PAGE],
    [0x1040_5000, 3 * PAGE],
  ];
  const regions: Region[] = layout.map(([iova, len], i) => {
    const va = host.mmap(len);
    if (i === 2) host.mmap(PAGE); // keep the last two areas apart physically
    const model = new Uint8Array(len);
    for (let k = 0; k < len; k++) model[k] = int(256);
    host.mem.write(va, model);
    io.map(va, len, BigInt(iova));
    return { iova, len, va, live: true, model };
  });
  const lo = 0x1000_0000 - 2 * PAGE, hi = 0x1040_8000 + 2 * PAGE;
  const liveAt = (iova: number) => regions.find((r) => r.live && iova >= r.iova && iova < r.iova + r.len);
  /** The first IOVA of [start, start + n) no live area covers, or -1. */
  const firstHole = (start: number, n: number): number => {
    for (let p = start; p < start + n;) {
      const r = liveAt(p);
      if (!r) return p;
      p = r.iova + r.len;
    }
    return -1;
  };
  const pickStart = (): number => {
    if (rand() < 0.5) {
      const r = regions[int(regions.length)];
      const edge = rand() < 0.5 ? r.iova : r.iova + r.len;
      return Math.max(lo, edge - 2 * PAGE + int(4 * PAGE));
    }
    return lo + int(hi - lo);
  };
  const pickLen = (): number => (rand() < 0.8 ? 1 + int(3 * PAGE) : 1 + int(64 * 1024));
  const unmapAt = new Set([Math.floor(steps * 0.3), Math.floor(steps * 0.55), Math.floor(steps * 0.8)]);
  const order = [1, 3, 0, 2].sort(() => rand() - 0.5);
  let step = 0, op = '';
  const count = { reads: 0, writes: 0, faults: 0, crossings: 0 };
  try {
    for (; step < steps; step++) {
      if (unmapAt.has(step)) {
        const r = regions[order.pop()!];
        op = `IOAS_UNMAP 0x${r.iova.toString(16)}+0x${r.len.toString(16)}`;
        io.unmap(BigInt(r.iova), BigInt(r.len));
        r.live = false;
        continue;
      }
      const start = pickStart(), n = pickLen();
      const hole = firstHole(start, n);
      if (hole < 0 && liveAt(start) !== liveAt(start + n - 1)) count.crossings++;
      if (hole >= 0) count.faults++;
      const iova = rand() < 0.5 ? BigInt(start) : start;
      const kind = rand();
      if (kind < 0.45) {
        op = `write 0x${start.toString(16)}+${n}`;
        const bytes = new Uint8Array(n);
        for (let k = 0; k < n; k++) bytes[k] = int(256);
        if (hole < 0) {
          dev.dma.write(iova, bytes);
          count.writes++;
          for (let p = start; p < start + n;) {
            const r = liveAt(p)!;
            const m = Math.min(r.iova + r.len, start + n) - p;
            r.model.set(bytes.subarray(p - start, p - start + m), p - r.iova);
            p += m;
          }
        } else {
          const f = dmaFault(() => dev.dma.write(iova, bytes));
          expect(f.reason).toBe('not-present');
          expect(f.access).toBe('write');
          expect(f.iova).toBe(BigInt(hole));
        }
      } else if (kind < 0.9) {
        op = `read 0x${start.toString(16)}+${n}`;
        if (hole < 0) {
          const expected = new Uint8Array(n);
          for (let p = start; p < start + n;) {
            const r = liveAt(p)!;
            const m = Math.min(r.iova + r.len, start + n) - p;
            expected.set(r.model.subarray(p - r.iova, p - r.iova + m), p - start);
            p += m;
          }
          const got = rand() < 0.5 ? dev.dma.read(iova, n) : (() => { const b = new Uint8Array(n); dev.dma.readInto(iova, b); return b; })();
          expectBytes(got, expected);
          count.reads++;
        } else {
          const f = dmaFault(() => dev.dma.read(iova, n));
          expect(f.reason).toBe('not-present');
          expect(f.access).toBe('read');
          expect(f.iova).toBe(BigInt(hole));
        }
      } else {
        // The CPU writes through the VA (mapped in the process whether or not the IOAS still maps it).
        const r = regions[int(regions.length)];
        const off = int(r.len), m = Math.min(1 + int(2 * PAGE), r.len - off);
        op = `cpu write region@0x${r.iova.toString(16)}+0x${off.toString(16)} ${m}`;
        const bytes = new Uint8Array(m);
        for (let k = 0; k < m; k++) bytes[k] = int(256);
        host.mem.write(r.va + off, bytes);
        r.model.set(bytes, off);
      }
    }
    op = 'final compare';
    // The run exercised what it is meant to.
    expect(count.reads, 'successful reads').toBeGreaterThan(steps / 10);
    expect(count.writes, 'successful writes').toBeGreaterThan(steps / 10);
    expect(count.faults, 'faulting DMAs').toBeGreaterThan(steps / 20);
    expect(count.crossings, 'DMAs across two areas').toBeGreaterThan(0);
    for (const r of regions) expectBytes(host.mem.read(r.va, r.len), r.model, `region 0x${r.iova.toString(16)}`);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`random DMA failed: seed=0x${seed.toString(16)} step=${step} op=${op}: ${msg}`, { cause: e });
  }
}

describe('seeded random DMA against a byte-array model', () => {
  // Fixed seeds keep CI deterministic; VIOMMU_SEED=n replays (or explores) one seed.
  const env = process.env.VIOMMU_SEED;
  const seeds = env ? [Number(env)] : [0x1, 0x2b, 0xc0ffee, 0x5eed5, 0x740b5a3c];
  for (const seed of seeds) {
    it(`seed 0x${seed.toString(16)}: reads, writes and faults match the model; unmapped areas are unreachable (DESIGN 5 seeded differential tests; DESIGN 3 exact invalidation; rerun with VIOMMU_SEED=${seed})`, async () => {
      await randomDma(seed, 3000);
    });
  }
});

describe('zero-copy views (issue 5: "zero-copy views where that is safe")', () => {
  it('a range that is one physical range is a view of the process memory: CPU stores show through it, stores through it show at the VA', async () => {
    const host = await newHost();
    const va = host.mmap(HPAGE); // anonymous memory of 2 MiB or more is one physically contiguous run (README)
    host.mem.write(va + 0x1ff0, pattern(64, 3));
    const io = new AttachedIoas(host);
    io.map(va, HPAGE, 0x4000_0000n);
    const dev = io.attach();
    const v = dev.dma.view(0x4000_1ff0n, 64, { write: true })!;
    expect(v).not.toBeNull();
    expectBytes(v, pattern(64, 3)); // crosses a 4 KiB page: still one range
    v[0] = 0x5a;
    expect(host.mem.read(va + 0x1ff0, 1)[0]).toBe(0x5a);
    host.mem.write(va + 0x1ff1, Uint8Array.of(0x6b));
    expect(v[1]).toBe(0x6b);
  });

  it('a range over two physical ranges has no view (null: copy instead); a refused access throws DmaFault as read and write do', async () => {
    const host = await newHost();
    const a = host.mmap(PAGE), b = host.mmap(PAGE);
    const io = new AttachedIoas(host);
    io.map(a, PAGE, 0x1000_0000n);
    io.map(b, PAGE, 0x1000_1000n, uapi.IOMMU_IOAS_MAP_READABLE);
    const dev = io.attach();
    const contiguous = dev.dma.translate(0x1000_0000n).pa + PAGE === dev.dma.translate(0x1000_1000n).pa;
    expect(dev.dma.view(0x1000_0ff0n, 32) === null).toBe(!contiguous);
    expect(dmaFault(() => dev.dma.view(0x1000_1000n, 16, { write: true })).reason).toBe('write-denied');
    expect(dmaFault(() => dev.dma.view(0x2000_0000n, 16)).reason).toBe('not-present');
  });
});
