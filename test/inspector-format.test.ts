import { describe, expect, it } from 'vitest';
import { compareKeys, describeError, describeExpiry, formatDuration, insertKey, parseJson, parseTtlSeconds } from '../server/inspector/page/format.js';
import { KvError } from '../sdk/index.js';

// The inspector page's pure helpers (they need no browser).
describe('the inspector page helpers', () => {
  it('parseJson takes any JSON value and explains text that is not JSON', () => {
    expect(parseJson(' {"a": [1, null]} ')).toEqual({ ok: true, value: { a: [1, null] } });
    expect(parseJson('null')).toEqual({ ok: true, value: null });
    expect(parseJson('{"a": ')).toMatchObject({ ok: false, message: expect.stringMatching(/^Not valid JSON, nothing was saved: /) });
    expect(parseJson("{'a': 1}")).toMatchObject({ ok: false });
    expect(parseJson('   ')).toMatchObject({ ok: false, message: expect.stringMatching(/^The value is empty/) });
  });

  it('parseTtlSeconds: empty is no expiry, seconds become ms, anything else is refused', () => {
    expect(parseTtlSeconds('')).toEqual({ ok: true, value: undefined });
    expect(parseTtlSeconds(' 90 ')).toEqual({ ok: true, value: 90_000 });
    expect(parseTtlSeconds('0.0001')).toEqual({ ok: true, value: 1 });
    for (const bad of ['0', '-5', 'soon', '1e12', 'Infinity']) expect(parseTtlSeconds(bad)).toMatchObject({ ok: false });
  });

  it('orders keys by code point, as the server lists them by UTF-8 bytes', () => {
    const keys = ['b', '\u{1F600}', 'a', '\uFF5E', 'ab', ''];
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...keys].sort(compareKeys)).toEqual(byBytes);
    // JavaScript's own order puts the astral emoji (a surrogate pair) before U+FF5E.
    expect([...keys].sort()).not.toEqual(byBytes);
  });

  it('insertKey adds a key in its place once', () => {
    expect(insertKey(['a', 'c'], 'b')).toEqual(['a', 'b', 'c']);
    expect(insertKey(['a', 'c'], 'c')).toEqual(['a', 'c']);
    expect(insertKey([], 'x')).toEqual(['x']);
    expect(insertKey(['a', 'b'], 'z')).toEqual(['a', 'b', 'z']);
  });

  it('words durations and expiries', () => {
    expect(formatDuration(45_000)).toBe('45 s');
    expect(formatDuration(185_000)).toBe('3 min 5 s');
    expect(formatDuration(7_800_000)).toBe('2 h 10 min');
    expect(formatDuration(4 * 86_400_000 + 3 * 3_600_000)).toBe('4 d 3 h');
    expect(describeExpiry(null, 0)).toBe('never');
    expect(describeExpiry('2030-01-01T00:01:00.000Z', Date.parse('2030-01-01T00:00:00.000Z'))).toMatch(/\(in 1 min 0 s\)$/);
    expect(describeExpiry('2030-01-01T00:00:00.000Z', Date.parse('2030-01-01T00:00:01.000Z'))).toMatch(/\(due now\)$/);
  });

  it('describes errors in one line, with the KvError code first', () => {
    expect(describeError(new KvError('CONFLICT', 'version 3 is not 2'))).toBe('CONFLICT: version 3 is not 2');
    expect(describeError(new TypeError('bad'))).toBe('bad');
    expect(describeError('plain')).toBe('plain');
  });
});
