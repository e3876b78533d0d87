// memfd_create(2), ftruncate(2), read(2)/write(2), poll(2) and mmap(2) of a
// memfd (host/kernel/memfd.ts, host/kernel/mm.ts) through the Host API,
// checked against Linux. Each test names its source:
//   memfd_create(2) / ftruncate(2) / mmap(2) / poll(2)   the man pages
//   kernel: <function>   what the kernel (mm/shmem.c, mm/memory.c, fs/) does
//   DESIGN n             /work/shared/DESIGN.md, section n
// A memfd is a shmem (tmpfs) file: one set of pages shared by read(),
// write() and every MAP_SHARED mapping (the page cache).

import { describe, it, expect } from 'vitest';
import {
  PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, POLLIN, POLLOUT, POLLNVAL,
} from '../host/index.js';
import { newHost, outcome, expectBytes, memfd, AttachedIoas } from './support/host.js';

const PAGE = 4096;
const RW = PROT_READ | PROT_WRITE;
/** include/uapi/linux/mman.h */
const MAP_SHARED_VALIDATE = 0x03;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 13 + seed * 101 + (i >>> 9)) & 0xff) || 0x5a;
  return b;
}

describe('memfd_create', () => {
  it('returns a new fd, empty (size 0): reading gives end of file (memfd_create(2): "initially, the file has zero length")', async () => {
    const host = await newHost();
    const fd = host.memfdCreate('empty');
    expect(fd).toBeGreaterThanOrEqual(3);
    expect(host.read(fd, new Uint8Array(16))).toBe(0);
    expect(host.memfdCreate('other')).not.toBe(fd);
  });

  it('name of 249 bytes is accepted, 250 -> EINVAL (memfd_create(2) EINVAL: "The name was too long. (The limit is 249 bytes, excluding the terminating null byte.)")', async () => {
    const host = await newHost();
    expect(host.memfdCreate('n'.repeat(249))).toBeGreaterThanOrEqual(3);
    expect(outcome(() => host.memfdCreate('n'.repeat(250)))).toBe('EINVAL');
  });

  it('poll: a memfd is always readable and writable; a closed fd is POLLNVAL (kernel: vfs_poll returns DEFAULT_POLLMASK for shmem, which has no ->poll; poll(2) POLLNVAL "fd not open")', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    expect(host.poll(fd, POLLIN | POLLOUT)).toBe(POLLIN | POLLOUT);
    expect(host.poll(fd, POLLIN)).toBe(POLLIN);
    host.close(fd);
    expect(host.poll(fd, POLLIN)).toBe(POLLNVAL);
  });
});

