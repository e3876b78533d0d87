/**
 * The ioctl fuzzer's machinery (test/fuzz-ioctl.test.ts, test/fuzz-dma.test.ts,
 * test/isolation.test.ts, test/resource-limits.test.ts use parts of it):
 *
 * - `checkInvariants(host)`: the host's whole state, read from the inside
 *   (private fields, as a kernel debugger would), against the rules it must
 *   keep after every call: the object graph (ids, users counts, attachments,
 *   engine contexts), the pins (each frame's reference count against what
 *   the VMAs, memfds and pinned pages objects need; RLIMIT_MEMLOCK's charge
 *   against the pinned pages) and the translations (every IOTLB entry and
 *   page-table leaf a device reaches agrees with the IOAS areas: the physical
 *   page of the area, its permissions, and the bytes a DMA returns). The
 *   test kernel's objects are part of it: SELFTEST and its DEVICE, ACCESS
 *   objects (a selftest access's items and a HW queue's internal access
 *   pin pages: counted with the areas'), HW_QUEUE and its dependency, a
 *   vIOMMU's mmaps, mock domains at their 2 KiB granule. A device attached
 *   to a HWPT_NESTED is checked against stage 2 (the parent's areas bound
 *   every translation) and, for a VT-d first-stage table the checker can
 *   walk, against that table.
 * - `IoctlFuzzer`: seeded random and mutated calls on every kind of fd,
 *   built from the uapi table (on a host with `iommufdTest`, IOMMU_TEST_CMD
 *   from IOMMU_TEST_CMD_OPS too); `step()` makes one call and classifies what
 *   it threw: only SysError with a Linux errno (or DmaFault from a DMA) is
 *   allowed; a WebAssembly.RuntimeError or any other exception is a finding.
 */
import { SysError, DmaFault, Errno, uapi, type Host } from '../../host/index.js';
import type { IoctlDesc } from '../../host/uapi/index.js';
import type { Rng } from '../reference/rng.js';

const PAGE = 4096;
const SEG_SPAN = 0x1_0000_0000;
const ULONG_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------
// Reading the host from the inside. Everything here is private to the host;
// the fuzzer reads it the way a test of kernel internals does.

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;

const inner = (host: Host): Any => host as Any;

/** The open files of the process, by fd. */
export function fdTable(host: Host): Map<number, Any> { return inner(host).fds; }

/** Every file the checks have seen, per host: a file the process can no longer reach may live on. */
const filesSeen = new WeakMap<Host, Set<Any>>();

/**
 * Every file still alive (its reference count above 0): those of the fd
 * table, behind VMAs, and what those hold in turn (an event queue's or a
 * VFIO file's iommufd, the file an IOMMU_IOAS_MAP_FILE area maps), plus
 * every file seen before that is still referenced from somewhere the
 * process cannot reach (an iommufd whose IOAS maps a file holding the
 * iommufd: a cycle, kept alive as Linux keeps it).
 */
export function liveFiles(host: Host): Set<Any> {
  if (cached?.host === host) return cached.files;
  let seen = filesSeen.get(host);
  if (!seen) filesSeen.set(host, (seen = new Set()));
  const out = new Set<Any>();
  const todo: Any[] = [...fdTable(host).values(), ...seen];
  for (const v of inner(host).mm.vmas as Any[]) if (v.backing.file) todo.push(v.backing.file);
  while (todo.length > 0) {
    const f = todo.pop();
    if (!f || out.has(f) || !(f.refs > 0)) continue;
    out.add(f);
    if (f.ictx) todo.push(f.ictx);
    if (f.objects) {
      for (const obj of f.objects.values()) {
        if (obj.type === 'IOAS') for (const a of obj.iopt.areas) if (a.pages.source.kind === 'file') todo.push(a.pages.source.file);
      }
    }
  }
  seen.clear();
  for (const f of out) seen.add(f);
  return out;
}

/** Every /dev/iommu file still alive. */
export function iommufdFiles(host: Host): Any[] {
  return [...liveFiles(host)].filter((f) => f.objects && f.path === '/dev/iommu');
}

/** The emulated PCI functions (mock devices are not in this list). */
export function pciFunctions(host: Host): Any[] { return inner(host).devices; }

/** Every DEVICE object of every iommufd, with its iommufd. */
export function allObjectsForTest(host: Host) { return allObjects(host); }
function allObjects(host: Host): { ictx: Any; obj: Any }[] {
  const out: { ictx: Any; obj: Any }[] = [];
  for (const ictx of iommufdFiles(host)) for (const obj of ictx.objects.values()) out.push({ ictx, obj });
  return out;
}

export class InvariantError extends Error {
  override readonly name = 'InvariantError';
}

function fail(msg: string): never { throw new InvariantError(msg); }

/** The area of an IOAS holding `iova`, or undefined. */
function areaAt(ioas: Any, iova: bigint): Any {
  for (const a of ioas.iopt.areas) if (a.iova <= iova && iova <= a.last) return a;
  return undefined;
}

/** The physical address of byte `iova` of an area (its pages must be pinned). */
function areaPa(a: Any, iova: bigint): number {
  return a.pages.physRuns(a.offset + Number(iova - a.iova), 1)[0].pa;
}

export interface CheckOptions {
  /** Random pages to translate per attachment, on top of each area's first and last page (default 2). */
  samples?: number;
  rng?: Rng;
  /** Also DMA-read the bytes of each sampled page and compare with physical memory (default true). */
  dma?: boolean;
  /** Translate every page of every area (up to 4096 per attachment), not a sample. */
  full?: boolean;
}

/**
 * Probes (device, pasid, iova) remembered from earlier checks: translating
 * them again after later calls finds an IOTLB entry a call forgot to drop.
 */
const probes = new WeakMap<Host, Map<Any, Set<string>>>();

function probeSet(host: Host, pci: Any): Set<string> {
  let m = probes.get(host);
  if (!m) probes.set(host, (m = new Map()));
  let s = m.get(pci);
  if (!s) m.set(pci, (s = new Set()));
  return s;
}

/** Check every invariant; throws InvariantError naming the first one broken. */
export function checkInvariants(host: Host, opts: CheckOptions = {}): void {
  // One walk of the live files for the three checks (nothing changes in between).
  cached = { host, files: liveFiles(host) };
  try {
    checkObjects(host);
    checkPins(host);
    checkTranslations(host, opts);
    checkMockDomains(host);
  } finally {
    cached = null;
  }
}

let cached: { host: Host; files: Set<Any> } | null = null;

/** Ids, users counts, attachments, DESTROY rule, contexts. */
export function checkObjects(host: Host): void {
  const objs = allObjects(host);
  const expected = new Map<Any, number>();
  const bump = (o: Any, n = 1) => expected.set(o, (expected.get(o) ?? 1) + n);
  const seen = new Set<Any>();
  for (const { ictx, obj } of objs) {
    if (ictx.objects.find(obj.id) !== obj) fail(`object ${obj.type} ${obj.id}: not under its id`);
    if (!Number.isInteger(obj.id) || obj.id < 1) fail(`object ${obj.type}: bad id ${obj.id}`);
    seen.add(obj);
    expected.set(obj, expected.get(obj) ?? 1);
  }
  const attachedCount = new Map<Any, number>();
  for (const { ictx, obj } of objs) {
    switch (obj.type) {
      case 'DEVICE': {
        bump(obj); // the binding driver's reference
        const att: Map<number, Any> = obj.attached;
        if (att.size > 0) bump(obj);
        for (const [pasid, h] of att) {
          if (!seen.has(h)) fail(`DEVICE ${obj.id} pasid ${pasid}: attached to a HWPT that is not in the table`);
          bump(h);
          attachedCount.set(h, (attachedCount.get(h) ?? 0) + 1);
          if (h.type === 'HWPT_PAGING' && obj.pci.context(pasid) < 0) fail(`DEVICE ${obj.id} pasid ${pasid}: attached but no engine context`);
        }
        if (obj.vdev && (!seen.has(obj.vdev) || obj.vdev.idev !== obj)) fail(`DEVICE ${obj.id}: vdev link broken`);
        break;
      }
      case 'HWPT_PAGING':
        if (obj.inIoas) {
          if (!seen.has(obj.ioas)) fail(`HWPT_PAGING ${obj.id}: its IOAS is gone`);
          bump(obj.ioas);
          if (!obj.ioas.hwpts.includes(obj)) fail(`HWPT_PAGING ${obj.id}: not in its IOAS's list`);
          if (!obj.ioas.iopt.domains.includes(obj)) fail(`HWPT_PAGING ${obj.id}: not a domain of its IOAS`);
        }
        if (obj.fault) bump(obj.fault);
        break;
      case 'HWPT_NESTED':
        if (obj.viommu) bump(obj.viommu);
        else bump(obj.parent);
        if (obj.fault) bump(obj.fault);
        break;
      case 'VIOMMU':
        bump(obj.hwpt);
        // The mock's HW queues: queue N holds queue N - 1 (iommufd_hw_queue_depend).
        for (const q of (obj.ops?.queues ?? []) as Any[]) {
          if (!q) continue;
          if (!seen.has(q.core) || q.core.viommu !== obj) fail(`VIOMMU ${obj.id}: HW queue slot ${q.index} holds a queue that is not in the table`);
          if (q.prev) bump(q.prev.core);
        }
        break;
      case 'HW_QUEUE':
        bump(obj.viommu);
        if (!obj.access || !seen.has(obj.access)) fail(`HW_QUEUE ${obj.id}: its internal access is gone`);
        break;
      case 'ACCESS':
        // Selftest accesses (an fd holds them) and HW queues' internal accesses: the driver's reference, and the IOAS.
        bump(obj);
        if (obj.ioas) {
          if (!seen.has(obj.ioas)) fail(`ACCESS ${obj.id}: its IOAS is gone`);
          if (ictx.objects.find(obj.ioas.id) !== obj.ioas) fail(`ACCESS ${obj.id}: its IOAS ${obj.ioas.id} is of another iommufd`);
          if (!obj.ioas.iopt.accesses.has(obj)) fail(`ACCESS ${obj.id}: not in its IOAS's access list`);
          bump(obj.ioas);
        }
        break;
      case 'SELFTEST':
        if (!obj.idev || !seen.has(obj.idev) || obj.idev.pci !== obj.pci) fail(`SELFTEST ${obj.id}: its DEVICE is gone`);
        break;
      case 'FAULT': {
        // Every group waiting (unread or unanswered) is of an attachment that still reports to this FAULT:
        // a detach or replace answers its groups (iommufd_auto_response_faults).
        // Fault.waiting(): the attachment of each group in its engine ring and of each read and unanswered.
        for (const g of obj.waiting() as { dev: Any; pasid: number }[]) {
          const dev = g.dev;
          const h = dev.attached?.get(g.pasid);
          if (!h || h.fault !== obj) fail(`FAULT ${obj.id}: a page-request group of device ${dev.id} pasid ${g.pasid} waits, but that attachment no longer reports here`);
        }
        break;
      }
      case 'VDEVICE':
        bump(obj.viommu);
        if (obj.viommu.vdevs.get(obj.virtId) !== obj) fail(`VDEVICE ${obj.id}: not in its vIOMMU's table`);
        break;
      case 'VEVENTQ':
        bump(obj.viommu);
        if (obj.viommu.veventqs.get(obj.vtype) !== obj) fail(`VEVENTQ ${obj.id}: not in its vIOMMU's table`);
        break;
      default:
        break;
    }
  }
  // Event queue files hold their object while open.
  // (An area of IOMMU_IOAS_MAP_FILE holds its file too, whatever the file is.)
  const files = liveFiles(host);
  for (const f of files) if (f.queue && seen.has(f.queue) && f.refs > 0) bump(f.queue);
  // An iommufd mmap (the mock vIOMMU's pages) holds its owner per VMA (iommufd_fops_vma_open).
  for (const v of inner(host).mm.vmas as Any[]) if (v.backing.file?.owner && seen.has(v.backing.file.owner)) bump(v.backing.file.owner);
  // Each IOAS's access list holds live accesses only.
  for (const { obj } of objs) {
    if (obj.type !== 'IOAS') continue;
    for (const a of obj.iopt.accesses as Set<Any>) if (!seen.has(a) || a.ioas !== obj) fail(`IOAS ${obj.id}: its access list holds an access that is not attached to it`);
  }
  for (const { obj } of objs) {
    if (obj.type === 'HWPT_PAGING' || obj.type === 'HWPT_NESTED') {
      const n = attachedCount.get(obj) ?? 0;
      if (obj.attached !== n) fail(`${obj.type} ${obj.id}: attached = ${obj.attached}, devices say ${n}`);
      if (obj.auto && n === 0) fail(`automatic HWPT_PAGING ${obj.id} with no device left`);
    }
    const want = expected.get(obj)!;
    if (obj.users !== want) fail(`${obj.type} ${obj.id}: users = ${obj.users}, the graph needs ${want}`);
  }
  for (const ictx of iommufdFiles(host)) {
    if (ictx.vfioIoas && !seen.has(ictx.vfioIoas)) fail('IOMMU_VFIO_IOAS names an IOAS that was destroyed');
  }
  // A function no DEVICE is bound to, or a PASID nothing is attached at, has no context (blocked).
  const bound = new Map<Any, Any>();
  for (const { obj } of objs) if (obj.type === 'DEVICE') bound.set(obj.pci, obj);
  // (Mock devices, IOMMU_TEST_OP_MOCK_DOMAIN's, are not in the machine's list: those of live DEVICEs are checked too.)
  for (const pci of new Set([...pciFunctions(host), ...bound.keys()])) {
    const idev = bound.get(pci);
    for (const pasid of (pci.contexts as Map<number, number>).keys()) {
      if (!idev || !idev.attached.has(pasid)) fail(`${pci.path} pasid ${pasid}: a context without an attachment`);
    }
  }
}

