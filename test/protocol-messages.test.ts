import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailureReplySchema, successReplySchema, type RequestType } from '../protocol/index.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
let client: RawClient;

beforeAll(async () => {
  server = await startTestServer();
  client = await connectRaw(server.url);
});
afterAll(async () => {
  await client.close();
  await server.close();
});

/** Sends one request and checks the reply against the protocol's schema for its outcome. */
async function ok<T extends RequestType>(type: T, params?: object): Promise<any> {
  const requestId = rid();
  const reply = await client.request({ type, requestId, ...(params !== undefined && { params }) });
  expect(reply, JSON.stringify(reply)).toMatchObject({ success: true, requestId, type });
  return (successReplySchema(type).parse(reply) as { data: unknown }).data;
}
async function fails(type: string, params: object | undefined, code: string): Promise<any> {
  const requestId = rid();
  const reply = await client.request({ type, requestId, ...(params !== undefined && { params }) });
  expect(reply, JSON.stringify(reply)).toMatchObject({ success: false, code, requestId, type });
  return FailureReplySchema.parse(reply);
}

let n = 0;
const fresh = () => `inst-${++n}`;

describe('instances', () => {
  it('create, get, list, update, delete', async () => {
    const { instance } = await ok('kvStore.createInstance', { name: 'Agents', description: 'agent state' });
    expect(instance).toMatchObject({ name: 'Agents', description: 'agent state' });
    expect(instance.id).toEqual(expect.any(String));
    expect((await ok('kvStore.getInstance', { instanceId: instance.id })).instance).toEqual(instance);
    expect((await ok('kvStore.listInstances')).instances).toContainEqual(instance);
    const updated = (await ok('kvStore.updateInstance', { instanceId: instance.id, name: 'Renamed' })).instance;
    expect(updated).toMatchObject({ id: instance.id, name: 'Renamed', description: 'agent state', createdAt: instance.createdAt });
    expect(await ok('kvStore.deleteInstance', { instanceId: instance.id })).toEqual({ deleted: true });
    await fails('kvStore.getInstance', { instanceId: instance.id }, 'INSTANCE_NOT_FOUND');
  });

  it('createInstance with a taken id is INSTANCE_EXISTS; missing instances are INSTANCE_NOT_FOUND', async () => {
    const id = fresh();
    await ok('kvStore.createInstance', { name: 'x', id });
    await fails('kvStore.createInstance', { name: 'y', id }, 'INSTANCE_EXISTS');
    const missing = fresh();
    await fails('kvStore.updateInstance', { instanceId: missing, name: 'z' }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.deleteInstance', { instanceId: missing }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.get', { instanceId: missing, namespace: 'n', key: 'k' }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.set', { instanceId: missing, namespace: 'n', key: 'k', value: 1 }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.list', { instanceId: missing, namespace: 'n' }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.getNamespaces', { instanceId: missing }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.getRecordCount', { instanceId: missing }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.query', { query: { from: { instance: missing } } }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.stats', { instanceId: missing }, 'INSTANCE_NOT_FOUND');
  });

  it('createInstance needs a name', async () => {
    await fails('kvStore.createInstance', {}, 'VALIDATION_ERROR');
  });
});

