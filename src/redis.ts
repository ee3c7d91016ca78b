// One place that opens Redis connections. BullMQ needs `maxRetriesPerRequest: null` on connections it
// blocks on (workers, QueueEvents), so every connection we hand it is made here.
//
// REDIS_URL takes three forms, each with TLS as rediss…:// (a private CA's certificate: NODE_EXTRA_CA_CERTS):
//   redis://[user:password@]host:port[/db]   (rediss:// for TLS)    one server
//   redis+sentinel://[user:password@]host:port,host:port,…/<master name>[/db][?sentinelPassword=…]
//                                                                  Redis Sentinel (docs/high-availability.md):
//     ioredis asks the sentinels for the current primary and follows failovers.
//   redis+cluster://[user:password@]host:port,host:port,…[?failoverWaitMs=20000]
//                                                                  Redis Cluster (docs/high-availability.md): any
//                                                                  reachable nodes; ioredis learns the rest. Needs
//     queue.prefix to be a hash tag (`{blip3o}`) so that every key of a queue, job and script lands in one slot.
//     A command whose master fails is retried until its replica has taken over, for up to failoverWaitMs.
//
// While Redis is unreachable every connection retries on its own (ioredis backoff) and fails again and again;
// this file turns that into one JSON log line per state change for the whole process ("cannot reach Redis at
// host:port, retrying" … "Redis at host:port is reachable again"), never a stack per retry. BullMQ objects made in
// src/jobs/queue.ts report their connection errors here too.
import type { Socket } from 'node:net';
import { Cluster, Redis as SingleRedis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { logLevelFromEnv } from './config/env.ts';
import { createLogger, type Logger } from './log.ts';

/**
 * A connection: one server (or the primary Sentinel points at), or a Redis Cluster. Everything that sends commands
 * takes this type; both speak the same commands, and every key of one job or queue shares one hash slot when
 * queue.prefix is a hash tag (`{blip3o}`), which Cluster requires.
 */
export type Redis = SingleRedis | Cluster;

/** One Lua script's KEYS and ARGV, for a caller that runs the script inside a larger one (src/limits/gate.ts). */
export interface ScriptCall {
  keys: string[];
  args: (string | number | Buffer)[]; // Buffer: bytes (a cached PNG)
}

/** Lua: nowMs(), Redis's clock in ms (TIME): every host that runs a script reads the same clock, whatever its own says. */
export const NOW_MS_LUA = `local function nowMs() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end`;

/** A part of a combined script that is skipped (no keys): no lookup, nothing to store, no flight. */
export const NO_CALL: ScriptCall = { keys: [], args: [] };

/**
 * The opening of a script that runs `parts` modules' scripts in one call (runCombined; src/limits/gate.ts's admission,
 * worker/after-job.ts's completion): `calls[i]` is part i's {KEYS, ARGV}, and `run(i, f)` runs it with f, the part's
 * own script as a Lua function of (KEYS, ARGV). ARGV starts with every part's KEYS and ARGV counts, then their ARGV.
 */
export function combinedPreamble(parts: number): string {
  return `
local function slice(t, from, n) local out = {} for i = 1, n do out[i] = t[from + i - 1] end return out end
local calls, k, a = {}, 1, ${2 * parts + 1}
for i = 1, ${parts} do
  local nk, na = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  calls[i] = { slice(KEYS, k, nk), slice(ARGV, a, na) }
  k, a = k + nk, a + na
end
local function run(i, f) return f(calls[i][1], calls[i][2]) end
`;
}

/**
 * Runs `calls` as the parts of `lua` (opened with combinedPreamble(calls.length)), defined on the connection as `name`
 * at its first use. `replies: 'buffers'`: bulk strings come back as Buffers (bytes such as a cached PNG).
 */
export function runCombined(redis: Redis, name: string, lua: string, calls: readonly ScriptCall[], replies: 'strings' | 'buffers' = 'strings'): Promise<unknown[]> {
  const keys = calls.flatMap((c) => c.keys);
  const args = [...calls.flatMap((c) => [c.keys.length, c.args.length]), ...calls.flatMap((c) => c.args)];
  return runScript(redis, name, lua, keys, args, replies) as Promise<unknown[]>;
}

type Scripted = Record<string, ((...args: (string | number | Buffer)[]) => Promise<unknown>) | undefined>;

/**
 * Runs `lua` with `keys` and `args` as the command `name`, defined on the connection at its first use: EVALSHA, so the
 * script's text crosses the wire once per connection (ioredis loads it again after NOSCRIPT), not with every call as
 * EVAL sends it. `replies: 'buffers'`: bulk strings come back as Buffers.
 */
export function runScript(redis: Redis, name: string, lua: string, keys: readonly string[], args: readonly (string | number | Buffer)[], replies: 'strings' | 'buffers' = 'strings'): Promise<unknown> {
  defineScript(redis, name, lua);
  return (redis as unknown as Scripted)[replies === 'buffers' ? `${name}Buffer` : name]!(keys.length, ...keys, ...args);
}

/** `lua` as the command `name` on the connection, unless it is defined already (a MULTI made from it has it too). */
export function defineScript(redis: Redis, name: string, lua: string): void {
  // Stryker disable next-line ConditionalExpression: defining the command again on every call defines the same script
  if (typeof (redis as unknown as Scripted)[name] !== 'function') redis.defineCommand(name, { lua });
}

// Until the process sets its own (setRedisLogger, once its config is read). LOG_LEVEL read leniently: a value pino
// does not know ("warning") threw here at import, a stack trace before the config could name LOG_LEVEL.
let log: Logger = createLogger('redis', logLevelFromEnv(process.env.LOG_LEVEL));
let state: 'unknown' | 'up' | 'down' = 'unknown';

/** Log Redis reachability through the process's own logger (component, level) instead of the default one. */
export function setRedisLogger(logger: Logger): void {
  log = logger;
}

const SENTINEL = /^(rediss?)\+sentinel:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)\/([^/?]+)(?:\/(\d+))?\/?(?:\?(.*))?$/;

