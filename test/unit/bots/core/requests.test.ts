import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { askRequest, checkImage, formatBytes, imagineRequest } from '../../../../bots/core/requests.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { UserError } from '../../../../src/errors.ts';

const config = loadConfig({ env: {} });
const base = { id: 'jtest', destination: { platform: 'cli' as const, clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 1 };

describe('imagineRequest', () => {
  it('fills defaults from config and keeps given options', () => {
    const r = imagineRequest(config, base, { command: 'imagine', prompt: '  a red fox  ', seed: 7, aspect: '16:9' });
    expect(r).toMatchObject({ v: 1, kind: 'imagine', prompt: 'a red fox', options: { seed: 7, aspect: '16:9', ditSteps: config.generation.defaultDitSteps, decoderSteps: config.generation.defaultDecoderSteps, guidance: config.generation.defaultGuidance } });
  });

  it.each([
    [{ prompt: '   ' }, 'Please describe the image you want.'],
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

  it('accepts a real PNG and refuses non-images, oversized and absurdly thin ones', async () => {
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } }).png().toBuffer();
    await expect(checkImage(config, png)).resolves.toBeUndefined();
    await expect(checkImage(config, new Uint8Array([1, 2, 3]))).rejects.toThrow('That file is not an image I can read');
    const tiny = { ...config, understanding: { ...config.understanding, maxInputImageBytes: 10 } };
    await expect(checkImage(tiny, png)).rejects.toThrow(`That image is ${png.byteLength} bytes; the limit is 10 bytes.`);
    expect([formatBytes(20 * 2 ** 20), formatBytes(1.5 * 2 ** 20), formatBytes(300 * 1024)]).toEqual(['20 MiB', '1.5 MiB', '300 KiB']);
    const thin = await sharp({ create: { width: 400, height: 1, channels: 3, background: '#000' } }).png().toBuffer();
    await expect(checkImage(config, thin)).rejects.toThrow('That image is too long and thin (400×1).');
  });
});
