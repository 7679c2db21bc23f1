import type { StorageEngine } from './storage/engine.js';
import { describeError, type Logger } from './logger.js';

/** Rows deleted per transaction: small, so the sweeper never holds the writer for long. */
const SWEEP_BATCH = 256;

/**
 * Deletes expired keys in small batches every `intervalMs`, yielding to other work between
 * batches. Reads already ignore expired keys; the sweeper reclaims space and, later, announces
 * the expiry to watchers.
 */
export function startSweeper(engine: StorageEngine, intervalMs: number, logger: Logger): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  let stopped = false;
  const sweep = async () => {
    try {
      while (!stopped && (await engine.sweepExpired(SWEEP_BATCH)) === SWEEP_BATCH) {
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (error) {
      logger.error('sweeping expired keys failed', describeError(error));
    }
  };
  const timer = setInterval(() => {
    running ??= sweep().finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
