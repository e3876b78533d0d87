/**
 * A small C struct codec for the Linux uAPI, 64-bit little-endian ABI
 * (x86-64, arm64, riscv64).
 *
 * Layout rules are C's: each field sits at the next offset aligned to its
 * natural alignment, and sizeof is rounded up to the largest alignment in the
 * struct. `u64` and `le64` stand for `__aligned_u64` / `__aligned_le64`
 * (include/uapi/linux/types.h), which are 8-aligned on every ABI; on the
 * 64-bit ABI a plain `__u64` is 8-aligned too, so one type covers both.
 *
 * Offsets and per-type load/store functions are computed once, at define
 * time, so a get/set costs a field lookup, a bounds check
 * and a few byte loads or stores. Offsets are relative to bytes.byteOffset: a
 * subarray (of a WebAssembly.Memory, say) works as is.
 */

export type ScalarType = 'u8' | 'u16' | 'u32' | 's32' | 'u64' | 'le64';

/** `[name, type]` or `[name, type, count]` for a fixed-size array. */
export type FieldSpec =
  | readonly [name: string, type: ScalarType]
  | readonly [name: string, type: ScalarType, count: number];

/** number for 8/16/32-bit fields, bigint for 64-bit ones. */
export type ScalarValue<T extends ScalarType> = T extends 'u64' | 'le64' ? bigint : number;

/** What a write accepts: 64-bit fields also take a (safe-integer) number. */
export type ScalarInput<T extends ScalarType> = T extends 'u64' | 'le64' ? bigint | number : number;

type SpecValue<S> = S extends readonly [string, infer T extends ScalarType, number]
  ? ScalarValue<T>[]
  : S extends readonly [string, infer T extends ScalarType]
    ? ScalarValue<T>
    : never;

type SpecInput<S> = S extends readonly [string, infer T extends ScalarType, number]
  ? readonly ScalarInput<T>[]
  : S extends readonly [string, infer T extends ScalarType]
    ? ScalarInput<T>
    : never;

/** Aliases name another field of the same struct (a C anonymous union). */
export type AliasMap<F extends readonly FieldSpec[]> = Readonly<Record<string, F[number][0]>>;

type SpecOf<F extends readonly FieldSpec[], K> = Extract<F[number], readonly [K, ...unknown[]]>;

/** Every field name, aliases included. */
export type FieldName<F extends readonly FieldSpec[], A extends AliasMap<F> = {}> =
  | F[number][0]
  | (keyof A & string);

type Target<F extends readonly FieldSpec[], A extends AliasMap<F>, K> = K extends keyof A
  ? A[K]
  : K;

/** The decoded form of a struct. */
export type StructValues<F extends readonly FieldSpec[], A extends AliasMap<F> = {}> = {
  [K in FieldName<F, A>]: SpecValue<SpecOf<F, Target<F, A, K>>>;
};

/** The encodable form: every field optional, missing ones are 0. */
export type StructInput<F extends readonly FieldSpec[], A extends AliasMap<F> = {}> = {
  [K in FieldName<F, A>]?: SpecInput<SpecOf<F, Target<F, A, K>>>;
};

export interface FieldInfo {
  readonly name: string;
  readonly type: ScalarType;
  readonly offset: number;
  /** Bytes taken by the whole field (element size x count). */
  readonly size: number;
  /** Number of elements; 1 for a scalar field. */
  readonly count: number;
  readonly isArray: boolean;
}

export interface StructDef<F extends readonly FieldSpec[] = readonly FieldSpec[], A extends AliasMap<F> = {}> {
  readonly name: string;
  /** sizeof(struct), padding included. */
  readonly size: number;
  /** The struct's alignment (largest field alignment). */
  readonly align: number;
  /** Fields in declaration order. Aliases are not listed. */
  readonly fields: readonly FieldInfo[];
  offsetOf(field: FieldName<F, A>): number;
  /** offsetof(field) + sizeof(field), as the kernel's offsetofend(). */
  offsetofend(field: FieldName<F, A>): number;
  /**
   * Read the whole struct at bytes[byteOffset]. RangeError if the buffer is
   * shorter than sizeof: callers check a user-supplied length first.
   */
  decode(bytes: Uint8Array, byteOffset?: number): StructValues<F, A>;
  /**
   * Write `values` as a zero-initialised C struct: missing fields and padding
   * are 0. Without `into`, returns a new buffer of sizeof bytes; with it,
   * overwrites into[byteOffset, byteOffset + sizeof) and returns `into`. If a
   * value is refused (RangeError) that region is left partly written.
   */
  encode(values: StructInput<F, A>, into?: Uint8Array, byteOffset?: number): Uint8Array;
  /** Read one field; the buffer only needs to reach the field's end. */
  get<K extends FieldName<F, A>>(bytes: Uint8Array, field: K, byteOffset?: number): StructValues<F, A>[K];
  /** Write one field, leaving the rest of the struct as it is. */
  set<K extends FieldName<F, A>>(
    bytes: Uint8Array,
    field: K,
    value: NonNullable<StructInput<F, A>[K]>,
    byteOffset?: number,
  ): void;
}

