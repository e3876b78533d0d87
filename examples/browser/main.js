// The page: runs the scenario (scenario.js) on the page's thread and shows
// it live, then the quick benchmark (bench.js), then the same scenario in a
// Web Worker. "wasm-viommu" is the package's ESM build (dist/index.js),
// mapped by the import map in index.html: no bundler, no plugin.
//
// URL parameters: ?pace=MS (queue steps, default 250), ?bench=0 / ?worker=0
// to skip those parts, ?sample=MS (benchmark sample length, default 20).

import * as lib from 'wasm-viommu';
import { runScenario, IOVA } from './scenario.js';
import { runQuickBench } from './bench.js';
import { listDomains, walkIova, hex } from './inspect.js';

const params = new URLSearchParams(location.search);
const num = (k, d) => (params.has(k) ? Number(params.get(k)) : d);
const PACE = num('pace', 250);

const $ = (sel) => document.querySelector(sel);
/** h('tag.class', { attrs }, ...children) */
function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const fmtNs = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} us` : `${ns.toFixed(1)} ns`);
const kib = (n) => (n >= 1 << 20 && n % (1 << 20) === 0 ? `${n / (1 << 20)} MiB` : n % 1024 === 0 ? `${(n / 1024).toLocaleString('en')} KiB` : `${n} B`);

const state = { host: null, devices: [], stepsEl: $('#steps'), running: true };
document.body.dataset.state = 'running';

function fail(err) {
  const msg = String(err?.stack ?? err);
  document.body.dataset.state = 'error';
  $('#error').hidden = false;
  $('#error').textContent = msg;
  console.error(err);
}
addEventListener('error', (e) => fail(e.error ?? e.message));
addEventListener('unhandledrejection', (e) => fail(e.reason));

// ---- live panels ---------------------------------------------------------------

function renderObjects(objects) {
  const rows = objects.map((o) => h('tr', { dataset: { type: o.type } }, h('td.num', {}, o.id), h('td', {}, h('span.tag', { dataset: { type: o.type } }, o.type)), h('td', {}, o.detail)));
  $('#objects tbody').replaceChildren(...rows);
  const count = (t) => objects.filter((o) => o.type.startsWith(t)).length;
  $('#object-counts').textContent = `${count('IOAS')} IOAS, ${count('HWPT')} HWPTs, ${count('DEVICE')} devices, ${objects.length} objects`;
}

function renderMappings(mappings) {
  $('#mappings').replaceChildren(...mappings.map((m) =>
    h('li', {}, `IOAS ${m.ioas}: IOVA ${hex(m.iova)} + ${kib(m.length)} → VA ${hex(m.va)} (${m.prot})`)));
}

let lastStats = '';
function renderStats() {
  if (state.host) {
    const s = state.host.engine.stats();
    const key = `${s.hits},${s.misses},${s.walks},${s.faults},${s.invalidations}`;
    if (key !== lastStats) {
      lastStats = key;
      const rate = s.hits + s.misses ? s.hits / (s.hits + s.misses) : 0;
      $('#hit-rate').textContent = `${(rate * 100).toFixed(2)} %`;
      $('#hit-bar').style.width = `${(rate * 100).toFixed(2)}%`;
      for (const k of ['hits', 'misses', 'walks', 'faults', 'invalidations']) $(`#stat-${k}`).textContent = s[k].toLocaleString('en');
    }
  }
  requestAnimationFrame(renderStats);
}
requestAnimationFrame(renderStats);

function renderFaultQueue(fq) {
  $('#fq-readable').textContent = fq.readable ? 'POLLIN: records waiting' : 'empty';
  $('#fq-readable').dataset.on = fq.readable;
  $('#fq-slots').replaceChildren(...fq.queued.map((q) =>
    h('div.slot', { dataset: { state: q.state }, title: `group ${q.grpid}, ${hex(q.addr)}` },
      h('b', {}, `g${q.grpid}`), h('small', {}, hex(q.addr)), h('small', {}, q.state))));
  $('#fq-read tbody').replaceChildren(...fq.read.map((r) =>
    h('tr', {}, h('td.num', {}, r.grpid), h('td.mono', {}, hex(r.addr)), h('td', {}, [r.perm & 1 ? 'R' : '', r.perm & 2 ? 'W' : ''].join('')),
      h('td.num', {}, r.cookie), h('td', {}, r.last ? 'LAST_PAGE' : ''))));
  if (fq.answered.length) $('#fq-answers').textContent = `responses seen by the device: ${fq.answered.map((a) => `g${a.grpid}=${a.code === 0 ? 'SUCCESS' : 'INVALID'}`).join(' ')}`;
}

