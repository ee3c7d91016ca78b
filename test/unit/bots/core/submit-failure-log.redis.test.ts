// core.handle's failures that are not the user's own, as the admin finds them: "Something went wrong (ref X)" has one
// error line with X, the cause and its stack, the command and where it was asked; a refusal because Redis is away or
// full is a warning or error of its own. Each is counted for /metrics through onCommandFailed (bots/main.ts), by
// platform, command and a bounded reason.
import { describe, expect, it } from 'vitest';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import type { Invocation } from '../../../../bots/core/port.ts';
import { capturedLog, coreHarness, invocation as inv } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-cmdfail');
const imagine = (prompt = 'a fox'): Invocation['input'] => ({ command: 'imagine', prompt });

describe('core.handle: a failure the admin can find', () => {
  it('"Something went wrong (ref X)": one error line with X, the cause with its stack, the command, job, channel and workspace', async () => {
    const { log, lines } = capturedLog('warn');
    const failed: unknown[] = [];
    const c = h.core({ admit: async () => Promise.reject(new TypeError("Cannot read properties of undefined (reading 'slots')")), log, onCommandFailed: (f) => void failed.push(f) });
    const asked = inv(imagine());
    const reply = (await c.handle(asked)) as { text: string };
    const ref = /^Something went wrong \(ref ([0-9a-f]{8})\)\.$/.exec(reply.text)?.[1];
    expect(ref).toBeDefined();
    expect(lines.filter((l) => JSON.stringify(l).includes(ref!))).toMatchObject([{
      level: 50, msg: 'command failed', ref, command: 'imagine', platform: 'discord', workspace: 'g', channel: 'c1',
      jobId: jobIdFor('discord', asked.dedupeKey), err: "Cannot read properties of undefined (reading 'slots')",
      cause: { type: 'TypeError', stack: expect.stringContaining('submit-failure-log.redis.test.ts') },
    }]);
    expect(failed).toEqual([{ platform: 'discord', command: 'imagine', reason: 'TypeError' }]);
  });

  it('Redis away or full: counted by a reason of its own', async () => {
    const failed: unknown[] = [];
    let fault: Error = new Error('x');
    const c = h.core({ admit: async () => Promise.reject(fault), onCommandFailed: (f) => void failed.push(f) });
    fault = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    await c.handle(inv(imagine()));
    fault = Object.assign(new Error('OOM command not allowed when used memory > \'maxmemory\'.'), { name: 'ReplyError' });
    await c.handle(inv(imagine()));
    expect(failed).toEqual([
      { platform: 'discord', command: 'imagine', reason: 'redis_unavailable' },
      { platform: 'discord', command: 'imagine', reason: 'redis_full' },
    ]);
  });
});