const ELEMENT_SIZE: Readonly<Record<ScalarType, number>> = {
  u8: 1,
  u16: 2,
  u32: 4,
  s32: 4,
  u64: 8,
  le64: 8,
};

type Load = (b: Uint8Array, at: number) => number | bigint;
type Store = (b: Uint8Array, at: number, value: number | bigint) => void;

// Little-endian reads and writes straight on the bytes. A DataView would
// need `bytes.buffer`, which makes V8 move every small on-heap typed array
// off the heap: that cost more than the whole rest of an ioctl.
const u32At = (b: Uint8Array, at: number) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
function putU32(b: Uint8Array, at: number, x: number): void {
  b[at] = x; b[at + 1] = x >>> 8; b[at + 2] = x >>> 16; b[at + 3] = x >>> 24;
}
const TWO32 = 0x1_0000_0000;
function putU64(b: Uint8Array, at: number, x: number | bigint): void {
  if (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0) {
    putU32(b, at, x % TWO32);
    putU32(b, at + 4, Math.floor(x / TWO32));
    return;
  }
  const v = BigInt.asUintN(64, BigInt(x));
  putU32(b, at, Number(v & 0xffffffffn));
  putU32(b, at + 4, Number(v >> 32n));
}
function getU64(b: Uint8Array, at: number): bigint {
  const hi = u32At(b, at + 4);
  return hi === 0 ? BigInt(u32At(b, at)) : (BigInt(hi) << 32n) | BigInt(u32At(b, at));
}

// A C assignment truncates to the field width; so do these.
const LOAD: Readonly<Record<ScalarType, Load>> = {
  u8: (b, at) => b[at],
  u16: (b, at) => b[at] | (b[at + 1] << 8),
  u32: u32At,
  s32: (b, at) => u32At(b, at) | 0,
  u64: getU64,
  le64: getU64,
};

const STORE: Readonly<Record<ScalarType, Store>> = {
  u8: (b, at, x) => { b[at] = typeof x === 'number' ? x : Number(BigInt.asUintN(8, x)); },
  u16: (b, at, x) => { const v = typeof x === 'number' ? x : Number(BigInt.asUintN(16, x)); b[at] = v; b[at + 1] = v >>> 8; },
  u32: (b, at, x) => putU32(b, at, typeof x === 'number' ? x : Number(BigInt.asUintN(32, x))),
  s32: (b, at, x) => putU32(b, at, typeof x === 'number' ? x : Number(BigInt.asIntN(32, x))),
  u64: putU64,
  le64: putU64,
};

interface Accessor extends FieldInfo {
  readonly elementSize: number;
  readonly load: Load;
  readonly store: Store;
}

/** Throws unless bytes[start, start + length) exists. */
function checkRange(structName: string, bytes: Uint8Array, start: number, length: number): void {
  if (!Number.isInteger(start) || start < 0 || start + length > bytes.length) {
    throw new RangeError(
      `${structName}: ${length} bytes at offset ${start} do not fit in a buffer of ${bytes.length}`,
    );
  }
}

function read(acc: Accessor, view: Uint8Array, at: number): number | bigint | (number | bigint)[] {
  if (!acc.isArray) return acc.load(view, at);
  const out: (number | bigint)[] = new Array(acc.count);
  for (let i = 0; i < acc.count; i++) out[i] = acc.load(view, at + i * acc.elementSize);
  return out;
}

function write(structName: string, acc: Accessor, view: Uint8Array, at: number, value: unknown): void {
  if (!acc.isArray) {
    acc.store(view, at, value as number | bigint);
    return;
  }
  const items = value as readonly (number | bigint)[];
  if (items.length > acc.count) {
    throw new RangeError(`${structName}.${acc.name}: ${items.length} elements, room for ${acc.count}`);
  }
  for (let i = 0; i < acc.count; i++) acc.store(view, at + i * acc.elementSize, items[i] ?? 0);
}

