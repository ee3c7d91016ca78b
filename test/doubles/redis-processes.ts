// Real Debian redis-server processes on loopback ports, for the tests that kill, fail over or cluster Redis, or change
// server-wide state: one server, a primary with a replica and three sentinels (redis-server --sentinel), or a 3-master
// Redis Cluster. Each lives in its own temp dir.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { freePort } from './free-port.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface RedisProcess {
  port: number;
  child: ChildProcess;
  /** Stops the process and removes its directory. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILLs the process and keeps its directory (a cluster node's nodes.conf), for `restart`. */
  crash(): Promise<void>;
  /** Starts the crashed process again, on its port, from its directory. */
  restart(): Promise<RedisProcess>;
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl), for servers that speak only TLS. */
export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export function makeTlsFiles(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'redis-tls-'));
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '1', '-subj', '/CN=blip3o test CA');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('key.pem'), '-out', at('server.csr'), '-subj', '/CN=localhost');
  writeFileSync(at('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-out', at('cert.pem'), '-days', '1', '-extfile', at('san.ext'));
  return { ca: at('ca.pem'), cert: at('cert.pem'), key: at('key.pem') };
}

/** How a test's own connection reaches a server: AUTH with its password, TLS trusting the test CA. */
function probeOptions(port: number, password?: string, tls?: TlsFiles) {
  return { port, host: '127.0.0.1', password, ...(tls ? { tls: { ca: readFileSync(tls.ca) } } : {}) };
}

interface ProcessOptions {
  sentinel?: boolean;
  /** Speak only TLS on `port` (replication, the cluster bus and sentinels' connections too). */
  tls?: TlsFiles;
  /** Start again from this directory (a crashed process's), its config file as it was. */
  dir?: string;
}

/** Starts `redis-server <conf>` (conf written to a temp dir) and resolves once it answers PING. */
async function startProcess(conf: string, port: number, options: ProcessOptions = {}): Promise<RedisProcess> {
  const { sentinel = false, tls } = options;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'redis-'));
  const file = join(dir, 'redis.conf');
  const tlsConf = tls
    ? `port 0\ntls-port ${port}\ntls-cert-file ${tls.cert}\ntls-key-file ${tls.key}\ntls-ca-cert-file ${tls.ca}\ntls-auth-clients no\ntls-replication yes\n${conf.includes('cluster-enabled yes') ? 'tls-cluster yes\n' : ''}`
    : '';
  if (!options.dir) writeFileSync(file, `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsave ""\nappendonly no\n${tlsConf}${conf}`);
  const child = spawn('redis-server', [file, ...(sentinel ? ['--sentinel'] : [])], { stdio: 'ignore' });
  const password = /^requirepass (\S+)$/m.exec(conf)?.[1]; // the probe must AUTH to a server that asks for it
  const probe = new Redis({ ...probeOptions(port, password, tls), lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined); // refused until the server listens: connect() rejects, no stack on stderr
  for (let i = 0; ; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      probe.disconnect();
      if (i > 100 || child.exitCode !== null) throw new Error(`redis-server on port ${port} did not start`);
      await sleep(50);
    }
  }
  probe.disconnect();
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const stop = (signal: NodeJS.Signals) => (exited() ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve()).kill(signal)));
  return {
    port,
    child,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      await stop(signal);
      rmSync(dir, { recursive: true, force: true });
    },
    crash: () => stop('SIGKILL'),
    restart: () => startProcess(conf, port, { ...options, dir }),
  };
}

/** One plain redis-server on a free port, `conf` appended to its config: for a test that changes server-wide state. */
export async function startRedisServer(conf = '', port?: number, tls?: TlsFiles): Promise<RedisProcess> {
  return startProcess(conf, port ?? (await freePort()), { tls });
}

export interface SentinelSet {
  primary: RedisProcess;
  replica: RedisProcess;
  sentinels: RedisProcess[];
  masterName: string;
  /** REDIS_URL for our services: redis+sentinel://[:password@]127.0.0.1:s1,…/<masterName> */
  url: string;
  stop(): Promise<void>;
}

/**
 * 1 primary + 1 replica + 3 sentinels (quorum 2), failing over 1 s after the primary stops answering. With `password`,
 * the primary and replica ask for it (requirepass, and masterauth to replicate); the sentinels do not. With `tls`,
 * every one of them speaks only TLS.
 */
export async function startSentinelSet(masterName = 'blip3o', password?: string, tls?: TlsFiles): Promise<SentinelSet> {
  const auth = password ? `requirepass ${password}\nmasterauth ${password}\n` : '';
  const primary = await startProcess(auth, await freePort(), { tls });
  const replica = await startProcess(`${auth}replicaof 127.0.0.1 ${primary.port}\n`, await freePort(), { tls });
  const sentinelConf =
    `sentinel monitor ${masterName} 127.0.0.1 ${primary.port} 2\n` +
    (password ? `sentinel auth-pass ${masterName} ${password}\n` : '') +
    `sentinel down-after-milliseconds ${masterName} 1000\n` +
    `sentinel failover-timeout ${masterName} 5000\n` +
    `sentinel parallel-syncs ${masterName} 1\n`;
  const sentinels: RedisProcess[] = [];
  for (let i = 0; i < 3; i++) sentinels.push(await startProcess(sentinelConf, await freePort(), { sentinel: true, tls }));
  const url = `${tls ? 'rediss' : 'redis'}+sentinel://${password ? `:${password}@` : ''}${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${masterName}`;
  const set: SentinelSet = {
    primary,
    replica,
    sentinels,
    masterName,
    url,
    async stop() {
      // the processes the set holds now: a test may have restarted one
      await Promise.all([set.primary, set.replica, ...set.sentinels].map((p) => p.kill('SIGKILL')));
    },
  };
  return set;
}

