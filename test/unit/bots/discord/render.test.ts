import { describe, expect, it } from 'vitest';
import { parseAskModalId, askModalId, buttonId, parseButtonId } from '../../../../bots/discord/custom-ids.ts';
import { imagineInput, questionFromMention } from '../../../../bots/discord/options.ts';
import { progressText, resultMessage } from '../../../../bots/discord/render.ts';
import { ordinal } from '../../../../bots/core/stage-labels.ts';
import { commandDefinitions } from '../../../../bots/discord/commands.ts';
import { adminInput } from '../../../../bots/discord/admin.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

const destination = { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' } as const;
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
const imageResult = (prompt = 'a fox'): JobResult => ({
  v: 1, jobId: 'jabc', kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0,
  image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: `alt: ${prompt}`, prompt, options },
});

describe('render', () => {
  it('progress lines name the stage and step', () => {
    expect(progressText({ v: 1, jobId: 'j', stage: 'queued', step: 0, total: 0, queuePosition: 2 })).toBe('⏳ Queued: 2nd in line.');
    expect(progressText({ v: 1, jobId: 'j', stage: 'features', step: 12, total: 30 })).toBe('⏳ Drawing: step 12/30');
    expect([1, 2, 3, 4, 11, 12, 13, 21, 22, 111].map(ordinal)).toEqual(['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd', '111th']);
  });
  it('a finished image carries the PNG, alt text, settings and Re-roll/Vary buttons with the job id', () => {
    const r = resultMessage(imageResult('@everyone a *fox*'), new Uint8Array([1, 2, 3]));
    expect(r.files).toHaveLength(1);
    expect(r.files[0]!.contentType).toBe('image/png');
    expect(r.body.attachments).toEqual([{ id: '0', filename: 'blip3o-7.png', description: 'alt: @everyone a *fox*' }]);
    expect(r.body.content).toContain('seed 7 · 30 + 50 steps · guidance 3 · 1:1');
    expect(r.body.allowed_mentions).toEqual({ parse: [] });
    const buttons = (r.body.components[0] as { components: { label: string; custom_id: string }[] }).components;
    expect(buttons.map((b) => b.label)).toEqual(['Re-roll', 'Vary']);
    expect(buttons.map((b) => parseButtonId(b.custom_id))).toEqual([{ action: 'reroll', jobId: 'jabc' }, { action: 'vary', jobId: 'jabc' }]);
  });
  it('failures show the user-facing message or a reference; channel fallbacks mention the user', () => {
    const failed = (userFacing: boolean): JobResult => ({ ...imageResult(), image: undefined, status: 'failed', error: { code: 'x', message: 'Too dark.', userFacing } });
    expect(resultMessage(failed(true), undefined).body.content).toBe('Too dark.');
    expect(resultMessage(failed(false), undefined).body.content).toBe('Sorry, that failed (ref jabc).');
    const answer: JobResult = { ...imageResult(), kind: 'ask', image: undefined, answer: { text: 'A fox.', tokenCount: 3 } };
    const posted = resultMessage(answer, undefined, '3');
    expect(posted.body.content).toBe('<@3> A fox.');
    expect(posted.body.allowed_mentions).toEqual({ parse: [], users: ['3'] });
    const long = resultMessage({ ...answer, answer: { text: 'x'.repeat(3000), tokenCount: 1 } }, undefined);
    expect(long.body.embeds?.[0]?.description).toHaveLength(3000);
  });
});

