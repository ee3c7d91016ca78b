import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { askRequest, checkImage, checkQuestion, describeRequest, formatBytes, imagineRequest, nearestAspect, randomSeed, tooLargeText, varyRequest } from '../../../../bots/core/requests.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { UserError } from '../../../../src/errors.ts';
import { pngHeaderOnly } from '../../../doubles/png-header.ts';

const config = loadConfig({ env: {} });
const base = { id: 'jtest', destination: { platform: 'cli' as const, clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 1 };

describe('imagineRequest', () => {
  it('fills defaults from config and keeps given options', () => {
    const r = imagineRequest(config, base, { command: 'imagine', prompt: '  a red fox  ', seed: 7, aspect: '16:9' });
    expect(r).toMatchObject({ v: 1, kind: 'imagine', prompt: 'a red fox', options: { seed: 7, aspect: '16:9', ditSteps: config.generation.defaultDitSteps, decoderSteps: config.generation.defaultDecoderSteps, guidance: config.generation.defaultGuidance } });
  });

  it.each([
    [{ prompt: '   ' }, 'Please describe the image you want.'],
    [{ prompt: '\u0001\u0002 \u200b\n' }, 'Please describe the image you want.'], // control and format characters alone say nothing (queued before 2026-12-07)
    [{ prompt: 'x'.repeat(config.generation.maxPromptChars + 5) }, `Your prompt is ${config.generation.maxPromptChars + 5} characters; the limit is ${config.generation.maxPromptChars}.`],
    [{ prompt: 'fox', seed: -1 }, 'seed must be a whole number from 0 to 4294967295.'],
    [{ prompt: 'fox', ditSteps: config.generation.maxDitSteps + 1 }, `steps must be a whole number from 1 to ${config.generation.maxDitSteps}.`],
    [{ prompt: 'fox', guidance: 1000 }, `guidance must be between 0 and ${config.generation.maxGuidance}.`],
    [{ prompt: 'fox', aspect: '2:1' }, 'aspect must be one of 1:1, 4:3, 3:4, 3:2, 2:3, 16:9, 9:16, 21:9, 9:21.'],
  ])('refuses %o with a message the user understands', (input, message) => {
    const run = () => imagineRequest(config, base, { command: 'imagine', ...input });
    expect(run).toThrow(UserError);
    expect(run).toThrow(message);
  });
});

describe('askRequest and checkImage', () => {
  it('keeps only the last maxHistoryTurns turns', () => {
    const history = Array.from({ length: config.understanding.maxHistoryTurns + 3 }, (_, i) => ({ role: 'user' as const, text: `q${i}` }));
    const r = askRequest(config, base, `${config.queue.prefix}:blob:input:x`, { command: 'ask', question: 'why?', image: {}, history });
    expect(r.history.length).toBe(config.understanding.maxHistoryTurns);
    expect(r.history.at(-1)!.text).toBe(`q${history.length - 1}`);
  });

  it('maxHistoryTurns 0 sends no history (slice(-0) is the whole array: the worker then refused every follow-up)', () => {
    const noHistory = { ...config, understanding: { ...config.understanding, maxHistoryTurns: 0 } };
    const history = [{ role: 'user' as const, text: 'what is it?' }, { role: 'assistant' as const, text: 'A fox.' }];
    const r = askRequest(noHistory, base, `${config.queue.prefix}:blob:input:x`, { command: 'ask', question: 'and its colour?', image: {}, history });
    expect(r.history).toEqual([]);
  });

  it('accepts a real PNG and refuses non-images, oversized and absurdly thin ones', async () => {
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } }).png().toBuffer();
    await expect(checkImage(config, png)).resolves.toEqual({ width: 8, height: 8 });
    await expect(checkImage(config, new Uint8Array([1, 2, 3]))).rejects.toThrow('That file is not an image I can read');
    const tiny = { ...config, understanding: { ...config.understanding, maxInputImageBytes: 10 } };
    await expect(checkImage(tiny, png)).rejects.toThrow(`That image is ${png.byteLength} bytes; the limit is 10 bytes.`);
    expect([formatBytes(20 * 2 ** 20), formatBytes(1.5 * 2 ** 20), formatBytes(300 * 1024)]).toEqual(['20 MiB', '1.5 MiB', '300 KiB']);
    const thin = await sharp({ create: { width: 400, height: 1, channels: 3, background: '#000' } }).png().toBuffer();
    await expect(checkImage(config, thin)).rejects.toThrow('That image is 400×1 pixels, an aspect ratio of 400:1; images must be less than 200:1. Crop it and try again.');
  });
});

