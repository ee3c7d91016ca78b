// `npm run bots` with both platforms enabled (the default) but no tokens: says which secret each needs, exits 1; with
// a LOG_LEVEL pino does not know: says LOG_LEVEL, not a stack trace; a REDIS_URL that is no address: without its password.
import { spawnSync } from 'node:child_process';
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
