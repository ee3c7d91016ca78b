// One platform-neutral suite every chat adapter runs (like Hono's shared router suite): the same scenarios
// against Discord (real discord.js ↔ test/fakes/discord) and Slack (real @slack/bolt ↔ test/fakes/slack),
// both over real Redis with a real worker process and the test double pipeline. Each platform's
// *.conformance.redis.test.ts calls `platformAdapterCases(() => driver)`. Nothing here names a platform.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlatformDriver } from './driver.ts';

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes: Uint8Array): boolean {
  return PNG_MAGIC.every((b, i) => bytes[i] === b);
}

/** A small real photo-like PNG (a gradient), decodable by sharp. */
export async function samplePng(size = 64): Promise<Uint8Array> {
  const pixels = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) pixels.set([(x * 255) / size, (y * 255) / size, 128], (y * size + x) * 3);
  return new Uint8Array(await sharp(pixels, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer());
}

/** Options tests may pass to skip a scenario on a platform, with the reason (listed in the test name). */
export interface CaseOptions {
  skip?: Partial<Record<'imagine' | 'ask' | 'badInput' | 'buttons' | 'usage', string>>;
  timeoutMs?: number;
}

export function platformAdapterCases(makeDriver: () => PlatformDriver, options: CaseOptions = {}): void {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const skip = options.skip ?? {};
  let driver: PlatformDriver;

  describe('platform adapter conformance', () => {
    beforeAll(async () => {
      driver = makeDriver();
      await driver.start();
    }, 60_000);
    afterAll(async () => {
      await driver?.stop();
    }, 30_000);

    it.skipIf(skip.imagine !== undefined)(`/imagine → progress → one image with buttons and settings ${skip.imagine ?? ''}`, async () => {
      const conversation = await driver.imagine('a red fox in snow', { seed: 7 });
      const image = await driver.waitForImage(conversation, timeoutMs);
      expect(isPng(image.png)).toBe(true);
      const meta = await sharp(image.png).metadata();
      expect(meta.width).toBeGreaterThan(0);
      expect(image.buttons).toEqual(expect.arrayContaining(['Re-roll', 'Vary']));
      expect(image.text).toContain('7'); // the seed is shown
      const progress = await driver.progressTexts(conversation);
      expect(progress.length).toBeGreaterThanOrEqual(1);
      expect(await driver.deliveredCount(conversation)).toBe(1);
    }, timeoutMs * 2);

    it.skipIf(skip.ask !== undefined)(`asking about an image → a text answer ${skip.ask ?? ''}`, async () => {
      const conversation = await driver.askAboutImage('what is in this picture?', {
        bytes: await samplePng(),
        contentType: 'image/png',
        name: 'photo.png',
      });
      const answer = await driver.waitForAnswer(conversation, timeoutMs);
      expect(answer.trim().length).toBeGreaterThan(0);
      expect(await driver.deliveredCount(conversation)).toBe(1);
    }, timeoutMs * 2);

    it.skipIf(skip.badInput !== undefined)(`bad input → a private, plain error and no result ${skip.badInput ?? ''}`, async () => {
      const badAspect = await driver.imagine('a cat', { aspect: '7:5' });
      expect(await driver.waitForPrivateError(badAspect, timeoutMs)).toMatch(/aspect/i);
      const notAnImage = await driver.askAboutImage('what is this?', {
        bytes: new TextEncoder().encode('just some text, not a picture'),
        contentType: 'text/plain',
        name: 'notes.txt',
      });
      expect(await driver.waitForPrivateError(notAnImage, timeoutMs)).toMatch(/image/i);
      expect(await driver.deliveredCount(badAspect)).toBe(0);
      expect(await driver.deliveredCount(notAnImage)).toBe(0);
    }, timeoutMs * 2);

    it.skipIf(skip.buttons !== undefined)(`Re-roll and Vary each produce a new image ${skip.buttons ?? ''}`, async () => {
      const first = await driver.imagine('a lighthouse at dusk', { seed: 11 });
      const original = await driver.waitForImage(first, timeoutMs);
      const reroll = await driver.pressButton(first, 'Re-roll');
      const rerolled = await driver.waitForImage(reroll, timeoutMs);
      expect(isPng(rerolled.png)).toBe(true);
      expect(Buffer.from(rerolled.png).equals(Buffer.from(original.png))).toBe(false); // a new seed
      const vary = await driver.pressButton(first, 'Vary');
      const varied = await driver.waitForImage(vary, timeoutMs);
      expect(isPng(varied.png)).toBe(true);
      expect(await driver.deliveredCount(first)).toBe(1);
      expect(await driver.deliveredCount(reroll)).toBe(1);
      expect(await driver.deliveredCount(vary)).toBe(1);
    }, timeoutMs * 3);

    it.skipIf(skip.usage !== undefined)(`an admin's usage report names the channel and the user as the platform shows them ${skip.usage ?? ''}`, async () => {
      await driver.waitForImage(await driver.imagine('a usage report entry', { seed: 3 }), timeoutMs);
      const report = await driver.usageReport(timeoutMs);
      const rows = report.text.split('\n');
      expect(rows.find((r) => r.startsWith(`#${driver.names.channel} (here) `))).toMatch(/ \d+(\.\d)? +[1-9]\d* +\d+ +\d+$/); // GPU-s, jobs, cached, refused
      expect(rows.find((r) => r.startsWith(`@${driver.names.user} `))).toMatch(/ \d+(\.\d)? +[1-9]\d* +\d+ +\d+$/);
      expect(isPng(report.chart)).toBe(true);
      expect((await sharp(report.chart).metadata()).width).toBe(640);
    }, timeoutMs * 2);
  });
}
