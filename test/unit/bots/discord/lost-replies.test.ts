// callbacksAcknowledgedOnce (bots/discord/lost-replies.ts) against scripted answers, as discord.js's REST calls its
// makeRequest: one call per attempt, again after a timeout (its signal aborted) or a 5xx. The lost replies the fake
// Discord can make (a reset or closed connection after the callback took) are in adapter.redis.test.ts.
import { REST } from 'discord.js';
import { describe, expect, it } from 'vitest';
import { callbacksAcknowledgedOnce, followUpsAtMostOnce, MayHaveBeenPosted } from '../../../../bots/discord/lost-replies.ts';

const CALLBACK = 'https://discord.com/api/v10/interactions/123/tok-1/callback?with_response=false';
const refusedAgain = () => new Response(JSON.stringify({ code: 40060, message: 'Interaction has already been acknowledged.' }), { status: 400 });
const lostReply = (code?: string) => Object.assign(new Error(code ?? 'other side closed'), code ? { code } : { code: 'UND_ERR_SOCKET' });

/** A REST whose transport answers each attempt with the next of `answers` (a Response, or an error thrown). */
function restAnswering(answers: (Response | Error)[], guard = callbacksAcknowledgedOnce): { make: REST['options']['makeRequest']; sent: () => number } {
  const rest = new REST();
  let sent = 0;
  rest.options.makeRequest = async () => {
    const next = answers[sent++];
    if (!next) throw new Error('no answer scripted');
    if (next instanceof Error) throw next;
    return next;
  };
  guard(rest);
  return { make: rest.options.makeRequest, sent: () => sent };
}
const post = (signal?: AbortSignal) => ({ method: 'POST', body: '{"type":5}', ...(signal ? { signal } : {}) });

