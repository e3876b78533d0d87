/**
 * Resource limits (issue 9): the engine's memory limit (createHost({
 * memoryLimit })) and the iommufd's pinned-memory limit (RLIMIT_MEMLOCK,
 * IOMMU_OPTION_RLIMIT_MODE) are respected, and every ENOMEM leaves the state
 * as it was: no area, pin, charge, HWPT, attachment or translation half
 * made (checkInvariants after each failure, and the same call succeeding
 * once memory is back).
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, AttachedIoas, uapi, PAGE, expectErrno, outcome } from './support/host.js';
import { DmaFault } from '../host/index.js';
import { checkInvariants, allObjectsForTest } from './support/fuzz.js';

const T = uapi.IOMMUFD_IOCTL;
const RW = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = uapi.IOMMU_IOAS_MAP_FIXED_IOVA;

/** A snapshot of what an ENOMEM must not change. */
function state(host: Awaited<ReturnType<typeof newHost>>) {
  const objs = allObjectsForTest(host).map(({ obj }) => `${obj.type}${obj.id}:${obj.users}` + (obj.type === 'IOAS' ? `:${obj.iopt.areas.map((a: { iova: bigint; last: bigint }) => `${a.iova}-${a.last}`).join(',')}:${obj.iopt.domains.length}` : ''));
  return { objs: objs.join(' '), locked: host.lockedPages };
}

/** Fill the engine's memory with one-page mmaps; returns them (munmap some to free frames). */
function fill(host: Awaited<ReturnType<typeof newHost>>): number[] {
  const vas: number[] = [];
  for (;;) {
    try { vas.push(host.mmap(PAGE)); } catch (e) { expect(String(e)).toMatch(/ENOMEM/); return vas; }
  }
}

test('engine memory limit: ENOMEM from page-table growth in IOAS_MAP, attach and HWPT_ALLOC leaves nothing half made', async () => {
  const host = await newHost({ memoryLimit: 8 << 20 });
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const a = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  const aid = a.bind(ictx.fd);
  a.attach(ioas);
  const va = host.mmap(4 * PAGE);
  host.mem.write(va, new Uint8Array([1, 2, 3]));
  ictx.map(ioas, va, 4 * PAGE, 0x100000n, RW | FIXED);
  const filler = fill(host);
  checkInvariants(host);
  const before = state(host);
  // mmap itself: ENOMEM, nothing mapped.
  expectErrno(() => host.mmap(PAGE), 'ENOMEM');
  // Each IOVA 512 GiB away needs new level-3, level-2 and level-1 tables: no frame left for them.
  let iova = 1n << 39n;
  expectErrno(() => ictx.map(ioas, va, PAGE, iova, RW | FIXED), 'ENOMEM');
  expect(state(host)).toEqual(before);
  checkInvariants(host);
  expect(a.dma.read(0x100000, 3)).toEqual(new Uint8Array([1, 2, 3]));
  try { a.dma.read(iova, 1); expect.fail('reached an IOVA whose map failed'); } catch (e) { expect(e).toBeInstanceOf(DmaFault); }
  // With one or two frames free the walk gets part of the way: still nothing left behind.
  for (let free = 1; free <= 2; free++) {
    host.munmap(filler.pop()!, PAGE);
    expectErrno(() => ictx.map(ioas, va, PAGE, iova, RW | FIXED), 'ENOMEM');
    checkInvariants(host);
    expect(state(host).objs).toEqual(before.objs);
    iova += 1n << 39n;
  }
  // A second unit's domain for the IOAS (attach of an AMD device): its tables do not fit.
  const b = new VfioDevice(host, host.addDevice({ iommu: 'amd-vi' }));
  b.bind(ictx.fd);
  const objs = state(host).objs;
  expect(outcome(() => b.attach(ioas))).toBe('ENOMEM');
  expect(state(host).objs).toEqual(objs); // no automatic HWPT left, b not attached
  checkInvariants(host);
  try { b.dma.read(0x100000, 1); expect.fail('b reached memory though its attach failed'); } catch (e) { expect(e).toBeInstanceOf(DmaFault); }
  // HWPT_ALLOC needs a root table frame at least.
  let got: string = 'OK';
  for (let i = 0; i < 16 && got === 'OK'; i++) {
    const objsBefore = state(host).objs;
    got = outcome(() => ictx.ioctl(T.IOMMU_HWPT_ALLOC, { flags: 0, dev_id: aid, pt_id: ioas }));
    if (got !== 'OK') expect(state(host).objs).toEqual(objsBefore);
  }
  expect(got).toBe('ENOMEM');
  checkInvariants(host);
  // Memory back: the same calls succeed.
  for (let i = 0; i < 64; i++) host.munmap(filler.pop()!, PAGE);
  expect(ictx.map(ioas, va, PAGE, 1n << 39n, RW | FIXED)).toBe(1n << 39n);
  expect(b.attach(ioas)).toBeGreaterThan(0);
  expect(b.dma.read(1n << 39n, 3)).toEqual(new Uint8Array([1, 2, 3]));
  checkInvariants(host);
});