describe('get / set / delete', () => {
  it('autoCreateInstance creates the instance with id = name = instanceId', async () => {
    const id = fresh();
    const { record } = await ok('kvStore.set', { instanceId: id, namespace: 'users', key: 'u1', value: { a: 1 }, autoCreateInstance: true });
    expect(record).toMatchObject({ instanceId: id, namespace: 'users', key: 'u1', value: { a: 1 }, version: 1, expiresAt: null, contentType: 'application/json' });
    expect((await ok('kvStore.getInstance', { instanceId: id })).instance).toMatchObject({ id, name: id });
  });

  it('get returns value, exists and record; absent keys are null/false/null', async () => {
    const id = fresh();
    await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: null, autoCreateInstance: true });
    const got = await ok('kvStore.get', { instanceId: id, namespace: 'n', key: 'k' });
    expect(got).toMatchObject({ value: null, exists: true, record: { value: null } });
    expect(await ok('kvStore.get', { instanceId: id, namespace: 'n', key: 'nope' })).toEqual({ value: null, exists: false, record: null });
  });

  it('set keeps id and createdAt, bumps version and revision', async () => {
    const id = fresh();
    const first = (await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1, autoCreateInstance: true })).record;
    const second = (await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 2 })).record;
    expect(second).toMatchObject({ id: first.id, createdAt: first.createdAt, version: 2, value: 2 });
    expect(second.revision).toBeGreaterThan(first.revision);
  });

  it('ifVersion and ifAbsent conditions; CONFLICT carries data.current and writes nothing', async () => {
    const id = fresh();
    const base = { instanceId: id, namespace: 'n', key: 'k', autoCreateInstance: true };
    const created = (await ok('kvStore.set', { ...base, value: 'a', ifAbsent: true })).record;
    const conflict = await fails('kvStore.set', { ...base, value: 'b', ifAbsent: true }, 'CONFLICT');
    expect(conflict.data.current).toEqual(created);
    const stale = await fails('kvStore.set', { ...base, value: 'c', ifVersion: 7 }, 'CONFLICT');
    expect(stale.data.current).toEqual(created);
    expect((await ok('kvStore.set', { ...base, value: 'd', ifVersion: 1 })).record.version).toBe(2);
    const absent = await fails('kvStore.set', { ...base, key: 'other', value: 1, ifVersion: 1 }, 'CONFLICT');
    expect(absent.data.current).toBeNull();
    await fails('kvStore.set', { ...base, value: 1, ifVersion: 1, ifAbsent: true }, 'VALIDATION_ERROR');
    expect((await ok('kvStore.get', { instanceId: id, namespace: 'n', key: 'k' })).value).toBe('d');
  });

  it('delete, with and without ifVersion', async () => {
    const id = fresh();
    await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1, autoCreateInstance: true });
    await fails('kvStore.delete', { instanceId: id, namespace: 'n', key: 'k', ifVersion: 2 }, 'CONFLICT');
    expect(await ok('kvStore.delete', { instanceId: id, namespace: 'n', key: 'k', ifVersion: 1 })).toEqual({ deleted: true });
    expect(await ok('kvStore.delete', { instanceId: id, namespace: 'n', key: 'k' })).toEqual({ deleted: false });
  });

  it('binary values round-trip as canonical base64; bad base64 is VALIDATION_ERROR', async () => {
    const id = fresh();
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    const { record } = await ok('kvStore.set', {
      instanceId: id, namespace: 'bin', key: 'b', value: bytes.toString('base64'), contentType: 'application/octet-stream', autoCreateInstance: true,
    });
    expect(record).toMatchObject({ contentType: 'application/octet-stream', value: bytes.toString('base64') });
    // Unpadded base64 is accepted and returned padded.
    const unpadded = (await ok('kvStore.set', { instanceId: id, namespace: 'bin', key: 'c', value: 'AAE', contentType: 'image/x' })).record;
    expect(unpadded.value).toBe('AAE=');
    await fails('kvStore.set', { instanceId: id, namespace: 'bin', key: 'd', value: 'not base64!', contentType: 'image/x' }, 'VALIDATION_ERROR');
    await fails('kvStore.set', { instanceId: id, namespace: 'bin', key: 'd', value: 42, contentType: 'image/x' }, 'VALIDATION_ERROR');
  });

  it('a missing value is VALIDATION_ERROR', async () => {
    await fails('kvStore.set', { instanceId: fresh(), namespace: 'n', key: 'k', autoCreateInstance: true }, 'VALIDATION_ERROR');
  });
});

