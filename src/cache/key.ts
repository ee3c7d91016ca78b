// What makes two requests "the same": the content address of a result. Bots and workers compute it alike.
//
//   digest   = sha256(kind, normalised prompt/question, every option that changes the output, input image sha256)
//   entry id = sha1(manifest hash ':' digest)        (the converted model is part of the address)
//
// The digest is model-independent, so single flight (an identical request joining a running one) works even while
// workers disagree about the model; the cache entry id is not, so a result is never served for another model.
// A request whose output is not reproducible has no digest: /ask with temperature > 0 (sampled) is never cached.
import { createHash } from 'node:crypto';
import type { JobRequest } from '../jobs/contract.ts';

/**
 * Unicode NFC, trimmed, runs of whitespace as one space: "a  red\nfox " and "a red fox" ask for the same image.
 *
 * NFC, not NFKC: the model's tokenizer (Qwen2's tokenizer.json, `"normalizer": {"type": "NFC"}`, run by
 * worker/pipeline/tokenizer.ts on the user's own text) composes what it is given, so two spellings NFC folds together
 * are the same token ids and get the same image or greedy answer. NFKC would also fold what the tokenizer tells apart
 * ("ｒｅｄ ｆｏｘ" and "red fox", "ﬁre" and "fire", "x²" and "x2" are other ids), and the cache would then serve one
 * request the result the model drew for another (test/unit/src/cache/key-tokenizer.test.ts). Whitespace runs are the
 * one fold past the tokenizer's (a double space or a newline is its own token): a choice for how people type.
 */
export function normaliseText(text: string): string {
  return text.normalize('NFC').trim().replace(/\s+/g, ' ');
}

export const sha256Hex = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');

// Stryker disable StringLiteral: equivalent, the separators: every string in a request is JSON-quoted and no request holds an array of numbers, so nothing reads alike without them
/** JSON with sorted keys, so option objects hash the same whatever their key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object')
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(value);
}
// Stryker restore StringLiteral

/**
 * The request's digest, or undefined when its result is not reproducible (sampled /ask). `imageSha256` is the
 * sha256 of the input image bytes (vary and ask need it). Greedy /ask ignores seed, topP and topK: they do not
 * change a greedy answer, so they are left out and two greedy questions with different seeds share an entry.
 */
export function requestDigest(request: JobRequest, imageSha256?: string): string | undefined {
  let fields: unknown[];
  // Stryker disable StringLiteral: equivalent, the kind tags: the three kinds' field lists differ in length already, so they never read alike
  // A several-image request (issue 20) holds one PNG per seed, a cache entry one PNG: not cached (its images
  // are not served from single-image entries either).
  if (request.kind !== 'ask' && (request.options.count ?? 1) > 1) return undefined;
  switch (request.kind) {
    case 'imagine':
      fields = ['imagine', normaliseText(request.prompt), request.options];
      break;
    case 'vary':
      if (!imageSha256) return undefined;
      fields = ['vary', imageSha256, normaliseText(request.prompt), request.options];
      break;
    case 'ask': {
      if (!imageSha256 || request.options.temperature > 0) return undefined;
      const { maxNewTokens, repetitionPenalty } = request.options;
      const history = request.history.map((t) => [t.role, normaliseText(t.text)]);
      fields = ['ask', imageSha256, normaliseText(request.question), history, { maxNewTokens, repetitionPenalty }];
      break;
    }
  }
  // Stryker restore StringLiteral
  return sha256Hex(canonical(fields));
}

/**
 * The address a request's cache entry and flight live under: its digest within one sharing scope (src/checks/policy.ts
 * sharingScope), so only requests whose channels check alike, in one tenant unless cache.shareAcrossWorkspaces, share a result.
 */
export function scopedDigest(digest: string, scope: string): string {
  return sha256Hex(`${scope}:${digest}`);
}

/** The cache entry id for a digest under one converted model (sha1, as Redis's own redis.sha1hex would write it). */
export function entryId(manifestHash: string, digest: string): string {
  return createHash('sha1').update(`${manifestHash}:${digest}`).digest('hex');
}