const CLUSTER = /^(rediss?)\+cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)\/?(?:\?(.*))?$/;

/**
 * How long a Cluster command rides through its master's failover by default: Redis fails a master over once it has
 * not answered for cluster-node-timeout (15 s by default), then its replicas elect one (≈ 1–2 s). ioredis' own
 * default gives up after 16 retries 100 ms apart, so every command sent in the first ≈ 1.6 s of a failover failed:
 * requests were refused and BullMQ's workers' commands failed (the Cluster failover test).
 */
export const CLUSTER_FAILOVER_WAIT_MS = 20_000;
/** The pause between a Cluster command's retries while its slot has no reachable master (CLUSTERDOWN, closed, TRYAGAIN). */
const CLUSTER_RETRY_MS = 200;
/**
 * How often a Cluster connection asks which node serves which slots. ioredis asks only when a command is redirected
 * or a node's connection closes; a master that hangs (a paused VM, a partition) does neither: its replica takes its
 * slots over, and every command sent to it waits on its open socket until it comes back (the hung-master test: 4 min,
 * until the test ended). A refresh that finds the node gone from the slots closes its connection, and the commands on
 * it are retried on the new master. One CLUSTER SLOTS per connection per interval.
 */
const CLUSTER_SLOTS_REFRESH_MS = 1_000;

export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'sentinel'; options: RedisOptions }
  | { kind: 'cluster'; nodes: { host: string; port: number }[]; options: ClusterOptions };

function hostPorts(list: string, defaultPort: number, what: string): { host: string; port: number }[] {
  return list.split(',').map((hostPort) => {
    const [host, port] = hostPort.split(':');
    const portNumber = port === undefined ? defaultPort : Number(port);
    if (!host || !Number.isInteger(portNumber) || portNumber <= 0 || portNumber > 65535)
      throw new Error(`REDIS_URL: "${hostPort}" is not a ${what} address (host:port).`);
    return { host, port: portNumber };
  });
}

