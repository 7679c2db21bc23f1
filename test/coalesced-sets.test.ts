/**
 * The SDK sends a run of sets made in one tick as one kvStore.setEach per instance and namespace,
 * and resolves each set with the envelope it would have had alone; when nothing of the setEach
 * ran, each set goes out again on its own. (A drop with a setEach in flight: sdk-exactly-once.)
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { MAX_SETS_PER_SET_EACH } from '../sdk/set-each.js';
import { createClient, type ClientOptions, type KvClient } from '../sdk/index.js';
import { cleanUpAfterEach } from './helpers/cleanups.js';
import { answered } from './helpers/metrics.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const cleanUp = cleanUpAfterEach();

function client(options: ClientOptions): KvClient {
  const c = createClient({ requestTimeoutMs: 5000, reconnect: false, ...options });
  cleanUp(() => c.close());
  return c;
}

async function server(): Promise<TestServer> {
  const s = await startTestServer({ durability: 'full' });
  cleanUp(() => s.close());
  return s;
}

/** Requests of each of `types` the server has answered so far. */
async function counts(s: TestServer, types: string[]): Promise<number[]> {
  return Promise.all(types.map((type) => answered(s, type)));
}
const TYPES = ['kvStore.setEach', 'kvStore.set'];
/** The setEachs and sets the server answered since `before` was counted. */
async function answeredSince(s: TestServer, before: number[]): Promise<number[]> {
  return (await counts(s, TYPES)).map((n, i) => n - before[i]!);
}

