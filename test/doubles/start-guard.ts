// A harness a test file starts in beforeAll must fail its tests when that start fails or never ends: a failing or
// timed-out beforeAll only skips them, and a mutation run (docs/mutation.md) reads a run without a failed test as the
// mutant surviving. Usage: `beforeAll(() => guard.starting(async () => { … }), 60_000)` and
// `beforeEach(guard.check)`.

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
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the harness did not start within ${START_WITHIN_MS} ms`)), START_WITHIN_MS)));
      await Promise.race([start(), late]).catch((e: unknown) => void failures.push(e)).finally(() => clearTimeout(timer));
    },
    check() {
      if (failures.length > 0) throw failures[0];
    },
  };
}