// Each bound at its limit (accepted) and one past it (refused with its exact sentence): what the mutation run of
// bots/core/requests.ts (the `requests` group) found untested.
describe('imagineRequest at its bounds', () => {
  const g = config.generation;
  const imagine = (input: Record<string, unknown>) => imagineRequest(config, base, { command: 'imagine', prompt: 'fox', ...input });
  const refusal = (input: Record<string, unknown>) => {
    try {
      imagine(input);
      return undefined;
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      return e.message;
    }
  };

  it('accepts every option exactly at its limits', () => {
    const r = imagine({ prompt: 'p'.repeat(g.maxPromptChars), seed: 0, ditSteps: g.maxDitSteps, decoderSteps: 1, guidance: 0, count: 1 });
    expect(r.options).toMatchObject({ seed: 0, ditSteps: g.maxDitSteps, decoderSteps: 1, guidance: 0 });
    expect(imagine({ guidance: g.maxGuidance, decoderSteps: g.maxDecoderSteps, ditSteps: 1 }).options).toMatchObject({ guidance: g.maxGuidance, decoderSteps: g.maxDecoderSteps, ditSteps: 1 });
    expect(r.options).not.toHaveProperty('negative'); // none given: none sent
    expect(r.options).not.toHaveProperty('count'); // one image: the field stays out (older workers parse the job)
  });

  it.each([
    [{ guidance: -0.5 }, `guidance must be between 0 and ${g.maxGuidance}.`],
    [{ guidance: Number.NaN }, `guidance must be between 0 and ${g.maxGuidance}.`],
    [{ guidance: g.maxGuidance + 0.01 }, `guidance must be between 0 and ${g.maxGuidance}.`],
    [{ decoderSteps: 0 }, `decoder steps must be a whole number from 1 to ${g.maxDecoderSteps}.`],
    [{ ditSteps: 2.5 }, `steps must be a whole number from 1 to ${g.maxDitSteps}.`],
    [{ count: g.maxImagesPerRequest + 1 }, `the number of images must be a whole number from 1 to ${g.maxImagesPerRequest}.`],
    [{ negative: 'n'.repeat(g.maxNegativeChars + 1) }, `Your negative prompt is ${g.maxNegativeChars + 1} characters; the limit is ${g.maxNegativeChars}.`],
    [{ count: 4, seed: 2 ** 32 - 3 }, 'With 4 images the seed can be at most 4294967292.'],
  ])('refuses %o', (input, message) => {
    expect(refusal(input)).toBe(message);
  });

  it('a negative prompt of exactly the limit is kept, trimmed; a blank one is none', () => {
    expect(imagine({ negative: ` ${'n'.repeat(g.maxNegativeChars)} ` }).options.negative).toBe('n'.repeat(g.maxNegativeChars));
    expect(imagine({ negative: '   ' }).options).not.toHaveProperty('negative');
  });

  it('several images: the last seed may be the largest seed there is', () => {
    expect(imagine({ count: 4, seed: 2 ** 32 - 4 }).options).toMatchObject({ count: 4, seed: 2 ** 32 - 4 });
  });

  it('a vary keeps an optional prompt (blank allowed) and the given seed', () => {
    const r = varyRequest(config, base, `${config.queue.prefix}:blob:input:x`, { command: 'vary', image: {}, prompt: '  ', seed: 5 });
    expect([r.prompt, r.options.seed]).toEqual(['', 5]);
  });

  // Before 2026-12-07 a Vary of a 16:9 result came back square, at the default steps and guidance, its negative gone.
  it('a vary keeps what it is given (aspect, steps, guidance, negative), a new seed, and today\'s limits', () => {
    const g = config.generation;
    const kept = { aspect: '16:9', ditSteps: 12, decoderSteps: 20, guidance: 5, negative: 'text', count: 2 };
    const r = varyRequest(config, base, 'k', { command: 'vary', image: {} }, kept);
    expect(r.options).toMatchObject({ aspect: '16:9', ditSteps: 12, decoderSteps: 20, guidance: 5, negative: 'text', count: 2 });
    const seeds = new Set(Array.from({ length: 8 }, () => varyRequest(config, base, 'k', { command: 'vary', image: {} }, kept).options.seed));
    expect(seeds.size).toBeGreaterThan(1); // a new seed each time
    const over = varyRequest(config, base, 'k', { command: 'vary', image: {}, seed: 9 }, { ditSteps: g.maxDitSteps + 10, decoderSteps: g.maxDecoderSteps + 1, guidance: g.maxGuidance + 1 });
    expect(over.options).toMatchObject({ seed: 9, ditSteps: g.maxDitSteps, decoderSteps: g.maxDecoderSteps, guidance: g.maxGuidance });
    expect(varyRequest(config, base, 'k', { command: 'vary', image: {} }).options).toMatchObject({ aspect: g.defaultAspect, ditSteps: g.defaultDitSteps });
  });

  it('a vary keeps a result\'s image count up to today\'s maxImagesPerRequest', () => {
    const two = loadConfig({ env: {}, overrides: { generation: { maxImagesPerRequest: 2, defaultImageCount: 1 } } });
    expect(varyRequest(two, base, 'k', { command: 'vary', image: {} }, { count: 4 }).options.count).toBe(2);
    expect(varyRequest(two, base, 'k', { command: 'vary', image: {} }, { count: 2 }).options.count).toBe(2);
  });

  it('an image\'s size is as it is shown: a phone photo stored sideways (EXIF orientation 6) is its rotated size', async () => {
    const sideways = await sharp({ create: { width: 10, height: 20, channels: 3, background: '#000' } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    await expect(checkImage(config, sideways)).resolves.toEqual({ width: 20, height: 10 });
  });

  it('the nearest aspect of an image, by ratio, both ways round', () => {
    expect([nearestAspect(1920, 1080), nearestAspect(1080, 1920), nearestAspect(500, 500), nearestAspect(4000, 3000), nearestAspect(2560, 1080), nearestAspect(3000, 1000), nearestAspect(1100, 1000)]).toEqual(['16:9', '9:16', '1:1', '4:3', '21:9', '21:9', '1:1']);
  });
});

describe('questions', () => {
  const u = config.understanding;
  it('a question is trimmed; an empty one or one past the limit is refused', () => {
    expect(checkQuestion(config, `  ${'q'.repeat(u.maxQuestionChars)}  `)).toBe('q'.repeat(u.maxQuestionChars));
    expect(() => checkQuestion(config, '   ')).toThrow(new UserError('bad_request', 'Please ask a question about the image.'));
    expect(() => checkQuestion(config, '\u200b\u0007')).toThrow(new UserError('bad_request', 'Please ask a question about the image.'));
    expect(() => checkQuestion(config, 'q'.repeat(u.maxQuestionChars + 1))).toThrow(`Your question is ${u.maxQuestionChars + 1} characters; the limit is ${u.maxQuestionChars}.`);
  });

  it('an earlier turn longer than a question is clipped to its length (the worker refuses longer ones)', () => {
    const r = askRequest(config, base, `${config.queue.prefix}:blob:input:x`, { command: 'ask', question: 'and now?', image: {}, history: [{ role: 'assistant', text: 'a'.repeat(u.maxQuestionChars + 50) }] });
    expect(r.history[0]!.text).toHaveLength(u.maxQuestionChars);
  });

  it('/describe asks for short prompts: at most describeMaxNewTokens, never more than an answer may have', () => {
    const key = `${config.queue.prefix}:blob:input:x`;
    expect(describeRequest(config, base, key).options.maxNewTokens).toBe(Math.min(u.maxNewTokens, u.describeMaxNewTokens));
    const short = { ...config, understanding: { ...u, maxNewTokens: 10, describeMaxNewTokens: 77 } };
    expect(describeRequest(short, base, key).options.maxNewTokens).toBe(10);
    expect(describeRequest({ ...config, understanding: { ...u, maxNewTokens: 512, describeMaxNewTokens: 30 } }, base, key).options.maxNewTokens).toBe(30);
  });
});

describe('tooLargeText', () => {
  // Before 2026-12-07 a file a few bytes over 3 MiB was "3.0 MiB; the limit is 3.0 MiB" (Discord had its own rounding)
  it('says the size and the limit, or "larger than" the limit when the size reads the same or is not known', () => {
    expect(tooLargeText('photo.png', 9 * 2 ** 20, 8 * 2 ** 20)).toBe('photo.png is 9 MiB; the limit is 8 MiB.');
    expect(tooLargeText('photo.png', 3 * 2 ** 20 + 5, 3 * 2 ** 20)).toBe('photo.png is larger than the 3 MiB limit.');
    expect(tooLargeText('`a.png`', undefined, 3 * 2 ** 20)).toBe('`a.png` is larger than the 3 MiB limit.');
  });
});

describe('checkImage at its bounds', () => {
  const u = config.understanding;
  const png = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: '#000' } }).png().toBuffer();

  it('sizes read as a chat user reads them, at each unit\'s first value', () => {
    expect([formatBytes(1023), formatBytes(1024), formatBytes(2 ** 20 - 1), formatBytes(2 ** 20)]).toEqual(['1023 bytes', '1 KiB', '1024 KiB', '1 MiB']);
  });

  it('exactly the pixel limit passes, one past it is refused; an aspect ratio just below the limit passes, exactly the limit is refused (as on the worker)', async () => {
    const limits = { ...config, understanding: { ...u, maxInputPixels: 100 * 50, maxAspectRatio: 4 } };
    await expect(checkImage(limits, await png(100, 50))).resolves.toEqual({ width: 100, height: 50 });
    await expect(checkImage(limits, await png(101, 50))).rejects.toThrow(new UserError('bad_image', 'That image is 101×50; the limit is 5,000 pixels.'));
    await expect(checkImage(limits, await png(39, 10))).resolves.toEqual({ width: 39, height: 10 });
    await expect(checkImage(limits, await png(10, 40))).rejects.toThrow(new UserError('bad_image', 'That image is 10×40 pixels, an aspect ratio of 4:1; images must be less than 4:1. Crop it and try again.'));
  });

  it('a decompression bomb (a header claiming 20000×20000, past sharp\'s own limit) gets our own sentence', async () => {
    await expect(checkImage(config, pngHeaderOnly(20_000, 20_000))).rejects.toThrow(new UserError('bad_image', `That image is 20000×20000; the limit is ${u.maxInputPixels.toLocaleString('en')} pixels.`));
  });

  it('a format sharp reads but the worker does not decode is named', async () => {
    const tiff = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#000' } }).tiff().toBuffer();
    await expect(checkImage(config, tiff)).rejects.toThrow(new UserError('bad_image', 'tiff images are not supported; use PNG, JPEG, WebP or GIF.'));
  });

  it('what is not an image at all keeps the cause for the log', async () => {
    const e = (await checkImage(config, new Uint8Array([1, 2, 3])).then(() => undefined, (x: unknown) => x)) as UserError;
    expect(e.code).toBe('bad_image');
    expect(e.cause).toBeInstanceOf(Error);
  });
});

describe('randomSeed', () => {
  it('leaves room for every seed of a several-image job', () => {
    for (let i = 0; i < 200; i++) {
      expect(randomSeed(8)).toBeLessThanOrEqual(2 ** 32 - 8);
      expect(randomSeed()).toBeLessThanOrEqual(2 ** 32 - 1);
    }
  });
});
