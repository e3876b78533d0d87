// Read-only views of the engine's own tables, for the page (and for anyone
// who wants to look inside): the live domains (I/O page tables) and the walk
// of one IOVA, level by level, with the raw PTE at each step.
//
// Every offset comes from the engine's exported layout (assembly/layout.ts,
// read by host/engine at instantiation as `engine.layout`); the entry bits
// are those assembly/pte.ts documents (VT-d 9.8, Arm ARM D8.3, AMD IOMMU 2.2.3).
// Nothing here writes to the engine's memory.

/** u32 of the control block. */
function ctrl(engine, offset) {
  const L = engine.layout;
  return new DataView(engine.bytes.buffer).getUint32(L.CTRL_BASE + offset, true);
}

/** Names of the entry formats (layout.ts FMT_*). */
export function formatName(engine, fmt) {
  const L = engine.layout;
  switch (fmt) {
    case L.FMT_VTD_SL: return 'VT-d second stage';
    case L.FMT_ARM_S2: return 'Arm VMSAv8-64 stage 2';
    case L.FMT_AMD_V1: return 'AMD v1';
    case L.FMT_X86_S1: return 'nested: x86-64 first stage';
    case L.FMT_ARM_S1: return 'nested: Arm stage 1';
    default: return `format ${fmt}`;
  }
}

/**
 * Every domain in use: id, entry format, levels, table pages held, leaf
 * bytes mapped, root table (byte address in linear memory) or, for a nested
 * domain, its stage-2 parent and the guest's stage-1 root.
 */
export function listDomains(engine) {
  const L = engine.layout;
  const dv = new DataView(engine.bytes.buffer);
  const table = ctrl(engine, L.CTRL_DOM_TABLE);
  const count = ctrl(engine, L.CTRL_DOMAINS);
  const out = [];
  for (let did = 1; did < count; did++) {
    const rec = table + did * L.DOM_SIZE;
    const root = dv.getUint32(rec + L.DOM_ROOT, true);
    if (root === 0) continue; // a free slot
    const format = dv.getUint32(rec + L.DOM_FORMAT, true);
    const nested = format >= L.FMT_NESTED;
    out.push({
      did,
      format,
      formatName: formatName(engine, format),
      nested,
      levels: dv.getUint32(rec + L.DOM_LEVELS, true),
      tables: dv.getUint32(rec + L.DOM_TABLES, true),
      mapped: Number(dv.getBigUint64(rec + L.DOM_MAPPED, true)),
      root: nested ? null : root * L.PAGE_SIZE,
      parent: nested ? dv.getUint32(rec + L.DOM_PARENT, true) : null,
      s1Root: nested ? dv.getBigUint64(rec + L.DOM_S1_ROOT, true) : null,
      dirtyTracking: (dv.getUint32(rec + L.DOM_FLAGS, true) & L.DOMF_DIRTY) !== 0,
    });
  }
  return out;
}

/** The ids of the domains in use (to see which one a call created). */
export function domainIds(engine) {
  return new Set(listDomains(engine).map((d) => d.did));
}

const bit = (v, n) => ((v >> BigInt(n)) & 1n) === 1n;
const bits = (v, hi, lo) => Number((v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));

/**
 * One entry decoded: present, leaf, the address it holds (next table or
 * output), and its flags, as assembly/pte.ts reads them.
 */