describe('the sets of one tick', () => {
  it('go as one setEach per instance and namespace, and each resolves with what a set alone gives', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const alone = client({ url: s.url, batchRequests: false });
    expect((await c.waitForReady()).capabilities).toContain('setEach');
    const set = (k: KvClient, key: string, value: unknown, extra: object = {}) =>
      k.request('kvStore.set', { instanceId: 'sets', namespace: 'n', key, value, autoCreateInstance: true, ...extra });
    const before = await counts(s, TYPES);
    const together = await Promise.all([set(c, 'a', { deep: [1, 'two'] }), set(c, 'b', 'AAH+', { contentType: 'application/octet-stream', ttlMs: 60_000 }), set(c, 'a', null)]);
    expect(await answeredSince(s, before)).toEqual([1, 0]);
    expect(together.map((reply) => reply.type)).toEqual(['kvStore.set', 'kvStore.set', 'kvStore.set']);
    expect(new Set(together.map((reply) => reply.requestId)).size).toBe(3);
    const records = together.map((reply) => (reply.success ? reply.data.record : undefined));
    expect(records.map((record) => [record?.key, record?.version, record?.value])).toEqual([
      ['a', 1, { deep: [1, 'two'] }],
      ['b', 1, 'AAH+'],
      ['a', 2, null],
    ]);
    expect(records[1]?.expiresAt).not.toBeNull();
    // What the server holds is what the replies say, and a set alone answers the same shape.
    const read = await alone.request('kvStore.get', { instanceId: 'sets', namespace: 'n', key: 'a' });
    expect(read.success && read.data.record).toEqual(records[2]);
    const one = await set(alone, 'c', 1);
    expect(Object.keys(one).sort()).toEqual(Object.keys(together[0]!).sort());
    expect(Object.keys(one.success && one.data.record).sort()).toEqual(Object.keys(records[0]!).sort());
  });

  it('keep the order of the requests around them: a run ends at any other request and at another namespace', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const ns = c.instance('order', { autoCreate: true }).namespace('n');
    const other = c.instance('order', { autoCreate: true }).namespace('m');
    await ns.set('seed', 0);
    const before = await counts(s, TYPES);
    const [, , seen] = await Promise.all([ns.set('k', 1), ns.set('k', 2), ns.get('k'), ns.set('k', 3)]);
    expect(seen).toBe(2);
    expect(await ns.get('k')).toBe(3);
    // Two sets to n, then a get: one setEach; the set after the get goes in a frame of its own.
    expect(await answeredSince(s, before)).toEqual([1, 1]);
    const again = await counts(s, TYPES);
    await Promise.all([ns.set('x', 1), other.set('x', 1), ns.set('y', 1)]);
    expect(await answeredSince(s, again)).toEqual([0, 3]);
  });

  it('fail one by one: a bad TTL or a failed condition fails its set alone, and the others are written', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const ns = c.instance('one', { autoCreate: true }).namespace('n');
    await ns.set('taken', 'first');
    const before = await counts(s, TYPES);
    const outcomes = await Promise.allSettled([ns.set('a', 1), ns.set('b', 2, { ttlMs: -1 }), ns.set('c', 3), ns.setnx('taken', 'second')]);
    expect(outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : (o.reason as { code: string }).code))).toEqual(['ok', 'INVALID_TTL', 'ok', 'ok']);
    expect(outcomes[3]).toMatchObject({ status: 'fulfilled', value: false });
    // The set with a condition went on its own, the others in one setEach.
    expect(await answeredSince(s, before)).toEqual([1, 1]);
    expect(await Promise.all([ns.get('a'), ns.get('b'), ns.get('c'), ns.get('taken')])).toEqual([1, undefined, 3, 'first']);
  });

  it("that the server's schema would refuse go on their own, so that they cannot take the others down", async () => {
    const s = await server();
    const c = client({ url: s.url });
    const set = (key: string, extra: object = {}) => c.request('kvStore.set', { instanceId: 'refused', namespace: 'n', key, value: key, autoCreateInstance: true, ...extra });
    const before = await counts(s, TYPES);
    const replies = await Promise.all([set('a'), set('b'), set('c', { contentType: '' }), set('d', { ttlMs: Number.NaN }), set('e'), set('f')]);
    expect(replies.map((reply) => (reply.success ? 'ok' : reply.code))).toEqual(['ok', 'ok', 'VALIDATION_ERROR', 'VALIDATION_ERROR', 'ok', 'ok']);
    expect(replies[2]).toMatchObject({ type: 'kvStore.set', data: { issues: [{ path: ['contentType'] }] } });
    // a and b in one setEach, c and d alone, e and f in another setEach.
    expect(await answeredSince(s, before)).toEqual([2, 2]);
  });

  it('that a caller gave a key, or a condition, go on their own', async () => {
    const s = await server();
    const c = client({ url: s.url });
    const set = (key: string, extra: object = {}) => c.request('kvStore.set', { instanceId: 'own', namespace: 'n', key, value: 1, autoCreateInstance: true, ...extra });
    const before = await counts(s, TYPES);
    await Promise.all([set('a', { idempotencyKey: 'mine-1' }), set('b', { idempotencyKey: 'mine-2' }), set('c', { ifAbsent: true }), set('d', { ifVersion: 0 })]);
    expect(await answeredSince(s, before)).toEqual([0, 4]);
    // The caller's key is the one kept: the same set again with it is answered from the kept reply.
    const repeat = await set('a', { idempotencyKey: 'mine-1' });
    expect(repeat.success && repeat.data.record.version).toBe(1);
  });
});

