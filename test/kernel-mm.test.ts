// The simulated process address space (host/kernel/mm.ts) through the Host
// API: mmap(2), munmap(2) and byte access at a VA (host.mem), checked
// against Linux's documented behaviour. Each test names its source:
//   mmap(2) / munmap(2)      the Linux man pages (man-pages 6.x)
//   kernel: <function>       what the kernel source does where the man page is silent
//   DESIGN n                 /work/shared/DESIGN.md, section n
// Tests that need DMA build the device attachment through the binary face
// (ioctl with the uapi table), with AttachedIoas from test/support/host.ts.

import { describe, it, expect } from 'vitest';
import {
  createHost, PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS,
} from '../host/index.js';
import { newHost, outcome, expectBytes, AttachedIoas, type Host } from './support/host.js';

const PAGE = 4096;
const MiB = 1 << 20;
const HPAGE = 2 * MiB;
/** include/uapi/linux/mman.h: MAP_SHARED_VALIDATE = MAP_SHARED | MAP_PRIVATE. */
const MAP_SHARED_VALIDATE = 0x03;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >>> 8)) & 0xff || 1;
  return b;
}

describe('mmap: anonymous memory', () => {
  it('defaults to a private read/write anonymous mapping: page-aligned, zero-filled, length rounded up to pages (mmap(2): MAP_ANONYMOUS "contents are initialized to zero"; NOTES: mapped in multiples of the page size)', async () => {
    const host = await newHost();
    const va = host.mmap(5000);
    expect(va % PAGE).toBe(0);
    // The whole second page is mapped, not only the 5000 bytes asked for.
    expectBytes(host.mem.read(va, 2 * PAGE), new Uint8Array(2 * PAGE));
    const bytes = pattern(2 * PAGE, 1);
    host.mem.write(va, bytes); // PROT_WRITE by default
    expectBytes(host.mem.read(va, 2 * PAGE), bytes);
  });

  it('explicit PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS behaves as the default (mmap(2))', async () => {
    const host = await newHost();
    const va = host.mmap(3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expect(va % PAGE).toBe(0);
    expectBytes(host.mem.read(va, 3 * PAGE), new Uint8Array(3 * PAGE));
    host.mem.write(va + PAGE - 2, new Uint8Array([1, 2, 3, 4]));
    expectBytes(host.mem.read(va + PAGE - 2, 4), new Uint8Array([1, 2, 3, 4]));
  });

  it('is zero-filled even when it reuses frames another mapping dirtied (mmap(2) MAP_ANONYMOUS; kernel: anonymous faults map zeroed pages)', async () => {
    const host = await newHost();
    for (let round = 0; round < 3; round++) {
      const va = host.mmap(16 * PAGE);
      expectBytes(host.mem.read(va, 16 * PAGE), new Uint8Array(16 * PAGE));
      host.mem.write(va, new Uint8Array(16 * PAGE).fill(0xff));
      host.munmap(va, 16 * PAGE);
    }
  });

  it('gives separate mappings separate memory (mmap(2): a new mapping; MAP_PRIVATE)', async () => {
    const host = await newHost();
    const a = host.mmap(2 * PAGE), b = host.mmap(2 * PAGE);
    expect(a + 2 * PAGE <= b || b + 2 * PAGE <= a).toBe(true);
    host.mem.write(a, new Uint8Array(2 * PAGE).fill(0x11));
    expectBytes(host.mem.read(b, 2 * PAGE), new Uint8Array(2 * PAGE));
  });

  it('a MAP_SHARED anonymous mapping is zero-filled and usable (mmap(2) MAP_SHARED|MAP_ANONYMOUS)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    expectBytes(host.mem.read(va, 2 * PAGE), new Uint8Array(2 * PAGE));
    host.mem.write(va + 10, new Uint8Array([9, 8, 7]));
    expectBytes(host.mem.read(va + 10, 3), new Uint8Array([9, 8, 7]));
  });

  it('places mappings of 2 MiB multiples at 2 MiB-aligned VAs (kernel: __get_unmapped_area -> thp_get_unmapped_area for PMD-sized anonymous mappings, 6.7+; DESIGN 2)', async () => {
    const host = await newHost();
    host.mmap(PAGE); // push the next hole off any lucky alignment
    for (const len of [HPAGE, 2 * HPAGE, 3 * HPAGE]) {
      const va = host.mmap(len);
      expect(va % HPAGE, `mmap(${len / MiB} MiB) at 0x${va.toString(16)}`).toBe(0);
      host.mmap(3 * PAGE);
    }
  });

  it('backs a >= 2 MiB mapping with physically contiguous, 2 MiB-aligned frames, so an IOAS maps it with 2 MiB IOPTEs (DESIGN 2: "physically contiguous where it can, so large IOPTEs apply")', async () => {
    const host = await newHost();
    const len = 2 * HPAGE;
    const va = host.mmap(len);
    const io = new AttachedIoas(host);
    const iova = 0x4000_0000n;
    io.map(va, len, iova);
    const dev = io.attach();
    const first = dev.dma.translate(iova);
    expect(first.size).toBe(HPAGE);
    expect(first.pa % HPAGE).toBe(0);
    for (let off = 0; off < len; off += HPAGE) {
      const t = dev.dma.translate(iova + BigInt(off) + 0x1234n);
      expect(t.size, `IOPTE size at +${off / MiB} MiB`).toBe(HPAGE);
      expect(t.pa - (t.pa % HPAGE), `contiguous at +${off / MiB} MiB`).toBe(first.pa + off);
    }
    // The IOPTE really points at the process's memory.
    host.mem.write(va + HPAGE + 5, new Uint8Array([0xa5]));
    expect(dev.dma.read(iova + BigInt(HPAGE + 5), 1)[0]).toBe(0xa5);
  });
});

