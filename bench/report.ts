// The benchmark's written outputs: the Markdown summary (latest.md) and the
// SVG chart of the scaling curves (scaling.svg), by hand: no dependency.

export interface Case {
  /** Stable id: the same case keeps its id from run to run. */
  id: string;
  what: string;
  value: number;
  unit: string;
  baseline: string;
  baselineValue: number;
  /** As the target reads it: "<= 1.5x" is value / baseline, ">= 8x faster" baseline / value. */
  ratio: number;
  /** null: a measurement or a curve point, with no target. */
  target: string | null;
  met: boolean | null;
  /** Extra figures of the case (IOTLB hit rate, sizes). */
  detail?: Record<string, number | string>;
}

export interface Curve {
  id: string;
  title: string;
  /** Which chart: translation cost against mappings, against the working set, or map cost against size. */
  panel: 'mappings' | 'wset' | 'map';
  points: { x: number; y: number; id: string }[];
}

interface Results {
  date: string;
  quick: boolean;
  seconds: number;
  machine: { cpu?: string; cores: number; memory: number; os: string; arch: string };
  engine: Record<string, unknown> & { node: string; v8: string; git: { commit: string; dirty: boolean } | null; wasm: { sha256: string; bytes: number } | null; iotlb: { entries: number; ways: number } };
  cases: Case[];
  curves: Curve[];
}

