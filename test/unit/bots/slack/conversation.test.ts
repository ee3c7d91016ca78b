import { describe, expect, it } from 'vitest';
import { historyBefore, imageForQuestion, stripMention } from '../../../../bots/slack/conversation.ts';
import type { ThreadMessage } from '../../../../bots/slack/port.ts';

const img = (id: string) => ({ id, name: `${id}.png`, mimetype: 'image/png', url_private: `https://files.slack.com/${id}` });
const thread: ThreadMessage[] = [
  { ts: '1700000001.000001', user: 'U1', text: 'look', files: [img('F1')] },
  { ts: '1700000002.000002', user: 'U1', text: '<@UBOT> what is it?', thread_ts: '1700000001.000001' },
  { ts: '1700000003.000003', bot_id: 'B1', text: 'A cat.', thread_ts: '1700000001.000001', metadata: { event_type: 'blip3o_answer', event_payload: { job_id: 'j1' } } },
  { ts: '1700000004.000004', bot_id: 'B1', text: 'Queued', thread_ts: '1700000001.000001', metadata: { event_type: 'blip3o_status', event_payload: { job_id: 'j2' } } },
  { ts: '1700000005.000005', user: 'U2', text: 'nice cat', thread_ts: '1700000001.000001' },
  { ts: '1700000006.000006', user: 'U1', text: 'another', thread_ts: '1700000001.000001', files: [img('F2')] },
  { ts: '1700000007.000007', user: 'U1', text: '<@UBOT|blip3o> and its colour?', thread_ts: '1700000001.000001' },
];

describe('thread conversations', () => {
  it('strips only the bot mention', () => {
    expect(stripMention('<@UBOT>  what is <@U2> holding?', 'UBOT')).toBe('what is @U2 holding?');
    expect(stripMention('<@UBOT> is this &lt;b&gt; or &amp;lt;?', 'UBOT')).toBe('is this <b> or &lt;?'); // as typed: Slack sent & < > escaped
    expect(stripMention('<@UBOT|blip3o> hi', 'UBOT')).toBe('hi');
  });

  it('uses the message own image, else the newest earlier image in the thread', () => {
    expect(imageForQuestion(thread, '1700000007.000007', [img('F9')])?.id).toBe('F9');
    expect(imageForQuestion(thread, '1700000007.000007', undefined)?.id).toBe('F2');
    expect(imageForQuestion(thread, '1700000002.000002', undefined)?.id).toBe('F1');
    expect(imageForQuestion([{ ts: '1', text: 'no image' }], '2', undefined)).toBeUndefined();
  });

  it('builds the history from questions to the bot and its answers only, capped', () => {
    expect(historyBefore(thread, '1700000007.000007', 'UBOT', 8)).toEqual([
      { role: 'user', text: 'what is it?' },
      { role: 'assistant', text: 'A cat.' },
    ]);
    expect(historyBefore(thread, '1700000007.000007', 'UBOT', 1)).toEqual([{ role: 'assistant', text: 'A cat.' }]);
    expect(historyBefore(thread, '1700000007.000007', 'UBOT', 0)).toEqual([]);
  });
});