describe('callbacksAcknowledgedOnce', () => {
  it('a lost reply: asked again at once; a 40060 to the repeat is the first one\'s 204', async () => {
    const { make, sent } = restAnswering([lostReply(), refusedAgain()]);
    expect((await make(CALLBACK, post())).status).toBe(204);
    expect(sent()).toBe(2);
  });

  it('a repeat that gets no answer either (a closed socket, discord.js does not retry it) is asked again, 3 tries in all', async () => {
    const { make, sent } = restAnswering([lostReply(), lostReply(), lostReply('ECONNREFUSED'), refusedAgain()]);
    expect((await make(CALLBACK, post())).status).toBe(204); // before: the second closed socket failed the handler
    expect(sent()).toBe(4);
    const never = restAnswering([lostReply(), lostReply(), lostReply(), lostReply(), refusedAgain()]);
    await expect(never.make(CALLBACK, post())).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
    expect(never.sent()).toBe(4); // the first, then three repeats
  });

  it('a callback that never took: the repeat is Discord\'s answer as it is', async () => {
    const { make } = restAnswering([lostReply('ECONNRESET'), new Response(null, { status: 204 })]);
    expect((await make(CALLBACK, post())).status).toBe(204);
    const refused = restAnswering([lostReply(), new Response(JSON.stringify({ code: 10062, message: 'Unknown interaction' }), { status: 404 })]);
    expect((await refused.make(CALLBACK, post())).status).toBe(404);
  });

  it("discord.js's own retries (a timeout, a 5xx): the 40060 to its next attempt is a 204", async () => {
    const timedOut = new AbortController();
    timedOut.abort();
    const afterTimeout = restAnswering([Object.assign(new Error('aborted'), { name: 'AbortError' }), refusedAgain()]);
    await expect(afterTimeout.make(CALLBACK, post(timedOut.signal))).rejects.toMatchObject({ name: 'AbortError' });
    expect(afterTimeout.sent()).toBe(1); // not asked again with a spent signal: discord.js does that
    expect((await afterTimeout.make(CALLBACK, post())).status).toBe(204);

    const after5xx = restAnswering([new Response('{}', { status: 500 }), refusedAgain()]);
    expect((await after5xx.make(CALLBACK, post())).status).toBe(500);
    expect((await after5xx.make(CALLBACK, post())).status).toBe(204);
  });

  it('a repeat answered 5xx is retried by discord.js: the 40060 to its next attempt is a 204; a repeat with no answer is asked again here', async () => {
    // The first callback took and its reply was lost; the repeat sent here failed too
    const after5xx = restAnswering([lostReply(), new Response('{}', { status: 500 }), refusedAgain()]);
    expect((await after5xx.make(CALLBACK, post())).status).toBe(500); // discord.js sends it again
    expect((await after5xx.make(CALLBACK, post())).status).toBe(204);
    expect(after5xx.sent()).toBe(3);
    const afterReset = restAnswering([lostReply(), lostReply('ECONNRESET'), refusedAgain()]);
    expect((await afterReset.make(CALLBACK, post())).status).toBe(204);
    expect(afterReset.sent()).toBe(3);
  });

  it('the lost callback that passes the bound of remembered paths is remembered itself', async () => {
    const timedOut = new AbortController();
    timedOut.abort();
    const aborted = () => Object.assign(new Error('aborted'), { name: 'AbortError' });
    const { make } = restAnswering([...Array.from({ length: 1_001 }, aborted), refusedAgain()]);
    // 1,000 callbacks whose retries were given up on, then one more whose retry comes
    for (let i = 0; i < 1_001; i++) await make(`https://discord.com/api/v10/interactions/${i}/tok/callback`, post(timedOut.signal)).catch(() => undefined);
    expect((await make('https://discord.com/api/v10/interactions/1000/tok/callback', post())).status).toBe(204);
  });

  it('a 40060 with no lost reply before it stays a refusal; a connection never made is not asked again; other routes pass', async () => {
    const twice = restAnswering([new Response(null, { status: 204 }), refusedAgain()]);
    expect((await twice.make(CALLBACK, post())).status).toBe(204);
    const refusal = await twice.make(CALLBACK, post()); // a second callback of the bot's own: Discord's refusal stands
    expect(refusal.status).toBe(400);
    expect(await refusal.json()).toMatchObject({ code: 40060 });

    const never = restAnswering([lostReply('ECONNREFUSED')]);
    await expect(never.make(CALLBACK, post())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(never.sent()).toBe(1);

    const other = restAnswering([lostReply()]);
    await expect(other.make('https://discord.com/api/v10/channels/1/messages', post())).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
    expect(other.sent()).toBe(1);
  });

  it('after a lost reply a refusal other than 40060 keeps its body', async () => {
    const { make } = restAnswering([lostReply(), new Response(JSON.stringify({ code: 50027, message: 'Invalid Webhook Token' }), { status: 400 })]);
    const answer = await make(CALLBACK, post());
    expect(answer.status).toBe(400);
    expect(await answer.json()).toEqual({ code: 50027, message: 'Invalid Webhook Token' });
    const notJson = restAnswering([lostReply(), new Response('Bad Request', { status: 400 })]);
    const plain = await notJson.make(CALLBACK, post());
    expect([plain.status, await plain.text()]).toEqual([400, 'Bad Request']);
  });
});

describe('followUpsAtMostOnce', () => {
  const FOLLOW_UP = 'https://discord.com/api/v10/webhooks/123/tok-1';
  const ok = () => new Response('{"id":"9"}', { status: 200 });

  it('a follow-up whose reply was lost, or answered 500/504, may have been posted: MayHaveBeenPosted, not sent again', async () => {
    for (const answer of [lostReply(), lostReply('ECONNRESET'), new Response('{}', { status: 500 }), new Response('{}', { status: 504 })]) {
      const { make, sent } = restAnswering([answer, ok()], followUpsAtMostOnce);
      const refused = await make(FOLLOW_UP, post()).then(() => undefined, (e: unknown) => e);
      expect(refused).toBeInstanceOf(MayHaveBeenPosted);
      if (answer instanceof Error) expect((refused as Error).cause).toBe(answer); // the lost reply, for the log
      expect(refused).toMatchObject({ name: 'MayHaveBeenPosted', message: expect.stringMatching(/may have posted it|may have posted; not sent again/) });
      expect(sent()).toBe(1);
    }
  });

  it('a connection never made is thrown as it is (discord.js may send it again); 502 and 503 are answers; other requests pass', async () => {
    const never = restAnswering([lostReply('ECONNREFUSED')], followUpsAtMostOnce);
    await expect(never.make(FOLLOW_UP, post())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const refusedUnder = restAnswering([Object.assign(new Error('fetch failed'), { cause: { code: 'ENOTFOUND' } })], followUpsAtMostOnce);
    await expect(refusedUnder.make(FOLLOW_UP, post())).rejects.toThrow('fetch failed');
    for (const status of [502, 503, 429, 404]) {
      const { make } = restAnswering([new Response('{}', { status })], followUpsAtMostOnce);
      expect((await make(FOLLOW_UP, post())).status).toBe(status);
    }
    const edit = restAnswering([lostReply()], followUpsAtMostOnce); // an edit of a follow-up: PATCH, repeatable
    await expect(edit.make(`${FOLLOW_UP}/messages/9`, { method: 'PATCH', body: '{}' })).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
    const read = restAnswering([lostReply()], followUpsAtMostOnce);
    await expect(read.make(FOLLOW_UP, { method: 'GET' })).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
    const channel = restAnswering([lostReply()], followUpsAtMostOnce); // a channel message: its nonce makes a repeat harmless
    await expect(channel.make('https://discord.com/api/v10/channels/1/messages', post())).rejects.toMatchObject({ code: 'UND_ERR_SOCKET' });
  });
});