describe('mmap: argument checks', () => {
  it('length 0 -> EINVAL (mmap(2) EINVAL: "length was 0")', async () => {
    const host = await newHost();
    expect(outcome(() => host.mmap(0))).toBe('EINVAL');
    const m = host.memfdCreate('zero');
    host.ftruncate(m, PAGE);
    expect(outcome(() => host.mmap(0, PROT_READ, MAP_SHARED, m, 0))).toBe('EINVAL');
  });

  it('neither MAP_SHARED nor MAP_PRIVATE -> EINVAL (mmap(2) EINVAL: "flags contained none of MAP_PRIVATE, MAP_SHARED, or MAP_SHARED_VALIDATE")', async () => {
    const host = await newHost();
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_ANONYMOUS))).toBe('EINVAL');
    const m = host.memfdCreate('none');
    host.ftruncate(m, PAGE);
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, 0, m, 0))).toBe('EINVAL');
  });

  it('both MAP_SHARED and MAP_PRIVATE on anonymous memory -> EINVAL (kernel: do_mmap, the anonymous switch on flags & MAP_TYPE has no MAP_SHARED_VALIDATE case)', async () => {
    const host = await newHost();
    expect(MAP_SHARED | MAP_PRIVATE).toBe(MAP_SHARED_VALIDATE);
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS))).toBe('EINVAL');
  });

  it('an offset that is not a multiple of the page size -> EINVAL for a file mapping (mmap(2) EINVAL: "offset ... not aligned on a page boundary")', async () => {
    const host = await newHost();
    const m = host.memfdCreate('off');
    host.ftruncate(m, 4 * PAGE);
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 100))).toBe('EINVAL');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, PAGE + 1))).toBe('EINVAL');
    // A page-aligned offset is fine.
    expect(host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m, PAGE) % PAGE).toBe(0);
  });

  it('an unaligned offset -> EINVAL for anonymous memory too (mmap(2) EINVAL; kernel: x86-64 and arm64 sys_mmap reject offset_in_page(off) before looking at the flags)', async () => {
    const host = await newHost();
    const avail = host.engine.framesAvailable();
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 1))).toBe('EINVAL');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, PAGE - 1))).toBe('EINVAL');
    expect(host.engine.framesAvailable()).toBe(avail);
  });

  it('the offset is checked before the fd: unaligned offset with a bad or unmappable fd -> EINVAL (kernel: arch/x86/kernel/sys_x86_64.c and arch/arm64/kernel/sys.c sys_mmap test offset_in_page(off) before ksys_mmap_pgoff looks the fd up)', async () => {
    const host = await newHost();
    const iommufd = host.open('/dev/iommu');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, 1234, 1))).toBe('EINVAL');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, iommufd, 1))).toBe('EINVAL');
  });

  it('an fd whose file has no mmap method -> ENODEV (mmap(2) ENODEV: "The underlying filesystem of the specified file does not support memory mapping"): a VFIO device fd here', async () => {
    const host = await createHost({ memoryLimit: 64 << 20 });
    const dev = host.addDevice();
    const dfd = host.open(dev.path);
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, 0))).toBe('ENODEV');
  });

  it('/dev/iommu mmap follows iommufd_fops_mmap (Linux 6.17+, ref §7.1): MAP_PRIVATE -> EINVAL, PROT_EXEC -> EPERM, no registered region -> ENXIO', async () => {
    const host = await createHost({ memoryLimit: 64 << 20 });
    const iommufd = host.open('/dev/iommu');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, iommufd, 0))).toBe('EINVAL');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_EXEC, MAP_SHARED, iommufd, 0))).toBe('EPERM');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, iommufd, PAGE))).toBe('ENXIO');
  });


  it('a bad fd without MAP_ANONYMOUS -> EBADF, whether never opened or closed (mmap(2) EBADF: "fd is not a valid file descriptor (and MAP_ANONYMOUS was not set)")', async () => {
    const host = await newHost();
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, 77, 0))).toBe('EBADF');
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, -1, 0))).toBe('EBADF');
    const m = host.memfdCreate('closed');
    host.ftruncate(m, PAGE);
    host.close(m);
    expect(outcome(() => host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0))).toBe('EBADF');
  });

  it('MAP_ANONYMOUS ignores the fd (mmap(2) MAP_ANONYMOUS: "The fd argument is ignored; however, some implementations require fd to be -1")', async () => {
    const host = await newHost();
    const va = host.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, 42, 0);
    expectBytes(host.mem.read(va, PAGE), new Uint8Array(PAGE));
  });

  it('a failed mmap leaves no mapping and takes no frames (DESIGN 4: "A failed call leaves no trace")', async () => {
    const host = await newHost();
    const memfd = host.memfdCreate('trace');
    host.ftruncate(memfd, 4 * PAGE);
    const free = host.engine.framesFree(), avail = host.engine.framesAvailable();
    for (const f of [
      () => host.mmap(0),
      () => host.mmap(PAGE, PROT_READ, MAP_ANONYMOUS),
      () => host.mmap(PAGE, PROT_READ, MAP_SHARED, memfd, 3),
      () => host.mmap(PAGE, PROT_READ, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS),
      () => host.mmap(PAGE, PROT_READ, MAP_SHARED, 99, 0),
    ]) expect(outcome(f)).not.toBe('OK');
    expect(host.engine.framesFree()).toBe(free);
    expect(host.engine.framesAvailable()).toBe(avail);
  });
});

