// HTTP-mode sender: what Slack does when the bot runs Bolt's HTTPReceiver (platform-fakes.md B2).
// Signs the exact bytes it sends: X-Slack-Signature = v0=HMAC_SHA256(secret, "v0:" + ts + ":" + body).
// The Content-Type must be exactly application/x-www-form-urlencoded for slash commands and interactive
// payloads (Bolt compares it verbatim) and application/json for events.
import { createHmac } from 'node:crypto';

export interface SignedPostOptions {
  signingSecret: string;
  /** Unix seconds; default now. A value older than five minutes must be refused by the bot. */
  timestamp?: number;
  /** Send this signature instead of the correct one (forgery). */
  signature?: string;
  retryNum?: number;
}

export interface SignedPostResult {
  /** 0 when the bot did not answer within Slack's 3 s (Slack then shows the user "operation_timeout"). */
  status: number;
  body: string;
  ms: number;
  timedOut: boolean;
}

/** Slack waits this long for the HTTP answer (the ack) before it gives up on the request. */
export const SLACK_HTTP_TIMEOUT_MS = 3000;

export function sign(secret: string, timestamp: number, body: string): string {
  return `v0=${createHmac('sha256', secret).update(`v0:${timestamp}:${body}`).digest('hex')}`;
}

async function post(url: string, body: string, contentType: string, o: SignedPostOptions): Promise<SignedPostResult> {
  const timestamp = o.timestamp ?? Math.floor(Date.now() / 1000);
  const started = Date.now();
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': contentType,
        'x-slack-request-timestamp': String(timestamp),
        'x-slack-signature': o.signature ?? sign(o.signingSecret, timestamp, body),
        ...(o.retryNum !== undefined ? { 'x-slack-retry-num': String(o.retryNum), 'x-slack-retry-reason': 'http_timeout' } : {}),
      },
      body,
      signal: AbortSignal.timeout(SLACK_HTTP_TIMEOUT_MS),
    });
  } catch (e) {
    if ((e as Error).name !== 'TimeoutError') throw e;
    return { status: 0, body: '', ms: Date.now() - started, timedOut: true };
  }
  return { status: res.status, body: await res.text(), ms: Date.now() - started, timedOut: false };
}

/** A slash command (form fields) to the bot's /slack/events. */
export function postSlashCommand(url: string, fields: Record<string, string>, o: SignedPostOptions): Promise<SignedPostResult> {
  return post(url, new URLSearchParams(fields).toString(), 'application/x-www-form-urlencoded', o);
}

/** An interactive payload (block_actions, shortcuts, view_submission): form field `payload` holding JSON. */
export function postInteractive(url: string, payload: Record<string, unknown>, o: SignedPostOptions): Promise<SignedPostResult> {
  return post(url, new URLSearchParams({ payload: JSON.stringify(payload) }).toString(), 'application/x-www-form-urlencoded', o);
}

/** An Events API body (event_callback, url_verification). */
export function postEvent(url: string, body: Record<string, unknown>, o: SignedPostOptions): Promise<SignedPostResult> {
  return post(url, JSON.stringify(body), 'application/json', o);
}
