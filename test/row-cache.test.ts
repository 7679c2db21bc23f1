import { describe, expect, it } from 'vitest';
import { isoTime } from '../server/iso-time.js';
import { RowCache } from '../server/storage/row-cache.js';

describe('the row cache', () => {
  const sized = (entries: number, bytes: number) => {
    const cache = new RowCache<string>(entries, bytes, (row) => row.length);
    // Most cases need one namespace only.
    return {
      cache,
      set: (key: string, row: string) => cache.set('i', 'n', key, row),
      get: (key: string) => cache.get('i', 'n', key),
    };
  };

  it('keeps at most maxEntries rows, dropping first the oldest not read since it was last passed over', () => {
    const { cache, set, get } = sized(2, 1000);
    set('a', 'x');
    set('b', 'y');
    // Reading a makes b the one to go.
    expect(get('a')).toBe('x');
    set('c', 'z');
    expect([get('a'), get('b'), get('c'), cache.size]).toEqual(['x', undefined, 'z', 2]);
  });

  it('passes over a row that was read once, not forever', () => {
    const { set, get } = sized(2, 1000);
    set('a', '1');
    set('b', '2');
    get('a');
    set('c', '3'); // b goes: a was read, so the hand passes it over, and it is unread again
    expect([get('b'), get('c')]).toEqual([undefined, '3']);
    set('d', '4'); // now a goes, though c was read after it
    expect([get('a'), get('c'), get('d')]).toEqual([undefined, '3', '4']);
  });

  it('never evicts the row it is storing, even when every other row was read', () => {
    const { cache, set, get } = sized(2, 1000);
    set('a', '1');
    set('b', '2');
    get('a');
    get('b');
    set('c', '3');
    expect([get('c'), cache.size]).toEqual(['3', 2]);
  });

  it('keeps the bytes of its rows within maxBytes, and never keeps a row above a sixteenth of them', () => {
    const { cache, set, get } = sized(100, 160);
    set('big', 'x'.repeat(11));
    expect(get('big')).toBeUndefined();
    for (const key of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']) set(key, 'x'.repeat(10));
    set('i', 'x'.repeat(10));
    set('j', 'x'.repeat(10));
    // 16 rows of 10 bytes would fit; replacing a row frees its old size first.
    set('j', 'y'.repeat(10));
    expect(cache.size).toBe(10);
    for (let i = 0; i < 10; i++) set(`more${i}`, 'x'.repeat(10));
    expect(cache.size).toBe(16);
    expect(get('a')).toBeUndefined();
  });

  it('forgets deleted rows and everything on clear', () => {
    const { cache, set, get } = sized(10, 1000);
    set('a', 'x');
    set('b', 'y');
    cache.delete('i', 'n', 'a');
    expect(get('a')).toBeUndefined();
    cache.clear();
    expect([get('b'), cache.size]).toEqual([undefined, 0]);
  });

  it('keeps distinct (instance, namespace, key) triples apart, even where their names run together', () => {
    const cache = new RowCache<string>(100, 1000, (row) => row.length);
    const triples: [string, string, string][] = [
      ['a', 'b', 'c'],
      ['ab', '', 'c'],
      ['a', 'bc', ''],
      ['', 'ab', 'c'],
      ['a:1', 'b', 'c'],
      ['a', '1:b', 'c'],
    ];
    triples.forEach((triple, i) => cache.set(...triple, String(i)));
    expect(triples.map((triple) => cache.get(...triple))).toEqual(triples.map((_, i) => String(i)));
    cache.delete('a', 'b', 'c');
    expect(triples.map((triple) => cache.get(...triple))).toEqual([undefined, ...triples.slice(1).map((_, i) => String(i + 1))]);
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
