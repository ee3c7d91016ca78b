// What a lost reply from Discord's REST API means, for the two interaction requests that carry no nonce. A reply is
// lost when the connection closes or resets after the request went out, or on a timeout: Discord may have carried the
// request out. discord.js's REST sends such a request again (a reset, a timeout, a 5xx); a channel message carries a
// nonce with enforce_nonce, so Discord answers the repeat with the earlier message, but these two have none:
//   - a follow-up (Execute Webhook) sent again is posted again: it is sent at most once (followUpsAtMostOnce);
//   - an interaction callback (a defer, a reply, a modal) sent again is refused with 40060 "already acknowledged" when
//     the first one took: that refusal is the first one's success (callbacksAcknowledgedOnce).
import type { REST } from 'discord.js';
import { thrownUnsent } from '../core/port.ts';

type Send = REST['options']['makeRequest'];

/** An interaction follow-up: `POST /webhooks/{application}/{token}` (Execute Webhook), which takes no nonce. */
const FOLLOW_UP = /\/webhooks\/\d+\/[^/]+$/;

/**
 * An interaction follow-up that failed after Discord may have posted it: its reply lost (the connection closed or
 * reset after the request was sent, a timeout), or a 500 / 504. Not sent again: nothing would tell the repeat from a
 * new one.
 */
export class MayHaveBeenPosted extends Error {
  override readonly name = 'MayHaveBeenPosted';
}

/**
 * Make `rest` send an interaction follow-up at most once. discord.js sends a request again after a timeout, a reset
 * connection or a 5xx (`restRetries`); a channel message carries a nonce with enforce_nonce, so Discord answers such
 * a repeat with the earlier message, but a follow-up has none (Execute Webhook takes no nonce), and until 2026-12-07
 * one whose reply was lost after Discord had posted it was posted again: the user read it twice. Now such a failure
 * (anything but a connection never made; a 429 is still waited out) rejects the call with MayHaveBeenPosted, which
 * discord.js does not retry (its name is not AbortError, its message names no ECONNRESET), and the caller takes the
 * follow-up as posted. Every other request is sent as before.
 */
export function followUpsAtMostOnce(rest: REST): void {
  const send = rest.options.makeRequest;
  rest.options.makeRequest = async (url, init) => {
    if (init.method !== 'POST' || !FOLLOW_UP.test(new URL(url).pathname)) return send(url, init);
    let res: Awaited<ReturnType<typeof send>>;
    try {
      res = await send(url, init);
    } catch (e) {
      if (e instanceof MayHaveBeenPosted || thrownUnsent(e)) throw e;
      throw new MayHaveBeenPosted(`an interaction follow-up's answer was lost (${(e as Error).name}); Discord may have posted it, so it is not sent again`, { cause: e });
    }
    // 502/503: Discord's edge found no server to take the request ("wait a bit and retry"): not posted, sent again.
    if (res.status < 500 || res.status === 502 || res.status === 503) return res;
    await res.arrayBuffer().catch(() => undefined); // frees the connection
    throw new MayHaveBeenPosted(`Discord answered ${res.status} to an interaction follow-up, which it may have posted; not sent again`);
  };
}

/** An interaction callback: `POST /interactions/{id}/{token}/callback` (a defer, a reply, an update, a modal). */
const CALLBACK = /\/interactions\/\d+\/[^/]+\/callback$/;
/** Discord's answer to a second callback of one interaction. */
const ALREADY_ACKNOWLEDGED = 40060;

/**
 * Make a callback whose reply was lost count as acknowledged once Discord says it was. Until 2026-12-07 a lost reply to
 * a defer that Discord had taken failed the handler: discord.js sent it again and got 40060, or (a closed connection)
 * did not retry at all, and the user was left with "thinking…", no job and no answer. Now a callback whose reply was
 * lost is asked again (here, unless discord.js retries it itself: a timeout's signal is spent), and a 40060 to that
 * repeat is answered as the 204 the first attempt got. A callback that never reached Discord simply takes effect then.
 */
export function callbacksAcknowledgedOnce(rest: REST): void {
  const send = rest.options.makeRequest;
  /** Callbacks (their paths) whose last attempt's reply was lost, for discord.js's own retry to find. */
  const lost = new Set<string>();
  const remember = (path: string) => {
    if (lost.size >= 1_000) lost.clear(); // paths left by retries given up; a token lives 15 minutes
    lost.add(path);
  };
  rest.options.makeRequest = async (url, init) => {
    const path = new URL(url).pathname;
    if (init.method !== 'POST' || !CALLBACK.test(path)) return send(url, init);
    const retried = lost.delete(path);
    let res: Awaited<ReturnType<Send>>;
    try {
      res = await send(url, init);
    } catch (e) {
      if (thrownUnsent(e)) throw e;
      // Remembered before the repeat too: a repeat that fails as discord.js retries (a 5xx, a reset, its timeout) is
      // sent again by discord.js, whose attempt then gets the 40060 (until 2026-12-07 that one failed the handler).
      remember(path);
      if (init.signal?.aborted) throw e; // discord.js's timeout: it sends the callback again, with a fresh signal
      const again = await askAgain(send, url, init);
      if (again.status < 500) lost.delete(path);
      return acknowledged(again);
    }
    if (res.status >= 500) remember(path); // discord.js retries a 5xx
    return retried ? acknowledged(res) : res;
  };
}

/** Tries of a callback's repeat that fails with no answer (discord.js retries neither a closed socket nor a refused one). */
const REPEAT_TRIES = 3;

/**
 * The repeat of a callback whose reply was lost: sent up to REPEAT_TRIES times while it gets no answer, 250 ms apart
 * (its 3 s window allows it). Before, a repeat whose socket closed too failed the handler: "thinking…" again.
 */
async function askAgain(send: Send, url: string, init: Parameters<Send>[1]): Promise<Awaited<ReturnType<Send>>> {
  for (let tries = 1; ; tries++) {
    try {
      return await send(url, init);
    } catch (e) {
      if (tries >= REPEAT_TRIES || init.signal?.aborted) throw e;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** `res`, or a 204 where it refuses a repeated callback because the first one took. */
async function acknowledged(res: Awaited<ReturnType<Send>>): Promise<Awaited<ReturnType<Send>>> {
  if (res.status !== 400) return res;
  const text = await res.text();
  let code: unknown;
  try {
    code = (JSON.parse(text) as { code?: unknown }).code;
  } catch {
    code = undefined;
  }
  return code === ALREADY_ACKNOWLEDGED ? new Response(null, { status: 204 }) : new Response(text, { status: 400, headers: res.headers });
}
