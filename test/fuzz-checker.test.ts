/**
 * The fuzzers' invariant checker (test/support/fuzz.ts) catches what it
 * claims to: each test breaks the host on purpose, in this test's memory
 * only (a patched method), and expects checkInvariants or the ioctl
 * fuzzer to report it.
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, PAGE } from './support/host.js';
import { checkInvariants, IoctlFuzzer, InvariantError, allObjectsForTest } from './support/fuzz.js';
import { IoPages } from '../host/iommufd/pages.js';
import { Rng } from './reference/rng.js';

async function attached() {
  const host = await newHost();
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const dev = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  dev.bind(ictx.fd);
  dev.attach(ioas);
  const va = host.mmap(4 * PAGE);
  return { host, ictx, ioas, dev, va };
}

test('a translation left behind by IOAS_UNMAP (page table or IOTLB) is caught', async () => {
  const { host, ictx, ioas, dev, va } = await attached();
  ictx.map(ioas, va, 4 * PAGE, 0x100000n);
  checkInvariants(host); // translates the areas' pages: the IOTLB holds them
  const engine = host.engine as unknown as { ptUnmap: (...a: unknown[]) => void };
  engine.ptUnmap = () => {}; // the unmap forgets the page table and the IOTLB
  ictx.unmap(ioas, 0x100000n, 4n * BigInt(PAGE));
  expect(() => checkInvariants(host)).toThrow(/expected a DMA fault, the device got through/);
  void dev;
});

test('a pin never dropped is caught (frame reference count and RLIMIT_MEMLOCK charge)', async () => {
  const { host, ictx, ioas, va } = await attached();
  ictx.map(ioas, va, 4 * PAGE, 0x100000n);
  const real = IoPages.prototype.unpin;
  IoPages.prototype.unpin = function () { /* leak */ };
  try {
    ictx.unmap(ioas, 0x100000n, 4n * BigInt(PAGE));
    expect(() => checkInvariants(host)).toThrow(InvariantError);
  } finally {
    IoPages.prototype.unpin = real;
  }
});

test('a wrong users count is caught (DESTROY would answer wrongly)', async () => {
  const { host, ioas } = await attached();
  const obj = allObjectsForTest(host).find(({ obj: o }) => o.id === ioas)!.obj;
  obj.users++;
  expect(() => checkInvariants(host)).toThrow(/users = 3, the graph needs 2/);
  obj.users--;
  checkInvariants(host);
});

test('the ioctl fuzzer finds an IOAS_UNMAP that leaves translations behind within a few thousand calls', async () => {
  const host = await newHost();
  const rng = new Rng(1);
  const fz = new IoctlFuzzer(host, rng);
  const engine = host.engine as unknown as { ptUnmap: (...a: unknown[]) => void };
  engine.ptUnmap = () => {};
  let found = -1;
  for (let i = 0; i < 5000 && found < 0; i++) {
    expect(fz.step()).toBeUndefined();
    try { checkInvariants(host, { rng }); } catch (e) { if (e instanceof InvariantError) found = i; else throw e; }
  }
  expect(found).toBeGreaterThanOrEqual(0);
});