describe('MAP_SHARED mappings of a memfd', () => {
  it('two mappings of the same memfd see each other\'s writes: the same pages (mmap(2) MAP_SHARED: "Updates to the mapping are visible to other processes mapping the same region")', async () => {
    const host = await newHost();
    const fd = memfd(host, 4 * PAGE);
    const a = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const b = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    expect(a).not.toBe(b);
    expectBytes(host.mem.read(a, 4 * PAGE), new Uint8Array(4 * PAGE)); // a new file reads as zeros
    const bytes = pattern(4 * PAGE, 1);
    host.mem.write(a, bytes);
    expectBytes(host.mem.read(b, 4 * PAGE), bytes);
    host.mem.write(b + PAGE + 7, new Uint8Array([1, 2, 3]));
    expectBytes(host.mem.read(a + PAGE + 7, 3), new Uint8Array([1, 2, 3]));
  });

  it('a mapping at a file offset sees the file from that offset (mmap(2): "starting at offset offset in the file")', async () => {
    const host = await newHost();
    const fd = memfd(host, 4 * PAGE);
    const whole = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const tail = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 2 * PAGE);
    const bytes = pattern(4 * PAGE, 2);
    host.mem.write(whole, bytes);
    expectBytes(host.mem.read(tail, 2 * PAGE), bytes.subarray(2 * PAGE));
    host.mem.write(tail + 5, new Uint8Array([0xfe]));
    expect(host.mem.read(whole + 2 * PAGE + 5, 1)[0]).toBe(0xfe);
  });

  it('write() and read() on the fd agree with the mappings (mmap(2) MAP_SHARED: updates "are carried through to the underlying file"; kernel: shmem read/write and faults use the same page cache)', async () => {
    const host = await newHost();
    const fd = memfd(host, 2 * PAGE);
    const va = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    // write() at file position 0 shows through the mapping.
    const w = pattern(PAGE + 100, 3);
    expect(host.write(fd, w)).toBe(w.length);
    expectBytes(host.mem.read(va, w.length), w);
    // A store through the mapping at the file position shows in read().
    const m = pattern(300, 4);
    host.mem.write(va + w.length, m);
    const got = new Uint8Array(300);
    expect(host.read(fd, got)).toBe(300);
    expectBytes(got, m);
    // read() stops at end of file.
    const rest = new Uint8Array(4 * PAGE);
    expect(host.read(fd, rest)).toBe(2 * PAGE - w.length - 300);
    expect(host.read(fd, rest)).toBe(0);
  });

  it('write() past the end grows the file, and the mapping can then reach the new page (kernel: shmem_file_write_iter -> i_size_write; mmap(2) SIGBUS only beyond EOF)', async () => {
    const host = await newHost();
    const fd = memfd(host, 0);
    const va = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    expect(outcome(() => host.mem.read(va + PAGE, 1))).toBe('EFAULT');
    const bytes = pattern(PAGE + 10, 5);
    expect(host.write(fd, bytes)).toBe(PAGE + 10);
    expectBytes(host.mem.read(va, PAGE + 10), bytes);
  });

  it('a page wholly past the end of the file -> EFAULT for reads and writes (mmap(2) SIGBUS: "Attempted access to a page of the buffer that lies beyond the end of the mapped file")', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    const va = host.mmap(3 * PAGE, RW, MAP_SHARED, fd, 0); // longer than the file: allowed
    host.mem.write(va, new Uint8Array([1]));
    expect(outcome(() => host.mem.read(va + PAGE, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va + 2 * PAGE + 100, 4))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va + PAGE, new Uint8Array([1])))).toBe('EFAULT');
    // A range starting inside the file and running past it faults as a whole.
    expect(outcome(() => host.mem.read(va + PAGE - 4, 8))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(va + PAGE - 4, new Uint8Array(8).fill(9)))).toBe('EFAULT');
    expectBytes(host.mem.read(va + PAGE - 4, 4), new Uint8Array(4)); // nothing written
    // A mapping at an offset past the end faults from its first byte.
    const past = host.mmap(PAGE, RW, MAP_SHARED, fd, 4 * PAGE);
    expect(outcome(() => host.mem.read(past, 1))).toBe('EFAULT');
  });

  it('the partial last page is mapped whole: bytes past EOF in it read as zeros, and stores there do not reach the file (mmap(2) NOTES: "the remaining bytes in the partial page at the end of the mapping are zeroed when mapped, and modifications to that region are not written out to the file"; SIGBUS is only for pages beyond EOF)', async () => {
    const host = await newHost();
    const fd = memfd(host, 100);
    const va = host.mmap(PAGE, RW, MAP_SHARED, fd, 0);
    expectBytes(host.mem.read(va, PAGE), new Uint8Array(PAGE));
    host.mem.write(va + 200, new Uint8Array([7, 7, 7]));
    // The file is still 100 bytes long: read() returns 100, not more.
    const all = new Uint8Array(PAGE);
    expect(host.read(fd, all)).toBe(100);
  });

  it('MAP_SHARED_VALIDATE (MAP_SHARED | MAP_PRIVATE) is a valid shared file mapping (mmap(2) MAP_SHARED_VALIDATE, since Linux 4.15: "the same behavior as MAP_SHARED" with flag validation; kernel: do_mmap file switch)', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    const a = host.mmap(PAGE, RW, MAP_SHARED_VALIDATE, fd, 0);
    const b = host.mmap(PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(a + 1, new Uint8Array([0x42]));
    expect(host.mem.read(b + 1, 1)[0]).toBe(0x42);
  });

  it('PROT_READ shared mapping: reads the file, stores -> EFAULT (mmap(2) PROT_READ)', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    host.write(fd, new Uint8Array([1, 2, 3]));
    const va = host.mmap(PAGE, PROT_READ, MAP_SHARED, fd, 0);
    expectBytes(host.mem.read(va, 3), new Uint8Array([1, 2, 3]));
    expect(outcome(() => host.mem.write(va, new Uint8Array([9])))).toBe('EFAULT');
  });
});

