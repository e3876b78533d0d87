// The memory behind IOAS areas (drivers/iommu/iommufd/pages.c): user pages
// at a VA or the pages of a memfd, pinned once however many domains and
// copies use them, and charged to the locked-memory limit while pinned.

import type { AddressSpace, PhysRun } from '../kernel/mm.js';
import type { MemFile } from '../kernel/memfd.js';
import { SysError } from '../uapi/errno.js';

const PAGE = 4096;

/** Where the pages come from: a user VA range, or a memfd from a byte offset. */
export type PagesSource = { kind: 'user'; va: number } | { kind: 'file'; file: MemFile; start: number };

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
  private runs: PhysRun[] | null = null;
  private pinUsers = 0;
  private charged = 0;
  /** Areas using these pages (kref): the file stays referenced while any does. */
  private refs = 0;

  /**
   * @param account null when the mapper had CAP_IPC_LOCK (ACCOUNT_NONE).
   */
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

  /** Pin (once) and return the physical runs of the whole pages. EFAULT / ENOMEM. */
  pin(): PhysRun[] {
    if (this.runs === null) {
      if (!Number.isSafeInteger(this.base + this.length)) throw new SysError('EFAULT');
      const first = Math.floor(this.base / PAGE) * PAGE;
      const end = Math.ceil((this.base + this.length) / PAGE) * PAGE;
      const pages = (end - first) / PAGE;
      this.account?.charge(pages);
      try {
        this.runs = this.source.kind === 'user'
          ? this.mm.pin(first, end - first, this.writable)
          : this.source.file.pin(first, end - first);
      } catch (e) {
        this.account?.uncharge(pages);
        throw e;
      }
      this.charged = pages;
    }
    this.pinUsers++;
    return this.runs;
  }

  unpin(): void {
    if (--this.pinUsers === 0 && this.runs) {
      this.mm.unpin(this.runs);
      this.runs = null;
      this.account?.uncharge(this.charged);
      this.charged = 0;
    }
  }

  /** Physical runs of bytes [offset, offset + length) of the pages (pinned). */
  physRuns(offset: number, length: number): PhysRun[] {
    const out: PhysRun[] = [];
    let skip = this.pageOffset + offset;
    let left = length;
    for (const r of this.runs!) {
      if (left === 0) break;
      if (skip >= r.length) { skip -= r.length; continue; }
      const n = Math.min(r.length - skip, left);
      out.push({ pa: r.pa + skip, length: n });
      left -= n;
      skip = 0;
    }
    return out;
  }
}
