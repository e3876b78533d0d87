// An open file description, as the kernel's struct file: reference counted
// (each fd, and anything that holds the file like a VFIO bind holding its
// iommufd), released when the last reference goes.

import { SysError } from '../uapi/errno.js';

// include/uapi/asm-generic/poll.h
export const POLLIN = 0x0001;
export const POLLPRI = 0x0002;
export const POLLOUT = 0x0004;
export const POLLERR = 0x0008;
export const POLLHUP = 0x0010;
export const POLLNVAL = 0x0020;
export const POLLRDNORM = 0x0040;
export const POLLWRNORM = 0x0100;
/** What poll answers for a file without a poll method (include/linux/poll.h DEFAULT_POLLMASK). */
export const DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

/**
 * A readiness subscription on a file. `sync` hooks run inside the code that
 * queued the record (doorbells: an increment and an Atomics.notify, nothing
 * that can call back into the host); the others run from one microtask per
 * burst of records, and only if the file is still readable then, so user
 * code never runs inside a faulting DMA or an event report.
 */
export interface ReadyHook {
  /** Called when records were queued (see `sync`). */
  readonly notify: () => void;
  /** Run at once, in the queuing code. */
  readonly sync?: boolean;
  /** The fd the subscription was made through: closing that fd ends it. */
  readonly fd?: number;
  /** Called when the subscription ends because its fd was closed. */
  readonly hangup?: () => void;
}

export abstract class KFile {
  private refs = 1;
  constructor(readonly path: string) {}

  get(): this { this.refs++; return this; }

  put(): void {
    if (--this.refs === 0) this.release();
  }

  /** Called once, when the last reference is dropped. */
  protected release(): void {}

  /** The file's unlocked_ioctl; a file without one answers ENOTTY. */
  ioctl(_request: number, _arg: Uint8Array): number { throw new SysError('ENOTTY'); }
  /** Without a read method Linux answers EINVAL (vfs_read: no f_op->read). */
  read(_buf: Uint8Array): number { throw new SysError('EINVAL'); }
  write(_buf: Uint8Array): number { throw new SysError('EINVAL'); }
  poll(events: number): number { return DEFAULT_POLLMASK & (events | POLLERR | POLLHUP); }

  // ---- readiness (eventfd-style notification) --------------------------------

  private hooks: ReadyHook[] | null = null;
  private scheduled = false;

  /**
   * Subscribe to "records were queued". Returns the unsubscribe function.
   * An asynchronous hook subscribed while the file is already readable is
   * called from a microtask, so a record queued before the subscription is
   * not missed.
   */
  watch(hook: ReadyHook): () => void {
    (this.hooks ??= []).push(hook);
    if (!hook.sync && this.poll(POLLIN) & POLLIN) this.schedule();
    return () => {
      const i = this.hooks?.indexOf(hook) ?? -1;
      if (i >= 0) this.hooks!.splice(i, 1);
    };
  }

  /** How many readiness subscriptions the file has. */
  protected get watchers(): number { return this.hooks?.length ?? 0; }

  /**
   * The file's wake_up_interruptible_poll: a record was queued. Sync hooks
   * run now; the others once per burst from a microtask.
   */
  protected signalReadable(): void {
    const hooks = this.hooks;
    if (hooks === null || hooks.length === 0) return;
    for (let i = 0; i < hooks.length; i++) if (hooks[i].sync) hooks[i].notify();
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (!(this.poll(POLLIN) & POLLIN)) return;
      // A copy: a hook may unsubscribe (a one-shot waiter) or subscribe.
      for (const h of this.hooks?.slice() ?? []) {
        if (h.sync) continue;
        try { h.notify(); } catch (e) { queueMicrotask(() => { throw e; }); }
      }
    });
  }

  /** The fd `fd` of this file was closed: the subscriptions made through it end (their hangup is called). */
  closeFd(fd: number): void {
    const hooks = this.hooks;
    if (!hooks) return;
    for (let i = hooks.length - 1; i >= 0; i--) {
      const h = hooks[i];
      if (h.fd !== fd) continue;
      hooks.splice(i, 1);
      h.hangup?.();
    }
  }
}
