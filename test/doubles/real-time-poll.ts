// Polling for tests that run on a fake clock (vi.useFakeTimers): node:timers/promises' setTimeout, which the fake clock
// does not replace, paces the polls in real time.
import { setTimeout as realSleep } from 'node:timers/promises';

/**
 * Polls on real time until `read` gives a value; 'still waiting' if it gives none within 15 s (what the fake clock
 * should have ended, but did not): an assertion then names that instead of a test timeout.
 */
export async function untilOrStillWaiting<T>(read: () => T | undefined): Promise<T | 'still waiting'> {
  for (let i = 0; i < 750; i++) {
    const value = read();
    if (value !== undefined) return value;
    await realSleep(20);
  }
  return 'still waiting';
}
