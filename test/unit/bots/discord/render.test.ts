import { describe, expect, it } from 'vitest';
import { parseAskModalId, askModalId, buttonId, parseButtonId } from '../../../../bots/discord/custom-ids.ts';
import { imagineInput, questionFromMention } from '../../../../bots/discord/options.ts';
import { contentChunks, describedPrompt, MAX_CONTENT_CHARS, plainBody, progressBody, progressText, queuedBody, resultMessage, settingsLine, withNote } from '../../../../bots/discord/render.ts';
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

describe('contentChunks', () => {
  it('cuts a long private text at line ends into messages of at most 2,000 characters, a line longer than that where it must', () => {
    expect(contentChunks('short')).toEqual(['short']);
    expect(contentChunks('')).toEqual(['']);
    const line = (c: string) => c.repeat(900);
    expect(contentChunks([line('a'), line('b'), line('c')].join('\n'))).toEqual([`${line('a')}\n${line('b')}`, line('c')]);
    expect(contentChunks(`x\n${'y'.repeat(4500)}\nz`)).toEqual(['x', 'y'.repeat(2000), 'y'.repeat(2000), `${'y'.repeat(500)}\nz`]);
    expect(contentChunks('a\u0007b\nc', 3)).toEqual(['ab', 'c']); // no control characters, as everything rendered
    expect(contentChunks(`${'a'.repeat(1999)}\nb`)).toEqual(['a'.repeat(1999), 'b']);
    expect(contentChunks(`${'a'.repeat(1998)}\nb`)).toEqual([`${'a'.repeat(1998)}\nb`]);
    expect(contentChunks('z'.repeat(2000))).toEqual(['z'.repeat(2000)]); // a line of exactly 2,000: one message, no empty one after
  });
});

