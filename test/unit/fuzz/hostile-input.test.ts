// Fuzzing the trust boundaries (issue 15) with fast-check: the job contract (what the worker reads from Redis), the
// option parsers (Slack's /imagine text, Discord's options, the CLI's argv, the core's request builders) and the
// prompt path (tokenizer). Every generated input must end as a valid job or a clear UserError/ContractError, never an
// internal error; user text must never become a control token; nothing rendered back holds a control character.
// The number of inputs run is printed at the end ("fuzz: N inputs").
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCommand } from '../../../bots/cli/args.ts';
import { stripControlChars } from '../../../bots/core/plain-text.ts';
import { askRequest, imagineRequest, varyRequest } from '../../../bots/core/requests.ts';
import { imagineInput } from '../../../bots/discord/options.ts';
import { resultMessage } from '../../../bots/discord/render.ts';
import { answerMessage, imageResultMessage } from '../../../bots/slack/blocks.ts';
import { parseImagine } from '../../../bots/slack/options.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { isUserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, ContractError, JobRequest, parseContract } from '../../../src/jobs/contract.ts';
import { enforceConfiguredLimits } from '../../../worker/limits.ts';
import { generationPrompt } from '../../../worker/pipeline/generate.ts';
import { TOKENS } from '../../../worker/pipeline/tokenizer.ts';
import { useTinyTokenizer } from '../../doubles/tiny-tokenizer.ts';

const config = loadConfig({ env: {} });
const RUNS = 2000;
let inputs = 0;
const counted = <T>(arb: fc.Arbitrary<T>) => arb.map((v) => (inputs++, v));
afterAll(() => console.log(`fuzz: ${inputs} inputs`));

/** Every added token of the Qwen vocabulary, pieces of them and the characters around them, plus control characters. */
const SPECIAL = ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|vision_start|>', '<|vision_end|>', '<|image_pad|>', '<|video_pad|>', '[IMG]', '[/IMG]', '<image>', '<tool_call>', '</tool_call>', '<|', '|>', 'im_end', '<', '>', '|'];
const CONTROL = ['\u0000', '\u0007', '\u001b[31m', '\u007f', '\u0085', '\u009b', '\u202e', '\u2066', '\u200f', '\r\n', '\n', '\t'];
const hostileText = fc
  .array(fc.oneof(fc.constantFrom(...SPECIAL), fc.constantFrom(...CONTROL), fc.string({ unit: 'grapheme', maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 4 }), fc.constantFrom('--seed', '--ar', '—seed', '--steps', '=', ' ', '0x10', '1e3', '-1', 'NaN')), { maxLength: 24 })
  .map((parts) => parts.join(''));
const anyNumber = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -1, 2 ** 32, 2 ** 53, Number.NaN, Infinity, -Infinity, 1.5));

