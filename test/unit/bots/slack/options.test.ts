import { describe, expect, it } from 'vitest';
import { UserError } from '../../../../src/errors.ts';
import { IMAGINE_USAGE, undoSmartPunctuation } from '../../../../bots/core/imagine-flags.ts';
import { parseImagine } from '../../../../bots/slack/options.ts';

const limits = { maxPromptChars: 100, maxDitSteps: 100, maxDecoderSteps: 150, maxGuidance: 20 };

function userError(text: string): UserError {
  try {
    parseImagine(text, limits);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error(`expected "${text}" to be refused`);
}

describe('parseImagine', () => {
  it('reads the prompt and every option, in any order', () => {
    expect(parseImagine('a fox --seed 7 --ar 16:9 in snow --steps 20 --decoder-steps 40 --guidance 4.5', limits)).toEqual({
      command: 'imagine',
      prompt: 'a fox in snow',
      seed: 7,
      aspect: '16:9',
      ditSteps: 20,
      decoderSteps: 40,
      guidance: 4.5,
    });
    expect(parseImagine('a fox --aspect=9:16 --cfg=3', limits)).toEqual({ command: 'imagine', prompt: 'a fox', aspect: '9:16', guidance: 3 });
    expect(parseImagine('  just a prompt  ', limits)).toEqual({ command: 'imagine', prompt: 'just a prompt' });
  });

  it("undoes Slack's smart dashes and quotes", () => {
    expect(undoSmartPunctuation('a \u201cfox\u201d \u2014seed 7 \u2013ar 1:1')).toBe('a "fox" --seed 7 --ar 1:1');
    expect(parseImagine('a fox \u2014seed 7', limits)).toMatchObject({ prompt: 'a fox', seed: 7 });
    expect(parseImagine('red\u2014blue fox', limits).prompt).toBe('red\u2014blue fox');
  });

  it('refuses bad options with a message naming the problem and the usage', () => {
    expect(userError('a fox --sede 7').message).toMatch(/Unknown option `--sede`[\s\S]*Usage: `\/imagine/);
    expect(userError('a fox --seed seven').message).toMatch(/`--seed` needs a whole number, not `seven`/);
    expect(userError('a fox --seed -1').message).toMatch(/`--seed` needs a whole number, not `-1`/);
    expect(userError('a fox --ar 5:4').message).toMatch(/`--ar 5:4` is not a supported aspect ratio/);
    expect(userError('a fox --steps 500').message).toMatch(/between 1 and 100; you gave 500/);
    expect(userError('a fox --guidance 99').message).toMatch(/at most 20/);
    expect(userError('a fox --seed 1 --seed 2').message).toMatch(/given twice/);
    expect(userError('a fox --seed').message).toMatch(/needs a value/);
    expect(userError('--seed 3').message).toMatch(/Tell me what to draw/);
    expect(userError('x'.repeat(101)).message).toBe('Your prompt is 101 characters; the limit is 100.');
    expect(userError('--help').message).toBe(IMAGINE_USAGE);
    expect(userError('').code).toBe('bad_request');
  });
});

describe('parseAdmin', async () => {
  const { parseAdmin, ADMIN_USAGE } = await import('../../../../bots/slack/admin.ts');
  it('maps the admin sub-commands onto the core commands', () => {
    expect(parseAdmin('limits')).toEqual({ command: 'limits', action: 'show' });
    expect(parseAdmin('limits set requests=5 window=60 concurrent=2')).toEqual({ command: 'limits', action: 'set', spec: { requestsPerWindow: 5, windowSeconds: 60, maxConcurrent: 2 } });
    expect(parseAdmin('limits reset')).toEqual({ command: 'limits', action: 'reset' });
    expect(parseAdmin('queue')).toEqual({ command: 'queue', action: 'status' });
    expect(parseAdmin('queue pause')).toEqual({ command: 'queue', action: 'pause' });
    expect(parseAdmin('queue purge <@U0EVE|eve>')).toEqual({ command: 'queue', action: 'purge-user', targetUserId: 'U0EVE' });
    expect(parseAdmin('usage')).toEqual({ command: 'usage' });
    expect(parseAdmin('usage 30')).toEqual({ command: 'usage', days: 30 });
    expect(parseAdmin('budget')).toEqual({ command: 'budget', action: 'show' });
    expect(parseAdmin('budget show <@U0EVE>')).toEqual({ command: 'budget', action: 'show', targetUserId: 'U0EVE' });
    expect(parseAdmin('budget set 600')).toEqual({ command: 'budget', action: 'set', seconds: 600, scope: 'channel' });
    expect(parseAdmin('budget set 3600 workspace')).toEqual({ command: 'budget', action: 'set', seconds: 3600, scope: 'workspace' });
    expect(parseAdmin('budget set 90.5 <@U0EVE|eve>')).toEqual({ command: 'budget', action: 'set', seconds: 90.5, scope: 'user', targetUserId: 'U0EVE' });
    expect(parseAdmin('budget reset')).toEqual({ command: 'budget', action: 'reset', scope: 'channel' });
  });
  it('answers anything else with the usage', () => {
    expect(() => parseAdmin('')).toThrow(ADMIN_USAGE);
    expect(() => parseAdmin('limits set speed=9')).toThrow(/`speed=9` is not one of/);
    expect(() => parseAdmin('queue purge bob')).toThrow(/Name the user/);
    expect(() => parseAdmin('budget set lots')).toThrow(/GPU-seconds per day/);
    expect(() => parseAdmin('budget set 5 galaxy')).toThrow(/not channel, workspace or @someone/);
    expect(() => parseAdmin('usage forever')).toThrow(ADMIN_USAGE);
  });
});
