import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kvTargets, type KvApi, type OpenedKv } from './helpers/kv-targets.js';

// The same assertions run on a network client of a real server and on an embedded store.
describe.each(kvTargets({ requestTimeoutMs: 5000 }))('$name', (target) => {
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
  const fresh = (prefix = 'kv') => `${prefix}-${++n}`;

  /** The reply's data, failing the test with the whole reply when it is a failure. */
  function data<R extends { success: boolean }>(reply: R): Extract<R, { success: true }> extends { data: infer D } ? D : never {
    expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
    return (reply as unknown as { data: never }).data;
  }

  describe("Codebolt's twelve methods, with Codebolt's positional signatures", () => {
    it('createInstance(name, description) / getInstance(id) / listInstances() / updateInstance(id, updates) / deleteInstance(id)', async () => {
      const created = await client.kvStore.createInstance('Agents', 'agent state');
      expect(created).toMatchObject({ type: 'kvStore.createInstance', success: true, requestId: expect.any(String), timestamp: expect.any(String) });
      const { instance } = data(created);
      expect(instance).toMatchObject({ name: 'Agents', description: 'agent state', id: expect.any(String) });

      expect(data(await client.kvStore.getInstance(instance.id)).instance).toEqual(instance);
      expect(data(await client.kvStore.listInstances()).instances).toContainEqual(instance);

      // Codebolt passes the updates as an object; kvhub sends them flat next to instanceId.
      const renamed = data(await client.kvStore.updateInstance(instance.id, { name: 'Renamed' })).instance;
      expect(renamed).toMatchObject({ id: instance.id, name: 'Renamed', description: 'agent state', createdAt: instance.createdAt });
      const redescribed = data(await client.kvStore.updateInstance(instance.id, { description: 'new words' })).instance;
      expect(redescribed).toMatchObject({ name: 'Renamed', description: 'new words' });

      expect(data(await client.kvStore.deleteInstance(instance.id))).toEqual({ deleted: true });
      await expect(client.kvStore.getInstance(instance.id)).resolves.toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND' });
      await expect(client.kvStore.deleteInstance(instance.id)).resolves.toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND' });
    });

    it('createInstance(name) without a description; with an explicit id; a taken id is INSTANCE_EXISTS', async () => {
      const bare = data(await client.kvStore.createInstance('no description')).instance;
      expect(bare.description).toBeUndefined();
      const id = fresh('inst');
      expect(data(await client.kvStore.createInstance('named', undefined, { id })).instance.id).toBe(id);
      await expect(client.kvStore.createInstance('again', 'x', { id })).resolves.toMatchObject({ success: false, code: 'INSTANCE_EXISTS' });
    });

    it('set(instanceId, namespace, key, value, autoCreateInstance) and get(instanceId, namespace, key)', async () => {
      const inst = fresh();
      await expect(client.kvStore.set(inst, 'users', 'u1', { a: 1 })).resolves.toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND' });
      const { record } = data(await client.kvStore.set(inst, 'users', 'u1', { a: 1 }, true));
      expect(record).toMatchObject({ instanceId: inst, namespace: 'users', key: 'u1', value: { a: 1 }, version: 1, contentType: 'application/json' });
      // autoCreateInstance creates the instance with id = name = instanceId.
      expect(data(await client.kvStore.getInstance(inst)).instance).toMatchObject({ id: inst, name: inst });

      expect(data(await client.kvStore.get(inst, 'users', 'u1'))).toMatchObject({ value: { a: 1 }, exists: true, record: { id: record.id } });
      expect(data(await client.kvStore.get(inst, 'users', 'absent'))).toEqual({ value: null, exists: false, record: null });

      const again = data(await client.kvStore.set(inst, 'users', 'u1', [1, 2, 3], false)).record;
      expect(again).toMatchObject({ id: record.id, version: 2, value: [1, 2, 3], createdAt: record.createdAt });
      expect(data(await client.kvStore.set(inst, 'users', 'nul', null)).record.value).toBeNull();
    });

    it('set takes a trailing options object: ttlMs, ifVersion, ifAbsent, contentType', async () => {
      const inst = fresh();
      const first = data(await client.kvStore.set(inst, 'ns', 'k', 'v1', true, { ttlMs: 60_000 })).record;
      expect(first.expiresAt).not.toBeNull();
      const conflict = await client.kvStore.set(inst, 'ns', 'k', 'v2', false, { ifVersion: first.version + 5 });
      expect(conflict).toMatchObject({ success: false, code: 'CONFLICT', data: { current: { version: 1, value: 'v1' } } });
      await expect(client.kvStore.set(inst, 'ns', 'k', 'v2', false, { ifAbsent: true })).resolves.toMatchObject({ success: false, code: 'CONFLICT' });
      const second = data(await client.kvStore.set(inst, 'ns', 'k', 'v2', false, { ifVersion: 1 })).record;
      expect(second).toMatchObject({ version: 2, value: 'v2', expiresAt: null });
      expect(data(await client.kvStore.set(inst, 'ns', 'new', 0, false, { ifAbsent: true })).record.version).toBe(1);

      const bytes = data(await client.kvStore.set(inst, 'ns', 'bin', new Uint8Array([0, 1, 254, 255]))).record;
      expect(bytes).toMatchObject({ contentType: 'application/octet-stream', value: 'AAH+/w==' });
      const png = data(await client.kvStore.set(inst, 'ns', 'png', 'iVBORw==', false, { contentType: 'image/png' })).record;
      expect(png).toMatchObject({ contentType: 'image/png', value: 'iVBORw==' });
      await expect(client.kvStore.set(inst, 'ns', 'x', new Uint8Array([1]), false, { contentType: 'application/json' })).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
      });
    });

    it('delete(instanceId, namespace, key), with an optional ifVersion', async () => {
      const inst = fresh();
      const { record } = data(await client.kvStore.set(inst, 'ns', 'k', 1, true));
      await expect(client.kvStore.delete(inst, 'ns', 'k', { ifVersion: record.version + 1 })).resolves.toMatchObject({
        success: false,
        code: 'CONFLICT',
      });
      expect(data(await client.kvStore.delete(inst, 'ns', 'k', { ifVersion: record.version }))).toEqual({ deleted: true });
      expect(data(await client.kvStore.delete(inst, 'ns', 'k'))).toEqual({ deleted: false });
    });

    it('deleteNamespace(instanceId, namespace), getNamespaces(instanceId), getRecordCount(instanceId, namespace?)', async () => {
      const inst = fresh();
      for (const key of ['a', 'b', 'c']) await client.kvStore.set(inst, 'one', key, key, true);
      await client.kvStore.set(inst, 'two', 'x', 1);
      expect(data(await client.kvStore.getNamespaces(inst)).namespaces.sort()).toEqual(['one', 'two']);
      expect(data(await client.kvStore.getRecordCount(inst))).toEqual({ count: 4 });
      expect(data(await client.kvStore.getRecordCount(inst, 'one'))).toEqual({ count: 3 });
      expect(data(await client.kvStore.deleteNamespace(inst, 'one'))).toEqual({ deletedCount: 3 });
      expect(data(await client.kvStore.getNamespaces(inst)).namespaces).toEqual(['two']);
      expect(data(await client.kvStore.getRecordCount(inst, 'one'))).toEqual({ count: 0 });
    });

    it('query(query) sends { query } and returns { result }', async () => {
      const inst = fresh();
      const people = [
        { key: 'ada', value: { age: 36, tags: ['math'] } },
        { key: 'alan', value: { age: 41, tags: ['math', 'crypto'] } },
        { key: 'grace', value: { age: 85, tags: ['navy'] } },
      ];
      for (const p of people) await client.kvStore.set(inst, 'people', p.key, p.value, true);
      const reply = await client.kvStore.query({
        from: { instance: inst, namespace: 'people' },
        where: [{ field: 'value.tags', operator: 'contains', value: 'math' }],
        orderBy: { field: 'value.age', direction: 'desc' },
        limit: 10,
      });
      const { result } = data(reply);
      expect(result.records.map((r) => r.key)).toEqual(['alan', 'ada']);
      expect(result).toMatchObject({ total: 2, limit: 10, offset: 0 });
      const selected = data(await client.kvStore.query({ from: { instance: inst }, select: ['key'], limit: 1, offset: 1 })).result;
      expect(selected.records).toEqual([{ key: 'alan' }]);
    });
  });

  describe('methods beyond Codebolt take a params object', () => {
    it('hello, ping, stats', async () => {
      expect(data(await client.kvStore.hello({ protocolVersion: 1 }))).toMatchObject({ protocolVersion: 1, capabilities: expect.any(Array) });
      await expect(client.kvStore.hello({ protocolVersion: 99 })).resolves.toMatchObject({ success: false, code: 'VERSION_MISMATCH' });
      expect(data(await client.kvStore.ping())).toEqual({ pong: true });
      const inst = fresh();
      await client.kvStore.set(inst, 'ns', 'k', 1, true);
      expect(data(await client.kvStore.stats({ instanceId: inst }))).toMatchObject({ instances: 1, namespaces: 1, records: 1 });
      expect(data(await client.kvStore.stats()).instances).toBeGreaterThanOrEqual(1);
    });

    it('getMany and setMany (all or nothing, Uint8Array entries sent as binary)', async () => {
      const inst = fresh();
      const { records } = data(
        await client.kvStore.setMany({
          instanceId: inst,
          namespace: 'ns',
          autoCreateInstance: true,
          entries: [
            { key: 'a', value: 1 },
            { key: 'b', value: new Uint8Array([104, 105]) },
            { key: 'c', value: 'c', ttlMs: 60_000 },
          ],
        }),
      );
      expect(records.map((r) => [r.key, r.value, r.contentType])).toEqual([
        ['a', 1, 'application/json'],
        ['b', 'aGk=', 'application/octet-stream'],
        ['c', 'c', 'application/json'],
      ]);
      const { items } = data(await client.kvStore.getMany({ instanceId: inst, namespace: 'ns', keys: ['c', 'zz', 'a'] }));
      expect(items.map((i) => [i.key, i.exists, i.value])).toEqual([
        ['c', true, 'c'],
        ['zz', false, null],
        ['a', true, 1],
      ]);
      // A duplicate key fails the whole batch: nothing written.
      const dup = await client.kvStore.setMany({ instanceId: inst, namespace: 'ns', entries: [{ key: 'x', value: 1 }, { key: 'x', value: 2 }] });
      expect(dup.success).toBe(false);
      expect(data(await client.kvStore.get(inst, 'ns', 'x')).exists).toBe(false);
    });

    it('list pages with a cursor', async () => {
      const inst = fresh();
      const keys = Array.from({ length: 5 }, (_, i) => `k${i}`);
      await client.kvStore.setMany({ instanceId: inst, namespace: 'ns', autoCreateInstance: true, entries: keys.map((key) => ({ key, value: key })) });
      const page1 = data(await client.kvStore.list({ instanceId: inst, namespace: 'ns', limit: 3, keysOnly: true }));
      expect(page1.keys).toEqual(['k0', 'k1', 'k2']);
      expect(page1.cursor).toEqual(expect.any(String));
      const page2 = data(await client.kvStore.list({ instanceId: inst, namespace: 'ns', limit: 3, cursor: page1.cursor }));
      expect(page2.records?.map((r) => r.key)).toEqual(['k3', 'k4']);
      expect(page2.cursor).toBeNull();
    });

    it('incr, expire, ttl', async () => {
      const inst = fresh();
      expect(data(await client.kvStore.incr({ instanceId: inst, namespace: 'c', key: 'hits', autoCreateInstance: true }))).toMatchObject({ value: 1 });
      expect(data(await client.kvStore.incr({ instanceId: inst, namespace: 'c', key: 'hits', by: 4 })).value).toBe(5);
      expect(data(await client.kvStore.ttl({ instanceId: inst, namespace: 'c', key: 'hits' }))).toEqual({ exists: true, ttlMs: null });
      expect(data(await client.kvStore.expire({ instanceId: inst, namespace: 'c', key: 'hits', ttlMs: 60_000 }))).toEqual({ updated: true });
      const { ttlMs } = data(await client.kvStore.ttl({ instanceId: inst, namespace: 'c', key: 'hits' }));
      expect(ttlMs).toBeGreaterThan(50_000);
      expect(data(await client.kvStore.expire({ instanceId: inst, namespace: 'c', key: 'hits', ttlMs: null }))).toEqual({ updated: true });
      expect(data(await client.kvStore.expire({ instanceId: inst, namespace: 'c', key: 'nope', ttlMs: 10 }))).toEqual({ updated: false });
      await expect(client.kvStore.expire({ instanceId: inst, namespace: 'c', key: 'hits', ttlMs: 0 })).resolves.toMatchObject({
        success: false,
        code: 'INVALID_TTL',
      });
      await client.kvStore.set(inst, 'c', 'text', 'abc');
      await expect(client.kvStore.incr({ instanceId: inst, namespace: 'c', key: 'text' })).resolves.toMatchObject({ success: false, code: 'TYPE_MISMATCH' });
    });

    it('atomic: checks, then all ops or none', async () => {
      const inst = fresh();
      const base = data(await client.kvStore.set(inst, 'acct', 'alice', 100, true)).record;
      const committed = data(
        await client.kvStore.atomic({
          instanceId: inst,
          checks: [{ namespace: 'acct', key: 'alice', version: base.version }, { namespace: 'acct', key: 'bob', version: null }],
          ops: [
            { op: 'set', namespace: 'acct', key: 'alice', value: 70 },
            { op: 'set', namespace: 'acct', key: 'bob', value: new Uint8Array([1]) },
            { op: 'incr', namespace: 'acct', key: 'transfers' },
          ],
        }),
      );
      expect(committed).toMatchObject({ committed: true, revision: expect.any(Number) });
      expect(committed.records.map((r) => r?.value)).toEqual([70, 'AQ==', 1]);
      const stale = await client.kvStore.atomic({
        instanceId: inst,
        checks: [{ namespace: 'acct', key: 'alice', version: base.version }],
        ops: [{ op: 'delete', namespace: 'acct', key: 'alice' }],
      });
      expect(stale).toMatchObject({ success: false, code: 'CONFLICT', data: { current: { value: 70 } } });
      expect(data(await client.kvStore.get(inst, 'acct', 'alice')).value).toBe(70);
    });
  });
});