/** Runs `f`; a thrown error must be one the user (or, for Redis data, the operator) can read. */
function clear(f: () => unknown, allowed: (e: unknown) => boolean = isUserError): void {
  try {
    f();
  } catch (e) {
    if (!allowed(e)) throw new Error(`not a clear error: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
  }
}

const base = () => ({ id: 'j1', destination: { platform: 'cli' as const, clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 1 });

describe('the job contract (what a worker reads from Redis)', () => {
  const field = fc.oneof(anyNumber, hostileText, fc.boolean(), fc.constant(null), fc.constant(undefined), fc.array(fc.integer(), { maxLength: 3 }));
  const nearlyValid = fc.record({
    v: fc.oneof(fc.constant(CONTRACT_VERSION), field),
    id: fc.oneof(fc.constant('j1'), field),
    destination: fc.oneof(fc.constant(base().destination), field, fc.record({ platform: fc.constantFrom('discord', 'slack', 'cli', 'irc'), channelId: field, userId: field })),
    submittedAt: fc.oneof(fc.constant(1), field),
    kind: fc.oneof(fc.constantFrom('imagine', 'vary', 'ask', 'upscale'), field),
    prompt: fc.oneof(hostileText, field),
    question: fc.oneof(hostileText, field),
    imageKey: fc.oneof(fc.constant('blip3o:blob:input:x'), field),
    history: fc.oneof(fc.array(fc.record({ role: fc.constantFrom('user', 'assistant', 'system'), text: hostileText }), { maxLength: 12 }), field),
    options: fc.oneof(
      fc.record({ seed: anyNumber, ditSteps: anyNumber, decoderSteps: anyNumber, guidance: anyNumber, aspect: fc.oneof(fc.constantFrom('1:1', '16:9'), hostileText) }),
      fc.record({ maxNewTokens: anyNumber, temperature: anyNumber, topP: anyNumber, topK: anyNumber, repetitionPenalty: anyNumber, seed: anyNumber }),
      field,
    ),
  }, { requiredKeys: [] });

  it('any payload parses to a valid job or fails with a ContractError; a valid job then passes the worker\'s limits or fails with a UserError', () => {
    fc.assert(
      fc.property(counted(fc.oneof(nearlyValid, fc.anything())), (data) => {
        let job: JobRequest | undefined;
        clear(() => (job = parseContract(JobRequest, data, 'job')), (e) => e instanceof ContractError);
        if (job) clear(() => enforceConfiguredLimits(config, job!));
      }),
      { numRuns: RUNS },
    );
  });
});

describe('option parsers and request builders', () => {
  it("Slack's /imagine text (a refusal, which may quote what was typed, holds no control character)", () => {
    fc.assert(
      fc.property(counted(hostileText), (text) =>
        clear(
          () => parseImagine(text, config.generation),
          (e) => isUserError(e) && !/[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/.test(e.message),
        ),
      ),
      { numRuns: RUNS },
    );
  });

  it("the CLI's argv", () => {
    const arg = fc.oneof(hostileText, fc.constantFrom('imagine', 'ask', '--seed', '--ar', '--aspect', '--steps', '--decoder-steps', '--guidance', '-o', '--out', '--help', '-h', '--', '--bogus', ''));
    fc.assert(fc.property(counted(fc.array(arg, { maxLength: 8 })), (argv) => clear(() => parseCommand(argv, '/tmp'))), { numRuns: RUNS });
  });

  it("Discord's options → the core's imagine request: a valid job or a UserError", () => {
    const value = fc.oneof(fc.constant(null), anyNumber);
    const options = fc.record({ prompt: fc.oneof(fc.constant(null), hostileText), seed: value, steps: value, guidance: value, aspect: fc.oneof(fc.constant(null), fc.constantFrom('1:1', '16:9'), hostileText) });
    fc.assert(
      fc.property(counted(options), (o) =>
        clear(() => {
          const input = imagineInput({ getString: (n) => o[n as 'prompt'] as string | null, getInteger: (n) => o[n as 'seed'] as number | null, getNumber: (n) => o[n as 'guidance'] as number | null }, config.generation);
          expect(JobRequest.safeParse(imagineRequest(config, base(), input)).success).toBe(true);
        }),
      ),
      { numRuns: RUNS },
    );
  });

  it('the core builds imagine, vary and ask requests from any input: a valid job or a UserError', () => {
    const input = fc.record({ prompt: hostileText, question: hostileText, seed: fc.option(anyNumber, { nil: undefined }), ditSteps: fc.option(anyNumber, { nil: undefined }), decoderSteps: fc.option(anyNumber, { nil: undefined }), guidance: fc.option(anyNumber, { nil: undefined }), aspect: fc.option(hostileText, { nil: undefined }), history: fc.array(fc.record({ role: fc.constantFrom('user' as const, 'assistant' as const), text: hostileText }), { maxLength: 20 }) });
    fc.assert(
      fc.property(counted(input), (i) => {
        for (const build of [
          () => imagineRequest(config, base(), { command: 'imagine', prompt: i.prompt, seed: i.seed, ditSteps: i.ditSteps, decoderSteps: i.decoderSteps, guidance: i.guidance, aspect: i.aspect }),
          () => varyRequest(config, base(), 'k', { command: 'vary', image: {}, prompt: i.prompt, seed: i.seed }),
          () => askRequest(config, base(), 'k', { command: 'ask', question: i.question, image: {}, history: i.history }),
        ])
          clear(() => {
            const job = build();
            expect(JobRequest.safeParse(job).success).toBe(true);
            enforceConfiguredLimits(config, job); // what the bot builds, the worker (same config) accepts
          });
      }),
      { numRuns: RUNS },
    );
  });
});

describe('the prompt path: user text never becomes a control token', () => {
  const tokenizer = useTinyTokenizer('fuzz-tok-');
  const controls = (ids: number[]) => ids.filter((id) => id >= TOKENS.endOfText);

  it('/imagine captions and vary prompts: only the template\'s own control tokens', () => {
    const template = controls(tokenizer().encodePrompt(generationPrompt('x')));
    fc.assert(
      fc.property(counted(hostileText), (caption) => {
        expect(controls(tokenizer().encodePrompt(generationPrompt(caption)))).toEqual(template);
        expect(controls(tokenizer().encodeText(caption))).toEqual([]);
      }),
      { numRuns: 500 },
    );
  });

  it('questions and follow-ups in the chat template: only the template\'s own control tokens', () => {
    const turns = fc.array(hostileText, { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(counted(turns), (texts) => {
        const messages = texts.map((text, i) => (i === 0 ? { role: 'user' as const, content: [{ type: 'image' as const }, { type: 'text' as const, text }] } : { role: i % 2 ? ('assistant' as const) : ('user' as const), content: text }));
        const plain = messages.map((m, i) => (i === 0 ? { ...m, content: [{ type: 'image' as const }, { type: 'text' as const, text: 'x' }] } : { ...m, content: 'x' }));
        expect(controls(tokenizer().encodeChat(messages))).toEqual(controls(tokenizer().encodeChat(plain)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('rendering back to chat', () => {
  const CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/;
  it('no Discord or Slack message built from any prompt or answer holds a control character', () => {
    const options = { seed: 1, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' as const };
    fc.assert(
      fc.property(counted(hostileText), (text) => {
        expect(stripControlChars(text)).not.toMatch(CONTROLS);
        const image = { blobKey: 'k', mime: 'image/png' as const, width: 8, height: 8, altText: text, prompt: text, options };
        const done = { v: 1 as const, jobId: 'j', kind: 'imagine' as const, status: 'succeeded' as const, timingsMs: {}, finishedAt: 0, image };
        const discord = { platform: 'discord' as const, guildId: '1', channelId: '2', userId: '3', applicationId: '4' };
        expect(JSON.stringify(resultMessage({ ...done, destination: discord }, new Uint8Array([1])).body)).not.toMatch(CONTROLS);
        expect(JSON.stringify(resultMessage({ ...done, destination: discord, image: undefined, answer: { text, tokenCount: 1 } }, undefined).body)).not.toMatch(CONTROLS);
        const slack = { platform: 'slack' as const, teamId: 'T', channelId: 'C', userId: 'U' };
        expect(JSON.stringify(imageResultMessage({ ...done, destination: slack }))).not.toMatch(CONTROLS);
        expect(JSON.stringify(answerMessage(text))).not.toMatch(CONTROLS);
      }),
      { numRuns: RUNS },
    );
  });
});