describe('protections', () => {
  it('PROT_READ only: mem.read works, mem.write -> EFAULT and changes nothing (mmap(2) PROT_READ; a write is a fault, copy_to_user -> EFAULT)', async () => {
    const host = await newHost();
    const va = host.mmap(2 * PAGE, PROT_READ);
    expectBytes(host.mem.read(va, 2 * PAGE), new Uint8Array(2 * PAGE));
    expect(outcome(() => host.mem.write(va, new Uint8Array([1])))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va + PAGE + 100, new Uint8Array(10).fill(3)))).toBe('EFAULT');
    expectBytes(host.mem.read(va, 2 * PAGE), new Uint8Array(2 * PAGE));
  });

  it('PROT_NONE: both mem.read and mem.write -> EFAULT (mmap(2) PROT_NONE: "Pages may not be accessed")', async () => {
    const host = await newHost();
    const va = host.mmap(PAGE, PROT_NONE);
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va, new Uint8Array([1])))).toBe('EFAULT');
  });
});

describe('munmap', () => {
  async function threePages(): Promise<{ host: Host; va: number; bytes: Uint8Array }> {
    const host = await newHost();
    const va = host.mmap(3 * PAGE);
    const bytes = pattern(3 * PAGE, 2);
    host.mem.write(va, bytes);
    return { host, va, bytes };
  }

  it('of the first page leaves the rest mapped with its bytes; the unmapped page -> EFAULT (munmap(2): "further references to addresses within the range generate invalid memory references")', async () => {
    const { host, va, bytes } = await threePages();
    host.munmap(va, PAGE);
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va + PAGE - 1, 1))).toBe('EFAULT');
    expectBytes(host.mem.read(va + PAGE, 2 * PAGE), bytes.subarray(PAGE));
  });

  it('of a middle page splits the mapping: both sides keep their bytes (munmap(2))', async () => {
    const { host, va, bytes } = await threePages();
    host.munmap(va + PAGE, PAGE);
    expectBytes(host.mem.read(va, PAGE), bytes.subarray(0, PAGE));
    expectBytes(host.mem.read(va + 2 * PAGE, PAGE), bytes.subarray(2 * PAGE));
    expect(outcome(() => host.mem.read(va + PAGE, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va + 2 * PAGE - 1, 1))).toBe('EFAULT');
    // The two halves are still writable.
    host.mem.write(va + PAGE - 1, new Uint8Array([0xee]));
    host.mem.write(va + 2 * PAGE, new Uint8Array([0xdd]));
    expect(host.mem.read(va + PAGE - 1, 1)[0]).toBe(0xee);
    expect(host.mem.read(va + 2 * PAGE, 1)[0]).toBe(0xdd);
  });

  it('of the last page leaves the front mapped (munmap(2))', async () => {
    const { host, va, bytes } = await threePages();
    host.munmap(va + 2 * PAGE, PAGE);
    expectBytes(host.mem.read(va, 2 * PAGE), bytes.subarray(0, 2 * PAGE));
    expect(outcome(() => host.mem.read(va + 2 * PAGE, 1))).toBe('EFAULT');
  });

  it('rounds the length up: every page containing part of the range goes (munmap(2): "length need not be" a multiple; "All pages containing a part of the indicated range are unmapped")', async () => {
    const { host, va, bytes } = await threePages();
    host.munmap(va, PAGE + 1);
    expect(outcome(() => host.mem.read(va + PAGE, 1))).toBe('EFAULT');
    expectBytes(host.mem.read(va + 2 * PAGE, PAGE), bytes.subarray(2 * PAGE));
  });

  it('of an unaligned address -> EINVAL and nothing is unmapped (munmap(2) EINVAL: addr not page aligned)', async () => {
    const { host, va, bytes } = await threePages();
    expect(outcome(() => host.munmap(va + 1, PAGE))).toBe('EINVAL');
    expect(outcome(() => host.munmap(va + PAGE - 8, 16))).toBe('EINVAL');
    expectBytes(host.mem.read(va, 3 * PAGE), bytes);
  });

  it('with length 0 -> EINVAL (munmap(2) EINVAL: "(since Linux 2.6.12) length was 0")', async () => {
    const { host, va, bytes } = await threePages();
    expect(outcome(() => host.munmap(va, 0))).toBe('EINVAL');
    expectBytes(host.mem.read(va, 3 * PAGE), bytes);
  });

  it('of a range with no mapping succeeds (munmap(2): "It is not an error if the indicated range does not contain any mapped pages")', async () => {
    const { host, va, bytes } = await threePages();
    host.munmap(va + 3 * PAGE, 5 * PAGE);
    host.munmap(0x1_0000_0000, 64 * PAGE);
    host.munmap(va, 3 * PAGE);
    host.munmap(va, 3 * PAGE); // again: now a hole
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    void bytes;
  });

  it('of a range covering two mappings and the gap between them removes both (munmap(2): the whole range)', async () => {
    const host = await newHost();
    const a = host.mmap(2 * PAGE);
    const gap = host.mmap(PAGE);
    const b = host.mmap(2 * PAGE);
    host.munmap(gap, PAGE);
    const lo = Math.min(a, b), hi = Math.max(a, b) + 2 * PAGE;
    host.munmap(lo, hi - lo);
    expect(outcome(() => host.mem.read(a, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(b + PAGE, 1))).toBe('EFAULT');
  });

  it('returns the frames to the allocator, and a partial munmap returns just its pages (kernel: zap_page_range frees the pages; DESIGN 2)', async () => {
    const host = await newHost();
    const e = host.engine;
    const avail0 = e.framesAvailable();
    const va = host.mmap(8 * PAGE);
    const free1 = e.framesFree();
    expect(e.framesAvailable()).toBe(avail0 - 8);
    host.munmap(va + 2 * PAGE, 3 * PAGE);
    expect(e.framesFree()).toBe(free1 + 3);
    host.munmap(va, 8 * PAGE);
    expect(e.framesFree()).toBe(free1 + 8);
    expect(e.framesAvailable()).toBe(avail0);
  });

  it('returns all frames of a 2 MiB-aligned mapping (kernel: zap_page_range; DESIGN 2)', async () => {
    const host = await newHost();
    const e = host.engine;
    const avail0 = e.framesAvailable();
    const va = host.mmap(2 * HPAGE);
    expect(e.framesAvailable()).toBe(avail0 - (2 * HPAGE) / PAGE);
    const free1 = e.framesFree();
    host.munmap(va, 2 * HPAGE);
    expect(e.framesFree()).toBe(free1 + (2 * HPAGE) / PAGE);
    expect(e.framesAvailable()).toBe(avail0);
  });

  it('does not free a page an IOAS has pinned: DMA still reaches it, and the frame goes back only at IOAS_UNMAP (kernel: pin_user_pages(FOLL_LONGTERM) holds a page reference across munmap; DESIGN 2 "Pages are pinned")', async () => {
    const host = await newHost();
    const e = host.engine;
    const va = host.mmap(2 * PAGE);
    host.mem.write(va, pattern(2 * PAGE, 3));
    const io = new AttachedIoas(host);
    const iova = 0x10_0000n;
    io.map(va, 2 * PAGE, iova);
    const dev = io.attach(); // allocates I/O page-table frames too
    const avail0 = e.framesAvailable() + 2; // as if the two pages were free
    const pfn = dev.dma.translate(iova).pa / PAGE;
    expect(e.refcount(pfn)).toBeGreaterThanOrEqual(2); // the mapping and the pin
    host.munmap(va, 2 * PAGE);
    expect(outcome(() => host.mem.read(va, 1))).toBe('EFAULT');
    expect(e.framesAvailable()).toBe(avail0 - 2); // still held by the pin
    expect(e.refcount(pfn)).toBe(1);
    expectBytes(dev.dma.read(iova, 2 * PAGE), pattern(2 * PAGE, 3));
    io.unmap(iova, BigInt(2 * PAGE));
    expect(e.refcount(pfn)).toBe(0);
    expect(e.framesAvailable()).toBe(avail0);
  });
});