function num(v: number): string {
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function sizeName(bytes: number): string {
  return bytes >= 2 ** 30 ? `${bytes / 2 ** 30} GiB` : bytes >= 2 ** 20 ? `${bytes / 2 ** 20} MiB` : `${bytes / 1024} KiB`;
}
function countName(n: number): string {
  return n >= 2 ** 20 ? `${n / 2 ** 20}M` : n >= 1024 ? `${n / 1024}K` : `${n}`;
}
const PANELS: Record<Curve['panel'], { title: string; x: string; xfmt: (x: number) => string; y: string }> = {
  mappings: { title: 'Translation cost against the number of mappings', x: '4 KiB mappings', xfmt: countName, y: 'ns per translation' },
  wset: { title: 'Translation cost against the working set', x: 'working set / IOTLB entries', xfmt: (x) => `${x}x`, y: 'ns per translation' },
  map: { title: 'Map and unmap cost against the mapping size', x: 'mapping size', xfmt: sizeName, y: 'ns per call' },
};

/** Markdown table cell text ("<= 1.5x" stays as it is: no tag starts with a space). */
function esc(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/<(?=[A-Za-z/])/g, '&lt;');
}
/** SVG text. */
function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function renderMarkdown(r: Results): string {
  const targeted = r.cases.filter((c) => c.met !== null);
  const missed = targeted.filter((c) => !c.met);
  const onCurve = new Set(r.curves.flatMap((c) => c.points.map((p) => p.id)));
  const info = r.cases.filter((c) => c.met === null && !onCurve.has(c.id));
  const L: string[] = [];
  L.push('# wasm-viommu benchmark results', '');
  L.push(`${r.quick ? 'Quick run' : 'Full run'} of \`npm run bench\`, ${r.date}, ${r.seconds} s.`, '');
  const g = r.engine.git;
  L.push(`- Machine: ${r.machine.cpu ?? '?'} x ${r.machine.cores}, ${(r.machine.memory / 2 ** 30).toFixed(0)} GiB, ${r.machine.os} (${r.machine.arch}).`);
  L.push(`- Engine: Node ${r.engine.node} (V8 ${r.engine.v8})${g ? `, commit ${g.commit.slice(0, 12)}${g.dirty ? ' with uncommitted engine changes' : ''}` : ''}${r.engine.wasm ? `, release.wasm ${r.engine.wasm.bytes} bytes (sha256 ${r.engine.wasm.sha256.slice(0, 12)})` : ''}; IOTLB ${r.engine.iotlb.entries} entries, ${r.engine.iotlb.ways}-way.`);
  L.push('- Every ratio compares two figures taken in this same run (absolute times drift 20-30 % between runs on these machines); a case and its measured baseline are timed in alternation (A, B, A, B, ...) and the medians compared; the IOAS cases compare with the absolute figures of the issue.', '');

  L.push(`## Targets: ${targeted.length - missed.length} of ${targeted.length} met`, '');
  L.push('| case | what | value | baseline | ratio | target | result |', '|---|---|---:|---|---:|---|---|');
  for (const c of targeted) {
    L.push(`| \`${c.id}\` | ${esc(c.what)} | ${num(c.value)} ${c.unit} | ${esc(c.baseline)}: ${num(c.baselineValue)} | ${c.ratio.toFixed(2)} | ${esc(c.target ?? '')} | ${c.met ? 'met' : '**MISSED**'} |`);
  }
  L.push('');
  L.push('## Missed targets', '');
  if (missed.length === 0) L.push('None.');
  for (const c of missed) {
    L.push(`- \`${c.id}\`: ratio **${c.ratio.toFixed(2)}** against a target of ${esc(c.target ?? '')} (${num(c.value)} ${c.unit} against ${esc(c.baseline)} ${num(c.baselineValue)}).`);
  }
  L.push('');

  if (info.length) {
    L.push('## Measurements with no target', '');
    L.push('| case | what | value | baseline | ratio |', '|---|---|---:|---|---:|');
    for (const c of info) L.push(`| \`${c.id}\` | ${esc(c.what)} | ${num(c.value)} ${c.unit} | ${esc(c.baseline)}: ${num(c.baselineValue)} | ${c.ratio.toFixed(2)} |`);
    L.push('');
  }

  L.push('## Scaling (issue 6, case 7)', '', '![scaling curves](scaling.svg)', '');
  L.push('Translation points: `translateBatch` of 256 IOVAs per call from a pool of 131072 pre-drawn IOVAs, the IOTLB flushed before each point (a hit costs more once its entry sits in a later way of a full set: compare the hot points with `iotlb.hit.batch.*`, measured with a full IOTLB). Map points: `Engine.ptMap`/`ptUnmap` alone (table edits, no pinning), one call per mapping, neighbouring IOVAs.', '');
  const byId = new Map(r.cases.map((c) => [c.id, c]));
  for (const panel of ['mappings', 'wset', 'map'] as const) {
    const cs = r.curves.filter((c) => c.panel === panel);
    if (!cs.length) continue;
    const P = PANELS[panel];
    L.push(`### ${P.title}`, '');
    const xs = [...new Set(cs.flatMap((c) => c.points.map((p) => p.x)))].sort((a, b) => a - b);
    L.push(`| ${P.x} | ${cs.map((c) => esc(c.title)).join(' | ')} |`, `|---|${cs.map(() => '---:').join('|')}|`);
    for (const x of xs) {
      const cells = cs.map((c) => {
        const p = c.points.find((q) => q.x === x);
        if (!p) return '';
        const hit = byId.get(p.id)?.detail?.hitRate;
        return `${num(p.y)} ns${typeof hit === 'number' ? ` (hits ${(hit * 100).toFixed(0)} %)` : ''}`;
      });
      L.push(`| ${P.xfmt(x)} | ${cells.join(' | ')} |`);
    }
    L.push('');
  }

  L.push('## How the baselines are taken', '');
  L.push('- **naive TS**: the tests\' reference model (`test/reference/`): a `Map`-keyed IOTLB over a `DataView` walker, called from the same loop.');
  L.push('- **empty wasm call**: `empty(a, b, c, d)` of `bench/limit.ts`, the signature of `translate`, called from the same loop; **minimal wasm call**: `Engine.ctxDomain` (one load in the engine).');
  L.push('- **limit loop**: `batchLimit` of `bench/limit.ts` (asc -O3 --runtime stub), instantiated over the engine\'s own memory: for each IOVA of the same BATCH_IN it does one load (a direct-mapped u64 slot of a table as large as the IOTLB, same hash) and one compare, and stores the address to BATCH_OUT. It handles no miss, no permission, no context, no counter: a floor, not an IOTLB.');
  L.push('- **dependent-load latency**: `chase` of `bench/limit.ts` over 256 MiB of wasm memory (every 64 B line, a random page order, each load a cache and TLB miss), timed in alternation with the cold walk. The cold walk is a dependent chain of `translate` calls over random 48-bit IOVAs whose tables are spread over the size shown; the IOTLB miss rate is given.');
  L.push('- **warm single-stage walk**: `walk.warm.4level`, timed in alternation with the nested walks (`walk.nested.warm.*`): `translateBatch` (N = 256) over the same 4 x IOTLB-entries distinct pages in one fixed shuffled cycle, so that every translation misses the IOTLB (the miss rate is given) and walks tables that stay in the cache; each figure is ns per IOVA (probe, walk, fill), both stages 4 KiB leaves or stage 2 in large leaves (`s2_large`), every path checked to give the same physical addresses.');
  L.push('- **raw copy**: `Uint8Array.set` of the same bytes from the same place; **target**: the issue\'s absolute figure.');
  L.push('');
  return L.join('\n');
}

// ---- SVG ----------------------------------------------------------------------------

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