describe('a setEach', () => {
  /**
   * A fake server that answers hello with `capabilities` and every set with a record (after
   * `delayMs`), or every setEach with `refuse`'s failure, recording the request types (each batch
   * element on its own) and setEach sizes.
   */
  async function fakeServer(capabilities: string[], { delayMs = 0, refuse }: { delayMs?: number; refuse?: string } = {}) {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    cleanUp(() => new Promise<void>((resolve) => wss.close(() => resolve())));
    const received: string[] = [];
    const sizes: number[] = [];
    const hello = { protocolVersion: 1, serverVersion: 'fake', durability: 'full', capabilities, limits: { maxValueBytes: 1024, maxPayloadBytes: 1 << 20, maxBatch: 1000 } };
    const at = new Date().toISOString();
    const record = (key: string, value: unknown) => ({ id: key, instanceId: 'i', namespace: 'n', key, value, contentType: 'application/json', version: 1, revision: 1, createdAt: at, updatedAt: at, expiresAt: null });
    wss.on('connection', (socket: WebSocket) => {
      socket.on('error', () => undefined);
      socket.on('message', (text) => {
        const parsed = JSON.parse(text.toString()) as Req | Req[];
        const answer = (r: Req) => {
          const reply = (data: unknown) => ({ type: r.type, requestId: r.requestId, success: true, data, timestamp: at });
          if (r.type === 'kvStore.hello') return reply(hello);
          received.push(r.type);
          if (r.type === 'kvStore.setEach') {
            sizes.push(r.params.entries!.length);
            if (refuse !== undefined) return { type: r.type, requestId: r.requestId, success: false, code: refuse, error: 'refused', timestamp: at };
            return reply({ results: r.params.entries!.map((entry) => ({ success: true, record: record(entry.key, entry.value) })) });
          }
          return reply({ record: record(r.params.key!, r.params.value) });
        };
        const replies = JSON.stringify(Array.isArray(parsed) ? parsed.map(answer) : answer(parsed));
        if (delayMs === 0) socket.send(replies);
        else setTimeout(() => socket.send(replies), delayMs);
      });
    });
    return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, received, sizes };
  }
  interface Req {
    type: string;
    requestId: string;
    params: { key?: string; value?: unknown; entries?: { key: string; value: unknown }[] };
  }

  it(`holds at most MAX_SETS_PER_SET_EACH (${MAX_SETS_PER_SET_EACH}) sets`, async () => {
    const fake = await fakeServer(['batch', 'setEach']);
    const c = client({ url: fake.url });
    await c.waitForReady();
    const ns = c.instance('i').namespace('n');
    const keys = Array.from({ length: MAX_SETS_PER_SET_EACH + 3 }, (_, k) => `k${k}`);
    const records = await Promise.all(keys.map((key) => ns.set(key, key.toUpperCase())));
    expect(records.map((record) => record.value)).toEqual(keys.map((key) => key.toUpperCase()));
    expect(fake.sizes).toEqual([MAX_SETS_PER_SET_EACH, 3]);
  });

  it('refused as a whole with VALIDATION_ERROR, LIMIT_EXCEEDED or UNKNOWN_TYPE ran nothing: its sets go out again on their own', async () => {
    for (const code of ['VALIDATION_ERROR', 'LIMIT_EXCEEDED', 'UNKNOWN_TYPE']) {
      const fake = await fakeServer(['batch', 'setEach'], { refuse: code });
      const c = client({ url: fake.url });
      await c.waitForReady();
      const ns = c.instance('i').namespace('n');
      expect((await Promise.all([ns.set('a', 1), ns.set('b', 2)])).map((record) => record.value)).toEqual([1, 2]);
      expect(fake.received).toEqual(['kvStore.setEach', 'kvStore.set', 'kvStore.set']);
    }
  });

  it('refused as a whole otherwise answers each set with that failure, under its own type and requestId', async () => {
    const fake = await fakeServer(['batch', 'setEach'], { refuse: 'RATE_LIMITED' });
    const c = client({ url: fake.url });
    await c.waitForReady();
    const set = (key: string) => c.request('kvStore.set', { instanceId: 'i', namespace: 'n', key, value: 1 });
    const replies = await Promise.all([set('a'), set('b')]);
    expect(replies.map((reply) => [reply.type, reply.success ? 'ok' : reply.code])).toEqual([
      ['kvStore.set', 'RATE_LIMITED'],
      ['kvStore.set', 'RATE_LIMITED'],
    ]);
    expect(replies[0]!.requestId).not.toBe(replies[1]!.requestId);
    expect(fake.received).toEqual(['kvStore.setEach']);
  });

  it('leaves a set that timed out meanwhile rejected, and resolves the others', async () => {
    const fake = await fakeServer(['batch', 'setEach'], { delayMs: 200 });
    const c = client({ url: fake.url });
    await c.waitForReady();
    const ns = c.instance('i').namespace('n');
    const outcomes = await Promise.allSettled([ns.set('a', 1), ns.set('b', 2, { timeoutMs: 50 }), ns.set('c', 3)]);
    expect(outcomes.map((o) => (o.status === 'fulfilled' ? o.value.value : (o.reason as { code: string }).code))).toEqual([1, 'TIMEOUT', 3]);
    expect(fake.sizes).toEqual([3]);
  });

  it('is never sent to a server that does not list setEach: the sets go as they did before it', async () => {
    const fake = await fakeServer(['batch']);
    const c = client({ url: fake.url });
    await c.waitForReady();
    const ns = c.instance('i').namespace('n');
    expect((await Promise.all([ns.set('a', 1), ns.set('b', 2)])).map((record) => record.value)).toEqual([1, 2]);
    expect(fake.received).toEqual(['kvStore.set', 'kvStore.set']);
  });
});
