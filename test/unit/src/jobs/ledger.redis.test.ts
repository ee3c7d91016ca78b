// The delivered-ledger and the delivery step around it, over real Redis: each result is posted once, no progress
// edit lands after a result, and a crash at any point of a delivery attempt leaves a state the next attempt can
// finish from (property-based over sequences of attempts that crash at chosen points).
import { randomUUID } from 'node:crypto';
import { UnrecoverableError } from 'bullmq';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliverOne, type DeliveryDeps } from '../../../../bots/core/delivery.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import type { BlobStore } from '../../../../src/blobs/store.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Config } from '../../../../src/config/schema.ts';
import { CONTRACT_VERSION, type Destination, type JobResult } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createLimiter } from '../../../../src/limits/limiter.ts';
import type { Logger } from '../../../../src/log.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-ledger-${randomUUID().slice(0, 8)}`;
let redis: Redis;
const config = (keepCompletedSeconds = 100, keepFailedSeconds = 50): Config =>
  loadConfig({ env: {}, overrides: { queue: { prefix, keepCompletedSeconds, keepFailedSeconds } } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const uid = () => `j${randomUUID().slice(0, 12)}`;

beforeAll(() => {
  redis = new Redis(url);
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('DeliveryLedger', () => {
  it('records a delivery once per job, under the queue prefix, for as long as finished jobs are kept', async () => {
    const ledger = new DeliveryLedger(redis, config(100, 50));
    const [a, b] = [uid(), uid()];
    expect(await ledger.isDelivered(a)).toBe(false);
    expect(await ledger.markDelivered(a)).toBe(true);
    expect(await ledger.markDelivered(a)).toBe(false); // the second bot to finish learns it was already recorded
    expect(await ledger.isDelivered(a)).toBe(true);
    expect(await ledger.isDelivered(b)).toBe(false); // per job, not one flag for all
    const ttl = await redis.ttl(`${prefix}:delivered:${a}`);
    expect(ttl).toBeGreaterThan(90); // the longer of the two retention times (100 s, not 50 s)
    expect(ttl).toBeLessThanOrEqual(100);
    expect(Number(await redis.get(`${prefix}:delivered:${a}`))).toBeGreaterThan(Date.now() - 60_000); // when it was posted
    const other = new DeliveryLedger(redis, config(10, 200));
    await other.markDelivered(b);
    expect(await redis.ttl(`${prefix}:delivered:${b}`)).toBeGreaterThan(190);
  });

  it('runs a progress edit only while nothing is being or has been delivered, and one edit at a time', async () => {
    const ledger = new DeliveryLedger(redis, config());
    const id = uid();
    const edit = vi.fn(async () => undefined);
    expect(await ledger.whileNotDelivered(id, edit)).toBe(true);
    expect(await ledger.whileNotDelivered(id, edit)).toBe(true); // the slot was given back
    expect(edit).toHaveBeenCalledTimes(2);
    expect(await redis.exists(`${prefix}:showing:${id}`)).toBe(0);

    // an edit in flight: a second one for the same job is skipped, one for another job is not
    let release!: () => void;
    const inFlight = ledger.whileNotDelivered(id, () => new Promise<void>((r) => (release = r)));
    await sleep(50);
    expect(await redis.pttl(`${prefix}:showing:${id}`)).toBeGreaterThan(9_000); // held at most 10 s
    expect(await ledger.whileNotDelivered(id, edit)).toBe(false);
    expect(await ledger.whileNotDelivered(uid(), edit)).toBe(true);
    release();
    expect(await inFlight).toBe(true);

    // a failing edit still gives the slot back
    await expect(ledger.whileNotDelivered(id, () => Promise.reject(new Error('429')))).rejects.toThrow('429');
    expect(await ledger.whileNotDelivered(id, edit)).toBe(true);

    const delivering = uid();
    await ledger.beginDelivery(delivering);
    expect(await ledger.whileNotDelivered(delivering, edit)).toBe(false);
    expect(await redis.ttl(`${prefix}:delivering:${delivering}`)).toBeGreaterThan(90);
    const delivered = uid();
    await ledger.markDelivered(delivered);
    expect(await ledger.whileNotDelivered(delivered, edit)).toBe(false);
    expect(edit).toHaveBeenCalledTimes(4);
    expect(await redis.exists(`${prefix}:showing:${delivered}`)).toBe(0);
  });

  it('startDelivery checks, claims and marks delivering in one step; finishDelivery records and gives the claim back', async () => {
    const ledger = new DeliveryLedger(redis, config());
    const id = uid();
    expect(await ledger.startDelivery(id, 'a', 5_000)).toBe('started');
    expect(await redis.get(`${prefix}:delivery-claim:${id}`)).toBe('a');
    expect(await redis.exists(`${prefix}:delivering:${id}`)).toBe(1);
    expect(await ledger.startDelivery(id, 'b', 5_000)).toBe('busy'); // a second run at once backs off
    expect(await ledger.finishDelivery(id, 'a')).toBe(true);
    expect(await redis.exists(`${prefix}:delivery-claim:${id}`)).toBe(0);
    expect(await ledger.isDelivered(id)).toBe(true);
    expect(await ledger.startDelivery(id, 'b', 5_000)).toBe('duplicate'); // and a later run finds the mark, not the claim
    expect(await redis.exists(`${prefix}:delivery-claim:${id}`)).toBe(0);
    expect(await ledger.finishDelivery(id, 'b')).toBe(false); // already recorded

    // a lapsed claim taken over by another run is not given back by the first owner
    const other = uid();
    expect(await ledger.startDelivery(other, 'a', 5_000)).toBe('started');
    await redis.set(`${prefix}:delivery-claim:${other}`, 'b');
    expect(await ledger.finishDelivery(other, 'a')).toBe(true);
    expect(await redis.get(`${prefix}:delivery-claim:${other}`)).toBe('b');

    // an edit in flight is waited for
    const editing = uid();
    const order: string[] = [];
    const edit = ledger.whileNotDelivered(editing, async () => {
      await sleep(200);
      order.push('edit done');
    });
    await sleep(30);
    expect(await ledger.startDelivery(editing, 'a', 5_000)).toBe('started');
    order.push('delivery begins');
    await edit;
    expect(order).toEqual(['edit done', 'delivery begins']);
  });

  it("startDelivery frees the job's rate-limit slots first, so a user whose one slot it held can ask again as the result shows", async () => {
    const open = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
    const limited = loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, workspace: open, user: { ...open, maxConcurrent: 1 } } } });
    const limiter = createLimiter(redis, limited);
    const ledger = new DeliveryLedger(redis, limited);
    const d: Destination = { platform: 'cli', clientId: 'c', channelId: 'local', userId: `u${uid()}` };
    const [first, next, other] = [uid(), uid(), uid()];
    expect((await limiter.admit(first, d)).admitted).toBe(true);
    // BullMQ has not finished `first` (its hash has no finishedOn, nor will it here): only the delivery frees the slot
    expect(await limiter.admit(next, d)).toMatchObject({ admitted: false, scope: 'user', kind: 'concurrency' });
    expect(await ledger.startDelivery(first, 'a', 5_000)).toBe('started');
    expect((await limiter.admit(next, d)).admitted).toBe(true);
    expect(await redis.hexists(`${prefix}:limits:lease-keys`, first)).toBe(0);
    // a second run of the delivery, and the completion listener after it, free nothing more (the lease is gone)
    expect(await ledger.startDelivery(first, 'b', 5_000)).toBe('busy');
    expect(await limiter.release(first)).toBe(false);
    expect(await limiter.admit(other, d)).toMatchObject({ admitted: false, kind: 'concurrency' }); // `next` holds it
  });

  it('with a lease, an edit runs only for the lease holder, and takes or renews the lease in the same step', async () => {
    const ledger = new DeliveryLedger(redis, config());
    const id = uid();
    const key = `${prefix}:progress-owner:${id}`;
    const edit = vi.fn(async () => undefined);
    expect(await ledger.whileLeasedAndNotDelivered(id, edit, { key, owner: 'bot-a', ms: 5_000 })).toEqual({ shown: true }); // free: taken
    expect(await redis.get(key)).toBe('bot-a');
    const other = await ledger.whileLeasedAndNotDelivered(id, edit, { key, owner: 'bot-b', ms: 5_000 }); // another's
    expect(other.shown).toBe(false);
    expect(other.leasedElsewhereMs).toBeGreaterThan(4_000); // how long bot-a's lease has left
    expect(other.leasedElsewhereMs).toBeLessThanOrEqual(5_000);
    await redis.pexpire(key, 1_000);
    expect(await ledger.whileLeasedAndNotDelivered(id, edit, { key, owner: 'bot-a', ms: 5_000 })).toEqual({ shown: true });
    expect(await redis.pttl(key)).toBeGreaterThan(4_000); // renewed
    expect(edit).toHaveBeenCalledTimes(2);
    expect(await redis.exists(`${prefix}:showing:${id}`)).toBe(0);
    await ledger.beginDelivery(id);
    expect(await ledger.whileLeasedAndNotDelivered(id, edit, { key, owner: 'bot-a', ms: 5_000 })).toStrictEqual({ shown: false }); // delivering: not a lease matter
    expect(edit).toHaveBeenCalledTimes(2);
  });

  it('with an alive hash, a lease whose holder is missing from it or past its time is free, and a live one is left alone', async () => {
    const ledger = new DeliveryLedger(redis, config());
    const alive = `${prefix}:progress-alive-${uid()}`;
    const [sec, micro] = (await redis.time()) as [number, number];
    const now = sec * 1000 + Math.floor(micro / 1000);
    const edit = vi.fn(async () => undefined);
    const lease = (id: string, owner: string) => ({ key: `${prefix}:progress-owner:${id}`, owner, ms: 60_000, alive });
    const [gone, dead, live] = [uid(), uid(), uid()];
    for (const id of [gone, dead, live]) await redis.set(`${prefix}:progress-owner:${id}`, 'bot-a', 'PX', 60_000);
    // bot-a never said it is alive: its lease is taken at once
    expect(await ledger.whileLeasedAndNotDelivered(gone, edit, lease(gone, 'bot-b'))).toEqual({ shown: true });
    expect(await redis.get(`${prefix}:progress-owner:${gone}`)).toBe('bot-b');
    // bot-a was alive until a moment ago: taken
    await redis.hset(alive, 'bot-a', now - 5);
    expect(await ledger.whileLeasedAndNotDelivered(dead, edit, lease(dead, 'bot-b'))).toEqual({ shown: true });
    // bot-a is alive for 3 s more: left alone, and asked again once that is over (not in the lease's 60 s)
    await redis.hset(alive, 'bot-a', now + 3_000);
    const held = await ledger.whileLeasedAndNotDelivered(live, edit, lease(live, 'bot-b'));
    expect(held.shown).toBe(false);
    expect(held.leasedElsewhereMs).toBeGreaterThan(1_000);
    expect(held.leasedElsewhereMs).toBeLessThanOrEqual(3_000);
    expect(await redis.get(`${prefix}:progress-owner:${live}`)).toBe('bot-a');
    // its holder renews it whatever the hash says
    expect(await ledger.whileLeasedAndNotDelivered(live, edit, lease(live, 'bot-a'))).toEqual({ shown: true });
    expect(edit).toHaveBeenCalledTimes(3);
    await redis.del(alive);
  });

  it("with the job's hash, an edit runs only while the job is there and unfinished; otherwise the lease is left alone too", async () => {
    const ledger = new DeliveryLedger(redis, config());
    const edit = vi.fn(async () => undefined);
    const [running, finished, purged] = [uid(), uid(), uid()];
    const job = (id: string) => `${prefix}:jobs:${id}`;
    const lease = (id: string) => ({ key: `${prefix}:progress-owner:${id}`, owner: 'bot-a', ms: 60_000, alive: `${prefix}:progress-alive`, job: job(id) });
    await redis.hset(job(running), 'name', 'imagine', 'processedOn', '1');
    await redis.hset(job(finished), 'name', 'imagine', 'processedOn', '1', 'finishedOn', '2');
    await redis.set(`${prefix}:progress-owner:${finished}`, 'bot-a', 'PX', 1_000);
    expect(await ledger.whileLeasedAndNotDelivered(running, edit, lease(running))).toEqual({ shown: true });
    expect(await redis.get(`${prefix}:progress-owner:${running}`)).toBe('bot-a');
    // finished: its result supersedes any edit, and its lease is not renewed (1 s left, not 60)
    expect(await ledger.whileLeasedAndNotDelivered(finished, edit, lease(finished))).toStrictEqual({ shown: false });
    expect(await redis.pttl(`${prefix}:progress-owner:${finished}`)).toBeLessThanOrEqual(1_000);
    // gone (the retention sweep purged the job and every key named after it, the delivered mark among them): no edit
    // on top of its result, and no lease made again
    expect(await ledger.whileLeasedAndNotDelivered(purged, edit, lease(purged))).toStrictEqual({ shown: false });
    expect(await redis.exists(`${prefix}:progress-owner:${purged}`, `${prefix}:showing:${purged}`)).toBe(0);
    expect(edit).toHaveBeenCalledTimes(1);
    // without an alive hash every holder counts as alive: the job's key, the last, is not read as one
    const held = uid();
    await redis.hset(job(held), 'name', 'imagine');
    await redis.set(`${prefix}:progress-owner:${held}`, 'bot-z', 'PX', 5_000);
    const other = await ledger.whileLeasedAndNotDelivered(held, edit, { key: `${prefix}:progress-owner:${held}`, owner: 'bot-a', ms: 60_000, job: job(held) });
    expect(other.shown).toBe(false);
    expect(other.leasedElsewhereMs).toBeGreaterThan(4_000);
    expect(edit).toHaveBeenCalledTimes(1);
  });

  it('beginDelivery waits for an edit in flight to end, and at most waitMs for one that never ends', async () => {
    const ledger = new DeliveryLedger(redis, config());
    const id = uid();
    const order: string[] = [];
    const edit = ledger.whileNotDelivered(id, async () => {
      await sleep(300);
      order.push('edit done');
    });
    await sleep(30);
    await ledger.beginDelivery(id);
    order.push('delivery begins');
    await edit;
    expect(order).toEqual(['edit done', 'delivery begins']);

    const stuck = uid();
    await redis.set(`${prefix}:showing:${stuck}`, '1', 'PX', 60_000); // a bot died mid-edit
    const t0 = Date.now();
    await ledger.beginDelivery(stuck, 200);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(190);
    expect(waited).toBeLessThan(5_000);
    const free = uid();
    const t1 = Date.now();
    await ledger.beginDelivery(free, 5_000);
    expect(Date.now() - t1).toBeLessThan(1_000); // nothing in flight: no wait
  });

  it('a delivery looks again at an edit in flight after 1, 2, 4, 8 and 16 ms, then every 25 ms', async () => {
    // An edit usually ends within a round trip or two; a first look only after 25 ms held deliveries up for nothing.
    const ledger = new DeliveryLedger(redis, config());
    const stuck = uid();
    await redis.set(`${prefix}:showing:${stuck}`, '1', 'PX', 60_000);
    const pauses: number[] = [];
    const spy = vi.spyOn(globalThis, 'setTimeout');
    try {
      await ledger.beginDelivery(stuck, 150);
    } finally {
      pauses.push(...spy.mock.calls.map(([, ms]) => Number(ms)));
      spy.mockRestore();
    }
    expect(pauses.slice(0, 7)).toEqual([1, 2, 4, 8, 16, 25, 25]);
    expect(Math.max(...pauses)).toBe(25);
  });
});

