import { Buffer } from 'node:buffer';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode, ProtocolError, type KvRecord, type WatchEvent } from '../protocol/index.js';
import type { QueryCondition, QueryInput, QueryTarget, StorageEngine, StoredValue } from '../server/storage/engine.js';

/**
 * The behaviour every storage engine must show, whatever it is built on. Run it from an engine's
 * test file: `runStorageContract('sqlite :memory:', ({ now }) => openSqliteEngine(':memory:', { now }))`.
 * `open` must return a fresh, empty engine on each call, driven by the given clock.
 */
export function runStorageContract(
  name: string,
  open: (opts: { now: () => number }) => Promise<StorageEngine> | StorageEngine,
): void {
  describe(`storage contract: ${name}`, () => {
    const T0 = Date.UTC(2026, 0, 1);
    let now = T0;
    let engine: StorageEngine;
    /** Moves the engine's clock; TTLs are tested without sleeping. */
    const advance = (ms: number) => {
      now += ms;
    };
    const at = (ms: number) => new Date(ms).toISOString();

    beforeEach(async () => {
      now = T0;
      engine = await open({ now: () => now });
      await engine.createInstance({ id: 'i1', name: 'first' });
    });
    afterEach(async () => {
      await engine.close();
    });

    const set = (key: string, value: unknown, extra: { namespace?: string; ttlMs?: number } = {}) =>
      engine.set({ instanceId: 'i1', namespace: extra.namespace ?? 'ns', key, value: json(value), ...ttl(extra.ttlMs) });
    const get = (key: string, namespace = 'ns') => engine.get('i1', namespace, key);

    describe('instances', () => {
      it('creates with the given id, name and description, timestamped by the clock', async () => {
        advance(5);
        const created = await engine.createInstance({ id: 'i2', name: 'Second', description: 'about' });
        expect(created).toEqual({ id: 'i2', name: 'Second', description: 'about', createdAt: at(T0 + 5), updatedAt: at(T0 + 5) });
        expect(await engine.getInstance('i2')).toEqual(created);
      });

      it('generates distinct ids when none is given and omits a missing description', async () => {
        const a = await engine.createInstance({ name: 'same' });
        const b = await engine.createInstance({ name: 'same' });
        expect(typeof a.id).toBe('string');
        expect(a.id.length).toBeGreaterThan(0);
        expect(a.id).not.toBe(b.id);
        expect(a).not.toHaveProperty('description');
        expect(await engine.getInstance(a.id)).toEqual(a);
      });

      it('refuses a taken id with INSTANCE_EXISTS', async () => {
        await expect(engine.createInstance({ id: 'i1', name: 'again' })).rejects.toMatchObject({ code: 'INSTANCE_EXISTS' });
        expect((await engine.getInstance('i1')).name).toBe('first');
      });

      it('getInstance of a missing instance is INSTANCE_NOT_FOUND naming it', async () => {
        await expect(engine.getInstance('nope')).rejects.toMatchObject({
          code: 'INSTANCE_NOT_FOUND',
          message: "instance 'nope' not found",
        });
      });

      it('lists instances by creation time, then id', async () => {
        advance(1);
        await engine.createInstance({ id: 'b', name: 'b' });
        await engine.createInstance({ id: 'a', name: 'a' });
        advance(1);
        await engine.createInstance({ id: '0', name: '0' });
        expect((await engine.listInstances()).map((i) => i.id)).toEqual(['i1', 'a', 'b', '0']);
      });

      it('updates only the given fields and moves updatedAt', async () => {
        await engine.createInstance({ id: 'i2', name: 'n', description: 'd' });
        advance(10);
        expect(await engine.updateInstance('i2', { name: 'renamed' })).toEqual({
          id: 'i2',
          name: 'renamed',
          description: 'd',
          createdAt: at(T0),
          updatedAt: at(T0 + 10),
        });
        advance(10);
        const updated = await engine.updateInstance('i2', { description: 'new' });
        expect(updated).toMatchObject({ name: 'renamed', description: 'new', createdAt: at(T0), updatedAt: at(T0 + 20) });
        expect(await engine.getInstance('i2')).toEqual(updated);
      });

      it('deleteInstance removes the instance and its records, taking one revision', async () => {
        await set('a', 1);
        await set('b', 2, { namespace: 'other' });
        await engine.createInstance({ id: 'keep', name: 'keep' });
        await engine.set({ instanceId: 'keep', namespace: 'ns', key: 'a', value: json(1) });
        const before = await engine.currentRevision();
        await engine.deleteInstance('i1');
        expect(await engine.currentRevision()).toBe(before + 1);
        await expect(engine.getInstance('i1')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
        await engine.createInstance({ id: 'i1', name: 'reborn' });
        expect(await engine.count('i1')).toBe(0);
        expect(await get('a')).toBeNull();
        expect((await engine.get('keep', 'ns', 'a'))?.value).toBe(1);
      });

      it('deleteInstance records the expiry of keys it finds expired before its own revision', async () => {
        await set('a', 1);
        await set('short', 2, { ttlMs: 5 });
        advance(5);
        const before = await engine.currentRevision();
        await engine.deleteInstance('i1');
        expect(await engine.currentRevision()).toBe(before + 2);
        expect((await engine.stats()).expiredPending).toBe(0);
      });

      it('deleteInstance of a missing instance is INSTANCE_NOT_FOUND and takes no revision', async () => {
        await expect(engine.deleteInstance('nope')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
        expect(await engine.currentRevision()).toBe(0);
      });
    });

    describe('a missing instance', () => {
      const q = (instanceId: string): QueryInput => ({
        instanceId,
        where: [],
        orderBy: { target: { kind: 'column', column: 'key' }, direction: 'asc' },
        limit: 10,
        offset: 0,
      });
      const calls: [string, (e: StorageEngine) => Promise<unknown>][] = [
        ['get', (e) => e.get('x', 'ns', 'k')],
        ['getMany', (e) => e.getMany('x', 'ns', ['k'])],
        ['set', (e) => e.set({ instanceId: 'x', namespace: 'ns', key: 'k', value: json(1) })],
        ['setMany', (e) => e.setMany({ instanceId: 'x', namespace: 'ns', entries: [{ key: 'k', value: json(1) }] })],
        ['delete', (e) => e.delete('x', 'ns', 'k')],
        ['deleteNamespace', (e) => e.deleteNamespace('x', 'ns')],
        ['incr', (e) => e.incr({ instanceId: 'x', namespace: 'ns', key: 'k', by: 1 })],
        ['expire', (e) => e.expire('x', 'ns', 'k', 1000)],
        ['ttl', (e) => e.ttl('x', 'ns', 'k')],
        ['atomic', (e) => e.atomic({ instanceId: 'x', checks: [], ops: [{ op: 'delete', namespace: 'ns', key: 'k' }] })],
        ['list', (e) => e.list({ instanceId: 'x', namespace: 'ns', limit: 10 })],
        ['query', (e) => e.query(q('x'))],
        ['getNamespaces', (e) => e.getNamespaces('x')],
        ['count', (e) => e.count('x')],
        ['count in a namespace', (e) => e.count('x', 'ns')],
        ['stats', (e) => e.stats('x')],
        ['updateInstance', (e) => e.updateInstance('x', { name: 'n' })],
        ['deleteInstance', (e) => e.deleteInstance('x')],
      ];
      for (const [label, call] of calls) {
        it(`${label} is INSTANCE_NOT_FOUND`, async () => {
          await expect(call(engine)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND', message: "instance 'x' not found" });
          expect(await engine.currentRevision()).toBe(0);
        });
      }

      const creators: [string, (e: StorageEngine) => Promise<unknown>][] = [
        ['set', (e) => e.set({ instanceId: 'auto', namespace: 'ns', key: 'k', value: json(1), autoCreate: true })],
        [
          'setMany',
          (e) => e.setMany({ instanceId: 'auto', namespace: 'ns', entries: [{ key: 'k', value: json(1) }], autoCreate: true }),
        ],
        ['incr', (e) => e.incr({ instanceId: 'auto', namespace: 'ns', key: 'k', by: 1, autoCreate: true })],
        [
          'atomic',
          (e) =>
            e.atomic({
              instanceId: 'auto',
              checks: [{ namespace: 'ns', key: 'k', version: null }],
              ops: [{ op: 'set', namespace: 'ns', key: 'k', value: json(1) }],
              autoCreate: true,
            }),
        ],
      ];
      for (const [label, call] of creators) {
        it(`${label} with autoCreate creates it with id = name = instanceId`, async () => {
          advance(7);
          await call(engine);
          expect(await engine.getInstance('auto')).toEqual({
            id: 'auto',
            name: 'auto',
            createdAt: at(T0 + 7),
            updatedAt: at(T0 + 7),
          });
          expect((await engine.get('auto', 'ns', 'k'))?.value).toBe(1);
        });
      }

      it('autoCreate on an existing instance leaves it as it is', async () => {
        await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(1), autoCreate: true });
        expect((await engine.getInstance('i1')).name).toBe('first');
      });
    });

    describe('get and set', () => {
      it('creates a record at version 1 with a fresh id and the next revision', async () => {
        advance(3);
        const record = await set('k', { a: [1, 'two', null, true] });
        expect(record).toEqual({
          id: expect.any(String),
          instanceId: 'i1',
          namespace: 'ns',
          key: 'k',
          value: { a: [1, 'two', null, true] },
          contentType: 'application/json',
          version: 1,
          revision: 1,
          createdAt: at(T0 + 3),
          updatedAt: at(T0 + 3),
          expiresAt: null,
        } satisfies KvRecord);
        expect(await get('k')).toEqual(record);
        expect(await engine.currentRevision()).toBe(1);
      });

      it('round-trips every kind of JSON value, null included', async () => {
        const values = [null, 0, -1.5, 1e300, 'text', '', 'é中😀', true, false, [], {}, { nested: { deep: [{ x: 1 }] } }];
        for (const [i, value] of values.entries()) await set(`k${i}`, value);
        for (const [i, value] of values.entries()) expect((await get(`k${i}`))?.value).toEqual(value);
      });

      it('stores binary values as bytes and returns padded base64 with the content type', async () => {
        const record = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'b', value: bin([0, 1, 254, 255], 'image/png') });
        expect(record).toMatchObject({ value: 'AAH+/w==', contentType: 'image/png' });
        expect(await get('b')).toEqual(record);
        const empty = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'e', value: bin([]) });
        expect(empty).toMatchObject({ value: '', contentType: 'application/octet-stream' });
        expect((await get('e'))?.value).toBe('');
      });

      it('replaces the whole record: version +1, same id and createdAt, updatedAt and revision move', async () => {
        const first = await set('k', 1, { ttlMs: 60_000 });
        await set('other', 0);
        advance(100);
        const second = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: bin([1]) });
        expect(second).toEqual({
          ...first,
          value: 'AQ==',
          contentType: 'application/octet-stream',
          version: 2,
          revision: 3,
          updatedAt: at(T0 + 100),
          expiresAt: null,
        });
        const third = await set('k', 'back to json');
        expect(third).toMatchObject({ id: first.id, value: 'back to json', contentType: 'application/json', version: 3 });
      });

      it('returns null for an absent key', async () => {
        expect(await get('missing')).toBeNull();
      });

      it('keeps instances, namespaces and differently cased keys apart', async () => {
        await engine.createInstance({ id: 'i2', name: 'second' });
        await set('k', 'ns');
        await set('k', 'other', { namespace: 'other' });
        await set('K', 'upper');
        await engine.set({ instanceId: 'i2', namespace: 'ns', key: 'k', value: json('i2') });
        expect((await get('k'))?.value).toBe('ns');
        expect((await get('k', 'other'))?.value).toBe('other');
        expect((await get('K'))?.value).toBe('upper');
        expect((await engine.get('i2', 'ns', 'k'))?.value).toBe('i2');
        expect(await engine.get('i2', 'ns', 'K')).toBeNull();
      });

      it('ifAbsent writes an absent key and refuses an existing one with CONFLICT and the current record', async () => {
        const created = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(1), ifAbsent: true });
        expect(created.version).toBe(1);
        await expect(
          engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(2), ifAbsent: true }),
        ).rejects.toMatchObject({ code: 'CONFLICT', data: { current: created } });
        expect(await get('k')).toEqual(created);
        expect(await engine.currentRevision()).toBe(1);
      });

      it('ifVersion writes on a match and refuses a mismatch or an absent key with CONFLICT', async () => {
        const v1 = await set('k', 1);
        const v2 = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(2), ifVersion: 1 });
        expect(v2).toMatchObject({ version: 2, value: 2 });
        await expect(
          engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(3), ifVersion: v1.version }),
        ).rejects.toMatchObject({ code: 'CONFLICT', data: { current: v2 } });
        await expect(
          engine.set({ instanceId: 'i1', namespace: 'ns', key: 'absent', value: json(3), ifVersion: 1 }),
        ).rejects.toMatchObject({ code: 'CONFLICT', data: { current: null } });
        expect(await get('k')).toEqual(v2);
        expect(await get('absent')).toBeNull();
        expect(await engine.currentRevision()).toBe(2);
      });
    });

    describe('getMany', () => {
      it('answers in the order asked, with null where absent or expired', async () => {
        const a = await set('a', 1);
        const c = await set('c', 3);
        await set('gone', 0, { ttlMs: 10 });
        advance(10);
        expect(await engine.getMany('i1', 'ns', ['c', 'b', 'a', 'gone', 'c'])).toEqual([c, null, a, null, c]);
      });
    });

    describe('setMany', () => {
      it('writes every entry with consecutive revisions in entry order', async () => {
        await set('x', 0);
        await set('b', 'old');
        const records = await engine.setMany({
          instanceId: 'i1',
          namespace: 'ns',
          entries: [
            { key: 'c', value: json(3) },
            { key: 'a', value: json(1), ttlMs: 500 },
            { key: 'b', value: bin([7]) },
          ],
        });
        expect(records.map((r) => [r.key, r.revision, r.version])).toEqual([
          ['c', 3, 1],
          ['a', 4, 1],
          ['b', 5, 2],
        ]);
        expect(records[1]?.expiresAt).toBe(at(T0 + 500));
        expect(await engine.getMany('i1', 'ns', ['c', 'a', 'b'])).toEqual(records);
        expect(await engine.currentRevision()).toBe(5);
      });

      it('writes a large batch whole: every record, its change log entry and its event, in entry order', async () => {
        // More entries than an engine may write per statement (SQLite: 32), and not a multiple of it.
        const keys = Array.from({ length: 75 }, (_, i) => `k${String(74 - i).padStart(2, '0')}`);
        await engine.setMany({ instanceId: 'i1', namespace: 'ns', entries: keys.slice(0, 40).map((key) => ({ key, value: json('old') })) });
        const events: WatchEvent[] = [];
        const stop = engine.onCommit((changes) => events.push(...changes));
        // Every third value binary, every fifth with a TTL: each row's columns in their places.
        const records = await engine.setMany({
          instanceId: 'i1',
          namespace: 'ns',
          entries: keys.map((key, i) => ({ key, value: i % 3 === 0 ? bin([i]) : json({ i }), ...(i % 5 === 0 && { ttlMs: 1000 + i }) })),
        });
        stop();
        expect(records.map((r) => [r.key, r.value, r.contentType, r.expiresAt, r.revision, r.version])).toEqual(
          keys.map((key, i) => [
            key,
            i % 3 === 0 ? Buffer.from([i]).toString('base64') : { i },
            i % 3 === 0 ? 'application/octet-stream' : 'application/json',
            i % 5 === 0 ? at(T0 + 1000 + i) : null,
            41 + i,
            i < 40 ? 2 : 1,
          ]),
        );
        expect(await engine.getMany('i1', 'ns', keys)).toEqual(records);
        // A list page reads the rows themselves (an engine's row cache does not serve pages).
        const byKey = (a: KvRecord, b: KvRecord) => (a.key < b.key ? -1 : 1);
        expect((await engine.list({ instanceId: 'i1', namespace: 'ns', limit: 100 })).records).toEqual([...records].sort(byKey));
        expect(await engine.changesSince('i1', 40, 115, 1000)).toEqual(
          records.map((record) => ({ kind: 'set', instanceId: 'i1', namespace: 'ns', key: record.key, record, revision: record.revision })),
        );
        expect(events.map((e) => e.record)).toEqual(records);
        expect(await engine.count('i1', 'ns')).toBe(75);
      });
    });

    describe('setEach', () => {
      it('sets each entry on its own, in order: a failed condition fails its entry alone, the others take consecutive revisions', async () => {
        const taken = await set('taken', 'old');
        const results = await engine.setEach({
          instanceId: 'i1',
          namespace: 'ns',
          entries: [
            { key: 'a', value: json(1) },
            { key: 'taken', value: json('new'), ifAbsent: true },
            { key: 'a', value: bin([2]), ttlMs: 500 },
          ],
        });
        expect(results.map((r) => r.success)).toEqual([true, false, true]);
        expect(results[1]).toMatchObject({ success: false, code: 'CONFLICT', data: { current: taken } });
        const [first, , second] = results.map((r) => (r.success ? r.record : null));
        expect([first?.revision, first?.version, second?.revision, second?.version]).toEqual([2, 1, 3, 2]);
        expect(second?.expiresAt).toBe(at(T0 + 500));
        expect(await get('a')).toEqual(second);
        expect(await get('taken')).toEqual(taken);
        expect(await engine.currentRevision()).toBe(3);
      });

      it('records the expiry an entry finds before its write; a failed condition takes back the expiry it found', async () => {
        await engine.setMany({ instanceId: 'i1', namespace: 'ns', entries: [{ key: 'gone', value: json(0), ttlMs: 5 }, { key: 'lapsed', value: json(0), ttlMs: 5 }] });
        advance(10);
        const events: WatchEvent[] = [];
        const stop = engine.onCommit((changes) => events.push(...changes));
        const results = await engine.setEach({
          instanceId: 'i1',
          namespace: 'ns',
          entries: [
            { key: 'gone', value: json(1) },
            { key: 'lapsed', value: json(1), ifVersion: 1 },
            { key: 'c', value: json(3) },
          ],
        });
        stop();
        expect(results).toMatchObject([
          { success: true, record: { key: 'gone', version: 1, revision: 4 } },
          { success: false, code: 'CONFLICT', data: { current: null } },
          { success: true, record: { key: 'c', version: 1, revision: 5 } },
        ]);
        // The first entry's expiry and write stay; the second's expiry went with its savepoint.
        expect(events.map((e) => [e.kind, e.key, e.revision])).toEqual([
          ['expire', 'gone', 3],
          ['set', 'gone', 4],
          ['set', 'c', 5],
        ]);
        expect(await engine.currentRevision()).toBe(5);
        expect(await get('lapsed')).toBeNull();
      });

      it('answers each entry INSTANCE_NOT_FOUND for a missing instance, and creates it with autoCreate', async () => {
        const entries = [{ key: 'k', value: json(1) }];
        expect(await engine.setEach({ instanceId: 'x', namespace: 'ns', entries })).toMatchObject([{ success: false, code: 'INSTANCE_NOT_FOUND' }]);
        expect(await engine.currentRevision()).toBe(0);
        expect(await engine.setEach({ instanceId: 'x', namespace: 'ns', entries, autoCreate: true })).toMatchObject([{ success: true, record: { key: 'k', version: 1 } }]);
      });

      it('under an idempotency claim, keeps the results of all entries together: a repeat returns them and writes nothing', async () => {
        await set('taken', 0);
        const input = { instanceId: 'i1', namespace: 'ns', entries: [{ key: 'a', value: json(1) }, { key: 'taken', value: json(1), ifVersion: 7 }] };
        const options = { idempotency: { owner: '', key: 'each-1', fingerprint: 'f1' } };
        const first = await engine.setEach(input, options);
        const revision = await engine.currentRevision();
        advance(10);
        // The repeat's results are read back from their JSON text: compare them as such.
        expect(JSON.parse(JSON.stringify(await engine.setEach(input, options)))).toEqual(JSON.parse(JSON.stringify(first)));
        expect(await engine.currentRevision()).toBe(revision);
      });

      it("keeps a refused entry's failure with the others: a repeat returns it even if the entry would now be written", async () => {
        const refused = new ProtocolError(ErrorCode.VALUE_TOO_LARGE, 'value is larger than 10 bytes of JSON', { maxValueBytes: 10 });
        const options = { idempotency: { owner: '', key: 'each-2', fingerprint: 'f2' } };
        const first = await engine.setEach({ instanceId: 'i1', namespace: 'ns', entries: [{ refused }, { key: 'b', value: json(2) }] }, options);
        expect(first).toMatchObject([{ success: false, code: 'VALUE_TOO_LARGE', error: refused.message, data: { maxValueBytes: 10 } }, { success: true }]);
        // As if the limit had been raised since: the same request, now with nothing to refuse.
        const repeat = await engine.setEach({ instanceId: 'i1', namespace: 'ns', entries: [{ key: 'a', value: json(1) }, { key: 'b', value: json(2) }] }, options);
        expect(JSON.parse(JSON.stringify(repeat))).toEqual(JSON.parse(JSON.stringify(first)));
        expect(await get('a')).toBeNull();
      });
    });

    describe('delete', () => {
      it('deletes a live key, taking a revision, and reports false (taking none) for an absent one', async () => {
        await set('k', 1);
        expect(await engine.delete('i1', 'ns', 'k')).toBe(true);
        expect(await engine.currentRevision()).toBe(2);
        expect(await get('k')).toBeNull();
        expect(await engine.delete('i1', 'ns', 'k')).toBe(false);
        expect(await engine.currentRevision()).toBe(2);
      });

      it('ifVersion deletes on a match and refuses a mismatch or an absent key with CONFLICT', async () => {
        const record = await set('k', 1);
        await expect(engine.delete('i1', 'ns', 'k', 2)).rejects.toMatchObject({ code: 'CONFLICT', data: { current: record } });
        await expect(engine.delete('i1', 'ns', 'absent', 1)).rejects.toMatchObject({ code: 'CONFLICT', data: { current: null } });
        expect(await get('k')).toEqual(record);
        expect(await engine.delete('i1', 'ns', 'k', 1)).toBe(true);
        expect(await get('k')).toBeNull();
      });

      it('a recreated key starts again at version 1 with a new id', async () => {
        const first = await set('k', 1);
        await engine.delete('i1', 'ns', 'k');
        advance(1);
        const again = await set('k', 1);
        expect(again.version).toBe(1);
        expect(again.id).not.toBe(first.id);
        expect(again.createdAt).toBe(at(T0 + 1));
      });
    });

    describe('deleteNamespace', () => {
      it('deletes the live keys of one namespace with one revision, after recording expired keys, and returns their count', async () => {
        await set('a', 1);
        await set('b', 2);
        await set('c', 3, { ttlMs: 5 });
        await set('a', 1, { namespace: 'keep' });
        advance(5);
        const before = await engine.currentRevision();
        expect(await engine.deleteNamespace('i1', 'ns')).toBe(2);
        // One revision for the expiry of 'c' the delete found, then one for the namespace.
        expect(await engine.currentRevision()).toBe(before + 2);
        expect((await engine.stats('i1')).expiredPending).toBe(0);
        expect(await engine.count('i1', 'ns')).toBe(0);
        expect((await get('a', 'keep'))?.value).toBe(1);
        expect(await engine.getNamespaces('i1')).toEqual(['keep']);
      });

      it('returns 0 and takes no revision of its own when nothing live is deleted', async () => {
        await set('gone', 1, { ttlMs: 1 });
        advance(1);
        const before = await engine.currentRevision();
        expect(await engine.deleteNamespace('i1', 'empty')).toBe(0);
        expect(await engine.currentRevision()).toBe(before);
        // Only the expiry of the key it found expired takes a revision.
        expect(await engine.deleteNamespace('i1', 'ns')).toBe(0);
        expect(await engine.currentRevision()).toBe(before + 1);
      });
    });

    describe('incr', () => {
      const incr = (key: string, by: number, ttlMs?: number) =>
        engine.incr({ instanceId: 'i1', namespace: 'ns', key, by, ...ttl(ttlMs) });

      it('creates a missing key at `by`, then adds to it, one version each', async () => {
        const created = await incr('n', 5);
        expect(created).toMatchObject({ value: 5, version: 1, revision: 1, contentType: 'application/json', expiresAt: null });
        expect(await incr('n', -7.5)).toMatchObject({ value: -2.5, version: 2, revision: 2, id: created.id });
        expect((await get('n'))?.value).toBe(-2.5);
      });

      it('applies ttlMs only when it creates the key and keeps the expiry afterwards', async () => {
        const created = await incr('n', 1, 1000);
        expect(created.expiresAt).toBe(at(T0 + 1000));
        advance(400);
        const next = await incr('n', 1, 99_999);
        expect(next).toMatchObject({ value: 2, expiresAt: at(T0 + 1000), updatedAt: at(T0 + 400) });
        advance(600);
        expect(await incr('n', 1)).toMatchObject({ value: 1, version: 1, expiresAt: null });
      });

      it('is TYPE_MISMATCH on a value that is not a number, writing nothing', async () => {
        await set('s', '5');
        await set('o', { n: 1 });
        await set('z', null);
        await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'b', value: bin([1]) });
        for (const key of ['s', 'o', 'z', 'b']) {
          await expect(incr(key, 1)).rejects.toMatchObject({ code: 'TYPE_MISMATCH' });
        }
        expect(await engine.currentRevision()).toBe(4);
        expect((await get('s'))?.version).toBe(1);
      });

      it('refuses a result that is not a finite number with VALIDATION_ERROR', async () => {
        await set('big', Number.MAX_VALUE);
        await expect(incr('big', Number.MAX_VALUE)).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
        expect((await get('big'))?.value).toBe(Number.MAX_VALUE);
      });
    });

    describe('expire and ttl', () => {
      it('sets an expiry as a write: version +1, new revision, updatedAt moves', async () => {
        const record = await set('k', 1);
        advance(10);
        expect(await engine.expire('i1', 'ns', 'k', 5000)).toBe(true);
        expect(await get('k')).toEqual({
          ...record,
          version: 2,
          revision: 2,
          updatedAt: at(T0 + 10),
          expiresAt: at(T0 + 10 + 5000),
        });
        expect(await engine.ttl('i1', 'ns', 'k')).toEqual({ exists: true, ttlMs: 5000 });
        advance(1234);
        expect(await engine.ttl('i1', 'ns', 'k')).toEqual({ exists: true, ttlMs: 5000 - 1234 });
      });

      it('removes an expiry with null', async () => {
        await set('k', 1, { ttlMs: 100 });
        expect(await engine.expire('i1', 'ns', 'k', null)).toBe(true);
        expect(await get('k')).toMatchObject({ version: 2, expiresAt: null });
        expect(await engine.ttl('i1', 'ns', 'k')).toEqual({ exists: true, ttlMs: null });
        advance(1000);
        expect((await get('k'))?.value).toBe(1);
      });

      it('is false for an absent or expired key', async () => {
        expect(await engine.expire('i1', 'ns', 'absent', 100)).toBe(false);
        await set('k', 1, { ttlMs: 100 });
        advance(100);
        expect(await engine.expire('i1', 'ns', 'k', 100)).toBe(false);
        expect(await get('k')).toBeNull();
      });

      it('ttl of an absent key or one without expiry', async () => {
        expect(await engine.ttl('i1', 'ns', 'absent')).toEqual({ exists: false, ttlMs: null });
        await set('k', 1);
        expect(await engine.ttl('i1', 'ns', 'k')).toEqual({ exists: true, ttlMs: null });
      });
    });

    describe('expired keys', () => {
      it('vanish from every read the moment expiresAt is reached, swept or not', async () => {
        await set('live', 1);
        const record = await set('k', 1, { ttlMs: 1000, namespace: 'short' });
        expect(record.expiresAt).toBe(at(T0 + 1000));
        advance(999);
        expect(await get('k', 'short')).not.toBeNull();
        expect(await engine.ttl('i1', 'short', 'k')).toEqual({ exists: true, ttlMs: 1 });
        advance(1);
        expect(await get('k', 'short')).toBeNull();
        expect(await engine.getMany('i1', 'short', ['k'])).toEqual([null]);
        expect(await engine.ttl('i1', 'short', 'k')).toEqual({ exists: false, ttlMs: null });
        expect((await engine.list({ instanceId: 'i1', namespace: 'short', limit: 10 })).records).toEqual([]);
        expect(await engine.count('i1')).toBe(1);
        expect(await engine.count('i1', 'short')).toBe(0);
        expect(await engine.getNamespaces('i1')).toEqual(['ns']);
        const all = await engine.query({
          instanceId: 'i1',
          where: [],
          orderBy: { target: { kind: 'column', column: 'key' }, direction: 'asc' },
          limit: 10,
          offset: 0,
        });
        expect(all.records.map((r) => r.key)).toEqual(['live']);
        expect(all.total).toBe(1);
        expect(await engine.stats()).toMatchObject({ records: 1, namespaces: 1 });
      });

      it('are absent for conditions: ifAbsent passes, ifVersion fails with current null, a null check passes', async () => {
        await set('k', 1, { ttlMs: 10 });
        await set('j', 1, { ttlMs: 10 });
        advance(10);
        await expect(
          engine.set({ instanceId: 'i1', namespace: 'ns', key: 'j', value: json(2), ifVersion: 1 }),
        ).rejects.toMatchObject({ code: 'CONFLICT', data: { current: null } });
        await expect(engine.delete('i1', 'ns', 'j', 1)).rejects.toMatchObject({ code: 'CONFLICT', data: { current: null } });
        const result = await engine.atomic({
          instanceId: 'i1',
          checks: [{ namespace: 'ns', key: 'j', version: null }],
          ops: [{ op: 'set', namespace: 'ns', key: 'other', value: json(1) }],
        });
        expect(result.records[0]?.version).toBe(1);
        const fresh = await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(2), ifAbsent: true });
        expect(fresh.version).toBe(1);
      });

      it('a write finds its key expired: the expiry takes a revision, then the key is created afresh', async () => {
        const old = await set('k', 1, { ttlMs: 10 });
        advance(10);
        const fresh = await set('k', 2);
        expect(fresh).toMatchObject({ version: 1, revision: 3, createdAt: at(T0 + 10), expiresAt: null });
        expect(fresh.id).not.toBe(old.id);
        expect(await engine.currentRevision()).toBe(3);
      });

      it('incr on an expired key starts again at `by`', async () => {
        await engine.incr({ instanceId: 'i1', namespace: 'ns', key: 'n', by: 10, ttlMs: 10 });
        advance(10);
        expect(await engine.incr({ instanceId: 'i1', namespace: 'ns', key: 'n', by: 1 })).toMatchObject({
          value: 1,
          version: 1,
          revision: 3,
        });
      });

      it('delete of an expired key is false; only the expiry takes a revision', async () => {
        await set('k', 1, { ttlMs: 10 });
        advance(10);
        expect(await engine.delete('i1', 'ns', 'k')).toBe(false);
        expect(await engine.currentRevision()).toBe(2);
      });

      it('setMany records the expiries it finds before its own consecutive revisions', async () => {
        await set('a', 1, { ttlMs: 10 });
        await set('c', 1, { ttlMs: 10 });
        advance(10);
        const records = await engine.setMany({
          instanceId: 'i1',
          namespace: 'ns',
          entries: ['a', 'b', 'c'].map((key) => ({ key, value: json(key) })),
        });
        expect(records.map((r) => [r.key, r.revision, r.version])).toEqual([
          ['a', 5, 1],
          ['b', 6, 1],
          ['c', 7, 1],
        ]);
      });

      it('atomic records the expiries of its keys before its own revisions', async () => {
        await set('a', 1, { ttlMs: 10 });
        advance(10);
        const result = await engine.atomic({
          instanceId: 'i1',
          checks: [],
          ops: [
            { op: 'set', namespace: 'ns', key: 'b', value: json(1) },
            { op: 'incr', namespace: 'ns', key: 'a', by: 2 },
          ],
        });
        expect(result.records.map((r) => r?.revision)).toEqual([3, 4]);
        expect(result.revision).toBe(4);
      });
    });

    describe('sweepExpired', () => {
      it('deletes up to `limit` expired keys, each taking a revision', async () => {
        for (const key of ['a', 'b', 'c']) await set(key, 1, { ttlMs: 10 });
        await set('live', 1, { ttlMs: 1000 });
        await set('forever', 1);
        expect(await engine.sweepExpired(10)).toBe(0);
        advance(10);
        expect(await engine.stats()).toMatchObject({ records: 2, expiredPending: 3 });
        expect(await engine.sweepExpired(2)).toBe(2);
        expect(await engine.currentRevision()).toBe(7);
        expect(await engine.stats()).toMatchObject({ records: 2, expiredPending: 1 });
        expect(await engine.sweepExpired(10)).toBe(1);
        expect(await engine.currentRevision()).toBe(8);
        expect(await engine.sweepExpired(10)).toBe(0);
        expect(await engine.stats()).toMatchObject({ records: 2, expiredPending: 0 });
        expect(await engine.count('i1')).toBe(2);
      });
    });

    describe('atomic', () => {
      it('applies checks then ops in order, one record (or null for delete) per op', async () => {
        const a = await set('a', 1);
        await set('gone', 1);
        const result = await engine.atomic({
          instanceId: 'i1',
          checks: [
            { namespace: 'ns', key: 'a', version: 1 },
            { namespace: 'ns', key: 'new', version: null },
          ],
          ops: [
            { op: 'set', namespace: 'ns', key: 'a', value: json('A'), ttlMs: 50 },
            { op: 'delete', namespace: 'ns', key: 'gone' },
            { op: 'incr', namespace: 'other', key: 'n', by: 3 },
            { op: 'set', namespace: 'ns', key: 'new', value: bin([9]) },
          ],
        });
        expect(result.revision).toBe(6);
        expect(result.records).toEqual([
          { ...a, value: 'A', version: 2, revision: 3, expiresAt: at(T0 + 50) },
          null,
          expect.objectContaining({ namespace: 'other', key: 'n', value: 3, version: 1, revision: 5 }),
          expect.objectContaining({ key: 'new', value: 'CQ==', contentType: 'application/octet-stream', revision: 6 }),
        ]);
        expect(await get('gone')).toBeNull();
        expect(await get('a')).toEqual(result.records[0]);
      });

      it('refuses with CONFLICT and the first failing check, writing nothing', async () => {
        const a = await set('a', 1);
        const b = await set('b', 1);
        const attempt = engine.atomic({
          instanceId: 'i1',
          checks: [
            { namespace: 'ns', key: 'a', version: 1 },
            { namespace: 'ns', key: 'b', version: null },
            { namespace: 'ns', key: 'c', version: 1 },
          ],
          ops: [{ op: 'set', namespace: 'ns', key: 'a', value: json(2) }],
        });
        await expect(attempt).rejects.toMatchObject({ code: 'CONFLICT', data: { current: b } });
        await expect(
          engine.atomic({
            instanceId: 'i1',
            checks: [{ namespace: 'ns', key: 'missing', version: 4 }],
            ops: [{ op: 'delete', namespace: 'ns', key: 'a' }],
          }),
        ).rejects.toMatchObject({ code: 'CONFLICT', data: { current: null } });
        expect(await get('a')).toEqual(a);
        expect(await engine.currentRevision()).toBe(2);
      });

      it('is all or nothing when an op fails', async () => {
        await set('text', 'not a number');
        await set('kept', 1);
        await expect(
          engine.atomic({
            instanceId: 'i1',
            checks: [{ namespace: 'ns', key: 'kept', version: 1 }],
            ops: [
              { op: 'set', namespace: 'ns', key: 'first', value: json(1) },
              { op: 'delete', namespace: 'ns', key: 'kept' },
              { op: 'incr', namespace: 'ns', key: 'text', by: 1 },
            ],
          }),
        ).rejects.toMatchObject({ code: 'TYPE_MISMATCH' });
        expect(await get('first')).toBeNull();
        expect((await get('kept'))?.value).toBe(1);
        expect(await engine.currentRevision()).toBe(2);
        // The next write continues the counter without a gap.
        expect((await set('after', 1)).revision).toBe(3);
      });

      it('returns the current revision when nothing changed', async () => {
        await set('a', 1);
        const result = await engine.atomic({ instanceId: 'i1', checks: [], ops: [{ op: 'delete', namespace: 'ns', key: 'absent' }] });
        expect(result).toEqual({ revision: 1, records: [null] });
      });
    });

    describe('list', () => {
      const list = (input: { prefix?: string; after?: string; limit?: number; reverse?: boolean } = {}) =>
        engine.list({ instanceId: 'i1', namespace: 'ns', limit: input.limit ?? 100, ...input });
      const keysOf = async (input: Parameters<typeof list>[0] = {}) => (await list(input)).records.map((r) => r.key);

      it('orders keys by UTF-8 bytes (code points), not UTF-16 units, and reverse flips it', async () => {
        // U+FF5A sorts before U+1F600 by code point, after it by UTF-16 code unit.
        const keys = ['😀', 'ｚ', 'é', 'a', 'B', '中', 'a\u0000', 'ab', '~', 'A'];
        for (const key of keys) await set(key, key);
        const expected = ['A', 'B', 'a', 'a\u0000', 'ab', '~', 'é', '中', 'ｚ', '😀'];
        expect(await keysOf()).toEqual(expected);
        expect(await keysOf({ reverse: true })).toEqual([...expected].reverse());
      });

      it('returns full records of live keys only, in one namespace', async () => {
        const a = await set('a', 1);
        await set('b', 2, { namespace: 'other' });
        await set('c', 3, { ttlMs: 5 });
        advance(5);
        expect(await list()).toEqual({ records: [a], more: false });
      });

      it('pages with limit, `more` and `after`, each key exactly once, forwards and backwards', async () => {
        const keys = Array.from({ length: 7 }, (_, i) => `k${i}`);
        for (const key of keys) await set(key, key);
        for (const reverse of [false, true]) {
          const seen: string[] = [];
          let after: string | undefined;
          for (;;) {
            const page = await list({ limit: 3, reverse, ...(after !== undefined ? { after } : {}) });
            seen.push(...page.records.map((r) => r.key));
            if (!page.more) break;
            after = page.records.at(-1)!.key;
          }
          expect(seen).toEqual(reverse ? [...keys].reverse() : keys);
        }
      });

      it('says no more when a page ends exactly at the last key', async () => {
        for (const key of ['a', 'b', 'c', 'd']) await set(key, 1);
        expect(await list({ limit: 2 })).toMatchObject({ more: true });
        expect(await list({ limit: 2, after: 'b' })).toMatchObject({ more: false });
        expect(await list({ limit: 4 })).toMatchObject({ more: false });
        expect((await list({ after: 'd' })).records).toEqual([]);
        expect(await keysOf({ after: 'b', reverse: true })).toEqual(['a']);
        expect(await keysOf({ after: 'bb' })).toEqual(['c', 'd']);
      });

      it('matches prefixes literally: %, _, \\, * and ? are not wildcards, case is kept', async () => {
        const keys = ['100%', '100%x', '1000', 'a_b', 'a_bc', 'axb', 'a\\b', 'a\\\\b', 'ab', 'AB', 'Ab', 'f*', 'fo', 'f?', 'user:1', 'user:10', 'user;'];
        for (const key of keys) await set(key, 1);
        expect(await keysOf({ prefix: '100%' })).toEqual(['100%', '100%x']);
        expect(await keysOf({ prefix: 'a_' })).toEqual(['a_b', 'a_bc']);
        expect(await keysOf({ prefix: 'a\\' })).toEqual(['a\\\\b', 'a\\b']);
        expect(await keysOf({ prefix: 'A' })).toEqual(['AB', 'Ab']);
        expect(await keysOf({ prefix: 'ab' })).toEqual(['ab']);
        expect(await keysOf({ prefix: 'f*' })).toEqual(['f*']);
        expect(await keysOf({ prefix: 'f?' })).toEqual(['f?']);
        expect(await keysOf({ prefix: 'user:' })).toEqual(['user:1', 'user:10']);
        expect(await keysOf({ prefix: 'user:', reverse: true })).toEqual(['user:10', 'user:1']);
        expect(await keysOf({ prefix: 'nothing' })).toEqual([]);
      });

      it('bounds prefixes correctly at the top of the code space and around the surrogates', async () => {
        const max = String.fromCodePoint(0x10ffff);
        const keys = ['\uD7FF', '\uD7FFz', '\uE000', `a${max}`, `a${max}${max}x`, 'b', max, `${max}${max}`, '😀', '😀x', '😁'];
        for (const key of keys) await set(key, 1);
        expect(await keysOf({ prefix: '\uD7FF' })).toEqual(['\uD7FF', '\uD7FFz']);
        expect(await keysOf({ prefix: `a${max}` })).toEqual([`a${max}`, `a${max}${max}x`]);
        expect(await keysOf({ prefix: max })).toEqual([max, `${max}${max}`]);
        expect(await keysOf({ prefix: '😀' })).toEqual(['😀', '😀x']);
      });

      it('treats quotes and SQL in keys, prefixes and cursors as data', async () => {
        const hostile = ["it's", "x'); DROP TABLE records; --", 'say "hi"', 'back\\slash'];
        for (const key of hostile) await set(key, key);
        expect(await keysOf({ prefix: "x'); DROP" })).toEqual(["x'); DROP TABLE records; --"]);
        expect(await keysOf({ after: "it's" })).toEqual(['say "hi"', "x'); DROP TABLE records; --"]);
        expect(await engine.count('i1')).toBe(4);
      });

      it('combines prefix and after', async () => {
        for (const key of ['p1', 'p2', 'p3', 'q']) await set(key, 1);
        expect(await keysOf({ prefix: 'p', after: 'p1' })).toEqual(['p2', 'p3']);
        expect(await keysOf({ prefix: 'p', after: 'p3', reverse: true })).toEqual(['p2', 'p1']);
        expect(await keysOf({ prefix: 'p', after: 'a' })).toEqual(['p1', 'p2', 'p3']);
      });
    });

    describe('query', () => {
      const byKey: QueryInput['orderBy'] = { target: { kind: 'column', column: 'key' }, direction: 'asc' };
      const col = (column: Extract<QueryTarget, { kind: 'column' }>['column']): QueryTarget => ({ kind: 'column', column });
      const val = (...path: string[]): QueryTarget => ({ kind: 'value', path });
      const where = (target: QueryTarget, operator: QueryCondition['operator'], operand: unknown): QueryCondition => ({
        target,
        operator,
        operand,
      });
      const query = (input: Partial<QueryInput>) =>
        engine.query({ instanceId: 'i1', where: [], orderBy: byKey, limit: 100, offset: 0, ...input });
      const keys = async (...conditions: QueryCondition[]) => (await query({ where: conditions })).records.map((r) => r.key);

      beforeEach(async () => {
        await set('n1', { n: 1, s: 'apple', b: true, z: null, tags: ['red', 'green', 3, true, null], o: { x: 1 } });
        await set('n2', { n: 2.5, s: 'banana', b: false, tags: ['blue'], o: { x: 2 }, list: [{ id: 'a' }] });
        await set('n3', { n: 10, s: 'Cherry', tags: [], o: { x: 1 } });
        await set('str', 'plain string');
        await set('num', 7);
        await set('nul', null);
        await engine.set({ instanceId: 'i1', namespace: 'ns', key: 'bin', value: bin([1, 2, 3]) });
        await set('x1', { n: '10', s: 5 }, { namespace: 'other' });
      });

      it('without conditions returns every live record of the instance ordered by key, with total', async () => {
        const result = await query({});
        expect(result.records.map((r) => r.key)).toEqual(['bin', 'n1', 'n2', 'n3', 'nul', 'num', 'str', 'x1']);
        expect(result.total).toBe(8);
        expect(result.records[1]).toEqual(await get('n1'));
        expect((await query({ namespace: 'other' })).records.map((r) => r.key)).toEqual(['x1']);
      });

      it('applies limit and offset but counts total over all matches', async () => {
        expect(await query({ limit: 2, offset: 1 })).toMatchObject({ total: 8, records: [{ key: 'n1' }, { key: 'n2' }] });
        expect(await query({ limit: 0 })).toEqual({ records: [], total: 8 });
        expect(await query({ offset: 100 })).toEqual({ records: [], total: 8 });
      });

      it('compares columns: key, namespace, version, createdAt, updatedAt', async () => {
        expect(await keys(where(col('key'), 'eq', 'n2'))).toEqual(['n2']);
        expect(await keys(where(col('key'), 'gt', 'nul'))).toEqual(['num', 'str', 'x1']);
        expect(await keys(where(col('key'), 'lte', 'n1'))).toEqual(['bin', 'n1']);
        expect(await keys(where(col('namespace'), 'neq', 'ns'))).toEqual(['x1']);
        advance(50);
        await set('n2', { n: 2.5 });
        expect(await keys(where(col('version'), 'gte', 2))).toEqual(['n2']);
        expect(await keys(where(col('version'), 'lt', 2), where(col('key'), 'startsWith', 'n'))).toEqual(['n1', 'n3', 'nul', 'num']);
        expect(await keys(where(col('updatedAt'), 'gt', T0))).toEqual(['n2']);
        expect(await keys(where(col('createdAt'), 'gt', T0))).toEqual([]);
        expect(await keys(where(col('createdAt'), 'eq', T0), where(col('key'), 'lt', 'n2'))).toEqual(['bin', 'n1']);
      });

      it('tests substrings of key and namespace literally (contains, startsWith, endsWith)', async () => {
        await set('50%_off', 1);
        await set('50xxoff', 1);
        await set('A_b', 1);
        expect(await keys(where(col('key'), 'contains', '%_'))).toEqual(['50%_off']);
        expect(await keys(where(col('key'), 'startsWith', '50%'))).toEqual(['50%_off']);
        expect(await keys(where(col('key'), 'endsWith', '_off'))).toEqual(['50%_off']);
        expect(await keys(where(col('key'), 'startsWith', 'a'))).toEqual([]);
        expect(await keys(where(col('key'), 'endsWith', 'B'))).toEqual([]);
        expect(await keys(where(col('key'), 'endsWith', 'a longer operand than any key'))).toEqual([]);
        expect(await keys(where(col('namespace'), 'contains', 'th'))).toEqual(['x1']);
        expect(await keys(where(col('namespace'), 'endsWith', 'er'))).toEqual(['x1']);
        expect((await keys(where(col('key'), 'endsWith', ''))).length).toBe(11);
        expect((await keys(where(col('key'), 'startsWith', ''))).length).toBe(11);
        expect((await keys(where(col('key'), 'contains', ''))).length).toBe(11);
      });

      it('eq on values: same JSON type and equal', async () => {
        expect(await keys(where(val('n'), 'eq', 1))).toEqual(['n1']);
        expect(await keys(where(val('n'), 'eq', 1.0), where(val('n'), 'eq', 1))).toEqual(['n1']);
        expect(await keys(where(val('n'), 'eq', 2.5))).toEqual(['n2']);
        expect(await keys(where(val('n'), 'eq', '10'))).toEqual(['x1']);
        expect(await keys(where(val('n'), 'eq', 10))).toEqual(['n3']);
        expect(await keys(where(val('s'), 'eq', 'apple'))).toEqual(['n1']);
        expect(await keys(where(val('b'), 'eq', true))).toEqual(['n1']);
        expect(await keys(where(val('b'), 'eq', false))).toEqual(['n2']);
        expect(await keys(where(val('z'), 'eq', null))).toEqual(['n1']);
        expect(await keys(where(val(), 'eq', null))).toEqual(['nul']);
        expect(await keys(where(val(), 'eq', 7))).toEqual(['num']);
        expect(await keys(where(val(), 'eq', 'plain string'))).toEqual(['str']);
        expect(await keys(where(val('o'), 'eq', { x: 1 }))).toEqual(['n1', 'n3']);
        expect(await keys(where(val('tags'), 'eq', ['blue']))).toEqual(['n2']);
        expect(await keys(where(val('tags'), 'eq', []))).toEqual(['n3']);
        expect(await keys(where(val('o', 'x'), 'eq', 2))).toEqual(['n2']);
        expect(await keys(where(val('tags', '0'), 'eq', 'red'))).toEqual(['n1']);
        expect(await keys(where(val('list', '0', 'id'), 'eq', 'a'))).toEqual(['n2']);
        expect(await keys(where(val('b'), 'eq', 1))).toEqual([]);
      });

      it('neq is the negation of eq: missing paths and binary records match it', async () => {
        expect(await keys(where(val('n'), 'neq', 1))).toEqual(['bin', 'n2', 'n3', 'nul', 'num', 'str', 'x1']);
        expect(await keys(where(val('b'), 'neq', true))).toEqual(['bin', 'n2', 'n3', 'nul', 'num', 'str', 'x1']);
        expect(await keys(where(val(), 'neq', null), where(col('namespace'), 'eq', 'ns'))).toEqual([
          'bin',
          'n1',
          'n2',
          'n3',
          'num',
          'str',
        ]);
      });

      it('gt, gte, lt, lte compare numbers with numbers and strings with strings (byte order) only', async () => {
        expect(await keys(where(val('n'), 'gt', 1))).toEqual(['n2', 'n3']);
        expect(await keys(where(val('n'), 'gte', 2.5))).toEqual(['n2', 'n3']);
        expect(await keys(where(val('n'), 'lt', 10))).toEqual(['n1', 'n2']);
        expect(await keys(where(val('n'), 'lte', 10))).toEqual(['n1', 'n2', 'n3']);
        expect(await keys(where(val('n'), 'gte', '0'))).toEqual(['x1']);
        // 'C' (0x43) sorts before 'a' (0x61): byte order, not case-insensitive.
        expect(await keys(where(val('s'), 'lt', 'b'))).toEqual(['n1', 'n3']);
        expect(await keys(where(val('s'), 'gt', 'apple'))).toEqual(['n2']);
        expect(await keys(where(val(), 'gt', 0))).toEqual(['num']);
        expect(await keys(where(val('b'), 'gte', 0))).toEqual([]);
      });

      it('contains: a substring of a string value, or a member of an array value', async () => {
        expect(await keys(where(val('s'), 'contains', 'an'))).toEqual(['n2']);
        expect(await keys(where(val('s'), 'contains', 'A'))).toEqual([]);
        expect(await keys(where(val(), 'contains', 'string'))).toEqual(['str']);
        expect(await keys(where(val('tags'), 'contains', 'green'))).toEqual(['n1']);
        expect(await keys(where(val('tags'), 'contains', 'gree'))).toEqual([]);
        expect(await keys(where(val('tags'), 'contains', 3))).toEqual(['n1']);
        expect(await keys(where(val('tags'), 'contains', true))).toEqual(['n1']);
        expect(await keys(where(val('tags'), 'contains', null))).toEqual(['n1']);
        expect(await keys(where(val('tags'), 'contains', 'blue'))).toEqual(['n2']);
        expect(await keys(where(val('n'), 'contains', 1))).toEqual([]);
      });

      it('startsWith and endsWith test string values only, literally', async () => {
        await set('pct', { s: '%_x' });
        expect(await keys(where(val('s'), 'startsWith', 'ban'))).toEqual(['n2']);
        expect(await keys(where(val('s'), 'startsWith', 'c'))).toEqual([]);
        expect(await keys(where(val('s'), 'endsWith', 'rry'))).toEqual(['n3']);
        expect(await keys(where(val('s'), 'startsWith', '%_'))).toEqual(['pct']);
        expect(await keys(where(val('n'), 'startsWith', '1'))).toEqual(['x1']);
        expect(await keys(where(val('s'), 'endsWith', ''))).toEqual(['n1', 'n2', 'n3', 'pct']);
      });

      it('never matches binary records with value conditions other than neq', async () => {
        for (const operator of ['eq', 'contains', 'startsWith', 'endsWith', 'gte'] as const) {
          expect(await keys(where(val(), operator, operator === 'gte' ? '' : 'AQID'))).not.toContain('bin');
        }
      });

      it('treats quotes and SQL in operands and paths as data', async () => {
        await set('q', { "it's": "x' OR '1'='1", 'a.b': 1 });
        expect(await keys(where(val("it's"), 'eq', "x' OR '1'='1"))).toEqual(['q']);
        expect(await keys(where(val("it's"), 'eq', "' OR '1'='1"))).toEqual([]);
        expect(await keys(where(col('key'), 'eq', "' OR 1=1 --"))).toEqual([]);
        expect(await keys(where(val('a.b'), 'eq', 1))).toEqual(['q']);
      });

      it('combines conditions with AND', async () => {
        expect(await keys(where(val('o', 'x'), 'eq', 1), where(val('n'), 'gt', 5))).toEqual(['n3']);
      });

      it('orders by a column or a value path, either way, ties broken by key then namespace', async () => {
        const order = async (target: QueryTarget, direction: 'asc' | 'desc', namespace = 'ns') =>
          (await query({ orderBy: { target, direction }, namespace, where: [where(val('n'), 'neq', null)] })).records.map(
            (r) => r.key,
          );
        expect((await order(val('n'), 'desc')).slice(0, 3)).toEqual(['n3', 'n2', 'n1']);
        expect((await order(val('n'), 'asc')).slice(-3)).toEqual(['n1', 'n2', 'n3']);
        expect(await order(val('o', 'x'), 'asc')).toEqual(['bin', 'nul', 'num', 'str', 'n1', 'n3', 'n2']);
        expect(await order(val('o', 'x'), 'desc')).toEqual(['n2', 'n1', 'n3', 'bin', 'nul', 'num', 'str']);
        expect(await order(col('key'), 'desc')).toEqual(['str', 'num', 'nul', 'n3', 'n2', 'n1', 'bin']);
        await engine.set({ instanceId: 'i1', namespace: 'a', key: 'n1', value: json({ n: 0 }) });
        const both = await query({ orderBy: { target: col('key'), direction: 'asc' }, where: [where(col('key'), 'eq', 'n1')] });
        expect(both.records.map((r) => r.namespace)).toEqual(['a', 'ns']);
        advance(1);
        await set('n1', { n: 1 });
        expect((await query({ orderBy: { target: col('updatedAt'), direction: 'desc' }, limit: 2 })).records.map((r) => r.key)).toEqual([
          'n1',
          'bin',
        ]);
      });
    });

    describe('namespaces, counts and stats', () => {
      it('getNamespaces lists namespaces with a live key in byte order', async () => {
        for (const namespace of ['b', 'a/b', 'B', 'é', 'a']) await set('k', 1, { namespace });
        await set('k', 1, { namespace: 'expiring', ttlMs: 5 });
        expect(await engine.getNamespaces('i1')).toEqual(['B', 'a', 'a/b', 'b', 'expiring', 'é']);
        advance(5);
        expect(await engine.getNamespaces('i1')).toEqual(['B', 'a', 'a/b', 'b', 'é']);
        await engine.delete('i1', 'b', 'k');
        expect(await engine.getNamespaces('i1')).toEqual(['B', 'a', 'a/b', 'é']);
      });

      it('count counts live keys in the instance or one namespace', async () => {
        await set('a', 1);
        await set('b', 1);
        await set('a', 1, { namespace: 'other' });
        await engine.createInstance({ id: 'i2', name: 'i2' });
        await engine.set({ instanceId: 'i2', namespace: 'ns', key: 'a', value: json(1) });
        expect(await engine.count('i1')).toBe(3);
        expect(await engine.count('i1', 'ns')).toBe(2);
        expect(await engine.count('i1', 'none')).toBe(0);
        expect(await engine.count('i2')).toBe(1);
      });

      it('stats counts the whole database, or one instance', async () => {
        await engine.createInstance({ id: 'i2', name: 'i2' });
        await set('a', 1);
        await set('b', 1, { namespace: 'other' });
        await set('c', 1, { ttlMs: 10 });
        await engine.set({ instanceId: 'i2', namespace: 'ns', key: 'a', value: json(1) });
        advance(10);
        const all = await engine.stats();
        expect(all).toMatchObject({ instances: 2, namespaces: 3, records: 3, expiredPending: 1 });
        expect(all.dbBytes).toBeGreaterThan(0);
        const one = await engine.stats('i1');
        expect(one).toEqual({ instances: 1, namespaces: 2, records: 2, expiredPending: 1, dbBytes: all.dbBytes });
        expect(await engine.stats('i2')).toMatchObject({ instances: 1, namespaces: 1, records: 1, expiredPending: 0 });
      });

      it('a new database is at revision 0 and empty but for its instances', async () => {
        expect(await engine.currentRevision()).toBe(0);
        expect(await engine.stats()).toMatchObject({ instances: 1, namespaces: 0, records: 0, expiredPending: 0 });
        expect(await engine.getNamespaces('i1')).toEqual([]);
      });
    });

    describe('exactly-once writes', () => {
      const claim = (key: string, fingerprint = 'f1', owner = '') => ({ idempotency: { owner, key, fingerprint } });
      const incr = (key: string, options: ReturnType<typeof claim>) =>
        engine.incr({ instanceId: 'i1', namespace: 'ns', key, by: 1 }, options);

      it('runs a keyed write once: a repeat returns the kept outcome and writes nothing', async () => {
        const first = await incr('n', claim('op-1'));
        const revision = await engine.currentRevision();
        advance(10);
        expect(await incr('n', claim('op-1'))).toEqual(first);
        expect(await engine.currentRevision()).toBe(revision);
        expect((await get('n'))?.value).toBe(1);
        expect((await incr('n', claim('op-2'))).value).toBe(2);
      });

      it('refuses a key reused with another fingerprint with VALIDATION_ERROR, writing nothing', async () => {
        await incr('n', claim('op-1', 'f1'));
        const revision = await engine.currentRevision();
        await expect(incr('n', claim('op-1', 'f2'))).rejects.toMatchObject({
          code: 'VALIDATION_ERROR',
          data: { issues: [expect.objectContaining({ path: ['idempotencyKey'] })] },
        });
        expect(await engine.currentRevision()).toBe(revision);
      });

      it('keeps a failure of a write that ran: the repeat fails the same way even once it could succeed', async () => {
        await set('k', 'v1');
        const stale = () => engine.delete('i1', 'ns', 'k', 2, claim('del-1'));
        const failure = await stale().catch((error: unknown) => error);
        expect(failure).toMatchObject({ code: 'CONFLICT', data: { current: expect.objectContaining({ version: 1 }) } });
        await set('k', 'v2');
        await expect(stale()).rejects.toMatchObject({ code: 'CONFLICT', message: (failure as Error).message });
        expect((await get('k'))?.value).toBe('v2');
        await expect(engine.set({ instanceId: 'nope', namespace: 'ns', key: 'k', value: json(1) }, claim('s-1'))).rejects.toMatchObject({
          code: 'INSTANCE_NOT_FOUND',
        });
        await engine.createInstance({ id: 'nope', name: 'now there' });
        await expect(engine.set({ instanceId: 'nope', namespace: 'ns', key: 'k', value: json(1) }, claim('s-1'))).rejects.toMatchObject({
          code: 'INSTANCE_NOT_FOUND',
        });
        expect(await engine.get('nope', 'ns', 'k')).toBeNull();
      });

      it('answers a repeat with the kept success even where running the write again would fail now', async () => {
        const create = () => engine.set({ instanceId: 'i1', namespace: 'ns', key: 'once', value: json('first'), ifAbsent: true }, claim('c-1'));
        const first = await create();
        const revision = await engine.currentRevision();
        expect(await create()).toEqual(first);
        expect(await engine.currentRevision()).toBe(revision);
        await expect(engine.set({ instanceId: 'i1', namespace: 'ns', key: 'once', value: json('second'), ifAbsent: true }, claim('c-2'))).rejects.toMatchObject({
          code: 'CONFLICT',
        });
        expect((await get('once'))?.value).toBe('first');
      });

      it('keeps keys per owner', async () => {
        await incr('n', claim('op-1', 'f1', 'alice'));
        expect((await incr('n', claim('op-1', 'f1', 'bob'))).value).toBe(2);
        expect((await incr('n', claim('op-1', 'f1', 'alice'))).value).toBe(1);
      });

      it('keeps replies across deleteInstance', async () => {
        const created = await engine.createInstance({ id: 'i2', name: 'two' }, claim('create-i2'));
        await engine.deleteInstance('i2', claim('delete-i2'));
        expect(await engine.createInstance({ id: 'i2', name: 'two' }, claim('create-i2'))).toEqual(created);
        await expect(engine.getInstance('i2')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
        await engine.deleteInstance('i2', claim('delete-i2'));
      });

      it('forgets kept replies once they are older than the window', async () => {
        await incr('n', claim('op-1'));
        advance(1000);
        await incr('n', claim('op-2'));
        expect(await engine.pruneKeptReplies(1000, 10)).toBe(0);
        advance(1);
        expect(await engine.pruneKeptReplies(1000, 10)).toBe(1);
        // op-1 was forgotten and runs again; op-2 is still kept and replies with the value it had then.
        expect((await incr('n', claim('op-1'))).value).toBe(3);
        expect((await incr('n', claim('op-2'))).value).toBe(2);
      });

      it('keeps every kind of write', async () => {
        await set('k', 1);
        const writes: [string, () => Promise<unknown>][] = [
          ['update', () => engine.updateInstance('i1', { name: 'renamed' }, claim('w1'))],
          ['set', () => engine.set({ instanceId: 'i1', namespace: 'ns', key: 'a', value: json(1) }, claim('w2'))],
          ['setMany', () => engine.setMany({ instanceId: 'i1', namespace: 'ns', entries: [{ key: 'b', value: json(1) }] }, claim('w3'))],
          ['expire', () => engine.expire('i1', 'ns', 'k', 5000, claim('w4'))],
          ['atomic', () => engine.atomic({ instanceId: 'i1', checks: [], ops: [{ op: 'incr', namespace: 'ns', key: 'c', by: 1 }] }, claim('w5'))],
          ['delete', () => engine.delete('i1', 'ns', 'a', undefined, claim('w6'))],
          ['deleteNamespace', () => engine.deleteNamespace('i1', 'other', claim('w7'))],
        ];
        for (const [name, write] of writes) {
          const first = await write();
          const revision = await engine.currentRevision();
          expect(await write(), name).toEqual(first);
          expect(await engine.currentRevision(), name).toBe(revision);
        }
      });
    });

    describe('close', () => {
      it('is idempotent', async () => {
        await engine.close();
        await engine.close();
      });
    });
  });
}

/** A JSON value as engines store it. */
export function json(value: unknown): StoredValue {
  return { contentType: 'application/json', json: JSON.stringify(value) };
}

/** Binary bytes as engines store them. */
export function bin(bytes: number[], contentType = 'application/octet-stream'): StoredValue {
  return { contentType, bytes: Uint8Array.from(bytes) };
}

function ttl(ttlMs: number | undefined): { ttlMs?: number } {
  return ttlMs === undefined ? {} : { ttlMs };
}
