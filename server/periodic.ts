/** A task that runs on a timer; stop() cancels the timer and waits for a run under way. */
export interface Periodic {
  stop(): Promise<void>;
}

/**
 * Runs `task` every `intervalMs`, never two runs at once: a run still going when the next is due
 * makes that one skip. The timer does not keep the process alive.
 */
export function startPeriodic(intervalMs: number, task: () => Promise<void>): Periodic {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= task().finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
