/**
 * Differential DMA fuzzer (issue 9): random IOAS_MAP / IOAS_UNMAP /
 * IOAS_COPY / attach / detach / replace (RID and PASID, automatic and
 * manual HWPTs) / HWPT_INVALIDATE / munmap / DMA sequences through the
 * binary ioctl face, against a plain-TypeScript model of what each device
 * may reach: IOVA page -> process page and permissions, per IOAS, and each
 * device's attachment per PASID. Every DMA's outcome (bytes, or a fault with
 * no byte moved) must match the model; map and unmap results too (EEXIST on
 * overlap, the superset rule, bytes unmapped). Zero mismatches.
 *
 * Every RESTORE_EVERY steps the host is replaced by one restored from its
 * snapshot, and the model carries on as if nothing happened (snapshot and
 * restore, issue 9).
 *
 * `npm test`: 3 seeds x 1,500 steps. On demand:
 *   VIOMMU_DMA_FUZZ_STEPS=200000 npx vitest run test/fuzz-dma.test.ts
 * Replay a seed with VIOMMU_SEED=<seed>.
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, PAGE, type Host } from './support/host.js';
import { createHost, DmaFault, SysError } from '../host/index.js';
import { checkInvariants } from './support/fuzz.js';
import { testSeeds, withSeed, type Rng } from './reference/rng.js';

const STEPS = Number(process.env.VIOMMU_DMA_FUZZ_STEPS ?? 1500);
const CHECK_EVERY = Number(process.env.VIOMMU_FUZZ_CHECK ?? 50);
const T = uapi.IOMMUFD_IOCTL;
const R = uapi.IOMMU_IOAS_MAP_READABLE, W = uapi.IOMMU_IOAS_MAP_WRITEABLE;
/** IOVAs live in [BASE, BASE + SPAN): inside every unit's aperture, clear of reserved windows. */
const BASE = 0x100000, SPAN_PAGES = 256;

/** A process page: its bytes as the model knows them. */
interface Page { bytes: Uint8Array; gone?: boolean; used?: boolean }
/** One IOVA page of an IOAS. */
interface Entry { page: Page; perm: number; area: number }
interface IoasModel { id: number; pages: Map<number, Entry>; areas: Map<number, { first: number; n: number }> }
interface DevModel { dev: VfioDevice; pasids: number; att: Map<number, IoasModel> }

class Model {
  areaSeq = 1;
}

/** How often the host is swapped for one restored from its snapshot. */
const RESTORE_EVERY = 250;

