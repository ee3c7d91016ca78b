// Control characters typed into a prompt (or produced by the model) never reach Slack or Discord (issue 15).
import { describe, expect, it } from 'vitest';
import { resultMessage as discordResult, progressText as discordProgress, queuedBody } from '../../../../bots/discord/render.ts';
import { answerMessage, failureText, finalStatusMessage, headline, imageResultMessage, statusMessage } from '../../../../bots/slack/blocks.ts';
import { stripControlChars } from '../../../../bots/core/plain-text.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

// NUL, BEL, ESC (an ANSI colour sequence), DEL, a C1 CSI, RLO … PDF, LRI … PDI, ALM
const HOSTILE = 'a\u0000 fox\u0007 \u001b[31mred\u001b[0m\u007f\u009b \u202Eevil\u202C \u2066x\u2069\u061C';
const CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/;
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
const image = { blobKey: 'k', mime: 'image/png' as const, width: 8, height: 8, altText: HOSTILE, prompt: HOSTILE, options };
const base = { v: 1 as const, jobId: 'j1', kind: 'imagine' as const, timingsMs: {}, finishedAt: 0 };
const discord = { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' } as const;
const slack = { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' } as const;

describe('stripControlChars', () => {
  it('removes C0, DEL, C1 and bidi controls; keeps newlines, tabs, emoji and every other letter', () => {
    expect(stripControlChars(HOSTILE)).toBe('a fox [31mred[0m evil x');
    expect(stripControlChars('line 1\r\nline 2\tend 🦊 é 中')).toBe('line 1\nline 2\tend 🦊 é 中');
  });
});

describe('nothing rendered back carries a control character', () => {
  it('Discord: image result (content, alt text), answer, failure, progress with partial text, queued line', () => {
    const rendered = [
      discordResult({ ...base, destination: discord, status: 'succeeded', image }, new Uint8Array([1])).body,
      discordResult({ ...base, kind: 'ask', destination: discord, status: 'succeeded', answer: { text: HOSTILE, tokenCount: 3 } }, undefined).body,
      discordResult({ ...base, kind: 'ask', destination: discord, status: 'succeeded', answer: { text: HOSTILE.repeat(200), tokenCount: 3 } }, undefined).body,
      discordResult({ ...base, destination: discord, status: 'failed', error: { code: 'bad_request', message: HOSTILE, userFacing: true } }, undefined).body,
      discordProgress({ v: 1, jobId: 'j1', stage: 'answering', step: 1, total: 9, partialText: HOSTILE }),
      queuedBody('j1', HOSTILE),
    ];
    for (const r of rendered) expect(JSON.stringify(r)).not.toMatch(CONTROLS);
    expect(JSON.stringify(rendered[0])).toContain('red');
  });

  it('Slack: headline, status with partial text, final status, image result, answer, failure', () => {
    const failed: JobResult = { ...base, destination: slack, status: 'failed', error: { code: 'bad_request', message: HOSTILE, userFacing: true } };
    const rendered = [
      headline('imagine', HOSTILE),
      statusMessage('j1', headline('ask', HOSTILE), { stage: 'answering', step: 1, total: 9, partialText: HOSTILE }),
      finalStatusMessage(headline('imagine', HOSTILE), failed),
      imageResultMessage({ ...base, destination: slack, status: 'succeeded', image }),
      answerMessage(HOSTILE),
      failureText(failed),
    ];
    for (const r of rendered) expect(JSON.stringify(r)).not.toMatch(CONTROLS);
  });
});
