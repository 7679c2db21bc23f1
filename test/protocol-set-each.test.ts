/**
 * kvStore.setEach over real sockets: each entry set on its own, in order, as that many sets would
 * be, as one write whose reply is kept whole under one idempotency key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

describe('kvStore.setEach', () => {
  let server: TestServer;
  let client: RawClient;

  beforeAll(async () => {
    server = await startTestServer({ limits: { maxBatch: 8 } });
    client = await connectRaw(server.url);
  });
  afterAll(async () => {
    await client.close();
    await server.close();
  });

  const request = (type: string, params: object) => client.request({ type, requestId: rid(), params });
  const setEach = (instanceId: string, entries: object[], extra: object = {}) =>
    request('kvStore.setEach', { instanceId, namespace: 'n', entries, autoCreateInstance: true, ...extra });
  const get = async (instanceId: string, key: string) => (await request('kvStore.get', { instanceId, namespace: 'n', key })).data.record;

  it('sets each entry in order, each with its own revision, and answers each with the record a get then reads', async () => {
    const reply = await setEach('each', [
      { key: 'a', value: { n: 1 } },
      { key: 'b', value: 'AAH+', contentType: 'application/octet-stream', ttlMs: 60_000 },
      { key: 'a', value: { n: 2 } },
    ]);
    expect(reply).toMatchObject({ type: 'kvStore.setEach', success: true });
    const results = reply.data.results;
    expect(results.map((result: { success: boolean }) => result.success)).toEqual([true, true, true]);
    // The same key twice is two sets, in entry order.
    expect(results.map((result: { record: { key: string; version: number } }) => [result.record.key, result.record.version])).toEqual([
      ['a', 1],
      ['b', 1],
      ['a', 2],
    ]);
    const revisions = results.map((result: { record: { revision: number } }) => result.record.revision);
    expect(revisions).toEqual([revisions[0], revisions[0] + 1, revisions[0] + 2]);
    expect(results[2].record).toEqual(await get('each', 'a'));
    expect(results[1].record).toEqual(await get('each', 'b'));
    expect(results[1].record.expiresAt).not.toBeNull();
  });

  it('fails an entry alone with what its set alone would have been answered, and writes the others', async () => {
    await setEach('alone', [{ key: 'taken', value: 'first' }]);
    const current = await get('alone', 'taken');
    const reply = await setEach('alone', [
      { key: 'x', value: 1 },
      { key: 'taken', value: 'second', ifAbsent: true },
      { key: 'y', value: 2, ttlMs: -5 },
      { key: 'z', value: 3, ifVersion: 7 },
      { key: 'w', value: 4 },
    ]);
    expect(reply.success).toBe(true);
    const [x, taken, y, z, w] = reply.data.results;
    expect([x.success, w.success]).toEqual([true, true]);
    expect(taken).toMatchObject({ success: false, code: 'CONFLICT', data: { current } });
    expect(y).toMatchObject({ success: false, code: 'INVALID_TTL' });
    expect(z).toMatchObject({ success: false, code: 'CONFLICT', data: { current: null } });
    // Exactly what a set alone answers (its message and details), apart from the envelope.
    const alone = await request('kvStore.set', { instanceId: 'alone', namespace: 'n', key: 'y', value: 2, ttlMs: -5 });
    expect(y).toEqual({ success: false, code: alone.code, error: alone.error, data: alone.data });
    expect(await get('alone', 'taken')).toEqual(current);
    expect([await get('alone', 'y'), await get('alone', 'z')]).toEqual([null, null]);
    expect((await get('alone', 'w')).revision).toBe(x.record.revision + 1);
  });

  it('answers each entry INSTANCE_NOT_FOUND when the instance is missing and not to be created', async () => {
    const reply = await request('kvStore.setEach', { instanceId: 'nowhere', namespace: 'n', entries: [{ key: 'a', value: 1 }, { key: 'b', value: 2 }] });
    expect(reply.data.results.map((result: { code: string }) => result.code)).toEqual(['INSTANCE_NOT_FOUND', 'INSTANCE_NOT_FOUND']);
  });

  it('refuses as a whole, writing nothing, a malformed entry, more than maxBatch entries, and a reply that could not fit', async () => {
    const malformed = await setEach('whole', [{ key: 'ok', value: 1 }, { key: '', value: 2 }]);
    expect(malformed).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
    expect(malformed.data.issues[0].path).toEqual(['entries', 1, 'key']);
    const tooMany = await setEach('whole', Array.from({ length: 9 }, (_, i) => ({ key: `k${i}`, value: i })));
    expect(tooMany).toMatchObject({ success: false, code: 'LIMIT_EXCEEDED', data: { maxBatch: 8 } });
    // Eight values of 1 MiB fit a 16 MiB frame, and so would their records; so would five, but
    // not six, failed conditions, whose results carry the key's current record, which may hold the
    // largest value at its worst escaping (the room of a get's reply each, 2.8 MB).
    const big = 'x'.repeat(1024 * 1024 - 2);
    const fits = await setEach('whole', Array.from({ length: 8 }, (_, i) => ({ key: `big${i}`, value: big })));
    expect(fits.success).toBe(true);
    const conditional = (count: number) => Array.from({ length: count }, (_, i) => ({ key: `c${i}`, value: i, ifVersion: 1 }));
    expect((await setEach('whole', conditional(5))).success).toBe(true);
    expect(await setEach('whole', conditional(6))).toMatchObject({ success: false, code: 'LIMIT_EXCEEDED' });
    // The first write to the instance was the one that fitted: the refused ones wrote nothing.
    expect([await get('whole', 'ok'), await get('whole', 'k0')]).toEqual([null, null]);
  });

  it('runs once under one idempotency key: a repeat gets the kept results, failures included, and writes nothing', async () => {
    await setEach('once', [{ key: 'held', value: 0 }]);
    const entries = [
      { key: 'a', value: 1 },
      { key: 'held', value: 1, ifAbsent: true },
    ];
    const first = await setEach('once', entries, { idempotencyKey: 'each-1' });
    const repeat = await setEach('once', entries, { idempotencyKey: 'each-1' });
    const content = ({ requestId: _r, timestamp: _t, ...rest }: Record<string, unknown>) => rest;
    expect(content(repeat)).toEqual(content(first));
    expect(first.data.results[1]).toMatchObject({ success: false, code: 'CONFLICT' });
    expect((await get('once', 'a')).version).toBe(1);
    const other = await setEach('once', [{ key: 'a', value: 2 }], { idempotencyKey: 'each-1' });
    expect(other).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
    expect((await get('once', 'a')).version).toBe(1);
  });
});
