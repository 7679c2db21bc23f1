/**
 * The SDK sends the gets of one tick as one kvStore.getMany per instance and namespace, and
 * resolves each get with the envelope it would have had alone; when the getMany fails, each get
 * goes out again on its own.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { batchCapacity, ENVELOPE_RESERVE_BYTES, singleReplyRoom } from '../protocol/index.js';
import { MAX_GETS_PER_GET_MANY } from '../sdk/coalesce.js';
import { createClient, type ClientOptions, type KvClient } from '../sdk/index.js';
import { cleanUpAfterEach } from './helpers/cleanups.js';
import { answered, failed } from './helpers/metrics.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const cleanUp = cleanUpAfterEach();

function client(options: ClientOptions): KvClient {
  const c = createClient({ requestTimeoutMs: 5000, reconnect: false, ...options });
  cleanUp(() => c.close());
  return c;
}

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const s = await startTestServer({ durability: 'full', ...options });
  cleanUp(() => s.close());
  return s;
}

/** A reply without what differs between two sendings of the same request. */
const content = ({ requestId: _id, timestamp: _at, ...rest }: { requestId: string | null; timestamp: string }) => rest;

describe('the gets of one tick', () => {
  it('go as one getMany per instance and namespace, and each resolves with what a get alone gives', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const one = client({ url: s.url, batchRequests: false });
    const i = c.instance('coalesced', { autoCreate: true });
    await Promise.all([i.namespace('a').set('json', { deep: [1, 'two'] }), i.namespace('a').set('n', null), i.namespace('b').set('bytes', new Uint8Array([0, 1, 254]))]);
    const asked = [
      ['a', 'json'],
      ['b', 'bytes'],
      ['a', 'missing'],
      ['a', 'n'],
      ['b', 'missing'],
      ['a', 'json'],
    ] as const;
    const get = (k: KvClient, [namespace, key]: readonly [string, string]) => k.request('kvStore.get', { instanceId: 'coalesced', namespace, key });
    const [getsBefore, manyBefore] = [await answered(s, 'kvStore.get'), await answered(s, 'kvStore.getMany')];
    const together = await Promise.all(asked.map((where) => get(c, where)));
    expect([(await answered(s, 'kvStore.get')) - getsBefore, (await answered(s, 'kvStore.getMany')) - manyBefore]).toEqual([0, 2]);
    const alone = [];
    for (const where of asked) alone.push(await get(one, where));
    expect(together.map(content)).toEqual(alone.map(content));
    expect(together.every((reply) => reply.type === 'kvStore.get')).toBe(true);
    expect(new Set(together.map((reply) => reply.requestId)).size).toBe(asked.length);
    expect(together[1]).toMatchObject({ success: true, data: { exists: true, value: 'AAH+', record: { contentType: 'application/octet-stream' } } });
  });

  it("of a handle go as one getValues, without records, and read what getRecord reads", async () => {
    const s = await server();
    const c = client({ url: s.url });
    expect((await c.waitForReady()).capabilities).toContain('getValues');
    const ns = c.instance('values', { autoCreate: true }).namespace('n');
    await ns.set('json', { a: [1, 'two'] });
    await ns.set('nothing', null);
    await ns.set('bytes', new Uint8Array([0, 1, 254]), { contentType: 'application/octet-stream' });
    const counts = async () => [await answered(s, 'kvStore.getValues'), await answered(s, 'kvStore.getMany'), await answered(s, 'kvStore.get')];
    const before = await counts();
    const keys = ['json', 'nothing', 'bytes', 'absent'];
    const values = await Promise.all(keys.map((key) => ns.get(key)));
    expect(values).toEqual([{ a: [1, 'two'] }, null, new Uint8Array([0, 1, 254]), undefined]);
    expect((await counts()).map((n, i) => n - before[i]!)).toEqual([1, 0, 0]);
    const records = await Promise.all(keys.map((key) => ns.getRecord(key)));
    expect(records.map((record) => record?.value)).toEqual(values);
    // A handle's getMany wants the values alone too: it goes as a getValues.
    const beforeMany = await counts();
    expect(await ns.getMany(keys)).toEqual(values);
    expect((await counts()).map((n, i) => n - beforeMany[i]!)).toEqual([1, 0, 0]);
  });

  it('kvStore.getValues answers each key with its value and content type, in the order asked', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const ns = c.instance('values', { autoCreate: true }).namespace('n');
    await ns.set('json', { a: [1, 'two'] });
    await ns.set('bytes', new Uint8Array([0, 1, 254]), { contentType: 'application/octet-stream' });
    const reply = await c.kvStore.getValues({ instanceId: 'values', namespace: 'n', keys: ['bytes', 'absent', 'json'] });
    expect(reply).toMatchObject({ type: 'kvStore.getValues', success: true });
    const items = reply.success ? reply.data.items : [];
    expect(items).toEqual([
      { key: 'bytes', exists: true, value: 'AAH+', contentType: 'application/octet-stream' },
      { key: 'absent', exists: false, value: null, contentType: null },
      { key: 'json', exists: true, value: { a: [1, 'two'] }, contentType: 'application/json' },
    ]);
    expect(Object.keys(items[0]!)).toEqual(['key', 'exists', 'value', 'contentType']);
    const missing = await c.kvStore.getValues({ instanceId: 'nowhere', namespace: 'n', keys: ['k'] });
    expect(missing).toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND' });
  });

  it('see the writes made before them in the tick, and not those made after', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const ns = c.instance('ordered', { autoCreate: true }).namespace('n');
    await ns.set('k', 1);
    const [before1, before2, , after1, after2] = await Promise.all([ns.get('k'), ns.get('k'), ns.set('k', 2), ns.get('k'), ns.get('k')]);
    expect([before1, before2, after1, after2]).toEqual([1, 1, 2, 2]);
  });

  it('go out again one by one when together they are more than a reply frame holds, and from then on in getManys that surely fit', async () => {
    const limits = { maxValueBytes: 65_536, maxPayloadBytes: 3 * singleReplyRoom(65_536) + ENVELOPE_RESERVE_BYTES };
    expect(batchCapacity({ ...limits, maxBatch: 1000 })).toBe(3);
    const s = await server({ limits });
    const c = client({ url: s.url });
    const ns = c.instance('fallback', { autoCreate: true }).namespace('n');
    const big = 'x'.repeat(60_000);
    // 12 values of 60 KB: about 720 KB, where a frame holds about 640 KB. A handle's gets go in a
    // getValues (one copy of each value); the split is the same as a getMany's.
    const keys = Array.from({ length: 12 }, (_, k) => `k${k}`);
    await Promise.all(keys.map((key) => ns.set(key, big)));
    const counts = async () => [await answered(s, 'kvStore.getValues'), await answered(s, 'kvStore.get'), await failed(s, 'LIMIT_EXCEEDED')];
    const readAll = async () => expect(await Promise.all(keys.map((key) => ns.get(key)))).toEqual(keys.map(() => big));
    const before = await counts();
    await readAll();
    const afterFirst = await counts();
    expect(afterFirst.map((n, i) => n - before[i]!)).toEqual([1, 12, 1]);
    // Refused once, the client puts at most batchCapacity gets in a getMany: 4 of 3, all answered.
    await readAll();
    expect((await counts()).map((n, i) => n - afterFirst[i]!)).toEqual([4, 0, 0]);
  });

  it('leave a key the server would refuse out of the getMany, so that it fails alone', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const ns = c.instance('bad-keys', { autoCreate: true }).namespace('n');
    await Promise.all([ns.set('a', 1), ns.set('b', 2)]);
    const [manyBefore, getsBefore] = [await answered(s, 'kvStore.getMany'), await answered(s, 'kvStore.get')];
    const keys = ['a', '', 'b', 'k'.repeat(1025), '\ud800'];
    const replies = await Promise.all(keys.map((key) => c.request('kvStore.get', { instanceId: 'bad-keys', namespace: 'n', key })));
    expect(replies.map((reply) => (reply.success ? reply.data.value : reply.code))).toEqual([1, 'VALIDATION_ERROR', 2, 'VALIDATION_ERROR', 'VALIDATION_ERROR']);
    expect([(await answered(s, 'kvStore.getMany')) - manyBefore, (await answered(s, 'kvStore.get')) - getsBefore]).toEqual([1, 3]);
  });

  it('each get the failure of their getMany that a get alone would have had, before the requests made after them', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const get = (key: string) => c.request('kvStore.get', { instanceId: 'later', namespace: 'n', key });
    const [manyBefore, getsBefore] = [await answered(s, 'kvStore.getMany'), await answered(s, 'kvStore.get')];
    // The instance is created after the gets were made: they must find it missing.
    const [a, b, created] = await Promise.all([get('a'), get('b'), c.kvStore.createInstance('later', undefined, { id: 'later' })]);
    expect(created.success).toBe(true);
    for (const [reply, requestId] of [[a, a.requestId], [b, b.requestId]] as const) {
      expect(reply).toMatchObject({ type: 'kvStore.get', requestId, success: false, code: 'INSTANCE_NOT_FOUND' });
    }
    expect(a.requestId).not.toBe(b.requestId);
    expect([(await answered(s, 'kvStore.getMany')) - manyBefore, (await answered(s, 'kvStore.get')) - getsBefore]).toEqual([1, 0]);
  });
});

