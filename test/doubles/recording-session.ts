// A ModelSession double for the generator's tests: answers with `run`, and records plain copies of every call's feeds
// (a feed is host data or a DeviceTensor wrapping a CPU tensor: the DiT condition is uploaded once).
import type { ModelSession } from '../../worker/runtime/session.ts';

export type Feeds = Record<string, { data: Float32Array; dims: number[] }>;

export function recordingSession(run: (feeds: Feeds) => Feeds): ModelSession & { feeds: Feeds[] } {
  const feeds: Feeds[] = [];
  const plain = (v: unknown) => {
    const t = (v as { tensor?: { data: Float32Array; dims: readonly number[] } }).tensor ?? (v as { data: Float32Array; dims: number[] });
    return { data: Float32Array.from(t.data), dims: [...t.dims] };
  };
  return {
    feeds,
    async run(f: Record<string, unknown>) {
      const copy = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, plain(v)])) as Feeds;
      feeds.push(copy);
      return run(copy);
    },
    async release() {},
  } as unknown as ModelSession & { feeds: Feeds[] };
}

/** A UNet double: noise row 0 (the conditional) all `ec`, row 1 (the negative) all `en`. */
export const constantUnet = (ec: number, en: number) =>
  recordingSession((f) => {
    const half = f.sample!.data.length / 2;
    const e = new Float32Array(2 * half);
    e.fill(ec, 0, half);
    e.fill(en, half);
    return { noise_pred: { data: e, dims: f.sample!.dims } };
  });

/** A VAE double: a zero 2×2 RGB image for any latent. */
export const blankVae = () => recordingSession((f) => ({ image: { data: new Float32Array(3 * f.latents!.data.length), dims: [1, 3, 2, 2] } }));
