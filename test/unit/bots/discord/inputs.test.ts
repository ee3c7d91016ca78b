// What the Discord adapter reads from a chat, without Discord: slash-command options (bots/discord/options.ts), the
// admin command's options (admin.ts), button and modal ids (custom-ids.ts), and the reply chain a mention's question
// is about (conversation.ts). The fake-Discord integration tests drive the same through discord.js.
import { describe, expect, it } from 'vitest';
import { adminInput, type AdminOptionReader } from '../../../../bots/discord/admin.ts';
import { addressesBot, botRoleIds, walkChain, firstImage, imageAt } from '../../../../bots/discord/conversation.ts';
import { askModalId, buttonId, parseAskModalId, parseButtonId, parseSettingsButton, settingsButtonId, settingsRow } from '../../../../bots/discord/custom-ids.ts';
import { NOTICE_FLAGS, resultMessage } from '../../../../bots/discord/render.ts';
import { imagineInput, questionFromMention, requireQuestion, type OptionReader } from '../../../../bots/discord/options.ts';
import { IMAGINE_USAGE } from '../../../../bots/core/imagine-flags.ts';
import { AspectRatio } from '../../../../src/config/schema.ts';
import { isUserError } from '../../../../src/errors.ts';

const userErrorOf = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (isUserError(e)) return e.message;
    throw e;
  }
  throw new Error('no error');
};

/** Options as discord.js's resolver gives them: null for anything not sent. */
function options(values: Record<string, string | number | { id: string }>): OptionReader & AdminOptionReader & { sub: string; group: string | null } {
  const get = (name: string) => (name in values ? values[name] : null);
  return {
    sub: String(values.$sub ?? ''),
    group: (values.$group as string | undefined) ?? null,
    getString: (name) => get(name) as string | null,
    getInteger: (name) => get(name) as number | null,
    getNumber: (name) => get(name) as number | null,
    getSubcommandGroup(required?: boolean) {
      if (required && this.group === null) throw new Error('A subcommand group was not selected'); // as discord.js does
      return this.group;
    },
    getSubcommand() {
      return this.sub;
    },
    getUser: ((name: string, required?: boolean) => {
      const u = get(name) as { id: string } | null;
      if (!u && required) throw new Error(`option ${name} is required`);
      return u;
    }) as AdminOptionReader['getUser'],
  };
}

