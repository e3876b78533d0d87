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

import { u32At, putU32, putU64, TWO32, SAFE_HI } from './le.js';

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
  /**
   * Write back, over `into` (which holds the bytes `before` was decoded from),
   * the fields of `values` that differ from `before`; array fields are
   * written whole. The result is the bytes encode() would give, except that
   * padding keeps its bytes (as a kernel's buffer keeps the user's), and a
   * field changed under one name of a union is kept even when the other
   * name is not (encode() writes aliases last, whatever they hold). For the
   * copy back of an ioctl: a handler changes one or two fields, and each
   * u64 field written costs a bigint conversion.
   */
  encodeChanged(values: StructValues<F, A>, before: StructValues<F, A>, into: Uint8Array, byteOffset?: number): void;
  /**
   * A shallow copy of decoded values (the `before` of encodeChanged): one
   * object literal per struct, where a spread at a site that sees every
   * struct goes through V8's slow generic copy.
   */
  snapshot(values: StructValues<F, A>): StructValues<F, A>;
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


function getU64(b: Uint8Array, at: number): bigint {
  const lo = u32At(b, at), hi = u32At(b, at + 4);
  return hi < SAFE_HI ? BigInt(hi * TWO32 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/** Scalar types as small integers: one switch instead of a call through a table (a megamorphic call site). */
const T_U8 = 0, T_U16 = 1, T_U32 = 2, T_S32 = 3, T_U64 = 4;
const TYPE_CODE: Readonly<Record<ScalarType, number>> = { u8: T_U8, u16: T_U16, u32: T_U32, s32: T_S32, u64: T_U64, le64: T_U64 };

function loadScalar(code: number, b: Uint8Array, at: number): number | bigint {
  switch (code) {
    case T_U32: return u32At(b, at);
    case T_U64: return getU64(b, at);
    case T_U8: return b[at];
    case T_U16: return b[at] | (b[at + 1] << 8);
    default: return u32At(b, at) | 0;
  }
}

// A C assignment truncates to the field width; so do these.
function storeU32(b: Uint8Array, at: number, x: number | bigint): void {
  putU32(b, at, typeof x === 'number' ? x : Number(BigInt.asUintN(32, x)));
}
function storeScalar(code: number, b: Uint8Array, at: number, x: number | bigint): void {
  switch (code) {
    case T_U32: storeU32(b, at, x); return;
    case T_U64: putU64(b, at, x); return;
    case T_U8: b[at] = typeof x === 'number' ? x : Number(BigInt.asUintN(8, x)); return;
    case T_U16: { const v = typeof x === 'number' ? x : Number(BigInt.asUintN(16, x)); b[at] = v; b[at + 1] = v >>> 8; return; }
    default: putU32(b, at, typeof x === 'number' ? x : Number(BigInt.asIntN(32, x)));
  }
}

interface Accessor extends FieldInfo {
  readonly elementSize: number;
  readonly code: number;
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
  if (!acc.isArray) return loadScalar(acc.code, view, at);
  const out: (number | bigint)[] = new Array(acc.count);
  for (let i = 0; i < acc.count; i++) out[i] = loadScalar(acc.code, view, at + i * acc.elementSize);
  return out;
}

function write(structName: string, acc: Accessor, view: Uint8Array, at: number, value: unknown): void {
  if (!acc.isArray) {
    storeScalar(acc.code, view, at, value as number | bigint);
    return;
  }
  const items = value as readonly (number | bigint)[];
  if (items.length > acc.count) {
    throw new RangeError(`${structName}.${acc.name}: ${items.length} elements, room for ${acc.count}`);
  }
  for (let i = 0; i < acc.count; i++) storeScalar(acc.code, view, at + i * acc.elementSize, items[i] ?? 0);
}

type DecodeFn = (b: Uint8Array, o: number) => Record<string, unknown>;
type EncodeFn = (v: Record<string, unknown>, t: Uint8Array, o: number) => void;
type EncodeChangedFn = (v: Record<string, unknown>, w: Record<string, unknown>, t: Uint8Array, o: number) => void;
type SnapshotFn = (v: Record<string, unknown>) => Record<string, unknown>;

/**
 * decode and encode specialised to one struct: straight-line code with the
 * field names as literal property names, so that V8 sees one object shape
 * per struct, where the generic loops below make keyed accesses over every
 * struct's names (megamorphic: 250-400 ns a struct, the larger part of an
 * ioctl). Generated from the field table alone (C identifiers, offsets, type
 * codes; nothing a caller passes). Where code generation is refused (a
 * Content-Security-Policy without 'unsafe-eval'), null: the loops serve.
 */
function specialise(name: string, size: number, accessors: readonly Accessor[], aliasList: readonly [string, Accessor][]): { decode: DecodeFn; encode: EncodeFn; encodeOver: EncodeFn; encodeChanged: EncodeChangedFn; snapshot: SnapshotFn } | null {
  const fields: [string, Accessor][] = [...accessors.map((a): [string, Accessor] => [a.name, a]), ...aliasList];
  const idx = (acc: Accessor) => accessors.indexOf(acc);
  // u32 and u64 fields (nearly all of them) call their own load or store
  // directly: through loadScalar / storeScalar's switch they cost a call
  // that V8 did not inline, on every field of every ioctl.
  const rd = (acc: Accessor) => (acc.isArray ? `read(A[${idx(acc)}], b, o + ${acc.offset})`
    : acc.code === T_U32 ? `U32(b, o + ${acc.offset})` : acc.code === T_U64 ? `U64(b, o + ${acc.offset})` : `L(${acc.code}, b, o + ${acc.offset})`);
  // A number into a u32 or u64 field is stored inline, byte by byte (a u64
  // when a safe non-negative integer: its halves by ToUint32): the calls,
  // however small, used up V8's inlining budget (counted in bytecode) before
  // a struct's last fields. Anything else goes through P32 / P64.
  const bytes = (at: number, v: string) => [0, 1, 2, 3].map((k) => `t[o + ${at + k}] = ${k === 0 ? v : `${v} >>> ${8 * k}`};`).join(' ');
  const wr = (acc: Accessor) => (acc.isArray ? `write(N, A[${idx(acc)}], t, o + ${acc.offset}, x)`
    : acc.code === T_U32 ? `if (typeof x === 'number') { ${bytes(acc.offset, 'x')} } else P32(t, o + ${acc.offset}, x)`
    : acc.code === T_U64 ? `if (typeof x === 'number' && x >= 0 && Number.isSafeInteger(x)) { const l = x >>> 0, h = (x / 4294967296) >>> 0; ${bytes(acc.offset, 'l')} ${bytes(acc.offset + 4, 'h')} } else P64(t, o + ${acc.offset}, x)`
    : `S(${acc.code}, t, o + ${acc.offset}, x)`);
  // encodeOver: encode() over a used buffer without a fill() first (a
  // third of a small struct's encode): a scalar field that no alias shares
  // is written always, 0 when missing; padding, arrays and union members
  // are zeroed byte by byte (fill() past 16 bytes), then written as encode() does.
  const shared = new Set(aliasList.map(([, acc]) => acc));
  const simple = (acc: Accessor) => !acc.isArray && !shared.has(acc);
  const zero: string[] = [];
  const zeroSpan = (from: number, to: number) => {
    if (to - from > 16) zero.push(`t.fill(0, o + ${from}, o + ${to});`);
    else for (let k = from; k < to; k++) zero.push(`t[o + ${k}] = 0;`);
  };
  let end = 0;
  for (const acc of accessors) {
    zeroSpan(end, acc.offset);
    if (!simple(acc)) zeroSpan(acc.offset, acc.offset + acc.size);
    end = acc.offset + acc.size;
  }
  zeroSpan(end, size);
  const body = `return [
    function decode(b, o) { return { ${fields.map(([n, acc]) => `${JSON.stringify(n)}: ${rd(acc)}`).join(', ')} }; },
    function encode(v, t, o) { let x; ${fields.map(([n, acc]) => `x = v[${JSON.stringify(n)}]; if (x !== undefined) ${wr(acc)};`).join(' ')} },
    function encodeOver(v, t, o) { let x; ${zero.join(' ')} ${fields.map(([n, acc]) => (simple(acc) && n === acc.name
      ? `x = v[${JSON.stringify(n)}]; if (x === undefined) x = 0; ${wr(acc)};`
      : `x = v[${JSON.stringify(n)}]; if (x !== undefined) ${wr(acc)};`)).join(' ')} },
    function snapshot(v) { return { ${fields.map(([n]) => `${JSON.stringify(n)}: v[${JSON.stringify(n)}]`).join(', ')} }; },
    function encodeChanged(v, w, t, o) { let x; ${fields.map(([n, acc]) => `x = v[${JSON.stringify(n)}]; if (x !== undefined${acc.isArray ? '' : ` && x !== w[${JSON.stringify(n)}]`}) ${wr(acc)};`).join(' ')} },
  ];`;
  try {
    const [decode, encode, encodeOver, snapshot, encodeChanged] = new Function('L', 'S', 'U32', 'U64', 'P32', 'P64', 'read', 'write', 'A', 'N', body)(
      loadScalar, storeScalar, u32At, getU64, storeU32, putU64, read, write, accessors, name);
    return { decode, encode, encodeOver, encodeChanged, snapshot };
  } catch {
    return null;
  }
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
      code: TYPE_CODE[type],
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

  /** The decoded object's shape: every field and alias, with a value of its kind. */
  const template: Record<string, unknown> = {};
  const zero = (acc: Accessor) => (acc.isArray ? [] : acc.code === T_U64 ? 0n : 0);
  for (const acc of accessors) template[acc.name] = zero(acc);
  for (const [alias, acc] of aliasList) template[alias] = zero(acc);

  const fast = specialise(name, size, accessors, aliasList);

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
      if (fast) return fast.decode(bytes, byteOffset) as StructValues<F, A>;
      const view = bytes;
      const base = byteOffset;
      // A copy of the template has every field already, with the final
      // hidden class: the stores below overwrite, they do not add properties.
      const out: Record<string, unknown> = { ...template };
      for (const acc of accessors) out[acc.name] = read(acc, view, base + acc.offset);
      for (const [alias, acc] of aliasList) out[alias] = read(acc, view, base + acc.offset);
      return out as StructValues<F, A>;
    },
    encode(values, into, byteOffset = 0) {
      const target = into ?? new Uint8Array(size);
      checkRange(name, target, byteOffset, size);
      if (fast) {
        (into === undefined ? fast.encode : fast.encodeOver)(values as Record<string, unknown>, target, byteOffset);
        return target;
      }
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
    encodeChanged(values, before, into, byteOffset = 0) {
      checkRange(name, into, byteOffset, size);
      const given = values as Record<string, unknown>, old = before as Record<string, unknown>;
      if (fast) { fast.encodeChanged(given, old, into, byteOffset); return; }
      for (const [field, acc] of [...accessors.map((a): [string, Accessor] => [a.name, a]), ...aliasList]) {
        const v = given[field];
        if (v !== undefined && (acc.isArray || v !== old[field])) write(name, acc, into, byteOffset + acc.offset, v);
      }
    },
    snapshot(values) {
      return (fast ? fast.snapshot(values as Record<string, unknown>) : { ...values }) as StructValues<F, A>;
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
