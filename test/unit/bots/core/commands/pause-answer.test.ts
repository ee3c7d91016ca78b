// What an admin who paused a channel is told to type to resume it: a command that exists, on Discord and on Slack
// (both register it as /blip3o-admin queue resume: bots/discord/commands.ts, bots/slack/admin.ts).
import { describe, expect, it } from 'vitest';
import { queueCommand, type QueueDeps } from '../../../../../bots/core/commands/queue.ts';
import type { Invocation } from '../../../../../bots/core/port.ts';
import { commandDefinitions, COMMAND } from '../../../../../bots/discord/commands.ts';
import { parseAdmin } from '../../../../../bots/slack/admin.ts';
import { loadConfig } from '../../../../../src/config/load.ts';

const config = loadConfig({ env: {}, overrides: { logLevel: 'fatal' } });
const paused: string[] = [];
/** Only what pause touches: the scheduler's pause. */
const deps = { config, gate: { scheduler: { pause: async (ck: string) => void paused.push(ck) } } } as unknown as QueueDeps;
const pause: Invocation = {
  input: { command: 'queue', action: 'pause' }, dedupeKey: 'd1', isAdmin: true,
  destination: { platform: 'discord', guildId: 'g1', channelId: 'C1', userId: 'mod', applicationId: 'app' },
};

describe('pausing a channel', () => {
  it('names the command that resumes it as both platforms have it (there is no /queue)', async () => {
    const reply = await queueCommand(pause, deps);
    expect(paused).toEqual(['discord:g1:C1']);
    const named = /Resume with `?(\/[^`.]+)`?\./.exec(reply.text)?.[1];
    expect(named).toBe(`/${COMMAND.admin} queue resume`);
    // Slack: the words after the command
    expect(parseAdmin(named!.split(' ').slice(1).join(' '))).toEqual({ command: 'queue', action: 'resume' });
    // Discord: the subcommand group and subcommand
    const admin = (commandDefinitions(config) as { name: string; options?: { name: string; options?: { name: string }[] }[] }[]).find((c) => c.name === COMMAND.admin);
    expect(admin?.options?.find((g) => g.name === 'queue')?.options?.map((s) => s.name)).toContain('resume');
  });
});