/**
 * Pins: each pages object's runs against its areas (a page is pinned while
 * an area of an IOAS with a domain covers it, once per such area) and its
 * accesses (once per ACCESS_PAGES item or HW queue over it); each
 * user frame's reference count against its holders; RLIMIT_MEMLOCK.
 */
export function checkPins(host: Host): void {
  /** Per pages object: [first, last + 1) page intervals needed by areas of IOASes with domains. */
  const pagesObjs = new Map<Any, number[]>();
  const needOf = (p: Any): number[] => {
    let need = pagesObjs.get(p);
    if (!need) pagesObjs.set(p, (need = []));
    return need;
  };
  for (const { obj } of allObjects(host)) {
    // An access's pins (iommufd_access_pin_pages): a selftest ACCESS's items (ACCESS_PAGES), a HW queue's internal access.
    if (obj.type === 'ACCESS') {
      const pins: Any[] = obj.items ? [...obj.items.values()].flatMap((it: Any) => it.pins) : obj.pins;
      for (const p of pins) needOf(p.pages).push(p.first, p.last + 1);
      continue;
    }
    if (obj.type !== 'IOAS') continue;
    const iopt = obj.iopt;
    for (const a of iopt.areas) {
      const need = needOf(a.pages);
      if (iopt.domains.length === 0) continue;
      const [first, last] = a.pages.indexRange(a.offset, a.bytes);
      need.push(first, last + 1);
    }
  }
  const memPages = host.engine.memory.buffer.byteLength / PAGE;
  const holders = new Int32Array(memPages);
  let charged = 0;
  for (const [p, need] of pagesObjs) {
    const runs = p.runs as { first: number; last: number; count: number; pa: number }[];
    {
      const want = steps(need.map((x, i) => [x, i % 2 === 0 ? 1 : -1] as [number, number]));
      const have = steps(runs.flatMap((r) => [[r.first, r.count], [r.last + 1, -r.count]] as [number, number][]));
      if (want.join() !== have.join()) {
        fail(`a pages object's pins [first, end, count]: ${show(have)}; its areas with domains and the accesses need ${show(want)}`);
      }
    }
    for (const r of runs) {
      if (r.count < 1) fail(`pages run [${r.first}, ${r.last}] with count ${r.count}`);
      const n = r.last - r.first + 1;
      if (p.account) charged += n;
      if (r.pa >= SEG_SPAN) continue;
      // A run's pages are kernel pages (host.pageSize), each held frame by frame.
      const pfn = r.pa / PAGE;
      for (let i = 0; i < n * (host.pageSize / PAGE); i++) holders[pfn + i]++;
    }
  }
  if (host.lockedPages !== charged) fail(`RLIMIT_MEMLOCK charge ${host.lockedPages} pages, pinned and charged ${charged}`);
  // Frames: one reference per VMA page that owns it, per memfd page, per pages object pinning it.
  const mm = inner(host).mm;
  const memfiles = new Set<Any>();
  for (const v of mm.vmas as Any[]) {
    const b = v.backing;
    if (b.kind === 'anon') { const fr: Uint32Array = b.frames; for (let i = 0; i < fr.length; i++) holders[fr[i]]++; }
    if (b.file) memfiles.add(b.file);
  }
  for (const f of liveFiles(host)) if (f.pages instanceof Uint32Array) memfiles.add(f);
  for (const p of pagesObjs.keys()) if (p.source.kind === 'file') memfiles.add(p.source.file);
  for (const m of memfiles) {
    const pages: Uint32Array | undefined = m.pages;
    if (!(pages instanceof Uint32Array)) continue;
    for (let i = 0; i < pages.length; i++) if (pages[i] !== 0) holders[pages[i]]++;
  }
  for (let pfn = 0; pfn < memPages; pfn++) {
    const n = holders[pfn];
    if (n === 0) continue;
    const rc = host.engine.refcount(pfn);
    if (rc !== n) fail(`frame ${pfn} (pa 0x${(pfn * PAGE).toString(16)}): reference count ${rc}, its holders need ${n}`);
  }
}

/** A step function from (position, delta) events: [start, end, value] pieces with value > 0, equal neighbours merged. */
function steps(events: [number, number][]): [number, number, number][] {
  events.sort((a, b) => a[0] - b[0]);
  const out: [number, number, number][] = [];
  let v = 0, from = 0;
  for (let i = 0; i < events.length;) {
    const at = events[i][0];
    let nv = v;
    while (i < events.length && events[i][0] === at) nv += events[i++][1];
    if (nv === v) continue;
    if (v > 0) {
      const prev = out[out.length - 1];
      if (prev && prev[1] === from && prev[2] === v) prev[1] = at;
      else out.push([from, at, v]);
    }
    from = at;
    v = nv;
  }
  return out;
}

const show = (x: [number, number, number][]) => JSON.stringify(x.slice(0, 8)) + (x.length > 8 ? '...' : '');

/**
 * Translations: for every device attached to a HWPT_PAGING (RID or PASID),
 * the first and last page of each area of its IOAS and a few random ones
 * translate to the area's physical page with the area's permissions, a DMA
 * reads the bytes physical memory holds there, and IOVAs checked before and
 * no longer mapped fault (a stale IOTLB entry would answer).
 */
export function checkTranslations(host: Host, opts: CheckOptions = {}): void {
  const samples = opts.samples ?? 2;
  const rng = opts.rng;
  const phys = inner(host).phys;
  for (const { obj: idev } of allObjects(host)) {
    if (idev.type !== 'DEVICE') continue;
    const pci = idev.pci;
    const dma = pci.dma;
    const seen = probeSet(host, pci);
    const toCheck = new Map<string, { pasid: number; iova: bigint }>();
    for (const k of seen) {
      const [p, i] = k.split(':');
      toCheck.set(k, { pasid: Number(p), iova: BigInt(i) });
    }
    for (const [pasid, h] of idev.attached as Map<number, Any>) {
      if (h.type === 'HWPT_NESTED') { checkNested(host, idev, pasid, h, opts); continue; }
      if (h.type !== 'HWPT_PAGING') continue;
      const areas = h.ioas.iopt.areas as Any[];
      const add = (iova: bigint) => toCheck.set(`${pasid}:${iova}`, { pasid, iova });
      let budget = 4096;
      for (const a of areas) {
        add(a.iova);
        add(a.last & ~0xfffn);
        if (opts.full) for (let at = a.iova & ~0xfffn; at <= a.last && budget > 0; at += 4096n, budget--) add(at < a.iova ? a.iova : at);
      }
      if (rng && areas.length > 0) {
        for (let s = 0; s < samples; s++) {
          const a = rng.pick(areas);
          add(a.iova + rng.bigint(0n, BigInt(Math.max(1, Math.floor(a.bytes / PAGE)))) * 4096n);
        }
      }
    }
    for (const [key, { pasid, iova }] of toCheck) {
      const h = idev.attached.get(pasid);
      if (!h) {
        // Not attached at this PASID any more: blocked.
        expectFault(() => dma.translate(iova, { pasid }), `${pci.path} pasid ${pasid} iova 0x${iova.toString(16)} (detached)`);
        seen.delete(key);
        continue;
      }
      if (h.type !== 'HWPT_PAGING') { seen.delete(key); continue; }
      const a = areaAt(h.ioas, iova);
      const where = `${pci.path} pasid ${pasid} iova 0x${iova.toString(16)} (HWPT ${h.id}, IOAS ${h.ioas.id})`;
      if (!a || !(a.perm & 1)) {
        if (!a && h.driver.kind === 'mock') { seen.delete(key); continue; }
        if (!a || !(a.perm & 2)) expectFault(() => dma.translate(iova, { pasid }), `${where}: not mapped`);
        if (!a) { seen.delete(key); continue; }
      }
      const want = areaPa(a, iova);
      if (a.perm & 1) {
        const got = dma.translate(iova, { pasid });
        if (got.pa !== want) fail(`${where}: translates to pa 0x${got.pa.toString(16)}, the area's page is at 0x${want.toString(16)}`);
        if (opts.dma !== false) {
          const n = Math.min(16, PAGE - Number(iova % 4096n), a.bytes - Number(iova - a.iova));
          const bytes = dma.read(iova, n, { pasid });
          const expect = new Uint8Array(n);
          phys.read(want, expect);
          for (let i = 0; i < n; i++) if (bytes[i] !== expect[i]) fail(`${where}: DMA read byte ${i} = ${bytes[i]}, memory holds ${expect[i]}`);
        }
      }
      if (a.perm & 2) {
        const got = dma.translate(iova, { pasid, write: true });
        if (got.pa !== want) fail(`${where}: write translates to pa 0x${got.pa.toString(16)}, expected 0x${want.toString(16)}`);
      } else {
        expectFault(() => dma.translate(iova, { pasid, write: true }), `${where}: read-only, write`);
      }
      seen.add(key);
    }
    // Keep the probe set small.
    if (seen.size > 64) {
      const drop = [...seen].slice(0, seen.size - 64);
      for (const k of drop) seen.delete(k);
    }
  }
}

/**
 * Mock paging domains (attached or not): each area's first and last 2 KiB
 * IOPTE translates to the area's bytes, and the 2 KiB just outside an area
 * that no other area covers translates to nothing (MockPagingTable's
 * halves: selftest.c's 2 KiB granule over a 4 KiB table).
 */
export function checkMockDomains(host: Host): void {
  for (const { obj: h } of allObjects(host)) {
    if (h.type !== 'HWPT_PAGING' || h.driver.kind !== 'mock' || !h.ops || !h.ioas.iopt.domains.includes(h)) continue;
    const t = h.ops;
    for (const a of h.ioas.iopt.areas as Any[]) {
      for (const iova of [a.iova, (a.last + 1n) - 2048n]) {
        const got = t.iovaToPhys(iova);
        if (got !== areaPa(a, iova)) fail(`mock HWPT_PAGING ${h.id}: iova 0x${iova.toString(16)} (area [0x${a.iova.toString(16)}, 0x${a.last.toString(16)}]) translates to ${got === null ? 'nothing' : `0x${got.toString(16)}`}, the area's byte is at 0x${areaPa(a, iova).toString(16)}`);
      }
      for (const iova of [a.iova - 2048n, a.last + 1n]) {
        if (iova < 0n || areaAt(h.ioas, iova)) continue;
        const got = t.iovaToPhys(iova);
        if (got !== null) fail(`mock HWPT_PAGING ${h.id}: iova 0x${iova.toString(16)}, next to area [0x${a.iova.toString(16)}, 0x${a.last.toString(16)}] and in none, translates to 0x${got.toString(16)}`);
      }
    }
  }
}

/** The physical ranges [pa, end) behind an IOAS's areas: readable ones, and writable ones. */
function stage2Ranges(ioas: Any): { r: [number, number][]; w: [number, number][] } {
  const r: [number, number][] = [], w: [number, number][] = [];
  for (const a of ioas.iopt.areas as Any[]) {
    for (const run of a.pages.physRuns(a.offset, a.bytes) as { pa: number; length: number }[]) {
      if (a.perm & 1) r.push([run.pa, run.pa + run.length]);
      if (a.perm & 2) w.push([run.pa, run.pa + run.length]);
    }
  }
  return { r, w };
}

const inRanges = (ranges: [number, number][], pa: number) => ranges.some(([lo, hi]) => lo <= pa && pa < hi);

const S1_ADDR = 0x000f_ffff_ffff_f000n;
/** The x86-64 entry bits a simple first-stage entry may have: P, R/W, U/S, PWT, PCD, A, D, and the address. */
const S1_SIMPLE = S1_ADDR | 0x7fn;

/** 8 bytes of a guest-physical address through stage 2 (the parent's areas), or null where stage 2 maps nothing. */
function readGpa(host: Host, ioas: Any, gpa: bigint, buf: Uint8Array): boolean {
  const a = areaAt(ioas, gpa);
  if (!a || a.last - gpa + 1n < BigInt(buf.length)) return false;
  inner(host).phys.read(areaPa(a, gpa), buf);
  return true;
}

/**
 * The VT-d first-stage walk (x86-64 paging, VT-d 3.6 / 9.7) of a nested
 * HWPT, done here from the guest's table through the parent's areas: the
 * physical address a DMA at iova must reach, null where it must fault, or
 * 'unknown' where the table uses what this walk does not model (large
 * pages, XD, ignored bits, a table page stage 2 maps read-only: the engine
 * decides those, and only the stage-2 bound is checked).
 */
