/**
 * Seeded random runs of ATTACH / DETACH / MAP / UNMAP requests, sent by the
 * driver harness through the virtqueue, against a plain model of the
 * specification's rules ([VIRTIO] 1.2 sections 5.13.6.3 to 5.13.6.6): the
 * status of every request, the domains and mappings after it, and the DMA
 * of every endpoint (what it reads and whether it may write) must agree.
 * Replay a failure with VIOMMU_SEED=<seed> (printed in the failure).
 */
import { describe, it, expect } from 'vitest';
import { newHost } from './support/host.js';
import { VirtioGuest, S, DMA_RAM, tagPages, reach, canWrite } from './support/virtio-driver.js';
import { virtioIommuAbi as A, type VirtioIommuEndpoint } from '../host/index.js';
import type { IommuKind } from '../host/iommu/driver.js';
import { testSeeds, withSeed, type Rng } from './reference/rng.js';

const P = 0x1000;
const PAGES = 48; // the IOVA pages the run uses
const DMA_PAGES = DMA_RAM.size / P;
const ENDPOINTS: { id: number; iommu: IommuKind }[] = [{ id: 1, iommu: 'intel-vtd' }, { id: 2, iommu: 'intel-vtd' }, { id: 3, iommu: 'arm-smmuv3' }];
const OPS = 250;

interface RMap { s: bigint; e: bigint; p: bigint; f: number }

/** The specification's bookkeeping, nothing else. */
class Reference {
  readonly domains = new Map<number, RMap[]>();
  readonly at = new Map<number, number | null>(ENDPOINTS.map((e) => [e.id, null]));

  private drop(d: number): void {
    if (![...this.at.values()].includes(d)) this.domains.delete(d); // 5.13.6.4: an empty domain ceases to exist
  }

  attach(d: number, ep: number): number {
    if (!this.at.has(ep)) return S.NOENT;
    const cur = this.at.get(ep)!;
    if (cur === d) return S.OK;
    if (!this.domains.has(d)) this.domains.set(d, []);
    this.at.set(ep, d);
    if (cur !== null) this.drop(cur); // 5.13.6.3.2: as if DETACH came first
    return S.OK;
  }

  detach(d: number, ep: number): number {
    if (!this.at.has(ep)) return S.NOENT;
    if (this.at.get(ep) !== d) return S.INVAL;
    this.at.set(ep, null);
    this.drop(d);
    return S.OK;
  }

  map(d: number, m: RMap): number {
    const list = this.domains.get(d);
    if (!list) return S.NOENT;
    if (m.e < m.s) return S.INVAL;
    const g = BigInt(P);
    if (m.s % g || (m.e + 1n) % g || m.p % g) return S.RANGE;
    if (list.some((x) => x.s <= m.e && m.s <= x.e)) return S.INVAL;
    list.push(m);
    list.sort((a, b) => (a.s < b.s ? -1 : 1));
    return S.OK;
  }

  unmap(d: number, s: bigint, e: bigint): number {
    const list = this.domains.get(d);
    if (!list) return S.NOENT;
    if (e < s) return S.INVAL;
    const hit = list.filter((x) => x.s <= e && s <= x.e);
    if (hit.some((x) => x.s < s || x.e > e)) return S.RANGE; // would split a mapping
    this.domains.set(d, list.filter((x) => !hit.includes(x)));
    return S.OK;
  }