describe('a getMany standing for gets', () => {
  /**
   * A server that greets, then holds every getMany for `delayMs` before answering it (its items
   * in reverse order with `reversed`), or never answers and drops the socket.
   */
  async function slowServer(behaviour: { delayMs: number; reversed?: boolean } | 'drop') {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    cleanUp(() => new Promise<void>((resolve) => wss.close(() => resolve())));
    const received: string[] = [];
    const keyCounts: number[] = [];
    const hello = { protocolVersion: 1, serverVersion: 'slow', durability: 'full', capabilities: ['batch'], limits: { maxValueBytes: 1024, maxPayloadBytes: 1 << 20, maxBatch: 1000 } };
    wss.on('connection', (socket: WebSocket) => {
      socket.on('error', () => undefined);
      socket.on('message', (text) => {
        const r = JSON.parse(text.toString()) as { type: string; requestId: string; params: { keys?: string[] } };
        const reply = (data: unknown) => socket.send(JSON.stringify({ type: r.type, requestId: r.requestId, success: true, data, timestamp: new Date().toISOString() }));
        if (r.type === 'kvStore.hello') return reply(hello);
        received.push(r.type);
        keyCounts.push(r.params.keys?.length ?? 1);
        if (behaviour === 'drop') return socket.terminate();
        const at = new Date().toISOString();
        const record = (key: string) => ({ id: key, instanceId: 'i', namespace: 'n', key, value: key.toUpperCase(), contentType: 'application/json', version: 1, revision: 1, createdAt: at, updatedAt: at, expiresAt: null });
        const items = r.params.keys!.map((key) => ({ key, exists: true, value: key.toUpperCase(), record: record(key) }));
        if (behaviour.reversed === true) items.reverse();
        setTimeout(() => reply({ items }), behaviour.delayMs);
      });
    });
    return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, received, keyCounts };
  }

  it('holds at most MAX_GETS_PER_GET_MANY gets, so that the server answers one while the client sends the next', async () => {
    const slow = await slowServer({ delayMs: 0 });
    const c = client({ url: slow.url });
    await c.waitForReady();
    const keys = Array.from({ length: MAX_GETS_PER_GET_MANY + 8 }, (_, k) => `k${k}`);
    const replies = await Promise.all(keys.map((key) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key })));
    expect(replies.map((reply) => reply.success && reply.data.value)).toEqual(keys.map((key) => key.toUpperCase()));
    expect(slow.keyCounts).toEqual([MAX_GETS_PER_GET_MANY, 8]);
  });

  it("carries a handle's gets to a server without the getValues capability, as it does any get", async () => {
    const slow = await slowServer({ delayMs: 0 });
    const c = client({ url: slow.url });
    await c.waitForReady();
    const ns = c.instance('i').namespace('n');
    expect(await Promise.all([ns.get('a'), ns.get('b')])).toEqual(['A', 'B']);
    expect(slow.received).toEqual(['kvStore.getMany']);
    // A handle's getMany goes as the getMany it is.
    expect(await ns.getMany(['c', 'd'])).toEqual(['C', 'D']);
    expect(slow.received).toEqual(['kvStore.getMany', 'kvStore.getMany']);
  });

  it('leaves a get that timed out meanwhile rejected, and resolves the others', async () => {
    const slow = await slowServer({ delayMs: 200 });
    const c = client({ url: slow.url });
    await c.waitForReady();
    const get = (key: string, timeoutMs?: number) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key }, timeoutMs === undefined ? {} : { timeoutMs });
    const outcomes = await Promise.allSettled([get('a'), get('b', 50), get('c')]);
    expect(outcomes.map((o) => (o.status === 'fulfilled' ? (o.value.success && o.value.data.value) : (o.reason as { code: string }).code))).toEqual([
      'A',
      'TIMEOUT',
      'C',
    ]);
    expect(slow.received).toEqual(['kvStore.getMany']);
  });

  it('fails its gets with INTERNAL_ERROR when its items are not of their keys, and sends none again', async () => {
    const wrong = await slowServer({ delayMs: 0, reversed: true });
    const c = client({ url: wrong.url });
    await c.waitForReady();
    const outcomes = await Promise.allSettled(['a', 'b'].map((key) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key })));
    expect(outcomes.map((o) => o.status === 'rejected' && (o.reason as { code: string }).code)).toEqual(['INTERNAL_ERROR', 'INTERNAL_ERROR']);
    expect(wrong.received).toEqual(['kvStore.getMany']);
  });

  it('fails its gets with CONNECTION_CLOSED when the socket drops before its reply', async () => {
    const dropping = await slowServer('drop');
    const c = client({ url: dropping.url });
    await c.waitForReady();
    const outcomes = await Promise.allSettled(['a', 'b'].map((key) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key })));
    expect(outcomes.map((o) => o.status === 'rejected' && (o.reason as { code: string }).code)).toEqual(['CONNECTION_CLOSED', 'CONNECTION_CLOSED']);
    expect(dropping.received).toEqual(['kvStore.getMany']);
  });
});