describe('namespaces and counts', () => {
  it('deleteNamespace, getNamespaces, getRecordCount', async () => {
    const id = fresh();
    for (const [ns, key] of [['a', '1'], ['a', '2'], ['a/b', '1'], ['c', '1']] as const) {
      await ok('kvStore.set', { instanceId: id, namespace: ns, key, value: 0, autoCreateInstance: true });
    }
    expect((await ok('kvStore.getNamespaces', { instanceId: id })).namespaces).toEqual(['a', 'a/b', 'c']);
    expect(await ok('kvStore.getRecordCount', { instanceId: id })).toEqual({ count: 4 });
    expect(await ok('kvStore.getRecordCount', { instanceId: id, namespace: 'a' })).toEqual({ count: 2 });
    // Namespaces are flat: deleting 'a' leaves 'a/b'.
    expect(await ok('kvStore.deleteNamespace', { instanceId: id, namespace: 'a' })).toEqual({ deletedCount: 2 });
    expect(await ok('kvStore.deleteNamespace', { instanceId: id, namespace: 'a' })).toEqual({ deletedCount: 0 });
    expect((await ok('kvStore.getNamespaces', { instanceId: id })).namespaces).toEqual(['a/b', 'c']);
  });

  it('stats for the database and for one instance', async () => {
    const id = fresh();
    await ok('kvStore.setMany', { instanceId: id, namespace: 'n', entries: [{ key: 'a', value: 1 }, { key: 'b', value: 2 }], autoCreateInstance: true });
    const one = await ok('kvStore.stats', { instanceId: id });
    expect(one).toMatchObject({ instances: 1, namespaces: 1, records: 2, expiredPending: 0 });
    const all = await ok('kvStore.stats');
    expect(all.instances).toBeGreaterThanOrEqual(1);
    expect(all.records).toBeGreaterThanOrEqual(2);
    expect(all.dbBytes).toBeGreaterThan(0);
    expect(one.dbBytes).toBe(all.dbBytes);
  });
});

describe('hello and ping', () => {
  it('hello reports version, durability, capabilities and limits', async () => {
    const hello = await ok('kvStore.hello', { protocolVersion: 1 });
    expect(hello).toMatchObject({ protocolVersion: 1, durability: 'full', limits: { maxValueBytes: 1048576, maxPayloadBytes: 16777216, maxBatch: 1000 } });
    expect(hello.capabilities).toContain('batch');
    await fails('kvStore.hello', { protocolVersion: 2 }, 'VERSION_MISMATCH');
  });
  it('ping answers pong, with or without params', async () => {
    expect(await ok('kvStore.ping')).toEqual({ pong: true });
    expect(await ok('kvStore.ping', {})).toEqual({ pong: true });
    await fails('kvStore.ping', { extra: 1 }, 'VALIDATION_ERROR');
  });
});

describe('getMany / setMany', () => {
  it('setMany writes all with consecutive revisions; getMany answers in the order asked', async () => {
    const id = fresh();
    const { records } = await ok('kvStore.setMany', {
      instanceId: id, namespace: 'n', autoCreateInstance: true,
      entries: [{ key: 'a', value: 1 }, { key: 'b', value: 'two', ttlMs: 60_000 }, { key: 'c', value: 'AQI=', contentType: 'application/x-bytes' }],
    });
    expect(records.map((r: any) => r.revision)).toEqual([records[0].revision, records[0].revision + 1, records[0].revision + 2]);
    expect(records[1].expiresAt).not.toBeNull();
    const { items } = await ok('kvStore.getMany', { instanceId: id, namespace: 'n', keys: ['c', 'missing', 'a'] });
    expect(items).toMatchObject([
      { key: 'c', exists: true, value: 'AQI=' },
      { key: 'missing', exists: false, value: null, record: null },
      { key: 'a', exists: true, value: 1 },
    ]);
  });
  it('setMany is all or nothing and refuses duplicate keys', async () => {
    const id = fresh();
    await fails('kvStore.setMany', { instanceId: id, namespace: 'n', autoCreateInstance: true, entries: [{ key: 'a', value: 1 }, { key: 'a', value: 2 }] }, 'VALIDATION_ERROR');
    await fails('kvStore.setMany', { instanceId: id, namespace: 'n', autoCreateInstance: true, entries: [{ key: 'a', value: 1 }, { key: 'b', value: 2, ttlMs: 0 }] }, 'INVALID_TTL');
    await fails('kvStore.getRecordCount', { instanceId: id }, 'INSTANCE_NOT_FOUND');
    await fails('kvStore.setMany', { instanceId: id, namespace: 'n', entries: [] }, 'VALIDATION_ERROR');
  });
  it('more than maxBatch keys or entries is LIMIT_EXCEEDED', async () => {
    const keys = Array.from({ length: 1001 }, (_, i) => `k${i}`);
    await fails('kvStore.getMany', { instanceId: 'x', namespace: 'n', keys }, 'LIMIT_EXCEEDED');
    await fails('kvStore.setMany', { instanceId: 'x', namespace: 'n', entries: keys.map((key) => ({ key, value: 1 })) }, 'LIMIT_EXCEEDED');
  });
});

