// A harness a test file starts in beforeAll must fail its tests when that start fails or never ends: a failing or
// timed-out beforeAll only skips them, and a mutation run (docs/mutation.md) reads a run without a failed test as the
// mutant surviving. Usage: `beforeAll(() => guard.starting(async () => { … }), 60_000)` and
// `beforeEach(guard.check)`.
import { within } from '../../bots/core/deadline.ts';

/** Less than the 60 s the harness files give their beforeAll: the start counts as failed before vitest skips anything. */
export const START_WITHIN_MS = 50_000;

export interface StartGuard {
  /** Runs the start; a rejection, or no end within START_WITHIN_MS, is recorded instead of failing the hook. */
  starting(start: () => Promise<void>): Promise<void>;
  /** For beforeEach: throws the recorded failure, so every test fails with it. */
  check(): void;
}

export function startGuard(): StartGuard {
  const failures: unknown[] = [];
  return {
    async starting(start) {
      try {
        const started = await within(start().then(() => true), START_WITHIN_MS);
        if (!started) failures.push(new Error(`the harness did not start within ${START_WITHIN_MS} ms`));
      } catch (e) {
        failures.push(e);
      }
    },
    check() {
      if (failures.length > 0) throw failures[0];
    },
  };
}
