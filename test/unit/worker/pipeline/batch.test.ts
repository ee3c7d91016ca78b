// worker/pipeline/batch.ts: the rendezvous step batcher every batched model step builds on.
import { describe, expect, it } from 'vitest';
import { StepBatcher } from '../../../../worker/pipeline/batch.ts';

/** A batcher whose run doubles numbers and records each call's inputs; inputs < 0 make the call throw. */
function doubling(maxBatch: number, key?: (n: number) => string) {
  const calls: number[][] = [];
  const batcher = new StepBatcher<number, number>({
    maxBatch,
    key,
    run: async (xs) => {
      calls.push([...xs]);
      await new Promise((r) => setTimeout(r, 1));
      if (xs.some((x) => x < 0)) throw new Error(`bad input in ${xs}`);
      return xs.map((x) => 2 * x);
    },
  });
  return { batcher, calls };
}

/** A member that steps `n` times from `start`, each next input being the previous output + 1. */
async function member(b: StepBatcher<number, number>, start: number, n: number, signal?: AbortSignal): Promise<number[]> {
  const seen: number[] = [];
  let x = start;
  for (let i = 0; i < n; i++) {
    x = (await b.step(x, signal)) + 1;
    seen.push(x);
  }
  return seen;
}

describe('StepBatcher', () => {
  it('runs members that step together as one call, each getting its own output', async () => {
    const { batcher, calls } = doubling(4);
    const [a, b, c] = await Promise.all([member(batcher, 1, 3), member(batcher, 10, 3), member(batcher, 100, 3)]);
    expect(a).toEqual([3, 7, 15]);
    expect(b).toEqual([21, 43, 87]);
    expect(c).toEqual([201, 403, 807]);
    expect(calls).toEqual([
      [1, 10, 100],
      [3, 21, 201],
      [7, 43, 403],
    ]);
    expect(batcher.stats).toEqual({ calls: 3, steps: 9, largest: 3 });
  });

  it('members join and leave between steps; a call never exceeds maxBatch', async () => {
    const { batcher, calls } = doubling(2);
    const long = member(batcher, 1, 4);
    const short = member(batcher, 5, 1);
    const late = member(batcher, 7, 2); // third: waits for room
    await Promise.all([long, short, late]);
    expect(calls.every((c) => c.length <= 2)).toBe(true);
    expect(calls[0]).toEqual([1, 5]); // oldest first
    expect(calls.flat().sort((x, y) => x - y)).toEqual([1, 3, 5, 7, 7, 15, 15]);
    expect(await long).toEqual([3, 7, 15, 31]);
    expect(await late).toEqual([15, 31]);
  });

  it('a member alone runs alone, without waiting for a companion', async () => {
    const { batcher, calls } = doubling(8);
    expect(await member(batcher, 2, 2)).toEqual([5, 11]);
    expect(calls).toEqual([[2], [5]]);
  });

  it('members with different keys never share a call', async () => {
    const { batcher, calls } = doubling(4, (x) => (x % 2 === 0 ? 'even' : 'odd'));
    await Promise.all([batcher.step(2), batcher.step(3), batcher.step(4), batcher.step(5)]);
    expect(calls).toEqual([
      [2, 4],
      [3, 5],
    ]);
  });

  it('a failing member fails alone: the call is re-run member by member', async () => {
    const { batcher, calls } = doubling(4);
    const results = await Promise.allSettled([batcher.step(1), batcher.step(-1), batcher.step(3)]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[0] as PromiseFulfilledResult<number>).value).toBe(2);
    expect((results[2] as PromiseFulfilledResult<number>).value).toBe(6);
    expect(calls).toEqual([[1, -1, 3], [1], [-1], [3]]);
  });

  it('with isolateFailures off, every member of the failed call gets the error', async () => {
    const batcher = new StepBatcher<number, number>({ maxBatch: 4, isolateFailures: false, run: async () => Promise.reject(new Error('boom')) });
    const results = await Promise.allSettled([batcher.step(1), batcher.step(2)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });

  it('a member aborted while waiting leaves the queue; its companions go on', async () => {
    const { batcher, calls } = doubling(1);
    const controller = new AbortController();
    const first = batcher.step(1);
    const second = batcher.step(2, controller.signal);
    const third = batcher.step(3);
    controller.abort(new Error('cancelled'));
    await expect(second).rejects.toThrow('cancelled');
    expect(await first).toBe(2);
    expect(await third).toBe(6);
    expect(calls).toEqual([[1], [3]]);
  });

  it('a wrong number of outputs rejects the call', async () => {
    const batcher = new StepBatcher<number, number>({ maxBatch: 2, isolateFailures: false, run: async () => [1] });
    await expect(Promise.all([batcher.step(1), batcher.step(2)])).rejects.toThrow('1 outputs for 2 inputs');
  });

  it('rejects a maxBatch below 1', () => {
    expect(() => new StepBatcher({ maxBatch: 0, run: async () => [] })).toThrow(RangeError);
  });
});