/** The primary's port as the sentinels currently see it. */
export async function currentPrimaryPort(set: SentinelSet): Promise<number> {
  const s = new Redis({ port: set.sentinels[0]!.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  try {
    const [, port] = (await s.call('SENTINEL', 'get-master-addr-by-name', set.masterName)) as [string, string];
    return Number(port);
  } finally {
    s.disconnect();
  }
}

export interface ClusterSet {
  masters: RedisProcess[];
  /** With `replicasPerMaster`: the replicas, in no particular order (`replicaOf` says whose). */
  replicas: RedisProcess[];
  /** REDIS_URL for our services: redis+cluster://[:password@]127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3 (the masters) */
  url: string;
  stop(): Promise<void>;
}

/**
 * 3 masters (`redis-cli --cluster create`), each with `replicasPerMaster` replicas, resolved once every node reports
 * cluster_state:ok and every master has its replicas online. A master that stops answering for `nodeTimeoutMs` is
 * failed over to its replica.
 */
export async function startCluster(options: { replicasPerMaster?: number; nodeTimeoutMs?: number; password?: string; tls?: TlsFiles } = {}): Promise<ClusterSet> {
  const { replicasPerMaster = 0, nodeTimeoutMs = 5000, password, tls } = options;
  const nodes: RedisProcess[] = [];
  const auth = password ? `requirepass ${password}\nmasterauth ${password}\n` : '';
  const conf = `${auth}cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout ${nodeTimeoutMs}\n`;
  for (let i = 0; i < 3 * (1 + replicasPerMaster); i++) nodes.push(await startProcess(conf, await freePort(), { tls }));
  const stop = () => Promise.all(nodes.map((p) => p.kill('SIGKILL'))).then(() => undefined);
  try {
    const addresses = nodes.map((m) => `127.0.0.1:${m.port}`);
    // redis-cli makes the first three the masters and the rest their replicas
    const args = ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicasPerMaster), '--cluster-yes', ...(password ? ['-a', password, '--no-auth-warning'] : []), ...(tls ? ['--tls', '--cacert', tls.ca] : [])];
    await new Promise<void>((resolve, reject) =>
      execFile('redis-cli', args, (err, _out, stderr) => (err ? reject(new Error(`redis-cli --cluster create: ${stderr || err.message}`)) : resolve())),
    );
    for (const m of nodes) {
      const node = new Redis({ ...probeOptions(m.port, password, tls), maxRetriesPerRequest: 1 });
      try {
        for (let i = 0; ; i++) {
          const ok = (await node.cluster('INFO')).includes('cluster_state:ok');
          const role = await node.info('replication');
          const synced = role.includes('role:master') ? Number(/connected_slaves:(\d+)/.exec(role)![1]) >= replicasPerMaster : role.includes('master_link_status:up');
          if (ok && synced) break;
          if (i > 400) throw new Error(`cluster node ${m.port} never reported cluster_state:ok with its replicas in sync`);
          await sleep(50);
        }
      } finally {
        node.disconnect();
      }
    }
    const roles = await Promise.all(nodes.map(async (n) => ({ n, master: await isMaster(probeOptions(n.port, password, tls)) })));
    const masters = roles.filter((r) => r.master).map((r) => r.n);
    const set: ClusterSet = {
      masters,
      replicas: nodes.filter((n) => !masters.includes(n)),
      url: `${tls ? 'rediss' : 'redis'}+cluster://${password ? `:${password}@` : ''}${masters.map((m) => `127.0.0.1:${m.port}`).join(',')}`,
      // the processes the set holds now: a test may have restarted one
      stop: () => Promise.all([...set.masters, ...set.replicas].map((p) => p.kill('SIGKILL'))).then(() => undefined),
    };
    return set;
  } catch (e) {
    await stop();
    throw e;
  }
}

async function isMaster(options: ReturnType<typeof probeOptions>): Promise<boolean> {
  const node = new Redis({ ...options, maxRetriesPerRequest: 1 });
  try {
    return (await node.info('replication')).includes('role:master');
  } finally {
    node.disconnect();
  }
}

/** The port of the master that serves `slot`, as the node on `askPort` sees it (CLUSTER SLOTS). */
export async function slotOwnerPort(askPort: number, slot: number): Promise<number> {
  const node = new Redis({ port: askPort, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  try {
    const range = (await node.cluster('SLOTS')).find(([from, to]) => from <= slot && slot <= to);
    if (!range?.[2]) throw new Error(`no node serves slot ${slot}`);
    return Number(range[2][1]);
  } finally {
    node.disconnect();
  }
}
