import { afterEach } from 'vitest';

/**
 * Registers an afterEach hook that runs what the test registered to undo (closing clients,
 * servers), newest first, ignoring failures; returns the function that registers one.
 */
export function cleanUpAfterEach(): (cleanup: () => unknown) => void {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    while (cleanups.length > 0) await Promise.resolve().then(cleanups.pop()!).catch(() => undefined);
  });
  return (cleanup) => void cleanups.push(cleanup);
}