function renderEventQueue(eq) {
  $('#eq-readable').textContent = eq.readable ? 'POLLIN: records waiting' : 'empty';
  $('#eq-readable').dataset.on = eq.readable;
  $('#eq-sent').textContent = `${eq.sent} DMAs sent, ${eq.refused} refused, depth ${eq.depth}`;
  // What sits in the queue: events not read yet (up to the depth), then LOST_EVENTS.
  const read = eq.records.length;
  const events = Math.min(eq.refused, eq.depth);
  const lost = eq.refused > eq.depth;
  const slots = [];
  for (let i = 0; i < events + (lost ? 1 : 0); i++) {
    const isLost = lost && i === events;
    slots.push(h('div.slot', { dataset: { state: i < read ? 'read' : isLost ? 'lost' : 'queued' } },
      h('b', {}, isLost ? 'LOST' : `#${i}`), h('small', {}, i < read ? 'read' : 'queued')));
  }
  $('#eq-slots').replaceChildren(...slots);
  $('#eq-read tbody').replaceChildren(...eq.records.map((r) =>
    h('tr', {}, h('td.num', {}, r.sequence),
      r.lost ? h('td', { colspan: 3 }, 'IOMMU_VEVENTQ_FLAG_LOST_EVENTS (the events after the depth were dropped)')
        : [h('td', {}, r.type === 0x0a ? 'C_BAD_CD (0x0a)' : hex(r.type)), h('td.mono', {}, hex(r.sid)), h('td.mono', {}, hex(r.addr))])));
}

function renderDmaFaults(faults) {
  $('#dma-faults').replaceChildren(...faults.map((f) => h('li', {}, h('b', {}, f.reason), ` ${f.access} at IOVA ${hex(f.iova)}${f.level ? `, walk stopped at level ${f.level}` : ''}`)));
}

function onEvent(kind, data) {
  switch (kind) {
    case 'step': {
      for (const li of state.stepsEl.querySelectorAll('li.current')) li.classList.remove('current');
      state.stepsEl.append(h('li.current', {}, data));
      break;
    }
    case 'check': {
      const li = state.stepsEl.lastElementChild;
      const ul = li.querySelector('ul') ?? li.appendChild(h('ul.checks'));
      ul.append(h('li', { dataset: { ok: data.ok } }, `${data.ok ? '✓' : '✗'} ${data.what}${data.detail && !data.ok ? ` (${data.detail})` : ''}`));
      break;
    }
    case 'host': state.host = data; break;
    case 'log': $('#log').append(`${data}\n`); break;
    case 'objects': renderObjects(data); break;
    case 'mappings': renderMappings(data); break;
    case 'faultq': renderFaultQueue(data); break;
    case 'eventq': renderEventQueue(data); break;
    case 'dmafaults': renderDmaFaults(data); break;
    case 'dma': if (data.pa !== undefined) $('#log').append(`${data.device}: IOVA ${hex(data.iova)} -> PA ${hex(data.pa)} (${kib(data.size)} leaf)\n`); break;
  }
}

// ---- the walk explorer ---------------------------------------------------------------

function renderDomains() {
  const domains = listDomains(state.host.engine);
  $('#domains tbody').replaceChildren(...domains.map((d) =>
    h('tr', {}, h('td.num', {}, d.did), h('td', {}, d.formatName), h('td.num', {}, d.nested ? '-' : d.levels),
      h('td.num', {}, d.nested ? '-' : d.tables), h('td.num', {}, kib(d.mapped)),
      h('td.mono', {}, d.nested ? `parent ${d.parent}, S1 root ${hex(d.s1Root)}` : hex(d.root)))));
}

