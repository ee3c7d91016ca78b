// `npm run bots` with both platforms enabled (the default) but no tokens: says which secret each needs, exits 1; with
// a LOG_LEVEL pino does not know: says LOG_LEVEL, not a stack trace; a REDIS_URL that is no address: without its password.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { repoRoot } from '../../../src/config/load.ts';

it('names the missing token of every enabled platform and refuses to start with none', () => {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: 'redis://127.0.0.1:6379', LOG_LEVEL: 'warn' };
  for (const k of ['DISCORD_TOKEN', 'DISCORD_APPLICATION_ID', 'SLACK_BOT_TOKEN', 'SLACK_APP_TOKEN', 'SLACK_SIGNING_SECRET', 'BLIP3O_CONFIG']) delete env[k];
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'bots/main.ts'], { cwd: repoRoot, env, encoding: 'utf8', timeout: 60_000 });
  expect(run.status).toBe(1);
  expect(run.stderr).toMatch(/no platform adapter can start: discord \(set DISCORD_TOKEN\), slack \(set SLACK_BOT_TOKEN\)/);
  expect(run.stdout).toMatch(/discord is enabled but DISCORD_TOKEN is not set/);
});

it('a LOG_LEVEL that is no level stops it with a line naming LOG_LEVEL (was: a pino stack trace at import); blanks, quotes and capitals are read', () => {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: 'redis://127.0.0.1:6379', LOG_LEVEL: 'warning' };
  for (const k of ['DISCORD_TOKEN', 'SLACK_BOT_TOKEN', 'BLIP3O_CONFIG']) delete env[k];
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'bots/main.ts'], { cwd: repoRoot, env, encoding: 'utf8', timeout: 60_000 });
  expect(run.status).toBe(1);
  expect(run.stderr).toContain('at logLevel (set by the environment variable LOG_LEVEL)');
  expect(run.stderr).not.toMatch(/\n\s+at .+:\d+:\d+\)?/); // no stack
  const lenient = spawnSync(process.execPath, ['--import', 'tsx', 'bots/main.ts'], { cwd: repoRoot, env: { ...env, LOG_LEVEL: ' "WARN" ' }, encoding: 'utf8', timeout: 60_000 });
  expect(lenient.stderr).toMatch(/no platform adapter can start/); // as far as without it
});

it('a REDIS_URL that is no Redis address is refused without the passwords it carries', () => {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: 'redis+sentinel://:nodepw@s1:26379?sentinelPassword=TOPSECRET', LOG_LEVEL: 'warn' };
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'bots/main.ts'], { cwd: repoRoot, env, encoding: 'utf8', timeout: 60_000 });
  expect(run.status).toBe(1);
  expect(run.stderr).toContain('REDIS_URL "redis+sentinel://:***@s1:26379?sentinelPassword=***" is not a Redis address');
  expect(run.stdout + run.stderr).not.toMatch(/TOPSECRET|nodepw/);
});

it('answers /healthz while the start waits for Redis (compose read a refused connection as unhealthy), /readyz saying what it waits for', async () => {
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'bots-health-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, `http:\n  host: 127.0.0.1\n  botPort: ${port}\nslack:\n  enabled: false\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, BLIP3O_CONFIG: file, DISCORD_TOKEN: 'x', DISCORD_APPLICATION_ID: '123', REDIS_URL: 'redis://127.0.0.1:1', LOG_LEVEL: 'warn' };
  const child = spawn(process.execPath, ['--import', 'tsx', 'bots/main.ts'], { cwd: repoRoot, env, stdio: 'ignore' });
  try {
    let healthz: number | string = 'no answer';
    for (let i = 0; i < 200 && healthz !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      healthz = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, (e: Error) => String((e.cause as Error | undefined)?.message ?? e.message));
    }
    expect(healthz).toBe(200); // before: ECONNREFUSED until Redis and the platforms were up
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toContain('starting: connecting to Redis and the platforms');
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
