// Little-endian u32 and u64 loads and stores straight on a byte array: the
// struct codec's, and the ioctl fast paths' (which read the caller's struct in
// place). Internal: the uapi index does not re-export it. A DataView would
// need `bytes.buffer`, which makes V8 move every small on-heap typed array
// off the heap: that cost more than the whole rest of an ioctl.

export const u32At = (b: Uint8Array, at: number) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
export function putU32(b: Uint8Array, at: number, x: number): void {
  b[at] = x; b[at + 1] = x >>> 8; b[at + 2] = x >>> 16; b[at + 3] = x >>> 24;
}
export const TWO32 = 0x1_0000_0000;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Highest word of a u64 below 2^53: such a value is an exact double. */
export const SAFE_HI = 0x20_0000;
export function putU64(b: Uint8Array, at: number, x: number | bigint): void {
  // ToUint32 (>>> 0) of a non-negative double is its value mod 2^32: no Math.floor, and no % (a libm call).
  if (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0) {
    putU32(b, at, x >>> 0);
    putU32(b, at + 4, (x / TWO32) >>> 0);
    return;
  }
  putU64Other(b, at, x);
}
/** putU64 of a bigint or of a number that is not a safe non-negative integer: apart, so that putU64 stays small enough to inline. */
function putU64Other(b: Uint8Array, at: number, x: number | bigint): void {
  // Values below 2^53 (every VA, IOVA and length in practice) as doubles:
  // one Number() costs a third of Number() of BigInt & and >> results.
  if (typeof x === 'bigint' && x >= 0n && x <= MAX_SAFE) {
    const n = Number(x);
    putU32(b, at, n >>> 0);
    putU32(b, at + 4, (n / TWO32) >>> 0);
    return;
  }
  const v = BigInt.asUintN(64, BigInt(x));
  putU32(b, at, Number(v & 0xffffffffn));
  putU32(b, at + 4, Number(v >> 32n));
}
/**
 * A u64 as a number when below 2^53, else -1: for a handler's fast path,
 * which leaves larger values to the bigint one (no BigInt made either way).
 */
export function u64Number(b: Uint8Array, at: number): number {
  // The bytes read here, not through u32At: a u32At left out of line (V8's inlining budget spent)
  // returns a half at or above 2^30 as a HeapNumber, garbage on every call.
  const hi = (b[at + 4] | (b[at + 5] << 8) | (b[at + 6] << 16) | (b[at + 7] << 24)) >>> 0;
  const lo = (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
  // hi 0 apart: a small value stays a small integer (a double made of it would be boxed wherever it goes).
  return hi === 0 ? lo : hi < SAFE_HI ? hi * TWO32 + lo : -1;
}
