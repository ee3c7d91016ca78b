// REDIS_URL forms: one server, Redis Sentinel or Redis Cluster (src/redis.ts).
import { describe, expect, it } from 'vitest';
import { loadSecrets } from '../../../src/config/load.ts';
import { CLUSTER_FAILOVER_WAIT_MS, createRedis, credentialsRefusal, disconnectRedis, isRedisConnectionError, redisRefusal, untrustedCertificate, parseRedisUrl, redactRedisUrl, redisAddress, waitForRedis } from '../../../src/redis.ts';
import { freePort } from '../../doubles/free-port.ts';

describe('parseRedisUrl', () => {
  it('passes redis:// and rediss:// through unchanged', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
    expect(parseRedisUrl('rediss://u:p@cache.example:6380/2')).toEqual({ kind: 'single', url: 'rediss://u:p@cache.example:6380/2' });
  });

  it('reads sentinels, master name, db and credentials from redis+sentinel://', () => {
    const t = parseRedisUrl('redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,sentinel-3:26380/mymaster/3?sentinelPassword=sp');
    expect(t.kind).toBe('sentinel');
    if (t.kind !== 'sentinel') return;
    expect(t.options.sentinels).toEqual([{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26379 }, { host: 'sentinel-3', port: 26380 }]);
    expect([t.options.name, t.options.db, t.options.username, t.options.password, t.options.sentinelPassword]).toEqual(['mymaster', 3, 'app', 's@cret', 'sp']);
    expect(t.options.failoverDetector).toBe(true);
    // A demoted primary answers READONLY: reconnect (2 = and resend the command); other errors do not reconnect.
    const reconnect = t.options.reconnectOnError as (e: Error) => boolean | 1 | 2;
    expect(reconnect(new Error("READONLY You can't write against a read only replica."))).toBe(2);
    expect(reconnect(new Error('ERR wrong number of arguments'))).toBe(false);
    expect(t.options).not.toHaveProperty('tls');
    // rediss+sentinel://: TLS to the sentinels and to the primary they name
    const tls = parseRedisUrl('rediss+sentinel://s1:26379/mymaster');
    expect(tls).toMatchObject({ kind: 'sentinel', options: { name: 'mymaster', tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} } });
  });

  it('reads nodes and credentials from redis+cluster://, and names the nodes (never the password) in log lines', () => {
    const t = parseRedisUrl('redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,node-3:7002/');
    expect(t.kind).toBe('cluster');
    if (t.kind !== 'cluster') return;
    expect(t.nodes).toEqual([{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 6379 }, { host: 'node-3', port: 7002 }]);
    expect([t.options.redisOptions?.username, t.options.redisOptions?.password]).toEqual(['app', 's@cret']);
    // a command rides through a master's failover: retried every 200 ms for failoverWaitMs (20 s unless the URL says)
    const ride = { retryDelayOnFailover: 200, retryDelayOnClusterDown: 200, retryDelayOnTryAgain: 200, enableReadyCheck: false, slotsRefreshInterval: 1000 };
    expect(parseRedisUrl('redis+cluster://h1:7000')).toEqual({ kind: 'cluster', nodes: [{ host: 'h1', port: 7000 }], options: { redisOptions: {}, maxRedirections: 100, ...ride } });
    expect(CLUSTER_FAILOVER_WAIT_MS).toBe(20_000);
    expect(parseRedisUrl('redis+cluster://h1:7000/?failoverWaitMs=60000')).toMatchObject({ options: { maxRedirections: 300, ...ride } });
    expect(parseRedisUrl('redis+cluster://h1:7000?failoverWaitMs=0')).toMatchObject({ options: { maxRedirections: 16 } }); // ioredis' own least
    expect(() => parseRedisUrl('redis+cluster://h1:7000?failoverWaitMs=soon')).toThrow('REDIS_URL "redis+cluster://h1:7000?failoverWaitMs=soon": failoverWaitMs must be a number of milliseconds, not "soon".');
    for (const bad of ['x5', '5s', '-5']) expect(() => parseRedisUrl(`redis+cluster://h1:7000?failoverWaitMs=${bad}`), bad).toThrow(/failoverWaitMs must be a number/);
    expect(() => parseRedisUrl('redis+cluster://h1:0')).toThrow('REDIS_URL: "h1:0" is not a cluster node address (host:port).');
    expect(() => parseRedisUrl('redis+cluster://h1:7000/3')).toThrow(/not a Redis address/); // Cluster has no databases
    expect(redisAddress('redis+cluster://u:pw@h1:7000,h2:7001')).toBe('cluster h1:7000,h2:7001');
    // rediss+cluster://: TLS to every node, with the rest as above
    expect(parseRedisUrl('rediss+cluster://u:pw@h1:7000')).toEqual({ kind: 'cluster', nodes: [{ host: 'h1', port: 7000 }], options: { redisOptions: { tls: {}, username: 'u', password: 'pw' }, maxRedirections: 100, ...ride } });
    expect(loadSecrets({ REDIS_URL: 'redis+cluster://h1:7000,h2:7001' }).REDIS_URL).toBe('redis+cluster://h1:7000,h2:7001');
  });

  it('refuses what is neither, naming REDIS_URL and both forms, without echoing the password', () => {
    expect(() => parseRedisUrl('http://u:hunter2@x:6379')).toThrow(/^REDIS_URL "http:\/\/u:\*\*\*@x:6379" is not a Redis address: use redis:\/\/host:6379 .* redis\+sentinel:\/\//);
    expect(() => parseRedisUrl('redis+sentinel://a:26379')).toThrow(/not a Redis address/); // no master name
    expect(() => parseRedisUrl('xredis://h:6379')).toThrow(/not a Redis address/);
    expect(() => parseRedisUrl('redis+sentinel://a:99999/m')).toThrow('REDIS_URL: "a:99999" is not a sentinel address (host:port).');
    expect(redactRedisUrl('redis://default:pw@h:1')).toBe('redis://default:***@h:1');
    // the passwords a mistyped URL carries stay out too (before: printed whole in the start-up error)
    expect(redactRedisUrl('redis:/:TOPSECRET@redis:6379')).toBe('redis:/:***@redis:6379'); // one slash
    expect(redactRedisUrl('redis:u:TOP@SECRET@h:6379')).toBe('redis:u:***@h:6379'); // none, and an @ in the password
    expect(redactRedisUrl('redis+sentinel://:nodepw@s1:26379,s2:26379?sentinelPassword=TOPSECRET&x=1')).toBe('redis+sentinel://:***@s1:26379,s2:26379?sentinelPassword=***&x=1');
    expect(redactRedisUrl('rediss://h:6379/0?password=TOPSECRET')).toBe('rediss://h:6379/0?password=***');
    expect(redactRedisUrl('redis://h:6379')).toBe('redis://h:6379');
    expect(() => parseRedisUrl('redis+sentinel://s1:26379?sentinelPassword=TOPSECRET')).toThrow(/^REDIS_URL "redis\+sentinel:\/\/s1:26379\?sentinelPassword=\*\*\*" is not a Redis address/);
    expect(redisAddress('redis+sentinel://u:pw@s1:26379,s2:26380/m')).toBe('sentinels s1:26379,s2:26380 (master m)');
    expect(redisAddress('redis://:pw@cache:6380/1')).toBe('cache:6380');
  });

  it('is checked when secrets load, so a bad REDIS_URL stops start-up with that message', () => {
    expect(() => loadSecrets({ REDIS_URL: "localhost:6379" })).toThrow(/REDIS_URL "localhost:6379" is not a Redis address/);
    expect(loadSecrets({ REDIS_URL: 'redis+sentinel://s1:26379/m' }).REDIS_URL).toBe('redis+sentinel://s1:26379/m');
  });
});

