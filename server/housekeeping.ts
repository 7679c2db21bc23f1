import type { ChangeRetention, StorageEngine } from './storage/engine.js';
import { describeError, type Logger } from './logger.js';
import { startPeriodic, type Periodic } from './periodic.js';

/** Rows handled per transaction: small, so housekeeping never holds the writer for long. */
const BATCH = 256;

/** Defaults of the change log's retention. */
export const DEFAULT_CHANGE_RETENTION: ChangeRetention = { maxCount: 100_000, maxAgeMs: 24 * 60 * 60 * 1000 };

/** How long the reply of a keyed write is kept: the contract asks for at least 24 h. */
export const DEFAULT_KEPT_REPLY_WINDOW_MS = 24 * 60 * 60 * 1000;

/**
 * Runs `step` every `intervalMs`: each run repeats it (yielding to other work in between) while
 * it handles a full batch, so a backlog is worked off quickly without blocking requests.
 */
function every(intervalMs: number, what: string, step: () => Promise<number>, logger: Logger): Periodic {
  let stopped = false;
  const periodic = startPeriodic(intervalMs, async () => {
    try {
      while (!stopped && (await step()) === BATCH) await new Promise((resolve) => setImmediate(resolve));
    } catch (error) {
      logger.error(`${what} failed`, describeError(error));
    }
  });
  return {
    async stop() {
      stopped = true;
      await periodic.stop();
    },
  };
}

/** Options of {@link startHousekeeping}. */
export interface HousekeepingOptions {
  sweepIntervalMs: number;
  pruneIntervalMs: number;
  retention: ChangeRetention;
  /** The oldest revision the change log must keep for replays under way. */
  keepFrom(): number | undefined;
  /** Kept replies of keyed writes older than this are forgotten. @default DEFAULT_KEPT_REPLY_WINDOW_MS */
  keptReplyWindowMs?: number;
}

/**
 * Background upkeep of the store: the sweeper deletes expired keys (reads already ignore them;
 * sweeping reclaims space and announces the expiry to watchers), and the pruner trims the change
 * log to its retention and forgets kept replies past their window, so neither grows without bound.
 */
export function startHousekeeping(engine: StorageEngine, options: HousekeepingOptions, logger: Logger): { stop(): Promise<void> } {
  const jobs = [
    every(options.sweepIntervalMs, 'sweeping expired keys', () => engine.sweepExpired(BATCH), logger),
    every(options.pruneIntervalMs, 'pruning the change log', () => engine.pruneChanges(options.retention, BATCH, options.keepFrom()), logger),
    every(
      options.pruneIntervalMs,
      'forgetting old kept replies',
      () => engine.pruneKeptReplies(options.keptReplyWindowMs ?? DEFAULT_KEPT_REPLY_WINDOW_MS, BATCH),
      logger,
    ),
  ];
  return {
    async stop() {
      await Promise.all(jobs.map((job) => job.stop()));
    },
  };
}
