// The memory behind IOAS areas (drivers/iommu/iommufd/pages.c): user pages
// at a VA or the pages of a file, pinned page by page as the areas that use
// them need them (an area pins only its own pages; pages shared by copies
// are pinned once), and charged to the locked-memory limit while pinned.

import type { KFile } from '../kernel/file.js';
import type { AddressSpace, PhysRun } from '../kernel/mm.js';
import { MemFile } from '../kernel/memfd.js';
import { SysError } from '../uapi/errno.js';

const PAGE = 4096;
/** Physical addresses of different segments are adjacent numbers but never contiguous. */
const SEG_SPAN = 0x1_0000_0000;
const contiguous = (end: number, next: number) => end === next && next % SEG_SPAN !== 0;

/** Where the pages come from: a user VA range, or an open file from a byte offset. */
export type PagesSource = { kind: 'user'; va: number } | { kind: 'file'; file: KFile; start: number };

/**
 * The pinned-page budget of the simulated user (RLIMIT_MEMLOCK against
 * user->locked_vm). A process with CAP_IPC_LOCK is not charged
 * (IOPT_PAGES_ACCOUNT_NONE).
 */
export class PinAccount {
  lockedPages = 0;
  constructor(readonly capIpcLock: boolean, readonly limitPages: number) {}

  charge(pages: number): void {
    if (this.lockedPages + pages > this.limitPages) throw new SysError('ENOMEM');
    this.lockedPages += pages;
  }

  uncharge(pages: number): void { this.lockedPages -= pages; }
}

export class IoPages {
  /** Pins per page index (areas and domains that hold the page), and its physical address. */
  private count: Uint32Array | null = null;
  private pa: Float64Array | null = null;
  /** Areas using these pages (kref): the file stays referenced while any does. */
  private refs = 0;

  /** @param account null when the mapper had CAP_IPC_LOCK (ACCOUNT_NONE). */
  constructor(
    private readonly mm: AddressSpace,
    readonly source: PagesSource,
    readonly length: number,
    readonly writable: boolean,
    private readonly account: PinAccount | null,
  ) {}

  /** The byte address the pages start at: the VA, or the file offset. */
  get base(): number { return this.source.kind === 'user' ? this.source.va : this.source.start; }

  /** Byte offset of the first byte in its page. */
  get pageOffset(): number { return Number.isSafeInteger(this.base) ? this.base % PAGE : 0; }

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
    return [Math.floor((this.pageOffset + offset) / PAGE), Math.floor((this.pageOffset + offset + length - 1) / PAGE)];
  }

  /**
   * Pin pages [first, last]: those not pinned yet are pinned (EFAULT for a
   * user page the process cannot give, EINVAL for a file page past its end
   * or a file that is not a memfd: memfd_pin_folios) and charged (ENOMEM).
   * All or nothing.
   */
  pin(first: number, last: number): void {
    if (!Number.isSafeInteger(this.base + this.length)) throw new SysError('EFAULT');
    if (!this.count) {
      const n = Math.ceil((this.pageOffset + this.length) / PAGE);
      this.count = new Uint32Array(n);
      this.pa = new Float64Array(n);
    }
    const count = this.count, pa = this.pa!;
    // Runs of pages nobody holds yet: only those are pinned and charged.
    const todo: [number, number][] = [];
    for (let i = first; i <= last; i++) {
      if (count[i] !== 0) continue;
      if (todo.length && todo[todo.length - 1][1] === i - 1) todo[todo.length - 1][1] = i;
      else todo.push([i, i]);
    }
    const pages = todo.reduce((n, [a, b]) => n + b - a + 1, 0);
    this.account?.charge(pages);
    const done: PhysRun[][] = [];
    try {
      for (const [a, b] of todo) {
        const runs = this.pinPages(a, b - a + 1);
        done.push(runs);
        let i = a;
        for (const r of runs) for (let off = 0; off < r.length; off += PAGE) pa[i++] = r.pa + off;
      }
    } catch (e) {
      for (const runs of done) this.mm.unpin(runs);
      this.account?.uncharge(pages);
      throw e;
    }
    for (let i = first; i <= last; i++) count[i]++;
  }

  /** Drop one pin of pages [first, last]; pages nobody holds any more are released and uncharged. */
  unpin(first: number, last: number): void {
    const count = this.count!, pa = this.pa!;
    const release: PhysRun[] = [];
    for (let i = first; i <= last; i++) {
      if (--count[i] !== 0) continue;
      const r = release[release.length - 1];
      if (r && contiguous(r.pa + r.length, pa[i])) r.length += PAGE;
      else release.push({ pa: pa[i], length: PAGE });
    }
    const pages = release.reduce((n, r) => n + r.length / PAGE, 0);
    if (pages > 0) {
      this.mm.unpin(release);
      this.account?.uncharge(pages);
    }
  }

  /** Pin n pages from index i of the source, returning their physical runs. */
  private pinPages(i: number, n: number): PhysRun[] {
    const s = this.source;
    const first = Math.floor(this.base / PAGE) * PAGE + i * PAGE;
    if (s.kind === 'user') return this.mm.pin(first, n * PAGE, this.writable);
    if (!(s.file instanceof MemFile)) throw new SysError('EINVAL');
    if (first + n * PAGE > Math.ceil(s.file.size / PAGE) * PAGE) throw new SysError('EINVAL');
    return s.file.pin(first, n * PAGE);
  }

  /** Physical runs of bytes [offset, offset + length) of the pages (which must be pinned). */
  physRuns(offset: number, length: number): PhysRun[] {
    const pa = this.pa!;
    const out: PhysRun[] = [];
    const at = this.pageOffset + offset;
    const first = Math.floor(at / PAGE), last = Math.floor((at + length - 1) / PAGE);
    let start = pa[first] + (at % PAGE);
    let next = pa[first] + PAGE;
    for (let i = first + 1; i <= last; i++) {
      const p = pa[i];
      if (contiguous(next, p)) { next = p + PAGE; continue; }
      out.push({ pa: start, length: next - start });
      start = p;
      next = p + PAGE;
    }
    const end = (at + length) % PAGE;
    out.push({ pa: start, length: next - start - (end === 0 ? 0 : PAGE - end) });
    return out;
  }
}
