// memfd_create(2): an anonymous file of shared pages. Pages are allocated on
// first touch (a fault through a mapping, a pin, or a write) and freed on
// truncation or when the last user goes; a pinned page outlives both, since
// each pin holds a frame reference (as get_user_pages does).

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

  constructor(readonly engine: Engine, readonly name: string) {
    super(`/memfd:${name} (deleted)`);
  }

  get size(): number { return this.length; }

  /** ftruncate(2): grow with holes, or shrink and drop the pages past the end. */
  truncate(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) throw new SysError('EINVAL');
    const n = Math.ceil(length / PAGE_SIZE);
    if (length >= this.length) {
      // Stores past the old end, in its partial last page, never reach the file (mmap(2) NOTES).
      const tail = this.length % PAGE_SIZE, last = Math.floor(this.length / PAGE_SIZE);
      if (tail !== 0 && this.pages[last] !== 0) this.engine.bytes.fill(0, this.pages[last] * PAGE_SIZE + tail, (this.pages[last] + 1) * PAGE_SIZE);
      if (n > this.pages.length) {
        const grown = new Uint32Array(Math.max(n, this.pages.length * 2));
        grown.set(this.pages);
        this.pages = grown;
      }
    } else {
      this.dropPages(n);
      // The tail of the last page reads as zero after a shrink (truncate_pagecache).
      const keep = length % PAGE_SIZE;
      if (keep !== 0 && this.pages[n - 1] !== 0) this.engine.bytes.fill(0, this.pages[n - 1] * PAGE_SIZE + keep, (this.pages[n - 1] + 1) * PAGE_SIZE);
    }
    this.length = length;
  }

  private dropPages(from: number): void {
    for (let i = from; i < this.pages.length; i++) {
      if (this.pages[i] !== 0) { this.engine.putFrames(this.pages[i], 1); this.pages[i] = 0; }
    }
  }

  /** The frame backing page `index`, allocated (zeroed) on first use; EFAULT past the end (SIGBUS). */
  frame(index: number): number {
    if (index * PAGE_SIZE >= this.length) throw new SysError('EFAULT');
    let pfn = this.pages[index];
    if (pfn === 0) {
      pfn = this.engine.allocFrames(1);
      this.pages[index] = pfn;
    }
    return pfn;
  }

  /**
   * Pin [offset, offset + length) (page-aligned): allocate the pages, take a
   * frame reference on each, return the physical runs. EFAULT past the end.
   */
  pin(offset: number, length: number): PhysRun[] {
    const first = offset / PAGE_SIZE, n = length / PAGE_SIZE;
    if ((first + n) * PAGE_SIZE > Math.ceil(this.length / PAGE_SIZE) * PAGE_SIZE) throw new SysError('EFAULT');
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
