// core.handle's failures that are not the user's own, as the admin finds them: "Something went wrong (ref X)" has one
// error line with X, the cause and its stack, the command and where it was asked; a refusal because Redis is away or
// full is a warning or error of its own. Each is counted for /metrics through onCommandFailed (bots/main.ts), by
// platform, command and a bounded reason.
import { describe, expect, it } from 'vitest';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import type { Invocation } from '../../../../bots/core/port.ts';
import { ANSWER_UNKNOWN_TEXT } from '../../../../bots/core/submit.ts';
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

  it('Redis silent on whether a request was queued: counted as answer_unknown', async () => {
    const failed: unknown[] = [];
    const c = h.core({ answerWithinMs: 100, onCommandFailed: (f) => void failed.push(f) });
    // The add reaches Redis, which then says nothing: the core cannot tell whether the job exists (submit-paths plays it too)
    const add = c.queue.add.bind(c.queue);
    const getJob = c.queue.getJob.bind(c.queue);
    const held: (() => void)[] = [];
    let silent = false;
    c.queue.getJob = ((id: string) => (silent ? new Promise((resolve) => held.push(() => resolve(getJob(id)))) : getJob(id))) as typeof c.queue.getJob;
    c.queue.add = (async (...args: Parameters<typeof add>) => {
      await add(...args);
      silent = true;
      throw new Error('Connection is closed.');
    }) as typeof c.queue.add;
    expect(await c.handle(inv(imagine()))).toEqual({ kind: 'error', text: ANSWER_UNKNOWN_TEXT, private: true });
    expect(failed).toEqual([{ platform: 'discord', command: 'imagine', reason: 'answer_unknown' }]);
    silent = false;
    for (const answer of held.splice(0)) answer();
    await new Promise((r) => setTimeout(r, 300)); // the request settles in the background once Redis answers
  });

  it("an adapter's own \"Something went wrong\" (core.commandFailed): counted as the core's are, by the error's code or name", async () => {
    const failed: unknown[] = [];
    const c = h.core({ onCommandFailed: (f) => void failed.push(f) });
    c.commandFailed({ platform: 'slack', command: 'ask', error: Object.assign(new Error('An API error occurred: fatal_error'), { code: 'slack_webapi_platform_error' }) });
    c.commandFailed({ platform: 'discord', command: 'other', error: new TypeError('x is undefined') });
    expect(failed).toEqual([
      { platform: 'slack', command: 'ask', reason: 'slack_webapi_platform_error' },
      { platform: 'discord', command: 'other', reason: 'TypeError' },
    ]);
  });
});
