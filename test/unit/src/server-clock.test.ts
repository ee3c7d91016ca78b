// ServerClock (src/server-clock.ts): Redis's clock read from a host whose own clock is off. Redis is a double here
// that answers TIME from a clock the test moves; the host's clock and the monotonic one are the test's too.
import { describe, expect, it } from 'vitest';
import { SAMPLE_MS, ServerClock } from '../../../src/server-clock.ts';

/** Redis's clock at `redisMs`, a host clock `skewMs` off it, and a monotonic clock; `pass(ms)` moves all three. */
function world(skewMs: number) {
  const w = {
    redisMs: 1_800_000_000_000,
    skewMs,
    monotonicMs: 5_000,
    timeCalls: 0,
    down: false,
    redis: {
      time: async (): Promise<[number, number]> => {
        w.timeCalls++;
        if (w.down) throw new Error('Connection is closed.');
        return [Math.floor(w.redisMs / 1000), (w.redisMs % 1000) * 1000];
      },
    },
    hostNow: () => w.redisMs + w.skewMs,
    monotonicNow: () => w.monotonicMs,
    pass(ms: number) {
      w.redisMs += ms;
      w.monotonicMs += ms;
    },
  };
  return w;
}

describe('ServerClock', () => {
  it("reads Redis's time on a host whose clock runs 2 minutes ahead or behind", async () => {
    for (const skew of [120_000, -120_000]) {
      const w = world(skew);
      const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
      expect(await clock.now()).toBe(w.redisMs);
      w.pass(1_234);
      expect(await clock.now()).toBe(w.redisMs); // from the offset, without asking Redis
      expect(w.timeCalls).toBe(1);
    }
  });

  it('asks Redis again every SAMPLE_MS, and at once when the host clock jumps', async () => {
    const w = world(0);
    const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
    await clock.now();
    w.pass(SAMPLE_MS - 1);
    await clock.now();
    expect(w.timeCalls).toBe(1);
    w.pass(1);
    await clock.now();
    expect(w.timeCalls).toBe(2);
    // stepped 90 s back (an admin, NTP, a VM resumed): the next reading is Redis's again, not 90 s off
    w.skewMs -= 90_000;
    expect(await clock.now()).toBe(w.redisMs);
    expect(w.timeCalls).toBe(3);
  });

  it('a step of the host clock by a second is a jump; less is drift, read from the offset', async () => {
    const w = world(0);
    const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
    await clock.now();
    w.skewMs += 999;
    expect(await clock.now()).toBe(w.redisMs + 999);
    expect(w.timeCalls).toBe(1);
    w.skewMs += 1;
    expect(await clock.now()).toBe(w.redisMs);
    expect(w.timeCalls).toBe(2);
  });

  it("counts TIME's microseconds: a reading between two seconds of Redis's clock is not rounded to either", async () => {
    const w = world(-45_000);
    w.redisMs += 250; // TIME answers [seconds, 250000]
    const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
    expect(await clock.now()).toBe(w.redisMs);
  });

  it('readings asked together share one TIME', async () => {
    const w = world(60_000);
    const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
    expect(await Promise.all([clock.now(), clock.now(), clock.now()])).toEqual([w.redisMs, w.redisMs, w.redisMs]);
    expect(w.timeCalls).toBe(1);
  });

  it("without Redis keeps the last offset (the host's own clock before any), and asks again next time", async () => {
    const w = world(30_000);
    w.down = true;
    const clock = new ServerClock(w.redis, w.hostNow, w.monotonicNow);
    expect(await clock.now()).toBe(w.hostNow());
    w.down = false;
    expect(await clock.now()).toBe(w.redisMs);
    w.pass(SAMPLE_MS);
    w.down = true;
    w.skewMs += 5_000; // drifted; Redis cannot say by how much
    expect(await clock.now()).toBe(w.redisMs + 5_000);
  });
});
