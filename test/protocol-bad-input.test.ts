import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
let client: RawClient;

beforeAll(async () => {
  server = await startTestServer({ limits: { maxPayloadBytes: 4 * 1024 * 1024, maxValueBytes: 64 * 1024 } });
  client = await connectRaw(server.url);
});
afterAll(async () => {
  await client.close();
  await server.close();
});

const malformed = { type: 'kvStore.error', requestId: null, success: false, code: 'MALFORMED_MESSAGE' };

/** After any bad frame the connection still answers. */
async function stillServes(c: RawClient = client) {
  const requestId = rid();
  expect(await c.request({ type: 'kvStore.ping', requestId })).toMatchObject({ requestId, success: true, data: { pong: true } });
}

describe('frames that are not requests', () => {
  it.each([
    ['not JSON', '{"type": "kvStore.ping",'],
    ['a JSON string', '"hello"'],
    ['a JSON number', '42'],
    ['null', 'null'],
    ['an empty text frame', ''],
    ['no type', JSON.stringify({ requestId: 'a' })],
    ['a numeric type', JSON.stringify({ type: 7, requestId: 'a' })],
    ['no requestId', JSON.stringify({ type: 'kvStore.ping' })],
    ['an empty requestId', JSON.stringify({ type: 'kvStore.ping', requestId: '' })],
    ['a numeric requestId', JSON.stringify({ type: 'kvStore.ping', requestId: 5 })],
    ['a requestId of 129 characters', JSON.stringify({ type: 'kvStore.ping', requestId: 'x'.repeat(129) })],
  ])('%s is MALFORMED_MESSAGE and the connection stays open', async (_name, frame) => {
    client.send(frame);
    expect(await client.next()).toMatchObject(malformed);
    await stillServes();
  });

  it('a requestId of 128 characters is fine', async () => {
    const requestId = 'x'.repeat(128);
    expect(await client.request({ type: 'kvStore.ping', requestId })).toMatchObject({ requestId, success: true });
  });

  it('a binary frame is MALFORMED_MESSAGE', async () => {
    client.send(Buffer.from(JSON.stringify({ type: 'kvStore.ping', requestId: 'b' })));
    expect(await client.next()).toMatchObject(malformed);
    await stillServes();
  });

  it('an unknown type is UNKNOWN_TYPE, echoing type and requestId', async () => {
    const requestId = rid();
    expect(await client.request({ type: 'kvStore.teleport', requestId })).toMatchObject({
      type: 'kvStore.teleport', requestId, success: false, code: 'UNKNOWN_TYPE',
    });
  });
});

