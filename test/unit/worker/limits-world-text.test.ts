// The worker counts a prompt, question, turn and negative prompt as the bots do (characters: code points), and the
// job format's hard bounds count the same way: a job a bot admitted at its limit is never refused by the worker or
// by the contract on either side of Redis as too long.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.ts';
import { CONTRACT_VERSION, JobRequest, JobResult, MAX_PROMPT_CHARS, MAX_QUESTION_CHARS, type AskRequest, type ImagineRequest } from '../../../src/jobs/contract.ts';
import { enforceConfiguredLimits } from '../../../worker/limits.ts';
import { WORLD } from '../../doubles/world-text.ts';

const config = loadConfig({ env: {}, overrides: { generation: { maxPromptChars: 20, maxNegativeChars: 10 }, understanding: { maxQuestionChars: 15 } } });
const destination = { platform: 'cli', clientId: 'test', channelId: 'c', userId: 'u' } as const;
const common = { v: CONTRACT_VERSION, id: 'j1', destination, submittedAt: 1 };
const options = { seed: 1, ditSteps: 30, decoderSteps: 40, guidance: 3, aspect: '1:1' as const };
const imagine = (prompt: string, negative?: string): ImagineRequest => ({ ...common, kind: 'imagine', prompt, options: { ...options, ...(negative ? { negative } : {}) } });
const ask = (question: string, turn = 'a'): AskRequest => ({
  ...common, kind: 'ask', imageKey: 'blip3o:blob:k', question, history: [{ role: 'user', text: turn }],
  options: { maxNewTokens: 64, temperature: 0.7, topP: 0.9, topK: 0, repetitionPenalty: 1, seed: 1 },
});
const refusal = (request: JobRequest): string | undefined => {
  try {
    enforceConfiguredLimits(config, request);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
};

describe('the worker counts characters as the bots do', () => {
  it('accepts emoji exactly at each limit', () => {
    expect(refusal(imagine(WORLD.fox.repeat(20), '🚫'.repeat(10)))).toBeUndefined();
    expect(refusal(ask('🤔'.repeat(15), '💬'.repeat(15)))).toBeUndefined();
  });

  it('refuses one more, saying the count typed', () => {
    expect(refusal(imagine(WORLD.fox.repeat(21)))).toMatch(/^Your prompt is 21 characters; the limit is 20\./);
    expect(refusal(imagine('fox', '🚫'.repeat(11)))).toMatch(/^Your negative prompt is 11 characters; the limit is 10\./);
    expect(refusal(ask('🤔'.repeat(16)))).toMatch(/^Your question is 16 characters; the limit is 15\./);
    expect(refusal(ask('why?', '💬'.repeat(16)))).toMatch(/^An earlier turn is 16 characters; the limit is 15\./);
  });
});

describe("the job format's hard bounds count characters too", () => {
  it('a prompt and a question of emoji at the bound parse; one more does not', () => {
    expect(JobRequest.safeParse(imagine(WORLD.fox.repeat(MAX_PROMPT_CHARS))).success).toBe(true);
    expect(JobRequest.safeParse(imagine(WORLD.fox.repeat(MAX_PROMPT_CHARS + 1))).success).toBe(false);
    expect(JobRequest.safeParse(ask('🤔'.repeat(MAX_QUESTION_CHARS), '💬'.repeat(MAX_QUESTION_CHARS))).success).toBe(true);
    expect(JobRequest.safeParse(ask('🤔'.repeat(MAX_QUESTION_CHARS + 1))).success).toBe(false);
  });

  it("a result whose prompt (and alt text) is such a prompt parses", () => {
    const prompt = WORLD.fox.repeat(MAX_PROMPT_CHARS);
    const result = {
      v: CONTRACT_VERSION, jobId: 'j1', kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: 1,
      image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: `${prompt} (8 of 8)`, prompt, options },
    };
    expect(JobResult.safeParse(result).error).toBeUndefined();
  });
});
