// memfd_create(2): an anonymous file of shared pages. Pages are allocated on
// first touch (a fault through a mapping, a pin, or a write) and freed on
// truncation or when the last user goes; a pinned page outlives both, since
// each pin holds a frame reference (as get_user_pages does).
// Pages are the kernel's (4, 16 or 64 KiB: AddressSpace.pageSize): a page
// is allocated whole, as contiguous 4 KiB frames aligned to its size, and
// the file's last page covers its size rounded up to a page.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import { KFile } from './file.js';
import { PAGE_SIZE, PAGE_SHIFT } from './phys.js';
import type { PhysRun } from './mm.js';

export class MemFile extends KFile {
  /** Frame of each page (0 = not allocated yet). */
  private pages = new Uint32Array(0);
  private length = 0;
  private pos = 0;

  constructor(readonly engine: Engine, readonly name: string, /** The kernel's page size. */ readonly pageSize = PAGE_SIZE) {
    super(`/memfd:${name} (deleted)`);
  }

  get size(): number { return this.length; }

  /** 4 KiB frames of the file's pages: its size rounded up to the kernel's page size. */
  framesCovered(length = this.length): number { return Math.ceil(length / this.pageSize) * (this.pageSize / PAGE_SIZE); }

  /** ftruncate(2): grow with holes, or shrink and drop the pages past the end. */
  truncate(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) throw new SysError('EINVAL');
    const n = this.framesCovered(length);
    if (length >= this.length) {
      // Stores past the old end, in its partial last page, never reach the file (mmap(2) NOTES).
      this.zeroFrom(this.length);
      if (n > this.pages.length) {
        const grown = new Uint32Array(Math.max(n, this.pages.length * 2));
        grown.set(this.pages);
        this.pages = grown;
      }
    } else {
      this.dropPages(n);
      // The tail of the last page reads as zero after a shrink (truncate_pagecache).
      this.zeroFrom(length);
    }
    this.length = length;
  }

  /** Zero the allocated bytes from `at` to the end of the kernel page holding it. */
  private zeroFrom(at: number): void {
    const first = Math.floor(at / PAGE_SIZE), end = this.framesCovered(at);
    for (let i = first; i < end; i++) {
      if (this.pages[i] === 0) continue;
      const from = i === first ? at % PAGE_SIZE : 0;
      this.engine.bytes.fill(0, this.pages[i] * PAGE_SIZE + from, (this.pages[i] + 1) * PAGE_SIZE);
    }
  }

  private dropPages(from: number): void {
    for (let i = from; i < this.pages.length; i++) {
      if (this.pages[i] !== 0) { this.engine.putFrames(this.pages[i], 1); this.pages[i] = 0; }
    }
  }

  /**
   * The frame backing 4 KiB frame `index` of the file, its kernel page
   * allocated (zeroed) on first use; EFAULT past the last page (SIGBUS).
   */
  frame(index: number): number {
    if (index >= this.framesCovered()) throw new SysError('EFAULT');
    let pfn = this.pages[index];
    if (pfn === 0) {
      const perPage = this.pageSize / PAGE_SIZE;
      const first = index - (index % perPage);
      const base = this.engine.allocFrames(perPage, perPage);
      for (let i = 0; i < perPage; i++) this.pages[first + i] = base + i;
      pfn = this.pages[index];
    }
    return pfn;
  }

  /**
   * Pin [offset, offset + length) (page-aligned): allocate the pages, take a
   * frame reference on each, return the physical runs. EFAULT past the end.
   */
  pin(offset: number, length: number): PhysRun[] {
    const first = offset / PAGE_SIZE, n = length / PAGE_SIZE;
    if (first + n > this.framesCovered()) throw new SysError('EFAULT');
    const runs: PhysRun[] = [];
    for (let i = first; i < first + n; i++) {
      const pa = this.frame(i) * PAGE_SIZE;
      const last = runs[runs.length - 1];
      if (last && last.pa + last.length === pa) last.length += PAGE_SIZE;
      else runs.push({ pa, length: PAGE_SIZE });
    }
    for (const r of runs) this.engine.getFrames(r.pa / PAGE_SIZE, r.length / PAGE_SIZE);
    return runs;
  }

  override read(buf: Uint8Array): number {
    const n = this.readAt(this.pos, buf);
    this.pos += n;
    return n;
  }

  /** pread(2): bytes read, short at the end of the file. */
  readAt(offset: number, buf: Uint8Array): number {
    const n = Math.max(0, Math.min(buf.length, this.length - offset));
    this.copy(offset, buf.subarray(0, n), false);
    return n;
  }

  override write(buf: Uint8Array): number {
    if (this.pos + buf.length > this.length) this.truncate(this.pos + buf.length);
    this.copy(this.pos, buf, true);
    this.pos += buf.length;
    return buf.length;
  }

  private copy(offset: number, buf: Uint8Array, toFile: boolean): void {
    for (let done = 0; done < buf.length;) {
      const at = offset + done;
      const inPage = Math.min(PAGE_SIZE - (at % PAGE_SIZE), buf.length - done);
      const idx = at >>> PAGE_SHIFT;
      if (toFile || this.pages[idx] !== 0) {
        const base = this.frame(idx) * PAGE_SIZE + (at % PAGE_SIZE);
        const mem = this.engine.bytes;
        if (toFile) mem.set(buf.subarray(done, done + inPage), base);
        else buf.set(mem.subarray(base, base + inPage), done);
      } else {
        buf.fill(0, done, done + inPage); // a hole reads as zeros
      }
      done += inPage;
    }
  }

  /** Last fd closed and last mapping gone (each mapping holds a reference). */
  protected override release(): void { this.dropPages(0); }
}