  /** The mapping endpoint `ep` translates `iova` through, if any. */
  lookup(ep: number, iova: bigint): RMap | undefined {
    const d = this.at.get(ep);
    return d === null || d === undefined ? undefined : this.domains.get(d)!.find((x) => x.s <= iova && iova <= x.e);
  }
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

function randomRange(rng: Rng): [bigint, bigint] {
  const a = rng.below(PAGES), n = 1 + rng.below(6);
  let s = BigInt(a * P), e = BigInt((a + n) * P - 1);
  if (rng.chance(0.08)) s += BigInt(1 + rng.below(P - 1)); // inside a page
  if (rng.chance(0.08)) e -= BigInt(1 + rng.below(P - 1));
  if (rng.chance(0.03)) [s, e] = [e, s];
  return [s, e];
}

describe('random requests against the specification\'s rules ([VIRTIO] 5.13.6.3-5.13.6.6), seeded', () => {
  for (const seed of testSeeds(3)) {
    it(`seed ${seed}`, async () => {
      const host = await newHost();
      const g = new VirtioGuest(host, { bootBypass: false });
      const eps = new Map<number, VirtioIommuEndpoint>(ENDPOINTS.map(({ id, iommu }) => [id, g.addEndpoint(id, host.addDevice({ iommu }))]));
      g.init();
      tagPages(g);
      const ref = new Reference();
      withSeed(seed, (rng) => {
        for (let op = 0; op < OPS; op++) {
          const d = 1 + rng.below(4);
          const ep = rng.chance(0.05) ? 9 : ENDPOINTS[rng.below(ENDPOINTS.length)].id;
          let what: string, got: number, want: number;
          switch (rng.weighted([[3, 'attach'], [2, 'detach'], [6, 'map'], [4, 'unmap']] as const)) {
            case 'attach':
              what = `attach(d${d}, ep${ep})`;
              got = g.attach(d, ep); want = ref.attach(d, ep);
              break;
            case 'detach':
              what = `detach(d${d}, ep${ep})`;
              got = g.detach(d, ep); want = ref.detach(d, ep);
              break;
            case 'map': {
              const [s, e] = randomRange(rng);
              const pages = Math.max(1, Number((e - s + 1n + BigInt(P - 1)) / BigInt(P)));
              let p = BigInt(DMA_RAM.gpa + rng.below(Math.max(1, DMA_PAGES - pages)) * P);
              if (rng.chance(0.05)) p += 0x800n;
              const f = rng.weighted([[4, A.VIRTIO_IOMMU_MAP_F_READ | A.VIRTIO_IOMMU_MAP_F_WRITE], [3, A.VIRTIO_IOMMU_MAP_F_READ], [2, A.VIRTIO_IOMMU_MAP_F_WRITE], [1, 0]] as const);
              what = `map(d${d}, ${hex(s)}, ${hex(e)}, ${hex(p)}, ${f})`;
              got = g.map(d, s, e, p, f); want = ref.map(d, { s, e, p, f });
              break;
            }
            default: {
              const [s, e] = randomRange(rng);
              what = `unmap(d${d}, ${hex(s)}, ${hex(e)})`;
              got = g.unmap(d, s, e); want = ref.unmap(d, s, e);
            }
          }
          const at = `op ${op}: ${what}`;
          expect(got, `${at}: status`).toBe(want);
          // The books: domains, their mappings, where each endpoint is.
          expect(g.dev.domainIds(), `${at}: domains`).toEqual([...ref.domains.keys()].sort((a, b) => a - b));
          for (const [id, list] of ref.domains) {
            expect(g.dev.mappings(id)!.map((m) => [m.start, m.end, m.phys, m.flags]), `${at}: mappings of d${id}`).toEqual(list.map((m) => [m.s, m.e, m.p, m.f]));
          }
          for (const { id } of ENDPOINTS) expect(g.dev.domainOf(id), `${at}: ep${id}`).toBe(ref.at.get(id));
          // The DMA: two pages per endpoint, read; one of them written.
          for (const { id } of ENDPOINTS) {
            const e = eps.get(id)!;
            for (let k = 0; k < 2; k++) {
              const iova = BigInt(rng.below(PAGES) * P);
              const m = ref.lookup(id, iova);
              const gpa = m ? Number(m.p + (iova - m.s)) : 0;
              const read = reach(e, iova);
              if (!m || !(m.f & (A.VIRTIO_IOMMU_MAP_F_READ | A.VIRTIO_IOMMU_MAP_F_WRITE))) expect(read, `${at}: ep${id} reads ${hex(iova)}`).toBe(null);
              else if (m.f & A.VIRTIO_IOMMU_MAP_F_READ) expect(read, `${at}: ep${id} reads ${hex(iova)}`).toBe(gpa / P);
              else expect([null, gpa / P], `${at}: ep${id} reads write-only ${hex(iova)} (5.13.6.5.2: MAY)`).toContain(read);
              if (k === 0) {
                const may = m !== undefined && (m.f & A.VIRTIO_IOMMU_MAP_F_WRITE) !== 0;
                expect(canWrite(e, iova, g, may ? gpa : DMA_RAM.gpa), `${at}: ep${id} writes ${hex(iova)}`).toBe(may);
              }
            }
          }
        }
      });
    });
  }
});