async function run(host: Host, rng: Rng, steps: number): Promise<{ dmas: number; faults: number; maps: number; restores: number }> {
  let ictx = new Iommufd(host);
  const model = new Model();
  const checkRng = rng.fork(); // the checks' own stream: how often they run does not change the steps
  const ioases: IoasModel[] = [];
  const newIoas = () => {
    const m: IoasModel = { id: ictx.ioasAlloc(), pages: new Map(), areas: new Map() };
    ioases.push(m);
    return m;
  };
  newIoas();
  newIoas();
  const kinds = [{ iommu: 'intel-vtd' as const, pasidBits: 4 }, { iommu: 'intel-vtd' as const }, { iommu: 'amd-vi' as const }, { iommu: 'arm-smmuv3' as const }];
  const devIds = new Map<DevModel, number>();
  const devs: DevModel[] = kinds.map((k) => {
    const dev = new VfioDevice(host, host.addDevice(k));
    const d: DevModel = { dev, pasids: k.pasidBits ?? 0, att: new Map() };
    devIds.set(d, dev.bind(ictx.fd));
    return d;
  });
  /** PASID-capable manual HWPTs per (IOAS, device kind). */
  const pasidHwpt = new Map<string, number>();
  // Process memory: regions of pages with known bytes.
  const regions: { va: number; pages: Page[] }[] = [];
  const newRegion = () => {
    const n = rng.int(1, 16);
    const va = host.mmap(n * PAGE);
    const bytes = new Uint8Array(n * PAGE);
    for (let i = 0; i < bytes.length; i += 4) bytes[i] = rng.below(256);
    host.mem.write(va, bytes);
    const pages = Array.from({ length: n }, (_, i) => ({ bytes: bytes.slice(i * PAGE, (i + 1) * PAGE) }));
    regions.push({ va, pages });
  };
  for (let i = 0; i < 4; i++) newRegion();

  let dmas = 0, faults = 0, maps = 0, restores = 0;
  const errnoOf = (fn: () => unknown): string => {
    try { fn(); return 'OK'; } catch (e) { if (e instanceof SysError) return e.code; throw e; }
  };

  const ops: [number, () => void][] = [
    [12, () => { // IOAS_MAP at a fixed IOVA
      const io = rng.pick(ioases);
      const reg = rng.pick(regions);
      const off = rng.below(reg.pages.length);
      const n = rng.int(1, Math.min(8, reg.pages.length - off));
      const first = rng.below(SPAN_PAGES - n);
      const perm = rng.pick([R | W, R | W, R, W]);
      const overlap = Array.from({ length: n }, (_, i) => io.pages.has(first + i)).some(Boolean);
      const got = errnoOf(() => ictx.map(io.id, reg.va + off * PAGE, n * PAGE, BigInt(BASE + first * PAGE), perm | uapi.IOMMU_IOAS_MAP_FIXED_IOVA));
      if (got !== (overlap ? 'EEXIST' : 'OK')) throw new Error(`IOAS_MAP ${io.id} [${first}, +${n}): ${got}, the model expects ${overlap ? 'EEXIST' : 'OK'}`);
      if (got === 'OK') {
        maps++;
        const area = model.areaSeq++;
        io.areas.set(area, { first, n });
        for (let i = 0; i < n; i++) { io.pages.set(first + i, { page: reg.pages[off + i], perm, area }); reg.pages[off + i].used = true; }
      }
    }],
    [6, () => { // IOAS_UNMAP: an area, a range over several, or a cut (ENOENT)
      const io = rng.pick(ioases);
      const areas = [...io.areas.values()];
      let first: number, n: number;
      if (areas.length > 0 && rng.chance(0.8)) {
        const a = rng.pick(areas);
        first = a.first; n = a.n;
        if (rng.chance(0.3)) { first = Math.max(0, first - rng.below(4)); n = Math.min(SPAN_PAGES - first, n + rng.below(8)); }
        if (rng.chance(0.15) && n > 1) n -= 1; // cuts the area
      } else {
        first = rng.below(SPAN_PAGES - 1); n = rng.int(1, SPAN_PAGES - first);
      }
      const hit = [...io.areas.entries()].filter(([, a]) => a.first <= first + n - 1 && a.first + a.n - 1 >= first);
      const cut = hit.some(([, a]) => a.first < first || a.first + a.n > first + n);
      const want = hit.length === 0 || cut ? 'ENOENT' : 'OK';
      let bytes = 0n;
      const got = errnoOf(() => { bytes = ictx.unmap(io.id, BigInt(BASE + first * PAGE), BigInt(n * PAGE)); });
      if (got !== want) throw new Error(`IOAS_UNMAP ${io.id} [${first}, +${n}): ${got}, the model expects ${want}`);
      if (got === 'OK') {
        const total = hit.reduce((s, [, a]) => s + a.n, 0);
        if (bytes !== BigInt(total * PAGE)) throw new Error(`IOAS_UNMAP returned ${bytes} bytes, the model unmapped ${total} pages`);
        for (const [id, a] of hit) { io.areas.delete(id); for (let i = 0; i < a.n; i++) io.pages.delete(a.first + i); }
      }
    }],
    [4, () => { // IOAS_COPY of part of an area to another (or the same) IOAS
      const src = rng.pick(ioases);
      const areas = [...src.areas.values()];
      if (areas.length === 0) return;
      const a = rng.pick(areas);
      const off = rng.below(a.n), n = rng.int(1, a.n - off);
      const dst = rng.pick(ioases);
      const first = rng.below(SPAN_PAGES - n);
      const perm = rng.pick([R | W, R]);
      const overlap = Array.from({ length: n }, (_, i) => dst.pages.has(first + i)).some(Boolean);
      const srcPerm = src.pages.get(a.first)!.perm;
      const want = overlap ? 'EEXIST' : (perm & W) && !(srcPerm & W) ? 'EPERM' : 'OK';
      const got = errnoOf(() => ictx.ioctl(T.IOMMU_IOAS_COPY, {
        flags: perm | uapi.IOMMU_IOAS_MAP_FIXED_IOVA, dst_ioas_id: dst.id, src_ioas_id: src.id,
        length: n * PAGE, dst_iova: BASE + first * PAGE, src_iova: BASE + (a.first + off) * PAGE,
      }));
      // A writable copy of pages mapped read-only: the pages object was made without write access (EPERM).
      // EFAULT: the destination's domain pins the pages, and munmapped ones the source never pinned cannot be.
      const gone = Array.from({ length: n }, (_, i) => src.pages.get(a.first + off + i)!.page.gone).some(Boolean);
      if (got !== want && !(want === 'EPERM' && got === 'OK') && !(got === 'EFAULT' && gone)) throw new Error(`IOAS_COPY -> ${dst.id} [${first}, +${n}): ${got}, the model expects ${want}`);
      if (got === 'OK') {
        const area = model.areaSeq++;
        dst.areas.set(area, { first, n });
        for (let i = 0; i < n; i++) dst.pages.set(first + i, { page: src.pages.get(a.first + off + i)!.page, perm, area });
      }
    }],
    [6, () => { // attach or replace the RID to an IOAS (automatic HWPT)
      const d = rng.pick(devs);
      if ([...d.att.keys()].some((p) => p !== 0)) return; // the RID's automatic HWPT is not PASID-compatible
      const io = rng.pick(ioases);
      const got = errnoOf(() => d.dev.attach(io.id));
      if (got === 'OK') d.att.set(0, io);
      // EFAULT: the IOAS's first domain pins its areas, and an area over munmapped memory cannot be pinned.
      else if (got !== 'EADDRINUSE' && !(got === 'EFAULT' && [...io.pages.values()].some((e) => e.page.gone))) throw new Error(`attach ${d.dev.handle.path} to IOAS ${io.id}: ${got}`);
    }],
    [3, () => { // attach or replace a PASID to a PASID-capable manual HWPT
      const d = rng.pick(devs.filter((x) => x.pasids > 0));
      const io = rng.pick(ioases);
      const key = `${io.id}:${d.dev.handle.iommu}`;
      let hwpt = pasidHwpt.get(key);
      if (hwpt === undefined) {
        let id = 0;
        const made = errnoOf(() => { id = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { flags: uapi.IOMMU_HWPT_ALLOC_PASID, dev_id: devIds.get(d)!, pt_id: io.id }).out_hwpt_id; });
        if (made === 'EFAULT' && [...io.pages.values()].some((e) => e.page.gone)) return;
        if (made !== 'OK') throw new Error(`HWPT_ALLOC(PASID) on IOAS ${io.id}: ${made}`);
        pasidHwpt.set(key, (hwpt = id));
      }
      const pasid = rng.int(0, 3);
      const got = errnoOf(() => d.dev.attach(hwpt!, pasid ? { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid } : {}));
      if (got === 'OK') d.att.set(pasid, io);
      else if (!(got === 'EINVAL' && pasid !== 0) && got !== 'EADDRINUSE') throw new Error(`attach pasid ${pasid} of ${d.dev.handle.path} to HWPT ${hwpt}: ${got}`);
    }],
    [3, () => { // detach
      const d = rng.pick(devs);
      const pasid = d.pasids > 0 && rng.chance(0.4) ? rng.int(1, 3) : 0;
      d.dev.detach(pasid ? { flags: uapi.VFIO_DEVICE_DETACH_PASID, pasid } : {});
      d.att.delete(pasid);
    }],
    [1, () => { // HWPT_INVALIDATE on a paging HWPT: EINVAL, nothing changes
      for (const h of pasidHwpt.values()) {
        const got = errnoOf(() => ictx.ioctl(T.IOMMU_HWPT_INVALIDATE, { hwpt_id: h, data_uptr: 0, data_type: 0, entry_len: 32, entry_num: 0 }));
        if (got !== 'EINVAL' && got !== 'OK') throw new Error(`HWPT_INVALIDATE of paging HWPT ${h}: ${got}`);
        break;
      }
    }],
    [2, () => { // munmap a region no area ever used, and make a new one
      // (An area is a range of VAs until a domain pins it: after munmap a new
      // mmap may reuse the VAs and a later pin would take the new pages, as
      // Linux would. The model keeps it simple: used regions stay mapped.)
      const free = regions.map((g, i) => (g.pages.some((p) => p.used) ? -1 : i)).filter((i) => i >= 0);
      if (free.length === 0) { if (regions.length < 24) newRegion(); return; }
      const i = rng.pick(free);
      host.munmap(regions[i].va, regions[i].pages.length * PAGE);
      for (const p of regions[i].pages) p.gone = true;
      regions.splice(i, 1);
      newRegion();
    }],
    [40, () => { // DMA
      const d = rng.pick(devs);
      const pasid = d.pasids > 0 && rng.chance(0.3) ? rng.int(1, 3) : 0;
      const io = d.att.get(pasid);
      const mapped = io ? [...io.pages.keys()] : [];
      const start = mapped.length > 0 && rng.chance(0.85) ? rng.pick(mapped) : rng.below(SPAN_PAGES);
      const at = rng.below(PAGE);
      const len = rng.chance(0.7) ? rng.int(1, PAGE - at) : rng.int(1, 2 * PAGE);
      const write = rng.chance(0.4);
      const iova = BASE + start * PAGE + at;
      const lastPage = start + Math.floor((at + len - 1) / PAGE);
      let ok = !!io;
      for (let p = start; p <= lastPage && ok; p++) {
        const e = io!.pages.get(p);
        if (!e || !(e.perm & (write ? W : R))) ok = false;
      }
      dmas++;
      const where = `${d.dev.handle.path} pasid ${pasid} ${write ? 'write' : 'read'} iova 0x${iova.toString(16)} len ${len}`;
      if (write) {
        const bytes = new Uint8Array(len).map(() => rng.below(256));
        let fault = false;
        try { d.dev.dma.write(iova, bytes, { pasid }); } catch (e) { if (!(e instanceof DmaFault)) throw e; fault = true; }
        if (fault === ok) throw new Error(`${where}: ${fault ? 'faulted' : 'went through'}, the model says it ${ok ? 'may' : 'may not'}`);
        if (fault) { faults++; return; }
        for (let i = 0; i < len; i++) {
          const off = at + i;
          io!.pages.get(start + Math.floor(off / PAGE))!.page.bytes[off % PAGE] = bytes[i];
        }
      } else {
        let got: Uint8Array | null = null;
        try { got = d.dev.dma.read(iova, len, { pasid }); } catch (e) { if (!(e instanceof DmaFault)) throw e; }
        if ((got === null) === ok) throw new Error(`${where}: ${got ? 'went through' : 'faulted'}, the model says it ${ok ? 'may' : 'may not'}`);
        if (!got) { faults++; return; }
        for (let i = 0; i < len; i++) {
          const off = at + i;
          const want = io!.pages.get(start + Math.floor(off / PAGE))!.page.bytes[off % PAGE];
          if (got[i] !== want) throw new Error(`${where}: byte ${i} is ${got[i]}, the model has ${want}`);
        }
      }
    }],
  ];

  const names = ['map', 'unmap', 'copy', 'attach', 'attach-pasid', 'detach', 'invalidate', 'munmap', 'dma'];
  const log: string[] = [];
  for (let s = 0; s < steps; s++) {
    const op = rng.weighted(ops.map(([w, f], i) => [w, [f, names[i]]] as const));
    log.push(`${s}: ${op[1]}`);
    if (log.length > 30) log.shift();
    try {
      op[0]();
    } catch (e) {
      if (e instanceof Error && process.env.VIOMMU_DMA_FUZZ_LOG) e.message += `\nlast steps: ${log.join(', ')}`;
      throw e;
    }
    if (s % CHECK_EVERY === 0) checkInvariants(host, { rng: checkRng, samples: 1 });
    if (s % RESTORE_EVERY === RESTORE_EVERY - 1) {
      host = await createHost({ restore: host.snapshot() });
      ictx = new Iommufd(host, ictx.fd);
      for (const d of devs) d.dev = new VfioDevice(host, host.device(d.dev.handle.path), d.dev.fd);
      log.push(`${s}: restored`);
      restores++;
    }
  }
  checkInvariants(host, { rng: checkRng, full: true });
  return { dmas, faults, maps, restores };
}

for (const seed of testSeeds(3)) {
  test(`differential DMA fuzzer, seed ${seed}: ${STEPS} steps, zero mismatches with the model`, async () => {
    const host = await newHost();
    const r = await withSeed(seed, (rng) => run(host, rng, STEPS));
    if (STEPS > 10_000) console.log(`seed ${seed}: ${JSON.stringify(r)}`);
    expect(r.dmas).toBeGreaterThan(STEPS / 4);
    expect(r.maps).toBeGreaterThan(0);
    expect(r.restores).toBeGreaterThan(0);
  }, STEPS > 10_000 ? 3600_000 : 60_000);
}