function vtdS1Ref(host: Host, h: Any, iova: bigint, write: boolean): number | null | 'unknown' {
  const levels = h.s1.addrWidth === 57 ? 5 : 4;
  if (iova >= 1n << BigInt(levels === 5 ? 56 : 47)) return 'unknown';
  const ioas = h.parent.ioas;
  const buf = new Uint8Array(8);
  const dv = new DataView(buf.buffer);
  let table = h.s1.root & ~0xfffn;
  let rw = true;
  for (let level = levels; level >= 1; level--) {
    const gpa = table + ((iova >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n;
    const a = areaAt(ioas, gpa);
    if (!a) return null; // a table entry stage 2 does not map: F_STAGE2
    if ((a.perm & 3) !== 3) return 'unknown'; // A/D written back through a read-only stage 2
    readGpa(host, ioas, gpa, buf);
    const e = dv.getBigUint64(0, true);
    if (!(e & 1n)) return null;
    if (e & ~S1_SIMPLE) return 'unknown';
    if (!(e & 4n)) return null; // user requests need U/S at every level
    if (!(e & 2n)) rw = false;
    table = e & S1_ADDR;
  }
  if (write && !rw) return null;
  const gpa = table | (iova & 0xfffn);
  const a = areaAt(ioas, gpa);
  if (!a || !(a.perm & (write ? 2 : 1))) return null;
  return areaPa(a, gpa);
}

/** Up to `max` IOVAs (page-aligned) that a nested HWPT's VT-d first-stage table maps, found by walking it from its root. */
function vtdS1Leaves(host: Host, h: Any, max: number): bigint[] {
  const levels = h.s1.addrWidth === 57 ? 5 : 4;
  const ioas = h.parent.ioas;
  const out: bigint[] = [];
  const page = new Uint8Array(4096);
  const dv = new DataView(page.buffer);
  let tables = 0;
  const walk = (table: bigint, level: number, base: bigint): void => {
    if (out.length >= max || tables++ >= 16) return;
    if (!readGpa(host, ioas, table, page)) return;
    const entries: bigint[] = [];
    for (let i = 0; i < 512; i++) entries.push(dv.getBigUint64(i * 8, true));
    for (let i = 0; i < 512 && out.length < max; i++) {
      const e = entries[i];
      if (!(e & 1n) || (e & ~S1_SIMPLE)) continue;
      const iova = base | (BigInt(i) << BigInt(12 + 9 * (level - 1)));
      if (level === 1) out.push(iova);
      else walk(e & S1_ADDR, level - 1, iova);
    }
  };
  walk(h.s1.root & ~0xfffn, levels, 0n);
  return out;
}

function tryTranslate(dma: Any, iova: bigint, pasid: number, write: boolean): { pa: number } | null {
  try {
    return dma.translate(iova, { pasid, write });
  } catch (e) {
    if (e instanceof DmaFault) return null;
    throw e;
  }
}

/**
 * A device attached to a HWPT_NESTED: what a DMA through it reaches.
 * Whatever the first stage (a VT-d table in guest memory, an SMMUv3 vSTE
 * and CD, the mock's nested domain), stage 2 bounds it: a translation lands
 * in a physical page that an area of the parent's IOAS maps (writable, for
 * a write), and a DMA reads the bytes memory holds there. Where the first
 * stage is a VT-d table this walk can follow, the translation is exactly
 * the table's (after dropping the domain's cached entries once: a guest
 * that changed its table without invalidating may see stale entries). The
 * mock's nested domains have no table: DMA through them is refused.
 */
function checkNested(host: Host, idev: Any, pasid: number, h: Any, opts: CheckOptions): void {
  const dma = idev.pci.dma;
  const ioas = h.parent.ioas;
  const where = (iova: bigint) => `${idev.pci.path} pasid ${pasid} iova 0x${iova.toString(16)} (HWPT_NESTED ${h.id} on HWPT_PAGING ${h.parent.id}, IOAS ${ioas.id})`;
  const areas = ioas.iopt.areas as Any[];
  const probes = new Set<bigint>();
  for (const a of areas.slice(0, 4)) probes.add(a.iova & ~0xfffn);
  if (opts.rng && areas.length > 0) {
    for (let s = 0; s < (opts.samples ?? 2); s++) {
      const a = opts.rng.pick(areas);
      probes.add((a.iova & ~0xfffn) + opts.rng.bigint(0n, BigInt(Math.max(1, Math.floor(a.bytes / PAGE)))) * 4096n);
    }
  }
  if (h.s1) for (const iova of vtdS1Leaves(host, h, opts.full ? 16 : 4)) probes.add(iova);
  if (h.domain) {
    for (const iova of probes) expectFault(() => dma.translate(iova, { pasid }), `${where(iova)}: through the mock's nested domain`);
    return;
  }
  const ranges = stage2Ranges(ioas);
  const phys = inner(host).phys;
  for (const iova of probes) {
    for (const write of [false, true]) {
      let got = tryTranslate(dma, iova, pasid, write);
      if (h.s1) {
        const ref = vtdS1Ref(host, h, iova, write);
        const agrees = (g: { pa: number } | null) => ref === 'unknown' || (ref === null ? g === null : g !== null && g.pa === ref);
        if (!agrees(got)) {
          host.engine.flushDomain(h.did);
          got = tryTranslate(dma, iova, pasid, write);
          if (!agrees(got)) {
            fail(`${where(iova)}: ${write ? 'write' : 'read'} translates to ${got ? `pa 0x${got.pa.toString(16)}` : 'a fault'}, the first-stage table and stage 2 give ${ref === null ? 'a fault' : `pa 0x${(ref as number).toString(16)}`}`);
          }
        }
      }
      if (!got) continue;
      if (!inRanges(write ? ranges.w : ranges.r, got.pa)) fail(`${where(iova)}: ${write ? 'write' : 'read'} reaches pa 0x${got.pa.toString(16)}, which no ${write ? 'writable ' : ''}area of the parent's IOAS maps`);
      if (!write && opts.dma !== false) {
        const n = Math.min(16, PAGE - (got.pa % PAGE));
        let bytes: Uint8Array;
        try {
          bytes = dma.read(iova, n, { pasid });
        } catch (e) {
          if (e instanceof DmaFault) fail(`${where(iova)}: translates to pa 0x${got.pa.toString(16)}, but a DMA read faults (${e.message})`);
          throw e;
        }
        const want = new Uint8Array(n);
        phys.read(got.pa, want);
        for (let i = 0; i < n; i++) if (bytes[i] !== want[i]) fail(`${where(iova)}: DMA read byte ${i} = ${bytes[i]}, memory at pa 0x${got.pa.toString(16)} holds ${want[i]}`);
      }
    }
  }
}

function expectFault(fn: () => unknown, what: string): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return;
    throw e;
  }
  fail(`${what}: expected a DMA fault, the device got through`);
}

// ---------------------------------------------------------------------------
// Error classification

const KNOWN_ERRNO = new Set<number>(Object.values(Errno as Record<string, number>));

/** What a call threw: undefined (fine), or a description of a finding. */
export function badThrow(e: unknown, dmaAllowed: boolean): string | undefined {
  if (e instanceof SysError) {
    if (!KNOWN_ERRNO.has(e.errno) || (Errno as Record<string, number>)[e.code] !== e.errno) return `SysError with an unknown errno ${e.errno} (${e.code})`;
    return undefined;
  }
  if (e instanceof DmaFault) return dmaAllowed ? undefined : `DmaFault from a non-DMA call: ${e.message}`;
  if (e instanceof WebAssembly.RuntimeError) return `wasm trap: ${e.message}`;
  if (e instanceof Error) return `${e.name}: ${e.message}\n${e.stack ?? ''}`;
  return `non-Error thrown: ${String(e)}`;
}

// ---------------------------------------------------------------------------
// The fuzzer

const T = uapi.IOMMUFD_IOCTL;
const V = uapi.VFIO_IOCTL;

const IOMMU_DESCS: readonly IoctlDesc[] = uapi.IOMMUFD_IOCTLS;
const VFIO_DESCS: readonly IoctlDesc[] = [V.VFIO_DEVICE_BIND_IOMMUFD, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, V.VFIO_DEVICE_DETACH_IOMMUFD_PT];
const OTHER_VFIO: readonly IoctlDesc[] = Object.values(V) as IoctlDesc[];

/** Valid flag bits of the ioctls that take flags (the fuzzer adds invalid ones sometimes). */
const FLAG_BITS: Record<string, number> = {
  IOMMU_IOAS_MAP: 7, IOMMU_IOAS_MAP_FILE: 7, IOMMU_IOAS_COPY: 7,
  IOMMU_HWPT_ALLOC: 0xf, IOMMU_HWPT_SET_DIRTY_TRACKING: 1, IOMMU_HWPT_GET_DIRTY_BITMAP: 1,
  IOMMU_GET_HW_INFO: 1, IOMMU_VEVENTQ_ALLOC: 0, VFIO_DEVICE_BIND_IOMMUFD: 1, VFIO_DEVICE_ATTACH_IOMMUFD_PT: 1, VFIO_DEVICE_DETACH_IOMMUFD_PT: 1,
};

/** Which ioctls the fuzzer favours (the ones that build state get more weight). */
const WEIGHT: Record<string, number> = {
  IOMMU_IOAS_ALLOC: 4, IOMMU_IOAS_MAP: 10, IOMMU_IOAS_MAP_FILE: 4, IOMMU_IOAS_UNMAP: 6, IOMMU_IOAS_COPY: 4, IOMMU_DESTROY: 5,
  IOMMU_HWPT_ALLOC: 5, VFIO_DEVICE_BIND_IOMMUFD: 5, VFIO_DEVICE_ATTACH_IOMMUFD_PT: 8, VFIO_DEVICE_DETACH_IOMMUFD_PT: 3,
  IOMMU_VIOMMU_ALLOC: 3, IOMMU_VDEVICE_ALLOC: 3, IOMMU_VEVENTQ_ALLOC: 2, IOMMU_FAULT_QUEUE_ALLOC: 2, IOMMU_HWPT_INVALIDATE: 2,
};

/**
 * IOMMU_TEST_CMD's ops (iommufd_test.h enum iommufd_test_op): number, name,
 * union member, weight. The dma-buf ops (22 to 24) are unknown here
 * (EOPNOTSUPP) and called rarely.
 */
const TEST_OPS: readonly [number, string, string, number][] = [
  [uapi.IOMMU_TEST_OP_ADD_RESERVED, 'ADD_RESERVED', 'add_reserved', 2],
  [uapi.IOMMU_TEST_OP_MOCK_DOMAIN, 'MOCK_DOMAIN', 'mock_domain', 8],
  [uapi.IOMMU_TEST_OP_MD_CHECK_MAP, 'MD_CHECK_MAP', 'check_map', 4],
  [uapi.IOMMU_TEST_OP_MD_CHECK_REFS, 'MD_CHECK_REFS', 'check_refs', 3],
  [uapi.IOMMU_TEST_OP_CREATE_ACCESS, 'CREATE_ACCESS', 'create_access', 5],
  [uapi.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, 'DESTROY_ACCESS_PAGES', 'destroy_access_pages', 3],
  [uapi.IOMMU_TEST_OP_ACCESS_PAGES, 'ACCESS_PAGES', 'access_pages', 6],
  [uapi.IOMMU_TEST_OP_ACCESS_RW, 'ACCESS_RW', 'access_rw', 5],
  [uapi.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, 'SET_TEMP_MEMORY_LIMIT', 'memory_limit', 1],
  [uapi.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, 'MOCK_DOMAIN_REPLACE', 'mock_domain_replace', 5],
  [uapi.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, 'ACCESS_REPLACE_IOAS', 'access_replace_ioas', 3],
  [uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, 'MOCK_DOMAIN_FLAGS', 'mock_domain_flags', 4],
  [uapi.IOMMU_TEST_OP_DIRTY, 'DIRTY', 'dirty', 3],
  [uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB, 'MD_CHECK_IOTLB', 'check_iotlb', 2],
  [uapi.IOMMU_TEST_OP_TRIGGER_IOPF, 'TRIGGER_IOPF', 'trigger_iopf', 3],
  [uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE, 'DEV_CHECK_CACHE', 'check_dev_cache', 2],
  [uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, 'TRIGGER_VEVENT', 'trigger_vevent', 3],
  [uapi.IOMMU_TEST_OP_PASID_ATTACH, 'PASID_ATTACH', 'pasid_attach', 4],
  [uapi.IOMMU_TEST_OP_PASID_REPLACE, 'PASID_REPLACE', 'pasid_replace', 3],
  [uapi.IOMMU_TEST_OP_PASID_DETACH, 'PASID_DETACH', 'pasid_detach', 3],
  [uapi.IOMMU_TEST_OP_PASID_CHECK_HWPT, 'PASID_CHECK_HWPT', 'pasid_check', 2],
  [uapi.IOMMU_TEST_OP_DMABUF_GET, 'DMABUF_GET', 'dmabuf_get', 0.3],
  [uapi.IOMMU_TEST_OP_DMABUF_REVOKE, 'DMABUF_REVOKE', 'dmabuf_revoke', 0.3],
  [uapi.IOMMU_TEST_OP_MD_CHECK_DMABUF, 'MD_CHECK_DMABUF', 'check_dmabuf', 0.3],
];

interface Region { va: number; length: number }

export interface FuzzStats {
  calls: number;
  ok: number;
  errnos: Map<string, number>;
  byOp: Map<string, { calls: number; ok: number; errnos: Record<string, number> }>;
}

