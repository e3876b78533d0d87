/**
 * Regression tests for what the fuzzers (test/fuzz-ioctl.test.ts,
 * test/fuzz-dma.test.ts) found, each named after its finding, with the seed
 * that found it.
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, PAGE, expectBytes } from './support/host.js';
import { checkInvariants } from './support/fuzz.js';

test('two domains on one IOAS: an area mapped after both stays pinned when one domain goes (ioctl fuzzer, seeds 3541276485, 4055794551)', async () => {
  // io_pagetable pinned an area once when mapped into N domains, but a
  // domain added later pinned again and every removed domain unpinned once:
  // removing one of two domains dropped the pin the other still needed, and
  // after munmap the page was freed while the other domain still mapped it.
  const host = await newHost();
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const a = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  const b = new VfioDevice(host, host.addDevice({ iommu: 'amd-vi' }));
  a.bind(ictx.fd);
  b.bind(ictx.fd);
  a.attach(ioas);
  b.attach(ioas);
  const va = host.mmap(PAGE);
  host.mem.write(va, new Uint8Array([7, 8, 9]));
  const iova = ictx.map(ioas, va, PAGE, 0x100000n);
  const pa = b.dma.translate(iova).pa;
  expect(host.engine.refcount(pa / PAGE)).toBe(2); // the VMA and one pin
  checkInvariants(host);
  a.detach(); // the VT-d domain goes
  checkInvariants(host);
  host.munmap(va, PAGE);
  expect(host.engine.refcount(pa / PAGE)).toBe(1); // the pin the AMD domain needs
  // The freed frame must not be handed out again while b can reach it.
  const other = host.mmap(64 * PAGE);
  host.mem.write(other, new Uint8Array(64 * PAGE).fill(0xee));
  expectBytes(b.dma.read(iova, 3), new Uint8Array([7, 8, 9]));
  checkInvariants(host);
  // And the other way round: a domain added to an IOAS that already has one pins nothing more.
  const c = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  c.bind(ictx.fd);
  c.attach(ioas);
  expect(host.engine.refcount(pa / PAGE)).toBe(1);
  checkInvariants(host);
  b.detach();
  c.detach();
  expect(host.engine.refcount(pa / PAGE)).toBe(0);
  expect(host.lockedPages).toBe(0);
  checkInvariants(host);
});