export function renderSvg(curves: Curve[], iotlbEntries: number): string {
  const PW = 420, PH = 300, M = { l: 62, r: 14, t: 34, b: 96 };
  const panels = (['mappings', 'wset', 'map'] as const).filter((p) => curves.some((c) => c.panel === p && c.points.length));
  const W = panels.length * PW, H = PH;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  o.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  panels.forEach((panel, pi) => {
    const P = PANELS[panel];
    const cs = curves.filter((c) => c.panel === panel && c.points.length);
    const pts = cs.flatMap((c) => c.points);
    const x0 = pi * PW + M.l, x1 = (pi + 1) * PW - M.r, y0 = PH - M.b, y1 = M.t;
    const lx = pts.map((p) => Math.log10(p.x)), ly = pts.map((p) => Math.log10(Math.max(p.y, 1e-3)));
    let xmin = Math.min(...lx), xmax = Math.max(...lx);
    if (xmax === xmin) { xmin -= 0.5; xmax += 0.5; }
    const pad = (xmax - xmin) * 0.04; xmin -= pad; xmax += pad;
    const ymin = Math.floor(Math.min(...ly)), ymax = Math.max(Math.ceil(Math.max(...ly)), ymin + 1);
    const sx = (x: number) => x0 + ((Math.log10(x) - xmin) / (xmax - xmin)) * (x1 - x0);
    const sy = (y: number) => y0 - ((Math.log10(Math.max(y, 1e-3)) - ymin) / (ymax - ymin)) * (y0 - y1);
    o.push(`<text x="${(x0 + x1) / 2}" y="16" text-anchor="middle" font-size="12" font-weight="bold">${xml(P.title)}</text>`);
    // grid and y ticks: decades, and 2 and 5 between them when there are few decades
    for (let d = ymin; d <= ymax; d++) {
      for (const m of ymax - ymin <= 3 ? [1, 2, 5] : [1]) {
        const v = m * 10 ** d;
        if (Math.log10(v) > ymax + 1e-9) continue;
        const y = sy(v);
        o.push(`<line x1="${x0}" y1="${y.toFixed(1)}" x2="${x1}" y2="${y.toFixed(1)}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
        o.push(`<text x="${x0 - 4}" y="${(y + 4).toFixed(1)}" text-anchor="end">${v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : v}</text>`);
      }
    }
    // x ticks at the measured points
    const xs = [...new Set(pts.map((p) => p.x))].sort((a, b) => a - b);
    for (const x of xs) {
      const X = sx(x);
      o.push(`<line x1="${X.toFixed(1)}" y1="${y0}" x2="${X.toFixed(1)}" y2="${y1}" stroke="#f2f2f2"/>`);
      o.push(`<text x="${X.toFixed(1)}" y="${y0 + 14}" text-anchor="middle">${xml(P.xfmt(x))}</text>`);
    }
    if (panel === 'wset' || panel === 'mappings') {
      // the IOTLB's reach
      const xr = panel === 'wset' ? 1 : iotlbEntries;
      if (Math.log10(xr) >= xmin && Math.log10(xr) <= xmax) {
        const X = sx(xr);
        o.push(`<line x1="${X.toFixed(1)}" y1="${y0}" x2="${X.toFixed(1)}" y2="${y1}" stroke="#999" stroke-dasharray="4 3"/>`);
        o.push(`<text x="${(X + 3).toFixed(1)}" y="${y1 + 10}" fill="#666">IOTLB (${iotlbEntries})</text>`);
      }
    }
    o.push(`<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="none" stroke="#333"/>`);
    o.push(`<text x="${(x0 + x1) / 2}" y="${y0 + 30}" text-anchor="middle">${xml(P.x)} (log)</text>`);
    o.push(`<text transform="translate(${pi * PW + 14} ${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">${xml(P.y)} (log)</text>`);
    cs.forEach((c, ci) => {
      // map panel: one colour per leaf choice, unmap dashed
      const color = panel === 'map' ? COLORS[c.id.endsWith('.4k') ? 0 : 2] : COLORS[ci % COLORS.length];
      const dash = c.id.startsWith('scale.unmap') ? ' stroke-dasharray="5 3"' : '';
      const path = [...c.points].sort((a, b) => a.x - b.x).map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
      o.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
      for (const p of c.points) o.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${color}"><title>${xml(p.id)}: ${num(p.y)} ns</title></circle>`);
      const ly0 = y0 + 46 + ci * 13;
      o.push(`<line x1="${x0}" y1="${ly0 - 4}" x2="${x0 + 22}" y2="${ly0 - 4}" stroke="${color}" stroke-width="2"${dash}/>`);
      o.push(`<text x="${x0 + 28}" y="${ly0}">${xml(c.title)}</text>`);
    });
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}