describe('ftruncate', () => {
  it('shrink then grow: data before the new end stays, the rest reads as zeros, through read() and through the mapping (ftruncate(2): "the extra data is lost ... the extended part reads as null bytes")', async () => {
    const host = await newHost();
    const fd = memfd(host, 3 * PAGE);
    const va = host.mmap(3 * PAGE, RW, MAP_SHARED, fd, 0);
    const bytes = pattern(3 * PAGE, 6);
    host.mem.write(va, bytes);
    host.ftruncate(fd, 100);
    host.ftruncate(fd, 3 * PAGE);
    const expected = new Uint8Array(3 * PAGE);
    expected.set(bytes.subarray(0, 100));
    expectBytes(host.mem.read(va, 3 * PAGE), expected);
    const viaRead = new Uint8Array(3 * PAGE);
    expect(host.read(fd, viaRead)).toBe(3 * PAGE);
    expectBytes(viaRead, expected);
  });

  it('after a shrink, mapped pages past the new end -> EFAULT, and their frames are freed (mmap(2) SIGBUS; kernel: shmem_setattr -> shmem_truncate_range frees the pages)', async () => {
    const host = await newHost();
    const fd = memfd(host, 4 * PAGE);
    const va = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(va, pattern(4 * PAGE, 7)); // touch every page
    const free = host.engine.framesFree();
    host.ftruncate(fd, PAGE);
    expect(host.engine.framesFree()).toBe(free + 3);
    expect(outcome(() => host.mem.read(va + PAGE, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.read(va + 3 * PAGE, 1))).toBe('EFAULT');
    expectBytes(host.mem.read(va, PAGE), pattern(4 * PAGE, 7).subarray(0, PAGE));
  });

  it('ftruncate on a file that is not a regular file (/dev/iommu) -> EINVAL (ftruncate(2) EINVAL: "fd does not reference a regular file or a POSIX shared memory object")', async () => {
    const host = await newHost();
    const iommufd = host.open('/dev/iommu');
    expect(outcome(() => host.ftruncate(iommufd, PAGE))).toBe('EINVAL');
  });

  it('bad fd -> EBADF (ftruncate(2) EBADF)', async () => {
    const host = await newHost();
    expect(outcome(() => host.ftruncate(55, PAGE))).toBe('EBADF');
    const fd = memfd(host, PAGE);
    host.close(fd);
    expect(outcome(() => host.ftruncate(fd, PAGE))).toBe('EBADF');
  });

  it('negative length -> EINVAL, and the size is unchanged (ftruncate(2) EINVAL: "The argument length is negative")', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    expect(outcome(() => host.ftruncate(fd, -1))).toBe('EINVAL');
    expect(outcome(() => host.ftruncate(fd, -PAGE))).toBe('EINVAL');
    expect(host.read(fd, new Uint8Array(2 * PAGE))).toBe(PAGE);
  });

  it('a page pinned by an IOAS outlives truncation: DMA still reaches the old page while the file gets a new zero page (kernel: pin_user_pages holds the page after truncate_inode_pages removes it from the file; DESIGN 2)', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    const va = host.mmap(PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(va, pattern(PAGE, 8));
    const io = new AttachedIoas(host);
    io.map(va, PAGE, 0x10_0000n);
    const dev = io.attach();
    host.ftruncate(fd, 0);
    host.ftruncate(fd, PAGE);
    expectBytes(host.mem.read(va, PAGE), new Uint8Array(PAGE));
    expectBytes(dev.dma.read(0x10_0000n, PAGE), pattern(PAGE, 8));
  });
});

