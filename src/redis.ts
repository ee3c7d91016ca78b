// One place that opens Redis connections. BullMQ needs `maxRetriesPerRequest: null` on connections it
// blocks on (workers, QueueEvents), so every connection we hand it is made here.
//
// While Redis is unreachable every connection retries on its own (ioredis backoff) and fails again and again;
// this file turns that into one JSON log line per state change for the whole process ("cannot reach Redis at
// host:port, retrying" … "Redis at host:port is reachable again"), never a stack per retry. BullMQ objects made in
// src/jobs/queue.ts report their connection errors here too.
import { Redis } from 'ioredis';
import { createLogger, type Logger } from './log.ts';

export type { Redis };

let log: Logger = createLogger('redis', process.env.LOG_LEVEL || 'info');
let state: 'unknown' | 'up' | 'down' = 'unknown';

/** Log Redis reachability through the process's own logger (component, level) instead of the default one. */
export function setRedisLogger(logger: Logger): void {
  log = logger;
}

/** `redis://:secret@host:6379/0` → `host:6379` (never the password). */
export function redisAddress(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '6379'}`;
  } catch {
    return 'the REDIS_URL given';
  }
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/** True for errors that mean "Redis cannot be reached right now" (as opposed to a command that failed). */
export function isRedisConnectionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  if (typeof e?.code === 'string' && CONNECTION_CODES.has(e.code)) return true;
  return typeof e?.message === 'string' && /^(connect [A-Z]+|getaddrinfo [A-Z_]+|Connection is closed|read ECONNRESET|write EPIPE)/.test(e.message);
}

/**
 * Record a connection error seen on any connection or BullMQ object: logs one line when Redis goes from reachable
 * (or not yet tried) to unreachable. Returns false for errors that are not about reaching Redis (log those yourself).
 */
export function noteRedisError(err: unknown, address: string): boolean {
  if (!isRedisConnectionError(err)) return false;
  if (state !== 'down') log.warn({ redis: address, err: (err as Error).message }, `cannot reach Redis at ${address}, retrying`);
  state = 'down';
  return true;
}

function noteRedisReady(address: string): void {
  if (state === 'down') log.info({ redis: address }, `Redis at ${address} is reachable again`);
  state = 'up';
}

/** A new connection to `url` (REDIS_URL). Callers own it and must `quit()` it. */
export function createRedis(url: string, name?: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null, ...(name ? { connectionName: name } : {}) });
  const address = redisAddress(url);
  redis.on('error', (e: Error) => {
    if (!noteRedisError(e, address)) log.error({ redis: address, err: e.message }, 'Redis connection error');
  });
  redis.on('ready', () => noteRedisReady(address));
  return redis;
}

/**
 * Resolves once `redis` answers a PING; rejects after `timeoutMs` with a sentence that says what to do. For the
 * interactive CLI, which gives up instead of retrying forever.
 */
export async function waitForRedis(redis: Redis, url: string, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `Cannot reach Redis at ${redisAddress(url)} after ${Math.round(timeoutMs / 1000)} s. Start it (\`docker compose up -d redis\`, or \`redis-server\`) or point REDIS_URL at a running one.`,
          ),
        ),
      timeoutMs,
    );
  });
  try {
    await Promise.race([redis.ping(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Close a connection without throwing if it is already gone. */
export async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