describe('/imagine options', () => {
  it('reads every option that was sent, and only those', () => {
    expect(imagineInput(options({ prompt: 'a fox' }))).toStrictEqual({ command: 'imagine', prompt: 'a fox' });
    expect(imagineInput(options({ prompt: 'a fox', negative: 'blur', images: 3, seed: 0, steps: 12, guidance: 0, aspect: '16:9' }))).toEqual({
      command: 'imagine', prompt: 'a fox', negative: 'blur', count: 3, seed: 0, ditSteps: 12, guidance: 0, aspect: '16:9',
    });
  });

  it("takes Midjourney's --no from the prompt, joined with the negative option", () => {
    expect(imagineInput(options({ prompt: 'a castle --no people, cars' }))).toEqual({ command: 'imagine', prompt: 'a castle', negative: 'people, cars' });
    expect(imagineInput(options({ prompt: 'a castle --no people', negative: 'fog' }))).toEqual({ command: 'imagine', prompt: 'a castle', negative: 'fog, people' });
    expect(imagineInput(options({ prompt: 'a castle', negative: '  ' }))).toStrictEqual({ command: 'imagine', prompt: 'a castle' });
  });

  const limits = { maxPromptChars: 100, maxDitSteps: 100, maxDecoderSteps: 150, maxGuidance: 20, maxImagesPerRequest: 4 };

  it("reads Midjourney's flags typed into the prompt, as Slack's /imagine does; a typed option wins over its flag", () => {
    expect(imagineInput(options({ prompt: 'a red fox --n 4 --ar 16:9 --seed 7' }), limits)).toStrictEqual({ command: 'imagine', prompt: 'a red fox', count: 4, aspect: '16:9', seed: 7 });
    expect(imagineInput(options({ prompt: 'a fox --steps 20 in snow --decoder-steps 40 --cfg=4.5 \u2014no trees' }), limits)).toStrictEqual({
      command: 'imagine', prompt: 'a fox in snow', ditSteps: 20, decoderSteps: 40, guidance: 4.5, negative: 'trees',
    });
    expect(imagineInput(options({ prompt: 'a fox --seed 7 --ar 16:9 --n 2 --steps 20 --guidance 4', seed: 9, aspect: '1:1', images: 3, steps: 12, guidance: 0 }), limits)).toStrictEqual({
      command: 'imagine', prompt: 'a fox', seed: 9, aspect: '1:1', count: 3, ditSteps: 12, guidance: 0,
    });
  });

  it('refuses a bad flag in the prompt with the usage a Slack user gets', () => {
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --n 9' }), limits))).toBe(`\`--n\` must be between 1 and 4; you gave 9.\n${IMAGINE_USAGE}`);
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --ar 5:4' }), limits))).toBe(`\`--ar 5:4\` is not a supported aspect ratio.\n${IMAGINE_USAGE}`);
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --seed seven' }), limits))).toBe(`\`--seed\` needs a whole number, not \`seven\`.\n${IMAGINE_USAGE}`);
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --sede 7' }), limits))).toBe(`Unknown option \`--sede\`.\n${IMAGINE_USAGE}`);
    // a flag the typed option would replace is still read, so still refused: what was typed is wrong
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --steps 500', steps: 20 }), limits))).toBe(`\`--steps\` must be between 1 and 100; you gave 500.\n${IMAGINE_USAGE}`);
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox --help' }), limits))).toBe(IMAGINE_USAGE);
  });

  it('refuses a blank prompt and an aspect ratio not on the list, saying what to do', () => {
    for (const prompt of ['', '   ', '--no people']) expect(userErrorOf(() => imagineInput(options({ prompt })))).toBe('Please tell me what to draw: `/imagine prompt: a red fox in snow`.');
    expect(userErrorOf(() => imagineInput(options({})))).toMatch(/^Please tell me what to draw/);
    expect(userErrorOf(() => imagineInput(options({ prompt: 'a fox', aspect: '5:1\u0007' })))).toBe(`Unknown aspect ratio "5:1". Choose one of ${AspectRatio.options.join(', ')}.`);
  });

  it('reads the question of a mention without the bot, and asks for one when there is none', () => {
    expect(questionFromMention('<@42> what is this?', '42')).toBe('what is this?');
    expect(questionFromMention('hey <@!42>   and\n<@42> the colour? <@43>', '42')).toBe('hey and the colour? <@43>');
    expect(questionFromMention('<@420> hi', '42')).toBe('<@420> hi'); // another user whose id starts the same
    expect(questionFromMention('what<@42>is this', '42')).toBe('what is this');
    // a role of the bot's (its managed role, offered by Discord's @-autocomplete as "@bot" too); not any role
    expect(questionFromMention('<@&7> what is this? <@&8> <@&70>', '42', ['7', '9'])).toBe('what is this? <@&8> <@&70>');
    expect(requireQuestion('  why?  ')).toBe('why?');
    for (const q of [undefined, null, '', '  ']) expect(userErrorOf(() => requireQuestion(q))).toBe('What would you like to know about the image? Mention me with a question, or use `/ask`.');
  });
});

