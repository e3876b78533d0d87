/**
 * IOAS_MAP and IOAS_UNMAP have a fast path (host/iommufd/ioas.ts
 * ioasMapFast / ioasUnmapFast: the common case in numbers, read in place)
 * beside the handlers that decode the struct into bigints. Two hosts, one
 * with the fast paths and one without, get the same seeded random calls:
 * values on both sides of 2^53 and at the u64 extremes, bad flags, bad
 * ids, short and long structs, IOVAs in the reserved ranges, over an IOAS
 * with a VT-d domain, one without a domain and one with HUGE_PAGES off.
 * With the test kernel there is a fourth IOAS, on a mock domain (the mock
 * driver's own map and unmap, 2 KiB granule) with an access that pins
 * pages now and then (so that unmaps notify it, or fail EBUSY).
 * On a 16 KiB-page kernel (createHost({ pageSize })) the domain is an
 * SMMUv3 stage 2 of the 16K granule: iova_alignment is the kernel page, and
 * the page offset both paths check is the offset in a 16 KiB page
 * (io_pagetable.c iopt_insert_area), not in a 4 KiB frame.
 * After every call the errno, the bytes written back, the areas of every
 * IOAS and the pinned-page charge must be the same, and every few calls
 * the host invariants must hold (pins, translations: test/support/fuzz.ts).
 * Replay a seed with VIOMMU_SEED=<seed>.
 */
import { describe, expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, PAGE, U64_MAX, outcome, type Host } from './support/host.js';
import { PROT_READ } from '../host/index.js';
import { allObjectsForTest, checkInvariants } from './support/fuzz.js';
import { testSeeds, withSeed, Rng } from './reference/rng.js';
import { setIoctlFastPaths } from '../host/iommufd/main.js';
import { Selftest } from './support/selftest.js';

const T = uapi.IOMMUFD_IOCTL;
const M = uapi.iommu_ioas_map, U = uapi.iommu_ioas_unmap;
const R = uapi.IOMMU_IOAS_MAP_READABLE, W = uapi.IOMMU_IOAS_MAP_WRITEABLE, FIXED = uapi.IOMMU_IOAS_MAP_FIXED_IOVA;
const CALLS = 1500;
const P53 = 1n << 53n;

interface Machine { host: Host; fd: number; ioas: number[]; va: number; roVa: number; test: { st: Selftest; ioas: number; access: number } | null }

/** The same machine on every call: the fds, ids and VAs come out the same. */
async function machine(testKernel: boolean, pageSize = 4096): Promise<Machine> {
  const host = await newHost(testKernel ? { iommufdTest: true } : { pageSize });
  const ictx = new Iommufd(host);
  const withDomain = ictx.ioasAlloc(), bare = ictx.ioasAlloc(), small = ictx.ioasAlloc();
  const dev = new VfioDevice(host, host.addDevice(pageSize === 4096 ? {} : { iommu: 'arm-smmuv3' }));
  dev.bind(ictx.fd);
  dev.attach(withDomain);
  // HUGE_PAGES off: PAGE_SIZE IOPTEs, PAGE_SIZE alignment without a domain.
  ictx.ioctl(T.IOMMU_OPTION, { option_id: uapi.IOMMU_OPTION_HUGE_PAGES, op: uapi.IOMMU_OPTION_OP_SET, object_id: small, val64: 0 });
  const va = host.mmap(64 * PAGE);
  const roVa = host.mmap(8 * PAGE, PROT_READ);
  const ioas = [withDomain, bare, small];
  let test: Machine['test'] = null;
  if (testKernel) {
    const st = new Selftest(host);
    st.fd = ictx.fd;
    const mock = ictx.ioasAlloc();
    st.mockDomain(mock);
    test = { st, ioas: mock, access: st.createAccess(mock, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) };
    ioas.push(mock);
  }
  return { host, fd: ictx.fd, ioas, va, roVa, test };
}

