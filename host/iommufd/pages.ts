// The memory behind IOAS areas (drivers/iommu/iommufd/pages.c): user pages
// at a VA or the pages of a file, pinned as the areas that use them need
// them (an area pins only its own pages; pages shared by copies are pinned
// once), and charged to the locked-memory limit while pinned.
//
// Pins are kept as runs of pages, not per page: a 1 GiB area is one run (or
// a few, one per physically contiguous piece), so pinning, unpinning and
// listing its physical ranges cost per run, while every page's pin count
// stays exact (pages.c keeps an interval tree of pinned ranges, with its
// own per-range users, for the same reason).
//
// A page here is the kernel's PAGE_SIZE (HostOptions.pageSize: 4, 16 or
// 64 KiB; AddressSpace.pageSize), as in pages.c: an iopt_pages starts at
// its first byte rounded down to PAGE_SIZE (iopt_alloc_pages: uptr =
// ALIGN_DOWN(uptr, PAGE_SIZE)), its indexes are PAGE_SIZE pages, an area's
// page range is start_byte / PAGE_SIZE .. (start_byte + length - 1) /
// PAGE_SIZE (iopt_insert_area: pages_node), and npinned, locked_vm and the
// limit (incr_user_locked_vm: RLIMIT_MEMLOCK >> PAGE_SHIFT) count those
// pages. So an area covering 4 KiB of a 16 KiB page pins and charges the
// whole page. A page is pinned by holding each of its 4 KiB frames.

import type { KFile } from '../kernel/file.js';
import type { AddressSpace, PhysRun } from '../kernel/mm.js';
import { PAGE_SIZE, offIn } from '../kernel/phys.js';
import { MemFile } from '../kernel/memfd.js';
import { SysError } from '../uapi/errno.js';

/** Physical addresses of different segments are adjacent numbers but never contiguous. */
const SEG_SPAN = 0x1_0000_0000;
const contiguous = (end: number, next: number) => end === next && next % SEG_SPAN !== 0;

/** Where the pages come from: a user VA range, or an open file from a byte offset. */
export type PagesSource = { kind: 'user'; va: number } | { kind: 'file'; file: KFile; start: number };

/**
 * The pinned-page budget of the simulated user (RLIMIT_MEMLOCK against
 * user->locked_vm), both in kernel pages: the limit is RLIMIT_MEMLOCK >>
 * PAGE_SHIFT (incr_user_locked_vm). A process with CAP_IPC_LOCK is not
 * charged (IOPT_PAGES_ACCOUNT_NONE).
 */
export class PinAccount {
  lockedPages = 0;
  constructor(readonly capIpcLock: boolean, readonly limitPages: number) {}

  /** Charge `pages`; false, with nothing charged, past the limit (incr_user_locked_vm's ENOMEM). */
  charge(pages: number): boolean {
    if (this.lockedPages + pages > this.limitPages) return false;
    this.lockedPages += pages;
    return true;
  }

  uncharge(pages: number): void { this.lockedPages -= pages; }
}

/**
 * Pages [first, last] of a pages object, held `count` times (by areas and
 * domains), physically contiguous from `pa` (the address of page `first`).
 */
interface PinRun { first: number; last: number; count: number; pa: number }

export class IoPages {
  /** The pinned pages: sorted by page index, non-overlapping. */
  private runs: PinRun[] = [];
  /** Areas using these pages (kref): the file stays referenced while any does. */
  private refs = 0;
  /**
   * The byte address the pages start at: the VA, or the file offset. A
   * field, not a getter of `source`: a getter V8 leaves out of line
   * returns a VA (above 2^30) as a new HeapNumber.
   */
  readonly base: number;
  /** Byte offset of the first byte in its page (computed once). */
  readonly pageOffset: number;
  /** The kernel's PAGE_SIZE: the unit of page indexes, pins and the charge. */
  private readonly page: number;

  /** @param account null when the mapper had CAP_IPC_LOCK (ACCOUNT_NONE). */
  constructor(
    private readonly mm: AddressSpace,
    readonly source: PagesSource,
    readonly length: number,
    readonly writable: boolean,
    private readonly account: PinAccount | null,
  ) {
    const b = (this.base = source.kind === 'user' ? source.va : source.start);
    this.page = mm.pageSize;
    // Not b % page: a VA is above 2^31, where % is a call to fmod (the costliest line of a 4 KiB IOAS_MAP).
    // `| 0` (exact: below PAGE_SIZE) keeps it a small integer, so that `%` of offsets from it stays an integer %.
    this.pageOffset = Number.isSafeInteger(b) ? offIn(b, this.page) | 0 : 0;
  }

  get isFile(): boolean { return this.source.kind === 'file'; }

  get(): this {
    if (this.refs++ === 0 && this.source.kind === 'file') this.source.file.get();
    return this;
  }

  put(): void {
    if (--this.refs === 0 && this.source.kind === 'file') this.source.file.put();
  }

