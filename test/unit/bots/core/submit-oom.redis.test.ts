// A Redis that reached maxmemory (noeviction, as BullMQ needs) refuses every write: the core then tells the user in
// plain words that nothing was queued and to tell an admin, logs what the admin must do, and works again once Redis has
// room. On a redis-server of its own: maxmemory is server-wide.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../../../bots/core/submit.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { closeRedis, createRedis, isRedisOutOfMemory, type Redis } from '../../../../src/redis.ts';
import { capturedLog, invocation, OPEN_LIMIT, recordingPort } from '../../../doubles/core-harness.ts';
import { startRedisServer, type RedisProcess } from '../../../doubles/redis-processes.ts';

let server: RedisProcess;
let redis: Redis;
let core: Core;
const { log, lines } = capturedLog('warn');

beforeAll(async () => {
  server = await startRedisServer('maxmemory-policy noeviction');
  const url = `redis://127.0.0.1:${server.port}`;
  redis = createRedis(url);
  const config = loadConfig({ env: {}, overrides: { queue: { prefix: `t-oom-${randomUUID().slice(0, 8)}` }, limits: { channel: OPEN_LIMIT, user: OPEN_LIMIT, workspace: OPEN_LIMIT } } });
  core = createCore({ config, secrets: { REDIS_URL: url }, ports: [recordingPort()], redis, log });
  await core.start();
});
afterAll(async () => {
  await core?.stop();
  if (redis) await closeRedis(redis);
  await server?.kill();
});

describe('a full Redis', () => {
  it('refuses a request with a message the user can act on, logs what an admin must do, and takes requests again once there is room', async () => {
    await redis.call('CONFIG', 'SET', 'maxmemory', '1'); // below what it holds: every write is refused from now on
    const reply = await core.handle(invocation({ command: 'imagine', prompt: 'a stoat in the snow', seed: 1 }));
    expect(reply).toEqual({ kind: 'error', text: 'My job store is full, so nothing was queued. Please tell an admin; it works again once they make room.', private: true });
    expect(lines.find((l) => l.msg.startsWith('command refused: Redis is out of memory'))).toMatchObject({ level: 50, err: expect.stringContaining('OOM command not allowed') });
    expect(await core.queue.getJobCounts()).toMatchObject({ waiting: 0, prioritized: 0, delayed: 0 });

    await redis.call('CONFIG', 'SET', 'maxmemory', '0');
    expect(await core.handle(invocation({ command: 'imagine', prompt: 'a stoat in the snow', seed: 2 }))).toMatchObject({ kind: 'queued' });
  });

  it("tells Redis's out-of-memory refusals from other errors, whether a command or a script met it", () => {
    expect(isRedisOutOfMemory(new Error("OOM command not allowed when used memory > 'maxmemory'."))).toBe(true);
    expect(isRedisOutOfMemory(new Error("ERR Error running script: OOM command not allowed when used memory > 'maxmemory'. script: 1f0e"))).toBe(true);
    expect(isRedisOutOfMemory(new Error('ERR wrong number of arguments'))).toBe(false);
    expect(isRedisOutOfMemory(undefined)).toBe(false);
  });
});
