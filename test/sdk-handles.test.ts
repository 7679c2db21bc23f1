import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base64ToBytes, bytesToBase64, KvError, type NamespaceHandle } from '../sdk/index.js';
import { kvTargets, type KvApi, type OpenedKv } from './helpers/kv-targets.js';

// The same assertions run on a network client of a real server and on an embedded store.
describe.each(kvTargets({ requestTimeoutMs: 10_000 }))('$name', (target) => {
  let store: OpenedKv;
  let client: KvApi;

  beforeAll(async () => {
    store = await target.open();
    client = store.client;
  });
  afterAll(async () => {
    await store.close();
  });

  let n = 0;
  /** A namespace handle on a fresh, auto-created instance. */
  function freshNs(name = 'ns'): NamespaceHandle {
    return client.instance(`h-${++n}`, { autoCreate: true }).namespace(name);
  }

  async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
    const out: T[] = [];
    for await (const item of iterable) out.push(item);
    return out;
  }

  describe('namespace handle basics', () => {
    it('get / set / has / delete', async () => {
      const ns = freshNs();
      expect(await ns.get('k')).toBeUndefined();
      expect(await ns.has('k')).toBe(false);
      const record = await ns.set('k', { a: 1 });
      expect(record).toMatchObject({ key: 'k', namespace: 'ns', value: { a: 1 }, version: 1 });
      expect(await ns.get<{ a: number }>('k')).toEqual({ a: 1 });
      expect(await ns.has('k')).toBe(true);
      expect(await ns.getRecord('k')).toMatchObject({ id: record.id, version: 1 });
      await ns.set('null', null);
      expect(await ns.get('null')).toBeNull();
      expect(await ns.delete('k')).toBe(true);
      expect(await ns.delete('k')).toBe(false);
      expect(await ns.get('k')).toBeUndefined();
    });

    it('set with ifVersion / ifAbsent throws CONFLICT with the current record; delete with ifVersion', async () => {
      const ns = freshNs();
      const v1 = await ns.set('k', 'one');
      await expect(ns.set('k', 'two', { ifVersion: 7 })).rejects.toMatchObject({ code: 'CONFLICT', data: { current: { value: 'one' } } });
      await expect(ns.set('k', 'two', { ifAbsent: true })).rejects.toBeInstanceOf(KvError);
      expect(await ns.set('k', 'two', { ifVersion: v1.version })).toMatchObject({ version: 2 });
      await expect(ns.delete('k', { ifVersion: 1 })).rejects.toMatchObject({ code: 'CONFLICT' });
      expect(await ns.delete('k', { ifVersion: 2 })).toBe(true);
    });

    it('setnx writes only when absent', async () => {
      const ns = freshNs();
      expect(await ns.setnx('lock', 'me')).toBe(true);
      expect(await ns.setnx('lock', 'you')).toBe(false);
      expect(await ns.get('lock')).toBe('me');
      expect(await ns.setnx('lease', 'me', { ttlMs: 60_000 })).toBe(true);
      expect(await ns.ttl('lease')).toBeGreaterThan(0);
    });

    it('incr counts from 0, by any step; ttlMs applies when it creates the key; a non-number is TYPE_MISMATCH', async () => {
      const ns = freshNs();
      expect(await ns.incr('c')).toBe(1);
      expect(await ns.incr('c', 5)).toBe(6);
      expect(await ns.incr('c', -2.5)).toBe(3.5);
      expect(await ns.ttl('c')).toBeNull();
      expect(await ns.incr('window', 1, { ttlMs: 60_000 })).toBe(1);
      const ttl = await ns.ttl('window');
      expect(ttl).toBeGreaterThan(50_000);
      await ns.set('text', 'abc');
      await expect(ns.incr('text')).rejects.toMatchObject({ code: 'TYPE_MISMATCH' });
    });

    it('expire / ttl', async () => {
      const ns = freshNs();
      await ns.set('k', 1);
      expect(await ns.ttl('k')).toBeNull();
      expect(await ns.expire('k', 60_000)).toBe(true);
      expect(await ns.ttl('k')).toBeGreaterThan(50_000);
      expect(await ns.expire('k', null)).toBe(true);
      expect(await ns.ttl('k')).toBeNull();
      expect(await ns.expire('missing', 1000)).toBe(false);
      expect(await ns.ttl('missing')).toBeNull();
      await expect(ns.expire('k', -1)).rejects.toMatchObject({ code: 'INVALID_TTL' });
      await ns.set('short', 1, { ttlMs: 30 });
      await new Promise((resolve) => setTimeout(resolve, 60));
      expect(await ns.get('short')).toBeUndefined();
      expect(await ns.has('short')).toBe(false);
    });

    it('getMany / setMany accept objects, pairs, Maps and entry objects', async () => {
      const ns = freshNs();
      const records = await ns.setMany({ a: 1, b: 'two' });
      expect(records.map((r) => r.key)).toEqual(['a', 'b']);
      await ns.setMany([
        ['c', [3]],
        ['d', null],
      ]);
      await ns.setMany(new Map<string, unknown>([['e', { e: 5 }]]));
      await ns.setMany([{ key: 'f', value: 'f', ttlMs: 60_000 }], { ttlMs: 1 });
      await ns.setMany({ g: 'g' }, { ttlMs: 60_000 });
      expect(await ns.setMany({})).toEqual([]);
      expect(await ns.getMany(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'nope'])).toEqual([1, 'two', [3], null, { e: 5 }, 'f', 'g', undefined]);
      expect(await ns.ttl('f')).toBeGreaterThan(50_000);
      expect(await ns.ttl('g')).toBeGreaterThan(50_000);
      expect(await ns.getMany([])).toEqual([]);
    });

    it('count and clear', async () => {
      const ns = freshNs();
      await ns.setMany({ a: 1, b: 2, c: 3 });
      expect(await ns.count()).toBe(3);
      expect(await ns.clear()).toBe(3);
      expect(await ns.count()).toBe(0);
      expect(await ns.clear()).toBe(0);
    });

    it('handle methods throw KvError on success:false', async () => {
      const ns = client.instance(`missing-${++n}`).namespace('ns');
      await expect(ns.get('k')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
      await expect(ns.set('k', 1)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND', type: 'kvStore.set' });
      await expect(ns.incr('k')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
      await expect(ns.count()).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
      await expect(collect(ns.list())).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
      await expect(freshNs().set('k', 1, { ttlMs: 0 })).rejects.toMatchObject({ code: 'INVALID_TTL' });
    });

    it('with autoCreate, a missing instance reads as empty and the first write creates it', async () => {
      const id = `auto-${++n}`;
      const inst = client.instance(id, { autoCreate: true });
      const ns = inst.namespace('ns');
      expect(await ns.get('k')).toBeUndefined();
      expect(await ns.has('k')).toBe(false);
      expect(await ns.getMany(['a', 'b'])).toEqual([undefined, undefined]);
      expect(await ns.count()).toBe(0);
      expect(await collect(ns.list())).toEqual([]);
      expect(await inst.namespaces()).toEqual([]);
      expect(await ns.delete('k')).toBe(false);
      await expect(inst.info()).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
      await ns.set('k', 1);
      expect(await inst.info()).toMatchObject({ id, name: id });
      expect(await inst.count()).toBe(1);
      expect(inst.id).toBe(id);
    });
  });

  describe('binary values', () => {
    it('Uint8Array round-trips as bytes through set/get, getMany, list, setMany and update', async () => {
      const ns = freshNs();
      const all = Uint8Array.from({ length: 256 }, (_, i) => i);
      const record = await ns.set('all', all);
      expect(record.contentType).toBe('application/octet-stream');
      expect(record.value).toEqual(all);
      const back = await ns.get('all');
      expect(back).toBeInstanceOf(Uint8Array);
      expect(back).toEqual(all);

      await ns.set('png', new Uint8Array([0x89, 0x50, 0x4e, 0x47]), { contentType: 'image/png' });
      expect(await ns.getRecord('png')).toMatchObject({ contentType: 'image/png', value: new Uint8Array([0x89, 0x50, 0x4e, 0x47]) });
      await ns.set('empty', new Uint8Array(0));
      expect(await ns.get('empty')).toEqual(new Uint8Array(0));
      await ns.set('buffer', Buffer.from('hello'));
      expect(await ns.get('buffer')).toEqual(new Uint8Array(Buffer.from('hello')));

      await ns.setMany({ m1: new Uint8Array([1]), m2: { json: true } });
      expect(await ns.getMany(['m1', 'm2'])).toEqual([new Uint8Array([1]), { json: true }]);
      const listed = await collect(ns.entries());
      expect(Object.fromEntries(listed)['png']).toEqual(new Uint8Array([0x89, 0x50, 0x4e, 0x47]));

      // update keeps the record's binary content type.
      await ns.update('png', (bytes: Uint8Array) => Uint8Array.from([...bytes, 0x0d]), new Uint8Array());
      expect(await ns.getRecord('png')).toMatchObject({ contentType: 'image/png', value: new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d]) });

      await expect(ns.set('bad', new Uint8Array([1]), { contentType: 'application/json' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    });

    it('base64 helpers agree with Buffer for every length', () => {
      for (let length = 0; length < 70; length++) {
        const bytes = new Uint8Array(randomBytes(length));
        const text = bytesToBase64(bytes);
        expect(text).toBe(Buffer.from(bytes).toString('base64'));
        expect(base64ToBytes(text)).toEqual(bytes);
      }
      expect(() => base64ToBytes('ab$d')).toThrow(TypeError);
    });
  });

  describe('iteration', () => {
    it('list walks every page in key byte order; prefix, reverse, keysOnly, limit', async () => {
      const ns = freshNs();
      const keys = Array.from({ length: 250 }, (_, i) => `item:${String(i).padStart(3, '0')}`);
      for (let i = 0; i < keys.length; i += 100) {
        await ns.setMany(keys.slice(i, i + 100).map((key, j) => [key, i + j] as const));
      }
      await ns.setMany({ 'other:1': 'x', 'other:2': 'y' });

      const records = await collect(ns.list({ prefix: 'item:', pageSize: 7 }));
      expect(records.map((r) => r.key)).toEqual(keys);
      expect(records.map((r) => r.value)).toEqual(keys.map((_, i) => i));

      expect(await collect(ns.list({ prefix: 'item:', pageSize: 9, keysOnly: true }))).toEqual(keys);
      expect(await collect(ns.keys({ prefix: 'item:', reverse: true, pageSize: 50 }))).toEqual([...keys].reverse());
      expect(await collect(ns.keys({ prefix: 'other:' }))).toEqual(['other:1', 'other:2']);
      expect((await collect(ns.list({ pageSize: 4, limit: 10 }))).map((r) => r.key)).toEqual(keys.slice(0, 10));
      expect(await collect(ns.keys({ prefix: 'nothing' }))).toEqual([]);
      expect(await collect(ns.keys())).toHaveLength(252);
    });

    it('entries() and for await over the handle yield [key, value]', async () => {
      const ns = freshNs();
      await ns.setMany({ b: 2, a: 1, c: 3 });
      expect(await collect(ns.entries({ pageSize: 2 }))).toEqual([
        ['a', 1],
        ['b', 2],
        ['c', 3],
      ]);
      const seen: [string, unknown][] = [];
      for await (const entry of ns) seen.push(entry);
      expect(seen).toEqual([
        ['a', 1],
        ['b', 2],
        ['c', 3],
      ]);
    });

    it('breaking out of a list stops fetching pages', async () => {
      const ns = freshNs();
      await ns.setMany(Array.from({ length: 30 }, (_, i) => [`k${String(i).padStart(2, '0')}`, i] as const));
      const seen: string[] = [];
      for await (const key of ns.keys({ pageSize: 5 })) {
        seen.push(key);
        if (seen.length === 7) break;
      }
      expect(seen).toEqual(['k00', 'k01', 'k02', 'k03', 'k04', 'k05', 'k06']);
    });
  });

  describe('nested namespaces', () => {
    it('namespace(sub) is `parent/sub`, a namespace of its own', async () => {
      const inst = client.instance(`nest-${++n}`, { autoCreate: true });
      const users = inst.namespace('users');
      const prefs = users.namespace('prefs');
      const deep = prefs.namespace('ui');
      expect(prefs.name).toBe('users/prefs');
      expect(deep.name).toBe('users/prefs/ui');
      expect(deep.instanceId).toBe(inst.id);

      await users.set('u1', 'user');
      await prefs.set('u1', 'prefs');
      await deep.set('theme', 'dark');
      expect(await users.get('u1')).toBe('user');
      expect(await prefs.get('u1')).toBe('prefs');
      expect(await users.count()).toBe(1);
      expect((await inst.namespaces()).sort()).toEqual(['users', 'users/prefs', 'users/prefs/ui']);
      expect(await inst.count()).toBe(3);
      expect(await prefs.clear()).toBe(1);
      expect(await users.get('u1')).toBe('user');
      expect(await deep.get('theme')).toBe('dark');
    });
  });

  describe('update', () => {
    it('applies fn to the current value, or to the default when the key is absent', async () => {
      const ns = freshNs();
      expect(await ns.update('n', (v: number) => v + 1, 10)).toBe(11);
      expect(await ns.update('n', (v: number) => v * 2, 0)).toBe(22);
      expect(await ns.get('n')).toBe(22);
      expect(await ns.update('list', async (items: string[]) => [...items, 'x'], [])).toEqual(['x']);
      expect(await ns.getRecord('list')).toMatchObject({ version: 1 });
    });

    it('gives up after maxAttempts with the last CONFLICT', async () => {
      const ns = freshNs();
      await ns.set('k', 0);
      let calls = 0;
      // Every attempt is beaten by a write that lands between the read and the conditional write.
      const attempt = ns.update(
        'k',
        async (v: number) => {
          calls++;
          await ns.set('k', v + 100);
          return v + 1;
        },
        0,
        { maxAttempts: 3 },
      );
      await expect(attempt).rejects.toMatchObject({ code: 'CONFLICT' });
      expect(calls).toBe(3);
    });

    it('loses no update: 10 clients × 20 concurrent updates of one counter record', async () => {
      const id = `race-${++n}`;
      const clients = Array.from({ length: 10 }, () => store.connect());
      try {
        await Promise.all(
          clients.map(async (c) => {
            const ns = c.instance(id, { autoCreate: true }).namespace('counters');
            for (let i = 0; i < 20; i++) {
              await ns.update('total', (doc: { count: number; by: string[] }) => ({ count: doc.count + 1, by: [...doc.by, 'x'] }), { count: 0, by: [] });
            }
          }),
        );
        const final = await client.instance(id).namespace('counters').getRecord('total');
        expect((final?.value as { count: number }).count).toBe(200);
        expect((final?.value as { by: string[] }).by).toHaveLength(200);
        expect(final?.version).toBe(200);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    });

    it('20 connections incrementing one key concurrently reach the exact total', async () => {
      const id = `incr-${++n}`;
      await client.instance(id, { autoCreate: true }).namespace('c').set('hits', 0);
      const clients = Array.from({ length: 20 }, () => store.connect());
      try {
        await Promise.all(
          clients.map((c) => {
            const ns = c.instance(id).namespace('c');
            return Promise.all(Array.from({ length: 25 }, () => ns.incr('hits')));
          }),
        );
        expect(await client.instance(id).namespace('c').get('hits')).toBe(500);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    });
  });
});