describe('/blip3o-admin options', () => {
  const ck = 'discord:g:c';
  it('maps each subcommand to its input', () => {
    expect(adminInput(options({ $sub: 'usage' }), ck)).toEqual({ command: 'usage' });
    expect(adminInput(options({ $sub: 'usage', days: 3 }), ck)).toEqual({ command: 'usage', days: 3 });
    expect(adminInput(options({ $group: 'budget', $sub: 'show' }), ck)).toEqual({ command: 'budget', action: 'show', scope: 'channel' });
    expect(adminInput(options({ $group: 'budget', $sub: 'set', scope: 'user', user: { id: 'u9' }, seconds: 60 }), ck)).toEqual({ command: 'budget', action: 'set', scope: 'user', targetUserId: 'u9', seconds: 60 });
    expect(adminInput(options({ $group: 'budget', $sub: 'reset', scope: 'workspace', seconds: 60 }), ck)).toEqual({ command: 'budget', action: 'reset', scope: 'workspace' }); // seconds only for set
    expect(adminInput(options({ $group: 'queue', $sub: 'pause' }), ck)).toEqual({ command: 'queue', action: 'pause' });
    expect(adminInput(options({ $group: 'queue', $sub: 'purge-user', user: { id: 'u3' } }), ck)).toEqual({ command: 'queue', action: 'purge-user', targetUserId: 'u3' });
    expect(adminInput(options({ $group: 'limits', $sub: 'show' }), ck)).toEqual({ command: 'limits', action: 'show', channelKey: ck });
    expect(adminInput(options({ $group: 'limits', $sub: 'set', 'per-minute': 5, concurrent: 2 }), ck)).toEqual({
      command: 'limits', action: 'set', channelKey: ck, spec: { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 2 },
    });
    expect(adminInput(options({ $group: 'limits', $sub: 'set', concurrent: 0 }), ck)).toEqual({ command: 'limits', action: 'set', channelKey: ck, spec: { maxConcurrent: 0 } });
    expect(adminInput(options({ $group: 'checks', $sub: 'set', settings: 'match=on' }), ck)).toEqual({ command: 'checks', action: 'set', channelKey: ck, settings: 'match=on' });
    expect(adminInput(options({ $group: 'checks', $sub: 'set' }), ck)).toEqual({ command: 'checks', action: 'set', channelKey: ck, settings: '' });
    expect(adminInput(options({ $group: 'checks', $sub: 'reset' }), ck)).toEqual({ command: 'checks', action: 'reset', channelKey: ck });
  });

  it('refuses an unknown scope or subcommand with what to do', () => {
    expect(userErrorOf(() => adminInput(options({ $group: 'budget', $sub: 'show', scope: 'guild' }), ck))).toBe('scope must be channel, user or workspace.');
    expect(userErrorOf(() => adminInput(options({ $group: 'queue', $sub: 'explode' }), ck))).toBe(
      'Unknown admin command: queue explode. Restart the bot so it registers its commands again (or run npm run discord:register).',
    );
    expect(userErrorOf(() => adminInput(options({ $group: 'budget', $sub: 'usage' }), ck))).toMatch(/^Unknown admin command: budget usage\./);
    expect(userErrorOf(() => adminInput(options({ $group: 'queue', $sub: 'show' }), ck))).toMatch(/^Unknown admin command: queue show\./); // a checks/limits action in another group
    expect(userErrorOf(() => adminInput(options({ $sub: 'status' }), ck))).toMatch(/^Unknown admin command: null status\./);
  });
});

describe('button and modal ids', () => {
  it('round-trips every action, with and without an image index, and reads nothing else as ours', () => {
    for (const action of ['reroll', 'vary', 'cancel', 'imagine'] as const) {
      expect(parseButtonId(buttonId(action, 'j1'))).toEqual({ action, jobId: 'j1' });
      expect(parseButtonId(buttonId(action, 'j1', 3))).toEqual({ action, jobId: 'j1', index: 3 });
    }
    expect(buttonId('vary', 'j1', 0)).toBe('b3:vary:j1:0');
    expect(parseButtonId('b3:vary:j1:0')).toEqual({ action: 'vary', jobId: 'j1', index: 0 });
    expect(parseButtonId('b3:vary:j1:12')).toEqual({ action: 'vary', jobId: 'j1', index: 12 });
    for (const id of ['b4:vary:j1', 'b3:explode:j1', 'b3:vary:', 'b3:vary', 'b3::j1', 'b3:vary:j1:2:extra', 'b3:vary:j1:x', 'b3:vary:j1:123', 'b3:vary:j1:', 'xb3:vary:j1'])
      expect(parseButtonId(id), id).toBeUndefined();
    expect(() => buttonId('reroll', 'j'.repeat(95))).toThrow(/custom_id over 100 characters/);
    expect(buttonId('reroll', 'j'.repeat(90))).toHaveLength(100);
    expect(() => buttonId('reroll', 'j'.repeat(91))).toThrow(/custom_id over 100 characters/);
  });

  it("the ask modal keeps the image message's place; an unreadable id is an expired form", () => {
    expect(askModalId('c1', 'm1')).toBe('b3:ask:c1:m1');
    expect(parseAskModalId('b3:ask:c1:m1')).toEqual({ channelId: 'c1', messageId: 'm1' });
    for (const id of ['b3:ask:c1', 'b3:ask::m1', 'b3:vary:c1:m1', 'b2:ask:c1:m1'])
      expect(userErrorOf(() => parseAskModalId(id)), id).toBe('That form has expired; please try again.');
  });

  it('settings buttons: private on/off and reset, per scope', () => {
    for (const scope of ['user', 'channel'] as const)
      for (const action of ['private-on', 'private-off', 'reset'] as const) expect(parseSettingsButton(settingsButtonId({ scope, action }))).toEqual({ scope, action });
    expect(settingsButtonId({ scope: 'user', action: 'reset' })).toBe('b3s:user:reset');
    for (const id of ['b3s:guild:reset', 'b3s:user:explode', 'b3:user:reset', 'b3s:user']) expect(parseSettingsButton(id), id).toBeUndefined();
    const off = settingsRow('channel', false);
    const fields = (b: unknown) => b as { label: string; custom_id: string; style: number };
    expect(off.components.map((b) => [fields(b).label, fields(b).custom_id, fields(b).style])).toEqual([
      ['Make results private', 'b3s:channel:private-on', 2],
      ['Reset', 'b3s:channel:reset', 4],
    ]);
    expect(settingsRow('user', true).components.map((b) => [fields(b).label, fields(b).custom_id])).toEqual([
      ['Make results public', 'b3s:user:private-off'],
      ['Reset', 'b3s:user:reset'],
    ]);
  });
});

