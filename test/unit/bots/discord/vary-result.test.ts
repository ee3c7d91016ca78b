// A Vary's result has no prompt of its own (BLIP3-o's reconstruction prompt over the image: worker/pipeline/generate.ts):
// what its message says in the place of the prompt, on Discord and on Slack.
import { describe, expect, it } from 'vitest';
import { resultMessage } from '../../../../bots/discord/render.ts';
import { headline, imageResultMessage } from '../../../../bots/slack/blocks.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
const image = { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: 'A variation of your image', prompt: '', options } as const;
const discordVary: JobResult = {
  v: 1, jobId: 'jvary', kind: 'vary', destination: { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' },
  status: 'succeeded', timingsMs: {}, finishedAt: 0, image,
};
const slackVary: JobResult = { ...discordVary, destination: { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' } };

describe('a Vary result (no prompt)', () => {
  it('on Discord is headed "Variation", not an empty bold "****"; its gallery too', () => {
    const one = resultMessage(discordVary, new Uint8Array([1, 2, 3]));
    expect(one.body.content.split('\n')[0]).toBe('**Variation**');
    const mentioned = resultMessage(discordVary, new Uint8Array([1]), '42');
    expect(mentioned.body.content.split('\n')[0]).toBe('<@42> **Variation**');
    const images = [0, 1].map((i) => ({ ...image, options: { ...options, seed: 7 + i, count: 2 } }));
    const gallery = resultMessage({ ...discordVary, images }, new Uint8Array([1]), undefined, [new Uint8Array([1]), new Uint8Array([2])]);
    expect(gallery.body.content.split('\n')[0]).toBe('**Variation**');
  });

  it('on Slack reads "a variation of your image", not an empty “” (text, headline and the status line\'s title)', () => {
    const m = imageResultMessage(slackVary);
    expect(m.text).toBe('Here is a variation of your image');
    expect(JSON.stringify(m.blocks)).toContain(':art: A variation of your image');
    expect(headline('vary', '')).toBe(':art: A variation of your image');
    expect(imageResultMessage({ ...slackVary, images: [image, image] }).text).toBe('Here are 2 variations of your image');
    expect(headline('imagine', 'a fox')).toBe(':art: a fox'); // a prompt is still shown as it was
  });
});
