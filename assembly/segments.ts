// Segments of host physical memory: segment 0 is the engine's linear memory,
// the others are embedder buffers (an emulator's RAM) known only by size.
// Every leaf a walk returns is checked against its segment, so no table
// entry can send a DMA outside the memory it was given.

import { SEG_SIZE, SEG_MAX, SEG_PRESENT, ERR_FULL, ERR_INVAL, ERR_NOENT } from "./layout";
import { segTable, frameBase } from "./state";

// @ts-ignore: decorator
@inline function rec(seg: u32): usize { return segTable + <usize>seg * SEG_SIZE; }

/** Register a segment of `size` bytes (lo, hi); returns its id (>= 1) or ERR_*. */
export function segAdd(sizeLo: u32, sizeHi: u32): i32 {
  const size = (<u64>sizeHi << 32) | sizeLo;
  // An offset must fit the low word of a physical address.
  if (size == 0 || size > 0x100000000) return ERR_INVAL;
  for (let s: u32 = 1; s < SEG_MAX; s++) {
    if ((load<u32>(rec(s) + 8) & SEG_PRESENT) == 0) {
      store<u64>(rec(s), size);
      store<u32>(rec(s) + 8, SEG_PRESENT);
      return <i32>s;
    }
  }
  return ERR_FULL;
}

export function segRemove(seg: u32): i32 {
  if (seg == 0 || seg >= SEG_MAX || (load<u32>(rec(seg) + 8) & SEG_PRESENT) == 0) return ERR_NOENT;
  store<u64>(rec(seg), 0);
  store<u32>(rec(seg) + 8, 0);
  return 0;
}

/** Does [pa, pa + len) lie inside one present segment? */
// @ts-ignore: decorator
@inline export function physRangeOk(pa: u64, len: u64): bool {
  const seg = <u32>(pa >> 32);
  const off = pa & 0xffffffff;
  // In segment 0 only frames are memory a mapping may reach, never the
  // engine's own tables below frameBase.
  if (seg == 0) return off >= (<u64>frameBase << 12) && off + len <= (<u64>memory.size() << 16);
  if (seg >= SEG_MAX) return false;
  return (load<u32>(rec(seg) + 8) & SEG_PRESENT) != 0 && off + len <= load<u64>(rec(seg));
}

export function segCheck(seg: u32): i32 {
  return seg < SEG_MAX && (seg == 0 || (load<u32>(rec(seg) + 8) & SEG_PRESENT) != 0) ? 0 : ERR_INVAL;
}