// ---- the reply chain -----------------------------------------------------------------------------------------

type Attachment = { url: string; name: string; size: number; contentType: string | null; description?: string };
interface FakeMessage {
  id: string;
  content: string;
  author: { id: string };
  attachments: Map<string, Attachment>;
  embeds: { description?: string }[];
  /** What turnText reads of discord.js's MessageFlagsBitField. */
  flags: { has(flag: number): boolean };
  mentions: { users: Set<string>; roles: Set<string> };
  guildId: string | null;
  guild: FakeGuild | null;
  reference: { messageId: string } | null;
  fetchReference(): Promise<FakeMessage>;
  channel: { messages: { fetch(o: { message: string; force: boolean }): Promise<FakeMessage> } };
}
/** What botRoleIds reads of a discord.js Guild. */
interface FakeGuild {
  id: string;
  members: { me: { roles: { cache: Map<string, unknown> } } | null };
  roles: { botRoleFor(id: string): { id: string } | null };
}
const GUILD = 'g1';
/** A server where the bot holds `roles` (@everyone always), and where `managed` is its managed role. */
const guild = (roles: string[], managed?: string): FakeGuild => ({
  id: GUILD,
  members: { me: { roles: { cache: new Map([GUILD, ...roles].map((r) => [r, {}])) } } },
  roles: { botRoleFor: (id) => (id === BOT && managed ? { id: managed } : null) },
});

const BOT = 'bot';
/** A chain of messages, oldest first; each replies to the one before. `gone` ids cannot be fetched. */
function chain(
  specs: { author?: string; content?: string; image?: Partial<Attachment> | 'file'; embed?: string; flags?: number; mentionsBot?: boolean; mentionsRoles?: string[] }[],
  gone: string[] = [],
  where: { guild: FakeGuild | null } = { guild: guild([]) },
) {
  const byId = new Map<string, FakeMessage>();
  let fetches = 0;
  const forced: string[] = []; // ids fetched again from the API (force: true)
  const channel: FakeMessage['channel'] = {
    messages: {
      async fetch({ message, force }) {
        const m = byId.get(message);
        if (!force || !m) throw new Error('Unknown Message');
        forced.push(message);
        const attachments = new Map([...m.attachments].map(([k, a]) => [k, { ...a, url: a.url.replace(/\?ex=[^&]*/, '?ex=fresh') }]));
        return { ...m, attachments };
      },
    },
  };
  const messages = specs.map((s, i) => {
    const id = `m${i}`;
    const attachments = new Map<string, Attachment>();
    if (s.image === 'file') attachments.set('a', { url: `https://cdn/${id}.pdf`, name: 'doc.pdf', size: 10, contentType: 'application/pdf' });
    else if (s.image) attachments.set('a', { url: `https://cdn/${id}.png`, name: 'p.png', size: 10, contentType: 'image/png', ...s.image });
    const m: FakeMessage = {
      id, content: s.content ?? '', author: { id: s.author ?? 'user' }, attachments, embeds: s.embed ? [{ description: s.embed }] : [],
      flags: { has: (flag) => ((s.flags ?? 0) & flag) === flag },
      mentions: { users: new Set(s.mentionsBot ? [BOT] : []), roles: new Set(s.mentionsRoles) },
      guildId: where.guild?.id ?? null, // null: a DM
      guild: where.guild,
      channel,
      reference: i > 0 ? { messageId: `m${i - 1}` } : null,
      async fetchReference() {
        fetches++;
        const parent = this.reference && !gone.includes(this.reference.messageId) ? byId.get(this.reference.messageId) : undefined;
        if (!parent) throw new Error('Unknown Message');
        return parent;
      },
    };
    byId.set(id, m);
    return m;
  });
  return { last: messages.at(-1)!, fetches: () => fetches, forced };
}
const walk = (m: FakeMessage, maxTurns = 8) => walkChain(m as never, BOT, maxTurns);