/** A u64 from the places where the paths differ or Linux's checks bite. */
function u64(rng: Rng, near: bigint[]): bigint {
  switch (rng.below(6)) {
    case 0: return rng.pick([0n, 1n, 4095n, 4096n, 1n << 32n, P53 - 4096n, P53 - 1n, P53, P53 + 1n, P53 + 4096n, 1n << 63n, U64_MAX - 4096n, U64_MAX - 4095n, U64_MAX - 1n, U64_MAX]);
    case 1: return (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
    case 2: return P53 + BigInt(rng.int(-8, 8)) * 4096n + BigInt(rng.chance(0.2) ? rng.int(-2, 2) : 0);
    default: return rng.pick(near) + BigInt(rng.int(0, 16)) * 4096n + BigInt(rng.chance(0.1) ? rng.int(1, 4095) : 0);
  }
}

/** A range mapped earlier (it may be gone since). */
interface Mapped { ioas: number; iova: bigint; length: bigint }

/** One random call's bytes: IOAS_MAP or IOAS_UNMAP (often of a range mapped earlier), with its size word. */
function randomCall(rng: Rng, m: Machine, mapped: Mapped[]): { request: number; bytes: Uint8Array; what: string } {
  const iovas = [0x1000_0000n, 0xfee0_0000n, 1n << 39n, (1n << 48n) - 0x10000n, P53 - 0x10000n, P53, 1n << 60n, BigInt(uapi.MOCK_APERTURE_START), BigInt(uapi.MOCK_APERTURE_LAST) - 0xffffn];
  const ioasId = rng.chance(0.9) ? rng.pick(m.ioas) : rng.pick([0, 99, m.ioas[m.ioas.length - 1] + 1]);
  const map = rng.chance(0.55);
  const s = map ? M : U;
  const bytes = new Uint8Array(s.size + 8);
  if (map) {
    const flags = rng.chance(0.8) ? FIXED | rng.pick([R | W, R, W, R | W]) : rng.chance(0.5) ? rng.pick([R | W, FIXED, 0]) : rng.u32() & 0xf;
    const length = rng.chance(0.7) ? BigInt(rng.int(1, 8) * PAGE) : u64(rng, [0n, 4096n, P53 - 0x10000n]);
    const va = rng.chance(0.8) ? BigInt(rng.pick([m.va, m.roVa]) + rng.int(0, 8) * PAGE + (rng.chance(0.05) ? 1 : 0)) : u64(rng, [BigInt(m.va)]);
    M.encode({ size: M.size, flags, ioas_id: ioasId, __reserved: rng.chance(0.03) ? 1 : 0, user_va: va, length, iova: u64(rng, iovas) }, bytes);
  } else if (mapped.length > 0 && rng.chance(0.6)) {
    // A range mapped earlier: exactly, with a margin (the superset rule), or cutting it (ENOENT).
    const r = rng.pick(mapped);
    const before = BigInt(rng.pick([0, 0, 1, 2]) * PAGE), after = BigInt(rng.pick([0, 0, PAGE, -PAGE]));
    U.encode({ size: U.size, ioas_id: r.ioas, iova: r.iova - before, length: r.length + before + after }, bytes);
  } else {
    const all = rng.chance(0.03);
    const iova = all ? 0n : u64(rng, iovas);
    const length = all ? U64_MAX : rng.chance(0.6) ? BigInt(rng.int(1, 20) * PAGE) : u64(rng, [0n, 4096n, 1n << 40n]);
    U.encode({ size: U.size, ioas_id: ioasId, iova, length }, bytes);
  }
  // A shorter struct (zero-extended) or a longer one (its tail zero, or not: E2BIG).
  let size = s.size;
  if (rng.chance(0.05)) size = s.size - 8;
  else if (rng.chance(0.05)) { size = s.size + 8; if (rng.chance(0.5)) bytes[s.size + rng.below(8)] = 1; }
  bytes[0] = size; bytes[1] = 0; bytes[2] = 0; bytes[3] = 0;
  const request = map ? T.IOMMU_IOAS_MAP.request : T.IOMMU_IOAS_UNMAP.request;
  return { request, bytes, what: `${map ? 'MAP' : 'UNMAP'} ${JSON.stringify((map ? M : U).decode(bytes), (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))} size ${size}` };
}

/** What must be the same on both machines: every IOAS's areas and the pinned-page charge. */
function state(host: Host): unknown {
  const areas = allObjectsForTest(host).filter(({ obj }) => obj.type === 'IOAS').map(({ obj }) =>
    obj.iopt.areas.map((a: { iova: bigint; last: bigint; bytes: number; perm: number; offset: number }) => `${a.iova.toString(16)}-${a.last.toString(16)} ${a.bytes} ${a.perm} ${a.offset}`));
  return { areas, locked: host.lockedPages };
}

function call(m: Machine, fast: boolean, request: number, bytes: Uint8Array, fn = () => m.host.ioctl(m.fd, request, bytes)): string {
  const was = setIoctlFastPaths(fast);
  try {
    return outcome(fn);
  } finally {
    setIoctlFastPaths(was);
  }
}

/** IOMMU_TEST_OP_ACCESS_PAGES of a range mapped earlier: the access pins it (or fails). */
function accessPin(m: Machine, r: Mapped, fast: boolean): string {
  const t = m.test!;
  return call(m, fast, 0, new Uint8Array(0), () => t.st.accessPages(t.access, r.iova, r.length > 3n * 4096n ? 3n * 4096n : r.length, m.va));
}

describe('IOAS_MAP / IOAS_UNMAP: the fast paths against the decoded handlers', () => {
  for (const [i, seed] of testSeeds(5).entries()) {
    const testKernel = i % 2 === 1;
    const pageSize = i === 4 ? 16384 : 4096;
    test(`seed ${seed}${testKernel ? ' (test kernel: a mock domain and an access)' : ''}${pageSize !== 4096 ? ' (16 KiB pages, an SMMUv3 domain)' : ''}`, async () => {
      const fast = await machine(testKernel, pageSize), slow = await machine(testKernel, pageSize);
      const rng = new Rng(seed);
      const mapped: Mapped[] = [];
      let oks = 0;
      withSeed(seed, () => {
        for (let i = 0; i < CALLS; i++) {
          const pins = fast.test ? mapped.filter((r) => r.ioas === fast.test!.ioas) : [];
          if (pins.length > 0 && rng.chance(0.05)) {
            const r = rng.pick(pins);
            expect(accessPin(fast, r, true), `call ${i}: ACCESS_PAGES at 0x${r.iova.toString(16)}`).toBe(accessPin(slow, r, false));
          }
          const c = randomCall(rng, fast, mapped);
          const a = c.bytes, b = c.bytes.slice();
          const ra = call(fast, true, c.request, a), rb = call(slow, false, c.request, b);
          const at = `call ${i}: ${c.what}`;
          expect(ra, at).toBe(rb);
          expect(Array.from(a), at).toEqual(Array.from(b));
          expect(state(fast.host), at).toEqual(state(slow.host));
          if (ra === 'OK') oks++;
          if (ra === 'OK' && c.request === T.IOMMU_IOAS_MAP.request) {
            const d = M.decode(a);
            mapped.push({ ioas: d.ioas_id, iova: d.iova, length: d.length });
          }
          if (i % 100 === 99) { checkInvariants(fast.host); checkInvariants(slow.host); }
        }
      });
      // The calls reach the success paths often enough to be worth comparing.
      expect(oks).toBeGreaterThan(CALLS / 8);
    });
  }

  // Found by the 16 KiB-page seed: the fast paths computed the last byte as
  // iova + length - 1 in doubles, and 2^53 - 4095 + 4096 rounds down to 2^53,
  // so a range ending past 2^53 passed as one below it (its area then ended
  // at 2^53 - 1 instead of 2^53). Every end on both sides of 2^53.
  test('ranges ending at and just past 2^53 on an IOAS without a domain (alignment 1)', async () => {
    const fast = await machine(false), slow = await machine(false);
    const bare = fast.ioas[1];
    for (const k of [-4097n, -4096n, -4095n, -4094n, -1n, 0n, 1n]) {
      const iova = P53 + k - 4096n;
      const outcomes: string[] = [];
      for (const [m, f] of [[fast, true], [slow, false]] as const) {
        const bytes = new Uint8Array(M.size);
        M.encode({ size: M.size, flags: FIXED | R | W, ioas_id: bare, __reserved: 0, user_va: BigInt(m.va), length: 4096n, iova }, bytes);
        const r = call(m, f, T.IOMMU_IOAS_MAP.request, bytes);
        const u = new Uint8Array(U.size);
        U.encode({ size: U.size, ioas_id: bare, iova, length: 4096n }, u);
        outcomes.push(`${r} ${JSON.stringify(state(m.host))} ${call(m, f, T.IOMMU_IOAS_UNMAP.request, u)} ${Array.from(u)}`);
      }
      // Linux (iopt_map_pages): a 4 KiB area at any IOVA below 2^64 - 4096 maps, its last byte iova + 4095.
      expect(outcomes[0], `iova 2^53 ${k - 4096n}`).toContain(`${iova.toString(16)}-${(iova + 4095n).toString(16)}`);
      expect(outcomes[0], `iova 2^53 ${k - 4096n}`).toBe(outcomes[1]);
    }
  });
});
