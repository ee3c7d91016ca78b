// Who may administer the bot on Discord (bots/discord/adapter.ts onAdmin): real discord.js against the fake Discord,
// the real core on Redis, no worker. An admin of a server the operator did not enable (discord.allowedGuildIds) is
// nobody's admin here: Manage Server there gives no say over the bot, its queue or its users.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';
import type { FakeInteraction } from '../../../fakes/discord/server.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const MANAGE_GUILD = String(1n << 5n);
const EPHEMERAL = 64;
let h: DiscordHarness;

const { starting, check } = startGuard();
beforeEach(check);
beforeAll(() => starting(async () => {
  // enabled in another server only: the fake's own server (where these commands come from) is not enabled
  h = await startDiscordHarness({ worker: false, config: { discord: { allowedGuildIds: ['1'] } } });
}), 60_000);
afterAll(async () => h?.stop(), 30_000);

const told = (i: FakeInteraction) =>
  h.fake.waitFor(() => {
    const c = i.callbacks[0];
    if (c?.type === 4 && Number(c.data?.flags ?? 0) & EPHEMERAL) return String(c.data?.content);
    const original = h.fake.original(i);
    return original?.content && original.flags & EPHEMERAL ? original.content : undefined;
  }, 10_000, 'the private answer');

describe('/blip3o-admin in a server the bot is not enabled in', () => {
  it('is refused, even with Manage Server, and changes nothing', async () => {
    const admin = (options: unknown[]) => h.fake.slashCommand({ name: 'blip3o-admin', options: options as never, memberPermissions: MANAGE_GUILD });
    const refusal = "This bot isn't enabled in this server or channel.";
    const limits = admin([{ name: 'limits', type: 2, options: [{ name: 'set', type: 1, options: [{ name: 'concurrent', type: 4, value: 9 }] }] }]);
    expect(await told(limits)).toBe(refusal);
    const budget = admin([{ name: 'budget', type: 2, options: [{ name: 'set', type: 1, options: [{ name: 'seconds', type: 10, value: 1 }, { name: 'scope', type: 3, value: 'user' }, { name: 'user', type: 6, value: h.fake.alice.id }] }] }]);
    expect(await told(budget)).toBe(refusal);
    const status = admin([{ name: 'queue', type: 2, options: [{ name: 'status', type: 1, options: [] }] }]);
    expect(await told(status)).toBe(refusal); // not even the queue's depth
    expect(await h.core.gate.limiter.overriddenChannels()).toEqual([]);
    expect(await h.core.redis.hgetall(`${h.config.queue.prefix}:{usage}:budgets`)).toEqual({});
  });
});
