// The Slack adapter's texts and Block Kit, exactly (bots/slack/{blocks,settings,options,conversation}.ts): the
// block and action ids are read back by the handlers, and the texts are what users and screen readers get.
import { describe, expect, it } from 'vitest';
import { ACTION, AskTarget, answerMessage, askModal, describedJobOf, parseMetadata, describedMessage, finalStatusMessage, headline, imageResultMessage, readSlackText, statusMessage, varyActionId, varyIndex } from '../../../../bots/slack/blocks.ts';
import { firstFile, historyBefore, imageForQuestion, imageRef, isImageFile, stripMention } from '../../../../bots/slack/conversation.ts';
import { undoSmartPunctuation } from '../../../../bots/core/imagine-flags.ts';
import { parseImagine } from '../../../../bots/slack/options.ts';
import { parseSettingsText, settingsFromView, settingsModal } from '../../../../bots/slack/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { isUserError } from '../../../../src/errors.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

const config = loadConfig({ env: {} });
const cancel = { type: 'actions', block_id: 'status', elements: [{ type: 'button', text: { type: 'plain_text', text: 'Cancel' }, action_id: ACTION.cancel, value: 'j1', style: 'danger' }] };
const section = (text: string) => ({ type: 'section', text: { type: 'mrkdwn', text } });
const button = (text: string, action_id: string, style?: string) => ({ type: 'button', text: { type: 'plain_text', text }, action_id, value: 'j1', ...(style ? { style } : {}) });
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '16:9' as const };
const image = { blobKey: 'b', mime: 'image/png' as const, width: 8, height: 8, altText: 'alt', prompt: 'a <fox>', options };
const result: JobResult = { v: 1, jobId: 'j1', kind: 'imagine', destination: { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' }, status: 'succeeded', image, timingsMs: {}, finishedAt: 0 };

describe('status messages', () => {
  it('queued, running with a bar, without a total, with the answer so far; Cancel on each', () => {
    expect(statusMessage('j1', ':art: t', { stage: 'queued', step: 0, total: 0, queuePosition: 2 })).toEqual({ text: 'Queued: 2nd in line.', blocks: [section(':art: t\n*Queued: 2nd in line.*'), cancel] });
    expect(statusMessage('j1', 't', { stage: 'features', step: 3, total: 12 })).toEqual({ text: 'Drawing 3/12', blocks: [section('t\n*Drawing 3/12*  `▓▓▓░░░░░░░░░`'), cancel] });
    expect(statusMessage('j1', 't', { stage: 'features', step: 99, total: 12 }).blocks[0]).toEqual(section('t\n*Drawing 99/12*  `▓▓▓▓▓▓▓▓▓▓▓▓`')); // the bar never overflows
    expect(statusMessage('j1', 't', { stage: 'features', step: 0, total: 12 }).blocks[0]).toEqual(section('t\n*Drawing 0/12*  `░░░░░░░░░░░░`'));
    expect(statusMessage('j1', 't', { stage: 'queued', step: 1, total: 5, queuePosition: 1 }).blocks[0]).toEqual(section('t\n*Queued: 1st in line.*')); // no bar while queued
    expect(statusMessage('j1', 't', { stage: 'loading', step: 0, total: 0 })).toEqual({ text: 'Loading the model', blocks: [section('t\n*Loading the model*'), cancel] });
    expect(statusMessage('j1', 't', { stage: 'answering', step: 2, total: 0, partialText: 'A <red> fox' })).toEqual({
      text: 'Writing the answer', blocks: [section('t\n*Writing the answer*'), section('A &lt;red&gt; fox'), cancel],
    });
  });

  it('the final status: done, answered, cancelled, failed; no Cancel', () => {
    expect(finalStatusMessage('t', result)).toEqual({ text: 'Done: the image is in the thread', blocks: [section('t\n*Done: the image is in the thread*')] });
    expect(finalStatusMessage('t', { ...result, kind: 'ask', image: undefined, answer: { text: 'x', tokenCount: 1 } }).text).toBe('Answered in the thread');
    expect(finalStatusMessage('t', { ...result, status: 'cancelled' }).text).toBe('Cancelled');
    expect(finalStatusMessage('t', { ...result, status: 'failed', error: { code: 'x', message: 'Too <dark>.', userFacing: true } })).toEqual({ text: 'Too <dark>.', blocks: [section('t\n*Too &lt;dark&gt;.*')] });
  });

  it('headlines: an icon per kind, the subject escaped and cut at 200', () => {
    expect(headline('ask', 'why <b>?')).toBe(':speech_balloon: why &lt;b&gt;?');
    expect(headline('vary', 'a fox')).toBe(':art: a fox');
    expect(headline('imagine', 'x'.repeat(300))).toBe(`:art: ${'x'.repeat(199)}…`);
    expect(headline('imagine', 'x'.repeat(200))).toBe(`:art: ${'x'.repeat(200)}`);
  });
});

describe('what users type, from the text Slack sends', () => {
  it('&, < and > decoded (Slack sends them as &amp; &lt; &gt;), the &amp; last so that a typed "&lt;" stays as typed', () => {
    expect(readSlackText('Tom &amp; Jerry &lt;3 &gt;_&lt;')).toBe('Tom & Jerry <3 >_<');
    expect(readSlackText('&amp;lt; &amp;amp;')).toBe('&lt; &amp;');
  });

  it('markup made readable: links by their label or address, channels and users by name (else id), broadcasts as @here', () => {
    expect(readSlackText('see <https://example.com/a?b=1&amp;c=2|the page> and <https://example.org>')).toBe('see the page and https://example.org');
    expect(readSlackText('in <#C123|general> or <#C456>, for <@U1|ann> and <@U2>')).toBe('in #general or #C456, for @ann and @U2');
    expect(readSlackText('<!here> <!channel> <!everyone> <!subteam^S1|@design> <!date^1392734382^{date}|Feb 18>')).toBe('@here @channel @everyone @design Feb 18');
    expect(readSlackText('<mailto:a@b.c|a@b.c> a <> b <https://x.example|> <|y>')).toBe('a@b.c a  b https://x.example y'); // an empty label: the address
  });
});

describe('results', () => {
  it('one image: what was drawn, the settings (check and served notes too), Re-roll and Vary', () => {
    expect(imageResultMessage(result)).toEqual({
      text: 'Here is “a &lt;fox&gt;”', // the notification's text: escaped as the blocks are
      blocks: [
        section(':art: a &lt;fox&gt;\nseed 7 · 16:9 · 30 steps · guidance 3'),
        { type: 'actions', block_id: 'result', elements: [button('Re-roll', ACTION.reroll, 'primary'), button('Vary', ACTION.vary)] },
      ],
    });
    const noted = imageResultMessage({ ...result, servedFrom: 'cache', image: { ...image, matchScore: 0.5, tries: 3, options: { ...options, negative: 'a <b>' } } });
    expect(noted.blocks[0]).toEqual(section(':art: a &lt;fox&gt;\nseed 7 · 16:9 · 30 steps · guidance 3 · no: a &lt;b&gt; · matches the prompt: 0.50 · best of 3 tries · from the cache, no GPU time used'));
  });

  it('several images: the seeds, Vary 1…n and Re-roll all; the Vary ids read back to their index', () => {
    const images = [7, 8, 9].map((seed) => ({ ...image, options: { ...options, seed } }));
    expect(imageResultMessage({ ...result, images })).toEqual({
      text: 'Here are 3 pictures of “a &lt;fox&gt;”',
      blocks: [
        section(':art: a &lt;fox&gt;\nseeds 7, 8, 9 · 16:9 · 30 steps · guidance 3'),
        { type: 'actions', block_id: 'result', elements: [button('Vary 1', 'blip3o_vary_1'), button('Vary 2', 'blip3o_vary_2'), button('Vary 3', 'blip3o_vary_3'), button('Re-roll all', ACTION.reroll, 'primary')] },
      ],
    });
    expect([0, 1, 11].map(varyActionId)).toEqual(['blip3o_vary_1', 'blip3o_vary_2', 'blip3o_vary_12']);
    expect(['blip3o_vary', 'blip3o_vary_1', 'blip3o_vary_12', 'blip3o_varyx', 'blip3o_vary_'].map(varyIndex)).toEqual([undefined, 0, 11, undefined, undefined]);
  });

  it('answers: the note in italics, sections of 2900, at most 45; the plain text cut at 3900', () => {
    expect(answerMessage('A <fox> & <!channel>.', 'from the cache')).toEqual({ text: 'A &lt;fox&gt; &amp; &lt;!channel&gt;.\n_from the cache_', blocks: [section('A &lt;fox&gt; &amp; &lt;!channel&gt;.\n_from the cache_')] });
    expect(answerMessage('plain')).toEqual({ text: 'plain', blocks: [section('plain')] });
    const long = answerMessage('a'.repeat(2900) + 'b'.repeat(2900) + 'c');
    expect(long.blocks).toEqual([section('a'.repeat(2900)), section('b'.repeat(2900)), section('c')]);
    expect(long.text).toBe(`${'a'.repeat(2900)}${'b'.repeat(999)}…`);
    expect(answerMessage('z'.repeat(2900 * 50)).blocks).toHaveLength(45);
    expect(answerMessage('e'.repeat(2900)).blocks).toEqual([section('e'.repeat(2900))]); // no empty section after an exact fit
    // an answer of many & < > grows when escaped: cut after escaping, never inside an entity, and nothing clipped
    const amps = answerMessage('&'.repeat(1000) + 'x<');
    const texts = amps.blocks.map((b) => (b as { text: { text: string } }).text.text);
    expect(texts.every((t) => t.length <= 2900 && !t.includes('…'))).toBe(true); // before: one section of 5,000 clipped at 3,000
    expect(texts.join('')).toBe(`${'&amp;'.repeat(1000)}x&lt;`);
    expect(texts.map((t) => t.length)).toEqual([2900, 2100 + 5]);
    const shifted = answerMessage(`ab${'&'.repeat(1000)}`).blocks.map((b) => (b as { text: { text: string } }).text.text);
    expect(shifted.map((t) => t.length)).toEqual([2897, 2105]); // 2 + 579 entities; the 580th would have been split
    const justSo = answerMessage(`a${'&'.repeat(1000)}; b`).blocks.map((b) => (b as { text: { text: string } }).text.text);
    expect(justSo.map((t) => t.length)).toEqual([2896, 2108]); // the 580th entity's ; would have been the first of the next
    expect(answerMessage(`${'x'.repeat(3000)}; y`).blocks.map((b) => (b as { text: { text: string } }).text.text.length)).toEqual([2900, 103]); // a ; of the text is no entity
  });

  it('/describe: a section per prompt with its own Imagine this; the ask modal', () => {
    expect(describedMessage('j0123abc', ['a <cat>', 'a dog'])).toEqual({
      text: '1. a &lt;cat&gt;\n2. a dog',
      blocks: [
        { type: 'section', block_id: 'prompt_1_j0123abc', text: { type: 'mrkdwn', text: '*1.* a &lt;cat&gt;' }, accessory: { type: 'button', text: { type: 'plain_text', text: 'Imagine this' }, action_id: ACTION.imagineThis, value: 'a <cat>' } },
        { type: 'section', block_id: 'prompt_2_j0123abc', text: { type: 'mrkdwn', text: '*2.* a dog' }, accessory: { type: 'button', text: { type: 'plain_text', text: 'Imagine this' }, action_id: ACTION.imagineThis, value: 'a dog' } },
      ],
    });
    // the describe job an "Imagine this" belongs to, read back from its section; none from an older message's
    expect([describedJobOf('prompt_12_j0123abc'), describedJobOf('prompt_2_j0123abc'), describedJobOf('prompt_2'), describedJobOf(undefined), describedJobOf('x_prompt_1_j1')]).toEqual(['j0123abc', 'j0123abc', undefined, undefined, undefined]);
    const target = { c: 'C1', t: '1.2', f: { id: 'F1', name: 'a.png' } };
    expect(askModal(target, config.understanding.maxQuestionChars)).toEqual({
      type: 'modal', callback_id: 'blip3o_ask_view', private_metadata: '{"c":"C1","t":"1.2","f":{"id":"F1","name":"a.png"}}',
      title: { type: 'plain_text', text: 'Ask about this image' }, submit: { type: 'plain_text', text: 'Ask' }, close: { type: 'plain_text', text: 'Cancel' },
      blocks: [{ type: 'input', block_id: 'question', label: { type: 'plain_text', text: 'Your question' }, element: { type: 'plain_text_input', action_id: 'value', multiline: true, max_length: 2000 } }],
    });
    // a message's whole file object is not carried: only what the download needs (private_metadata holds 3000 characters)
    const thumbs = Object.fromEntries([64, 80, 160, 360, 480, 720, 800, 960, 1024].map((n) => [`thumb_${n}`, `https://files.slack.com/files-tmb/T1-F1-abcdef/a_${n}.png`]));
    const bulky = { ...target, f: { ...target.f, ...thumbs, permalink: 'https://x.slack.com/files/U1/F1/a.png', url_private: 'https://files.slack.com/files-pri/T1-F1/a.png' } };
    expect(JSON.parse(String(askModal(bulky, config.understanding.maxQuestionChars).private_metadata))).toEqual({ ...target, f: { ...target.f, url_private: 'https://files.slack.com/files-pri/T1-F1/a.png' } });
    // handed back by Slack and parsed again: what askModal wrote reads back; anything else is none
    expect(parseMetadata(AskTarget, String(askModal(target, config.understanding.maxQuestionChars).private_metadata))).toEqual(target);
    expect([parseMetadata(AskTarget, 'not json'), parseMetadata(AskTarget, '{"c":"C1"}'), parseMetadata(AskTarget, undefined), parseMetadata(AskTarget, '{"c":"","t":"1","f":{"id":"F"}}')]).toEqual([undefined, undefined, undefined, undefined]);
  });
});

describe('/blip3o-settings', () => {
  const plain = (text: string) => ({ type: 'plain_text', text, emoji: false });
  it('reads whose settings and reset from the command text', () => {
    expect(parseSettingsText('  ')).toEqual({ scope: 'user', reset: false });
    expect(parseSettingsText('ME')).toEqual({ scope: 'user', reset: false });
    expect(parseSettingsText('reset')).toEqual({ scope: 'user', reset: true });
    expect(parseSettingsText('channel   RESET')).toEqual({ scope: 'channel', reset: true });
    for (const text of ['channel reset now', 'reset reset', 'me me', 'everyone'])
      expect(() => parseSettingsText(text), text).toThrow('Usage: `/blip3o-settings` (yours), `/blip3o-settings channel` (admins), add `reset` to clear them.');
  });

  it('the modal: every input with its bounds and current value; the channel one adds no-log and the retention TTL', () => {
    const g = config.generation;
    const target = { scope: 'channel' as const, teamId: 'T', channelId: 'C' };
    const view = settingsModal(target, { aspect: '3:4', steps: 9, guidance: 2.5, count: 2, negative: 'blur', noLog: true, retentionSeconds: 90 }, config) as { blocks: Record<string, unknown>[] } & Record<string, unknown>;
    const input = (block_id: string, label: string, element: Record<string, unknown>, hint?: string) => ({ type: 'input', block_id, optional: true, label: plain(label), element: { action_id: 'value', ...element }, ...(hint ? { hint: plain(hint) } : {}) });
    const PRIVATE = { text: plain('Results only the requester sees'), value: 'private' };
    const NO_LOG = { text: plain('No-log mode: prompts and questions never reach the logs'), value: 'nolog' };
    expect(view).toEqual({
      type: 'modal', callback_id: 'blip3o_settings', private_metadata: JSON.stringify(target), title: plain('Channel defaults'), submit: plain('Save'), close: plain('Cancel'),
      blocks: [
        input('aspect', 'Aspect ratio', { type: 'static_select', options: ['1:1', '4:3', '3:4', '3:2', '2:3', '16:9', '9:16', '21:9', '9:21'].map((v) => ({ text: plain(v), value: v })), initial_option: { text: plain('3:4'), value: '3:4' } }),
        input('steps', 'Diffusion steps', { type: 'number_input', is_decimal_allowed: false, min_value: '1', max_value: String(g.maxDitSteps), initial_value: '9' }),
        input('guidance', 'Guidance', { type: 'number_input', is_decimal_allowed: true, min_value: '0', max_value: String(g.maxGuidance), initial_value: '2.5' }),
        input('count', 'Images per prompt', { type: 'number_input', is_decimal_allowed: false, min_value: '1', max_value: String(g.maxImagesPerRequest), initial_value: '2' }),
        input('negative', 'Negative prompt (--no)', { type: 'plain_text_input', max_length: g.maxNegativeChars, initial_value: 'blur' }),
        input('private', 'Privacy', { type: 'checkboxes', options: [PRIVATE, NO_LOG], initial_options: [NO_LOG] }),
        input('retention', 'Delete each job after', { type: 'plain_text_input', max_length: 20, initial_value: '90s' }, 'e.g. 90s, 15m, 2h, 7d: prompts, images and answers are deleted from the bot then. Empty: the bot’s own retention.'),
      ],
    });
    const mine = settingsModal({ ...target, scope: 'user' }, { steps: 0 }, config) as { blocks: { block_id: string; element: Record<string, unknown> }[]; title: unknown };
    expect(mine.title).toEqual(plain('Your defaults'));
    expect(mine.blocks.map((b) => b.block_id)).toEqual(['aspect', 'steps', 'guidance', 'count', 'negative', 'private']);
    expect(mine.blocks[1]!.element.initial_value).toBe('0'); // a saved 0 is shown, not dropped
    expect(mine.blocks[0]!.element).not.toHaveProperty('initial_option');
    expect(mine.blocks[5]!.element).toEqual({ action_id: 'value', type: 'checkboxes', options: [PRIVATE] });
    for (const i of [2, 3]) expect(mine.blocks[i]!.element).not.toHaveProperty('initial_value'); // nothing saved: empty
    const privateMine = settingsModal({ ...target, scope: 'user' }, { private: true }, config) as { blocks: { element: Record<string, unknown> }[] };
    expect(privateMine.blocks[1]!.element).not.toHaveProperty('initial_value');
    expect(privateMine.blocks[5]!.element.initial_options).toEqual([PRIVATE]);
  });

  it('the submitted modal saves exactly what it shows; a bad retention is an error under its field', () => {
    const target = { scope: 'channel' as const, teamId: 'T', channelId: 'C' };
    const values = {
      aspect: { value: { selected_option: { value: '16:9' } } }, steps: { value: { value: ' 12 ' } }, guidance: { value: { value: '' } },
      count: { value: { value: null } }, negative: { value: { value: '  ' } },
      private: { value: { selected_options: [{ value: 'nolog' }] } }, retention: { value: { value: '2h' } },
    };
    expect(settingsFromView(target, values)).toEqual({ input: { command: 'settings', scope: 'channel', action: 'replace', values: { aspect: '16:9', steps: 12, noLog: true, retentionSeconds: 7200 } } });
    expect(settingsFromView(target, { private: { value: { selected_options: [{ value: 'private' }, { value: 'nolog' }] } } })).toEqual({ input: { command: 'settings', scope: 'channel', action: 'replace', values: { private: true, noLog: true } } });
    expect(settingsFromView(target, { private: { value: { selected_options: [{ value: 'private' }] } } })).toEqual({ input: { command: 'settings', scope: 'channel', action: 'replace', values: { private: true } } });
    expect(settingsFromView({ ...target, scope: 'user' }, {})).toEqual({ input: { command: 'settings', scope: 'user', action: 'replace', values: {} } });
    expect(settingsFromView(target, { retention: { value: { value: 'soon' } } })).toEqual({ errors: { retention: '"soon" is not a duration: write e.g. 90s, 15m, 2h or 7d.' } });
  });
});

describe('/imagine text', () => {
  const limits = { maxPromptChars: 20, maxDitSteps: 100, maxDecoderSteps: 150, maxGuidance: 20, maxImagesPerRequest: 4 };
  const refusal = (text: string) => {
    try {
      parseImagine(text, limits);
    } catch (e) {
      if (isUserError(e)) return e.message.split('\n')[0];
      throw e;
    }
    throw new Error(`accepted: ${text}`);
  };

  it("undoes Slack's smart punctuation, only where an option starts", () => {
    expect(undoSmartPunctuation(' a fox \u2014seed 7 \u2013ar 1:1 ')).toBe('a fox --seed 7 --ar 1:1');
    expect(undoSmartPunctuation('red\u2014blue \u201cquoted\u201d \u2018single\u2019')).toBe('red\u2014blue "quoted" \'single\'');
    expect(undoSmartPunctuation('\u2014 alone')).toBe('\u2014 alone');
    expect(undoSmartPunctuation('\u2014seed 7 a fox')).toBe('--seed 7 a fox');
    expect(parseImagine('a fox \u2014n 2', limits)).toEqual({ command: 'imagine', prompt: 'a fox', count: 2 });
  });

  it('--no takes the words up to the next option; every number is checked at its bounds', () => {
    expect(parseImagine('a castle --no people  cars --seed 0', limits)).toEqual({ command: 'imagine', prompt: 'a castle', negative: 'people cars', seed: 0 });
    expect(parseImagine('a castle --negative=fog --images 4', limits)).toEqual({ command: 'imagine', prompt: 'a castle', negative: 'fog', count: 4 });
    expect(parseImagine('x --seed 4294967295 --steps 100 --decoder-steps 1 --guidance 20', limits)).toEqual({ command: 'imagine', prompt: 'x', seed: 4294967295, ditSteps: 100, decoderSteps: 1, guidance: 20 });
    expect(refusal('x --no')).toBe('`--no` needs the words to keep out.');
    expect(refusal('x --no --seed 1')).toBe('`--no` needs the words to keep out.');
    expect(refusal('x --seed 4294967296')).toBe('`--seed` must be between 0 and 4294967295; you gave 4294967296.');
    expect(refusal('x --steps 0')).toBe('`--steps` must be between 1 and 100; you gave 0.');
    expect(refusal('x --n 5')).toBe('`--n` must be between 1 and 4; you gave 5.');
    expect(refusal('x --seed 1x')).toBe('`--seed` needs a whole number, not `1x`.');
    expect(refusal('x --seed x1')).toBe('`--seed` needs a whole number, not `x1`.');
    expect(refusal('x --guidance 20.5')).toBe('`--guidance` must be at most 20; you gave 20.5.');
    expect(parseImagine('x --guidance 2.25', limits).guidance).toBe(2.25);
    for (const g of ['1e1', '1.', 'x2', '2x', 'Infinity']) expect(refusal(`x --guidance ${g}`), g).toBe(`\`--guidance\` needs a number, not \`${g}\`.`);
    expect(refusal('x --guidance -1')).toBe(`\`--guidance\` must be between 0 and ${limits.maxGuidance}; you gave -1.`); // a number, out of range
    expect(refusal('x --seed --steps 2')).toBe('`--seed` needs a value.');
    expect(refusal('x --seed')).toBe('`--seed` needs a value.');
  });

  it('the prompt: words joined by one space, exactly the limit passes', () => {
    expect(parseImagine('a\tfox\n\nin  snow', limits)).toEqual({ command: 'imagine', prompt: 'a fox in snow' });
    expect(parseImagine('y'.repeat(20), limits).prompt).toHaveLength(20);
    expect(() => parseImagine('y'.repeat(21), limits)).toThrow('Your prompt is 21 characters; the limit is 20.');
  });
});

describe('threads', () => {
  const file = (id: string, mimetype: string | undefined, url: { url_private_download?: string; url_private?: string } = { url_private: `https://files/${id}` }) => ({ id, name: `${id}.bin`, mimetype, size: 3, ...url }) as never;
  it('an image is an image type with a URL; a question takes its own file (an image first), else the newest image before it', () => {
    expect(isImageFile(file('a', 'image/png'))).toBe(true);
    expect(isImageFile(file('a', 'image/png', {}))).toBe(false);
    expect(isImageFile(file('a', 'application/pdf'))).toBe(false);
    expect(isImageFile(file('a', undefined))).toBe(false);
    expect(isImageFile(file('a', 'image/png', { url_private_download: 'https://files/d' }))).toBe(true);
    expect(imageRef(file('a', 'image/png', { url_private_download: 'https://d', url_private: 'https://p' }))).toEqual({ url: 'https://d', name: 'a.bin', contentType: 'image/png', sizeBytes: 3 });
    expect(imageRef(file('a', 'image/png', { url_private: 'https://p' })).url).toBe('https://p');
    expect((firstFile([file('doc', 'application/pdf'), file('img', 'image/jpeg')]) as { id: string }).id).toBe('img');
    expect((firstFile([file('doc', 'application/pdf')]) as { id: string }).id).toBe('doc');
    expect(firstFile([])).toBeUndefined();
    const thread = [
      { ts: '1700000001.000001', files: [file('old', 'image/png')] },
      { ts: '1700000002.000002', files: [file('doc', 'application/pdf')] },
      { ts: '1700000003.000003', files: [file('new', 'image/png')] },
      { ts: '1700000004.000004', text: 'question' },
      { ts: '1700000005.000005', files: [file('later', 'image/png')] },
    ] as never;
    expect((imageForQuestion(thread, '1700000004.000004', undefined) as { id: string }).id).toBe('new');
    expect((imageForQuestion(thread, '1700000003.000003', undefined) as { id: string }).id).toBe('old'); // not its own time
    expect(imageForQuestion(thread, '1700000001.000001', undefined)).toBeUndefined();
  });

  it("history: the bot's answers and the questions that mention it; a bare mention is no turn; only the bot's own mention is removed", () => {
    const thread = [
      { ts: '1', text: '<@UBOT> what is it?' },
      { ts: '2', text: 'A fox.', metadata: { event_type: 'blip3o_answer' } },
      { ts: '3', text: '<@UBOT|blip3o>' },
      { ts: '4', text: 'chatter' },
      { ts: '5', text: 'a bot says <@UBOT> hi', bot_id: 'B1' },
      { ts: '6', text: '<@UBOT> now?' },
    ] as never;
    expect(historyBefore(thread, '6', 'UBOT', 8)).toEqual([{ role: 'user', text: 'what is it?' }, { role: 'assistant', text: 'A fox.' }]);
    expect(stripMention('<@UBOT>what<@UBOT2> now', 'UBOT')).toBe('what@UBOT2 now'); // another's mention made readable (readSlackText)
    expect(stripMention('what<@UBOT|blip3o>is this', 'UBOT')).toBe('what is this');
    expect(stripMention('<@UBOT> and <@UBOT>  again', 'UBOT')).toBe('and again');
    expect(stripMention('<@UBOTX> hi', 'UBOT')).toBe('@UBOTX hi');
  });
});