describe('incr / expire / ttl', () => {
  it('incr creates, adds and refuses non-numbers', async () => {
    const id = fresh();
    const base = { instanceId: id, namespace: 'n', key: 'c', autoCreateInstance: true };
    expect((await ok('kvStore.incr', base)).value).toBe(1);
    expect((await ok('kvStore.incr', { ...base, by: 2.5 })).value).toBe(3.5);
    expect((await ok('kvStore.incr', { ...base, by: -10 })).record).toMatchObject({ value: -6.5, version: 3 });
    await ok('kvStore.set', { ...base, key: 's', value: 'text' });
    await fails('kvStore.incr', { ...base, key: 's' }, 'TYPE_MISMATCH');
    await fails('kvStore.incr', { ...base, by: 'x' }, 'VALIDATION_ERROR');
  });
  it("incr's ttlMs applies only when it creates the key", async () => {
    const id = fresh();
    const base = { instanceId: id, namespace: 'n', key: 'window', autoCreateInstance: true };
    const created = (await ok('kvStore.incr', { ...base, ttlMs: 60_000 })).record;
    const again = (await ok('kvStore.incr', { ...base, ttlMs: 1_000_000 })).record;
    expect(again.expiresAt).toBe(created.expiresAt);
  });
  it('expire sets and clears an expiry; ttl reports it', async () => {
    const id = fresh();
    const base = { instanceId: id, namespace: 'n', key: 'k' };
    await ok('kvStore.set', { ...base, value: 1, autoCreateInstance: true });
    expect(await ok('kvStore.ttl', base)).toEqual({ exists: true, ttlMs: null });
    expect(await ok('kvStore.expire', { ...base, ttlMs: 60_000 })).toEqual({ updated: true });
    const { ttlMs } = await ok('kvStore.ttl', base);
    expect(ttlMs).toBeGreaterThan(59_000);
    expect(ttlMs).toBeLessThanOrEqual(60_000);
    expect(await ok('kvStore.expire', { ...base, ttlMs: null })).toEqual({ updated: true });
    expect(await ok('kvStore.ttl', base)).toEqual({ exists: true, ttlMs: null });
    expect((await ok('kvStore.get', base)).record.version).toBe(3);
    expect(await ok('kvStore.expire', { ...base, key: 'absent', ttlMs: 5 })).toEqual({ updated: false });
    expect(await ok('kvStore.ttl', { ...base, key: 'absent' })).toEqual({ exists: false, ttlMs: null });
  });
  it.each([0, -1, 1.5, 315_360_000_001, Number.MAX_SAFE_INTEGER])('ttlMs %s is INVALID_TTL', async (ttlMs) => {
    await fails('kvStore.set', { instanceId: 'x', namespace: 'n', key: 'k', value: 1, ttlMs }, 'INVALID_TTL');
    await fails('kvStore.expire', { instanceId: 'x', namespace: 'n', key: 'k', ttlMs }, 'INVALID_TTL');
  });
  it('a non-number ttlMs is VALIDATION_ERROR; ten years is accepted', async () => {
    await fails('kvStore.set', { instanceId: 'x', namespace: 'n', key: 'k', value: 1, ttlMs: '100' }, 'VALIDATION_ERROR');
    await ok('kvStore.set', { instanceId: fresh(), namespace: 'n', key: 'k', value: 1, ttlMs: 315_360_000_000, autoCreateInstance: true });
  });
});

