/**
 * `new Date(ms).toISOString()`, remembering recent answers: a record carries two or three times,
 * the records a group of writes returns share their `updatedAt`, and replies built in the same
 * millisecond share their `timestamp`, so most calls skip building a Date. The memo is dropped
 * whole when it fills, which keeps it small without bookkeeping per entry.
 */
const MAX_REMEMBERED = 4096;
const remembered = new Map<number, string>();

export function isoTime(ms: number): string {
  let text = remembered.get(ms);
  if (text === undefined) {
    if (remembered.size >= MAX_REMEMBERED) remembered.clear();
    text = new Date(ms).toISOString();
    remembered.set(ms, text);
  }
  return text;
}