/** What a REDIS_URL means: a plain URL for ioredis, Sentinel or Cluster options. Throws a message naming REDIS_URL. */
export function parseRedisUrl(url: string): RedisTarget {
  if (/^rediss?:\/\//.test(url)) return { kind: 'single', url };
  const c = CLUSTER.exec(url);
  if (c) {
    const [, scheme, username, password, hostList, query] = c;
    // rediss+cluster://: TLS to every node (a managed cluster with encryption in transit). The server certificates are
    // checked against Node's CAs and NODE_EXTRA_CA_CERTS (a private CA: docs/high-availability.md).
    const redisOptions: RedisOptions = scheme === 'rediss' ? { tls: {} } : {};
    if (username) redisOptions.username = decodeURIComponent(username);
    if (password) redisOptions.password = decodeURIComponent(password);
    const wait = new URLSearchParams(query ?? '').get('failoverWaitMs') ?? String(CLUSTER_FAILOVER_WAIT_MS);
    if (!/^\d+$/.test(wait)) throw new Error(`REDIS_URL "${redactRedisUrl(url)}": failoverWaitMs must be a number of milliseconds, not "${wait}".`);
    const options: ClusterOptions = {
      redisOptions,
      // Each retry counts as a redirection: as many as fit in the wait, CLUSTER_RETRY_MS apart (at least ioredis' 16).
      maxRedirections: Math.max(16, Math.ceil(Number(wait) / CLUSTER_RETRY_MS)),
      retryDelayOnFailover: CLUSTER_RETRY_MS,
      retryDelayOnClusterDown: CLUSTER_RETRY_MS,
      retryDelayOnTryAgain: CLUSTER_RETRY_MS,
      // ioredis' ready check (CLUSTER INFO says cluster_state:ok) makes a connect() during a failover a promise that
      // never settles: the failed check drops the connection and retries, and only the retry's own promise resolves.
      // BullMQ's watchdog reconnects a blocking connection just so (disconnect, connect), and its worker then waited on
      // that promise for good (the Cluster fail-back test). Without the check the connection is ready once it has the
      // slots, and a command sent while the cluster is down is retried as CLUSTERDOWN, for failoverWaitMs, as above.
      enableReadyCheck: false,
      slotsRefreshInterval: CLUSTER_SLOTS_REFRESH_MS,
    };
    return { kind: 'cluster', nodes: hostPorts(hostList!, 6379, 'cluster node'), options };
  }
  const m = SENTINEL.exec(url);
  if (!m) {
    throw new Error(
      `REDIS_URL "${redactRedisUrl(url)}" is not a Redis address: use redis://host:6379 for one server, ` +
        'redis+sentinel://host1:26379,host2:26379,host3:26379/<master name> for Redis Sentinel, or ' +
        'redis+cluster://host1:6379,host2:6379,host3:6379 for Redis Cluster (rediss… for TLS).',
    );
  }
  const [, scheme, username, password, hostList, name, db, query] = m;
  const sentinels = hostPorts(hostList!, 26379, 'sentinel');
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
  // rediss+sentinel://: TLS to the sentinels and to the primary they name (certificates checked as for a cluster).
  if (scheme === 'rediss') Object.assign(options, { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} });
  return { kind: 'sentinel', options };
}

/**
 * REDIS_URL with REDIS_PASSWORD put in as its password (URL-encoded), for a deployment that keeps the password apart
 * from the address (compose's .env: the Redis services read the same variable). The servers' password, not the
 * sentinels' (`?sentinelPassword=`). Throws when the URL names a password too: one of them would be ignored.
 */
export function withRedisPassword(url: string, password: string | undefined): string {
  if (!password) return url;
  const m = /^([a-z+]+:\/\/)(?:([^:@/]*)(:[^@/]*)?@)?(.*)$/.exec(url);
  if (!m) return url; // not a Redis URL: parseRedisUrl says so
  const [, scheme, username = '', ownPassword, rest] = m;
  if (ownPassword) throw new Error(`REDIS_URL "${redactRedisUrl(url)}" has a password and REDIS_PASSWORD is set too: keep one of them.`);
  return `${scheme}${username}:${encodeURIComponent(password)}@${rest}`;
}