describe('atomic', () => {
  it('commits checks and ops in one transaction', async () => {
    const id = fresh();
    const a = (await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 10, autoCreateInstance: true })).record;
    const result = await ok('kvStore.atomic', {
      instanceId: id,
      checks: [{ namespace: 'n', key: 'a', version: a.version }, { namespace: 'n', key: 'new', version: null }],
      ops: [
        { op: 'incr', namespace: 'n', key: 'a', by: -3 },
        { op: 'set', namespace: 'n', key: 'new', value: 'x' },
        { op: 'delete', namespace: 'n', key: 'gone' },
      ],
    });
    expect(result.committed).toBe(true);
    expect(result.records[0]).toMatchObject({ key: 'a', value: 7 });
    expect(result.records[1]).toMatchObject({ key: 'new', value: 'x', version: 1 });
    expect(result.records[2]).toBeNull();
    expect(result.revision).toBe(result.records[1].revision);
  });
  it('a failed check writes nothing and reports the first failing check', async () => {
    const id = fresh();
    const a = (await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 1, autoCreateInstance: true })).record;
    const failed = await fails('kvStore.atomic', {
      instanceId: id,
      checks: [{ namespace: 'n', key: 'a', version: null }, { namespace: 'n', key: 'b', version: 3 }],
      ops: [{ op: 'set', namespace: 'n', key: 'b', value: 1 }],
    }, 'CONFLICT');
    expect(failed.data.current).toEqual(a);
    expect((await ok('kvStore.get', { instanceId: id, namespace: 'n', key: 'b' })).exists).toBe(false);
  });
  it('an incr on a non-number rolls back the earlier ops', async () => {
    const id = fresh();
    await ok('kvStore.set', { instanceId: id, namespace: 'n', key: 's', value: 'text', autoCreateInstance: true });
    await fails('kvStore.atomic', {
      instanceId: id,
      ops: [{ op: 'set', namespace: 'n', key: 'first', value: 1 }, { op: 'incr', namespace: 'n', key: 's' }],
    }, 'TYPE_MISMATCH');
    expect((await ok('kvStore.get', { instanceId: id, namespace: 'n', key: 'first' })).exists).toBe(false);
  });
  it('refuses the same key twice, unknown ops and stray fields', async () => {
    const id = fresh();
    await fails('kvStore.atomic', { instanceId: id, ops: [{ op: 'set', namespace: 'n', key: 'a', value: 1 }, { op: 'delete', namespace: 'n', key: 'a' }] }, 'VALIDATION_ERROR');
    await fails('kvStore.atomic', { instanceId: id, ops: [{ op: 'append', namespace: 'n', key: 'a' }] }, 'VALIDATION_ERROR');
    await fails('kvStore.atomic', { instanceId: id, ops: [{ op: 'delete', namespace: 'n', key: 'a', value: 1 }] }, 'VALIDATION_ERROR');
    await fails('kvStore.atomic', { instanceId: id, ops: [{ op: 'set', namespace: 'n', key: 'a' }] }, 'VALIDATION_ERROR');
    await fails('kvStore.atomic', { instanceId: id, ops: [] }, 'VALIDATION_ERROR');
  });
});

