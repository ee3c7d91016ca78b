// The setup lock that makes workers sharing one model volume take turns (worker/setup.ts withLock).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
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
/** A logger whose lines (info and up) are kept, parsed. */
const captured = () => {
  const lines: Record<string, unknown>[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }) };
};

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

  it('takes over a lock left by a process that died (not touched for staleMs), saying so', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const t = Date.now();
    const { log: watched, lines } = captured();
    expect(await withLock(lock, watched, 5_000, async () => 'mine')).toBe('mine');
    expect(Date.now() - t).toBeLessThan(3_000);
    expect(lines).toEqual([expect.objectContaining({ level: 40, lockDir: lock, ageMs: expect.any(Number), msg: 'taking over a stale model setup lock' })]);
    expect(lines[0]!.ageMs as number).toBeGreaterThanOrEqual(10_000);
    expect(existsSync(`${lock}.takeover`)).toBe(false); // the takeover lock is given back
  });

  it('several workers finding the same stale lock: each takes its turn, none fails on the lock another removed', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const events: string[] = [];
    const holder = (name: string) =>
      withLock(lock, log, 5_000, async () => {
        events.push(`${name} in`);
        await sleep(50);
        events.push(`${name} out`);
      });
    const results = await Promise.allSettled([holder('a'), holder('b'), holder('c')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(events).toHaveLength(6);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(' in', ' out'));
  });

  it('a stale lock another worker is taking over (its takeover lock fresh) is left to it; a takeover lock whose process died is cleared', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const guard = `${lock}.takeover`;
    mkdirSync(guard);
    const touching = setInterval(() => utimesSync(guard, new Date(), new Date()), 100); // the other takeover, alive
    const t = Date.now();
    const held = withLock(lock, log, 1_000, async () => Date.now() - t);
    await sleep(2_200);
    clearInterval(touching); // it dies, its takeover lock left behind
    // Before: taken over at once, two holders. Now: after the takeover lock went stale (1 s) and was cleared.
    expect(await held).toBeGreaterThanOrEqual(3_000);
  });

  it('names its holder in the lock, and returns what it ran even if the lock was taken from it meanwhile', async () => {
    const lock = lockIn();
    const result = await withLock(lock, log, 60_000, async () => {
      expect(readFileSync(join(lock, 'owner'), 'utf8')).toBe(`${hostname()} ${process.pid}\n`);
      rmSync(lock, { recursive: true, force: true }); // another worker judged it stale and took it over
      return 'done';
    });
    expect(result).toBe('done');
  });

  it('refuses a lock, or a takeover lock, it cannot make for another reason than its being held (not waited on for ever)', async () => {
    const lock = join(lockIn(), '..', 'x'.repeat(300)); // longer than a file name may be: ENAMETOOLONG
    await expect(withLock(lock, log, 5_000, async () => 'never')).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    const held = join(lockIn(), '..', 'y'.repeat(250)); // a name that fits, whose `.takeover` does not
    mkdirSync(held);
    await expect(withLock(held, log, 5_000, async () => 'never')).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
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
    const { log: watched, lines } = captured();
    const second = withLock(lock, watched, 2_000, async () => void order.push('second'));
    await Promise.all([first, second]);
    expect(order).toEqual(['first in', 'first out', 'second']);
    expect(existsSync(`${lock}.takeover`)).toBe(false); // each look at the live lock gave its takeover lock back
    // said once, not on every look in the ~3 s it waited
    expect(lines).toEqual([expect.objectContaining({ level: 30, lockDir: lock, msg: 'another worker is setting up the model; waiting for it' })]);
  });
});
