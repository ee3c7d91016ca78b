// The Qwen2.5-VL tokenizer + chat template, loaded from the snapshot's own files (tokenizer.json,
// tokenizer_config.json, chat_template.json if present, generation_config.json) with maintained packages:
// @huggingface/tokenizers (byte-level BPE) and @huggingface/jinja (the template). Qwen adds no BOS (spec §1.5).
//
//   const tok = loadTokenizer('models/snapshot');
//   tok.encode('Hello world')                        // [9707, 1879]
//   tok.encodeChat([{ role: 'user', content: 'Hi' }]) // 151644 … 151645 198 151644 77091 198
//
// User text is never parsed for special tokens: a typed `<|im_start|>`, `<|image_pad|>`, `[IMG]` or `<image>` is
// encoded as the plain characters it is made of (ids below 151643), exactly like any other text. Only text we write
// (the chat template, our instructions) may hold control tokens: `encode` is for that text, `encodeText` and
// `encodePrompt` are for anything a user typed, and `encodeChat` keeps the messages' text apart from the template.
import { randomUUID } from 'node:crypto';
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

/**
 * A piece of a prompt. `trusted` text is ours (template, instructions): the added/special tokens written in it
 * (`<|im_start|>`) become their ids. Untrusted text (anything a user typed) is always plain text.
 */
export interface TextSegment {
  text: string;
  trusted: boolean;
}

interface AddedTokenJson {
  id: number;
  content: string;
  lstrip?: boolean;
  rstrip?: boolean;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export class QwenTokenizer {
  private readonly template: Template;
  /** The same vocabulary and merges with no added tokens: every string is encoded as the characters it holds. */
  private readonly plain: Tokenizer;
  /** Splits trusted text at the added tokens (longest first); the capture keeps them. */
  private readonly addedSplit: RegExp | undefined;
  private readonly added = new Map<string, AddedTokenJson>();

  constructor(
    private readonly tokenizer: Tokenizer,
    chatTemplate: string,
    readonly generation: GenerationDefaults,
    tokenizerJson: Record<string, unknown>,
    tokenizerConfig: Record<string, unknown>,
  ) {
    this.template = new Template(chatTemplate);
    const addedTokens = (Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : []) as AddedTokenJson[];
    for (const t of addedTokens) this.added.set(t.content, t);
    this.plain = new Tokenizer({ ...tokenizerJson, added_tokens: [] }, tokenizerConfig);
    const contents = [...this.added.keys()].sort((a, b) => b.length - a.length);
    this.addedSplit = contents.length ? new RegExp(`(${contents.map(escapeRegExp).join('|')})`) : undefined;
  }

  /**
   * Text WE wrote → ids; special tokens written in it (`<|im_start|>`) become their ids. No BOS is added.
   * Never pass user text here: use `encodeText` or `encodePrompt`.
   */
  encode(text: string): number[] {
    return this.encodePrompt([{ text, trusted: true }]);
  }

  /** User text → ids, as plain text: `<|im_end|>` typed by a user is the characters `<`, `|`, `im`, … never a control token. */
  encodeText(text: string): number[] {
    return this.encodePrompt([{ text, trusted: false }]);
  }

  /**
   * Segments → ids. Control tokens come only from trusted segments; the text between them (trusted and untrusted
   * alike) is encoded as one run, so a benign prompt gets exactly the ids `encode` of the whole string would give.
   */
  encodePrompt(segments: readonly TextSegment[]): number[] {
    const ids: number[] = [];
    let run = '';
    let stripNext = false;
    const flush = () => {
      if (run) ids.push(...this.plain.encode(run, { add_special_tokens: false }).ids);
      run = '';
    };
    const text = (t: string) => {
      run += stripNext ? t.trimStart() : t;
      if (stripNext && run) stripNext = false;
    };
    for (const s of segments) {
      if (!s.trusted || !this.addedSplit) {
        text(s.text);
        continue;
      }
      s.text.split(this.addedSplit).forEach((piece, i) => {
        if (i % 2 === 0) return text(piece);
        const token = this.added.get(piece)!;
        if (token.lstrip) run = run.trimEnd();
        flush();
        ids.push(token.id);
        stripNext = token.rstrip === true;
      });
    }
    flush();
    return ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  /**
   * The text of a finished generation. An answer stopped at its token limit can end inside a character's bytes (byte-
   * level BPE writes a rare emoji or ideograph as several ids), which decode shows as U+FFFD: that half character is
   * left out, as streamDecoder leaves it out while the answer streams.
   */
  decodeText(ids: readonly number[]): string {
    return this.decode(ids).replace(/\uFFFD+$/, '');
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The prompt text from the snapshot's chat template (system prompt added by the template when absent). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    return this.template.render({ messages, add_generation_prompt: opts.addGenerationPrompt ?? true });
  }

  /**
   * The chat template's ids, with every message text encoded as plain text: the template is rendered with a marker
   * in place of each text, the markers split the result into template (trusted) and message (untrusted) segments.
   */
  encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    const nonce = randomUUID();
    const texts: string[] = [];
    const mark = (text: string) => `\uE000${nonce}:${texts.push(text) - 1}\uE001`;
    const marked = messages.map((m) => ({
      ...m,
      content: typeof m.content === 'string' ? mark(m.content) : m.content.map((p) => (p.type === 'text' ? { ...p, text: mark(p.text) } : p)),
    }));
    const rendered = this.applyChatTemplate(marked, opts);
    const pieces = rendered.split(new RegExp(`\uE000${nonce}:(\\d+)\uE001`));
    const segments: TextSegment[] = pieces.map((piece, i) => (i % 2 === 0 ? { text: piece, trusted: true } : { text: texts[Number(piece)]!, trusted: false }));
    // The template must place each text verbatim (once, untransformed): otherwise the split above would be wrong.
    const used = pieces.filter((_, i) => i % 2 === 1);
    if (new Set(used).size !== texts.length || used.length !== texts.length || segments.map((s) => s.text).join('') !== this.applyChatTemplate(messages, opts))
      throw new AppError('model', 'the chat template does not place message text verbatim, so user text cannot be kept apart from control tokens');
    return this.encodePrompt(segments);
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
  return new QwenTokenizer(new Tokenizer(json, config), template, generation, json, config);
}