function walkNow() {
  const dev = state.devices[Number($('#walk-device').value)];
  const out = $('#walk-result');
  let iova;
  try {
    iova = BigInt($('#walk-iova').value.trim());
  } catch {
    out.textContent = 'not a number (hex with 0x, or decimal)';
    return;
  }
  const w = walkIova(state.host.engine, dev.did, iova);
  const dom = w.domain;
  $('#walk-domain').textContent = dom ? `engine domain ${dom.did}: ${dom.formatName}, ${dom.levels} levels, root table at ${hex(dom.root)} (HWPT ${dev.hwpt})` : '';
  $('#walk tbody').replaceChildren(...w.steps.map((s) =>
    h('tr', { dataset: { leaf: s.leaf, present: s.present } },
      h('td.num', {}, s.level),
      h('td.mono', {}, `IOVA[${s.shift + 8}:${s.shift}]`),
      h('td.num', {}, s.index),
      h('td.mono', {}, hex(s.table)),
      h('td.mono.pte', {}, hex(s.pte, 16)),
      h('td', {}, !s.present ? 'not present' : s.leaf ? `leaf (${kib(2 ** s.shift)}) → ${hex(s.addr)}` : `table → ${hex(s.addr)}`),
      h('td.flags', {}, s.flags.join(' ')))));
  let check = '';
  try {
    const t = dev.dma.translate(iova);
    const same = w.ok && BigInt(t.pa) === w.pa;
    check = `dev.dma.translate: PA ${hex(t.pa)}, ${kib(t.size)} ${same ? '✓ same as the walk' : '✗ differs from the walk'}`;
  } catch (e) {
    check = `dev.dma.translate: ${e.name}: ${e.reason ?? e.message}${w.ok ? ' ✗ (the walk found a leaf)' : ' ✓ (the walk found none)'}`;
  }
  out.dataset.ok = w.ok;
  out.textContent = (w.ok ? `IOVA ${hex(iova)} → PA ${hex(w.pa)} (${kib(w.size)} leaf, ${w.read ? 'R' : ''}${w.write ? 'W' : ''}). ` : `no translation: ${w.error}. `) + check;
  renderDomains();
}

function setupWalk(devices) {
  state.devices = devices;
  $('#walk-device').replaceChildren(...devices.map((d, i) => h('option', { value: i }, `${d.label}: HWPT ${d.hwpt}, domain ${d.did}`)));
  const presets = [
    ['2 MiB leaf', IOVA.buffer + 0x1234n],
    ['4 KiB leaf (unmapped at the end)', IOVA.small + 0x2345n],
    ['read-only', IOVA.readonly + 0x10n],
    ['guest IPA 0x3000', 0x3000n],
    ['nothing there', 0x7000_0000n],
  ];
  $('#walk-presets').replaceChildren(...presets.map(([label, v]) =>
    h('button', { type: 'button', onclick: () => { $('#walk-iova').value = hex(v); walkNow(); } }, label)));
  $('#walk-form').addEventListener('submit', (e) => { e.preventDefault(); walkNow(); });
  $('#walk-device').addEventListener('change', walkNow);
  $('#walk-iova').value = hex(IOVA.buffer + 0x1234n);
  $('#walk-panel').hidden = false;
  walkNow();
}

// ---- run ------------------------------------------------------------------------------

async function main() {
  $('#isolated').textContent = crossOriginIsolated ? 'cross-origin isolated (SharedArrayBuffer available)' : 'not cross-origin isolated (single-thread mode)';
  $('#isolated').dataset.on = crossOriginIsolated;

  // Compile once, from a URL the page chooses; the Module goes to createHost
  // here and to the worker below.
  const wasmUrl = new URL('../../dist/release.wasm', import.meta.url);
  const tc = performance.now();
  const module = await lib.compileEngine(wasmUrl);
  $('#engine').textContent = `engine compiled from ${wasmUrl.pathname} in ${(performance.now() - tc).toFixed(1)} ms`;

  const result = { scenario: null, bench: null, worker: null };
  const scenario = await runScenario(lib, { wasm: module, pace: PACE, on: onEvent });
  state.host = scenario.host;
  result.scenario = scenario.summary;
  $('#scenario-time').textContent = `${scenario.summary.ms.toFixed(0)} ms (pace ${PACE} ms)`;
  setupWalk(scenario.devices);

  if (params.get('bench') !== '0') {
    $('#bench-status').textContent = 'running…';
    const rows = $('#bench tbody');
    const bench = await runQuickBench(lib, {
      wasm: module,
      sampleMs: num('sample', 20),
      warmMs: num('warm', 100),
      onCase: (c) => rows.append(h('tr', { dataset: { id: c.id } }, h('td', {}, c.what), h('td.num', {}, c.unit === 'us' ? `${c.value.toFixed(2)} us` : fmtNs(c.value)),
        h('td', {}, c.baseline ? `${c.baseline}: ${fmtNs(c.baselineValue)}` : ''), h('td.num', {}, c.ratio ? `${c.ratio.toFixed(2)}x` : ''))),
    });
    $('#bench-status').textContent = `${bench.cases.length} cases in ${(bench.ms / 1000).toFixed(1)} s`;
    result.bench = bench.cases;
  } else {
    $('#bench-status').textContent = 'skipped (?bench=0)';
  }

  if (params.get('worker') !== '0') {
    $('#worker-status').textContent = 'running…';
    const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const reply = await new Promise((resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(new Error(`worker: ${e.message}`));
      worker.postMessage({ module });
    });
    worker.terminate();
    result.worker = reply;
    if (!reply.ok) throw new Error(`the worker failed: ${reply.error}`);
    const s = reply.summary;
    $('#worker-status').dataset.ok = s.ok;
    $('#worker-status').textContent = `${s.ok ? '✓' : '✗'} scenario in a Worker: ${s.checks.filter((c) => c.ok).length}/${s.checks.length} checks, ` +
      `${s.objects.length} objects, IOTLB hit rate ${(s.hitRate * 100).toFixed(1)} %, ${reply.ms.toFixed(0)} ms`;
    $('#worker-steps').replaceChildren(...reply.steps.map((t) => h('li', {}, t)));
  } else {
    $('#worker-status').textContent = 'skipped (?worker=0)';
  }

  result.shared = null;
  if (params.get('shared') !== '0' && crossOriginIsolated) {
    $('#shared-status').textContent = 'running…';
    result.shared = await runShared();
    const r = result.shared;
    $('#shared-status').dataset.ok = r.ok;
    $('#shared-status').textContent = `${r.ok ? '✓' : '✗'} ${r.workers.length} workers over one shared engine: ` +
      `${r.workers.map((w) => w.reads).join(' + ')} DMAs of ${kib(r.length)} in ${r.ms.toFixed(0)} ms, ${r.workers.reduce((n, w) => n + w.bad, 0)} wrong; ` +
      `after IOAS_UNMAP: ${r.workers.map((w) => w.after).join(', ')}`;
  } else {
    $('#shared-status').textContent = crossOriginIsolated ? 'skipped (?shared=0)' : 'skipped: not cross-origin isolated (no SharedArrayBuffer)';
  }

  document.body.dataset.state = result.scenario.ok && (!result.worker || result.worker.summary.ok) && (!result.shared || result.shared.ok) ? 'done' : 'failed';
  $('#status').textContent = document.body.dataset.state === 'done' ? 'done: every check passed' : 'finished with failed checks';
  return result;
}

