// One place that opens Redis connections. BullMQ needs `maxRetriesPerRequest: null` on connections it
// blocks on (workers, QueueEvents), so every connection we hand it is made here.
//
// REDIS_URL takes two forms:
//   redis://[user:password@]host:port[/db]   (rediss:// for TLS)    one server, as before
//   redis+sentinel://[user:password@]host:port,host:port,…/<master name>[/db][?sentinelPassword=…]
//                                                                  Redis Sentinel (docs/high-availability.md):
//     ioredis asks the sentinels for the current primary and follows failovers.
import { Redis, type RedisOptions } from 'ioredis';

export type { Redis };

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

/** The URL without its password, for logs and error messages. */
export function redactRedisUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** A new connection to REDIS_URL (either form above). Callers own it and must `quit()` it. */
export function createRedis(url: string, name?: string): Redis {
  const common: RedisOptions = { maxRetriesPerRequest: null, ...(name ? { connectionName: name } : {}) };
  const target = parseRedisUrl(url);
  return target.kind === 'single' ? new Redis(target.url, common) : new Redis({ ...target.options, ...common });
}

/**
 * After an acceptance (a job written on `redis`), wait until `replicas` replicas have it, at most `timeoutMs`
 * (Redis WAIT). Replication is asynchronous: without this, a failover right after "Queued" can lose the job.
 * Returns how many replicas acknowledged; the caller decides what a shortfall means (we accept and count it).
 */
export async function waitForReplicas(redis: Redis, replicas: number, timeoutMs: number): Promise<number> {
  if (replicas <= 0) return 0;
  return Number(await redis.wait(replicas, timeoutMs));
}

/**
 * Whether an error means the Redis connection dropped (a restart or failover in progress) rather than a bug:
 * ioredis rejects commands in flight with "Connection is closed." when a connection ends under them.
 */
export function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  return (
    e.message === 'Connection is closed.' ||
    e.name === 'MaxRetriesPerRequestError' ||
    e.name === 'ConnectionClosedError' ||
    (typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT'].includes(code))
  );
}

/** Close a connection without throwing if it is already gone. */
export async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
