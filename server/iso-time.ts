/**
 * `new Date(ms).toISOString()`, remembering the last answer: the records a group of writes
 * returns share their `updatedAt`, and replies built in the same millisecond share their
 * `timestamp`, so most calls skip building a Date.
 */
let lastMs = Number.NaN;
let lastText = '';

export function isoTime(ms: number): string {
  if (ms !== lastMs) {
    lastText = new Date(ms).toISOString();
    lastMs = ms;
  }
  return lastText;
}