/**
 * Shared-memory mode: a host over a SharedArrayBuffer (the engine's shared
 * build), one device's DMA shared with two module workers that read a
 * buffer at once for a while; then the page unmaps it and each worker's
 * next DMA must fault (invalidation reaches every worker).
 */
async function runShared() {
  const t0 = performance.now();
  const module = await lib.compileEngine(new URL('../../dist/shared.wasm', import.meta.url));
  const host = await lib.createHost({ shared: true, wasm: module, memoryLimit: 64 << 20 });
  const iommufd = new lib.Iommufd(host);
  const ioas = iommufd.ioasAlloc();
  const dev = host.addDevice({ iommu: 'intel-vtd' });
  const vfio = new lib.VfioDevice(host, dev.path);
  vfio.bind(iommufd);
  vfio.attach(ioas);
  const length = 64 << 10, iova = 0x1000_0000;
  const va = host.mmap(length);
  host.mem.write(va, Uint8Array.from({ length }, (_, i) => (i >> 9) % 251));
  iommufd.ioasMap({ ioasId: ioas, userVa: va, length, iova: BigInt(iova) });
  // [0] stop, [1] workers stopped, [2] unmapped, [4 + slot] reads by that worker.
  const control = new SharedArrayBuffer(64);
  const ctl = new Int32Array(control);
  const replies = [0, 1].map(() => new Promise((resolve, reject) => {
    const w = new Worker(new URL('./shared-worker.js', import.meta.url), { type: 'module' });
    w.onmessage = (e) => { w.terminate(); resolve(e.data); };
    w.onerror = (e) => reject(new Error(`shared worker: ${e.message}`));
    w.postMessage({ init: host.shareWorker([dev.path]), path: dev.path, iova, length, control });
  }));
  // Both read at once for a while (a module worker may take a moment to start).
  const started = performance.now();
  while (Atomics.load(ctl, 4) === 0 || Atomics.load(ctl, 5) === 0) {
    if (performance.now() - started > 20_000) throw new Error('shared workers did not start');
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 200));
  Atomics.store(ctl, 0, 1);
  while (Atomics.load(ctl, 1) < 2) await new Promise((r) => setTimeout(r, 1));
  iommufd.ioasUnmap(ioas, BigInt(iova), length); // returns once no worker is inside a DMA
  Atomics.store(ctl, 2, 1);
  Atomics.notify(ctl, 2);
  const workers = await Promise.all(replies);
  const ok = workers.every((w) => w.ok && w.reads > 0 && w.bad === 0 && w.after === 'not-present');
  return { ok, workers, length, ms: performance.now() - t0 };
}

const done = main();
done.catch(fail);
// For the browser test (test/browser.test.ts) and the curious: the results, and a walk on demand.
window.viommu = { done, walk: (did, iova) => walkIova(state.host.engine, did, BigInt(iova)), domains: () => listDomains(state.host.engine) };