/**
 * Describe a C struct. Pass the field list as a literal so that decode() and
 * encode() are typed by field name.
 *
 * @param aliases other names for a field, for anonymous unions such as
 *   `union { __u32 in_data_type; __u32 out_data_type; }`.
 */
export function defineStruct<const F extends readonly FieldSpec[], const A extends AliasMap<F> = {}>(
  name: string,
  fields: F,
  aliases?: A,
): StructDef<F, A> {
  const accessors: Accessor[] = [];
  const byName = new Map<string, Accessor>();
  let offset = 0;
  let align = 1;
  for (const spec of fields) {
    const [fieldName, type] = spec;
    const count = spec.length === 3 ? spec[2] : 1;
    if (byName.has(fieldName)) throw new TypeError(`${name}: duplicate field ${fieldName}`);
    if (!Number.isInteger(count) || count < 1) throw new TypeError(`${name}.${fieldName}: bad count ${count}`);
    const elementSize = ELEMENT_SIZE[type];
    offset = Math.ceil(offset / elementSize) * elementSize;
    align = Math.max(align, elementSize);
    const acc: Accessor = {
      name: fieldName,
      type,
      offset,
      size: elementSize * count,
      count,
      isArray: spec.length === 3,
      elementSize,
      load: LOAD[type],
      store: STORE[type],
    };
    accessors.push(acc);
    byName.set(fieldName, acc);
    offset += acc.size;
  }
  const size = Math.ceil(offset / align) * align;

  const aliasList: [string, Accessor][] = [];
  for (const [alias, target] of Object.entries(aliases ?? {})) {
    const acc = byName.get(target);
    if (acc === undefined || byName.has(alias)) throw new TypeError(`${name}: bad alias ${alias} -> ${target}`);
    aliasList.push([alias, acc]);
  }
  for (const [alias, acc] of aliasList) byName.set(alias, acc);

  const lookup = (field: string): Accessor => {
    const acc = byName.get(field);
    if (acc === undefined) throw new TypeError(`${name} has no field ${field}`);
    return acc;
  };

  const def: StructDef<F, A> = {
    name,
    size,
    align,
    fields: Object.freeze(
      accessors.map(({ name: n, type, offset: o, size: s, count, isArray }) =>
        Object.freeze({ name: n, type, offset: o, size: s, count, isArray }),
      ),
    ),
    offsetOf: (field) => lookup(field).offset,
    offsetofend: (field) => {
      const acc = lookup(field);
      return acc.offset + acc.size;
    },
    decode(bytes, byteOffset = 0) {
      checkRange(name, bytes, byteOffset, size);
      const view = bytes;
      const base = byteOffset;
      const out: Record<string, unknown> = {};
      for (const acc of accessors) out[acc.name] = read(acc, view, base + acc.offset);
      for (const [alias, acc] of aliasList) out[alias] = read(acc, view, base + acc.offset);
      return out as StructValues<F, A>;
    },
    encode(values, into, byteOffset = 0) {
      const target = into ?? new Uint8Array(size);
      checkRange(name, target, byteOffset, size);
      if (into !== undefined) target.fill(0, byteOffset, byteOffset + size);
      const view = target;
      const base = byteOffset;
      const given = values as Record<string, unknown>;
      for (const acc of accessors) {
        const v = given[acc.name];
        if (v !== undefined) write(name, acc, view, base + acc.offset, v);
      }
      for (const [alias, acc] of aliasList) {
        const v = given[alias];
        if (v !== undefined) write(name, acc, view, base + acc.offset, v);
      }
      return target;
    },
    get(bytes, field, byteOffset = 0) {
      const acc = lookup(field);
      checkRange(name, bytes, byteOffset, acc.offset + acc.size);
      return read(acc, bytes, byteOffset + acc.offset) as StructValues<F, A>[typeof field];
    },
    set(bytes, field, value, byteOffset = 0) {
      const acc = lookup(field);
      checkRange(name, bytes, byteOffset, acc.offset + acc.size);
      write(name, acc, bytes, byteOffset + acc.offset, value);
    },
  };
  return Object.freeze(def);
}

/** The decoded record type of a struct definition. */
export type Decoded<S> = S extends StructDef<infer F, infer A> ? StructValues<F, A> : never;

/** The encode() input type of a struct definition. */
export type Encodable<S> = S extends StructDef<infer F, infer A> ? StructInput<F, A> : never;
