// The tiny snapshot's tokenizer (built from the real Qwen vocabulary, test data only) in a temporary folder for the
// tests of one file or describe block: written before them, removed after. Read `tokenizer()` inside a test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { tokenizerComponent } from '../../worker/builder/tiny/tokenizer.ts';
import { loadTokenizer, type QwenTokenizer } from '../../worker/pipeline/tokenizer.ts';

export function useTinyTokenizer(folderPrefix: string): () => QwenTokenizer {
  const dir = mkdtempSync(join(tmpdir(), folderPrefix));
  let tok: QwenTokenizer | undefined;
  beforeAll(() => {
    makeTiny(dir, [tokenizerComponent]);
    tok = loadTokenizer(dir);
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return () => {
    if (!tok) throw new Error('the tiny tokenizer is read inside a test, after beforeAll');
    return tok;
  };
}
