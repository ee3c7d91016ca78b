// One place that opens Redis connections. BullMQ needs `maxRetriesPerRequest: null` on connections it
// blocks on (workers, QueueEvents), so every connection we hand it is made here.
//
// REDIS_URL takes two forms:
//   redis://[user:password@]host:port[/db]   (rediss:// for TLS)    one server
//   redis+sentinel://[user:password@]host:port,host:port,…/<master name>[/db][?sentinelPassword=…]
//                                                                  Redis Sentinel (docs/high-availability.md):
//     ioredis asks the sentinels for the current primary and follows failovers.
//
// While Redis is unreachable every connection retries on its own (ioredis backoff) and fails again and again;
// this file turns that into one JSON log line per state change for the whole process ("cannot reach Redis at
// host:port, retrying" … "Redis at host:port is reachable again"), never a stack per retry. BullMQ objects made in
// src/jobs/queue.ts report their connection errors here too.
import { Redis, type RedisOptions } from 'ioredis';
import { createLogger, type Logger } from './log.ts';

export type { Redis };

let log: Logger = createLogger('redis', process.env.LOG_LEVEL || 'info');
let state: 'unknown' | 'up' | 'down' = 'unknown';

/** Log Redis reachability through the process's own logger (component, level) instead of the default one. */
export function setRedisLogger(logger: Logger): void {
  log = logger;
}

const SENTINEL = /^redis\+sentinel:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)\/([^/?]+)(?:\/(\d+))?\/?(?:\?(.*))?$/;

/** What a REDIS_URL means: a plain URL for ioredis, or Sentinel options. Throws a message naming REDIS_URL. */
export function parseRedisUrl(url: string): { kind: 'single'; url: string } | { kind: 'sentinel'; options: RedisOptions } {
  if (/^rediss?:\/\//.test(url)) return { kind: 'single', url };
  const m = SENTINEL.exec(url);
  if (!m) {
    throw new Error(
      `REDIS_URL "${redactRedisUrl(url)}" is not a Redis address: use redis://host:6379 for one server, or ` +
        'redis+sentinel://host1:26379,host2:26379,host3:26379/<master name> for Redis Sentinel.',
    );
  }
  const [, username, password, hostList, name, db, query] = m;
  const sentinels = hostList!.split(',').map((hostPort) => {
    const [host, port] = hostPort.split(':');
    const portNumber = port === undefined ? 26379 : Number(port);
    if (!host || !Number.isInteger(portNumber) || portNumber <= 0 || portNumber > 65535)
      throw new Error(`REDIS_URL: "${hostPort}" is not a sentinel address (host:port).`);
    return { host, port: portNumber };
  });
  const params = new URLSearchParams(query ?? '');
  const options: RedisOptions = {
    sentinels,
    name: decodeURIComponent(name!),
    db: db === undefined ? 0 : Number(db),
    // A primary that is demoted and comes back answers writes with READONLY: reconnect, asking the sentinels again.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
    // Subscribe to the sentinels' +switch-master so a failover is followed at once, not at the next error.
    failoverDetector: true,
  };
  if (username) options.username = decodeURIComponent(username);
  if (password) options.password = decodeURIComponent(password);
  const sentinelPassword = params.get('sentinelPassword');
  if (sentinelPassword) options.sentinelPassword = sentinelPassword;
  return { kind: 'sentinel', options };
}

/** The URL without its password, for error messages. */
export function redactRedisUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** `redis://:secret@host:6379/0` → `host:6379`; a Sentinel URL → `sentinels h1:26379,h2:26379 (master m)`; never a password. */
export function redisAddress(url: string): string {
  try {
    const target = parseRedisUrl(url);
    if (target.kind === 'sentinel')
      return `sentinels ${target.options.sentinels!.map((s) => `${s.host}:${s.port}`).join(',')} (master ${target.options.name})`;
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '6379'}`;
  } catch {
    return 'the REDIS_URL given';
  }
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/**
 * True for errors that mean "Redis cannot be reached right now" (a restart or failover in progress) as opposed to a
 * command that failed: ioredis rejects commands in flight with "Connection is closed." when a connection ends under them.
 */
export function isRedisConnectionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown } | undefined;
  if (typeof e?.code === 'string' && CONNECTION_CODES.has(e.code)) return true;
  if (e?.name === 'MaxRetriesPerRequestError' || e?.name === 'ConnectionClosedError') return true;
  return typeof e?.message === 'string' && /^(connect [A-Z]+|getaddrinfo [A-Z_]+|Connection is closed|read ECONNRESET|write EPIPE|All sentinels are unreachable)/.test(e.message);
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

/** A new connection to REDIS_URL (either form above). Callers own it and must `quit()` it. */
export function createRedis(url: string, name?: string): Redis {
  const common: RedisOptions = { maxRetriesPerRequest: null, ...(name ? { connectionName: name } : {}) };
  const target = parseRedisUrl(url);
  const redis = target.kind === 'single' ? new Redis(target.url, common) : new Redis({ ...target.options, ...common });
  const address = redisAddress(url);
  redis.on('error', (e: Error) => {
    if (!noteRedisError(e, address)) log.error({ redis: address, err: e.message }, 'Redis connection error');
  });
  redis.on('ready', () => noteRedisReady(address));
  return redis;
}

/**
 * After an acceptance (a job written on `redis`), wait until `replicas` replicas have it, at most `timeoutMs`
 * (Redis WAIT). Replication is asynchronous: without this, a failover right after "Queued" can lose the job.
 * Returns how many replicas acknowledged; the caller decides what a shortfall means (we accept and log it).
 */
export async function waitForReplicas(redis: Redis, replicas: number, timeoutMs: number): Promise<number> {
  if (replicas <= 0) return 0;
  return Number(await redis.wait(replicas, timeoutMs));
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