describe('options and ids', () => {
  const reader = (v: Record<string, string | number>) => ({
    getString: (n: string) => (typeof v[n] === 'string' ? (v[n] as string) : null),
    getInteger: (n: string) => (typeof v[n] === 'number' ? (v[n] as number) : null),
    getNumber: (n: string) => (typeof v[n] === 'number' ? (v[n] as number) : null),
  });
  it('maps /imagine options and refuses an unknown aspect or a blank prompt', () => {
    expect(imagineInput(reader({ prompt: ' a fox ', seed: 7, steps: 20, aspect: '16:9' }))).toEqual({ command: 'imagine', prompt: 'a fox', seed: 7, ditSteps: 20, aspect: '16:9' });
    expect(() => imagineInput(reader({ prompt: 'x', aspect: '7:5' }))).toThrow(/Unknown aspect ratio "7:5"/);
    expect(() => imagineInput(reader({ prompt: '  ' }))).toThrow(/what to draw/);
  });
  it('strips the bot mention from questions', () => {
    expect(questionFromMention('<@42> what is  this? <@!42>', '42')).toBe('what is this?');
  });
  it('round-trips custom ids and keeps them under 100 characters', () => {
    expect(parseButtonId(buttonId('cancel', 'j123'))).toEqual({ action: 'cancel', jobId: 'j123' });
    expect(parseButtonId('other:thing')).toBeUndefined();
    expect(parseAskModalId(askModalId('1', '2'))).toEqual({ channelId: '1', messageId: '2' });
    expect(() => buttonId('vary', 'x'.repeat(100))).toThrow(/100/);
  });
  it('command definitions use config bounds and gate admin on Manage Server', () => {
    const defs = commandDefinitions(loadConfig());
    expect(defs.map((d) => d.name)).toEqual(['imagine', 'ask', 'Ask about this image', 'describe', 'Describe this image', 'settings', 'blip3o-admin']);
    expect(defs.find((d) => d.name === 'blip3o-admin')!.default_member_permissions).toBe(String(1n << 5n));
  });
});

describe('admin command options', () => {
  const reader = (group: string, sub: string, ints: Record<string, number> = {}) => ({
    getSubcommandGroup: () => group,
    getSubcommand: () => sub,
    getInteger: (n: string) => ints[n] ?? null,
    getUser: () => ({ id: '99' }),
    getString: (n: string) => (n === 'settings' ? 'match=on threshold=0.7' : null),
  });
  it('maps queue and limits subcommands onto the core commands for this channel', () => {
    expect(adminInput(reader('queue', 'purge-user'), 'discord:1:2')).toEqual({ command: 'queue', action: 'purge-user', targetUserId: '99' });
    expect(adminInput(reader('queue', 'pause'), 'discord:1:2')).toEqual({ command: 'queue', action: 'pause' });
    expect(adminInput(reader('limits', 'set', { 'per-minute': 5, concurrent: 2 }), 'discord:1:2')).toEqual({
      command: 'limits', action: 'set', channelKey: 'discord:1:2',
      spec: { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 2 },
    });
    expect(adminInput(reader('limits', 'reset'), 'discord:1:2')).toEqual({ command: 'limits', action: 'reset', channelKey: 'discord:1:2' });
    expect(() => adminInput(reader('limits', 'explode'), 'k')).toThrow(/Unknown admin command/);
    expect(adminInput(reader('checks', 'set'), 'discord:1:2')).toEqual({ command: 'checks', action: 'set', channelKey: 'discord:1:2', settings: 'match=on threshold=0.7' });
    expect(adminInput(reader('checks', 'show'), 'discord:1:2')).toEqual({ command: 'checks', action: 'show', channelKey: 'discord:1:2' });
  });
  it('maps budget and usage onto the core commands', () => {
    const r = (group: string | null, sub: string, o: { ints?: Record<string, number>; nums?: Record<string, number>; strs?: Record<string, string>; user?: string } = {}) => ({
      getSubcommandGroup: () => group,
      getSubcommand: () => sub,
      getInteger: (n: string) => o.ints?.[n] ?? null,
      getNumber: (n: string) => o.nums?.[n] ?? null,
      getString: (n: string) => o.strs?.[n] ?? null,
      getUser: () => (o.user ? { id: o.user } : null) as { id: string },
    });
    expect(adminInput(r(null, 'usage', { ints: { days: 3 } }), 'k')).toEqual({ command: 'usage', days: 3 });
    expect(adminInput(r(null, 'usage'), 'k')).toEqual({ command: 'usage' });
    expect(adminInput(r('budget', 'set', { nums: { seconds: 600 } }), 'k')).toEqual({ command: 'budget', action: 'set', scope: 'channel', seconds: 600 });
    expect(adminInput(r('budget', 'set', { nums: { seconds: 60 }, strs: { scope: 'user' }, user: '42' }), 'k')).toEqual({
      command: 'budget', action: 'set', scope: 'user', targetUserId: '42', seconds: 60,
    });
    expect(adminInput(r('budget', 'reset', { strs: { scope: 'workspace' } }), 'k')).toEqual({ command: 'budget', action: 'reset', scope: 'workspace' });
  });
});