describe('render', () => {
  it('progress lines name the stage and step', () => {
    expect(progressText({ v: 1, jobId: 'j', stage: 'queued', step: 0, total: 0, queuePosition: 2 })).toBe('⏳ Queued: 2nd in line.');
    expect(progressText({ v: 1, jobId: 'j', stage: 'queued', step: 0, total: 0, queuePosition: 2, noWorker: true })).toBe('⏳ Queued: 2nd in line. No GPU worker is running right now; your request starts as soon as one is.');
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
  it('a prompt is shown as typed: its markdown escaped, so a masked link is no link under the bot\'s name and a spoiler hides nothing', () => {
    const r = resultMessage({ ...imageResult('[free nitro](https://evil.example) ||hidden|| __u__ `x`'), image: { ...imageResult().image!, prompt: '[free nitro](https://evil.example) ||hidden|| __u__ `x`', options: { ...options, negative: '*dogs* ~~cats~~' } } }, new Uint8Array([1]));
    expect(r.body.content!.split('\n')[0]).toBe('**\\[free nitro](https://evil.example) \\|\\|hidden\\|\\| \\_\\_u\\_\\_ \\`x\\`**'); // before: only * escaped
    expect(r.body.content).toContain('no: \\*dogs\\* \\~\\~cats\\~\\~');
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

describe('withNote', () => {
  const note = "I couldn't post this in <#1>: it no longer exists.";
  it('puts our note first in the text where it fits, else in an embed before the rest; files and buttons untouched', () => {
    const short = { body: { ...plainBody('An answer.'), embeds: [{ description: 'e' }] }, files: [{ name: 'a.png', data: Buffer.from([1]), contentType: 'image/png' }] };
    expect(withNote(short, note)).toEqual({ ...short, body: { ...short.body, content: `${note}\nAn answer.` } });
    const long = { body: plainBody('x'.repeat(MAX_CONTENT_CHARS - note.length)), files: [] };
    expect(withNote(long, note).body).toEqual({ ...long.body, embeds: [{ description: note }] }); // one character too many for the text
    const fits = { body: plainBody('x'.repeat(MAX_CONTENT_CHARS - note.length - 1)), files: [] };
    expect(withNote(fits, note).body.content).toHaveLength(MAX_CONTENT_CHARS);
    expect(withNote({ body: plainBody(''), files: [] }, note).body.content).toBe(note);
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

describe('render: the rest of what a user sees', () => {
  it('progress: steps capped at the total, none when unknown, the answer so far under its line; every edit has Cancel', () => {
    expect(progressText({ v: 1, jobId: 'j', stage: 'decoding', step: 40, total: 30 })).toBe('⏳ Decoding pixels: step 30/30');
    expect(progressText({ v: 1, jobId: 'j', stage: 'loading', step: 0, total: 0 })).toBe('⏳ Loading the model…');
    expect(progressText({ v: 1, jobId: 'j', stage: 'answering', step: 3, total: 0, partialText: 'A red\u0007 fox' })).toBe('⏳ Writing the answer…\nA red fox');
    expect(progressText({ v: 1, jobId: 'j', stage: 'features', step: 1, total: 2, partialText: 'ignored' })).toBe('⏳ Drawing: step 1/2');
    expect(progressText({ v: 1, jobId: 'j', stage: 'answering', step: 1, total: 0, partialText: 'x'.repeat(3000) })).toHaveLength(2000);
    const cancel = [{ type: 1, components: [{ type: 2, style: 4, label: 'Cancel', custom_id: 'b3:cancel:j' }] }];
    expect(progressBody({ v: 1, jobId: 'j', stage: 'features', step: 1, total: 2 })).toEqual({ content: '⏳ Drawing: step 1/2', components: cancel, allowed_mentions: { parse: [] } });
    expect(queuedBody('j', 'Queued: 2nd in line.')).toEqual({ content: '⏳ Queued: 2nd in line.', components: cancel, allowed_mentions: { parse: [] } });
  });

  it('texts are cut at their limit with an ellipsis, exactly at the limit they are not', () => {
    expect(plainBody('x'.repeat(2000)).content).toBe('x'.repeat(2000));
    expect(plainBody('x'.repeat(2001)).content).toBe(`${'x'.repeat(1999)}…`);
    expect(settingsLine({ ...options, negative: 'n'.repeat(300) })).toBe(`seed 7 · 30 + 50 steps · guidance 3 · 1:1 · no: ${'n'.repeat(199)}…`);
    const long = resultMessage(imageResult('p'.repeat(3000)), new Uint8Array([1])).body.content;
    expect(long.startsWith(`**${'p'.repeat(1795)}`)).toBe(true);
    expect(long.split('\n')[0]).toHaveLength(1800); // the prompt's part: 2000 less 200 kept for the settings line
    expect(resultMessage(imageResult('a *bold* fox'), new Uint8Array([1])).body.content.split('\n')[0]).toBe('**a \\*bold\\* fox**');
  });

  it('the settings line carries the prompt check and where a result was served from', () => {
    expect(resultMessage(imageResult(), new Uint8Array([1])).body.content).toBe('**a fox**\n-# seed 7 · 30 + 50 steps · guidance 3 · 1:1');
    const checked: JobResult = { ...imageResult(), servedFrom: 'cache', image: { ...imageResult().image!, matchScore: 0.8123, tries: 2 } };
    expect(resultMessage(checked, new Uint8Array([1])).body.content.split('\n')[1]).toBe(
      '-# seed 7 · 30 + 50 steps · guidance 3 · 1:1 · matches the prompt: 0.81 · best of 2 tries · from the cache, no GPU time used',
    );
    const answer: JobResult = { ...imageResult(), kind: 'ask', image: undefined, servedFrom: 'shared', answer: { text: 'A fox.', tokenCount: 1 } };
    expect(resultMessage(answer, undefined).body.content).toBe('A fox.\n-# shared with an identical request');
    // A failed result says so even if it carries an image.
    expect(resultMessage({ ...imageResult(), status: 'failed', error: { code: 'x', message: 'Nope.', userFacing: true } }, new Uint8Array([1])).body.content).toBe('Nope.');
  });

  it('cancelled, a result with neither image nor answer, an expired image, a blank answer, a long answer as an embed', () => {
    expect(resultMessage({ ...imageResult(), status: 'cancelled', image: undefined }, undefined, '9').body).toMatchObject({ content: '<@9> Cancelled.', allowed_mentions: { parse: [], users: ['9'] } });
    expect(resultMessage({ ...imageResult(), image: undefined }, undefined).body.content).toBe('Sorry, that failed (ref jabc).');
    expect(resultMessage(imageResult(), undefined).body.content).toBe('The image could not be found (ref jabc).');
    const answer = (text: string): JobResult => ({ ...imageResult(), kind: 'ask', image: undefined, answer: { text, tokenCount: 1 } });
    expect(resultMessage(answer('   '), undefined).body.content).toBe('(no answer)');
    const exact = resultMessage(answer('y'.repeat(1996)), undefined, '9').body; // "<@9> " + 1996 = 2001
    expect(exact.content).toBe('<@9>');
    expect(exact.embeds).toEqual([{ description: 'y'.repeat(1996) }]);
    expect(resultMessage(answer('y'.repeat(1995)), undefined, '9').body.content).toBe(`<@9> ${'y'.repeat(1995)}`);
    expect(resultMessage(answer('z'.repeat(5000)), undefined).body).toMatchObject({ content: '', embeds: [{ description: `${'z'.repeat(4095)}…` }] });
  });

  it('/describe: the prompts numbered on one line each, an "Imagine this" button per prompt, read back by number', () => {
    const described: JobResult = { ...imageResult(), kind: 'ask', image: undefined, answer: { text: '', tokenCount: 1, prompts: ['a red\nfox', 'a  blue   bird', 'a cat'] } };
    const r = resultMessage(described, undefined, '9');
    expect(r.body.content).toBe('<@9> 1. a red fox\n2. a blue bird\n3. a cat');
    const buttons = (r.body.components[0] as { components: { label: string; custom_id: string }[] }).components;
    expect(buttons.map((b) => [b.label, b.custom_id])).toEqual([['Imagine this #1', 'b3:imagine:jabc:0'], ['Imagine this #2', 'b3:imagine:jabc:1'], ['Imagine this #3', 'b3:imagine:jabc:2']]);
    expect([0, 1, 2, 3].map((i) => describedPrompt(r.body.content, i))).toEqual(['a red fox', 'a blue bird', 'a cat', undefined]);
    expect(describedPrompt('1. one\n2. a cut-off prompt…', 1)).toBe('a cut-off prompt');
    expect(describedPrompt('<@!12> 1. first', 0)).toBe('first');
    expect(describedPrompt('  11. eleventh\n1. first', 0)).toBe('first');
    expect(describedPrompt('1.no space', 0)).toBeUndefined();
    expect(describedPrompt('see 1. not a list', 0)).toBeUndefined();
    expect(describedPrompt('<@12>1. glued', 0)).toBe('glued');
    expect(describedPrompt('a\n  2. indented', 1)).toBe('indented');
    expect(describedPrompt('10. tenth', 9)).toBe('tenth');
    expect(describedPrompt('1. wait… what…', 0)).toBe('wait… what');
    expect(describedPrompt('1. spaced …', 0)).toBe('spaced');
  });

  it('several images: one message with every PNG, the seeds, Vary 1…n five to a row, and Re-roll all', () => {
    const images = [70, 8, 9, 10, 11, 12].map((seed) => ({ ...imageResult().image!, options: { ...options, seed }, altText: seed === 8 ? '' : `alt ${seed}` }));
    const gallery: JobResult = { ...imageResult(), image: images[0], images };
    const pngs = images.map((_, i) => new Uint8Array([i]));
    const r = resultMessage(gallery, pngs[0], undefined, pngs);
    expect(r.body.content).toBe('**a fox**\n-# seeds 70, 8, 9, 10, 11, 12 · 30 + 50 steps · guidance 3 · 1:1');
    const starred = resultMessage({ ...gallery, images: images.map((img) => ({ ...img, prompt: 'a *bold* fox' })) }, pngs[0], undefined, pngs);
    expect(starred.body.content.split('\n')[0]).toBe('**a \\*bold\\* fox**');
    const rows = (r.body.components as { components: { label: string; custom_id: string }[] }[]).map((row) => row.components.map((b) => `${b.label}=${b.custom_id}`));
    expect(rows).toEqual([
      ['Vary 1=b3:vary:jabc:0', 'Vary 2=b3:vary:jabc:1', 'Vary 3=b3:vary:jabc:2', 'Vary 4=b3:vary:jabc:3', 'Vary 5=b3:vary:jabc:4'],
      ['Vary 6=b3:vary:jabc:5'],
      ['Re-roll all=b3:reroll:jabc'],
    ]);
    expect(r.body.attachments?.map((a) => [a.id, a.filename, a.description])).toEqual([
      ['0', 'blip3o-70.png', 'alt 70'], ['1', 'blip3o-8.png', 'a fox'], ['2', 'blip3o-9.png', 'alt 9'], ['3', 'blip3o-10.png', 'alt 10'], ['4', 'blip3o-11.png', 'alt 11'], ['5', 'blip3o-12.png', 'alt 12'],
    ]);
    expect(r.files.map((f) => [f.name, [...f.data], f.contentType])).toEqual(images.map((img, i) => [`blip3o-${img.options.seed}.png`, [i], 'image/png']));
    // Five images: one row of Vary, no empty row; a long prompt keeps 300 characters for the rest.
    const five = { ...gallery, images: images.slice(0, 5).map((img) => ({ ...img, prompt: 'q'.repeat(3000) })) };
    const r5 = resultMessage(five, pngs[0], undefined, pngs.slice(0, 5));
    expect((r5.body.components as { components: unknown[] }[]).map((row) => row.components.length)).toEqual([5, 1]);
    expect(r5.body.content.split('\n')[0]).toHaveLength(1700);
    expect(r5.body.content.split('\n')[1]).toMatch(/^-# seeds 70, 8, 9, 10, 11 · /);
    // A gallery whose images are not all there is shown as the first image alone.
    expect(resultMessage(gallery, pngs[0], undefined, pngs.slice(0, 5)).files).toHaveLength(1);
  });

});
