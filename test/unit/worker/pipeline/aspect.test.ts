import { describe, expect, it } from 'vitest';
import { ASPECT_RATIOS, geometryFor } from '../../../../worker/pipeline/aspect.ts';

describe('aspect buckets', () => {
  it('gives SDXL buckets and size ids at the real decoder (latent 128, VAE ×8, UNet multiple 4)', () => {
    expect(geometryFor('1:1', 128, 8, 4)).toEqual({ latentHeight: 128, latentWidth: 128, height: 1024, width: 1024, sizeIds: [1024, 1024, 0, 0, 1024, 1024] });
    const wh = (a: Parameters<typeof geometryFor>[0]) => {
      const g = geometryFor(a, 128, 8, 4);
      return `${g.width}x${g.height}`;
    };
    expect(ASPECT_RATIOS.map(wh)).toEqual(['1024x1024', '1152x896', '896x1152', '1216x832', '832x1216', '1344x768', '768x1344', '1536x640', '640x1536']);
    expect(geometryFor('16:9', 128, 8, 4).sizeIds).toEqual([768, 1344, 0, 0, 768, 1344]);
  });

  it('keeps every bucket near one (scaled) megapixel and near its ratio', () => {
    for (const a of ASPECT_RATIOS) {
      const g = geometryFor(a, 128, 8, 4);
      expect(g.width * g.height).toBeGreaterThan(0.9 * 1024 * 1024);
      expect(g.width * g.height).toBeLessThan(1.1 * 1024 * 1024);
      const [w, h] = a.split(':').map(Number) as [number, number];
      expect(Math.abs(Math.log(g.width / g.height / (w / h)))).toBeLessThan(0.1);
    }
  });

  it('scales with a small decoder and respects the latent multiple', () => {
    const g = geometryFor('4:3', 32, 4, 4);
    expect([g.latentWidth, g.latentHeight, g.width, g.height]).toEqual([36, 28, 144, 112]);
    for (const a of ASPECT_RATIOS) {
      const s = geometryFor(a, 16, 2, 4);
      expect(s.latentWidth % 4).toBe(0);
      expect(s.latentHeight % 4).toBe(0);
    }
  });
});
