// The setup lock that makes workers sharing one model volume take turns (worker/setup.ts withLock).
import { mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { withLock } from '../../../worker/setup.ts';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const lockIn = () => {
  const d = mkdtempSync(join(tmpdir(), 'setup-lock-'));
  dirs.push(d);
  return join(d, 'snapshot.setup-lock');
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('withLock', () => {
  it('runs holders one at a time, and releases on failure too', async () => {
    const lock = lockIn();
    const events: string[] = [];
    const holder = (name: string, fail = false) =>
      withLock(lock, log, 60_000, async () => {
        events.push(`${name} in`);
        await sleep(150);
        events.push(`${name} out`);
        if (fail) throw new Error(`${name} failed`);
        return name;
      });
    const results = await Promise.allSettled([holder('a', true), holder('b'), holder('c')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(' in', ' out')); // never interleaved
  });

  it('takes over a lock left by a process that died (not touched for staleMs)', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const t = Date.now();
    expect(await withLock(lock, log, 5_000, async () => 'mine')).toBe('mine');
    expect(Date.now() - t).toBeLessThan(3_000);
  });

  it('waits for a live holder, whose heartbeat keeps the lock fresh past staleMs', async () => {
    const lock = lockIn();
    const order: string[] = [];
    const first = withLock(lock, log, 2_000, async () => {
      order.push('first in');
      await sleep(3_000); // longer than staleMs: only the heartbeat (every staleMs/4) keeps the second one out
      order.push('first out');
    });
    await sleep(100);
    const second = withLock(lock, log, 2_000, async () => void order.push('second'));
    await Promise.all([first, second]);
    expect(order).toEqual(['first in', 'first out', 'second']);
  });
});
