// The modals the Slack bot opens (bots/slack/settings.ts, blocks.ts askModal) against Slack's Block Kit limits, as
// the fake Slack checks them at views.open (test/fakes/slack/server.ts viewProblems): a modal over one is refused
// whole (invalid_arguments), and the user cannot open it at all.
import { describe, expect, it } from 'vitest';
import { askModal } from '../../../../bots/slack/blocks.ts';
import { settingsModal } from '../../../../bots/slack/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { viewProblems } from '../../../fakes/slack/server.ts';

type View = { blocks: { block_id: string; element: Record<string, unknown> }[] };
const target = { c: 'C1', t: '1.2', f: { id: 'F1', name: 'a.png' } };
const input = (element: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ blocks: [{ type: 'input', block_id: 'b', label: { type: 'plain_text', text: 'L' }, element: { action_id: 'value', ...element }, ...extra }] });

describe("the fake Slack refuses a modal as Slack does", () => {
  it('an initial_value longer than its max_length, a max_length past 3,000, and texts past their limits', () => {
    expect(viewProblems(input({ type: 'plain_text_input', max_length: 10, initial_value: 'x'.repeat(10) }))).toEqual([]);
    expect(viewProblems(input({ type: 'plain_text_input', max_length: 10, initial_value: 'x'.repeat(11) }))).toEqual(['must be at most 10 characters [json-pointer:/view/blocks/0/element/initial_value]']);
    expect(viewProblems(input({ type: 'plain_text_input', max_length: 10, initial_value: '🦊'.repeat(6) }))).toHaveLength(1); // 12 code units
    expect(viewProblems(input({ type: 'plain_text_input', max_length: 3001 }))).toEqual(['must be between 1 and 3000 [json-pointer:/view/blocks/0/element/max_length]']);
    expect(viewProblems(input({ type: 'plain_text_input', placeholder: { type: 'plain_text', text: 'p'.repeat(151) } }))).toHaveLength(1);
    expect(viewProblems(input({ type: 'checkboxes', options: [{ text: { type: 'plain_text', text: 'o'.repeat(76) }, value: 'v' }] }))).toHaveLength(1);
    expect(viewProblems(input({ type: 'plain_text_input' }, { label: { type: 'plain_text', text: 'l'.repeat(2001) } }))).toHaveLength(1);
    expect(viewProblems({ title: { type: 'plain_text', text: 't'.repeat(25) } })).toHaveLength(1);
  });
});

describe('the settings modal', () => {
  it('opens with every default at its most, channel and user', () => {
    const config = loadConfig({ env: {}, overrides: { generation: { maxNegativeChars: 1000 } } });
    const saved = { aspect: '16:9', steps: 80, guidance: 15, count: 4, negative: 'n'.repeat(1000), private: true, noLog: true, retentionSeconds: 30 * 86400 } as const;
    for (const scope of ['user', 'channel'] as const) expect(viewProblems(settingsModal({ scope, teamId: 'T', channelId: 'C' }, saved, config))).toEqual([]);
  });

  it('pre-fills a saved negative prompt of emoji within its max_length in UTF-16 code units, cut between whole characters', () => {
    // 10 code points: within the core's limit of 10 (counted as Discord counts), but 20 code units.
    const lowered = loadConfig({ env: {}, overrides: { generation: { maxNegativeChars: 10 } } });
    const view = settingsModal({ scope: 'user', teamId: 'T', channelId: 'C' }, { negative: '🦊'.repeat(10) }, lowered) as View;
    expect(viewProblems(view)).toEqual([]);
    expect(view.blocks.find((b) => b.block_id === 'negative')!.element.initial_value).toBe('🦊'.repeat(5));
    const family = settingsModal({ scope: 'user', teamId: 'T', channelId: 'C' }, { negative: 'ab 👨‍👩‍👧' }, lowered) as View; // 8 code points, 11 units
    expect(family.blocks.find((b) => b.block_id === 'negative')!.element.initial_value).toBe('ab');
  });
});

describe('the Ask modal', () => {
  it("takes questions up to understanding.maxQuestionChars, at most Slack's 3,000", () => {
    const max = (n: number) => (askModal(target, loadConfig({ env: {}, overrides: { understanding: { maxQuestionChars: n } } }).understanding.maxQuestionChars) as View).blocks[0]!.element.max_length;
    expect([max(500), max(2000), max(3000), max(8000)]).toEqual([500, 2000, 3000, 3000]);
    expect(viewProblems(askModal(target, 8000))).toEqual([]);
  });
});