export function decodePte(engine, format, pte, level) {
  const L = engine.layout;
  if (format === L.FMT_VTD_SL) {
    // 63 TM | 51:12 address | 11 SNP | 9 D | 8 A | 7 PS | 6 IPAT | 5:3 EMT | 2 X | 1 W | 0 R
    const present = bit(pte, 0) || bit(pte, 1);
    const leaf = present && (level === 1 || bit(pte, 7));
    const flags = [];
    if (bit(pte, 0)) flags.push('R');
    if (bit(pte, 1)) flags.push('W');
    if (bit(pte, 2)) flags.push('X');
    if (level > 1 && bit(pte, 7)) flags.push('PS');
    if (bit(pte, 8)) flags.push('A');
    if (bit(pte, 9)) flags.push('D');
    if (bit(pte, 11)) flags.push('SNP');
    return { present, leaf, addr: pte & 0x000ffffffffff000n, flags, read: bit(pte, 0), write: bit(pte, 1) };
  }
  if (format === L.FMT_ARM_S2) {
    // 54:53 XN | 51 DBM | 49:12 OA | 10 AF | 9:8 OA[51:50] | 7:6 S2AP | 5:2 MemAttr | 1 T | 0 V
    const present = bit(pte, 0);
    const leaf = present && (level === 1 || !bit(pte, 1));
    const addr = (pte & 0x0003fffffffff000n) | (BigInt(bits(pte, 9, 8)) << 50n);
    const flags = [];
    if (present) flags.push('V');
    if (level > 1) flags.push(bit(pte, 1) ? 'table' : 'block');
    else if (bit(pte, 1)) flags.push('page');
    if (leaf) {
      if (bit(pte, 6)) flags.push('S2AP.R');
      if (bit(pte, 7)) flags.push('S2AP.W');
      if (bit(pte, 10)) flags.push('AF');
      if (bit(pte, 51)) flags.push('DBM');
      if (bits(pte, 54, 53)) flags.push(`XN=${bits(pte, 54, 53)}`);
      flags.push(`MemAttr=${bits(pte, 5, 2).toString(2).padStart(4, '0')}`);
    }
    return { present, leaf, addr, flags, read: leaf && bit(pte, 6), write: leaf && bit(pte, 7) };
  }
  if (format === L.FMT_AMD_V1) {
    // 62 IW | 61 IR | 60 FC | 59 U | 51:12 address | 11:9 NextLevel | 6 HD | 5 HA | 0 PR
    // Next Level 0: a leaf of this level's size; 7: a leaf whose size the
    // address encodes (the run of 1s from bit 12); else the level of the
    // table it points to, which may skip levels.
    const present = bit(pte, 0);
    const next = bits(pte, 11, 9);
    const leaf = present && (next === 0 || next === 7);
    let addr = pte & 0x000ffffffffff000n;
    let size;
    if (present && next === 7) {
      let n = 0;
      while (n < 40 && bit(pte, 12 + n)) n++;
      size = 1n << BigInt(13 + n);
      addr &= ~(size - 1n);
    }
    const flags = [];
    if (present) flags.push('PR');
    if (bit(pte, 61)) flags.push('IR');
    if (bit(pte, 62)) flags.push('IW');
    if (bit(pte, 60)) flags.push('FC');
    if (bit(pte, 59)) flags.push('U');
    if (bit(pte, 5)) flags.push('HA');
    if (bit(pte, 6)) flags.push('HD');
    flags.push(`NextLevel=${next}`);
    return { present, leaf, addr, size, next: leaf ? 0 : next, flags, read: bit(pte, 61), write: bit(pte, 62) };
  }
  return { present: false, leaf: false, addr: 0n, flags: ['(no host table: a nested domain)'], read: false, write: false };
}

/**
 * The walk of `iova` in domain `did`, one step per level from the root:
 * the table's address, the index the IOVA selects, the entry read there
 * and what it says. The last step is the leaf (with the output address) or
 * the entry that is not present. Host paging domains only (a nested
 * domain's tables are the guest's, walked through stage 2).
 */
export function walkIova(engine, did, iova) {
  iova = BigInt(iova);
  const L = engine.layout;
  const dom = listDomains(engine).find((d) => d.did === did);
  if (!dom) return { ok: false, error: `domain ${did} is not in use`, steps: [] };
  if (dom.nested) return { ok: false, error: `domain ${did} is nested (${dom.formatName}); its tables are the guest's`, steps: [] };
  const dv = new DataView(engine.bytes.buffer);
  const steps = [];
  let table = dom.root;
  for (let level = dom.levels; level >= 1;) {
    const shift = 12 + 9 * (level - 1);
    const index = Number((iova >> BigInt(shift)) & 511n);
    const at = table + index * 8;
    const pte = dv.getBigUint64(at, true);
    const d = decodePte(engine, dom.format, pte, level);
    const step = { level, shift, table, index, entryAddr: at, pte, ...d };
    steps.push(step);
    if (!d.present) return { ok: false, error: `not present at level ${level}`, domain: dom, steps };
    if (d.leaf) {
      const size = d.size ?? 1n << BigInt(shift);
      const pa = d.addr + (iova & (size - 1n));
      return { ok: true, domain: dom, steps, pa, size: Number(size), read: d.read, write: d.write };
    }
    if (d.addr >> 32n) return { ok: false, error: `level ${level} points outside linear memory`, domain: dom, steps };
    table = Number(d.addr);
    // AMD v1 names the next table's level (it may skip levels); the others go down one.
    const next = d.next ?? level - 1;
    if (!(next < level && next >= 1)) return { ok: false, error: `level ${level}: next level ${next} cannot be walked`, domain: dom, steps };
    level = next;
  }
  return { ok: false, error: 'no leaf at level 1', domain: dom, steps };
}

export const hex = (v, pad = 0) => '0x' + BigInt(v).toString(16).padStart(pad, '0');
