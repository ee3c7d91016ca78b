// The admin commands through the real core (no worker: jobs stay queued): /limits show|set|reset and
// /queue status|pause|resume|purge-user, permission-checked, changes shared through Redis.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { CommandInput, Invocation } from '../../bots/core/port.ts';
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import type { Destination } from '../../src/jobs/contract.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-${randomUUID().slice(0, 8)}`;
const OFF = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
let redis: Redis;
let core: Core;
let other: Core; // a second bot instance: sees the same runtime limits

const dest = (channelId: string, userId: string): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const run = (c: Core, input: CommandInput, channelId = 'C', userId = 'mod', isAdmin = true) =>
  c.handle({ input, destination: dest(channelId, userId), dedupeKey: randomUUID(), isAdmin } satisfies Invocation);
const imagine = (c: Core, channelId: string, userId: string) => run(c, { command: 'imagine', prompt: 'a lighthouse' }, channelId, userId, false);

beforeAll(() => {
  redis = new Redis(REDIS_URL);
  const config = loadConfig({ env: {}, overrides: { logLevel: 'warn', queue: { prefix }, limits: { channel: { ...OFF, requestsPerWindow: 20, burst: 20 }, user: OFF, workspace: OFF } } });
  core = createCore({ config, secrets: loadSecrets({ REDIS_URL }), ports: [] });
  other = createCore({ config, secrets: loadSecrets({ REDIS_URL }), ports: [] });
});
afterAll(async () => {
  await core.stop();
  await other.stop();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('/limits', () => {
  it('refuses non-admins', async () => {
    expect(await run(core, { command: 'limits', action: 'show' }, 'C', 'pat', false)).toEqual({ kind: 'error', private: true, text: 'Only admins can view or change limits.' });
    expect(await run(core, { command: 'queue', action: 'pause' }, 'C', 'pat', false)).toMatchObject({ kind: 'error', text: 'Only admins can manage the queue.' });
  });

  it('sets a channel limit at runtime that every bot instance enforces, shows it, and resets it', async () => {
    const set = await run(core, { command: 'limits', action: 'set', spec: { requestsPerWindow: 2, burst: 2 } }, 'L');
    expect(set).toEqual({ kind: 'text', private: true, text: 'Limits for this channel are now 2 requests per minute (bursts of 2), no cap on jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.' });
    expect((await imagine(core, 'L', 'u1')).kind).toBe('queued');
    expect((await imagine(other, 'L', 'u2')).kind).toBe('queued');
    expect(await imagine(other, 'L', 'u3')).toMatchObject({ kind: 'error', private: true, text: expect.stringMatching(/^This channel allows 2 requests per minute; try again in \d+ s\.$/) });
    const shown = await run(other, { command: 'limits', action: 'show' }, 'L');
    expect(shown.kind === 'text' && shown.text).toMatch(/^Limits for this channel \(set by an admin\): 2 requests per minute .*\n  now: 0 of 2 requests available now; 2 jobs queued or running/);
    const reset = await run(core, { command: 'limits', action: 'reset' }, 'L');
    expect(reset.kind === 'text' && reset.text).toBe('Limits for this channel are back to the default: 20 requests per minute (bursts of 20), no cap on jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.');
    expect((await imagine(other, 'L', 'u3')).kind).toBe('queued');
  });

  it('rejects bad values and channels of other workspaces', async () => {
    expect(await run(core, { command: 'limits', action: 'set', spec: { windowSeconds: 0 } })).toMatchObject({ kind: 'error', text: expect.stringMatching(/^Cannot set those limits: `windowSeconds` must be a whole number of seconds from 1 to 2592000 \(30 days\); you gave 0\./) });
    expect(await run(core, { command: 'limits', action: 'set', spec: {} })).toMatchObject({ kind: 'error', text: expect.stringMatching(/^Say which limits to set\. Usage: /) });
    expect(await run(core, { command: 'limits', action: 'show', channelKey: 'discord:other-guild:X' })).toMatchObject({ kind: 'error', text: 'You can only manage channels of this server or workspace.' });
    expect((await run(core, { command: 'limits', action: 'show', channelKey: 'discord:g1:L' })).kind).toBe('text');
  });
});

describe('/queue', () => {
  it('shows depth and per-channel usage, pauses and resumes a channel, purges a user', async () => {
    const a = await imagine(core, 'Q', 'alice');
    const b = await imagine(core, 'Q', 'bob');
    const c = await imagine(core, 'Q', 'alice');
    const ids = [a, b, c].map((r) => (r.kind === 'queued' ? r.jobId : ''));
    expect(await Promise.all(ids.map((id) => core.position(id)))).toEqual([expect.any(Number), expect.any(Number), expect.any(Number)]);

    expect(await run(core, { command: 'queue', action: 'pause' }, 'Q')).toMatchObject({ kind: 'text', text: expect.stringMatching(/^Paused this channel/) });
    expect(await core.position(ids[1]!)).toBeUndefined(); // held: no place in the dispatch order while paused
    expect(await imagine(core, 'Q', 'dana')).toMatchObject({ kind: 'queued', text: 'Queued. An admin paused this channel; your request waits until they resume it.' });
    const status = await run(other, { command: 'queue', action: 'status' }, 'Q');
    expect(status.kind === 'text' && status.text).toMatch(/this channel: 4 waiting \(paused\); 16 of 20 requests available now; 4 jobs queued or running/);
    expect(status.kind === 'text' && status.text).toMatch(/^Queue: 0 running, \d+ waiting/);

    await run(core, { command: 'queue', action: 'resume' }, 'Q');
    const before = await Promise.all(ids.map((id) => core.position(id)));
    expect(before.every((p) => typeof p === 'number')).toBe(true);

    expect(await run(core, { command: 'queue', action: 'purge-user' }, 'Q')).toMatchObject({ kind: 'error', text: 'Name the user whose jobs to remove.' });
    expect(await run(core, { command: 'queue', action: 'purge-user', targetUserId: 'alice' }, 'Q')).toEqual({ kind: 'text', private: true, text: 'Removed 2 waiting jobs of that user.' });
    expect(await core.queue.getJob(ids[0]!)).toBeUndefined();
    expect(await core.queue.getJob(ids[2]!)).toBeUndefined();
    expect(await core.position(ids[1]!)).toBeLessThan(before[1]!); // bob moved up: alice's removed job was ahead of him
    const after = await run(core, { command: 'queue', action: 'status' }, 'Q');
    expect(after.kind === 'text' && after.text).toMatch(/this channel: 2 waiting; .*2 jobs queued or running/);
  });
});
