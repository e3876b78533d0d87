// The process address space: user VAs mapped to physical pages at 4 KiB
// granularity, as a process's page tables would map them (DESIGN 2).
// The kernel's page size (HostOptions.pageSize: 4, 16 or 64 KiB, as arm64
// kernels are built) is the unit of mmap and munmap: lengths round up to
// it, VAs and file offsets are aligned to it, and each page is one
// physically contiguous run of 4 KiB frames aligned to its size, so an
// IOMMU domain of that granule can map it with one leaf.
//
// - Anonymous mmap gets its frames at once, physically contiguous where the
//   allocator can (a 2 MiB-aligned run for mappings of 2 MiB or more, whose
//   VA is 2 MiB-aligned too, as Linux aligns THP-sized anonymous mappings),
//   so that large IOPTEs apply.
// - A MAP_SHARED mapping of a memfd maps the file's pages, allocated on
//   first touch. MAP_PRIVATE of a memfd copies the file's bytes at mmap time
//   (a deliberate simplification of copy-on-write, stated in the README).
//   Either way a page wholly past the end of the file faults (SIGBUS).
// - An embedder segment can be mapped at a VA (mapPhys).
// Pins take a frame reference per page (get_user_pages), so a pinned page
// survives munmap and truncation until it is unpinned.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import { MemFile } from './memfd.js';
import { PhysMem, PAGE_SIZE, SEG_SPAN, pageOff } from './phys.js';

// include/uapi/asm-generic/mman-common.h, mman.h
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_SHARED_VALIDATE = 0x03;
export const MAP_ANONYMOUS = 0x20;

/** mmap() allocates top-down below this address, as x86-64 Linux does below its mmap_base. */
const MMAP_TOP = 0x7f00_0000_0000;
const MMAP_BOTTOM = 0x1_0000_0000;
const HPAGE = 2 << 20;

type Backing =
  /** Own frames; `file` is set for MAP_PRIVATE of a memfd (its size still bounds the mapping). */
  | { kind: 'anon'; frames: Uint32Array; file?: MemFile; pgoff?: number }
  | { kind: 'file'; file: MemFile; pgoff: number }
  | { kind: 'phys'; base: number };

interface Vma { start: number; end: number; prot: number; backing: Backing }

/** A physically contiguous piece of a pinned range. */
export interface PhysRun { pa: number; length: number }

export class AddressSpace {
  /** Sorted by start, non-overlapping. */
  private vmas: Vma[] = [];

  constructor(private readonly engine: Engine, /** Physical memory, for the kernel's own reads of guest structures. */ readonly phys: PhysMem,
    /** The kernel's PAGE_SIZE in bytes (4096, 16384 or 65536). */ readonly pageSize = PAGE_SIZE) {}

  /** n rounded up to the kernel's page size. */
  private roundUp(n: number): number { return Math.ceil(n / this.pageSize) * this.pageSize; }

