// The CLI's PlatformPort: progress goes to a terminal bar, the result to a file (imagine/vary) or stdout (ask).
// deliver() is idempotent per jobId: writing the same PNG to the same path again changes nothing, and the
// waiting promise settles only once.
import { writeFile } from 'node:fs/promises';
import cliProgress from 'cli-progress';
import type { Destination, JobProgress, JobResult } from '../../src/jobs/contract.ts';
import type { PlatformPort } from '../core/port.ts';

export interface CliOutcome {
  result: JobResult;
  /** Where the PNG was written (imagine/vary); several images: one path each (`out-1.png`, `out-2.png`, …). */
  path?: string | string[];
  /** The PNG could not be written (the folder removed meanwhile, a full disk): what happened, for the terminal. */
  writeError?: string;
}

export class CliPort implements PlatformPort {
  readonly platform = 'cli' as const;
  private readonly bar: cliProgress.SingleBar;
  private barStarted = false;
  private readonly waiting = new Map<string, { resolve: (o: CliOutcome) => void; outPath: string | undefined }>();
  private readonly finished = new Map<string, CliOutcome>();

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.bar = new cliProgress.SingleBar(
      { format: '{label} |{bar}| {value}/{total}', stream: this.stream, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
  }

  /** Resolves when the result for jobId has been delivered (PNG written, or answer ready). */
  waitFor(jobId: string, outPath: string | undefined): Promise<CliOutcome> {
    const done = this.finished.get(jobId);
    if (done) return Promise.resolve(done);
    return new Promise((resolve) => this.waiting.set(jobId, { resolve, outPath }));
  }

  async showProgress(_destination: Destination, progress: JobProgress): Promise<void> {
    if (this.finished.has(progress.jobId)) return;
    const label = progress.stage === 'queued' ? `queued: position ${progress.queuePosition ?? '?'}${progress.noWorker ? ' (no GPU worker running)' : ''}` : progress.stage;
    const total = Math.max(progress.total, 1);
    if (!this.barStarted) {
      this.bar.start(total, progress.step, { label });
      this.barStarted = true;
    } else {
      this.bar.setTotal(total);
      this.bar.update(progress.step, { label });
    }
  }

  async deliver(result: JobResult, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<void> {
    if (this.finished.has(result.jobId)) return;
    const waiter = this.waiting.get(result.jobId);
    const outcome: CliOutcome = { result };
    // A failed write is reported, not thrown: thrown, the delivery was retried for minutes with the CLI unable to exit.
    try {
      if (gallery && waiter?.outPath) {
        const base = waiter.outPath.replace(/\.png$/i, '');
        outcome.path = gallery.map((_, i) => `${base}-${i + 1}.png`);
        await Promise.all(gallery.map((png, i) => writeFile(outcome.path![i]!, png)));
      } else if (image && waiter?.outPath) {
        await writeFile(waiter.outPath, image);
        outcome.path = waiter.outPath;
      }
    } catch (e) {
      outcome.writeError = `The image was made but could not be written: ${(e as Error).message}. Run the command again with a --out you can write to.`;
    }
    if (this.barStarted) this.bar.stop();
    this.barStarted = false;
    this.finished.set(result.jobId, outcome);
    this.waiting.delete(result.jobId);
    waiter?.resolve(outcome);
  }

  stop(): void {
    if (this.barStarted) this.bar.stop();
  }
}