describe('lifetime', () => {
  it('closing the fd keeps the mapping working: the mapping holds the file (mmap(2): "closing the file descriptor does not unmap the region")', async () => {
    const host = await newHost();
    const fd = memfd(host, 2 * PAGE);
    const a = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    const b = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(a, pattern(2 * PAGE, 9));
    host.close(fd);
    expectBytes(host.mem.read(a, 2 * PAGE), pattern(2 * PAGE, 9));
    host.mem.write(a + PAGE, new Uint8Array([0x31]));
    expect(host.mem.read(b + PAGE, 1)[0]).toBe(0x31);
  });

  it('the pages live while the fd is open, with no mapping (memfd_create(2): the file lives while references to it remain)', async () => {
    const host = await newHost();
    const fd = memfd(host, 2 * PAGE);
    const a = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(a, pattern(2 * PAGE, 10));
    host.munmap(a, 2 * PAGE);
    const b = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    expectBytes(host.mem.read(b, 2 * PAGE), pattern(2 * PAGE, 10));
  });

  it('after munmap of every mapping and close, the frames are freed; munmap first (memfd_create(2): "automatically released when all references to the file are dropped")', async () => {
    const host = await newHost();
    const e = host.engine;
    const fd = memfd(host, 4 * PAGE);
    const avail = e.framesAvailable();
    const a = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const b = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 2 * PAGE);
    host.mem.write(a, pattern(4 * PAGE, 11));
    expect(e.framesAvailable()).toBe(avail - 4);
    const free = e.framesFree();
    host.munmap(a, 4 * PAGE);
    host.munmap(b, 2 * PAGE);
    expect(e.framesFree()).toBe(free); // the fd still holds the file
    host.close(fd);
    expect(e.framesFree()).toBe(free + 4);
    expect(e.framesAvailable()).toBe(avail);
  });

  it('after close and then munmap of every mapping (a partial munmap first), the frames are freed (memfd_create(2); munmap(2))', async () => {
    const host = await newHost();
    const e = host.engine;
    const fd = memfd(host, 4 * PAGE);
    const avail = e.framesAvailable();
    const a = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const b = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    host.mem.write(a, pattern(4 * PAGE, 12));
    host.close(fd);
    host.munmap(a + PAGE, PAGE); // split a
    host.munmap(b, 4 * PAGE);
    expect(e.framesAvailable()).toBe(avail - 4); // a's pieces still hold the file
    expectBytes(host.mem.read(a + 2 * PAGE, PAGE), pattern(4 * PAGE, 12).subarray(2 * PAGE, 3 * PAGE));
    host.munmap(a, PAGE);
    host.munmap(a + 2 * PAGE, 2 * PAGE);
    expect(e.framesAvailable()).toBe(avail);
  });

  it('a never-touched memfd takes no frames, even when large (kernel: shmem allocates pages on first fault or write)', async () => {
    const host = await newHost();
    const avail = host.engine.framesAvailable();
    const fd = memfd(host, 1 << 30); // larger than the memory limit
    host.mmap(1 << 30, RW, MAP_SHARED, fd, 0);
    expect(host.engine.framesAvailable()).toBe(avail);
  });
});