describe('params', () => {
  const set = (params: unknown) => client.request({ type: 'kvStore.set', requestId: rid(), params });
  const base = { instanceId: 'bad-input', namespace: 'n', key: 'k', value: 1, autoCreateInstance: true };

  it.each([
    ['an unknown param', { ...base, colour: 'red' }],
    ['an idempotencyKey that is not a string', { ...base, idempotencyKey: 5 }],
    ['a wrong type', { ...base, key: 5 }],
    ['params that are not an object', 'nope'],
    ['null params', null],
    ['params as an array', [base]],
    ['an empty key', { ...base, key: '' }],
    ['a key over 1024 UTF-8 bytes', { ...base, key: 'é'.repeat(513) }],
    ['an instanceId over 128 characters', { ...base, instanceId: 'i'.repeat(129) }],
    ['a namespace over 256 characters', { ...base, namespace: 'n'.repeat(257) }],
    ['a lone surrogate in the key', { ...base, key: 'a\ud800' }],
    ['a lone surrogate in the instanceId', { ...base, instanceId: '\udc00' }],
    ['a lone surrogate inside the value', { ...base, value: { text: 'x\udbff' } }],
    ['a lone surrogate in a property name', { ...base, value: { ['\ud800']: 1 } }],
    ['a value nested 101 levels deep', { ...base, value: nest(101) }],
    ['__proto__ among params', JSON.parse('{"instanceId":"i","namespace":"n","key":"k","value":1,"__proto__":{"admin":true}}')],
  ])('%s is VALIDATION_ERROR with issues', async (_name, params) => {
    const reply = await set(params);
    expect(reply).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
    expect(reply.data.issues.length).toBeGreaterThan(0);
    expect(reply.error).toEqual(expect.any(String));
  });

  it('issue paths name array indexes as numbers, also for checks after the schema', async () => {
    const entries = [{ key: 'a', value: 1 }, { key: 'b', value: 'x\ud800' }];
    const reply = await client.request({ type: 'kvStore.setMany', requestId: rid(), params: { instanceId: 'i', namespace: 'n', entries } });
    expect(reply).toMatchObject({ code: 'VALIDATION_ERROR', data: { issues: [{ path: ['entries', 1, 'value'], code: 'custom' }] } });
    expect(reply.error).toMatch(/^params\.entries\.1\.value: /);
    const schema = await client.request({ type: 'kvStore.setMany', requestId: rid(), params: { instanceId: 'i', namespace: 'n', entries: [{ key: 5, value: 1 }] } });
    expect(schema.data.issues[0].path).toEqual(['entries', 0, 'key']);
  });

  it('a key of exactly 1024 UTF-8 bytes and a value nested 100 levels are accepted', async () => {
    expect(await set({ ...base, key: 'é'.repeat(512) })).toMatchObject({ success: true });
    const deep = await set({ ...base, value: nest(100) });
    expect(deep).toMatchObject({ success: true });
    expect(deep.data.record.value).toEqual(nest(100));
  });

  it('a value above maxValueBytes is VALUE_TOO_LARGE', async () => {
    expect(await set({ ...base, value: 'x'.repeat(64 * 1024) })).toMatchObject({ success: false, code: 'VALUE_TOO_LARGE' });
    const bytes = Buffer.alloc(64 * 1024 + 1).toString('base64');
    expect(await set({ ...base, value: bytes, contentType: 'application/octet-stream' })).toMatchObject({ code: 'VALUE_TOO_LARGE' });
    await stillServes();
  });

  it('__proto__ inside a value is stored as plain data and pollutes nothing', async () => {
    const value = JSON.parse('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}');
    const written = await set({ ...base, key: 'proto', value });
    expect(written).toMatchObject({ success: true });
    const read = await client.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: base.instanceId, namespace: 'n', key: 'proto' } });
    expect(JSON.stringify(read.data.value)).toBe(JSON.stringify(value));
    expect(({} as any).polluted).toBeUndefined();
  });

  it('unicode keys, namespaces and values survive exactly', async () => {
    const key = 'ключ 🔑 \u0000 \t "quoted" \\';
    const value = { emoji: '👩‍💻', nul: '\u0000', rtl: 'שלום' };
    expect(await set({ ...base, namespace: 'ñs/🌍', key, value })).toMatchObject({ success: true });
    const read = await client.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: base.instanceId, namespace: 'ñs/🌍', key } });
    expect(read.data).toMatchObject({ exists: true, value, record: { key, namespace: 'ñs/🌍' } });
  });
});

