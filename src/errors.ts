// Errors are data (zod, bolt-js): a code tells the catcher what to do, a message tells a person what happened.
// Caught in exactly three places: the adapter handler, worker/processor.ts and each CLI main().

export type ErrorCode =
  // the chat user can fix these: shown to them verbatim
  | 'bad_request' // malformed options, prompt too long, unknown aspect ratio…
  | 'bad_image' // undecodable, too large, absurd aspect ratio, disallowed host
  | 'rate_limited' // a channel/user/guild limit was hit
  | 'forbidden' // not allowed in this guild/channel, or not an admin
  | 'cancelled' // the user cancelled
  | 'withheld' // the image the model made failed the channel's content checks (told to the user privately)
  | 'input_withheld' // the image the user sent failed them: deleted, and told privately (worker/after-job.ts deletes identical uploads too)
  // operators fix these
  | 'config' // config/default.yaml or env is wrong
  | 'model' // checkpoint missing, wrong shape, conversion failed
  | 'contract' // job payload failed schema validation across Redis
  | 'timeout' // a job ran past jobTimeoutMs
  | 'platform' // Discord/Slack answered with an error we could not handle
  | 'internal';

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly context: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, options: { cause?: unknown; context?: Record<string, unknown> } = {}) {
    super(message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.context = options.context ?? {};
  }
}

/** An error whose message is safe and useful to show the chat user as is ("Your prompt is 1400 characters; the limit is 1000."). */
export class UserError extends AppError {
  constructor(code: ErrorCode, message: string, options: { cause?: unknown; context?: Record<string, unknown> } = {}) {
    super(code, message, options);
    this.name = 'UserError';
  }
}

export const isUserError = (e: unknown): e is UserError => e instanceof UserError;

/** Whether a job's error code is a content-check verdict (`withheld`, `input_withheld`): private, shared only where the checks are alike. */
export const isWithheldCode = (code: string | undefined): boolean => code === 'withheld' || code === 'input_withheld';

/** Wrap anything thrown into an AppError (bolt-js asCodedError). */
export function asAppError(e: unknown, code: ErrorCode = 'internal'): AppError {
  if (e instanceof AppError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new AppError(code, message, { cause: e });
}
