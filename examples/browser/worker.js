// The same scenario inside a dedicated Worker (a module worker), in
// single-thread mode: the worker owns its host and engine; nothing is
// shared with the page. The page compiles the wasm once and posts the
// WebAssembly.Module here (a Module is structured-cloneable), so the worker
// neither fetches nor compiles it again.
//
// Import maps do not apply inside workers, hence the relative path to the
// bundle (the page maps the bare name "wasm-viommu" to the same file).

import * as lib from '../../dist/index.js';
import { runScenario } from './scenario.js';

self.onmessage = async (e) => {
  const { module } = e.data;
  const t0 = performance.now();
  try {
    const steps = [];
    const { summary } = await runScenario(lib, { wasm: module, on: (kind, data) => { if (kind === 'step') steps.push(data); } });
    self.postMessage({ ok: true, summary, steps, ms: performance.now() - t0, isolated: self.crossOriginIsolated === true });
  } catch (err) {
    self.postMessage({ ok: false, error: String(err?.stack ?? err) });
  }
};