describe('hostile sizes and shapes', () => {
  const small = (reply: unknown) => expect(Buffer.byteLength(JSON.stringify(reply))).toBeLessThan(16 * 1024);

  it('an array param far above maxBatch is LIMIT_EXCEEDED before its items are read', async () => {
    const keys = Array.from({ length: 200_000 }, (_, i) => i); // not even strings
    const reply = await client.request({ type: 'kvStore.getMany', requestId: rid(), params: { instanceId: 'i', namespace: 'n', keys } });
    expect(reply).toMatchObject({ success: false, code: 'LIMIT_EXCEEDED', data: { maxBatch: 1000 } });
    small(reply);
    const ops = Array.from({ length: 5000 }, () => ({ op: 'explode' }));
    expect(await client.request({ type: 'kvStore.atomic', requestId: rid(), params: { instanceId: 'i', ops } })).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    await stillServes();
  });

  it('thousands of bad items or unknown params give a short VALIDATION_ERROR', async () => {
    const entries = Array.from({ length: 1000 }, () => ({ nope: true }));
    const many = await client.request({ type: 'kvStore.setMany', requestId: rid(), params: { instanceId: 'i', namespace: 'n', entries } });
    expect(many).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(many.data.issues.length).toBeLessThanOrEqual(20);
    small(many);
    const params: Record<string, number> = { instanceId: 1 } as never;
    for (let i = 0; i < 50_000; i++) params[`unknown${i}`] = i;
    const unknown = await client.request({ type: 'kvStore.ping', requestId: rid(), params });
    expect(unknown).toMatchObject({ code: 'VALIDATION_ERROR' });
    small(unknown);
  });

  it.each([
    ['an operand nested 101 levels', { field: 'value', operator: 'eq', value: nest(101) }],
    ['an operand nested 200,000 levels', { field: 'value', operator: 'eq', value: '__DEEP__' }],
    ['an operand with a lone surrogate', { field: 'value', operator: 'eq', value: 'a\udc00' }],
    ['a path segment ending in a backslash', { field: 'value.a\\', operator: 'eq', value: 1 }],
    ['a path segment with a control character', { field: 'value.a\u0000b', operator: 'eq', value: 1 }],
  ])('a query with %s is VALIDATION_ERROR', async (_name, condition) => {
    const query = { from: { instance: 'bad-input' }, where: [condition] };
    // Built by hand: JSON.stringify of 200,000 levels would overflow the test's own stack.
    const text = JSON.stringify({ type: 'kvStore.query', requestId: 'q', params: { query } }).replace('"__DEEP__"', '['.repeat(200_000) + ']'.repeat(200_000));
    client.send(text);
    expect(await client.next()).toMatchObject({ requestId: 'q', success: false, code: 'VALIDATION_ERROR' });
  });

  it('a query with more than 100 conditions is VALIDATION_ERROR', async () => {
    const where = Array.from({ length: 101 }, () => ({ field: 'key', operator: 'eq', value: 'k' }));
    expect(await client.request({ type: 'kvStore.query', requestId: rid(), params: { query: { from: { instance: 'bad-input' }, where } } })).toMatchObject({ code: 'VALIDATION_ERROR' });
  });
});

describe('WebSocket-level limits', () => {
  it('a frame above maxPayloadBytes closes the connection with 1009; other connections are unaffected', async () => {
    const victim = await connectRaw(server.url);
    victim.send('x'.repeat(4 * 1024 * 1024 + 1));
    expect((await victim.closed()).code).toBe(1009);
    await stillServes();
  });

  it('invalid UTF-8 in a text frame closes the connection with 1007', async () => {
    const victim = await connectRaw(server.url);
    // ws validates text frames; send raw invalid bytes marked as text.
    victim.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect((await victim.closed()).code).toBe(1007);
    await stillServes();
  });

  it('a client that sends but never reads is closed with 1013 once its unread replies pass the cap', async () => {
    const slow = await startTestServer({ maxBufferedBytes: 1024 * 1024 });
    try {
      const reader = await connectRaw(slow.url);
      const at = { instanceId: 'unread', namespace: 'n', key: 'big' };
      expect(await reader.request({ type: 'kvStore.set', requestId: rid(), params: { ...at, value: 'z'.repeat(200_000), autoCreateInstance: true } })).toMatchObject({ success: true });
      reader.socket.pause();
      for (let i = 0; i < 300; i++) reader.send({ type: 'kvStore.get', requestId: rid(), params: at });
      const closed = reader.closed();
      reader.socket.resume();
      expect(await closed).toEqual({ code: 1013, reason: 'too many unread replies' });
    } finally {
      await slow.close();
    }
  });

  it('many bad frames in a row leave the server healthy', async () => {
    for (let i = 0; i < 200; i++) client.send(i % 2 ? '[' : Buffer.from([i]));
    for (let i = 0; i < 200; i++) expect(await client.next()).toMatchObject(malformed);
    await stillServes();
    const response = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });
});

function nest(depth: number): unknown {
  let value: unknown = 'leaf';
  for (let i = 0; i < depth; i++) value = i % 2 ? { v: value } : [value];
  return value;
}
