/**
 * Linux errno numbers as userspace sees them on x86-64 and arm64, from
 * include/uapi/asm-generic/errno-base.h (1..34) and
 * include/uapi/asm-generic/errno.h (35..). Kernel-internal codes such as
 * ENOIOCTLCMD (515) never reach userspace (the ioctl core turns it into
 * ENOTTY) and are deliberately absent.
 */

/**
 * Errno name -> positive Linux number. The aliases come last and share a
 * number with a canonical name: `#define EWOULDBLOCK EAGAIN` and
 * `#define EDEADLOCK EDEADLK` (asm-generic/errno.h), ENOTSUP (glibc's alias
 * of EOPNOTSUPP on Linux).
 */
export const Errno = Object.freeze({
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EBADE: 52,
  ENODATA: 61,
  ETIME: 62,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
  ECANCELED: 125,
  // aliases
  EWOULDBLOCK: 11,
  EDEADLOCK: 35,
  ENOTSUP: 95,
} as const);

export type ErrnoCode = keyof typeof Errno;

/** glibc's strerror() text; the type makes it cover every number above. */
const MESSAGE: Readonly<Record<(typeof Errno)[ErrnoCode], string>> = {
  1: 'Operation not permitted',
  2: 'No such file or directory',
  3: 'No such process',
  4: 'Interrupted system call',
  5: 'Input/output error',
  6: 'No such device or address',
  7: 'Argument list too long',
  8: 'Exec format error',
  9: 'Bad file descriptor',
  10: 'No child processes',
  11: 'Resource temporarily unavailable',
  12: 'Cannot allocate memory',
  13: 'Permission denied',
  14: 'Bad address',
  15: 'Block device required',
  16: 'Device or resource busy',
  17: 'File exists',
  18: 'Invalid cross-device link',
  19: 'No such device',
  20: 'Not a directory',
  21: 'Is a directory',
  22: 'Invalid argument',
  23: 'Too many open files in system',
  24: 'Too many open files',
  25: 'Inappropriate ioctl for device',
  26: 'Text file busy',
  27: 'File too large',
  28: 'No space left on device',
  29: 'Illegal seek',
  30: 'Read-only file system',
  31: 'Too many links',
  32: 'Broken pipe',
  33: 'Numerical argument out of domain',
  34: 'Numerical result out of range',
  35: 'Resource deadlock avoided',
  36: 'File name too long',
  37: 'No locks available',
  38: 'Function not implemented',
  39: 'Directory not empty',
  40: 'Too many levels of symbolic links',
  42: 'No message of desired type',
  52: 'Invalid exchange',
  61: 'No data available',
  62: 'Timer expired',
  75: 'Value too large for defined data type',
  77: 'File descriptor in bad state',
  90: 'Message too long',
  95: 'Operation not supported',
  98: 'Address already in use',
  110: 'Connection timed out',
  125: 'Operation canceled',
};

// First name wins, so aliases (listed last) never shadow the canonical name.
const NAME = new Map<number, ErrnoCode>();
for (const [code, n] of Object.entries(Errno) as [ErrnoCode, number][]) {
  if (!NAME.has(n)) NAME.set(n, code);
}

/** The canonical name of an errno number, 'EAGAIN' for 11 (or -11), else undefined. */
export function errnoName(errno: number): ErrnoCode | undefined {
  return NAME.get(Math.abs(errno));
}

/** strerror() text of a code. */
export function strerror(code: ErrnoCode): string {
  return MESSAGE[Errno[code]];
}

/**
 * A failed system call, as the host reports it: `errno` is the positive
 * Linux number, `code` the name it was raised with ('EBUSY').
 */
export class SysError extends Error {
  readonly errno: number;
  readonly code: ErrnoCode;

  constructor(code: ErrnoCode, message?: string) {
    if (!Object.hasOwn(Errno, code)) throw new TypeError(`unknown errno code ${String(code)}`);
    super(message ?? `${code}: ${strerror(code)}`);
    this.errno = Errno[code];
    this.code = code;
  }

  static {
    this.prototype.name = 'SysError';
  }
}