// ---- deliverOne ----------------------------------------------------------------------------------------------

function memoryBlobs(): BlobStore & { map: Map<string, Uint8Array> } {
  const map = new Map<string, Uint8Array>();
  return {
    map,
    async put(bytes) {
      const key = `blob-${map.size}`;
      map.set(key, bytes);
      return key;
    },
    get: async (key) => map.get(key),
    delete: async (key) => void map.delete(key),
    release: async () => undefined,
    share: async () => undefined,
  };
}

function quietLog(): Logger & { infos: unknown[] } {
  const infos: unknown[] = [];
  const noop = () => undefined;
  return { infos, info: (o: unknown) => void infos.push(o), warn: noop, error: noop, debug: noop } as unknown as Logger & { infos: unknown[] };
}

const result = (jobId: string, extra: Partial<JobResult> = {}): JobResult => ({
  v: CONTRACT_VERSION,
  jobId,
  kind: 'ask',
  destination: { platform: 'cli', clientId: 'c', channelId: 'ch', userId: 'u' },
  status: 'succeeded',
  answer: { text: 'a cat', tokenCount: 2 },
  timingsMs: {},
  finishedAt: 1,
  ...extra,
});

class Crash extends Error {}

function deps(port: PlatformPort, blobs = memoryBlobs()): DeliveryDeps & { log: ReturnType<typeof quietLog> } {
  const cfg = config();
  return { config: cfg, redis, blobs, ledger: new DeliveryLedger(redis, cfg), port, log: quietLog() };
}

