// SLACK_API_URL steers the whole adapter (Web API and the Socket Mode handshake) to another Slack, here the fake;
// missing secrets fail at start-up with a config error that names the variable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSlackAdapter } from '../../../../bots/slack/adapter.ts';
import type { Core } from '../../../../bots/core/submit.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { createLogger } from '../../../../src/log.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';

let fake: FakeSlack;
beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
});
afterAll(() => fake.stop());

const log = createLogger('test', 'silent');

describe('createSlackAdapter', () => {
  it('connects through SLACK_API_URL in Socket Mode', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    expect(config.slack.mode).toBe('socket');
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'redis://unused', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken }, log });
    // Nothing reaches the core before an event arrives; start() only needs it to exist.
    await adapter.start({ redis: {}, queue: {} } as unknown as Core);
    try {
      expect(fake.apiCalls('auth.test').at(-1)?.token).toBe(fake.botToken);
      expect(fake.apiCalls('apps.connections.open').at(-1)?.token).toBe(fake.appToken);
      expect(fake.link.connected).toBe(true);
    } finally {
      await adapter.stop();
    }
  });

  it('names the missing secret for the configured mode', async () => {
    const socket = loadConfig({ env: {} });
    await expect(createSlackAdapter({ config: socket, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1' }, log })).rejects.toThrow(/SLACK_APP_TOKEN is not set/);
    const http = loadConfig({ env: {}, overrides: { slack: { mode: 'http' } } });
    await expect(createSlackAdapter({ config: http, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1' }, log })).rejects.toThrow(/SLACK_SIGNING_SECRET is not set/);
    await expect(createSlackAdapter({ config: http, secrets: { REDIS_URL: 'x' }, log })).rejects.toThrow(/SLACK_BOT_TOKEN is not set/);
  });
});