test('RLIMIT_MEMLOCK: pins beyond the limit are ENOMEM (map, copy into a new pages object, attach), nothing half made', async () => {
  const LIMIT = 8;
  const host = await newHost({ credentials: { rlimitMemlock: LIMIT * PAGE } });
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const a = io.attach({ iommu: 'intel-vtd' });
  const va = host.mmap(32 * PAGE);
  ictx.map(ioas, va, 6 * PAGE, 0x100000n, RW | FIXED);
  expect(host.lockedPages).toBe(6);
  let before = state(host);
  expectErrno(() => ictx.map(ioas, va + 6 * PAGE, 3 * PAGE, 0x200000n, RW | FIXED), 'ENOMEM');
  expect(state(host)).toEqual(before);
  checkInvariants(host);
  ictx.map(ioas, va + 6 * PAGE, 2 * PAGE, 0x200000n, RW | FIXED); // exactly the limit
  expect(host.lockedPages).toBe(LIMIT);
  // IOAS_COPY shares the pages object: pinned once, no new charge.
  ictx.ioctl(T.IOMMU_IOAS_COPY, { flags: RW | FIXED, dst_ioas_id: ioas, src_ioas_id: ioas, length: 6 * PAGE, dst_iova: 0x400000, src_iova: 0x100000 });
  expect(host.lockedPages).toBe(LIMIT);
  checkInvariants(host);
  // Another IOAS mapping the same VA has its own pages object, charged again (as user->locked_vm counts it): ENOMEM at attach.
  const ioas2 = ictx.ioasAlloc();
  ictx.map(ioas2, va, 4 * PAGE, 0x100000n, RW | FIXED); // no domain: nothing pinned yet
  expect(host.lockedPages).toBe(LIMIT);
  const b = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  b.bind(ictx.fd);
  before = state(host);
  expectErrno(() => b.attach(ioas2), 'ENOMEM');
  expect(state(host)).toEqual(before);
  checkInvariants(host);
  try { b.dma.read(0x100000, 1); expect.fail('reached memory though the attach failed'); } catch (e) { expect(e).toBeInstanceOf(DmaFault); }
  // Unmapping gives the budget back; the attach then pins and charges 4.
  ictx.unmap(ioas, 0n, (1n << 64n) - 1n);
  expect(host.lockedPages).toBe(0);
  b.attach(ioas2);
  expect(host.lockedPages).toBe(4);
  checkInvariants(host);
});

// pages.c pins first and charges after (pfn_reader_user_pin, then
// pfn_reader_update_pinned, whose comment says the count "is done after the
// pages have been read and processed"): a range both past the limit and
// not all mapped fails on the pin, EFAULT, and a charge refused unpins
// what was just pinned.
test('RLIMIT_MEMLOCK: the pin comes before the charge (an unmapped page past the limit is EFAULT, not ENOMEM), and a refused charge leaves nothing pinned', async () => {
  const host = await newHost({ credentials: { rlimitMemlock: 2 * PAGE } });
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const a = io.attach({ iommu: 'intel-vtd' });
  const va = host.mmap(8 * PAGE);
  host.munmap(va + 5 * PAGE, PAGE); // a hole in the range
  const before = state(host);
  expectErrno(() => ictx.map(ioas, va, 8 * PAGE, 0x100000n, RW | FIXED), 'EFAULT');
  expect(state(host)).toEqual(before);
  // All mapped but past the limit: ENOMEM, and the first page's frame holds no pin more than before.
  ictx.map(ioas, va, PAGE, 0x200000n, RW | FIXED);
  const pfn = Number(a.dma.translate(0x200000n).pa) / PAGE;
  const pinned = host.engine.refcount(pfn);
  ictx.unmap(ioas, 0x200000n, BigInt(PAGE));
  expectErrno(() => ictx.map(ioas, va, 4 * PAGE, 0x100000n, RW | FIXED), 'ENOMEM');
  expect(state(host)).toEqual(before);
  expect(host.engine.refcount(pfn)).toBe(pinned - 1);
  checkInvariants(host);
});

test('RLIMIT_MEMLOCK with CAP_IPC_LOCK: nothing charged, no limit', async () => {
  const host = await newHost({ credentials: { rlimitMemlock: 2 * PAGE, capIpcLock: true } });
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const a = new VfioDevice(host, host.addDevice());
  a.bind(ictx.fd);
  a.attach(ioas);
  const va = host.mmap(16 * PAGE);
  ictx.map(ioas, va, 16 * PAGE, 0x100000n, RW | FIXED);
  expect(host.lockedPages).toBe(0);
  checkInvariants(host);
});