export class IoctlFuzzer {
  readonly stats: FuzzStats = { calls: 0, ok: 0, errnos: new Map(), byOp: new Map() };
  private readonly iommufds: number[] = [];
  private readonly devPaths: string[] = [];
  private readonly devFds: number[] = [];
  private readonly memfds: number[] = [];
  private readonly eventFds: number[] = [];
  private readonly deadFds: number[] = [];
  private readonly live: Region[] = [];
  private readonly dead: Region[] = [];
  private readonly ids: number[] = [];
  /** Ids by the kind of object that was handed out under them (they may be dead by now). */
  private readonly typed = new Map<string, number[]>();
  private readonly iovas: { iova: bigint; length: bigint }[] = [];
  /** Page-fault records read from fault fds, for well-formed responses. */
  private readonly cookies: number[] = [];
  /** The iommufd fd the current call's ids belong to. */
  private cur = -1;
  /** The path of the VFIO file the current bind is on. */
  private bindingPath: string | undefined;
  /** Which iommufd fd each VFIO fd was bound to. */
  private readonly boundTo = new Map<number, number>();
  /** IOVA ranges handed out, with their IOAS. */
  private readonly maps: { fd: number; ioas: number; iova: bigint; length: bigint; va?: number }[] = [];
  /** The host has IOMMU_TEST_CMD (createHost({ iommufdTest: true })): the test-command arm and the mock's values run. */
  private readonly test: boolean;
  /** Access fds (IOMMU_TEST_OP_CREATE_ACCESS), from the fd table. */
  private readonly accessFds: number[] = [];
  /** out_access_pages_id values handed out. */
  private readonly accessItems: number[] = [];
  /** The VFIO fd the current VFIO call goes to (for the values of an attach). */
  private argFd = -1;
  /** A user buffer the fuzzer fills with plausible structs before calls that read user memory. */
  private scratch = 0;
  private mapped = 0;
  /** The last call, for a failure message. */
  last = '';
  /** What the last call did: "ok" (with a hash of its argument's bytes after an ioctl), or what it threw. */
  outcome = '';
  /** Log of the last calls (for a failure message). */
  readonly history: string[] = [];

  /**
   * @param options.nested well-formed nested HWPTs more often: VT-d
   * first-stage tables the fuzzer writes into memory its nest parent maps
   * (IOMMU_HWPT_DATA_VTD_S1 pointing at them), and attaches to nested
   * HWPTs. Off, the calls of a seed are those of the fuzzer before it.
   */
  constructor(readonly host: Host, readonly rng: Rng, readonly options: { maxMapped?: number; devices?: number; nested?: boolean } = {}) {
    this.test = inner(host).test != null;
    this.iommufds.push(host.open('/dev/iommu'));
    const kinds: { iommu: 'intel-vtd' | 'amd-vi' | 'arm-smmuv3'; pasidBits?: number; ats?: boolean; pri?: boolean }[] = [
      { iommu: 'intel-vtd', pasidBits: 8, ats: true, pri: true },
      { iommu: 'intel-vtd' },
      { iommu: 'amd-vi' },
      { iommu: 'arm-smmuv3' },
      { iommu: 'arm-smmuv3' },
      { iommu: 'intel-vtd', pasidBits: 4 },
    ];
    for (const k of kinds.slice(0, options.devices ?? kinds.length)) {
      const d = host.addDevice(k);
      this.devPaths.push(d.path);
      this.devFds.push(host.open(d.path));
    }
    if (this.test) {
      // A function behind the mock IOMMU with a VFIO file too (MOCK_DOMAIN makes the others).
      const d = host.addDevice({ iommu: 'mock', pasidBits: 20 });
      this.devPaths.push(d.path);
      this.devFds.push(host.open(d.path));
    }
    this.scratch = host.mmap(4 * PAGE);
    this.memfds.push(host.memfdCreate('fuzz'));
    host.ftruncate(this.memfds[0], 16 * PAGE);
  }

  private get maxMapped(): number { return this.options.maxMapped ?? 24 << 20; }

  // ---- value pickers --------------------------------------------------------

