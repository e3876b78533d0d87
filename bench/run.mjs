// npm run bench [-- --quick]
//
// 1. Compiles bench/limit.ts (the machine's limits as a tiny AssemblyScript
//    module) with the installed asc into bench/results/limit.wasm: -O3,
//    stub runtime, imported memory. --baseDir bench keeps the project's
//    asconfig.json (the engine's entries) out of this build.
// 2. Bundles bench/main.ts (it imports the host sources and the tests' naive
//    reference model) with esbuild, then runs it in this process.
import { build } from 'esbuild';
import asc from 'assemblyscript/asc';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { mkdirSync, readFileSync } from 'node:fs';
import v8 from 'node:v8';

const here = dirname(fileURLToPath(import.meta.url));
const results = join(here, 'results');
mkdirSync(results, { recursive: true });

const t0 = performance.now();
const { error, stderr } = await asc.main([
  'limit.ts', '--baseDir', here,
  '-O3', '--runtime', 'stub', '--importMemory', '--use', 'abort=', '--noAssert',
  '--outFile', join(results, 'limit.wasm'), '--textFile', join(results, 'limit.wat'),
]);
if (error) {
  console.error(`bench/run.mjs: asc failed to compile bench/limit.ts\n${stderr.toString()}`);
  process.exit(1);
}
const ascVersion = JSON.parse(readFileSync(join(here, '..', 'node_modules', 'assemblyscript', 'package.json'), 'utf8')).version;

const outfile = join(results, 'bench.bundle.mjs');
await build({
  entryPoints: [join(here, 'main.ts')],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'es2022',
  define: { __WASM_BASE__: JSON.stringify(pathToFileURL(join(here, '..', 'build') + '/').href) },
  logLevel: 'warning',
});
// The translating worker of the shared-memory case, a bundle of its own.
const workerFile = join(results, 'worker.bundle.mjs');
await build({
  entryPoints: [join(here, 'worker.ts')], outfile: workerFile, bundle: true, format: 'esm', platform: 'node', target: 'es2022', logLevel: 'warning',
});
process.env.VIOMMU_BENCH_WORKER = workerFile;
process.env.VIOMMU_BENCH_SHARED_WASM = join(here, '..', 'build', 'shared.wasm');
console.log(`bench: limit.wasm (asc ${ascVersion}) and the bundle built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
// Compile wasm with the optimizing tier at once: with dynamic tiering V8
// starts every function in its baseline compiler and tiers a function up
// only once it has run for a while, so a benchmark's first points would
// measure the baseline code of whichever function warmed up last. The code
// measured is the same that a long-running embedder ends up running.
v8.setFlagsFromString('--no-wasm-dynamic-tiering');
process.env.VIOMMU_BENCH_RESULTS = results;
process.env.VIOMMU_BENCH_ASC = ascVersion;
await import(pathToFileURL(outfile).href);
