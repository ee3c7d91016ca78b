// `npm run bots` with both platforms enabled (the default) but no tokens: says which secret each needs, exits 1.
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