/**
 * The URL without its passwords, for error messages (they reach `docker compose logs` and support threads): the one
 * before the host, also in a URL mistyped with one slash or none, and any `password` or `sentinelPassword` parameter.
 */
export function redactRedisUrl(url: string): string {
  const q = url.indexOf('?');
  const [address, query] = q < 0 ? [url, ''] : [url.slice(0, q), url.slice(q)];
  // up to the last @ of the address: a password may hold an @ of its own
  return address.replace(/^([^@]*?:\/*)([^:@/]*):.*@/, '$1$2:***@') + query.replace(/([?&](?:sentinel)?password=)[^&]*/gi, '$1***');
}

/**
 * `redis://:secret@host:6379/0` → `host:6379`; a Sentinel URL → `sentinels h1:26379,h2:26379 (master m)`; a Cluster
 * URL → `cluster h1:6379,h2:6379`; never a password.
 */
export function redisAddress(url: string): string {
  try {
    const target = parseRedisUrl(url);
    if (target.kind === 'cluster') return `cluster ${target.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
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
  if (e?.name === 'ClusterAllFailedError') return true; // no node of the Cluster answered
  if (e?.name === 'AcceptanceLost') return true; // what was written went down with the old primary (ReplicaFence)
  // A Cluster command that retried through its whole failover wait ("Too many Cluster redirections. Last error: …").
  return typeof e?.message === 'string' && /^(connect [A-Z]+|getaddrinfo [A-Z_]+|Connection is closed|read ECONNRESET|write EPIPE|All sentinels are unreachable|Too many Cluster redirections|CLUSTERDOWN)/.test(e.message);
}

/**
 * Redis refused a write because it reached `maxmemory` (with `maxmemory-policy noeviction`, which BullMQ needs):
 * nothing can be queued until memory is freed or the limit raised. Scripts report it inside their own error text.
 */
export function isRedisOutOfMemory(err: unknown): boolean {
  const message = (err as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' && message.includes('OOM command not allowed');
}

/**
 * Record a connection error seen on any connection or BullMQ object: logs one line when Redis goes from reachable
 * (or not yet tried) to unreachable or refusing REDIS_URL (redisRefusal). Returns false for errors that are not about
 * reaching Redis (log those yourself).
 */
export function noteRedisError(err: unknown, address: string): boolean {
  const refusal = redisRefusal(err, address);
  if (!refusal && !isRedisConnectionError(err)) return false;
  if (state !== 'down') {
    // A refusal on a running service (its password changed, its certificate expired): one line, not one a second.
    if (refusal) log.error({ redis: address, err: (err as Error).message }, `${refusal} Retrying.`);
    else log.warn({ redis: address, err: (err as Error).message }, `cannot reach Redis at ${address}, retrying`);
  }
  state = 'down';
  return true;
}

function noteRedisReady(address: string): void {
  if (state === 'down') log.info({ redis: address }, `Redis at ${address} is reachable again`);
  state = 'up';
}

/** The redacted address each connection made here was opened with (redisAddress of its REDIS_URL). */
const addresses = new WeakMap<Redis, string>();

/**
 * What to call `redis`'s server in a log line: the redacted REDIS_URL address it was made from (sentinels, cluster
 * nodes or host:port), or host:port for a connection made elsewhere.
 */
export function addressOf(redis: Redis): string {
  const known = addresses.get(redis);
  if (known) return known;
  if (redis instanceof Cluster) return 'the Redis Cluster';
  return `${redis.options.host ?? 'localhost'}:${redis.options.port ?? 6379}`;
}

/** Connections closed here on purpose (closeRedis, disconnectRedis): their end is final. */
const closedHere = new WeakSet<Redis>();

/**
 * ioredis 6 with Sentinel and `failoverDetector` has a race that ends a connection for good. The primary dies; the
 * connection, reconnecting, asks a sentinel where the primary is; the sentinels' `+switch-master` arrives meanwhile
 * and closes the connector under that question (SentinelConnector: "Connection is closed."); the connection goes to
 * `end`. It never reconnects: every later command fails with "Connection is closed.", and the commands in flight when
 * the primary died never settle. The Sentinel test caught it: a bot's connection ended so in the failover, its
 * delivery worker never took another result, and jobs accepted (WAIT-confirmed) and run were never delivered.
 * BullMQ reconnects its own blocking connections from `end` (RedisConnection.reconnect); this does the same for ours.
 * Only an end straight from `connecting` (the connector gave up) counts: a close, ours or the server's, passes through
 * `close` first, and closeRedis / disconnectRedis mark theirs. The new connection re-sends what was in flight.
 */
function reconnectWhenDropped(redis: SingleRedis, address: string): void {
  let last = 'wait';
  for (const status of ['connecting', 'connect', 'ready', 'close', 'reconnecting']) redis.on(status, () => (last = status));
  redis.on('end', () => {
    if (last !== 'connecting' || closedHere.has(redis)) return;
    log.warn({ redis: address }, `connection to ${address} ended in a failover; reconnecting`);
    redis.connect().catch(() => undefined); // a failure ends it from 'connecting' again: this runs again
  });
}

/**
 * Every command written to one connection in one turn of the event loop leaves in one socket write. ioredis writes
 * each command as it is sent: a syscall each, and on loopback or a LAN each also makes Redis wake for a read and answer
 * with a write of its own. Here the socket is corked at a turn's first write and uncorked in that turn's check phase
 * (setImmediate, after the I/O callbacks whose replies led to the writes), so a busy bot or worker sends its jobs'
 * commands together and Redis reads them together. An idle connection's lone command is delayed by nothing but the
 * rest of the turn. Measured (issue 19, seventh pass; docs/architecture.md): Redis CPU per job in a burst about −20 %.
 * This is not ioredis' enableAutoPipelining, which a failover can leave hanging (docs/architecture.md): ioredis still
 * writes, queues and after a reconnect re-sends each command on its own, exactly as without this; only the kernel
 * sees fewer, larger writes.
 */
function batchWrites(socket: Socket): void {
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  (socket as { write: (...args: unknown[]) => boolean }).write = (...args) => {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return write(...args);
  };
}

/**
 * `redis` with batched writes on every socket it opens: its reconnects, its duplicates (BullMQ's blocking connections
 * are duplicates), and on a Cluster each node's connection.
 */
function withBatchedWrites<R extends Redis>(redis: R): R {
  if (redis instanceof Cluster) redis.on('+node', (node: SingleRedis) => withBatchedWrites(node));
  else redis.on('connect', () => batchWrites(redis.stream as Socket));
  const duplicate = redis.duplicate.bind(redis) as (...args: unknown[]) => R;
  (redis as { duplicate: unknown }).duplicate = (...args: unknown[]) => withBatchedWrites(duplicate(...args));
  return redis;
}

/** A second connection like `redis` (same server, Sentinel or Cluster), for a blocking or subscribing reader. */
export function duplicateRedis(redis: Redis): Redis {
  const copy: Redis = redis instanceof Cluster ? redis.duplicate() : redis.duplicate();
  return watched(copy, addressOf(redis));
}

/** A new connection to REDIS_URL (any form above). Callers own it and must `quit()` it. */
export function createRedis(url: string, name?: string): Redis {
  const common: RedisOptions = { maxRetriesPerRequest: null, ...(name ? { connectionName: name } : {}) };
  const target = parseRedisUrl(url);
  const redis: Redis =
    target.kind === 'single'
      ? new SingleRedis(target.url, common)
      : target.kind === 'sentinel'
        ? new SingleRedis({ ...target.options, ...common })
        : new Cluster(target.nodes, { ...target.options, redisOptions: { ...target.options.redisOptions, ...common } });
  return watched(withBatchedWrites(redis), redisAddress(url));
}

/** Reachability logged (one line per state change), and a Sentinel connection that ioredis ends in a failover revived. */
function watched(redis: Redis, address: string): Redis {
  addresses.set(redis, address);
  redis.on('error', (e: Error) => {
    if (!noteRedisError(e, address)) log.error({ redis: address, err: e.message }, 'Redis connection error');
  });
  redis.on('ready', () => noteRedisReady(address));
  if (redis instanceof SingleRedis && redis.options.sentinels) reconnectWhenDropped(redis, address);
  return redis;
}

/**
 * After an acceptance (a job written on `redis`), wait until `replicas` replicas have it, at most `timeoutMs`
 * (Redis WAIT). Replication is asynchronous: without this, a failover right after "Queued" can lose the job.
 * Returns how many replicas acknowledged; the caller decides what a shortfall means (we accept and log it).
 */
export async function waitForReplicas(redis: Redis, replicas: number, timeoutMs: number): Promise<number> {
  if (replicas <= 0) return 0;
  if (!(redis instanceof Cluster)) return Number(await redis.wait(replicas, timeoutMs));
  // Cluster: WAIT counts the writes of one connection to one primary, so ask every primary (a primary this client
  // wrote nothing to answers at once); the job holds only if each one's replicas have what was written there.
  const counts = await Promise.all(redis.nodes('master').map((node) => node.wait(replicas, timeoutMs)));
  return Math.min(...counts.map(Number));
}

/**
 * Acceptances confirmed to replicas without holding up the connection that wrote them. WAIT blocks the connection it
 * is sent on, and Redis answers nothing else of that client meanwhile: sent on a bot's shared connection, each WAIT
 * held every admission, delivery and progress edit of the bot behind it, for up to acceptReplicaWaitMs each whenever
 * a replica was missing (after a failover, until one is attached again; the Cluster failover test: 60 requests took
 * 33 s to answer). Here the wait happens on a connection of its own, after a write of its own (the fence): the
 * primary replicates its writes in the order it ran them, so a replica that has the fence has every write acknowledged
 * before it was sent. Callers arriving while a round is out share the next one (a group commit): one script and one
 * WAIT per round, however many acceptances it covers.
 * A round that meets a failover is re-sent by ioredis to the new primary, whose WAIT says nothing of writes the old one
 * took and lost: so the fence's script first checks that each caller's witness key (its job) is on the server it runs
 * on, and a caller whose job is not there gets AcceptanceLost, never a count.
 */
export class ReplicaFence {
  private connection: Redis | undefined;
  private waiting: { witness?: string | undefined; resolve: (n: number) => void; reject: (e: unknown) => void }[] = [];
  private draining: Promise<void> | undefined;
  private running = false;

  /** `fenceKey`: a key under the deployment's prefix (on a Cluster, in the slot every acceptance writes to). */
  constructor(
    private readonly redis: Redis,
    private readonly fenceKey: string,
  ) {}

  /**
   * How many replicas hold every write acknowledged on any connection before this call (at most timeoutMs).
   * `witness`: a key those writes made (the job's): rejects with AcceptanceLost if the server answering now lacks it.
   */
  confirm(replicas: number, timeoutMs: number, witness?: string): Promise<number> {
    if (replicas <= 0) return Promise.resolve(0);
    const confirmed = new Promise<number>((resolve, reject) => this.waiting.push({ witness, resolve, reject }));
    // A round in flight may have written its fence before this caller's writes: it waits for the next one.
    if (!this.running) this.draining = this.drain(replicas, timeoutMs);
    return confirmed;
  }

  /** Rounds until no caller waits; `running` is set and cleared in the same turn as the checks, so none is missed. */
  private async drain(replicas: number, timeoutMs: number): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        const round = this.waiting.splice(0);
        try {
          const { count, missing } = await this.fenceAndWait(replicas, timeoutMs, round.map((c) => c.witness));
          round.forEach((c, i) => (missing.has(i) ? c.reject(new AcceptanceLost(c.witness!)) : c.resolve(count)));
        } catch (e) {
          for (const c of round) c.reject(e);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async fenceAndWait(replicas: number, timeoutMs: number, witnesses: readonly (string | undefined)[]): Promise<{ count: number; missing: Set<number> }> {
    const connection = (this.connection ??= duplicateRedis(this.redis));
    const r = connection as unknown as Record<string, (...args: (string | number)[]) => Promise<number[]>>;
    // Stryker disable next-line ConditionalExpression: defining the command again defines the same script
    if (typeof r.blip3oFence !== 'function') connection.defineCommand('blip3oFence', { lua: FENCE });
    const keys = witnesses.flatMap((w, i) => (w === undefined ? [] : [[w, i] as const]));
    const fence = r.blip3oFence!(1 + keys.length, this.fenceKey, ...keys.map(([w]) => w));
    try {
      // One round trip: a connection answers its commands in order (on a Cluster the WAIT goes to each master's own
      // connection, which the fence reaches only once routed: that one waits for it).
      let count: number;
      let absent: number[];
      if (!(connection instanceof Cluster)) [absent, count] = await Promise.all([fence, connection.wait(replicas, timeoutMs).then(Number)]);
      else [absent, count] = [await fence, await waitForReplicas(connection, replicas, timeoutMs)];
      return { count, missing: new Set(absent.map((k) => keys[k - 1]![1])) };
    } catch (e) {
      // A full Redis refuses the fence's write, not the jobs' (already written): they are accepted, with the warning.
      if (isRedisOutOfMemory(e)) return { count: 0, missing: new Set() };
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.draining;
    if (this.connection) await closeRedis(this.connection);
    this.connection = undefined;
  }
}

/** KEYS fence, witness… → the (1-based) witnesses that do not exist here; the fence is written either way. */
const FENCE = `local missing = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then table.insert(missing, i - 1) end
end
redis.call('INCR', KEYS[1])
return missing`;

/** An acceptance whose writes are not on the server that answers now: a failover came between them and its replicas. */
export class AcceptanceLost extends Error {
  override readonly name = 'AcceptanceLost';
  constructor(witness: string) {
    super(`${witness} is not on the Redis primary that answers now: the acceptance was lost in a failover`);
  }
}

/** True when `redis` is a Redis Cluster client (some commands take another form there). */
export function isCluster(redis: Redis): redis is Cluster {
  return redis instanceof Cluster;
}

/**
 * Every key matching `pattern`, batch by batch (SCAN, never KEYS). On a Cluster SCAN covers one node only, so every
 * primary is scanned.
 */
export async function* scanKeys(redis: Redis, pattern: string, count = 500): AsyncGenerator<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      if (keys.length) yield keys;
    } while (cursor !== '0');
  }
}

/**
 * Delete every key matching `pattern`. On a Cluster keys of different slots cannot go in one DEL, so each is
 * deleted on its own there (sent together, each routed to its slot's primary).
 */
export async function deleteKeys(redis: Redis, pattern: string): Promise<number> {
  let n = 0;
  for await (const keys of scanKeys(redis, pattern)) {
    if (redis instanceof Cluster) await Promise.all(keys.map((k) => redis.del(k)));
    else await redis.del(...keys);
    n += keys.length;
  }
  return n;
}

/**
 * What a server said when it refused REDIS_URL's credentials (a wrong password or user, or none where one is needed),
 * or undefined for any other error. On a Cluster the refusal comes as the last node's error of a failed slots refresh.
 */
export function credentialsRefusal(err: unknown): string | undefined {
  const e = err as { message?: unknown; lastNodeError?: { message?: unknown } } | undefined;
  for (const message of [e?.message, e?.lastNodeError?.message])
    if (typeof message === 'string' && /^(WRONGPASS|NOAUTH|ERR (invalid password|AUTH|Client sent AUTH))/.test(message)) return message;
  return undefined;
}

/** Node's codes for a TLS certificate it does not trust, or that does not name the host it was reached at. */
const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Why the TLS handshake with a rediss:// server failed, if it did because of the server's certificate. Sentinel's and
 * Cluster's connectors hide it ("Connection is closed.", "Failed to refresh slots cache."): undefined there, and the
 * CLI's "Cannot reach Redis" says to check the certificate instead.
 */
export function untrustedCertificate(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  return typeof e?.code === 'string' && UNTRUSTED_CERTIFICATE.has(e.code) ? String(e.message) : undefined;
}

/**
 * What to tell whoever set REDIS_URL (and REDIS_PASSWORD, which goes into it) when the server refused it in a way that no
 * retry fixes (its credentials, or a TLS certificate this process does not trust), or undefined for any other error.
 */
export function redisRefusal(err: unknown, address: string): string | undefined {
  const credentials = credentialsRefusal(err);
  if (credentials) return `Redis at ${address} refused the user name or password it was given ("${credentials}"). Put the password Redis asks for in REDIS_PASSWORD, or in REDIS_URL (redis://[user]:<password>@host:port), not both.`;
  const certificate = untrustedCertificate(err);
  if (certificate)
    return (
      `Redis at ${address} presented a TLS certificate this process does not trust ("${certificate}"). ` +
      'Give Node the CA that signed it (NODE_EXTRA_CA_CERTS=/path/to/ca.pem) or use the host name its certificate names in REDIS_URL.'
    );
  return undefined;
}

/**
 * Resolves once `redis` answers a PING. Rejects, with a sentence that says what to fix, as soon as the server refuses
 * REDIS_URL (redisRefusal: its credentials, or an untrusted certificate): ioredis would retry for ever, one error a
 * second, and nothing would ever start. With `timeoutMs` (the interactive CLI, which gives up instead of retrying),
 * also once that long has passed unanswered; without it an unreachable Redis is waited for, as every connection does
 * (a service started before its Redis).
 */
export async function waitForRedis(redis: Redis, url: string, timeoutMs?: number): Promise<void> {
  const address = redisAddress(url);
  let timer: NodeJS.Timeout | undefined;
  let onError: ((e: unknown) => void) | undefined;
  const tlsHint = /^rediss/.test(url) ? ' If it runs, check that its TLS certificate is trusted here (NODE_EXTRA_CA_CERTS).' : '';
  const failed = new Promise<never>((_, reject) => {
    // Not `docker compose up -d redis`: compose does not publish its Redis, so the CLI on the host still could not reach it
    if (timeoutMs !== undefined)
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `Cannot reach Redis at ${address} after ${Math.round(timeoutMs / 1000)} s. Start it (\`redis-server\`, or \`docker run -d -p 127.0.0.1:6379:6379 redis:7.4.2-alpine\`; the compose stack's Redis is not published to this host) or point REDIS_URL at a running one.${tlsHint}`,
            ),
          ),
        timeoutMs,
      );
    onError = (e: unknown) => {
      const refusal = redisRefusal(e, address);
      if (refusal) reject(new Error(refusal));
    };
    redis.on('error', onError);
    if (redis instanceof Cluster) redis.on('node error', onError);
  });
  // One server or Sentinel: the PING itself may be refused; a Cluster: the connection's error events say why.
  const answered = redis.ping().catch((e: unknown) => {
    const refusal = redisRefusal(e, address);
    throw refusal ? new Error(refusal) : e;
  });
  try {
    await Promise.race([answered, failed]);
  } finally {
    clearTimeout(timer);
    redis.off('error', onError!);
    redis.off('node error', onError!);
  }
}