test('IOMMU_OPTION_RLIMIT_MODE: get, set only on an empty iommufd (EBUSY), 0 or 1 (EINVAL), CAP_SYS_RESOURCE (EPERM); mode 1 is held to the same limit', async () => {
  const opt = (ictx: Iommufd, op: number, val = 0) => ictx.ioctl(T.IOMMU_OPTION, { option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op, object_id: 0, val64: val }).val64 as bigint;
  const host = await newHost({ credentials: { rlimitMemlock: 4 * PAGE } });
  const ictx = new Iommufd(host);
  expect(opt(ictx, uapi.IOMMU_OPTION_OP_GET)).toBe(0n);
  expectErrno(() => opt(ictx, uapi.IOMMU_OPTION_OP_SET, 2), 'EINVAL');
  const ioas = ictx.ioasAlloc();
  expectErrno(() => opt(ictx, uapi.IOMMU_OPTION_OP_SET, 1), 'EBUSY');
  ictx.destroy(ioas);
  opt(ictx, uapi.IOMMU_OPTION_OP_SET, 1);
  expect(opt(ictx, uapi.IOMMU_OPTION_OP_GET)).toBe(1n);
  const ioas2 = ictx.ioasAlloc();
  const a = new VfioDevice(host, host.addDevice());
  a.bind(ictx.fd);
  a.attach(ioas2);
  const va = host.mmap(8 * PAGE);
  const before = state(host);
  expectErrno(() => ictx.map(ioas2, va, 5 * PAGE, 0x100000n, RW | FIXED), 'ENOMEM');
  expect(state(host)).toEqual(before);
  ictx.map(ioas2, va, 4 * PAGE, 0x100000n, RW | FIXED);
  expect(host.lockedPages).toBe(4);
  checkInvariants(host);
  const weak = await newHost({ credentials: { capSysResource: false } });
  const w = new Iommufd(weak);
  expect(opt(w, uapi.IOMMU_OPTION_OP_GET)).toBe(0n);
  expectErrno(() => opt(w, uapi.IOMMU_OPTION_OP_SET, 1), 'EPERM');
});

test('engine memory limit with two domains on the IOAS: ENOMEM in the second domain undoes the first (IOAS_MAP, IOAS_COPY)', async () => {
  const host = await newHost({ memoryLimit: 8 << 20 });
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const a = io.attach({ iommu: 'intel-vtd' });
  const b = io.attach({ iommu: 'amd-vi' });
  const va = host.mmap(4 * PAGE);
  host.mem.write(va, new Uint8Array([4, 5, 6]));
  ictx.map(ioas, va, 4 * PAGE, 0x100000n, RW | FIXED);
  const filler = fill(host);
  let fails = 0;
  // Free frames one by one: at some point the first domain's tables fit and the second's do not.
  for (let free = 0; free < 8; free++) {
    const iova = BigInt(free + 1) << 39n;
    const before = state(host);
    const got = outcome(() => ictx.map(ioas, va, PAGE, iova, RW | FIXED));
    const copied = outcome(() => ictx.ioctl(T.IOMMU_IOAS_COPY, { flags: RW | FIXED, dst_ioas_id: ioas, src_ioas_id: ioas, length: PAGE, dst_iova: iova + (1n << 30n), src_iova: 0x100000 }));
    for (const r of [got, copied]) expect(['OK', 'ENOMEM']).toContain(r);
    if (got === 'ENOMEM' && copied === 'ENOMEM') { expect(state(host)).toEqual(before); fails++; }
    checkInvariants(host);
    for (const d of [a, b]) {
      for (const [r, at] of [[got, iova], [copied, iova + (1n << 30n)]] as const) {
        if (r === 'OK') expect(d.dma.read(at, 3)).toEqual(new Uint8Array([4, 5, 6]));
        else expect(() => d.dma.read(at, 1)).toThrow(DmaFault);
      }
    }
    host.munmap(filler.pop()!, PAGE);
  }
  expect(fails).toBeGreaterThan(0);
});

test('engine memory limit: a memfd whose pages are allocated when pinned (IOAS_MAP_FILE) runs out part way: ENOMEM, no pin kept, memory never past the limit', async () => {
  const LIMIT = 8 << 20;
  const host = await newHost({ memoryLimit: LIMIT });
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const a = io.attach({ iommu: 'intel-vtd' });
  const mfd = host.memfdCreate('limit');
  host.ftruncate(mfd, 64 * PAGE); // holes: pages come on first touch
  const filler = fill(host);
  expect(host.engine.memory.buffer.byteLength).toBeLessThanOrEqual(LIMIT);
  for (let i = 0; i < 8; i++) host.munmap(filler.pop()!, PAGE); // room for some of the file's pages, not all
  const before = state(host);
  expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_MAP_FILE, { flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0, length: 64 * PAGE, iova: 0x100000 }), 'ENOMEM');
  expect(state(host)).toEqual(before);
  checkInvariants(host);
  expect(() => a.dma.read(0x100000, 1)).toThrow(DmaFault);
  // The pages the failed pin allocated stay in the file (page cache, as Linux keeps them); with room
  // for the page tables too, a smaller map of the file fits.
  for (let i = 0; i < 8; i++) host.munmap(filler.pop()!, PAGE);
  ictx.ioctl(T.IOMMU_IOAS_MAP_FILE, { flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0, length: 2 * PAGE, iova: 0x100000 });
  expect(host.lockedPages).toBe(2);
  checkInvariants(host);
  expect(host.engine.memory.buffer.byteLength).toBeLessThanOrEqual(LIMIT);
});
