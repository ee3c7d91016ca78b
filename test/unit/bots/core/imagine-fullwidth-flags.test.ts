// Options typed with a Japanese (or Chinese, Korean) IME in full-width mode: `－－ａｒ　１６：９` is U+FF0D U+FF0D,
// U+FF41 U+FF52, an ideographic space U+3000, U+FF11 U+FF16 U+FF1A U+FF19. The flag tokens are read in their NFKC
// form (bots/core/imagine-flags.ts); the prompt's own words and the words of `--no` are kept as typed.
import { describe, expect, it } from 'vitest';
import { splitImagineFlags } from '../../../../bots/core/imagine-flags.ts';
import { parseImagine } from '../../../../bots/slack/options.ts';
import { loadConfig } from '../../../../src/config/load.ts';

const g = loadConfig({ env: {} }).generation;

describe('full-width options', () => {
  it('are options, with full-width values, the prompt kept as typed', () => {
    expect(splitImagineFlags('夕焼けの富士山　－－ａｒ　１６：９', g)).toEqual({ prompt: '夕焼けの富士山', flags: { aspect: '16:9' } });
    expect(splitImagineFlags('ＡＢＣ　ｌｏｇｏ －－ｓｅｅｄ　７ －－ｎ　２', g)).toEqual({ prompt: 'ＡＢＣ ｌｏｇｏ', flags: { seed: 7, count: 2 } });
    expect(splitImagineFlags('猫 －－ｓｔｅｐｓ＝２０ --guidance ３．５', g)).toEqual({ prompt: '猫', flags: { ditSteps: 20, guidance: 3.5 } });
    expect(splitImagineFlags('猫 --ar＝１：１', g)).toEqual({ prompt: '猫', flags: { aspect: '1:1' } });
  });

  it('--no keeps its words as typed, up to the next option, full-width or not', () => {
    expect(splitImagineFlags('城 －－ｎｏ　人，　ＣＡＲ －－ａｒ　１６：９', g)).toEqual({ prompt: '城', flags: { negative: '人， ＣＡＲ', aspect: '16:9' } });
    expect(splitImagineFlags('城 －－ｎｏ＝ＣＡＲ', g)).toEqual({ prompt: '城', flags: { negative: 'ＣＡＲ' } });
  });

  it('are refused as options are: an unknown one, a value missing or out of range', () => {
    expect(() => splitImagineFlags('猫 －－ｘｙｚ', g)).toThrow(/Unknown option `--xyz`/);
    expect(() => splitImagineFlags('猫 －－ｓｅｅｄ', g)).toThrow(/`--seed` needs a value/);
    expect(() => splitImagineFlags('猫 －－ｓｅｅｄ －－ａｒ　１：１', g)).toThrow(/`--seed` needs a value/);
    expect(() => splitImagineFlags('猫 －－ｎ　９９', g)).toThrow(/`--n` must be between 1 and/);
  });

  it('a full-width word that is no option stays in the prompt: a dash alone, or one before no letter', () => {
    expect(splitImagineFlags('夜 －－ 静か －－１', g)).toEqual({ prompt: '夜 －－ 静か －－１', flags: {} });
    expect(splitImagineFlags('ｒｅｄ　ｆｏｘ', g)).toEqual({ prompt: 'ｒｅｄ ｆｏｘ', flags: {} });
  });

  it("Slack's /imagine text", () => {
    expect(parseImagine('富士山　－－ａｒ　１６：９', g)).toMatchObject({ prompt: '富士山', aspect: '16:9' });
  });
});