  /** mmap(2) without an address hint (the offset was checked by the caller). */
  mmap(length: number, prot: number, flags: number, file: MemFile | null, offset: number): number {
    let type = flags & MAP_SHARED_VALIDATE;
    // MAP_SHARED_VALIDATE is a shared mapping with its flags validated (do_mmap, Linux 4.15+).
    if (type === MAP_SHARED_VALIDATE && file !== null) type = MAP_SHARED;
    if (!Number.isSafeInteger(length) || length <= 0 || (type !== MAP_SHARED && type !== MAP_PRIVATE) ||
        (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) {
      throw new SysError('EINVAL');
    }
    const len = this.roundUp(length);
    const start = this.findHole(len, len >= HPAGE ? HPAGE : this.pageSize);
    if (file !== null && type === MAP_SHARED) {
      this.insert({ start, end: start + len, prot, backing: { kind: 'file', file: file.get(), pgoff: offset / PAGE_SIZE } });
      return start;
    }
    const frames = this.allocFrames(len / PAGE_SIZE);
    if (file !== null) {
      // MAP_PRIVATE of a memfd: a copy of the file's bytes at mmap time.
      const bytes = new Uint8Array(Math.max(0, Math.min(len, file.size - offset)));
      file.readAt(offset, bytes);
      for (let i = 0; i < bytes.length; i += PAGE_SIZE) this.phys.write(frames[i / PAGE_SIZE] * PAGE_SIZE, bytes.subarray(i, i + PAGE_SIZE));
    }
    const backing: Backing = file ? { kind: 'anon', frames, file: file.get(), pgoff: offset / PAGE_SIZE } : { kind: 'anon', frames };
    this.insert({ start, end: start + len, prot, backing });
    return start;
  }

  /** Map [pa, pa + length) of a registered segment at a new VA. */
  mapPhys(pa: number, length: number, prot: number): number {
    const seg = Math.floor(pa / SEG_SPAN), off = pa - seg * SEG_SPAN;
    if (!Number.isSafeInteger(length) || length <= 0 || off % this.pageSize !== 0 || off + this.roundUp(length) > this.phys.segmentSize(seg)) {
      throw new SysError('EINVAL');
    }
    const len = this.roundUp(length);
    const start = this.findHole(len, len >= HPAGE ? HPAGE : this.pageSize);
    this.insert({ start, end: start + len, prot, backing: { kind: 'phys', base: pa } });
    return start;
  }

  /** munmap(2): whole or partial; unmapped holes in the range are fine. */
  munmap(va: number, length: number): void {
    if (!Number.isSafeInteger(va) || va % this.pageSize !== 0 || !Number.isSafeInteger(length) || length <= 0) throw new SysError('EINVAL');
    const end = va + this.roundUp(length);
    const kept: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= va || v.start >= end) { kept.push(v); continue; }
      if (v.start < va) kept.push(this.slice(v, v.start, va));
      this.release(this.slice(v, Math.max(v.start, va), Math.min(v.end, end)));
      if (v.end > end) kept.push(this.slice(v, end, v.end));
      const file = v.backing.kind === 'phys' ? undefined : v.backing.file;
      file?.put(); // the slices took their own references
    }
    this.vmas = kept;
  }

  /** Drop every mapping of a segment that is going away: its VAs fault from now on. */
  dropSegment(seg: number): void {
    const inSeg = (v: Vma) => v.backing.kind === 'phys' && Math.floor(v.backing.base / SEG_SPAN) === seg;
    this.vmas = this.vmas.filter((v) => !inSeg(v));
  }

  /** Tear everything down (process exit). */
  clear(): void {
    for (const v of this.vmas) this.release(v);
    this.vmas = [];
  }

  /** Read user memory; EFAULT if any byte is unmapped or not readable. */
  read(va: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.access(va, length, PROT_READ, (pa, at, n) => this.phys.read(pa, out.subarray(at, at + n)));
    return out;
  }

  /** Write user memory; EFAULT if any byte is unmapped or not writable (nothing is written then). */
  write(va: number, bytes: Uint8Array): void {
    this.access(va, bytes.length, PROT_WRITE, () => {});
    this.access(va, bytes.length, PROT_WRITE, (pa, at, n) => this.phys.write(pa, bytes.subarray(at, at + n)));
  }

  /**
   * Pin [va, va + length): take a reference on every page and return the
   * physical runs. EFAULT if a page is unmapped, or lacks the access.
   */
  pin(va: number, length: number, writable: boolean): PhysRun[] {
    let runs: PhysRun[] | null = null;
    const need = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    if (pageOff(va) === 0 && pageOff(length) === 0) {
      // Whole pages (every pin iommufd makes): run by run, not page by page,
      // and without the visitor closures (a 4 KiB IOAS_MAP pins through here).
      if (length > 0) this.check(va, length, need);
      const end = va + length;
      for (let at = va; at < end;) {
        const v = this.find(at)!;
        const to = Math.min(end, v.end);
        runs = this.vmaRuns(v, at, to, runs);
        at = to;
      }
    } else {
      this.access(va, length, need, (pa, _at, n) => { runs = addRun(runs, pa, n); });
    }
    if (runs === null) return [];
    for (const r of runs) this.holdRun(r.pa, r.length, +1);
    return runs;
  }

  /**
   * pin() of whole pages that lie in one VMA and one physical run (a small
   * area's, nearly always): the physical address of `va`, with no list of
   * runs made. -1, with nothing pinned, when they do not: pin() then.
   * The same errors as pin(), at the same point.
   */
  pinContiguous(va: number, length: number, writable: boolean): number {
    if (pageOff(va) !== 0 || pageOff(length) !== 0 || length === 0) return -1;
    this.check(va, length, writable ? PROT_READ | PROT_WRITE : PROT_READ);
    const v = this.find(va)!, b = v.backing;
    if (va + length > v.end || b.kind === 'file') return -1;
    let pa: number;
    if (b.kind === 'phys') {
      pa = b.base + (va - v.start);
    } else {
      const first = (va - v.start) / PAGE_SIZE, n = length / PAGE_SIZE, f0 = b.frames[first];
      for (let i = 1; i < n; i++) if (b.frames[first + i] !== f0 + i) return -1;
      pa = f0 * PAGE_SIZE;
    }
    this.holdRun(pa, length, +1);
    return pa;
  }

  /** The physical runs behind [from, to) of one VMA (page aligned), merged into `runs` as they come. */
  private vmaRuns(v: Vma, from: number, to: number, runs: PhysRun[] | null): PhysRun[] {
    const b = v.backing;
    const first = (from - v.start) / PAGE_SIZE, n = (to - from) / PAGE_SIZE;
    if (b.kind === 'phys') return addRun(runs, b.base + first * PAGE_SIZE, n * PAGE_SIZE);
    if (b.kind === 'file') {
      for (let i = 0; i < n; i++) runs = addRun(runs, b.file.frame(b.pgoff + first + i) * PAGE_SIZE, PAGE_SIZE);
      return runs!;
    }
    let start = b.frames[first], count = 1;
    for (let i = 1; i < n; i++) {
      const f = b.frames[first + i];
      if (f === start + count) { count++; continue; }
      runs = addRun(runs, start * PAGE_SIZE, count * PAGE_SIZE);
      start = f;
      count = 1;
    }
    return addRun(runs, start * PAGE_SIZE, count * PAGE_SIZE);
  }

  unpin(runs: PhysRun[]): void {
    for (const r of runs) this.holdRun(r.pa, r.length, -1);
  }

  /** unpin() of one run (no list to build for it). */
  unpinRun(pa: number, length: number): void { this.holdRun(pa, length, -1); }

  private holdRun(pa: number, length: number, delta: 1 | -1): void {
    if (pa >= SEG_SPAN) { this.phys.pinSegment(Math.floor(pa / SEG_SPAN), delta); return; }
    const first = Math.floor(pa / PAGE_SIZE), n = Math.ceil((pageOff(pa) + length) / PAGE_SIZE);
    if (delta > 0) this.engine.getFrames(first, n);
    else this.engine.putFrames(first, n);
  }

  /**
   * Visit [va, va + length) page by page as (pa, offset in range, bytes),
   * or VMA by VMA through `perVma`, after checking that every page is
   * mapped with `need`. Nothing is visited if any check fails.
   */
  private access(va: number, length: number, need: number, visit: (pa: number, at: number, n: number) => void,
    perVma?: (v: Vma, from: number, to: number) => void): void {
    if (length === 0) return;
    this.check(va, length, need);
    const end = va + length;
    if (perVma) {
      for (let at = va; at < end;) {
        const v = this.find(at)!;
        const to = Math.min(end, v.end);
        perVma(v, at, to);
        at = to;
      }
      return;
    }
    let v: Vma | undefined;
    for (let at = va; at < end;) {
      if (!v || at >= v.end) v = this.find(at)!;
      const n = Math.min(PAGE_SIZE - (at % PAGE_SIZE), end - at);
      visit(this.pageAddr(v, at - (at % PAGE_SIZE)) + (at % PAGE_SIZE), at - va, n);
      at += n;
    }
  }

  /**
   * EFAULT unless every page of [va, va + length) (length > 0) is mapped
   * with `need`; checked before anything is done, so that a fault leaves
   * nothing half done.
   */
  private check(va: number, length: number, need: number): void {
    if (!Number.isSafeInteger(va) || va < 0 || !Number.isSafeInteger(length) || length < 0) throw new SysError('EFAULT');
    const end = va + length;
    for (let at = va; at < end;) {
      const v = this.find(at);
      if (!v || (v.prot & need) !== need) throw new SysError('EFAULT');
      // A page wholly past the end of the file faults (SIGBUS); a partial last page is mapped whole.
      const b = v.backing;
      if (b.kind !== 'phys' && b.file !== undefined) {
        const lastPage = b.pgoff! + Math.floor((Math.min(end, v.end) - 1 - v.start) / PAGE_SIZE);
        if (lastPage >= b.file.framesCovered()) throw new SysError('EFAULT');
      }
      at = v.end;
    }
  }

  private pageAddr(v: Vma, pageVa: number): number {
    const idx = (pageVa - v.start) / PAGE_SIZE;
    const b = v.backing;
    if (b.kind === 'anon') return b.frames[idx] * PAGE_SIZE;
    if (b.kind === 'phys') return b.base + idx * PAGE_SIZE;
    return b.file.frame(b.pgoff + idx) * PAGE_SIZE;
  }

  private find(va: number): Vma | undefined {
    let lo = 0, hi = this.vmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1, v = this.vmas[mid];
      if (va < v.start) hi = mid - 1;
      else if (va >= v.end) lo = mid + 1;
      else return v;
    }
    return undefined;
  }

  /** Highest free [start, start + len) below MMAP_TOP with start aligned to `align`. */
  private findHole(len: number, align: number): number {
    let top = MMAP_TOP;
    for (let i = this.vmas.length - 1; i >= -1; i--) {
      const floor = i >= 0 ? this.vmas[i].end : MMAP_BOTTOM;
      if (floor >= top) { top = Math.min(top, i >= 0 ? this.vmas[i].start : top); continue; }
      const start = Math.floor((top - len) / align) * align;
      if (start >= floor) return start;
      if (i >= 0) top = this.vmas[i].start;
    }
    throw new SysError('ENOMEM');
  }

  private insert(v: Vma): void {
    let i = this.vmas.length;
    while (i > 0 && this.vmas[i - 1].start > v.start) i--;
    this.vmas.splice(i, 0, v);
  }

  /**
   * Frames for n 4 KiB frames (whole kernel pages): contiguous runs as large
   * as the allocator gives, biggest first, never smaller than a kernel page
   * and aligned to one.
   */
  private allocFrames(n: number): Uint32Array {
    // Refuse what cannot fit before growing the memory for nothing.
    if (n > this.engine.framesAvailable()) throw new SysError('ENOMEM');
    const frames = new Uint32Array(n);
    const perPage = this.pageSize / PAGE_SIZE;
    let done = 0;
    let chunk = n;
    try {
      while (done < n) {
        chunk = Math.min(chunk, n - done);
        const align = chunk >= 512 ? 512 : perPage;
        const pfn = this.engine.tryAllocFrames(chunk, align);
        if (pfn < 0) {
          if (chunk === perPage) throw new SysError('ENOMEM');
          chunk = Math.max(perPage, Math.floor(chunk / 2 / perPage) * perPage);
          continue;
        }
        for (let i = 0; i < chunk; i++) frames[done + i] = pfn + i;
        done += chunk;
      }
    } catch (e) {
      for (let i = 0; i < done; i++) this.engine.putFrames(frames[i], 1);
      throw e;
    }
    return frames;
  }

  /** A VMA for [start, end) of v, sharing its backing. */
  private slice(v: Vma, start: number, end: number): Vma {
    const skip = (start - v.start) / PAGE_SIZE;
    const b = v.backing;
    let backing: Backing;
    if (b.kind === 'anon') {
      backing = { kind: 'anon', frames: b.frames.subarray(skip, skip + (end - start) / PAGE_SIZE) };
      if (b.file) { backing.file = b.file.get(); backing.pgoff = b.pgoff! + skip; }
    }
    else if (b.kind === 'phys') backing = { kind: 'phys', base: b.base + skip * PAGE_SIZE };
    else backing = { kind: 'file', file: b.file.get(), pgoff: b.pgoff + skip };
    return { start, end, prot: v.prot, backing };
  }

  private release(v: Vma): void {
    const b = v.backing;
    if (b.kind === 'anon') for (const pfn of b.frames) this.engine.putFrames(pfn, 1);
    if (b.kind !== 'phys') b.file?.put();
  }
}

/**
 * Append [pa, pa + n) to a list of physical runs, extending the last run
 * when it continues it in the same segment; returns the list. The list is
 * made here, for its first run: `[]` then push() would allocate room for 17
 * (a 4 KiB pin has one run).
 */
function addRun(runs: PhysRun[] | null, pa: number, n: number): PhysRun[] {
  if (runs === null) return [{ pa, length: n }];
  const last = runs[runs.length - 1];
  if (last.pa + last.length === pa && sameSegment(last.pa, pa)) last.length += n;
  else runs.push({ pa, length: n });
  return runs;
}
function sameSegment(a: number, b: number): boolean { return Math.floor(a / SEG_SPAN) === Math.floor(b / SEG_SPAN); }
