// The snapshot's tokenizer files (the tiny snapshot's are built from the real Qwen vocabulary) give the real ids.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTiny } from '../../../../worker/builder/tiny/index.ts';
import { tokenizerComponent } from '../../../../worker/builder/tiny/tokenizer.ts';
import { loadTokenizer, TOKENS, type QwenTokenizer } from '../../../../worker/pipeline/tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'tok-'));
let tok: QwenTokenizer;
beforeAll(() => {
  makeTiny(dir, [tokenizerComponent]);
  tok = loadTokenizer(dir);
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Qwen tokenizer from snapshot files', () => {
  it('encodes fixed strings to the real Qwen ids, with no BOS', () => {
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    expect(tok.encode('\n')).toEqual([198]);
    expect(tok.encode('user')).toEqual([872]);
    expect(tok.encode('<|im_start|>assistant\n')).toEqual([151644, 77091, 198]);
    expect(tok.encode('[IMG][/IMG]<image>')).toEqual([TOKENS.img, TOKENS.imgEnd, TOKENS.imagePlaceholder]);
    expect(tok.tokenId('<|image_pad|>')).toBe(151655);
  });

  it('wraps a user message in the chat template: 151644 … 151645, default system prompt, generation prompt', () => {
    const ids = tok.encodeChat([{ role: 'user', content: 'Hello world' }]);
    expect(ids[0]).toBe(151644);
    expect(ids.slice(0, 3)).toEqual([151644, 8948, 198]); // <|im_start|>system\n
    const user = ids.indexOf(872);
    expect(ids.slice(user - 1, user + 5)).toEqual([151644, 872, 198, 9707, 1879, 151645]);
    expect(ids.slice(-3)).toEqual([151644, 77091, 198]); // <|im_start|>assistant\n
    expect(tok.applyChatTemplate([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What?' }] }])).toContain(
      '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n',
    );
  });

  it('decodes, skipping special tokens, and streams whole characters only', () => {
    const ids = tok.encodeChat([{ role: 'user', content: 'héllo 🌍' }]);
    expect(tok.decode(ids)).toBe('system\nYou are a helpful assistant.\nuser\nhéllo 🌍\nassistant\n');
    const s = tok.streamDecoder();
    const chunks = tok.encode('héllo 🌍!').map((id) => s.push(id));
    expect(chunks.join('') + s.flush()).toBe('héllo 🌍!');
    expect(chunks.every((c) => !c.includes('\uFFFD'))).toBe(true);
  });
});