describe('the reply chain of a mention', () => {
  it('an image on the mention itself: no history, nothing fetched', async () => {
    const c = chain([{ content: '<@bot> what?', mentionsBot: true, image: {} }]);
    expect(await walk(c.last)).toEqual({ image: { url: 'https://cdn/m0.png', filename: 'p.png', size: 10, contentType: 'image/png', messageId: 'm0' }, history: [], blankedMessages: 0 });
    expect(c.fetches()).toBe(0);
  });

  it('walks up to the image: the questions and answers between become the history, oldest first', async () => {
    const c = chain([
      { content: 'look at this', image: {} },
      { content: '<@bot> what is it?', mentionsBot: true },
      { author: BOT, content: 'A fox.' },
      { content: '<@bot> and its colour?', mentionsBot: true },
      { author: BOT, content: '', embed: 'Red.' },
      { author: BOT, content: '' }, // an empty message of the bot's: no turn
      { content: 'just chatting' }, // neither the bot's nor a mention of it: not a turn
      { content: '<@bot> where is it?', mentionsBot: true },
    ]);
    const r = await walk(c.last);
    expect(r.image?.messageId).toBe('m0');
    expect(r.history).toEqual([
      { role: 'user', text: 'what is it?' },
      { role: 'assistant', text: 'A fox.' },
      { role: 'user', text: 'and its colour?' },
      { role: 'assistant', text: 'Red.' },
    ]);
    expect((await walk(c.last, 3)).history).toEqual([{ role: 'assistant', text: 'A fox.' }, { role: 'user', text: 'and its colour?' }, { role: 'assistant', text: 'Red.' }]); // the newest turns
    expect(await walk(c.last, 2)).toMatchObject({ image: { messageId: 'm0' }, history: [{ role: 'user', text: 'and its colour?' }, { role: 'assistant', text: 'Red.' }] }); // the walk goes on to the image
  });

  it("a reply to the bot's generated image asks about that image; the image message is no turn", async () => {
    const c = chain([{ author: BOT, content: '**a fox**', image: {} }, { content: '<@bot> is it cute?', mentionsBot: true }]);
    expect(await walk(c.last)).toMatchObject({ image: { messageId: 'm0' }, history: [] });
  });

  it("a reply to an /ask answer asks about the copy of the image it carries: the question (the copy's alt text) and the answer are the history", async () => {
    // The wire format of messages already posted (an older bot's must still read): a JPEG named asked-about.jpg whose
    // alt text is "Image asked about: <the question>".
    const copy = { name: 'asked-about.jpg', contentType: 'image/jpeg', description: 'Image asked about: what is it?' };
    const long = `A fox. ${'x'.repeat(2100)}`;
    const c = chain([
      { author: BOT, content: 'A red fox.', image: copy },
      { content: '<@bot> and what colour is it?', mentionsBot: true },
      { author: BOT, content: 'Red.' },
      { content: '<@bot> and its tail?', mentionsBot: true },
    ]);
    expect(await walk(c.last)).toMatchObject({
      image: { messageId: 'm0', filename: 'asked-about.jpg', contentType: 'image/jpeg' },
      history: [
        { role: 'user', text: 'what is it?' },
        { role: 'assistant', text: 'A red fox.' },
        { role: 'user', text: 'and what colour is it?' },
        { role: 'assistant', text: 'Red.' },
      ],
    });
    expect((await walk(c.last, 0)).history).toEqual([]);
    // an answer too long for a message (its embed), and one whose question is not in the alt text: the answer alone
    const embedded = chain([{ author: BOT, embed: long, image: copy }, { content: '<@bot> sure?', mentionsBot: true }]);
    expect((await walk(embedded.last)).history).toEqual([{ role: 'user', text: 'what is it?' }, { role: 'assistant', text: long }]);
    const noQuestion = chain([{ author: BOT, content: 'A red fox.', image: { ...copy, description: 'a photo' } }, { content: '<@bot> sure?', mentionsBot: true }]);
    expect((await walk(noQuestion.last)).history).toEqual([{ role: 'assistant', text: 'A red fox.' }]);
    // the same file from someone else is an image like any other: no turn
    const user = chain([{ content: 'look', image: copy }, { content: '<@bot> what?', mentionsBot: true }]);
    expect((await walk(user.last)).history).toEqual([]);
  });

  it('stops at a message it cannot fetch, and counts the blank ones (no Message Content intent)', async () => {
    const blank = chain([{ content: '' }, { content: '' }, { content: '<@bot> what is this?', mentionsBot: true }]);
    expect(await walk(blank.last)).toEqual({ history: [], blankedMessages: 2 });
    // Not blank: a text, an embed, a file; a bare mention of the bot is no turn (and no blank either).
    const notBlank = chain([{ image: 'file' }, { content: 'hi' }, { embed: 'card' }, { content: '<@bot>', mentionsBot: true }, { content: '<@bot> what is this?', mentionsBot: true }]);
    expect(await walk(notBlank.last)).toEqual({ image: { url: 'https://cdn/m0.pdf', filename: 'doc.pdf', size: 10, contentType: 'application/pdf', messageId: 'm0' }, history: [], blankedMessages: 0 });
    const gone = chain([{ content: 'x', image: {} }, { content: '<@bot> first?', mentionsBot: true }, { content: '<@bot> what?', mentionsBot: true }], ['m0']);
    expect(await walk(gone.last)).toEqual({ history: [{ role: 'user', text: 'first?' }], blankedMessages: 0 });
  });

  it('in a DM every message of the user is addressed to the bot: each is a user turn, a mention in it removed', async () => {
    const specs = [
      { content: 'what animal is this?', image: {} },
      { author: BOT, content: 'A red fox.' },
      { content: '<@bot> and its colour?' },
      { author: BOT, content: 'Red.' },
      { content: 'and its tail?' },
    ];
    expect((await walk(chain(specs, [], { guild: null }).last)).history).toEqual([
      { role: 'user', text: 'what animal is this?' },
      { role: 'assistant', text: 'A red fox.' },
      { role: 'user', text: 'and its colour?' },
      { role: 'assistant', text: 'Red.' },
    ]);
    // in a server, the same messages mention nobody: only the bot's answers are turns
    expect((await walk(chain(specs).last)).history).toEqual([{ role: 'assistant', text: 'A red fox.' }, { role: 'assistant', text: 'Red.' }]);
  });

  it('a mention of a role the bot holds (its managed role: "@bot" in the autocomplete) is a question to it; another role is not', async () => {
    const c = chain([
      { content: 'look', image: {} },
      { content: '<@&r1> what is it?', mentionsRoles: ['r1'] },
      { author: BOT, content: 'A fox.' },
      { content: '<@&r2> the colour?', mentionsRoles: ['r2'] },
      { content: '<@&mods> anyone?', mentionsRoles: ['mods'] },
      { content: '<@&r1> where is it?', mentionsRoles: ['r1'] },
    ], [], { guild: guild(['r2'], 'r1') });
    expect((await walk(c.last)).history).toEqual([
      { role: 'user', text: 'what is it?' },
      { role: 'assistant', text: 'A fox.' },
      { role: 'user', text: 'the colour?' },
    ]);
  });

  it('who is addressed: any DM; else the bot or a role it holds, never @everyone (every member holds it)', () => {
    const message = (guildId: string | null, users: string[], roles: string[]) => ({ guildId, mentions: { users: new Set(users), roles: new Set(roles) } }) as never;
    expect(botRoleIds({ guild: guild(['r2'], 'r1') } as never, BOT).sort()).toEqual(['r1', 'r2']);
    expect(botRoleIds({ guild: { ...guild([], 'r1'), members: { me: null } } } as never, BOT)).toEqual(['r1']); // its member not cached
    expect(botRoleIds({ guild: null } as never, BOT)).toEqual([]);
    expect(addressesBot(message(null, [], []), BOT, [])).toBe(true);
    expect(addressesBot(message(GUILD, [BOT], []), BOT, [])).toBe(true);
    expect(addressesBot(message(GUILD, [], ['r1']), BOT, ['r1'])).toBe(true);
    expect(addressesBot(message(GUILD, ['someone'], ['mods', GUILD]), BOT, botRoleIds({ guild: guild(['r1']) } as never, BOT))).toBe(false);
  });

  it('fetches at most 24 messages looking for the image, however few turns it keeps, and says when it stopped short', async () => {
    const long = Array.from({ length: 40 }, (_, i) => (i === 0 ? { content: 'img', image: {} } : { content: `<@bot> q${i}`, mentionsBot: true }));
    const c = chain(long);
    // 24 fetches (m38 … m15) find no image: the two newest earlier questions are the history.
    expect(await walk(c.last, 2)).toEqual({ history: [{ role: 'user', text: 'q37' }, { role: 'user', text: 'q38' }], blankedMessages: 0, tooLong: true });
    expect(c.fetches()).toBe(24);
    const d = chain(long.slice(0, 25)); // the image 24 replies up: found
    expect(await walk(d.last, 2)).toMatchObject({ image: { messageId: 'm0' }, history: [{ role: 'user', text: 'q22' }, { role: 'user', text: 'q23' }] });
    expect(d.fetches()).toBe(24);
  });

  it('maxHistoryTurns 0: the image two replies up is still found, and no turn goes with the question', async () => {
    const c = chain([
      { content: 'look', image: {} },
      { content: '<@bot> what is it?', mentionsBot: true },
      { author: BOT, content: 'A fox.' },
      { content: '<@bot> and its colour?', mentionsBot: true },
    ]);
    expect(await walk(c.last, 0)).toMatchObject({ image: { messageId: 'm0' }, history: [] });
  });

  it("the bot's answer read back as the model wrote it: no cache note, no status, refusal or failure as a turn (unmarked, as bots before 2026-12-07 posted them)", async () => {
    const answer = (text: string, servedFrom?: 'cache' | 'shared') =>
      resultMessage({ v: 1, jobId: 'j1', status: 'succeeded', answer: { text }, ...(servedFrom ? { servedFrom } : {}) } as never, undefined).body;
    const failed = resultMessage({ v: 1, jobId: 'j2', status: 'failed', error: { code: 'internal', message: 'x', userFacing: false } } as never, undefined).body;
    const cancelled = resultMessage({ v: 1, jobId: 'j3', status: 'cancelled' } as never, undefined).body;
    const long = answer(`A fox. ${'x'.repeat(2100)}`, 'shared');
    expect(long.embeds).toHaveLength(1); // too long for a message: the answer is the embed
    const c = chain([
      { content: 'look', image: {} },
      { content: '<@bot> what is it?', mentionsBot: true },
      { author: BOT, content: answer('A **red** fox [sic] <3', 'cache').content },
      { content: '<@bot> its tail?', mentionsBot: true },
      { author: BOT, content: long.content, embed: long.embeds![0]!.description },
      { content: '<@bot> its age?', mentionsBot: true },
      { author: BOT, content: failed.content },
      { content: '<@bot> its age?', mentionsBot: true },
      { author: BOT, content: cancelled.content },
      { content: '<@bot> its age??', mentionsBot: true },
      { author: BOT, content: '⏳ Answering: step 3/512\nIt is' }, // a status left behind (the job lost): a streamed part
      { content: '<@bot> hello?', mentionsBot: true },
      { author: BOT, content: '⏳ Looking at the image…' },
      { content: '<@bot> and now?', mentionsBot: true },
      // posted in the channel after the interaction expired: the asker's mention in front of each
      { author: BOT, content: resultMessage({ v: 1, jobId: 'j4', status: 'succeeded', answer: { text: 'Grey.' } } as never, undefined, '4242').body.content },
      { content: '<@bot> sure?', mentionsBot: true },
      { author: BOT, content: resultMessage({ v: 1, jobId: 'j5', status: 'failed', error: { code: 'internal', message: 'x', userFacing: false } } as never, undefined, '4242').body.content },
      { content: '<@bot> really?', mentionsBot: true },
    ]);
    const { history } = await walk(c.last, 30);
    expect(history.filter((t) => t.role === 'assistant')).toEqual([
      { role: 'assistant', text: 'A **red** fox [sic] <3' },
      { role: 'assistant', text: `A fox. ${'x'.repeat(2100)}` },
      { role: 'assistant', text: 'Grey.' },
    ]);
  });

  it('a notice marked as such (NOTICE_FLAGS) is no turn whatever its words; answers carry no mark and read as written', async () => {
    const refusal = resultMessage({ v: 1, jobId: 'j1', status: 'failed', error: { code: 'rate_limited', message: 'You can make 5 requests per minute; try again in 40 s.', userFacing: true } } as never, undefined).body;
    const answer = resultMessage({ v: 1, jobId: 'j2', status: 'succeeded', answer: { text: 'A **red** fox [sic] <3' } } as never, undefined).body;
    const long = resultMessage({ v: 1, jobId: 'j3', status: 'succeeded', answer: { text: `A fox. ${'x'.repeat(2100)}` } } as never, undefined).body;
    expect(refusal.flags).toBe(NOTICE_FLAGS);
    expect([answer.flags, long.flags]).toEqual([undefined, undefined]);
    const c = chain([
      { content: 'look', image: {} },
      { content: '<@bot> what is it?', mentionsBot: true },
      { author: BOT, content: refusal.content, flags: refusal.flags },
      { content: '<@bot> what is it, then?', mentionsBot: true },
      { author: BOT, content: 'It is a fox, you said.', flags: NOTICE_FLAGS }, // any words: the mark decides
      { content: '<@bot> its tail?', mentionsBot: true },
      { author: BOT, content: answer.content },
      { content: '<@bot> and more?', mentionsBot: true },
      { author: BOT, content: long.content, embed: long.embeds![0]!.description },
      { content: '<@bot> its age?', mentionsBot: true },
    ]);
    expect((await walk(c.last, 30)).history).toEqual([
      { role: 'user', text: 'what is it?' },
      { role: 'user', text: 'what is it, then?' },
      { role: 'user', text: 'its tail?' },
      { role: 'assistant', text: 'A **red** fox [sic] <3' },
      { role: 'user', text: 'and more?' },
      { role: 'assistant', text: `A fox. ${'x'.repeat(2100)}` },
    ]);
  });

  it("an ancestor's image whose CDN link has expired (a message cached for days) is fetched again for a fresh link", async () => {
    const expired = `https://cdn.discordapp.com/attachments/1/2/p.png?ex=${(Math.floor(Date.now() / 1000) - 60).toString(16)}&is=0&hm=x`;
    const c = chain([
      { content: 'look', image: { url: expired } },
      { content: '<@bot> what is it?', mentionsBot: true },
      { author: BOT, content: 'A fox.' },
      { content: '<@bot> and its colour?', mentionsBot: true },
    ]);
    const r = await walk(c.last);
    expect(r.image?.url).toBe('https://cdn.discordapp.com/attachments/1/2/p.png?ex=fresh&is=0&hm=x');
    expect(c.forced).toEqual(['m0']);
    // a link still valid: no call
    const valid = `https://cdn.discordapp.com/attachments/1/2/p.png?ex=${(Math.floor(Date.now() / 1000) + 3600).toString(16)}&is=0&hm=x`;
    const d = chain([{ content: 'look', image: { url: valid } }, { content: '<@bot> what is it?', mentionsBot: true }]);
    expect((await walk(d.last)).image?.url).toBe(valid);
    expect(d.forced).toEqual([]);
  });

  it('prefers an image attachment over another file, falls back to the file (to say why), and picks a Vary image by index', () => {
    const both = chain([{ content: 'x' }]).last;
    both.attachments.set('doc', { url: 'https://cdn/doc.pdf', name: 'doc.pdf', size: 1, contentType: 'application/pdf' });
    both.attachments.set('img', { url: 'https://cdn/i.webp', name: 'i.webp', size: 2, contentType: null });
    expect(firstImage(both as never)?.filename).toBe('i.webp'); // no content type: judged by its name
    both.attachments.delete('img');
    expect(firstImage(both as never)?.filename).toBe('doc.pdf');
    both.attachments.clear();
    expect(firstImage(both as never)).toBeUndefined();
    for (let i = 0; i < 3; i++) both.attachments.set(`i${i}`, { url: `https://cdn/${i}.png`, name: `${i}.png`, size: i, contentType: 'image/png' });
    expect(imageAt(both as never, 2)).toEqual({ url: 'https://cdn/2.png', filename: '2.png', size: 2, contentType: 'image/png', messageId: 'm0' });
    expect(imageAt(both as never, undefined)?.filename).toBe('0.png');
    expect(imageAt(both as never, 3)).toBeUndefined();
  });
});