describe('isRedisConnectionError', () => {
  it('tells a dropped connection from a bug', () => {
    expect(isRedisConnectionError(new Error('Connection is closed.'))).toBe(true);
    expect(isRedisConnectionError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isRedisConnectionError(Object.assign(new Error('x'), { name: 'MaxRetriesPerRequestError' }))).toBe(true);
    // a Cluster command that retried through its failover wait, or found no node at all
    expect(isRedisConnectionError(new Error('Too many Cluster redirections. Last error: ReplyError: CLUSTERDOWN The cluster is down'))).toBe(true);
    expect(isRedisConnectionError(new Error('CLUSTERDOWN The cluster is down'))).toBe(true);
    expect(isRedisConnectionError(Object.assign(new Error('Failed to refresh slots cache.'), { name: 'ClusterAllFailedError' }))).toBe(true);
    expect(isRedisConnectionError(new Error('CROSSSLOT Keys in request don\'t hash to the same slot'))).toBe(false);
    // named in its code or class only; and words of a failover inside another error's text are not one
    expect(isRedisConnectionError(Object.assign(new Error('x'), { code: 'ETIMEDOUT' }))).toBe(true);
    expect(isRedisConnectionError(Object.assign(new Error('x'), { name: 'ConnectionClosedError' }))).toBe(true);
    expect(isRedisConnectionError(new Error('ERR user script said: CLUSTERDOWN is a word'))).toBe(false);
    // and by its message alone, as a rejection re-thrown without its code reads
    for (const message of ['connect ECONNREFUSED 127.0.0.1:6379', 'getaddrinfo ENOTFOUND redis', 'getaddrinfo EAI_AGAIN redis']) expect(isRedisConnectionError(new Error(message)), message).toBe(true);
    expect(isRedisConnectionError(new Error('connect to the queue: bad request'))).toBe(false);
    expect(isRedisConnectionError(new TypeError('Cannot read properties of undefined'))).toBe(false);
    expect(isRedisConnectionError('Connection is closed.')).toBe(false);
  });
});