  private pickId(kinds: string[] = []): number {
    const r = this.rng;
    // Mostly a live object of the kind wanted, read from the current iommufd's table.
    const ictx = fdTable(this.host).get(this.cur);
    if (kinds.length > 0 && ictx?.objects && r.chance(0.7)) {
      const live = [...ictx.objects.values()].filter((o: Any) => kinds.some((k) => matchKind(o, k)));
      if (live.length > 0) return r.pick(live).id;
    }
    const pool = kinds.flatMap((k) => this.typed.get(`${this.cur}:${k}`) ?? []);
    if (pool.length > 0 && r.chance(0.85)) return r.pick(pool.slice(r.chance(0.6) ? -3 : -12));
    if (this.ids.length > 0 && r.chance(0.85)) return r.pick(this.ids.slice(-24));
    return r.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 0xffff_ffff, r.u32()]);
  }

  private pickFd(): number {
    const r = this.rng;
    const lists = [this.iommufds, this.devFds, this.memfds, this.eventFds, this.deadFds].filter((l) => l.length > 0);
    if (r.chance(0.9)) return r.pick(r.pick(lists));
    return r.pick([-1, 0, 1, 2, 1000, 0x7fff_ffff]);
  }

  private pickPtr(): bigint {
    const r = this.rng;
    const roll = r.below(10);
    if (roll < 5 && this.live.length > 0) {
      const g = r.pick(this.live);
      const off = r.chance(0.7) ? r.below(Math.max(1, g.length / PAGE)) * PAGE : r.below(g.length);
      return BigInt(g.va + off);
    }
    if (roll < 6) return BigInt(this.scratch + (r.chance(0.8) ? 0 : r.below(4 * PAGE)));
    if (roll < 8 && this.dead.length > 0) return BigInt(r.pick(this.dead).va);
    return r.pick([0n, 0x1000n, BigInt(Number.MAX_SAFE_INTEGER), ULONG_MAX, ULONG_MAX - 0xfffn, r.bigint(0n, 1n << 48n), 0x7f00_0000_0000n]);
  }

  private pickLen(): bigint {
    const r = this.rng;
    const roll = r.below(10);
    if (roll < 6) return BigInt(r.int(1, 8) * PAGE);
    if (roll < 7 && this.live.length > 0) return BigInt(r.pick(this.live).length);
    if (roll < 8 && this.iovas.length > 0) return r.pick(this.iovas).length;
    return r.pick([0n, 1n, 0x800n, 2n << 20n, 1n << 30n, ULONG_MAX, ULONG_MAX - 0xfffn, r.bigint(0n, 1n << 40n)]);
  }

  private pickIova(): bigint {
    const r = this.rng;
    const roll = r.below(10);
    if (roll < 5 && this.iovas.length > 0) {
      const v = r.pick(this.iovas);
      return r.chance(0.7) ? v.iova : v.iova + r.bigint(0n, v.length / 4096n + 1n) * 4096n;
    }
    if (roll < 8) return BigInt(r.int(1, 0x4000)) * 0x1000n;
    return r.pick([0n, 0x1000n, 0xfee00000n, 0x8000000n, 1n << 47n, 1n << 48n, ULONG_MAX, ULONG_MAX - 0xfffn, r.bigint(0n, 1n << 64n)]);
  }

  /** A value for a field, by its name. */
  private fieldValue(desc: IoctlDesc, name: string, type: string, hostile: boolean): number | bigint {
    const r = this.rng;
    const big = type === 'u64' || type === 'le64';
    const v = (x: number | bigint) => (big ? BigInt(x) : Number(x));
    if (hostile && r.chance(0.5)) {
      const x = r.pick([0n, 1n, 0xffffn, 0x7fff_ffffn, 0xffff_ffffn, 0x1_0000_0000n, BigInt(Number.MAX_SAFE_INTEGER), ULONG_MAX, ULONG_MAX - 0xfffn, r.bigint(0n, 1n << 64n)]);
      return big ? x : fit(type, Number(x & 0xffff_ffffn));
    }
    if (name.startsWith('__reserved') || name === 'pad') return v(r.int(1, 255));
    if (name.startsWith('out_')) return v(r.u32());
    switch (name) {
      case 'flags': {
        const valid = FLAG_BITS[desc.name] ?? 0;
        if (!hostile) return v(valid & r.u32());
        return v(r.u32());
      }
      case 'iommufd': case 'fd': return this.pickFd();
      case 'user_va': case 'data_uptr': case 'allowed_iovas': case 'data': case 'token_uuid_ptr': case 'vaddr':
        return this.pickPtr();
      case 'length': case 'size': return this.pickLen();
      case 'iova': case 'src_iova': case 'dst_iova': case 'nesting_parent_iova': return this.pickIova();
      case 'start': return BigInt(r.chance(0.8) ? r.below(16) * PAGE : r.below(1 << 20));
      case 'num_iovas': return r.below(5);
      case 'data_len': return r.pick([0, 4, 8, 16, 24, 32, 64, 128, 256, r.u32()]);
      case 'entry_len': return r.pick([0, 16, 24, 32, r.below(64)]);
      case 'entry_num': return r.below(4);
      case 'pasid': return r.chance(0.7) ? r.below(4) : r.pick([255, 256, 1 << 20, r.u32()]);
      case 'virt_id': return BigInt(r.chance(0.9) ? r.below(8) : r.u32());
      case 'veventq_depth': return r.chance(0.9) ? r.int(1, 8) : r.pick([0, 1 << 20, r.u32()]);
      case 'op': return r.below(4);
      case 'option_id': return r.below(3);
      case 'val64': return BigInt(r.below(3));
      case 'data_type': case 'type': case 'in_data_type': return r.chance(0.9) ? r.below(4) : r.u32();
      case 'page_size': return BigInt(r.chance(0.8) ? 4096 : 2 ** r.below(32));
      case 'index': return r.below(3);
      case 'num_regions': case 'num_irqs': case 'cap_offset': case 'iova_pgsizes': return v(0);
      case 'dev_id': return this.pickId(['DEVICE']);
      case 'ioas_id': case 'src_ioas_id': case 'dst_ioas_id': return this.pickId(['IOAS']);
      case 'pt_id': return this.pickId(r.chance(0.5) ? ['IOAS'] : ['HWPT']);
      case 'hwpt_id': return this.pickId(['HWPT']);
      case 'fault_id': return this.pickId(['FAULT']);
      case 'viommu_id': return this.pickId(['VIOMMU']);
      case 'object_id': return r.chance(0.3) ? 0 : this.pickId(['IOAS']);
      default:
        if (name.endsWith('_id') || name === 'id') return this.pickId();
        return big ? r.bigint(0n, 1n << 64n) : r.u32();
    }
  }

  /** Fill the scratch buffer with plausible user data: IOVA ranges, small words, or noise. */
  private fillScratch(): void {
    const r = this.rng;
    const buf = new Uint8Array(4 * PAGE);
    const dv = new DataView(buf.buffer);
    const kind = r.below(3);
    for (let i = 0; i < buf.length / 16; i++) {
      if (kind === 0) {
        // iommu_iova_range: sorted, page-aligned
        const start = BigInt(i * 16 + r.below(8)) << 20n;
        dv.setBigUint64(i * 16, start, true);
        dv.setBigUint64(i * 16 + 8, start + (BigInt(r.int(1, 16)) << 12n) - 1n, true);
      } else if (kind === 1) {
        dv.setUint32(i * 16, r.below(4), true);
        dv.setUint32(i * 16 + 4, r.below(16), true);
        dv.setUint32(i * 16 + 8, r.chance(0.5) ? 0 : r.u32(), true);
        dv.setUint32(i * 16 + 12, 0, true);
      } else {
        dv.setUint32(i * 16, r.u32(), true);
        dv.setUint32(i * 16 + 4, r.u32(), true);
        dv.setUint32(i * 16 + 8, r.u32(), true);
        dv.setUint32(i * 16 + 12, r.u32(), true);
      }
    }
    this.host.mem.write(this.scratch, buf);
  }

  /**
   * Values a well-formed call of this ioctl would pass (live ids of the
   * right kind, a mapped VA with a length inside it, an IOVA handed out
   * before, sane flags), over the generic per-field values.
   */
  private validValues(desc: IoctlDesc, values: Record<string, Any>): void {
    const r = this.rng;
    const region = () => (this.live.length > 0 ? r.pick(this.live) : { va: this.scratch, length: 4 * PAGE });
    const known = () => {
      const mine = this.maps.filter((m) => m.fd === this.cur);
      return mine.length > 0 ? r.pick(mine) : undefined;
    };
    const fixedIova = () => BigInt(r.int(0x100, 0x40000)) * 0x1000n;
    switch (desc.name) {
      case 'IOMMU_IOAS_MAP': {
        const g = region();
        const off = r.below(g.length / PAGE) * PAGE;
        values.user_va = BigInt(g.va + off);
        values.length = BigInt(PAGE * r.int(1, (g.length - off) / PAGE));
        const fixed = r.chance(0.5);
        values.flags = r.pick([6, 6, 6, 4, 2]) | (fixed ? 1 : 0);
        values.iova = fixed ? fixedIova() : 0n;
        break;
      }
      case 'IOMMU_IOAS_MAP_FILE': {
        values.fd = this.memfds.length > 0 && r.chance(0.9) ? r.pick(this.memfds) : this.pickFd();
        values.start = BigInt(r.below(8) * PAGE);
        values.length = BigInt(PAGE * r.int(1, 8));
        const fixed = r.chance(0.5);
        values.flags = r.pick([6, 6, 4, 2]) | (fixed ? 1 : 0);
        values.iova = fixed ? fixedIova() : 0n;
        break;
      }
      case 'IOMMU_IOAS_UNMAP': {
        const m = known();
        if (r.chance(0.1)) { values.iova = 0n; values.length = ULONG_MAX; break; }
        if (m) { values.ioas_id = m.ioas; values.iova = m.iova; values.length = m.length; }
        break;
      }
      case 'IOMMU_IOAS_COPY': {
        const m = known();
        if (m) {
          values.src_ioas_id = m.ioas;
          const pages = m.length / 4096n;
          const first = r.bigint(0n, pages > 0n ? pages : 1n);
          values.src_iova = m.iova + first * 4096n;
          values.length = (r.bigint(0n, pages - first > 0n ? pages - first : 1n) + 1n) * 4096n;
        }
        const fixed = r.chance(0.5);
        values.flags = r.pick([6, 4]) | (fixed ? 1 : 0);
        values.dst_iova = fixed ? fixedIova() : 0n;
        break;
      }
      case 'IOMMU_HWPT_ALLOC': {
        values.flags = r.weighted([[5, 0], [3, 1], [1, 2], [2, 8], [1, 4], [1, 12]]);
        if (values.flags & 1 && r.chance(0.7)) values.dev_id = this.pickId(['DEVICE_arm-smmuv3']);
        if (values.flags & 2 && r.chance(0.7)) values.dev_id = this.pickId(['DEVICE_amd-vi', 'DEVICE_intel-vtd']);
        values.data_type = 0; values.data_len = 0; values.data_uptr = 0n;
        if (r.chance(0.3)) {
          // A nested HWPT: VT-d first stage or an SMMUv3 vSTE in the scratch buffer.
          values.pt_id = this.pickId(r.chance(0.5) ? ['HWPT_NEST_PARENT'] : ['VIOMMU']);
          values.flags &= 12;
          const vtd = r.chance(0.5);
          values.data_type = vtd ? 1 : 2;
          values.data_len = vtd ? 24 : 16;
          values.data_uptr = BigInt(this.scratch);
          const b = new Uint8Array(24);
          const dv = new DataView(b.buffer);
          if (vtd) { dv.setBigUint64(8, BigInt(r.pick(this.live.length ? this.live : [{ va: 0x1000, length: 0 }]).va & ~0xfff) & 0xffff_ffffn, true); dv.setUint32(16, r.pick([48, 48, 57, 39]), true); }
          else dv.setBigUint64(0, r.pick([0n, 1n | (4n << 1n), 1n | (5n << 1n) | 0x10000n, 1n | (0n << 1n)]), true);
          this.host.mem.write(this.scratch, b);
        } else {
          values.pt_id = this.pickId(['IOAS']);
        }
        if (values.flags & 4) values.fault_id = this.pickId(['FAULT']);
        break;
      }
      case 'IOMMU_VIOMMU_ALLOC':
        values.dev_id = this.pickId(['DEVICE_arm-smmuv3']);
        values.hwpt_id = this.pickId(['HWPT_NEST_PARENT']);
        values.flags = 0; values.type = r.chance(0.9) ? 1 : r.below(3); values.data_len = 0; values.data_uptr = 0n;
        break;
      case 'IOMMU_VDEVICE_ALLOC': values.dev_id = this.pickId(['DEVICE_arm-smmuv3']); values.virt_id = BigInt(r.below(8)); break;
      case 'IOMMU_VEVENTQ_ALLOC': values.flags = 0; values.type = r.chance(0.9) ? 1 : r.below(3); break;
      case 'IOMMU_GET_HW_INFO': values.flags = 0; values.data_len = r.pick([0, 32, 64, 128]); values.data_uptr = BigInt(this.scratch); values.in_data_type = 0; break;
      case 'IOMMU_HWPT_GET_DIRTY_BITMAP': {
        const m = known();
        if (m) { values.iova = m.iova; values.length = m.length; }
        values.page_size = 4096n; values.data = BigInt(this.scratch); values.flags = r.below(2);
        break;
      }
      case 'VFIO_DEVICE_BIND_IOMMUFD': values.flags = 0; values.iommufd = this.cur; break;
      case 'VFIO_DEVICE_ATTACH_IOMMUFD_PT': case 'VFIO_DEVICE_DETACH_IOMMUFD_PT':
        values.flags = r.chance(0.25) ? 1 : 0;
        values.pasid = values.flags ? r.int(1, 3) : 0;
        break;
      case 'IOMMU_DESTROY': values.id = this.pickId(r.pick([['IOAS'], ['HWPT'], ['FAULT'], ['VIOMMU'], ['VDEVICE'], ['VEVENTQ'], ['DEVICE']])); break;
      case 'IOMMU_HWPT_SET_DIRTY_TRACKING': values.hwpt_id = this.pickId(['HWPT_DIRTY']); break;
      default: break;
    }
  }

  /** The live objects of the current iommufd that match `pred`. */
  private liveObjs(pred: (o: Any) => boolean): Any[] {
    const ictx = fdTable(this.host).get(this.cur);
    return ictx?.objects ? [...ictx.objects.values()].filter(pred) : [];
  }

  /**
   * Values of the test kernel's mock (its data types, vIOMMU, HW queues,
   * vEVENTQ type) on a host with IOMMU_TEST_CMD, and well-formed VT-d
   * nested HWPTs with `options.nested`, over validValues'.
   */
  private moreValues(desc: IoctlDesc, values: Record<string, Any>): void {
    const r = this.rng;
    if (this.options.nested) {
      if (desc === T.IOMMU_HWPT_ALLOC && values.data_type === 1 && r.chance(0.6)) this.vtdS1Table(values);
      if (desc === T.IOMMU_HWPT_ALLOC && values.flags & 1 && values.data_type === 0 && r.chance(0.3)) values.dev_id = this.pickId(['DEVICE_intel-vtd']);
      if (desc === V.VFIO_DEVICE_ATTACH_IOMMUFD_PT && r.chance(0.25)) {
        // A nested HWPT of the device's own unit.
        const pci = fdTable(this.host).get(this.argFd)?.pci;
        const nested = this.liveObjs((o) => o.type === 'HWPT_NESTED' && o.parent.driver === pci?.driver);
        if (nested.length > 0) values.pt_id = r.pick(nested).id;
      }
    }
    if (!this.test || !r.chance(0.5)) return;
    const dv = (n: number) => { const b = new Uint8Array(n); return { b, dv: new DataView(b.buffer) }; };
    switch (desc.name) {
      case 'IOMMU_HWPT_ALLOC': {
        values.dev_id = this.pickId(['DEVICE_mock']);
        const { b, dv: d } = dv(16);
        if (r.chance(0.4)) {
          // Nested: on a vIOMMU (mock_viommu_alloc_domain_nested) or on a nest parent (EOPNOTSUPP: the mock nests on vIOMMUs only).
          const vs = this.liveObjs((o) => o.type === 'VIOMMU' && o.driver.kind === 'mock');
          values.pt_id = vs.length > 0 && r.chance(0.7) ? r.pick(vs).id : this.pickId(r.chance(0.8) ? ['VIOMMU'] : ['HWPT_NEST_PARENT']);
          values.flags = r.weighted([[6, 0], [1, 8], [1, 4], [1, 1]]);
          values.data_type = r.chance(0.9) ? uapi.IOMMU_HWPT_DATA_SELFTEST : r.below(4);
          values.data_len = r.weighted([[6, 8], [2, 4], [1, 0], [1, 12], [1, 3]]);
          d.setUint32(0, r.chance(0.7) ? uapi.IOMMU_TEST_IOTLB_DEFAULT : r.u32(), true);
        } else {
          values.pt_id = this.pickId(['IOAS']);
          values.flags = r.weighted([[4, 0], [4, 1], [2, 2], [1, 3], [1, 8], [1, 16]]);
          values.data_type = r.chance(0.7) ? 0 : uapi.IOMMU_HWPT_DATA_SELFTEST;
          values.data_len = values.data_type ? r.pick([8, 8, 4, 16]) : 0;
          d.setUint32(4, r.weighted([[6, 0], [1, 1], [1, 2], [1, 7]]), true);
        }
        values.data_uptr = BigInt(this.scratch);
        this.host.mem.write(this.scratch, b);
        if (values.flags & 4) values.fault_id = this.pickId(['FAULT']);
        break;
      }
      case 'IOMMU_VIOMMU_ALLOC': {
        values.dev_id = this.pickId(['DEVICE_mock']);
        values.type = r.chance(0.9) ? uapi.IOMMU_VIOMMU_TYPE_SELFTEST : r.below(3);
        values.data_len = r.weighted([[3, 0], [5, 24], [2, 8], [1, 4], [1, 32]]);
        values.data_uptr = BigInt(r.chance(0.95) ? this.scratch : 0);
        const { b, dv: d } = dv(32);
        d.setUint32(0, r.u32(), true);
        if (r.chance(0.1)) d.setUint32(24, 1, true);
        this.host.mem.write(this.scratch, b);
        break;
      }
      case 'IOMMU_VDEVICE_ALLOC': values.dev_id = this.pickId(['DEVICE_mock']); break;
      case 'IOMMU_VEVENTQ_ALLOC': values.type = r.chance(0.9) ? uapi.IOMMU_VEVENTQ_TYPE_SELFTEST : r.below(3); break;
      case 'IOMMU_GET_HW_INFO':
        values.dev_id = this.pickId(['DEVICE_mock']);
        if (r.chance(0.5)) { values.flags = 1; values.in_data_type = r.chance(0.8) ? uapi.IOMMU_HW_INFO_TYPE_SELFTEST : r.below(3); }
        break;
      case 'IOMMU_HWPT_INVALIDATE': {
        const viommu = r.chance(0.5);
        values.hwpt_id = this.pickId(viommu ? ['VIOMMU'] : ['HWPT']);
        values.data_type = r.chance(0.9) ? 0xdeadbeef : r.pick([0xdadbeef, 0]);
        values.entry_len = r.weighted([[5, viommu ? 12 : 8], [1, 4], [1, 16], [1, viommu ? 8 : 12]]);
        values.entry_num = r.below(4);
        values.data_uptr = BigInt(this.scratch);
        const { b, dv: d } = dv(64);
        for (let i = 0; i < 16; i++) d.setUint32(i * 4, r.chance(0.8) ? r.below(i % 3 === 0 ? 2 : 5) : r.u32(), true);
        this.host.mem.write(this.scratch, b);
        break;
      }
      case 'IOMMU_HW_QUEUE_ALLOC': {
        values.flags = r.chance(0.95) ? 0 : 1;
        values.type = r.chance(0.9) ? uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST : r.below(2);
        values.index = r.weighted([[5, 0], [4, 1], [1, 2]]);
        const v = this.liveObjs((o) => o.type === 'VIOMMU' && o.driver.kind === 'mock');
        const viommu = v.length > 0 && r.chance(0.8) ? r.pick(v) : undefined;
        values.viommu_id = viommu ? viommu.id : this.pickId(['VIOMMU']);
        const areas: Any[] = viommu ? viommu.hwpt.ioas.iopt.areas : [];
        if (areas.length > 0) {
          const a = r.pick(areas);
          values.nesting_parent_iova = a.iova + BigInt(r.below(Math.max(1, Math.floor(a.bytes / PAGE)))) * 4096n + (r.chance(0.2) ? BigInt(r.below(PAGE)) : 0n);
          values.length = BigInt(r.chance(0.8) ? r.int(1, 2) * PAGE : r.int(1, 3 * PAGE));
        }
        break;
      }
      default: break;
    }
  }

  /**
   * A VT-d first-stage table (x86-64 4- or 5-level paging, VT-d 9.7) the
   * fuzzer writes into pages its nest parent's IOAS maps, and the
   * IOMMU_HWPT_DATA_VTD_S1 data pointing at it (its GPA, the parent's IOVA):
   * one path from the root to a last-level table whose few leaves map pages
   * of the parent's areas (a few not present, read-only, without U/S, or
   * outside stage 2). The checker walks the same table.
   */
  private vtdS1Table(values: Record<string, Any>): void {
    const r = this.rng;
    const parents = this.liveObjs((o) => o.type === 'HWPT_PAGING' && o.flags.nestParent && o.driver.kind === 'intel-vtd');
    if (parents.length === 0) return;
    const parent = r.pick(parents);
    values.pt_id = parent.id;
    const devs = this.liveObjs((o) => o.type === 'DEVICE' && o.pci.driver === parent.driver);
    if (devs.length > 0) values.dev_id = r.pick(devs).id;
    const levels = r.chance(0.85) ? 4 : 5;
    const all: Any[] = parent.ioas.iopt.areas;
    const homes = all.filter((a) => a.pages.source.kind === 'user' && (a.perm & 3) === 3 && a.iova % 4096n === 0n
      && (a.pages.base + a.offset) % PAGE === 0 && a.bytes >= levels * PAGE);
    if (homes.length === 0) return;
    const home = r.pick(homes);
    const first = r.below(Math.floor(home.bytes / PAGE) - levels + 1);
    const gpas = Array.from({ length: levels }, (_, i) => home.iova + BigInt((first + i) * PAGE));
    const base = (BigInt(r.int(0, 255)) << 30n) | (BigInt(r.below(512)) << 21n);
    const P = 1n, RW = 2n, US = 4n;
    const tables = gpas.map(() => new Uint8Array(PAGE));
    for (let k = 0; k < levels - 1; k++) {
      const level = levels - k;
      const idx = Number((base >> BigInt(12 + 9 * (level - 1))) & 511n);
      const e = gpas[k + 1] | P | (r.chance(0.95) ? RW : 0n) | (r.chance(0.97) ? US : 0n);
      new DataView(tables[k].buffer).setBigUint64(idx * 8, e, true);
    }
    const pt = new DataView(tables[levels - 1].buffer);
    for (let i = 0; i < 8; i++) {
      const a = r.pick(all);
      let gpa = (a.iova & ~0xfffn) + BigInt(r.below(Math.max(1, Math.floor(a.bytes / PAGE)))) * 4096n;
      if (r.chance(0.05)) gpa = r.pick([1n << 40n, 0n, 0x7fff_f000n]);
      const e = r.chance(0.1) ? 0n : gpa | P | (r.chance(0.85) ? RW : 0n) | (r.chance(0.95) ? US : 0n);
      pt.setBigUint64((Number((base >> 12n) & 511n) + i) % 512 * 8, e, true);
    }
    try {
      for (let k = 0; k < levels; k++) this.host.mem.write(home.pages.base + home.offset + Number(gpas[k] - home.iova), tables[k]);
    } catch (e) {
      if (!(e instanceof SysError)) throw e; // the VA is gone: the table is not where stage 2 looks; the alloc goes on
    }
    const data = uapi.iommu_hwpt_vtd_s1.encode({ flags: 0n, pgtbl_addr: gpas[0] | (r.chance(0.1) ? BigInt(r.below(PAGE)) : 0n), addr_width: levels === 5 ? 57 : 48, __reserved: 0 });
    values.data_type = 1;
    values.data_len = data.length;
    values.data_uptr = BigInt(this.scratch);
    this.host.mem.write(this.scratch, data);
  }

  /** An IOMMU_TEST_CMD access fd: mostly one the process holds. */
  private pickAccessFd(): number {
    return this.accessFds.length > 0 && this.rng.chance(0.9) ? this.rng.pick(this.accessFds) : this.pickFd();
  }

  /** A mapping of the current iommufd (with the VA it came from, when it has one). */
  private pickMap(ioas?: Any): { iova: bigint; length: bigint; va?: number } | undefined {
    const r = this.rng;
    if (ioas && ioas.iopt.areas.length > 0 && r.chance(0.6)) {
      const a = r.pick(ioas.iopt.areas as Any[]);
      return { iova: a.iova, length: BigInt(a.bytes), va: a.pages.source.kind === 'user' ? a.pages.base + a.offset : undefined };
    }
    const mine = this.maps.filter((m) => m.fd === this.cur);
    return mine.length > 0 ? r.pick(mine) : undefined;
  }

  /**
   * IOMMU_TEST_CMD (selftest.c iommufd_test): an op among those of
   * IOMMU_TEST_CMD_OPS (and unknown ones), its union member filled with
   * plausible values (ids and fds of the right kind, IOVAs mapped, user
   * pointers into memory the fuzzer holds), and in 45 % of calls a mutation.
   */
  private testCmd(): string | undefined {
    const r = this.rng;
    const fd = r.chance(0.95) && this.iommufds.length > 0 ? (r.chance(0.8) ? this.iommufds[0] : r.pick(this.iommufds)) : this.pickFd();
    this.cur = fd;
    if (r.chance(0.2)) this.fillScratch();
    let [opNum, name, member] = r.weighted(TEST_OPS.map(([n, nm, m, w]) => [w, [n, nm, m] as [number, string, string]] as const));
    if (r.chance(0.03)) { opNum = r.pick([0, 25, 0x100, r.u32()]); name = `UNKNOWN_OP_${opNum >>> 0}`; }
    const O = uapi.IOMMU_TEST_CMD_OPS as Record<string, Any>;
    const st = O[member];
    const u: Record<string, Any> = {};
    const ids = (k: string[]) => this.pickId(k);
    const accessOp = member === 'access_pages' || member === 'access_rw' || member === 'destroy_access_pages' || member === 'access_replace_ioas';
    const accessFd = accessOp ? this.pickAccessFd() : -1;
    const accessObj = () => fdTable(this.host).get(accessFd)?.access as Any;
    /** Mostly a live object of the current iommufd that `pred` wants, else an id of `kinds`. */
    const liveId = (pred: (o: Any) => boolean, kinds: string[]): Any => {
      const l = r.chance(0.75) ? this.liveObjs(pred) : [];
      return l.length > 0 ? r.pick(l) : { id: ids(kinds) };
    };
    const mockPaging = member === 'check_map' || member === 'dirty'
      ? liveId((o) => o.type === 'HWPT_PAGING' && o.driver.kind === 'mock' && (member !== 'dirty' || r.chance(0.3) || o.flags.dirtyTracking), ['HWPT']) : undefined;
    const stdev = ['mock_domain_replace', 'pasid_attach', 'pasid_replace', 'pasid_detach', 'pasid_check'].includes(member)
      ? liveId((o) => o.type === 'SELFTEST' && (!member.startsWith('pasid') || o.pci.options.pasidBits > 0 || r.chance(0.2)), ['SELFTEST']) : undefined;
    const pasid = () => r.weighted([[6, r.int(1, 3)], [1, 0], [2, 1024], [1, 1 << 20], [1, r.u32()]]);
    switch (member) {
      case 'add_reserved': {
        const m = this.pickMap();
        u.start = m && r.chance(0.5) ? m.iova : r.chance(0.5) ? BigInt(uapi.MOCK_APERTURE_START) + BigInt(r.below(4096)) * 4096n : this.pickIova();
        u.length = r.chance(0.7) ? BigInt(r.int(1, 16) * PAGE) : this.pickLen();
        break;
      }
      case 'mock_domain': case 'mock_domain_flags':
        if (member === 'mock_domain_flags') u.dev_flags = r.weighted([[4, 0], [2, 1], [3, 4], [1, 5], [1, 2], [1, r.u32()]]);
        break;
      case 'mock_domain_replace': u.pt_id = ids(r.chance(0.4) ? ['IOAS'] : ['HWPT']); break;
      case 'check_map': case 'access_pages': case 'access_rw': case 'dirty': {
        const a = member === 'access_pages' || member === 'access_rw' ? accessObj() : undefined;
        const m = this.pickMap(a?.ioas ?? mockPaging?.ioas ?? undefined);
        const half = r.chance(0.1) ? 2048n : 0n;
        u.iova = m ? m.iova + half : this.pickIova();
        u.length = m ? (r.chance(0.6) ? m.length - half : BigInt(r.int(1, Math.min(4096, Math.max(1, Number(m.length / 2048n))))) * 2048n) : this.pickLen();
        u.uptr = Number.isSafeInteger(m?.va) && r.chance(0.8) ? BigInt(m!.va!) + half : this.pickPtr();
        if (member === 'access_pages') {
          u.flags = r.weighted([[5, 0], [4, 1], [1, 0x10000], [1, 0x10001], [1, r.u32()]]);
          if (u.flags & 0x10000) u.iova = BigInt(r.below(4)) | (BigInt(r.below(4) * PAGE) << 32n);
          if (r.chance(0.3)) u.uptr = 0n;
          if (u.length > 64n * 4096n && r.chance(0.8)) u.length = BigInt(r.int(1, 8) * PAGE);
        }
        if (member === 'access_rw') {
          u.flags = r.weighted([[4, 0], [4, 1], [2, 4], [2, 5], [1, 0x10000], [1, r.u32()]]);
          u.iova = (m ? m.iova : this.pickIova()) + BigInt(r.below(PAGE));
          u.length = BigInt(r.chance(0.8) ? r.int(1, 2 * PAGE) : r.pick([0, 3 * PAGE, 17 << 20]));
          u.uptr = BigInt(this.scratch + r.below(PAGE));
          if (u.flags & 0x10000) u.iova = BigInt(r.below(4)) | (BigInt(r.below(PAGE)) << 32n);
        }
        if (member === 'dirty') {
          u.flags = 0;
          u.page_size = BigInt(r.weighted([[4, 2048], [4, 4096], [1, 0], [1, 1 << 20], [1, 3000]]));
          if (u.page_size > 0n) { u.iova -= u.iova % u.page_size; u.length -= u.length % u.page_size; }
          if (u.length > 4096n * 8n * BigInt(PAGE)) u.length = 64n * u.page_size;
          u.uptr = r.chance(0.95) ? BigInt(this.scratch) : 0n;
          const bits = new Uint8Array(256).map(() => (r.chance(0.5) ? r.below(256) : 0));
          this.host.mem.write(this.scratch, bits);
        }
        break;
      }
      case 'check_refs': {
        const g = this.live.length > 0 && r.chance(0.9) ? r.pick(this.live) : { va: this.scratch, length: 4 * PAGE };
        const off = r.below(g.length / PAGE) * PAGE;
        u.uptr = BigInt(g.va + off) + (r.chance(0.05) ? 2048n : 0n);
        u.length = BigInt(PAGE * r.int(1, Math.max(1, (g.length - off) / PAGE)));
        u.refs = r.weighted([[4, 0], [4, 1], [2, 2], [1, 3]]);
        break;
      }
      case 'create_access': u.flags = r.weighted([[2, 0], [6, 1], [1, 2], [1, r.u32()]]); break;
      case 'destroy_access_pages': u.access_pages_id = this.accessItems.length > 0 && r.chance(0.8) ? r.pick(this.accessItems) : r.below(8); break;
      case 'memory_limit': u.limit = r.pick([0, 11, 12, 16, 4096, 65536, r.u32()]); break;
      case 'access_replace_ioas': u.ioas_id = ids(['IOAS']); break;
      case 'check_iotlb': u.id = r.weighted([[5, r.below(4)], [1, 4], [1, r.u32()]]); u.iotlb = r.pick([uapi.IOMMU_TEST_IOTLB_DEFAULT, 0, r.u32()]); break;
      case 'trigger_iopf':
        u.dev_id = ids(['DEVICE_mock', 'DEVICE']); u.pasid = r.chance(0.5) ? 0 : pasid(); u.grpid = r.below(4); u.perm = r.pick([1, 2, 3]);
        u.addr = r.chance(0.8) ? 0xdeadbeafn : this.pickIova();
        break;
      case 'check_dev_cache': u.id = r.weighted([[5, r.below(4)], [1, 4]]); u.cache = r.pick([uapi.IOMMU_TEST_DEV_CACHE_DEFAULT, 0, r.u32()]); break;
      case 'trigger_vevent': u.dev_id = ids(['DEVICE_mock', 'DEVICE']); break;
      case 'pasid_attach': case 'pasid_replace':
        u.pasid = pasid();
        u.pt_id = r.chance(0.3) ? ids(['IOAS']) : liveId((o) => (o.type === 'HWPT_PAGING' || o.type === 'HWPT_NESTED') && o.driver.kind === 'mock' && o.flags.pasidCompat, ['HWPT']).id;
        break;
      case 'pasid_detach': u.pasid = pasid(); break;
      case 'pasid_check': u.pasid = pasid(); u.hwpt_id = r.chance(0.3) ? 0 : ids(['HWPT']); break;
      default: // the dma-buf ops: no dma-buf here
        for (const f of st.fields as Any[]) if (f.name.startsWith(`${member}.`) && !f.isArray) u[f.name.slice(member.length + 1)] = f.type === 'u64' ? r.bigint(0n, 1n << 20n) : r.below(1 << 16);
    }
    let id: number;
    switch (member) {
      case 'add_reserved': case 'create_access': id = ids(['IOAS']); break;
      case 'mock_domain': case 'mock_domain_flags': id = ids(r.chance(0.7) ? ['IOAS'] : ['HWPT']); break;
      case 'mock_domain_replace': case 'pasid_attach': case 'pasid_replace': case 'pasid_detach': case 'pasid_check': id = stdev.id; break;
      case 'check_map': case 'dirty': id = mockPaging.id; break;
      case 'check_iotlb': id = liveId((o) => o.type === 'HWPT_NESTED' && o.domain, ['HWPT']).id; break;
      case 'check_dev_cache': id = ids(['DEVICE_mock', 'DEVICE']); break;
      case 'access_pages': case 'access_rw': case 'destroy_access_pages': case 'access_replace_ioas': id = accessFd; break;
      default: id = r.chance(0.5) ? 0 : ids([]);
    }
    const values: Record<string, Any> = { op: opNum >>> 0, id: id >>> 0, __reserved: 0, last: 0 };
    for (const [k, v] of Object.entries(u)) {
      const f = (st.fields as Any[]).find((x) => x.name === `${member}.${k}`);
      if (!f) continue;
      values[f.name] = f.type === 'u64' ? BigInt.asUintN(64, BigInt(v)) : fit(f.type, Number(BigInt.asUintN(32, BigInt(v))));
    }
    // Mutations, as buildArg makes them.
    const sz = st.size as number;
    const minSize = uapi.IOMMUFD_TEST_IOCTL.minSize;
    let size = sz, extra = 0, bufLen = -1, flips = 0, tailJunk = false;
    if (r.chance(0.45)) {
      const scalar = (st.fields as Any[]).filter((f) => !f.isArray && f.name !== 'size');
      switch (r.below(7)) {
        case 0: case 1: {
          const f = r.pick(scalar);
          const x = r.pick([0n, 1n, 0xffffn, 0x7fff_ffffn, 0xffff_ffffn, 0x1_0000_0000n, BigInt(Number.MAX_SAFE_INTEGER), ULONG_MAX, ULONG_MAX - 0xfffn, r.bigint(0n, 1n << 64n)]);
          values[f.name] = f.type === 'u64' ? x : fit(f.type, Number(x & 0xffff_ffffn));
          break;
        }
        case 2: size = r.chance(0.5) ? r.below(minSize) : r.int(minSize, sz); break;
        case 3: extra = r.int(1, 16) * 8; size = sz + extra; tailJunk = r.chance(0.5); break;
        case 4: size = r.u32(); break;
        case 5: bufLen = r.below(sz); break;
        default: flips = r.int(1, 3);
      }
    }
    values.size = size;
    const full = new Uint8Array(sz + extra);
    st.encode(values, full);
    if (tailJunk) full[sz + r.below(extra)] = r.int(1, 255);
    for (let k = 0; k < flips; k++) full[r.below(sz)] ^= 1 << r.below(8);
    const arg = bufLen >= 0 ? full.slice(0, bufLen) : full;
    const shown = Object.entries(u).map(([k, v]) => `${k}=${typeof v === 'bigint' ? '0x' + v.toString(16) : v}`).join(' ');
    return this.run(`TEST_${name.startsWith('UNKNOWN') ? 'UNKNOWN_OP' : name} op=${opNum >>> 0} fd=${fd} id=${id >>> 0} ${shown}${arg.length !== sz || size !== sz || flips ? ` (size ${size}, ${arg.length} bytes${flips ? `, ${flips} bits flipped` : ''})` : ''}`, () => {
      this.host.ioctl(fd, uapi.IOMMUFD_TEST_IOCTL.request, arg);
      if (arg.length >= sz) this.harvestTest(member, st.decode(arg));
    }, false, arg);
  }

  /** Record what a successful IOMMU_TEST_CMD handed out. */
  private harvestTest(member: string, out: Record<string, Any>): void {
    const pool = (t: string, id: number) => {
      if (!(id > 0)) return;
      const key = `${this.cur}:${t}`;
      let l = this.typed.get(key);
      if (!l) this.typed.set(key, (l = []));
      l.push(id);
      if (l.length > 16) l.shift();
      this.ids.push(id);
    };
    if (member === 'mock_domain' || member === 'mock_domain_flags') {
      pool('SELFTEST', out[`${member}.out_stdev_id`]);
      pool('HWPT', out[`${member}.out_hwpt_id`]);
      pool('DEVICE', out[`${member}.out_idev_id`]);
      pool('DEVICE_mock', out[`${member}.out_idev_id`]);
    }
    if (member === 'mock_domain_replace' || member === 'pasid_attach' || member === 'pasid_replace') pool('HWPT', out[`${member}.pt_id`]);
    if (member === 'access_pages') {
      this.accessItems.push(out['access_pages.out_access_pages_id']);
      if (this.accessItems.length > 16) this.accessItems.shift();
    }
    if (this.ids.length > 64) this.ids.splice(0, this.ids.length - 64);
  }

  /** The argument bytes of an ioctl: a well-formed struct, and in 45 % of calls one mutation of it. */
  private buildArg(desc: IoctlDesc, sizeField: 'size' | 'argsz'): Uint8Array {
    const r = this.rng;
    const values: Record<string, Any> = {};
    const mutate = r.chance(0.45);
    for (const f of desc.struct.fields) {
      if (f.name === sizeField) continue;
      if (f.isArray) { values[f.name] = Array.from({ length: f.count }, () => 0); continue; }
      const big = f.type === 'u64' || f.type === 'le64';
      values[f.name] = f.name.startsWith('__reserved') || f.name === 'pad' || f.name.startsWith('out_') ? (big ? 0n : 0) : this.fieldValue(desc, f.name, f.type, false);
    }
    this.validValues(desc, values);
    if (this.test || this.options.nested) this.moreValues(desc, values);
    const sz = desc.struct.size;
    let size = sz, extra = 0, tailJunk = false, bufLen = -1, flips = 0;
    if (mutate) {
      const fields = desc.struct.fields.filter((f) => f.name !== sizeField);
      switch (r.below(8)) {
        case 0: { // one field hostile
          const f = r.pick(fields);
          if (f.isArray) values[f.name] = values[f.name].map(() => r.below(256));
          else values[f.name] = this.fieldValue(desc, f.name, f.type, true);
          break;
        }
        case 1: { // two fields hostile
          for (let k = 0; k < 2; k++) {
            const f = r.pick(fields);
            if (!f.isArray) values[f.name] = this.fieldValue(desc, f.name, f.type, true);
          }
          break;
        }
        case 2: size = r.chance(0.5) ? r.below(desc.minSize) : r.int(desc.minSize, sz); break;
        case 3: extra = r.int(1, 16) * 8; size = sz + extra; tailJunk = r.chance(0.5); break;
        case 4: size = r.u32(); break;
        case 5: bufLen = r.below(sz); break;
        case 6: flips = r.int(1, 3); break;
        default: { // a reserved or output field non-zero
          const f = r.pick(fields);
          if (!f.isArray) values[f.name] = f.type === 'u64' || f.type === 'le64' ? BigInt(r.u32()) : r.int(1, 255);
        }
      }
    }
    values[sizeField] = size;
    const full = new Uint8Array(sz + extra);
    desc.struct.encode(values as Any, full);
    if (tailJunk) full[sz + r.below(extra)] = r.int(1, 255);
    for (let k = 0; k < flips; k++) full[r.below(sz)] ^= 1 << r.below(8);
    return bufLen >= 0 ? full.slice(0, bufLen) : full;
  }

  private note(op: string, ok: boolean, errno?: string): void {
    const s = this.stats;
    s.calls++;
    if (ok) s.ok++;
    else if (errno) s.errnos.set(errno, (s.errnos.get(errno) ?? 0) + 1);
    let b = s.byOp.get(op);
    if (!b) s.byOp.set(op, (b = { calls: 0, ok: 0, errnos: {} }));
    if (errno) b.errnos[errno] = (b.errnos[errno] ?? 0) + 1;
    b.calls++;
    if (ok) b.ok++;
  }

  /** Record what a successful ioctl handed out (ids, fds, IOVAs). */
  private harvest(desc: IoctlDesc, out: Record<string, Any>): void {
    const kind: Record<string, string> = {
      out_ioas_id: 'IOAS', out_hwpt_id: 'HWPT', out_devid: 'DEVICE', out_fault_id: 'FAULT', out_viommu_id: 'VIOMMU',
      out_vdevice_id: 'VDEVICE', out_veventq_id: 'VEVENTQ', out_hw_queue_id: 'HW_QUEUE',
    };
    for (const [k, val] of Object.entries(out)) {
      const t = kind[k] ?? (k === 'pt_id' && desc === V.VFIO_DEVICE_ATTACH_IOMMUFD_PT ? 'HWPT' : undefined);
      if (t && typeof val === 'number' && val > 0) {
        const key = `${this.cur}:${t}`;
        let l = this.typed.get(key);
        if (!l) this.typed.set(key, (l = []));
        l.push(val);
        if (l.length > 16) l.shift();
      }
      if (k.startsWith('out_') && k.endsWith('_id') && typeof val === 'number' && val > 0) this.ids.push(val);
      if (k === 'out_devid' && val > 0) this.ids.push(val);
    }
    const pool = (t: string, id: number) => {
      const key = `${this.cur}:${t}`;
      let l = this.typed.get(key);
      if (!l) this.typed.set(key, (l = []));
      l.push(id);
      if (l.length > 16) l.shift();
    };
    if (desc === T.IOMMU_HWPT_ALLOC && out.out_hwpt_id > 0) {
      if (out.flags & 1) pool('HWPT_NEST_PARENT', out.out_hwpt_id);
      if (out.flags & 2) pool('HWPT_DIRTY', out.out_hwpt_id);
    }
    if (desc === V.VFIO_DEVICE_BIND_IOMMUFD && out.out_devid > 0 && this.bindingPath) {
      const kind = this.host && pciFunctions(this.host).find((p) => p.path === this.bindingPath)?.driver.kind;
      if (kind) pool(`DEVICE_${kind}`, out.out_devid);
    }
    const mapped = (ioas: number, iova: bigint, length: bigint) => {
      this.iovas.push({ iova, length });
      this.maps.push({ fd: this.cur, ioas, iova, length });
      if (this.maps.length > 32) this.maps.shift();
    };
    if (desc === T.IOMMU_IOAS_MAP || desc === T.IOMMU_IOAS_MAP_FILE) mapped(out.ioas_id, out.iova, out.length);
    if (desc === T.IOMMU_IOAS_MAP) this.maps[this.maps.length - 1].va = Number(out.user_va);
    if (desc === T.IOMMU_IOAS_COPY) mapped(out.dst_ioas_id, out.dst_iova, out.length);
    if (this.ids.length > 64) this.ids.splice(0, this.ids.length - 64);
    if (this.iovas.length > 64) this.iovas.splice(0, this.iovas.length - 64);
  }

  /**
   * One random call. Returns a finding (a string) when the call threw what
   * it may not; undefined otherwise.
   */
  step(): string | undefined {
    const r = this.rng;
    this.sync();
    const arms: [number, () => string | undefined][] = [
      [60, () => this.iommufdIoctl()],
      [16, () => this.vfioIoctl()],
      [4, () => this.strayIoctl()],
      [6, () => this.memOp()],
      [5, () => this.eventOp()],
      [5, () => this.dmaOp()],
      [2, () => this.fdOp()],
      [1, () => this.memfdOp()],
    ];
    if (this.test) arms.push([24, () => this.testCmd()]);
    const what = r.weighted<() => string | undefined>(arms);
    return what();
  }

  /** The fd lists from the fd table as it is (fd numbers are reused; the table is the truth). */
  private sync(): void {
    const kinds = new Map<number, string>();
    for (const [fd, f] of fdTable(this.host)) kinds.set(fd, f.constructor?.name ?? '');
    const keep = (list: number[], kind: (k: string) => boolean) => {
      const fresh = list.filter((fd) => kind(kinds.get(fd) ?? ''));
      for (const [fd, k] of kinds) if (kind(k) && !fresh.includes(fd)) fresh.push(fd);
      list.splice(0, list.length, ...fresh);
    };
    keep(this.iommufds, (k) => k === 'IommufdFile');
    keep(this.devFds, (k) => k === 'VfioDeviceFile');
    keep(this.memfds, (k) => k === 'MemFile');
    keep(this.eventFds, (k) => k === 'FaultFile' || k === 'VeventqFile' || k === 'AccessFile');
    keep(this.accessFds, (k) => k === 'AccessFile');
    if (this.iommufds.length === 0) this.iommufds.push(this.host.open('/dev/iommu'));
  }

  /**
   * Run `fn` as call `op`; the finding if it threw what it may not. `out`
   * is the call's argument, whose bytes after the call go into `outcome`.
   */
  private run(op: string, fn: () => void, dmaAllowed = false, out?: Uint8Array): string | undefined {
    this.last = op;
    this.history.push(op);
    if (this.history.length > 20) this.history.shift();
    try {
      fn();
      this.note(op.split(' ')[0], true);
      this.outcome = out ? `ok ${bytesHash(out)}` : 'ok';
      return undefined;
    } catch (e) {
      const bad = badThrow(e, dmaAllowed);
      this.outcome = e instanceof SysError ? e.code : e instanceof DmaFault ? `DmaFault ${e.status} ${e.iova}` : String(e);
      this.note(op.split(' ')[0], false, e instanceof SysError ? e.code : e instanceof DmaFault ? 'DmaFault' : 'other');
      return bad === undefined ? undefined : `${op}: ${bad}`;
    }
  }

  private iommufdIoctl(): string | undefined {
    const r = this.rng;
    const desc = r.weighted(IOMMU_DESCS.map((d) => [WEIGHT[d.name] ?? 1, d] as const));
    const fd = r.chance(0.95) && this.iommufds.length > 0 ? (r.chance(0.8) ? this.iommufds[0] : r.pick(this.iommufds)) : this.pickFd();
    this.cur = fd;
    if (r.chance(0.3)) this.fillScratch();
    const arg = this.buildArg(desc, 'size');
    const shown = describe(desc, arg);
    return this.run(`${desc.name} fd=${fd} ${shown}`, () => {
      this.host.ioctl(fd, desc.request, arg);
      if (arg.length >= desc.struct.size) this.harvest(desc, desc.struct.decode(arg));
    }, false, arg);
  }

  private vfioIoctl(): string | undefined {
    const r = this.rng;
    const desc = r.chance(0.95) ? r.weighted(VFIO_DESCS.map((d) => [WEIGHT[d.name] ?? 1, d] as const)) : r.pick(OTHER_VFIO);
    const bound = this.devFds.filter((f) => fdTable(this.host).get(f)?.device);
    const fd = desc !== V.VFIO_DEVICE_BIND_IOMMUFD && bound.length > 0 && r.chance(0.8) ? r.pick(bound)
      : r.chance(0.95) && this.devFds.length > 0 ? r.pick(this.devFds) : this.pickFd();
    this.cur = desc === V.VFIO_DEVICE_BIND_IOMMUFD ? (r.chance(0.85) ? this.iommufds[0] : r.pick(this.iommufds)) : this.boundTo.get(fd) ?? this.iommufds[0];
    this.argFd = fd;
    const arg = this.buildArg(desc, 'argsz');
    this.bindingPath = fdTable(this.host).get(fd)?.pci?.path;
    const shown = describe(desc, arg);
    return this.run(`${desc.name} fd=${fd} ${shown}`, () => {
      this.host.ioctl(fd, desc.request, arg);
      if (desc === V.VFIO_DEVICE_BIND_IOMMUFD) this.boundTo.set(fd, new DataView(arg.buffer).getInt32(8, true));
      if (arg.length >= desc.struct.size) this.harvest(desc, desc.struct.decode(arg));
    }, false, arg);
  }

  /** Requests outside the table, wrong types and directions, ioctls on the wrong kind of file. */
  private strayIoctl(): string | undefined {
    const r = this.rng;
    const fd = this.pickFd();
    let request: number;
    const roll = r.below(4);
    if (roll === 0) request = (0x3b << 8) | r.int(0x70, 0xa8);
    else if (roll === 1) request = r.pick([...IOMMU_DESCS, ...OTHER_VFIO]).request;
    else if (roll === 2) request = r.pick([...IOMMU_DESCS, ...OTHER_VFIO]).request ^ (1 << r.below(32));
    else request = r.u32() | 0;
    const arg = new Uint8Array(r.pick([0, 3, 4, 8, 16, 48, 64]));
    for (let i = 0; i < arg.length; i++) arg[i] = r.chance(0.5) ? 0 : r.below(256);
    if (arg.length >= 4 && r.chance(0.5)) new DataView(arg.buffer).setUint32(0, arg.length, true);
    return this.run(`ioctl fd=${fd} req=0x${(request >>> 0).toString(16)} len=${arg.length}`, () => { this.host.ioctl(fd, request, arg); });
  }

  /** mmap / munmap / user memory writes. */
  private memOp(): string | undefined {
    const r = this.rng;
    const roll = r.below(10);
    if (roll < 4 && this.mapped < this.maxMapped) {
      const len = r.chance(0.15) ? 2 << 20 : r.int(1, 16) * PAGE;
      const prot = r.chance(0.85) ? 3 : r.pick([0, 1, 2, 7]);
      return this.run(`mmap len=${len} prot=${prot}`, () => {
        const va = this.host.mmap(len, prot);
        this.live.push({ va, length: len });
        this.mapped += len;
        if (prot & 2) this.host.mem.write(va, new Uint8Array([r.below(256), r.below(256), r.below(256)]));
      });
    }
    if (roll < 7 && this.live.length > 0) {
      const i = r.below(this.live.length);
      const g = this.live[i];
      const whole = r.chance(0.6);
      const off = whole ? 0 : r.below(g.length / PAGE) * PAGE;
      const len = whole ? g.length : PAGE * r.int(1, Math.max(1, (g.length - off) / PAGE));
      return this.run(`munmap va=0x${(g.va + off).toString(16)} len=${len}`, () => {
        this.host.munmap(g.va + off, len);
        if (whole || (off === 0 && len >= g.length)) { this.live.splice(i, 1); this.mapped -= g.length; }
        else {
          // Keep the pieces as regions.
          this.live.splice(i, 1);
          this.mapped -= g.length;
          if (off > 0) { this.live.push({ va: g.va, length: off }); this.mapped += off; }
          const tail = g.length - off - len;
          if (tail > 0) { this.live.push({ va: g.va + off + len, length: tail }); this.mapped += tail; }
        }
        this.dead.push({ va: g.va + off, length: len });
        if (this.dead.length > 16) this.dead.shift();
      });
    }
    if (this.live.length === 0) return undefined;
    const g = r.pick(this.live);
    const off = r.below(g.length);
    const bytes = new Uint8Array(Math.min(r.int(1, 64), g.length - off)).map(() => r.below(256));
    return this.run(`mem.write va=0x${(g.va + off).toString(16)} n=${bytes.length}`, () => this.host.mem.write(g.va + off, bytes));
  }

  /** memfd_create, ftruncate, mmap of a memfd or of /dev/iommu. */
  private memfdOp(): string | undefined {
    const r = this.rng;
    const roll = r.below(4);
    if (roll === 0 && this.memfds.length < 4) return this.run('memfd_create', () => { this.memfds.push(this.host.memfdCreate('fuzz')); });
    if (roll === 1) {
      const fd = r.chance(0.9) && this.memfds.length > 0 ? r.pick(this.memfds) : this.pickFd();
      const len = r.chance(0.9) ? r.below(32) * PAGE + (r.chance(0.2) ? r.below(PAGE) : 0) : r.pick([-1, 2 ** 53, 1.5]);
      return this.run(`ftruncate fd=${fd} len=${len}`, () => this.host.ftruncate(fd, len));
    }
    if (this.mapped >= this.maxMapped) return undefined;
    const fd = r.chance(0.8) && this.memfds.length > 0 ? r.pick(this.memfds) : this.pickFd();
    const len = r.int(1, 8) * PAGE;
    const flags = r.pick([1, 2, 3, 0, 0x21]);
    const off = r.chance(0.9) ? r.below(8) * PAGE : r.below(1 << 16);
    return this.run(`mmap fd=${fd} len=${len} flags=${flags} off=${off}`, () => {
      const va = this.host.mmap(len, 3, flags, fd, off);
      this.live.push({ va, length: len });
      this.mapped += len;
    });
  }

  /** read / write / poll on fault and vEVENTQ fds (and others). */
  private eventOp(): string | undefined {
    const r = this.rng;
    const fd = r.chance(0.8) && this.eventFds.length > 0 ? r.pick(this.eventFds) : this.pickFd();
    const roll = r.below(3);
    if (roll === 0) return this.run(`poll fd=${fd}`, () => { this.host.poll(fd, r.pick([1, 4, 5, 0xffff])); });
    if (roll === 1) {
      const buf = new Uint8Array(r.pick([0, 1, 8, 16, 32, 48, 64, 96, 128, 1024]));
      return this.run(`read fd=${fd} n=${buf.length}`, () => {
        const n = this.host.read(fd, buf);
        // struct iommu_hwpt_pgfault is 64 bytes; its cookie at offset 28.
        for (let at = 0; at + 64 <= n; at += 64) this.cookies.push(new DataView(buf.buffer).getUint32(at + 28, true));
        if (this.cookies.length > 32) this.cookies.splice(0, this.cookies.length - 32);
      }, false, buf);
    }
    // write: page responses (struct iommu_hwpt_page_response: cookie, code), sometimes garbage.
    const n = r.pick([0, 4, 8, 16, 24, 7]);
    const buf = new Uint8Array(n);
    const dv = new DataView(buf.buffer);
    for (let at = 0; at + 8 <= n; at += 8) {
      dv.setUint32(at, this.cookies.length > 0 && r.chance(0.8) ? r.pick(this.cookies) : r.below(8), true);
      dv.setUint32(at + 4, r.chance(0.9) ? r.below(2) : r.u32(), true);
    }
    return this.run(`write fd=${fd} n=${n}`, () => { this.host.write(fd, buf); });
  }

  /** A device's DMA, or a page request: only DmaFault may come out. */
  private dmaOp(): string | undefined {
    const r = this.rng;
    let fns = pciFunctions(this.host);
    // With the test kernel, the mock devices too (in path order: a restored host lists its functions in another order).
    if (this.test) fns = [...new Set([...fns, ...allObjects(this.host).filter(({ obj }) => obj.type === 'DEVICE').map(({ obj }) => obj.pci)])].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
    if (fns.length === 0) return undefined;
    const pci = r.pick(fns);
    // Mostly an IOVA its attachment maps (read from the inside), else anything.
    let pasid = r.chance(0.8) ? 0 : r.below(4);
    let iova = this.pickIova();
    let n = r.pick([1, 8, 64, 4096, 8192]);
    const idev = allObjects(this.host).find(({ obj }) => obj.type === 'DEVICE' && obj.pci === pci)?.obj;
    if (idev && idev.attached.size > 0 && r.chance(0.8)) {
      const [p, h] = r.pick([...(idev.attached as Map<number, Any>)]);
      const areas: Any[] = h.type === 'HWPT_PAGING' ? h.ioas.iopt.areas : [];
      if (areas.length > 0) {
        const a = r.pick(areas);
        pasid = p;
        iova = a.iova + r.bigint(0n, BigInt(a.bytes));
        if (r.chance(0.8)) n = Math.max(1, Math.min(n, Number(a.last - iova + 1n)));
      }
    }
    if (iova > ULONG_MAX) iova = ULONG_MAX; // the Dma API takes u64 IOVAs (RangeError beyond: a caller's bug, not a device's)
    if (r.chance(0.1) && pci.options.pri) {
      return this.run(`pri.request ${pci.path} addr=0x${iova.toString(16)}`, () => {
        const addr = Number(iova & 0xffff_ffff_f000n);
        pci.pri.request({ addr, perm: r.pick([1, 2, 3]), pasid: pasid || undefined, grpid: r.below(4), last: r.chance(0.7) }).catch(() => {});
      });
    }
    if (r.chance(0.5)) {
      const out = new Uint8Array(n);
      return this.run(`dma.read ${pci.path} iova=0x${iova.toString(16)} n=${n} pasid=${pasid}`, () => { out.set(pci.dma.read(iova, n, { pasid })); }, true, out);
    }
    const bytes = new Uint8Array(n).fill(r.below(256));
    return this.run(`dma.write ${pci.path} iova=0x${iova.toString(16)} n=${n} pasid=${pasid}`, () => { pci.dma.write(iova, bytes, { pasid }); }, true);
  }

  /** open / close of every kind of fd, and calls on closed fds. */
  private fdOp(): string | undefined {
    const r = this.rng;
    const roll = r.below(6);
    if (roll === 0 && this.iommufds.length < 3) return this.run('open /dev/iommu', () => { this.iommufds.push(this.host.open('/dev/iommu')); });
    if ((roll === 1 || this.devFds.length < this.devPaths.length) && this.devPaths.length > 0 && this.devFds.length < 10) return this.run('open vfio', () => { this.devFds.push(this.host.open(r.pick(this.devPaths))); });
    // The first iommufd (where most calls go) is closed rarely.
    const lists = [this.iommufds, this.devFds, this.memfds, this.eventFds].filter((l) => l.length > (l === this.iommufds && r.chance(0.9) ? 1 : 0));
    if (lists.length === 0) return undefined;
    const list = r.pick(lists);
    const i = list === this.iommufds && list.length > 1 ? r.int(1, list.length - 1) : r.below(list.length);
    const fd = list[i];
    return this.run(`close fd=${fd}`, () => {
      this.deadFds.push(fd);
      if (this.deadFds.length > 8) this.deadFds.shift();
      this.host.close(fd);
    });
  }
}

