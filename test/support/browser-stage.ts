// A private copy of what a user gets, for the tests that run the package
// outside Vitest's module graph (a browser, a worker thread, a child
// process): scripts/build.mjs writes the ESM bundle and the wasm into
// <tmp>/dist, next to a copy of package.json (so the package's own
// "exports" map resolves `import 'wasm-viommu'` from inside it) and of the
// examples, laid out as in the repository. A private copy never races with
// a `npm run build` of dist/ by someone else in the same tree.
//
// Needs build/*.wasm (npm test builds them first).

import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface Stage {
  /** The staged package root: package.json, dist/, examples/. */
  readonly dir: string;
  remove(): Promise<void>;
}

/** Build the bundle into a fresh temporary directory and copy what runs with it. */
export async function stagePackage(examples: readonly string[] = ['browser', 'node-vmm']): Promise<Stage> {
  const dir = await mkdtemp(join(tmpdir(), 'viommu-stage-'));
  try {
    await promisify(execFile)(process.execPath, [join(repoRoot, 'scripts', 'build.mjs'), '--outdir', join(dir, 'dist')], { cwd: repoRoot });
    await cp(join(repoRoot, 'package.json'), join(dir, 'package.json'));
    for (const ex of examples) await cp(join(repoRoot, 'examples', ex), join(dir, 'examples', ex), { recursive: true });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