  /** Page indexes [first, last] holding bytes [offset, offset + length) of the pages. */
  indexRange(offset: number, length: number): [number, number] {
    const at = this.pageOffset + offset;
    return [Math.floor(at / this.page), Math.floor((at + length - 1) / this.page)];
  }

  /** pin() of the pages holding bytes [offset, offset + length) (an area's). */
  pinBytes(offset: number, length: number): void {
    const at = this.pageOffset + offset;
    this.pin(Math.floor(at / this.page), Math.floor((at + length - 1) / this.page));
  }

  /** unpin() of the pages holding bytes [offset, offset + length). */
  unpinBytes(offset: number, length: number): void {
    const at = this.pageOffset + offset;
    this.unpin(Math.floor(at / this.page), Math.floor((at + length - 1) / this.page));
  }

  /**
   * Pin pages [first, last]: those not pinned yet are pinned (EFAULT for a
   * user page the process cannot give, EINVAL for a file page past its end
   * or a file that is not a memfd: memfd_pin_folios), then charged (ENOMEM,
   * and what was just pinned is unpinned). pages.c charges after pinning
   * (pfn_reader_update_pinned: "changes in the number of pages pinned is
   * done after the pages have been read"), so a range that is both past the
   * limit and not all mapped is EFAULT. All or nothing.
   */
  pin(first: number, last: number): void {
    if (!Number.isSafeInteger(this.base + this.length)) throw new SysError('EFAULT');
    const runs = this.runs;
    if (runs.length === 0) {
      // Nothing pinned yet (an area's own pages, the usual case): the whole
      // range is the one hole, pinned, charged and made the run list at once.
      const pages = last - first + 1;
      const pa = this.source.kind === 'user' ? this.mm.pinContiguous(this.pageVa(first), pages * this.page, this.writable) : -1;
      if (pa >= 0) {
        if (!this.charged(pages)) { this.mm.unpinRun(pa, pages * this.page); throw new SysError('ENOMEM'); }
        this.runs = [{ first, last, count: 1, pa }];
        return;
      }
      const got = this.pinPages(first, pages);
      if (!this.charged(pages)) { this.mm.unpin(got); throw new SysError('ENOMEM'); }
      // A new list at its size (push() into the empty one would allocate room for 17).
      const fresh = new Array<PinRun>(got.length);
      let idx = first;
      for (let i = 0; i < got.length; i++) {
        const n = got[i].length / this.page;
        fresh[i] = { first: idx, last: idx + n - 1, count: 1, pa: got[i].pa };
        idx += n;
      }
      this.runs = fresh;
      return;
    }
    this.pinMore(first, last);
  }

  /**
   * pin() over pages some of which are pinned already: only the holes are
   * pinned and charged. Apart from pin() so that pin() stays small enough for
   * V8 to inline into an IOAS_MAP (its inlining budget is bytecode size).
   */
  private pinMore(first: number, last: number): void {
    const runs = this.runs;
    let i = this.runAt(first);
    let at = first, pages = 0;
    const holes: number[] = [];
    for (let j = i; j < runs.length && runs[j].first <= last; j++) {
      if (runs[j].first > at) { holes.push(at, runs[j].first - 1); pages += runs[j].first - at; }
      at = runs[j].last + 1;
    }
    if (at <= last) { holes.push(at, last); pages += last - at + 1; }
    const fresh: PinRun[] = [];
    if (pages > 0) {
      const done: PhysRun[][] = [];
      try {
        for (let h = 0; h < holes.length; h += 2) {
          const got = this.pinPages(holes[h], holes[h + 1] - holes[h] + 1);
          done.push(got);
          let idx = holes[h];
          for (const r of got) {
            const n = r.length / this.page;
            fresh.push({ first: idx, last: idx + n - 1, count: 0, pa: r.pa });
            idx += n;
          }
        }
        if (!this.charged(pages)) throw new SysError('ENOMEM');
      } catch (e) {
        for (const got of done) this.mm.unpin(got);
        throw e;
      }
    }
    // Cut the runs at the range's ends, put the new runs in, count one more pin on all.
    this.split(first);
    this.split(last + 1);
    i = this.runAt(first);
    let end = i;
    while (end < runs.length && runs[end].first <= last) end++;
    if (fresh.length > 0) {
      const merged = runs.slice(i, end).concat(fresh).sort((a, b) => a.first - b.first);
      runs.splice(i, end - i, ...merged);
      end = i + merged.length;
    }
    for (let j = i; j < end; j++) runs[j].count++;
    this.coalesce(i - 1, end);
  }

  /** Charge `pages` newly pinned pages: false past the limit (nothing charged). Always true without an account (CAP_IPC_LOCK). */
  private charged(pages: number): boolean { return this.account === null || this.account.charge(pages); }