describe('deliverOne', () => {
  it('posts once and records it; a repeat of the delivery job is acknowledged without posting', async () => {
    const posted: { result: JobResult; image: Uint8Array | undefined }[] = [];
    const d = deps({ platform: 'cli', showProgress: async () => undefined, deliver: async (r, image) => void posted.push({ result: r, image }) });
    const id = uid();
    expect(await deliverOne(d, result(id))).toBe('delivered');
    expect(await d.ledger.isDelivered(id)).toBe(true);
    expect(await deliverOne(d, result(id))).toBe('duplicate');
    expect(posted).toHaveLength(1);
    expect(posted[0]!.result.status).toBe('succeeded');
    expect(d.log.infos).toContainEqual({ jobId: id, status: 'succeeded' });
  });

  it('refuses a malformed result for good (never retried)', async () => {
    const deliver = vi.fn(async () => undefined);
    const d = deps({ platform: 'cli', showProgress: async () => undefined, deliver });
    await expect(deliverOne(d, { ...result(uid()), v: 99 })).rejects.toBeInstanceOf(UnrecoverableError);
    await expect(deliverOne(d, { jobId: 'x' })).rejects.toThrow(/job result does not match contract/);
    expect(deliver).not.toHaveBeenCalled();
  });

  it('posts the PNG from the blob store, or says the image expired when the blob is gone', async () => {
    const blobs = memoryBlobs();
    const posted: { result: JobResult; image: Uint8Array | undefined }[] = [];
    const d = deps({ platform: 'cli', showProgress: async () => undefined, deliver: async (r, image) => void posted.push({ result: r, image }) }, blobs);
    const png = Uint8Array.from([1, 2, 3]);
    const key = await blobs.put(png, 'output');
    const image = { blobKey: key, mime: 'image/png' as const, width: 8, height: 8, altText: 'x', prompt: 'x', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' as const } };
    await deliverOne(d, result(uid(), { kind: 'imagine', answer: undefined, image }));
    expect(posted[0]!.image).toEqual(png);
    expect(posted[0]!.result.status).toBe('succeeded');

    await deliverOne(d, result(uid(), { kind: 'imagine', answer: undefined, image: { ...image, blobKey: 'gone' } }));
    expect(posted[1]!.image).toBeUndefined();
    expect(posted[1]!.result).toMatchObject({
      status: 'failed',
      image: undefined,
      error: { code: 'internal', message: 'The image expired before it could be posted. Please try again.', userFacing: true },
    });
  });

  it('marks the job as delivering before posting, so no progress edit can land on top of the result', async () => {
    let editDuringPost: boolean | undefined;
    const holder: { d?: DeliveryDeps } = {};
    const id = uid();
    holder.d = deps({
      platform: 'cli',
      showProgress: async () => undefined,
      deliver: async () => {
        editDuringPost = await holder.d!.ledger.whileNotDelivered(id, async () => undefined);
      },
    });
    await deliverOne(holder.d, result(id));
    expect(editDuringPost).toBe(false);
  });

  it('does not record a post that failed, so the retry posts', async () => {
    let fail = true;
    const deliver = vi.fn(async () => {
      if (fail) throw new Error('platform 500');
    });
    const d = deps({ platform: 'cli', showProgress: async () => undefined, deliver });
    const id = uid();
    await expect(deliverOne(d, result(id))).rejects.toThrow('platform 500');
    expect(await d.ledger.isDelivered(id)).toBe(false);
    fail = false;
    expect(await deliverOne(d, result(id))).toBe('delivered');
    expect(deliver).toHaveBeenCalledTimes(2);
  });

  // Attempts of one delivery job run one after another (BullMQ's lock), and any attempt may die at a point:
  // before posting, after posting but before the ledger write, or after the ledger write but before BullMQ's ack.
  // Whatever the sequence, the platform (idempotent per jobId, as PlatformPort.deliver promises) shows the result
  // once, deliver is called again only after a crash between posting and recording, and never after a record.
  it('delivers each result once under any sequence of attempts that crash at any point (property)', async () => {
    const crashPoint = fc.constantFrom('none', 'beforePost', 'afterPost', 'afterMark');
    await fc.assert(
      fc.asyncProperty(fc.array(crashPoint, { minLength: 1, maxLength: 6 }), async (attempts) => {
        const id = uid();
        const shown = new Set<string>();
        let calls = 0;
        let crash: string = 'none';
        const d = deps({
          platform: 'cli',
          showProgress: async () => undefined,
          deliver: async (r) => {
            if (crash === 'beforePost') throw new Crash();
            calls++;
            shown.add(r.jobId);
            if (crash === 'afterPost') throw new Crash();
          },
        });
        const finishDelivery = d.ledger.finishDelivery.bind(d.ledger);
        d.ledger.finishDelivery = async (jobId, owner) => {
          const r = await finishDelivery(jobId, owner);
          if (crash === 'afterMark') throw new Crash();
          return r;
        };
        let recorded = false;
        let expectedCalls = 0;
        for (const point of attempts) {
          crash = point;
          const before = recorded;
          if (!recorded && point !== 'beforePost') expectedCalls++;
          if (point === 'none' || point === 'afterMark') recorded = true;
          const outcome = await deliverOne(d, result(id)).catch((e: unknown) => (e instanceof Crash ? 'crash' : Promise.reject(e)));
          // once recorded, an attempt returns before it could crash
          expect(outcome).toBe(before ? 'duplicate' : point === 'none' ? 'delivered' : 'crash');
        }
        expect(calls).toBe(expectedCalls);
        expect(await d.ledger.isDelivered(id)).toBe(recorded);
        crash = 'none';
        expect(await deliverOne(d, result(id))).toBe(recorded ? 'duplicate' : 'delivered'); // the next attempt finishes it
        expect(shown).toEqual(new Set([id]));
        expect(calls).toBe(recorded ? expectedCalls : expectedCalls + 1);
      }),
      { numRuns: process.env.MUTATION_RUN ? 8 : 25 },
    );
  });
});
