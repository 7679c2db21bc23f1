import { createInterface } from 'node:readline';

/**
 * Lines from the parent process on stdin, one per call, for a bench child that takes commands.
 * `onClose` runs when the parent closes stdin (it went away).
 */
export function parentLines(onClose?: () => void): () => Promise<string> {
  const buffered: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const waiter = waiting.shift();
    if (waiter !== undefined) waiter(line);
    else buffered.push(line);
  });
  if (onClose !== undefined) rl.on('close', onClose);
  return () => {
    const line = buffered.shift();
    return line !== undefined ? Promise.resolve(line) : new Promise((resolve) => waiting.push(resolve));
  };
}