/**
 * A process's stop, bounded: every close that speaks to Redis waits for it (maxRetriesPerRequest: null), so with Redis
 * down or failing over a stop would never end, silent until compose's SIGKILL. Past `ms` this logs what the stop still
 * waited for (`waitingFor`, set as it goes) and exits 1. `fields`: what to log then, read at that moment.
 */
export function stopDeadline(log: Logger, ms: number, redis: () => Redis | undefined, fields: () => Record<string, unknown>): { waitingFor: string } {
  const stop = { waitingFor: 'the stop to begin' };
  setTimeout(() => {
    const status = redis()?.status;
    const reach = status === 'ready' ? 'Redis answers' : 'Redis is unreachable';
    log.fatal({ ...fields(), stopMs: ms, redis: status }, `could not stop within ${Math.round(ms / 1000)} s (still waiting for ${stop.waitingFor}; ${reach}): exiting 1`);
    process.exit(1);
  }, ms).unref();
  return stop;
}

/** Close a connection without throwing if it is already gone. */
export async function closeRedis(redis: Redis): Promise<void> {
  closedHere.add(redis);
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

/** Close a connection at once, dropping what it has pending (one that never came up: no QUIT to wait for). */
export function disconnectRedis(redis: Redis): void {
  closedHere.add(redis);
  redis.disconnect();
}
