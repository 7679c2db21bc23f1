import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './helpers/upgrade.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** The contract's "Exactly-once writes", over real sockets. */
describe('exactly-once writes', () => {
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

  const incr = (idempotencyKey: string, by = 1) =>
    client.request({
      type: 'kvStore.incr',
      requestId: rid(),
      params: { instanceId: 'eo', namespace: 'n', key: 'counter', by, autoCreateInstance: true, idempotencyKey },
    });
  /** The parts of a reply the kept reply repeats; requestId and timestamp are the repeat's own. */
  const kept = ({ requestId: _r, timestamp: _t, ...rest }: Record<string, unknown>) => rest;

  it("answers a repeat with the kept reply under the repeat's own requestId, writing nothing", async () => {
    const first = await incr('incr-1');
    expect(first).toMatchObject({ success: true, data: { value: 1 } });
    const repeat = await incr('incr-1');
    expect(kept(repeat)).toEqual(kept(first));
    expect(repeat.requestId).not.toBe(first.requestId);
    const after = await client.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: 'eo', namespace: 'n', key: 'counter' } });
    expect(after.data.value).toBe(1);
  });

  it('is VALIDATION_ERROR for the same key with other params', async () => {
    await incr('incr-2', 5);
    const reply = await incr('incr-2', 6);
    expect(reply).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
    expect(reply.data.issues[0].path).toEqual(['idempotencyKey']);
  });

  it('keeps a CONFLICT and replays it after the condition would hold', async () => {
    const conditional = () =>
      client.request({
        type: 'kvStore.set',
        requestId: rid(),
        params: { instanceId: 'eo', namespace: 'n', key: 'c', value: 'mine', ifVersion: 1, autoCreateInstance: true, idempotencyKey: 'cas-1' },
      });
    const first = await conditional();
    expect(first).toMatchObject({ success: false, code: 'CONFLICT' });
    await client.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'eo', namespace: 'n', key: 'c', value: 'theirs' } });
    const repeat = await conditional();
    expect(kept(repeat)).toEqual(kept(first));
  });

  it('does not keep a request refused before it ran', async () => {
    const bad = await client.request({
      type: 'kvStore.set',
      requestId: rid(),
      params: { instanceId: 'eo', namespace: 'n', key: 't', value: 1, ttlMs: -1, idempotencyKey: 'ttl-1' },
    });
    expect(bad).toMatchObject({ success: false, code: 'INVALID_TTL' });
    const fixed = await client.request({
      type: 'kvStore.set',
      requestId: rid(),
      params: { instanceId: 'eo', namespace: 'n', key: 't', value: 1, ttlMs: 1000, idempotencyKey: 'ttl-1' },
    });
    expect(fixed).toMatchObject({ success: true });
  });

  it('keys each element of a batch on its own', async () => {
    const element = (idempotencyKey: string) => ({
      type: 'kvStore.incr',
      requestId: rid(),
      params: { instanceId: 'eo', namespace: 'n', key: 'batched', autoCreateInstance: true, idempotencyKey },
    });
    client.send([element('b-1'), element('b-2'), element('b-1')]);
    const replies = await client.next();
    expect(replies.map((reply: { data: { value: number } }) => reply.data.value)).toEqual([1, 2, 1]);
  });

  it('refuses a key that is empty or longer than 255 characters', async () => {
    for (const idempotencyKey of ['', 'k'.repeat(256)]) {
      expect(await incr(idempotencyKey)).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
    }
  });
});

describe('exactly-once writes with tokens', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'alice' }, { token: 'bob' }] });
  });
  afterAll(async () => {
    await server.close();
  });

  it("keeps keys per token: one token's key does not answer another's write", async () => {
    const alice = await connectRaw(server.url, bearer('alice'));
    const bob = await connectRaw(server.url, bearer('bob'));
    const aliceAgain = await connectRaw(server.url, bearer('alice'));
    try {
      const incr = (client: RawClient) =>
        client.request({
          type: 'kvStore.incr',
          requestId: rid(),
          params: { instanceId: 'tok', namespace: 'n', key: 'k', autoCreateInstance: true, idempotencyKey: 'same' },
        });
      expect((await incr(alice)).data.value).toBe(1);
      expect((await incr(bob)).data.value).toBe(2);
      // The key belongs to the token, not the connection.
      expect((await incr(aliceAgain)).data.value).toBe(1);
    } finally {
      await Promise.all([alice.close(), bob.close(), aliceAgain.close()]);
    }
  });
});
