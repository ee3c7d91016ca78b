// The Qwen2.5-VL tokenizer + chat template, loaded from the snapshot's own files (tokenizer.json,
// tokenizer_config.json, chat_template.json if present, generation_config.json) with maintained packages:
// @huggingface/tokenizers (byte-level BPE) and @huggingface/jinja (the template). Qwen adds no BOS (spec §1.5).
//
//   const tok = loadTokenizer('models/snapshot');
//   tok.encode('Hello world')                        // [9707, 1879]
//   tok.encodeChat([{ role: 'user', content: 'Hi' }]) // 151644 … 151645 198 151644 77091 198
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { AppError } from '../../src/errors.ts';

export type ContentPart = { type: 'text'; text: string } | { type: 'image' };
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ContentPart[];
}

/** Token ids the pipelines need by name (spec §1.5). */
export const TOKENS = {
  endOfText: 151643, // <|endoftext|> (pad)
  imStart: 151644,
  imEnd: 151645, // eos
  visionStart: 151652,
  visionEnd: 151653,
  imagePad: 151655,
  img: 151665, // [IMG]: appended before BLIP3-o's latent queries
  imgEnd: 151666,
  imagePlaceholder: 151667, // <image>
} as const;

export interface GenerationDefaults {
  eosTokenIds: number[];
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  doSample?: boolean;
}

const readJson = (path: string): Record<string, unknown> => {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new AppError('model', `cannot read ${path}`, { cause: e });
  }
};

export class QwenTokenizer {
  private readonly template: Template;

  constructor(
    private readonly tokenizer: Tokenizer,
    chatTemplate: string,
    readonly generation: GenerationDefaults,
  ) {
    this.template = new Template(chatTemplate);
  }

  /** Text → ids; special tokens written in the text (`<|im_start|>`) become their ids. No BOS is added. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The prompt text from the snapshot's chat template (system prompt added by the template when absent). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    return this.template.render({ messages, add_generation_prompt: opts.addGenerationPrompt ?? true });
  }

  encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts));
  }

  /** Incremental detokenizer for streaming: push ids, get the text they completed (never half a UTF-8 character). */
  streamDecoder(opts: { skipSpecialTokens?: boolean } = {}): { push(id: number): string; flush(): string; text(): string } {
    const ids: number[] = [];
    let emitted = 0;
    const decodeAll = () => this.decode(ids, opts);
    return {
      push: (id) => {
        ids.push(id);
        const text = decodeAll();
        if (text.endsWith('\uFFFD')) return ''; // an incomplete byte sequence: wait for the next token
        const chunk = text.slice(emitted);
        emitted = text.length;
        return chunk;
      },
      flush: () => {
        const text = decodeAll();
        const chunk = text.slice(emitted);
        emitted = text.length;
        return chunk;
      },
      text: decodeAll,
    };
  }
}

/** Loads the tokenizer of a snapshot directory (the HF layout: tokenizer.json + tokenizer_config.json). */
export function loadTokenizer(snapshotDir: string): QwenTokenizer {
  const tokenizerPath = join(snapshotDir, 'tokenizer.json');
  if (!existsSync(tokenizerPath))
    throw new AppError('model', `${snapshotDir} has no tokenizer.json (a fast-tokenizer file is required)`, { context: { snapshotDir } });
  const json = readJson(tokenizerPath);
  const config = readJson(join(snapshotDir, 'tokenizer_config.json'));
  const chatTemplatePath = join(snapshotDir, 'chat_template.json');
  const template = existsSync(chatTemplatePath) ? readJson(chatTemplatePath).chat_template : config.chat_template;
  if (typeof template !== 'string')
    throw new AppError('model', `${snapshotDir} has no chat template (tokenizer_config.json chat_template or chat_template.json)`);
  const genPath = join(snapshotDir, 'generation_config.json');
  const gen = existsSync(genPath) ? readJson(genPath) : {};
  const eos = gen.eos_token_id ?? [TOKENS.imEnd, TOKENS.endOfText];
  const generation: GenerationDefaults = {
    eosTokenIds: Array.isArray(eos) ? (eos as number[]) : [eos as number],
    ...(typeof gen.temperature === 'number' && { temperature: gen.temperature }),
    ...(typeof gen.top_p === 'number' && { topP: gen.top_p }),
    ...(typeof gen.top_k === 'number' && { topK: gen.top_k }),
    ...(typeof gen.repetition_penalty === 'number' && { repetitionPenalty: gen.repetition_penalty }),
    ...(typeof gen.do_sample === 'boolean' && { doSample: gen.do_sample }),
  };
  return new QwenTokenizer(new Tokenizer(json, config), template, generation);
}
