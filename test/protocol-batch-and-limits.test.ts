import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const MAX_PAYLOAD = 1024 * 1024;
const MAX_VALUE = 64 * 1024;
let server: TestServer;
let client: RawClient;

beforeAll(async () => {
  server = await startTestServer({ limits: { maxPayloadBytes: MAX_PAYLOAD, maxValueBytes: MAX_VALUE, maxBatch: 50 } });
  client = await connectRaw(server.url);
});
afterAll(async () => {
  await client.close();
  await server.close();
});

const frameBytes = (frame: unknown) => Buffer.byteLength(JSON.stringify(frame));

describe('batch frames', () => {
  it('answers each element in order, in one frame, a bad element in its place', async () => {
    const ids = [rid(), rid(), rid(), rid()];
    client.send([
      { type: 'kvStore.set', requestId: ids[0], params: { instanceId: 'batch', namespace: 'n', key: 'a', value: 1, autoCreateInstance: true } },
      { type: 'kvStore.nope', requestId: ids[1] },
      'garbage',
      { type: 'kvStore.incr', requestId: ids[3], params: { instanceId: 'batch', namespace: 'n', key: 'a' } },
    ]);
    const replies = await client.next();
    expect(replies).toHaveLength(4);
    expect(replies[0]).toMatchObject({ requestId: ids[0], success: true });
    expect(replies[1]).toMatchObject({ requestId: ids[1], code: 'UNKNOWN_TYPE' });
    expect(replies[2]).toMatchObject({ requestId: null, code: 'MALFORMED_MESSAGE' });
    // Elements run in order: the incr sees the set before it.
    expect(replies[3]).toMatchObject({ requestId: ids[3], success: true, data: { value: 2 } });
  });

  it('is not a transaction: a failing element leaves the others written', async () => {
    client.send([
      { type: 'kvStore.set', requestId: rid(), params: { instanceId: 'batch', namespace: 'n', key: 'kept', value: 1 } },
      { type: 'kvStore.set', requestId: rid(), params: { instanceId: 'batch', namespace: 'n', key: 'kept', value: 2, ifAbsent: true } },
    ]);
    const [first, second] = await client.next();
    expect(first.success).toBe(true);
    expect(second.code).toBe('CONFLICT');
    const read = await client.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: 'batch', namespace: 'n', key: 'kept' } });
    expect(read.data.value).toBe(1);
  });

  it('an empty batch is MALFORMED_MESSAGE; one above maxBatch is LIMIT_EXCEEDED', async () => {
    client.send([]);
    expect(await client.next()).toMatchObject({ requestId: null, code: 'MALFORMED_MESSAGE' });
    client.send(Array.from({ length: 51 }, () => ({ type: 'kvStore.ping', requestId: rid() })));
    expect(await client.next()).toMatchObject({ requestId: null, code: 'LIMIT_EXCEEDED', data: { maxBatch: 50 } });
    client.send(Array.from({ length: 50 }, () => ({ type: 'kvStore.ping', requestId: rid() })));
    expect(await client.next()).toHaveLength(50);
  });

  it('a nested array element is malformed', async () => {
    client.send([[{ type: 'kvStore.ping', requestId: rid() }]]);
    expect(await client.next()).toMatchObject([{ requestId: null, code: 'MALFORMED_MESSAGE' }]);
  });

  it('keeps the batch reply within maxPayloadBytes, refusing elements it cannot fit', async () => {
    const big = 'x'.repeat(MAX_VALUE - 100);
    const entries = Array.from({ length: 20 }, (_, i) => ({ key: `big-${i}`, value: big }));
    // Write 20 large values in batches that fit the request limit.
    for (let i = 0; i < entries.length; i += 7) {
      client.send(entries.slice(i, i + 7).map((e) => ({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'batch', namespace: 'big', ...e } })));
      expect((await client.next()).every((r: any) => r.success)).toBe(true);
    }
    client.send(entries.map((e) => ({ type: 'kvStore.get', requestId: rid(), params: { instanceId: 'batch', namespace: 'big', key: e.key } })));
    const replies = await client.next();
    expect(frameBytes(replies)).toBeLessThanOrEqual(MAX_PAYLOAD);
    expect(replies.filter((r: any) => r.success).length).toBeGreaterThan(5);
    expect(replies.at(-1)).toMatchObject({ success: false, code: 'LIMIT_EXCEEDED' });
  });
});

describe('reply size caps', () => {
  beforeAll(async () => {
    const big = 'y'.repeat(MAX_VALUE - 100);
    for (let i = 0; i < 40; i++) {
      await client.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'caps', namespace: 'n', key: `k${String(i).padStart(2, '0')}`, value: big, autoCreateInstance: true } });
    }
  });

  it('list returns fewer records with a cursor, and the walk still sees every key once', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const reply: any = await client.request({ type: 'kvStore.list', requestId: rid(), params: { instanceId: 'caps', namespace: 'n', limit: 1000, cursor } });
      expect(frameBytes(reply)).toBeLessThanOrEqual(MAX_PAYLOAD);
      expect(reply.data.records.length).toBeGreaterThan(0);
      seen.push(...reply.data.records.map((r: any) => r.key));
      cursor = reply.data.cursor;
    } while (cursor !== null);
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => `k${String(i).padStart(2, '0')}`));
  });

  it('query returns fewer records; the caller continues at offset + records.length', async () => {
    let offset = 0;
    let total = Infinity;
    while (offset < total) {
      const reply = await client.request({ type: 'kvStore.query', requestId: rid(), params: { query: { from: { instance: 'caps' }, limit: 1000, offset } } });
      expect(frameBytes(reply)).toBeLessThanOrEqual(MAX_PAYLOAD);
      const { records, total: t } = reply.data.result;
      expect(records.length).toBeGreaterThan(0);
      expect(records.length).toBeLessThan(40);
      total = t;
      offset += records.length;
    }
    expect(offset).toBe(40);
  });

  it('getMany that cannot fit is LIMIT_EXCEEDED', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `k${String(i).padStart(2, '0')}`);
    const reply = await client.request({ type: 'kvStore.getMany', requestId: rid(), params: { instanceId: 'caps', namespace: 'n', keys } });
    expect(reply).toMatchObject({ success: false, code: 'LIMIT_EXCEEDED' });
    const fits = await client.request({ type: 'kvStore.getMany', requestId: rid(), params: { instanceId: 'caps', namespace: 'n', keys: keys.slice(0, 5) } });
    expect(fits.data.items).toHaveLength(5);
  });
});

describe('server options', () => {
  it('refuses a maxPayloadBytes below twice maxValueBytes', async () => {
    await expect(startTestServer({ limits: { maxPayloadBytes: 1000, maxValueBytes: 600 } })).rejects.toThrow(/maxPayloadBytes/);
  });
});