describe('query', () => {
  let id: string;
  beforeAll(async () => {
    id = fresh();
    await ok('kvStore.setMany', {
      instanceId: id, namespace: 'users', autoCreateInstance: true,
      entries: [
        { key: 'u1', value: { name: 'Ada', age: 36, tags: ['math', 'code'], active: true } },
        { key: 'u2', value: { name: 'Grace', age: 45, tags: ['navy'], active: false } },
        { key: 'u3', value: { name: 'Linus', age: '28', tags: [], active: true } },
        { key: 'u4', value: 'plain string' },
      ],
    });
    await ok('kvStore.set', { instanceId: id, namespace: 'other', key: 'u5', value: { name: 'Ada', age: 99 } });
  });
  const query = (q: object) => ok('kvStore.query', { query: { from: { instance: id, namespace: 'users' }, ...q } }).then((d) => d.result);
  const keys = (result: any) => result.records.map((r: any) => r.key);

  it('filters by value paths with typed comparison', async () => {
    expect(keys(await query({ where: [{ field: 'value.age', operator: 'gt', value: 30 }] }))).toEqual(['u1', 'u2']);
    expect(keys(await query({ where: [{ field: 'value.age', operator: 'eq', value: '28' }] }))).toEqual(['u3']);
    expect(keys(await query({ where: [{ field: 'value.active', operator: 'eq', value: true }] }))).toEqual(['u1', 'u3']);
    expect(keys(await query({ where: [{ field: 'value.tags', operator: 'contains', value: 'navy' }] }))).toEqual(['u2']);
    expect(keys(await query({ where: [{ field: 'value.name', operator: 'contains', value: 'in' }] }))).toEqual(['u3']);
    expect(keys(await query({ where: [{ field: 'value.name', operator: 'startsWith', value: 'Gr' }] }))).toEqual(['u2']);
    expect(keys(await query({ where: [{ field: 'value.name', operator: 'endsWith', value: 'a' }] }))).toEqual(['u1']);
    expect(keys(await query({ where: [{ field: 'value', operator: 'eq', value: 'plain string' }] }))).toEqual(['u4']);
    expect(keys(await query({ where: [{ field: 'value.tags.0', operator: 'eq', value: 'math' }] }))).toEqual(['u1']);
  });
  it('combines conditions, orders, pages, selects and counts', async () => {
    const result = await query({
      where: [{ field: 'key', operator: 'startsWith', value: 'u' }, { field: 'version', operator: 'eq', value: 1 }],
      orderBy: { field: 'value.age', direction: 'desc' },
      select: ['key', 'value'],
      limit: 2,
      offset: 1,
    });
    expect(result).toMatchObject({ total: 4, limit: 2, offset: 1 });
    expect(result.records).toHaveLength(2);
    expect(Object.keys(result.records[0]).sort()).toEqual(['key', 'value']);
  });
  it('spans namespaces without from.namespace', async () => {
    const result = (await ok('kvStore.query', { query: { from: { instance: id }, where: [{ field: 'value.name', operator: 'eq', value: 'Ada' }] } })).result;
    expect(result.records.map((r: any) => r.namespace).sort()).toEqual(['other', 'users']);
  });
  it('compares times as times', async () => {
    const past = await query({ where: [{ field: 'createdAt', operator: 'gt', value: '2000-01-01T00:00:00Z' }] });
    expect(past.total).toBe(4);
    for (const value of ['yesterday', '2026-01-01T00:00:00', '2026-01-01']) {
      // A time without a zone would be read in the server's zone: refused rather than guessed.
      await fails('kvStore.query', { query: { from: { instance: id }, where: [{ field: 'createdAt', operator: 'gt', value }] } }, 'VALIDATION_ERROR');
    }
    const future = await query({ where: [{ field: 'updatedAt', operator: 'gte', value: '2999-01-01T00:00:00.000+02:00' }] });
    expect(future.total).toBe(0);
  });
  it.each([
    [{ where: [{ field: 'value; DROP TABLE records', operator: 'eq', value: 1 }] }],
    [{ where: [{ field: 'value.age', operator: 'like', value: 1 }] }],
    [{ where: [{ field: 'key', operator: 'eq', value: 5 }] }],
    [{ where: [{ field: 'version', operator: 'contains', value: 1 }] }],
    [{ where: [{ field: 'value.age', operator: 'gt', value: { a: 1 } }] }],
    [{ where: [{ field: 'value.a"b', operator: 'eq', value: 1 }] }],
    [{ orderBy: { field: 'rowid', direction: 'asc' } }],
    [{ select: ['password'] }],
    [{ limit: 1001 }],
    [{ offset: -1 }],
  ])('refuses %j', async (q) => {
    await fails('kvStore.query', { query: { from: { instance: id }, ...q } }, 'VALIDATION_ERROR');
  });
});
