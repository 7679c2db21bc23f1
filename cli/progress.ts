import { Presets, SingleBar } from 'cli-progress';
import type { CliIo } from './io.js';

/** A progress bar on stderr, or nothing. */
export interface Progress {
  /** Counts `amount` more units done. */
  advance(amount: number): void;
  /** Removes the bar's timer; the bar stays on the screen at its last state. */
  stop(): void;
}

const NONE: Progress = { advance() {}, stop() {} };

/**
 * A bar on stderr when stderr is a terminal and the total is known; otherwise nothing, so that
 * piped and redirected output never carries control characters.
 */
export function progress(io: CliIo, total: number | undefined, unit: string): Progress {
  if (io.stderr.isTTY !== true || total === undefined) return NONE;
  const bar = new SingleBar(
    { stream: io.stderr, format: `{bar} {percentage}% | {value}/{total} ${unit}`, hideCursor: true, etaBuffer: 100 },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    advance: (amount) => bar.increment(amount),
    stop: () => bar.stop(),
  };
}
