// A no-log channel's prompt never reaches the bots' log through an error: ioredis hangs the failed command's arguments
// (the request's JSON) on its errors, and core.handle logs the error of a request that failed (src/log.ts loggableError).
import { describe, expect, it } from 'vitest';
import { capturedLog, coreHarness, invocation, recordingPort } from '../../../doubles/core-harness.ts';
import { createCore } from '../../../../bots/core/submit.ts';
import { cacheAddress } from '../../../doubles/cache-address.ts';
import { REDIS_URL } from '../../../doubles/spine-harness.ts';

const h = coreHarness('t-nolog-errors');

describe('no-log channel: a Redis error on a submit', () => {
  it('does not write the prompt into the "command failed" log line', async () => {
    const config = h.config();
    const { log, lines } = capturedLog('debug');
    const core = createCore({ config, secrets: { REDIS_URL }, ports: [recordingPort()], redis: h.redis, log });
    try {
      const c = core;
      // The channel is in no-log mode (an admin set it).
      const admin = invocation({ command: 'settings', scope: 'channel', action: 'set', values: { noLog: true } } as never, { isAdmin: true });
      const set = await c.handle(admin);
      expect(set.kind).toBe('text');
      const secret = `zebra-${Math.random().toString(36).slice(2, 10)}`;
      const prompt = `a ${secret} on the moon`;
      // What the request's digest will be, to make its single-flight key hold the wrong type (any Redis reply error would do:
      // MISCONF on a full disk, READONLY during a failover, …).
      const probe = await c.handle(invocation({ command: 'imagine', prompt: 'probe', seed: 7 } as never));
      expect(probe.kind).toBe('queued');
      const probeJob = (await h.data(c, (probe as { jobId: string }).jobId))!;
      const digest = (await cacheAddress(c, { ...probeJob, prompt } as never))!;
      await h.redis.set(`${config.queue.prefix}:{cache}:f:${digest}`, 'not a hash');
      const reply = await c.handle(invocation({ command: 'imagine', prompt, seed: 7 } as never));
      expect(reply.kind).toBe('error');
      const text = lines.map((l) => JSON.stringify(l)).join('\n');
      expect(lines.some((l) => l.msg === 'command failed')).toBe(true);
      expect(text).not.toContain(secret);
    } finally {
      await core.stop();
    }
  }, 60_000);
});
