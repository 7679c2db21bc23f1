/**
 * Literal prefix matching as a key range, shared by every engine that orders keys by code point
 * (SQLite's BINARY collation compares UTF-8 bytes, and UTF-8 byte order is code point order).
 * A range scan uses the primary key; `LIKE` would treat `%`/`_` as wildcards and fold ASCII case.
 */

const MAX_CODE_POINT = 0x10ffff;
const SURROGATE_START = 0xd800;
const SURROGATE_END = 0xdfff;

/**
 * The smallest string greater than every string that starts with `prefix`, or null when there
 * is none (an empty prefix, or one made only of U+10FFFF). Keys starting with `prefix` are exactly
 * those `k` with `prefix <= k < prefixUpperBound(prefix)`.
 *
 * It increments the last code point that can be incremented and drops everything after it;
 * the increment skips the surrogate range, which well-formed keys never contain.
 */
export function prefixUpperBound(prefix: string): string | null {
  const codePoints = Array.from(prefix, (char) => char.codePointAt(0)!);
  for (let i = codePoints.length - 1; i >= 0; i--) {
    const codePoint = codePoints[i]!;
    if (codePoint === MAX_CODE_POINT) continue;
    const next = codePoint + 1 === SURROGATE_START ? SURROGATE_END + 1 : codePoint + 1;
    return String.fromCodePoint(...codePoints.slice(0, i), next);
  }
  return null;
}
