// Bundles bench/main.ts (it imports the host sources and the tests' naive
// reference model) with esbuild, then runs it in this process.
import { build } from 'esbuild';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const outfile = join(here, 'results', 'bench.bundle.mjs');
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
process.env.VIOMMU_BENCH_RESULTS = join(here, 'results');
await import(pathToFileURL(outfile).href);
