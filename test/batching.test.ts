/**
 * Batches end to end: the server starts the single-key elements of a batch together so that their
 * writes share one commit, keeping the batch's order; the SDK puts the single-key requests of one
 * tick into batch frames sized by the server's limits.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { batchCapacity, DEFAULT_LIMITS, ENVELOPE_RESERVE_BYTES, largestSingleReply } from '../protocol/index.js';
import { createClient, type ClientOptions, type KvClient } from '../sdk/index.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { cleanUpAfterEach } from './helpers/cleanups.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { metric } from './helpers/metrics.js';

const cleanUp = cleanUpAfterEach();

function client(options: ClientOptions): KvClient {
  const c = createClient({ requestTimeoutMs: 5000, reconnect: false, ...options });
  cleanUp(() => c.close());
  return c;
}

async function raw(url: string): Promise<RawClient> {
  const c = await connectRaw(url);
  cleanUp(() => c.close());
  return c;
}

const commits = (server: TestServer) => metric(server, 'kvhub_storage_commits_total');

const request = (type: string, params: object) => ({ type, requestId: rid(), params });

describe('a batch on the server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'full' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('commits the writes of a batch together: one commit for as many sets as the reply frame surely holds', async () => {
    const c = await raw(server.url);
    await c.request(request('kvStore.createInstance', { id: 'one-commit', name: 'one-commit' }));
    const before = await commits(server);
    // Under the default limits, 5 of the largest single-key replies fit in one frame.
    const capacity = batchCapacity(DEFAULT_LIMITS);
    expect(capacity).toBe(5);
    const sets = Array.from({ length: capacity }, (_, i) => request('kvStore.set', { instanceId: 'one-commit', namespace: 'n', key: `k${i}`, value: i }));
    const replies = await c.request<{ success: boolean; requestId: string; data: { record: { value: unknown } } }[]>(sets);
    expect(replies.map((r) => r.requestId)).toEqual(sets.map((s) => s.requestId));
    expect(replies.map((r) => r.success && r.data.record.value)).toEqual(sets.map((_, i) => i));
    expect((await commits(server)) - before).toBe(1);
  });

  it('keeps the order of its elements, also across an element that waits for the ones before it', async () => {
    const c = await raw(server.url);
    const at = { instanceId: 'ordered', namespace: 'n' };
    const replies = await c.request<{ success: boolean; code?: string; data: any }[]>([
      request('kvStore.set', { ...at, key: 'k', value: 1, autoCreateInstance: true }),
      request('kvStore.get', { ...at, key: 'k' }),
      request('kvStore.set', { ...at, key: 'k', value: 2, ifVersion: 1 }),
      request('kvStore.set', { ...at, key: 'k', value: 3, ifVersion: 1 }), // CONFLICT: the one before made version 2
      request('kvStore.incr', { ...at, key: 'c' }),
      request('kvStore.incr', { ...at, key: 'c', by: 5 }),
      request('kvStore.list', { ...at }), // waits for every element before it
      request('kvStore.delete', { ...at, key: 'k' }),
      request('kvStore.get', { ...at, key: 'k' }),
      request('kvStore.ttl', { ...at, key: 'c' }),
    ]);
    expect(replies.map((r) => r.success)).toEqual([true, true, true, false, true, true, true, true, true, true]);
    expect(replies[1]!.data.value).toBe(1);
    expect(replies[2]!.data.record.version).toBe(2);
    expect(replies[3]!.code).toBe('CONFLICT');
    expect(replies[5]!.data.record.value).toBe(6);
    expect(replies[6]!.data.records.map((r: { key: string; value: unknown }) => [r.key, r.value])).toEqual([
      ['c', 6],
      ['k', 2],
    ]);
    expect(replies[7]!.data.deleted).toBe(true);
    expect(replies[8]!.data.exists).toBe(false);
    expect(replies[9]!.data).toEqual({ exists: true, ttlMs: null });
  });
});

describe('a batch under tight limits', () => {
  // Room in one reply frame for exactly two of the largest single-key replies.
  const limits = { maxValueBytes: 1024, maxPayloadBytes: 2 * (largestSingleReply(1024) + ENVELOPE_RESERVE_BYTES) + ENVELOPE_RESERVE_BYTES, maxBatch: 100 };
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'normal', limits });
  });
  afterAll(async () => {
    await server.close();
  });

  it('runs every small element of a batch longer than the worst case allows, counting the replies as they are', async () => {
    expect(batchCapacity(limits)).toBe(2);
    const c = await raw(server.url);
    const sets = Array.from({ length: 12 }, (_, i) => request('kvStore.set', { instanceId: 'tight', namespace: 'n', key: `k${i}`, value: i, autoCreateInstance: true }));
    const replies = await c.request<{ success: boolean }[]>(sets);
    expect(replies.map((r) => r.success)).toEqual(sets.map(() => true));
  });
});

describe('a batch of binary gets', () => {
  // Binary values travel as base64: a get of one of 300,000 bytes is a reply of about 800,000.
  const limits = { maxValueBytes: 300_000, maxPayloadBytes: 2_000_000, maxBatch: 100 };
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'normal', limits });
  });
  afterAll(async () => {
    await server.close();
  });

  it('never builds a reply frame above maxPayloadBytes: the element with no room left is not run', async () => {
    const c = await raw(server.url);
    const value = Buffer.alloc(limits.maxValueBytes, 7).toString('base64');
    for (const key of ['a', 'b', 'c']) {
      const reply = await c.request(request('kvStore.set', { instanceId: 'bin', namespace: 'n', key, value, contentType: 'application/octet-stream', autoCreateInstance: true }));
      expect(reply.success).toBe(true);
    }
    const frame = new Promise<Buffer>((resolve) => c.socket.once('message', (data: Buffer) => resolve(data)));
    c.send(['a', 'b', 'c'].map((key) => request('kvStore.get', { instanceId: 'bin', namespace: 'n', key })));
    const bytes = await frame;
    await c.next(); // the same frame, parsed by the helper
    expect(bytes.byteLength).toBeLessThanOrEqual(limits.maxPayloadBytes);
    const replies = JSON.parse(bytes.toString()) as { success: boolean; code?: string; data: { value: string } }[];
    expect(replies.map((r) => r.success)).toEqual([true, true, false]);
    expect(replies[0]!.data.value).toBe(value);
    expect(replies[2]!.code).toBe('LIMIT_EXCEEDED');
  });
});

describe('the SDK batches the single-key requests of one tick', () => {
  /** A `ws` server on port 0 that answers like kvhub and records every frame it receives. */
  async function recordingServer(hello: { capabilities: string[]; limits: { maxValueBytes: number; maxPayloadBytes: number; maxBatch: number } }) {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    const frames: unknown[] = [];
    wss.on('connection', (socket) => {
      socket.on('error', () => undefined);
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { type: string; requestId: string } | { type: string; requestId: string }[];
        const answer = (r: { type: string; requestId: string }) => {
          const data = r.type === 'kvStore.hello' ? { protocolVersion: 1, serverVersion: 'rec', durability: 'full', ...hello } : { echo: r.requestId };
          return { type: r.type, requestId: r.requestId, success: true, data, timestamp: new Date().toISOString() };
        };
        if (!Array.isArray(frame) && frame.type === 'kvStore.hello') return socket.send(JSON.stringify(answer(frame)));
        frames.push(frame);
        socket.send(JSON.stringify(Array.isArray(frame) ? frame.map(answer) : answer(frame)));
      });
    });
    cleanUp(() => new Promise<void>((resolve) => wss.close(() => resolve())));
    return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, frames };
  }
  const shape = (frames: unknown[]) => frames.map((f) => (Array.isArray(f) ? f.map((r: { type: string }) => r.type) : (f as { type: string }).type));
  const roomy = { maxValueBytes: 1024, maxPayloadBytes: 1 << 20, maxBatch: 1000 };

  it('sends them as one frame, keeps the order around requests that go alone, and resolves each with its own reply', async () => {
    const server = await recordingServer({ capabilities: ['batch'], limits: roomy });
    const c = client({ url: server.url });
    await c.waitForReady();
    const ns = c.instance('i').namespace('n');
    const replies = await Promise.all([
      c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'a' }),
      c.request('kvStore.set', { instanceId: 'i', namespace: 'n', key: 'b', value: 1 }),
      c.request('kvStore.list', { instanceId: 'i', namespace: 'n' }),
      c.request('kvStore.incr', { instanceId: 'i', namespace: 'n', key: 'c' }),
      c.request('kvStore.delete', { instanceId: 'i', namespace: 'n', key: 'd' }),
    ]);
    expect(shape(server.frames)).toEqual([['kvStore.get', 'kvStore.set'], 'kvStore.list', ['kvStore.incr', 'kvStore.delete']]);
    for (const reply of replies) expect(reply).toMatchObject({ success: true, data: { echo: reply.requestId } });
    expect(new Set(replies.map((r) => r.requestId)).size).toBe(5);
    // A request alone in its tick goes out as a plain frame.
    await ns.get('alone').catch(() => undefined);
    expect(shape(server.frames).at(-1)).toBe('kvStore.get');
  });

  it('puts at most as many in one frame as the server has room to answer', async () => {
    const limits = { maxValueBytes: 1024, maxPayloadBytes: 3 * (largestSingleReply(1024) + ENVELOPE_RESERVE_BYTES) + ENVELOPE_RESERVE_BYTES, maxBatch: 1000 };
    expect(batchCapacity(limits)).toBe(3);
    const server = await recordingServer({ capabilities: ['batch'], limits });
    const c = client({ url: server.url });
    await c.waitForReady();
    // ttl, not get: the gets of one tick go as one getMany (see below).
    await Promise.all(Array.from({ length: 7 }, (_, i) => c.request('kvStore.ttl', { instanceId: 'i', namespace: 'n', key: `k${i}` })));
    expect(server.frames.map((f) => (Array.isArray(f) ? f.length : 1))).toEqual([3, 3, 1]);
  });

  it('also keeps a batch reply within the maxPayloadBytes the client accepts', async () => {
    const server = await recordingServer({ capabilities: ['batch'], limits: roomy });
    const maxPayloadBytes = 2 * (largestSingleReply(roomy.maxValueBytes) + ENVELOPE_RESERVE_BYTES) + ENVELOPE_RESERVE_BYTES;
    const c = client({ url: server.url, maxPayloadBytes });
    await c.waitForReady();
    await Promise.all(Array.from({ length: 5 }, (_, i) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key: `k${i}` })));
    expect(server.frames.map((f) => (Array.isArray(f) ? f.length : 1))).toEqual([2, 2, 1]);
  });

  it('sends what was asked in the tick close() is called in, and leaves out a request aborted in that tick', async () => {
    const server = await recordingServer({ capabilities: ['batch'], limits: roomy });
    const c = client({ url: server.url });
    await c.waitForReady();
    const aborted = new AbortController();
    const gone = c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'aborted' }, { signal: aborted.signal });
    const last = c.request('kvStore.set', { instanceId: 'i', namespace: 'n', key: 'last', value: 1 });
    const outcomes = Promise.allSettled([gone, last]);
    aborted.abort();
    await c.close();
    expect(await outcomes).toMatchObject([
      { status: 'rejected', reason: { code: 'ABORTED' } },
      { status: 'rejected', reason: { code: 'CONNECTION_CLOSED' } },
    ]);
    await expect.poll(() => shape(server.frames)).toEqual(['kvStore.set']);
  });

  it('sends one request per frame with batchRequests: false, or to a server that does not take batches', async () => {
    const gets = (c: KvClient) => Promise.all(Array.from({ length: 3 }, (_, i) => c.request('kvStore.get', { instanceId: 'i', namespace: 'n', key: `k${i}` })));
    const off = await recordingServer({ capabilities: ['batch'], limits: roomy });
    await gets(client({ url: off.url, batchRequests: false }));
    expect(shape(off.frames)).toEqual(['kvStore.get', 'kvStore.get', 'kvStore.get']);
    const old = await recordingServer({ capabilities: [], limits: roomy });
    await gets(client({ url: old.url }));
    expect(shape(old.frames)).toEqual(['kvStore.get', 'kvStore.get', 'kvStore.get']);
  });

  it('against a real server: the requests of one tick keep their order and their writes share one commit', async () => {
    const server = await startTestServer({ durability: 'full' });
    cleanUp(() => server.close());
    const c = client({ url: server.url });
    const ns = c.instance('tick', { autoCreate: true }).namespace('n');
    await ns.set('seed', 0);
    const before = await commits(server);
    const [, value, , count] = await Promise.all([ns.set('k', 'v'), ns.get('k'), ns.set('k2', 'w'), ns.incr('c', 2)]);
    expect(value).toBe('v');
    expect(count).toBe(2);
    expect((await commits(server)) - before).toBe(1);
  });
});