describe('credentialsRefusal', () => {
  it("tells a refusal of REDIS_URL's credentials (any Redis version's wording, or a Cluster's last node error) from other errors", () => {
    const refusals = [
      'WRONGPASS invalid username-password pair or user is disabled.',
      'NOAUTH Authentication required.',
      'ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?',
      'ERR invalid password',
      'ERR Client sent AUTH, but no password is set',
    ];
    for (const message of refusals) expect(credentialsRefusal(new Error(message))).toBe(message);
    expect(credentialsRefusal(Object.assign(new Error('Failed to refresh slots cache.'), { lastNodeError: new Error(refusals[0]) }))).toBe(refusals[0]);
    const others = ['NOPERM this user has no permissions to run the evalsha command', 'ERR unknown command', 'connect ECONNREFUSED 127.0.0.1:6379', 'Failed to refresh slots cache.'];
    others.push("ERR Error running script: user_script:1: NOAUTH is not a refusal here"); // the word inside another error
    for (const other of others)
      expect(credentialsRefusal(new Error(other))).toBeUndefined();
    expect(credentialsRefusal(undefined)).toBeUndefined();
  });
});

describe('redisRefusal', () => {
  it('says what to fix when REDIS_URL is refused for good (credentials, an untrusted certificate), nothing for other errors', () => {
    expect(redisRefusal(new Error('WRONGPASS invalid username-password pair or user is disabled.'), 'h:6379')).toBe(
      'Redis at h:6379 refused the user name or password it was given ("WRONGPASS invalid username-password pair or user is disabled."). ' +
        'Put the password Redis asks for in REDIS_PASSWORD, or in REDIS_URL (redis://[user]:<password>@host:port), not both.',
    );
    const untrusted = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    expect(untrustedCertificate(untrusted)).toBe('self-signed certificate in certificate chain');
    expect(redisRefusal(untrusted, 'h:6380')).toBe(
      'Redis at h:6380 presented a TLS certificate this process does not trust ("self-signed certificate in certificate chain"). ' +
        'Give Node the CA that signed it (NODE_EXTRA_CA_CERTS=/path/to/ca.pem) or use the host name its certificate names in REDIS_URL.',
    );
    for (const code of ['ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT'])
      expect(untrustedCertificate(Object.assign(new Error(code), { code })), code).toBe(code);
    for (const other of [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), new Error('ERR unknown command'), undefined])
      expect(redisRefusal(other, 'h:6379')).toBeUndefined();
  });
});

describe('waitForRedis with a time limit (the CLI)', () => {
  it("gives up with a way to start Redis that this host can reach: compose's Redis is not published (docs/self-hosting.md)", async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const redis = createRedis(url, 'test-probe');
    try {
      const error = await waitForRedis(redis, url, 1000).then(() => undefined, (e: Error) => e);
      expect(error?.message).toMatch(new RegExp(`^Cannot reach Redis at 127\\.0\\.0\\.1:${port} after 1 s\\. Start it`));
      expect(error?.message).toContain('`redis-server`');
      expect(error?.message).toContain('docker run -d -p 127.0.0.1:6379:6379 redis:7.4.2-alpine');
      expect(error?.message).not.toContain('docker compose up -d redis');
    } finally {
      disconnectRedis(redis);
    }
  });
});
