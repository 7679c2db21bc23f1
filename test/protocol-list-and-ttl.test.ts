import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
let client: RawClient;

beforeAll(async () => {
  server = await startTestServer({ sweepIntervalMs: 50 });
  client = await connectRaw(server.url);
});
afterAll(async () => {
  await client.close();
  await server.close();
});

const call = (type: string, params: object) => client.request({ type, requestId: rid(), params });
const data = async (type: string, params: object) => {
  const reply = await call(type, params);
  expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
  return reply.data;
};

async function walk(c: RawClient, params: object): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | null = null;
  do {
    const reply: any = await c.request({ type: 'kvStore.list', requestId: rid(), params: { ...params, cursor, keysOnly: true } });
    expect(reply.success, JSON.stringify(reply)).toBe(true);
    keys.push(...reply.data.keys);
    cursor = reply.data.cursor;
  } while (cursor !== null);
  return keys;
}

describe('list', () => {
  it('orders keys by UTF-8 bytes, reverses, and returns a null cursor on an exactly-full last page', async () => {
    const keys = ['b', 'a', 'é', 'Z', '🙂', '\uffff', 'aa'];
    await data('kvStore.setMany', { instanceId: 'list', namespace: 'order', entries: keys.map((key) => ({ key, value: key })), autoCreateInstance: true });
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(await walk(client, { instanceId: 'list', namespace: 'order', limit: 2 })).toEqual(byBytes);
    expect(await walk(client, { instanceId: 'list', namespace: 'order', limit: 3, reverse: true })).toEqual([...byBytes].reverse());
    const whole = await data('kvStore.list', { instanceId: 'list', namespace: 'order', limit: 7 });
    expect(whole.records).toHaveLength(7);
    expect(whole.cursor).toBeNull();
  });

  it('treats %, _, backslash and case in prefixes literally', async () => {
    const keys = ['100%', '100%off', '1000', 'a_b', 'a_c', 'axb', 'A_b', 'back\\slash', 'back\\\\double', 'backslash', 'p%q'];
    await data('kvStore.setMany', { instanceId: 'list', namespace: 'chars', entries: keys.map((key) => ({ key, value: 1 })) });
    const under = (prefix: string) => walk(client, { instanceId: 'list', namespace: 'chars', prefix, limit: 2 });
    expect(await under('100%')).toEqual(['100%', '100%off']);
    expect(await under('a_')).toEqual(['a_b', 'a_c']);
    expect(await under('A_')).toEqual(['A_b']);
    expect(await under('back\\')).toEqual(['back\\\\double', 'back\\slash']);
    expect(await under('%')).toEqual([]);
    expect(await under('_')).toEqual([]);
    const counted = await data('kvStore.query', { query: { from: { instance: 'list', namespace: 'chars' }, where: [{ field: 'key', operator: 'startsWith', value: 'a_' }] } });
    expect(counted.result.total).toBe(2);
  });

  it('a walk sees every key that exists throughout exactly once while others insert and delete around it', async () => {
    const walked = Array.from({ length: 300 }, (_, i) => `item-${String(i * 2).padStart(4, '0')}`);
    await data('kvStore.setMany', { instanceId: 'list', namespace: 'busy', entries: walked.map((key) => ({ key, value: 1 })) });
    const writers = await Promise.all([connectRaw(server.url), connectRaw(server.url)]);
    let stop = false;
    const churn = writers.map(async (writer, w) => {
      let i = 0;
      while (!stop) {
        // Odd numbers and keys outside the walked set: inserted, then deleted, between pages.
        const key = `item-${String(((i * 7 + w * 3) % 300) * 2 + 1).padStart(4, '0')}`;
        await writer.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'list', namespace: 'busy', key, value: i } });
        if (i % 3 === 0) await writer.request({ type: 'kvStore.delete', requestId: rid(), params: { instanceId: 'list', namespace: 'busy', key } });
        i++;
      }
    });
    const seen = (await walk(client, { instanceId: 'list', namespace: 'busy', prefix: 'item-', limit: 7 })).filter((k) => Number(k.slice(5)) % 2 === 0);
    stop = true;
    await Promise.all(churn);
    await Promise.all(writers.map((w) => w.close()));
    expect(seen).toEqual(walked);
  });

  it('refuses a forged cursor and a limit out of range', async () => {
    expect(await call('kvStore.list', { instanceId: 'list', namespace: 'order', cursor: 'forged' })).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await call('kvStore.list', { instanceId: 'list', namespace: 'order', limit: 0 })).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await call('kvStore.list', { instanceId: 'list', namespace: 'order', limit: 1001 })).toMatchObject({ code: 'VALIDATION_ERROR' });
  });
});

describe('TTL', () => {
  const base = { instanceId: 'ttl', namespace: 'n', autoCreateInstance: true };

  it('an expired key is gone at once for every read, count, list, query and condition', async () => {
    await data('kvStore.set', { ...base, key: 'short', value: 'v', ttlMs: 30 });
    await data('kvStore.set', { ...base, key: 'long', value: 'v', ttlMs: 60_000 });
    await sleep(40);
    const at = { instanceId: 'ttl', namespace: 'n' };
    expect(await data('kvStore.get', { ...at, key: 'short' })).toEqual({ value: null, exists: false, record: null });
    expect(await data('kvStore.ttl', { ...at, key: 'short' })).toEqual({ exists: false, ttlMs: null });
    expect((await data('kvStore.getMany', { ...at, keys: ['short'] })).items[0].exists).toBe(false);
    expect(await walk(client, at)).toEqual(['long']);
    expect((await data('kvStore.getRecordCount', at)).count).toBe(1);
    expect((await data('kvStore.query', { query: { from: { instance: 'ttl' } } })).result.total).toBe(1);
    // A condition sees it as absent: ifAbsent succeeds and creates it afresh.
    const reborn = (await data('kvStore.set', { ...base, key: 'short', value: 'new', ifAbsent: true })).record;
    expect(reborn).toMatchObject({ version: 1, value: 'new', expiresAt: null });
  });

  it('writing an expired key creates it afresh: version 1, new id, new createdAt', async () => {
    const old = (await data('kvStore.set', { ...base, key: 'again', value: 1, ttlMs: 20 })).record;
    await sleep(30);
    const fresh = (await data('kvStore.incr', { ...base, key: 'again', by: 5 })).record;
    expect(fresh).toMatchObject({ version: 1, value: 5 });
    expect(fresh.id).not.toBe(old.id);
    expect(fresh.createdAt >= old.createdAt).toBe(true);
    // The expiry took its own revision before the write's.
    expect(fresh.revision).toBeGreaterThan(old.revision + 1);
  });

  it('set without ttlMs clears an expiry', async () => {
    await data('kvStore.set', { ...base, key: 'clear', value: 1, ttlMs: 60_000 });
    const { record } = await data('kvStore.set', { ...base, key: 'clear', value: 2 });
    expect(record.expiresAt).toBeNull();
  });

  it('the sweeper deletes expired keys from disk within about a second', async () => {
    await data('kvStore.setMany', { instanceId: 'sweep', namespace: 'n', autoCreateInstance: true, entries: Array.from({ length: 600 }, (_, i) => ({ key: `k${i}`, value: i, ttlMs: 10 })) });
    const deadline = Date.now() + 2000;
    let stats;
    do {
      await sleep(50);
      stats = await data('kvStore.stats', { instanceId: 'sweep' });
    } while (stats.expiredPending > 0 && Date.now() < deadline);
    expect(stats).toMatchObject({ records: 0, expiredPending: 0 });
  });
});