  /** Drop one pin of pages [first, last]; pages nobody holds any more are released and uncharged. */
  unpin(first: number, last: number): void {
    const runs = this.runs;
    const only = runs[0];
    if (runs.length === 1 && only.first === first && only.last === last && only.count === 1) {
      // The last pin of the only run (an area's own pages): release it whole (emptied in place: no new list).
      runs.pop();
      this.mm.unpinRun(only.pa, (last - first + 1) * this.page);
      this.account?.uncharge(last - first + 1);
      return;
    }
    this.unpinSome(first, last);
  }

  /** unpin() of the general case (apart, as pinMore). */
  private unpinSome(first: number, last: number): void {
    const runs = this.runs;
    this.split(first);
    this.split(last + 1);
    const i = this.runAt(first);
    const release: PhysRun[] = [];
    let pages = 0;
    let w = i, j = i;
    for (; j < runs.length && runs[j].first <= last; j++) {
      const r = runs[j];
      if (--r.count !== 0) { runs[w++] = r; continue; }
      const n = r.last - r.first + 1;
      pages += n;
      const prev = release[release.length - 1];
      if (prev && contiguous(prev.pa + prev.length, r.pa)) prev.length += n * this.page;
      else release.push({ pa: r.pa, length: n * this.page });
    }
    runs.splice(w, j - w);
    if (pages > 0) {
      this.mm.unpin(release);
      this.account?.uncharge(pages);
    }
    this.coalesce(i - 1, w);
  }

  /**
   * The physical address of byte `offset` when bytes [offset, offset +
   * length) lie in one pinned run, else -1: physRuns() of a small area
   * without its list and record (garbage on every 4 KiB IOAS_MAP).
   */
  contiguousPa(offset: number, length: number): number {
    const at = this.pageOffset + offset;
    const first = Math.floor(at / this.page), last = Math.floor((at + length - 1) / this.page);
    const r = this.runs[this.runAt(first)];
    return r !== undefined && r.first <= first && r.last >= last ? r.pa + (first - r.first) * this.page + (at % this.page) : -1;
  }

  /** Physical runs of bytes [offset, offset + length) of the pages (which must be pinned). */
  physRuns(offset: number, length: number): PhysRun[] {
    const runs = this.runs;
    let out: PhysRun[] | null = null; // made when a second run shows up: `[]` then push() allocates room for 17
    const at = this.pageOffset + offset;
    const first = Math.floor(at / this.page), last = Math.floor((at + length - 1) / this.page);
    let j = this.runAt(first);
    let r = runs[j];
    let start = r.pa + (first - r.first) * this.page + (at % this.page);
    let next = r.pa + (Math.min(r.last, last) - r.first + 1) * this.page;
    for (j++; j < runs.length && runs[j].first <= last; j++) {
      r = runs[j];
      const end = r.pa + (Math.min(r.last, last) - r.first + 1) * this.page;
      if (contiguous(next, r.pa)) { next = end; continue; }
      (out ??= []).push({ pa: start, length: next - start });
      start = r.pa;
      next = end;
    }
    const tail = (at + length) % this.page;
    const lastRun = { pa: start, length: next - start - (tail === 0 ? 0 : this.page - tail) };
    if (out === null) return [lastRun];
    out.push(lastRun);
    return out;
  }

  /** Index of the first run that ends at or after page `index`. */
  private runAt(index: number): number {
    const runs = this.runs;
    let lo = 0, hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (runs[mid].last < index) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Make page `index` start a run if a run holds it and the page before. */
  private split(index: number): void {
    const i = this.runAt(index);
    const r = this.runs[i];
    if (r === undefined || r.first >= index) return;
    this.runs.splice(i + 1, 0, { first: index, last: r.last, count: r.count, pa: r.pa + (index - r.first) * this.page });
    r.last = index - 1;
  }

  /** Merge neighbours among runs [from, to] that continue each other (pages, addresses and count). */
  private coalesce(from: number, to: number): void {
    const runs = this.runs;
    let i = Math.max(from, 0);
    let end = Math.min(to, runs.length - 1);
    while (i < end) {
      const a = runs[i], b = runs[i + 1];
      if (a.last + 1 === b.first && a.count === b.count && contiguous(a.pa + (a.last - a.first + 1) * this.page, b.pa)) {
        a.last = b.last;
        runs.splice(i + 1, 1);
        end--;
      } else {
        i++;
      }
    }
  }

  /** The address (VA or file offset) of page i. */
  private pageVa(i: number): number { return this.base - this.pageOffset + i * this.page; }

  /** Pin n pages from index i of the source, returning their physical runs. */
  private pinPages(i: number, n: number): PhysRun[] {
    const s = this.source;
    const first = this.pageVa(i);
    if (s.kind === 'user') return this.mm.pin(first, n * this.page, this.writable);
    if (!(s.file instanceof MemFile)) throw new SysError('EINVAL');
    if (first + n * this.page > s.file.framesCovered() * PAGE_SIZE) throw new SysError('EINVAL');
    return s.file.pin(first, n * this.page);
  }
}
