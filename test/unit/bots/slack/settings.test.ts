// /blip3o-settings pieces without Slack: the command text, the modal built from saved values, the submitted form
// back to a settings command, and the durations of the retention TTL.
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../../../bots/core/settings.ts';
import { parseSettingsText, settingsFromView, settingsModal } from '../../../../bots/slack/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';

const config = loadConfig({ env: {} });

describe('/blip3o-settings', () => {
  it('reads whose settings and reset from the text; anything else is a usage error', () => {
    expect(parseSettingsText('')).toEqual({ scope: 'user', reset: false });
    expect(parseSettingsText('me reset')).toEqual({ scope: 'user', reset: true });
    expect(parseSettingsText(' Channel ')).toEqual({ scope: 'channel', reset: false });
    expect(parseSettingsText('channel reset')).toEqual({ scope: 'channel', reset: true });
    expect(() => parseSettingsText('steps=7')).toThrow(/Usage/);
  });

  it('the modal shows the saved values; the channel modal adds no-log and the retention TTL', () => {
    const target = { scope: 'channel' as const, teamId: 'T', channelId: 'C' };
    const view = settingsModal(target, { steps: 9, negative: 'blur', private: true, noLog: true, retentionSeconds: 7200 }, config) as { blocks: { block_id: string; element: Record<string, unknown> }[]; private_metadata: string };
    const el = (id: string) => view.blocks.find((b) => b.block_id === id)!.element;
    expect(el('steps').initial_value).toBe('9');
    expect(el('negative').initial_value).toBe('blur');
    expect((el('private').initial_options as { value: string }[]).map((o) => o.value)).toEqual(['private', 'nolog']);
    expect(el('retention').initial_value).toBe('2h');
    expect(JSON.parse(view.private_metadata)).toEqual(target);
    const mine = settingsModal({ ...target, scope: 'user' }, {}, config) as { blocks: { block_id: string; element: { options?: unknown[] } }[] };
    expect(mine.blocks.map((b) => b.block_id)).not.toContain('retention');
    expect(mine.blocks.find((b) => b.block_id === 'private')!.element.options).toHaveLength(1);
  });

  it('a saved value above a limit lowered since is shown as it is used, at the limit, so saving the form unchanged is not refused', () => {
    const lowered = loadConfig({ env: {}, overrides: { generation: { maxDitSteps: 40, maxGuidance: 10, maxImagesPerRequest: 2, maxNegativeChars: 10 } } });
    const view = settingsModal({ scope: 'user', teamId: 'T', channelId: 'C' }, { steps: 80, guidance: 15, count: 4, negative: 'blurry, watermark, text' }, lowered) as { blocks: { block_id: string; element: Record<string, unknown> }[] };
    const el = (id: string) => view.blocks.find((b) => b.block_id === id)!.element;
    expect([el('steps').initial_value, el('guidance').initial_value, el('count').initial_value, el('negative').initial_value]).toEqual(['40', '10', '2', 'blurry, wa']);
    expect([el('steps').max_value, el('negative').max_length]).toEqual(['40', 10]);
  });

  it('a submitted form saves exactly what it shows; a bad duration is a field error', () => {
    const target = { scope: 'channel' as const, teamId: 'T', channelId: 'C' };
    expect(settingsFromView(target, {
      aspect: { value: { selected_option: { value: '3:2' } } },
      steps: { value: { value: '' } },
      guidance: { value: { value: '4.5' } },
      private: { value: { selected_options: [{ value: 'nolog' }] } },
      retention: { value: { value: '15m' } },
    })).toEqual({ input: { command: 'settings', scope: 'channel', action: 'replace', values: { aspect: '3:2', guidance: 4.5, noLog: true, retentionSeconds: 900 } } });
    expect(settingsFromView(target, { retention: { value: { value: 'later' } } })).toEqual({ errors: { retention: expect.stringContaining('not a duration') } });
  });

  it('durations: 90, 90s, 15m, 2h, 7d; shown back in the largest whole unit', () => {
    expect(['90', '90s', '15m', '2h', '7d', '1 day'].map(parseDuration)).toEqual([90, 90, 900, 7200, 604_800, 86_400]);
    expect(() => parseDuration('-5m')).toThrow(/not a duration/);
    expect([90, 900, 7200, 86_400, 604_800].map(formatDuration)).toEqual(['90 s', '15 min', '2 h', '1 day', '7 days']);
  });
});
