// Capability registers built from field tables: each emulated unit lists the
// fields its specification defines with the value it reports, where the
// specification defines it and why, so that what GET_HW_INFO says and what
// the emulation does are written down in one place.

/** One field of a unit's capability register. */
export interface RegField<R extends string> {
  readonly reg: R;
  /** The specification's name for the field. */
  readonly name: string;
  /** Lowest bit and width in the register. */
  readonly lsb: number;
  readonly width: number;
  readonly value: number;
  /** Where the specification defines the field (and the behaviour it describes). */
  readonly spec: string;
  /** Why this unit reports that value. */
  readonly why: string;
  /** Set for a capability a later issue emulates: what that issue must provide. */
  readonly planned?: string;
}

/**
 * Assemble `bits`-wide registers from a field table. A value that does not
 * fit its field, or two fields sharing a bit, throw: a bug in the table.
 */
export function packRegisters<R extends string>(unit: string, names: readonly R[], bits: number, fields: readonly RegField<R>[]): Record<R, bigint> {
  const regs = Object.fromEntries(names.map((n) => [n, 0n])) as Record<R, bigint>;
  const used = Object.fromEntries(names.map((n) => [n, 0n])) as Record<R, bigint>;
  for (const f of fields) {
    if (f.lsb < 0 || f.width < 1 || f.lsb + f.width > bits || !Number.isInteger(f.value) || f.value < 0 || BigInt(f.value) >= 1n << BigInt(f.width)) {
      throw new RangeError(`${unit} ${f.reg}.${f.name}: ${f.value} does not fit bits ${f.lsb + f.width - 1}:${f.lsb}`);
    }
    const mask = ((1n << BigInt(f.width)) - 1n) << BigInt(f.lsb);
    if (used[f.reg] & mask) throw new RangeError(`${unit} ${f.reg}.${f.name} overlaps another field`);
    used[f.reg] |= mask;
    regs[f.reg] |= BigInt(f.value) << BigInt(f.lsb);
  }
  return regs;
}

/** A field's value read back from its register's value. */
export function fieldOf<R extends string>(unit: string, fields: readonly RegField<R>[], reg: R, name: string, value: bigint): number {
  const f = fields.find((x) => x.reg === reg && x.name === name);
  if (!f) throw new RangeError(`no ${unit} ${reg} field ${name}`);
  return Number((value >> BigInt(f.lsb)) & ((1n << BigInt(f.width)) - 1n));
}