describe('MAP_PRIVATE mappings of a memfd', () => {
  it('start with the file\'s bytes, and stores through them do not reach the file, read() or shared mappings (mmap(2) MAP_PRIVATE: "Updates to the mapping are not visible to other processes mapping the same file, and are not carried through to the underlying file")', async () => {
    const host = await newHost();
    const fd = memfd(host, 2 * PAGE);
    const shared = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    const bytes = pattern(2 * PAGE, 13);
    host.mem.write(shared, bytes);
    const priv = host.mmap(2 * PAGE, RW, MAP_PRIVATE, fd, 0);
    expectBytes(host.mem.read(priv, 2 * PAGE), bytes);
    host.mem.write(priv, new Uint8Array(2 * PAGE).fill(0xcc));
    expectBytes(host.mem.read(priv, 2 * PAGE), new Uint8Array(2 * PAGE).fill(0xcc));
    expectBytes(host.mem.read(shared, 2 * PAGE), bytes);
    const viaRead = new Uint8Array(2 * PAGE);
    expect(host.read(fd, viaRead)).toBe(2 * PAGE);
    expectBytes(viaRead, bytes);
    // A second private mapping does not see the first one's stores either.
    const priv2 = host.mmap(2 * PAGE, RW, MAP_PRIVATE, fd, 0);
    expectBytes(host.mem.read(priv2, 2 * PAGE), bytes);
  });

  it('a private mapping at an offset starts with the file\'s bytes from there (mmap(2))', async () => {
    const host = await newHost();
    const fd = memfd(host, 3 * PAGE);
    const bytes = pattern(3 * PAGE, 14);
    host.write(fd, bytes);
    const priv = host.mmap(PAGE, RW, MAP_PRIVATE, fd, 2 * PAGE);
    expectBytes(host.mem.read(priv, PAGE), bytes.subarray(2 * PAGE));
  });

  it('pages of a private mapping wholly past the end of the file -> EFAULT too (mmap(2) SIGBUS applies to any file mapping; kernel: shmem_fault returns VM_FAULT_SIGBUS past i_size for MAP_PRIVATE as well)', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE);
    const priv = host.mmap(3 * PAGE, RW, MAP_PRIVATE, fd, 0);
    host.mem.write(priv, new Uint8Array([1]));
    expect(outcome(() => host.mem.read(priv + PAGE, 1))).toBe('EFAULT');
    expect(outcome(() => host.mem.write(priv + 2 * PAGE, new Uint8Array([1])))).toBe('EFAULT');
  });

  it('the frames of a private mapping go back at munmap (kernel: zap_page_range; DESIGN 2)', async () => {
    const host = await newHost();
    const fd = memfd(host, 4 * PAGE);
    const avail = host.engine.framesAvailable();
    const priv = host.mmap(4 * PAGE, RW, MAP_PRIVATE, fd, 0);
    host.mem.write(priv, pattern(4 * PAGE, 15));
    host.munmap(priv, 4 * PAGE);
    host.close(fd);
    expect(host.engine.framesAvailable()).toBe(avail);
  });
});

describe('memfd under an IOAS', () => {
  it('a shared memfd mapping can be pinned and DMAed: device writes show through every mapping and read() (kernel: pin_user_pages on shmem pages; DESIGN 2 "mmap of a memfd maps the file\'s pages")', async () => {
    const host = await newHost();
    const fd = memfd(host, 4 * PAGE);
    const a = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const b = host.mmap(4 * PAGE, RW, MAP_SHARED, fd, 0);
    const io = new AttachedIoas(host);
    io.map(a, 4 * PAGE, 0x20_0000n);
    const dev = io.attach();
    const bytes = pattern(2 * PAGE, 16);
    dev.dma.write(0x20_0000n + BigInt(PAGE - 50), bytes);
    expectBytes(host.mem.read(b + PAGE - 50, 2 * PAGE), bytes);
    const viaRead = new Uint8Array(4 * PAGE);
    host.read(fd, viaRead);
    expectBytes(viaRead.subarray(PAGE - 50, 3 * PAGE - 50), bytes);
  });

  it('a mapping whose file ends mid-page can be pinned whole: the last page is a real page (kernel: pin_user_pages faults in the partial last page; mmap(2) NOTES on the partial page)', async () => {
    const host = await newHost();
    const fd = memfd(host, PAGE + 100);
    const va = host.mmap(2 * PAGE, RW, MAP_SHARED, fd, 0);
    const io = new AttachedIoas(host);
    io.attach();
    io.map(va, 2 * PAGE, 0x30_0000n);
  });
});
