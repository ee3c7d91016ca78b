// What the model writes (/describe's prompts, answers, an answer while it streams) is shown as text: in Slack's mrkdwn
// every link and mention needs a `<` (`<https://x|text>`, `<!channel>`, `<@U1>`, `<#C1>`), and a message posted without
// `link_names` links no bare `@channel` (api.slack.com, "Formatting text for app surfaces"). So no `<` may reach Slack
// unescaped, in the blocks or in the notification `text`; and escapeMrkdwn's entities read back to what the model wrote.
import { describe, expect, it } from 'vitest';
import { answerMessage, describedMessage, readSlackText, statusMessage, type SlackMessage } from '../../../../bots/slack/blocks.ts';

const HOSTILE = [
  'a <https://evil.example|free pizza> for <!channel> and <!here|here>',
  'ask <@U0123ABC> in <#C0123ABC|general> or <!subteam^S1|@design>',
  '[click here](https://evil.example) & more &lt;!channel&gt;',
];

/** Every text Slack renders as mrkdwn in `m`, and its notification text. */
const rendered = (m: SlackMessage): string[] => [m.text, ...m.blocks.map((b) => String((b as { text?: { text?: string } }).text?.text ?? ''))];
/** A `<` or `>` Slack would read as markup, or an `&` that starts no entity of escapeMrkdwn's. */
const markup = (s: string): boolean => /[<>]|&(?!amp;|lt;|gt;)/.test(s);

describe("the model's words in Slack messages", () => {
  it('describe prompts, answers and a streaming answer carry no live link or mention', () => {
    const messages = [
      describedMessage('jabc', HOSTILE),
      answerMessage(HOSTILE.join('\n')),
      statusMessage('jabc', ':speech_balloon: what?', { stage: 'answering', step: 1, total: 0, partialText: HOSTILE.join(' ') }),
    ];
    for (const m of messages) for (const text of rendered(m)) expect(markup(text), text).toBe(false);
  });

  it('reads back (history, "Imagine this") as the model wrote it', () => {
    expect(readSlackText(answerMessage(HOSTILE.join('\n')).text)).toBe(HOSTILE.join('\n'));
    expect(describedMessage('jabc', HOSTILE).blocks.map((b) => (b as { accessory: { value: string } }).accessory.value)).toEqual(HOSTILE);
  });
});