/** Whether an object is of a kind the fuzzer names ('HWPT', 'HWPT_NEST_PARENT', 'DEVICE_arm-smmuv3', ...). */
function matchKind(o: Any, k: string): boolean {
  switch (k) {
    case 'HWPT': return o.type === 'HWPT_PAGING' || o.type === 'HWPT_NESTED';
    case 'HWPT_NEST_PARENT': return o.type === 'HWPT_PAGING' && o.flags.nestParent;
    case 'HWPT_DIRTY': return o.type === 'HWPT_PAGING' && o.flags.dirtyTracking;
    default:
      if (k.startsWith('DEVICE_')) return o.type === 'DEVICE' && o.pci.driver.kind === k.slice(7);
      return o.type === k;
  }
}

/** A 32-bit pattern as a value of a narrower or signed field. */
function fit(type: string, x: number): number {
  if (type === 's32') return x | 0;
  if (type === 'u16') return x & 0xffff;
  if (type === 'u8') return x & 0xff;
  return x >>> 0;
}

/** A short text of an ioctl argument's fields, for the call log. */
/** FNV-1a of bytes, for comparing what two calls wrote. */
function bytesHash(b: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return (h >>> 0).toString(16);
}

function describe(desc: IoctlDesc, arg: Uint8Array): string {
  if (arg.length < desc.struct.size) return `(short buffer ${arg.length})`;
  const d = desc.struct.decode(arg) as Record<string, Any>;
  return Object.entries(d)
    .filter(([k, val]) => !(Array.isArray(val)) && !k.startsWith('__reserved') && !(k.startsWith('out_') && !val))
    .map(([k, val]) => `${k}=${typeof val === 'bigint' ? '0x' + val.toString(16) : val}`)
    .join(' ');
}
