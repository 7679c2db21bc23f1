/** Pure helpers of the inspector page: reading what the user typed and wording what the server holds. */

/** The largest TTL the server accepts (ten years), in seconds. */
const MAX_TTL_SECONDS = 315_360_000;

/** What the user typed, read: a value to send, or a sentence saying why nothing is sent. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

/** The value in the editor, checked in the page so that text that is not JSON never reaches the server. */
export function parseJson(text: string): Parsed<unknown> {
  if (text.trim() === '') return { ok: false, message: 'The value is empty: write JSON, e.g. "text", 42, null or {"a": 1}.' };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (error) {
    return { ok: false, message: `Not valid JSON, nothing was saved: ${(error as Error).message}` };
  }
}

/** The expiry field: empty means no expiry, else a positive number of seconds, returned in ms. */
export function parseTtlSeconds(text: string): Parsed<number | undefined> {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: true, value: undefined };
  const seconds = Number(trimmed);
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_TTL_SECONDS) {
    return { ok: false, message: `The expiry must be a number of seconds above 0 and at most ${MAX_TTL_SECONDS} (ten years), or empty for none.` };
  }
  return { ok: true, value: Math.max(1, Math.round(seconds * 1000)) };
}

/** The text the editor shows for a value. */
export function formatValue(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** A duration in words a person reads at a glance: `45 s`, `3 min 5 s`, `2 h 10 min`, `4 d 3 h`. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** The expiry of a record: `never`, or its time and what is left of it at `now`. */
export function describeExpiry(expiresAt: string | null, now: number): string {
  if (expiresAt === null) return 'never';
  const left = Date.parse(expiresAt) - now;
  return left > 0 ? `${formatTime(expiresAt)} (in ${formatDuration(left)})` : `${formatTime(expiresAt)} (due now)`;
}

/** A server timestamp in the reader's local time, to the second. */
export function formatTime(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** Seconds left until `expiresAt`, rounded up, as the expiry field shows them. */
export function secondsLeft(expiresAt: string, now: number): string {
  return String(Math.max(1, Math.ceil((Date.parse(expiresAt) - now) / 1000)));
}

/**
 * Orders keys as the server lists them: by UTF-8 bytes, which is code point order. (`<` on
 * JavaScript strings compares UTF-16 units, which puts U+E000..U+FFFF after the astral planes.)
 */
export function compareKeys(a: string, b: string): number {
  const left = a[Symbol.iterator]();
  const right = b[Symbol.iterator]();
  for (;;) {
    const x = left.next();
    const y = right.next();
    if (x.done === true || y.done === true) return x.done === true ? (y.done === true ? 0 : -1) : 1;
    const diff = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (diff !== 0) return diff;
  }
}

/** A copy of `keys` (sorted) with `key` in its place, unless it is there already. */
export function insertKey(keys: readonly string[], key: string): string[] {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    const order = compareKeys(keys[mid]!, key);
    if (order === 0) return [...keys];
    if (order < 0) low = mid + 1;
    else high = mid;
  }
  return [...keys.slice(0, low), key, ...keys.slice(low)];
}

/** An error as one line: `CODE: message` for a KvError (anything with a string `code`), else its message. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${error.message}` : error.message;
}