describe('host.mem: byte access at a VA', () => {
  it('read across an unmapped page -> EFAULT (copy_from_user fails: EFAULT "Bad address")', async () => {
    const host = await newHost();
    const va = host.mmap(3 * PAGE);
    host.munmap(va + PAGE, PAGE);
    expect(outcome(() => host.mem.read(va + PAGE - 10, 20))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va, 3 * PAGE))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va + PAGE + 5, 1))).toBe('EFAULT');
    // Reads that stay inside mapped pages still work.
    expectBytes(host.mem.read(va + PAGE - 10, 10), new Uint8Array(10));
    expectBytes(host.mem.read(va + 2 * PAGE, PAGE), new Uint8Array(PAGE));
  });

  it('write across an unmapped page -> EFAULT and writes nothing: the first page is unchanged (host/kernel/mm.ts contract "nothing is written then"; DESIGN 4 "A failed call leaves no trace")', async () => {
    const host = await newHost();
    const va = host.mmap(3 * PAGE);
    const before = pattern(3 * PAGE, 4);
    host.mem.write(va, before);
    host.munmap(va + 2 * PAGE, PAGE);
    expect(outcome(() => host.mem.write(va, new Uint8Array(3 * PAGE).fill(0x77)))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va + PAGE + 100, new Uint8Array(PAGE).fill(0x77)))).toBe('EFAULT');
    expectBytes(host.mem.read(va, 2 * PAGE), before.subarray(0, 2 * PAGE));
  });

  it('write across a read/write mapping into an adjacent read-only one -> EFAULT, nothing written (mmap(2) PROT_READ; DESIGN 4)', async () => {
    const host = await newHost();
    // Top-down placement: find two adjacent mappings with different protections.
    const ro = host.mmap(PAGE, PROT_READ);
    const rw = host.mmap(PAGE);
    const [lo, hi] = rw + PAGE === ro ? [rw, ro] : ro + PAGE === rw ? [ro, rw] : [0, 0];
    expect(lo, 'the two mappings are adjacent').not.toBe(0);
    expect(outcome(() => host.mem.write(lo + PAGE - 4, new Uint8Array(8).fill(9)))).toBe('EFAULT');
    expectBytes(host.mem.read(lo + PAGE - 4, 8), new Uint8Array(8));
    void hi;
  });

  it('read and write spanning two adjacent read/write mappings work as one range (copy_{to,from}_user walk VMAs)', async () => {
    const host = await newHost();
    const a = host.mmap(PAGE), b = host.mmap(PAGE);
    const lo = Math.min(a, b);
    expect(Math.abs(a - b)).toBe(PAGE);
    const bytes = pattern(PAGE, 5);
    host.mem.write(lo + PAGE / 2, bytes);
    expectBytes(host.mem.read(lo + PAGE / 2, PAGE), bytes);
  });

  it('an address with nothing mapped -> EFAULT, including VA 0 and a VA past the address space (EFAULT "Bad address")', async () => {
    const host = await newHost();
    expect(outcome(() => host.mem.read(0, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(0x1234_5000, 4))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(2 ** 52, new Uint8Array(1)))).toBe('EFAULT');
  });
});

