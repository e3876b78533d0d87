import { defineConfig } from 'vitest/config';

// Node tests; the browser test (test/browser.test.ts) drives Debian's
// Chromium through playwright-core from here.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'dist/**', 'build/**', 'test/browser/**'],
    environment: 'node',
    // Worker threads: cheap to start, and they can share WebAssembly.Memory /
    // SharedArrayBuffer with the workers a test spawns. Two workers for a
    // 2-core machine; the engine's tests are CPU-bound.
    pool: 'threads',
    maxWorkers: 2,
    fileParallelism: true,
    isolate: true,
    // Seeded differential tests and whole-scenario tests can be slow in the
    // debug build: be generous.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 10_000,
    // 'default' first: the summary reporter's `N passed, N failed` line must
    // come last.
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
