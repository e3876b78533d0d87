/**
 * Prints one machine-readable line at the very end of a run:
 *
 *   N passed, N failed
 *
 * (preceded by "N skipped" on a line of its own when tests were skipped).
 * Counts test cases. A test file that failed outside of any test (an import or
 * syntax error, a failing beforeAll/afterAll) counts as one failed test when no
 * test of it failed already, and every unhandled error counts as one failure,
 * so a failing run never prints "0 failed". Tests still pending when a run is
 * interrupted count as skipped. The line is printed on failures too; .ci/run
 * relies on it.
 */
import type { Reporter, SerializedError, TestModule, TestRunEndReason } from 'vitest/node';

export function summaryLine(passed: number, failed: number, skipped: number): string {
  return (skipped > 0 ? `${skipped} skipped\n` : '') + `${passed} passed, ${failed} failed`;
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(
    testModules: ReadonlyArray<TestModule>,
    unhandledErrors: ReadonlyArray<SerializedError>,
    reason: TestRunEndReason,
  ): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const module of testModules) {
      let failedHere = 0;
      for (const test of module.children.allTests()) {
        switch (test.result().state) {
          case 'passed':
            passed++;
            break;
          case 'failed':
            failedHere++;
            break;
          default: // 'skipped', or 'pending' after an interrupted run
            skipped++;
        }
      }
      if (failedHere === 0 && (module.state() === 'failed' || hasSuiteErrors(module))) failedHere = 1;
      failed += failedHere;
    }
    failed += unhandledErrors.length;
    if (reason === 'failed' && failed === 0) failed = 1;
    process.stdout.write(`\n${summaryLine(passed, failed, skipped)}\n`);
  }
}

function hasSuiteErrors(module: TestModule): boolean {
  if (module.errors().length > 0) return true;
  for (const suite of module.children.allSuites()) {
    if (suite.errors().length > 0) return true;
  }
  return false;
}