describe('out of memory', () => {
  it('mmap larger than the memory limit -> ENOMEM, and the allocator is left as it was (mmap(2) ENOMEM "No memory is available"; DESIGN 4 "A failed call leaves no trace")', async () => {
    const host = await newHost({ memoryLimit: 64 << 20 });
    const e = host.engine;
    const free = e.framesFree(), avail = e.framesAvailable();
    expect(outcome(() => host.mmap(128 << 20))).toBe('ENOMEM');
    expect(outcome(() => host.mmap(64 << 20))).toBe('ENOMEM');
    expect(e.framesFree()).toBe(free);
    expect(e.framesAvailable()).toBe(avail);
    // Memory is still usable afterwards.
    const va = host.mmap(4 * PAGE);
    expectBytes(host.mem.read(va, 4 * PAGE), new Uint8Array(4 * PAGE));
  });

  it('mmap larger than what is left -> ENOMEM, earlier mappings untouched, allocator unchanged (mmap(2) ENOMEM; DESIGN 4)', async () => {
    const host = await newHost({ memoryLimit: 64 << 20 });
    const e = host.engine;
    const big = host.mmap(40 << 20);
    host.mem.write(big + (20 << 20), pattern(PAGE, 6));
    const free = e.framesFree(), avail = e.framesAvailable();
    expect(outcome(() => host.mmap(avail * PAGE + PAGE))).toBe('ENOMEM');
    expect(e.framesFree()).toBe(free);
    expect(e.framesAvailable()).toBe(avail);
    expectBytes(host.mem.read(big + (20 << 20), PAGE), pattern(PAGE, 6));
    // Exactly what is left still fits (no frame leaked by the failure).
    const rest = host.mmap(avail * PAGE);
    expect(e.framesAvailable()).toBe(0);
    host.munmap(rest, avail * PAGE);
    expect(e.framesAvailable()).toBe(avail);
  });
});
