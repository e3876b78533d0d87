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
}
