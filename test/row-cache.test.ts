import { describe, expect, it } from 'vitest';
import { isoTime } from '../server/iso-time.js';
import { recordKey, RowCache } from '../server/storage/row-cache.js';

describe('the row cache', () => {
  const sized = (entries: number, bytes: number) => new RowCache<string>(entries, bytes, (row) => row.length);

  it('keeps at most maxEntries rows, dropping the least recently used first', () => {
    const cache = sized(2, 1000);
    cache.set('a', 'x');
    cache.set('b', 'y');
    // Reading a makes b the least recently used.
    expect(cache.get('a')).toBe('x');
    cache.set('c', 'z');
    expect([cache.get('a'), cache.get('b'), cache.get('c'), cache.size]).toEqual(['x', undefined, 'z', 2]);
  });

  it('keeps the bytes of its rows within maxBytes, and never keeps a row above a sixteenth of them', () => {
    const cache = sized(100, 160);
    cache.set('big', 'x'.repeat(11));
    expect(cache.get('big')).toBeUndefined();
    for (const key of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']) cache.set(key, 'x'.repeat(10));
    cache.set('i', 'x'.repeat(10));
    cache.set('j', 'x'.repeat(10));
    // 16 rows of 10 bytes would fit; replacing a row frees its old size first.
    cache.set('j', 'y'.repeat(10));
    expect(cache.size).toBe(10);
    for (let i = 0; i < 10; i++) cache.set(`more${i}`, 'x'.repeat(10));
    expect(cache.size).toBe(16);
    expect(cache.get('a')).toBeUndefined();
  });

  it('forgets deleted rows and everything on clear', () => {
    const cache = sized(10, 1000);
    cache.set('a', 'x');
    cache.set('b', 'y');
    cache.delete('a');
    expect(cache.get('a')).toBeUndefined();
    cache.clear();
    expect([cache.get('b'), cache.size]).toEqual([undefined, 0]);
  });

  it('gives distinct keys to distinct (instance, namespace, key) triples', () => {
    const triples: [string, string, string][] = [
      ['a', 'b', 'c'],
      ['ab', '', 'c'],
      ['a', 'bc', ''],
      ['', 'ab', 'c'],
      ['a:1', 'b', 'c'],
      ['a', '1:b', 'c'],
    ];
    expect(new Set(triples.map((triple) => recordKey(...triple))).size).toBe(triples.length);
  });
});

describe('isoTime', () => {
  it('gives what Date gives, before and after its memo fills', () => {
    for (let i = 0; i < 10_000; i++) {
      const ms = Math.floor(Math.random() * 4e12);
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }
  });
});
