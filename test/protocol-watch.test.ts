import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventPush, successReplySchema } from '../protocol/index.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
let writer: RawClient;

beforeAll(async () => {
  server = await startTestServer({ sweepIntervalMs: 50 });
  writer = await connectRaw(server.url);
});
afterAll(async () => {
  await writer.close();
  await server.close();
});

let n = 0;
const fresh = () => `watch-${++n}`;

async function call(client: RawClient, type: string, params: object): Promise<any> {
  const reply = await client.request({ type, requestId: rid(), params });
  expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
  return reply.data;
}
const write = (type: string, params: object) => call(writer, type, params);

/** A raw subscriber: watches, then collects pushes; `until` waits for a number of events. */
async function subscribe(params: object, url = server.url) {
  const client = await connectRaw(url);
  const events: any[] = [];
  const replies = new Map<string, any>();
  const requestId = rid();
  client.send({ type: 'kvStore.watch', requestId, params });
  const reply = await client.next();
  let ended = false;
  void (async () => {
    while (!ended) {
      const frame = await client.next();
      if (frame.type === 'kvStore.event') events.push(EventPush.parse(frame).event);
      else replies.set(frame.requestId, frame);
    }
  })();
  /** A request on the subscriber's own connection (its frames are read by the collector above). */
  async function request(type: string, params: object) {
    const id = rid();
    client.send({ type, requestId: id, params });
    while (!replies.has(id)) await sleep(2);
    const reply = replies.get(id);
    expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
    return reply.data;
  }
  return {
    client,
    reply,
    events,
    request,
    async until(count: number, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (events.length < count && Date.now() < deadline) await sleep(5);
      return events;
    },
    async close() {
      ended = true;
      await client.close();
    },
  };
}

describe('kvStore.watch', () => {
  it('answers first, then pushes every matching change after commit, in revision order', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const sub = await subscribe({ instanceId: id });
    expect(successReplySchema('kvStore.watch').parse(sub.reply).data.revision).toEqual(expect.any(Number));
    const set = await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 1 });
    const incr = await write('kvStore.incr', { instanceId: id, namespace: 'n', key: 'c', by: 2 });
    const many = await write('kvStore.setMany', { instanceId: id, namespace: 'n', entries: [{ key: 'x', value: 1 }, { key: 'y', value: 2 }] });
    await write('kvStore.expire', { instanceId: id, namespace: 'n', key: 'a', ttlMs: 60_000 });
    await write('kvStore.delete', { instanceId: id, namespace: 'n', key: 'x' });
    await write('kvStore.atomic', { instanceId: id, ops: [{ op: 'set', namespace: 'm', key: 'k', value: true }, { op: 'delete', namespace: 'n', key: 'y' }] });
    const events = await sub.until(8);
    expect(events.map((e) => [e.kind, e.namespace, e.key])).toEqual([
      ['set', 'n', 'a'], ['set', 'n', 'c'], ['set', 'n', 'x'], ['set', 'n', 'y'], ['set', 'n', 'a'], ['delete', 'n', 'x'], ['set', 'm', 'k'], ['delete', 'n', 'y'],
    ]);
    expect(events[0].record).toEqual(set.record);
    expect(events[1].record).toEqual(incr.record);
    expect(events[2].record).toEqual(many.records[0]);
    expect(events[4].record.expiresAt).not.toBeNull();
    expect(events[5].record).toBeNull();
    const revisions = events.map((e) => e.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
    expect(new Set(revisions).size).toBe(8);
    await sub.close();
  });

  it('filters by namespace, exact key and literal prefix; namespaceDeleted reaches all of them', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const byNs = await subscribe({ instanceId: id, namespace: 'n' });
    const byKey = await subscribe({ instanceId: id, namespace: 'n', key: 'a_b' });
    const byPrefix = await subscribe({ instanceId: id, namespace: 'n', prefix: 'a_' });
    for (const key of ['a_b', 'axb', 'A_b', 'a_c', 'a%']) await write('kvStore.set', { instanceId: id, namespace: 'n', key, value: key });
    await write('kvStore.set', { instanceId: id, namespace: 'other', key: 'a_b', value: 0 });
    await write('kvStore.deleteNamespace', { instanceId: id, namespace: 'n' });
    expect((await byNs.until(6)).map((e) => e.key)).toEqual(['a_b', 'axb', 'A_b', 'a_c', 'a%', null]);
    expect((await byKey.until(2)).map((e) => [e.kind, e.key])).toEqual([['set', 'a_b'], ['namespaceDeleted', null]]);
    expect((await byPrefix.until(3)).map((e) => [e.kind, e.key])).toEqual([['set', 'a_b'], ['set', 'a_c'], ['namespaceDeleted', null]]);
    await Promise.all([byNs.close(), byKey.close(), byPrefix.close()]);
  });

  it('a read that finds a key expired announces the expiry at once, once per key, without waiting for the sweeper', async () => {
    const slowSweep = await startTestServer({ sweepIntervalMs: 60_000 });
    try {
      const client = await connectRaw(slowSweep.url);
      await call(client, 'kvStore.set', { instanceId: 'rx', namespace: 'n', key: 'k', value: 1, ttlMs: 20, autoCreateInstance: true });
      const sub = await subscribe({ instanceId: 'rx' }, slowSweep.url);
      await sleep(30);
      expect(sub.events).toHaveLength(0);
      expect((await call(client, 'kvStore.get', { instanceId: 'rx', namespace: 'n', key: 'k' })).exists).toBe(false);
      expect((await call(client, 'kvStore.ttl', { instanceId: 'rx', namespace: 'n', key: 'k' })).exists).toBe(false);
      expect((await sub.until(1)).map((e) => [e.kind, e.key])).toEqual([['expire', 'k']]);
      await sleep(50);
      expect(sub.events).toHaveLength(1);
      await Promise.all([sub.close(), client.close()]);
    } finally {
      await slowSweep.close();
    }
  });

  it('announces expiry from the sweeper, and at once when a read finds a key expired, once per key', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const sub = await subscribe({ instanceId: id });
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'swept', value: 1, ttlMs: 20 });
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'read', value: 1, ttlMs: 20 });
    await sleep(25);
    // The read finds it expired before the sweeper can; reading again announces nothing more.
    expect((await write('kvStore.get', { instanceId: id, namespace: 'n', key: 'read' })).exists).toBe(false);
    expect((await write('kvStore.get', { instanceId: id, namespace: 'n', key: 'read' })).exists).toBe(false);
    const events = await sub.until(4);
    await sleep(200);
    expect(events.map((e) => [e.kind, e.key]).sort()).toEqual([['expire', 'read'], ['expire', 'swept'], ['set', 'read'], ['set', 'swept']]);
    expect(events.filter((e) => e.kind === 'expire').every((e) => e.record === null)).toBe(true);
    await sub.close();
  });

  it('announces nothing for a write that did not commit', async () => {
    const id = fresh();
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1, autoCreateInstance: true });
    const sub = await subscribe({ instanceId: id });
    const conflict = await writer.request({ type: 'kvStore.atomic', requestId: rid(), params: { instanceId: id, checks: [{ namespace: 'n', key: 'k', version: 9 }], ops: [{ op: 'set', namespace: 'n', key: 'z', value: 1 }] } });
    expect(conflict.code).toBe('CONFLICT');
    const typeMismatch = await writer.request({ type: 'kvStore.atomic', requestId: rid(), params: { instanceId: id, ops: [{ op: 'set', namespace: 'n', key: 'y', value: 1 }, { op: 'incr', namespace: 'n', key: 'y2', by: 1 }, { op: 'incr', namespace: 'n', key: 'k', by: 1 }, { op: 'set', namespace: 'n', key: 'k2', value: 's' }] } });
    expect(typeMismatch.success).toBe(true);
    const events = await sub.until(4);
    expect(events.map((e) => e.key)).toEqual(['y', 'y2', 'k', 'k2']);
    await sub.close();
  });

  it('instanceDeleted reaches every subscription of the instance and ends it', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const sub = await subscribe({ instanceId: id, namespace: 'n', key: 'k' });
    const before = server.server.subscriptionCount();
    await write('kvStore.deleteInstance', { instanceId: id });
    expect((await sub.until(1)).map((e) => [e.kind, e.namespace, e.key])).toEqual([['instanceDeleted', null, null]]);
    expect(server.server.subscriptionCount()).toBe(before - 1);
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1, autoCreateInstance: true });
    await sleep(50);
    expect(sub.events).toHaveLength(1);
    await sub.close();
  });

  it('nothing follows instanceDeleted, even changes held while the reply was on its way (regression)', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const client = await connectRaw(server.url);
    const frames: any[] = [];
    client.socket.on('message', (data) => frames.push(JSON.parse(String(data))));
    client.send([
      { type: 'kvStore.watch', requestId: rid(), params: { instanceId: id } },
      { type: 'kvStore.deleteInstance', requestId: rid(), params: { instanceId: id } },
      { type: 'kvStore.set', requestId: rid(), params: { instanceId: id, namespace: 'n', key: 'k', value: 1, autoCreateInstance: true } },
    ]);
    const deadline = Date.now() + 5000;
    while (!frames.some((f) => f.type === 'kvStore.event') && Date.now() < deadline) await sleep(5);
    await sleep(100);
    const events = frames.filter((f) => f.type === 'kvStore.event').map((f) => f.event.kind);
    expect(events).toEqual(['instanceDeleted']);
    await client.close();
  });

  it('a client resuming after its instance was deleted still gets the changes it missed, ending with instanceDeleted', async () => {
    const id = fresh();
    const before = (await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 1, autoCreateInstance: true })).record.revision;
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'b', value: 2 });
    await write('kvStore.deleteInstance', { instanceId: id });
    const count = server.server.subscriptionCount();
    const sub = await subscribe({ instanceId: id, fromRevision: before });
    expect(sub.reply).toMatchObject({ success: true });
    expect((await sub.until(2)).map((e) => [e.kind, e.key])).toEqual([['set', 'b'], ['instanceDeleted', null]]);
    await sleep(20);
    expect(server.server.subscriptionCount()).toBe(count);
    // Without anything missed to replay, a missing instance is still INSTANCE_NOT_FOUND.
    const current = sub.reply.data.revision;
    expect(await writer.request({ type: 'kvStore.watch', requestId: rid(), params: { instanceId: id, fromRevision: current } })).toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    await sub.close();
  });

  it('replays from fromRevision, then continues live with no gap and no duplicate', async () => {
    const id = fresh();
    const first = (await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 1, autoCreateInstance: true })).record;
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'b', value: 2 });
    await write('kvStore.delete', { instanceId: id, namespace: 'n', key: 'a' });
    const sub = await subscribe({ instanceId: id, fromRevision: first.revision - 1 });
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'c', value: 3 });
    const events = await sub.until(4);
    expect(events.map((e) => [e.kind, e.key])).toEqual([['set', 'a'], ['set', 'b'], ['delete', 'a'], ['set', 'c']]);
    expect(events[0].revision).toBe(first.revision);
    // fromRevision equal to the current revision simply waits for live events.
    const current = sub.reply.data.revision;
    const atHead = await subscribe({ instanceId: id, fromRevision: current + 1 });
    expect(atHead.reply).toMatchObject({ success: true });
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'd', value: 4 });
    expect((await atHead.until(1)).map((e) => e.key)).toEqual(['d']);
    await Promise.all([sub.close(), atHead.close()]);
  });

  it('replays 10,000 changes while others keep writing: every change once, revisions strictly increasing', async () => {
    const id = fresh();
    const entries = (start: number) => Array.from({ length: 1000 }, (_, i) => ({ key: `k${start + i}`, value: start + i }));
    const base = await write('kvStore.setMany', { instanceId: id, namespace: 'n', entries: entries(0), autoCreateInstance: true });
    for (let i = 1; i < 10; i++) await write('kvStore.setMany', { instanceId: id, namespace: 'n', entries: entries(i * 1000) });
    const from = base.records[0].revision - 1;
    let writing = true;
    const written: number[] = [];
    const others = await connectRaw(server.url);
    const load = (async () => {
      for (let i = 0; writing; i++) {
        const reply = await call(others, 'kvStore.set', { instanceId: id, namespace: 'live', key: `l${i % 50}`, value: i });
        written.push(reply.record.revision);
      }
    })();
    await sleep(20);
    const sub = await subscribe({ instanceId: id, fromRevision: from });
    await sleep(300);
    writing = false;
    await load;
    const expected = 10_000 + written.filter((r) => r > from).length;
    const events = await sub.until(expected, 20_000);
    await sleep(100);
    const revisions = events.map((e) => e.revision);
    expect(revisions.length).toBe(expected);
    for (let i = 1; i < revisions.length; i++) expect(revisions[i]).toBeGreaterThan(revisions[i - 1]);
    expect(revisions.slice(0, 10_000)).toEqual(Array.from({ length: 10_000 }, (_, i) => from + 1 + i));
    expect(revisions.slice(10_000)).toEqual(written);
    await Promise.all([sub.close(), others.close()]);
  }, 30_000);

  it('in a batch, events follow the batch reply array', async () => {
    const id = fresh();
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'a', value: 1, autoCreateInstance: true });
    const client = await connectRaw(server.url);
    client.send([
      { type: 'kvStore.watch', requestId: rid(), params: { instanceId: id, fromRevision: 0 } },
      { type: 'kvStore.ping', requestId: rid() },
    ]);
    const replies = await client.next();
    expect(replies).toHaveLength(2);
    expect(replies[0]).toMatchObject({ type: 'kvStore.watch', success: true });
    expect(await client.next()).toMatchObject({ type: 'kvStore.event', subscriptionId: replies[0].data.subscriptionId, event: { key: 'a' } });
    await client.close();
  });

  it('refuses bad filters and revisions', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const c = writer;
    const watch = (params: object) => c.request({ type: 'kvStore.watch', requestId: rid(), params });
    expect(await watch({ instanceId: id, key: 'k' })).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await watch({ instanceId: id, prefix: 'p' })).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await watch({ instanceId: id, namespace: 'n', key: 'k', prefix: 'k' })).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await watch({ instanceId: 'no-such-instance' })).toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    const ahead = await watch({ instanceId: id, fromRevision: 1e12 });
    expect(ahead).toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await watch({ instanceId: id, fromRevision: -1 })).toMatchObject({ code: 'VALIDATION_ERROR' });
  });

  it('unwatch frees a subscription of its own connection only; closing the socket frees the rest', async () => {
    const id = fresh();
    await write('kvStore.createInstance', { name: id, id });
    const before = server.server.subscriptionCount();
    const sub = await subscribe({ instanceId: id });
    const other = await subscribe({ instanceId: id });
    expect(server.server.subscriptionCount()).toBe(before + 2);
    const subscriptionId = sub.reply.data.subscriptionId;
    expect(await other.request('kvStore.unwatch', { subscriptionId })).toEqual({ removed: false });
    expect(await sub.request('kvStore.unwatch', { subscriptionId })).toEqual({ removed: true });
    expect(await sub.request('kvStore.unwatch', { subscriptionId })).toEqual({ removed: false });
    await write('kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1 });
    await other.until(1);
    await sleep(50);
    expect(sub.events).toHaveLength(0);
    await other.close();
    await sleep(50);
    expect(server.server.subscriptionCount()).toBe(before);
    await sub.close();
  });
});

describe('change log retention and backpressure', () => {
  let small: TestServer;
  beforeAll(async () => {
    small = await startTestServer({ changeRetention: { maxCount: 10 }, pruneIntervalMs: 20, maxBufferedBytes: 512 * 1024 });
  });
  afterAll(async () => small.close());

  it('a fromRevision older than the log keeps is COMPACTED with data.oldestRevision', async () => {
    const client = await connectRaw(small.url);
    await call(client, 'kvStore.setMany', { instanceId: 'r', namespace: 'n', autoCreateInstance: true, entries: Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: i })) });
    await sleep(150);
    const compacted = await client.request({ type: 'kvStore.watch', requestId: rid(), params: { instanceId: 'r', fromRevision: 0 } });
    expect(compacted).toMatchObject({ success: false, code: 'COMPACTED', data: { oldestRevision: 41 } });
    const kept = await subscribe({ instanceId: 'r', fromRevision: 40 }, small.url);
    expect((await kept.until(10)).map((e) => e.revision)).toEqual(Array.from({ length: 10 }, (_, i) => 41 + i));
    await Promise.all([kept.close(), client.close()]);
  });

  it('closes a subscriber that does not read its events with 1013, and frees its subscriptions', async () => {
    const lazy = await connectRaw(small.url);
    await call(lazy, 'kvStore.watch', { instanceId: 'r' });
    lazy.socket.pause();
    const closed = lazy.closed();
    const client = await connectRaw(small.url);
    const big = 'v'.repeat(50_000);
    for (let i = 0; i < 400 && small.server.subscriptionCount() > 0; i++) {
      await call(client, 'kvStore.set', { instanceId: 'r', namespace: 'n', key: 'big', value: big });
    }
    lazy.socket.resume();
    expect(await closed).toEqual({ code: 1013, reason: 'subscriber is not reading its events' });
    expect(small.server.subscriptionCount()).toBe(0);
    await client.close();
  });
});

describe('a replay under way', () => {
  it('keeps the changes it still has to send, even when retention would drop them meanwhile', async () => {
    const busy = await startTestServer({ changeRetention: { maxCount: 1200 }, pruneIntervalMs: 10, durability: 'normal', maxBufferedBytes: 1024 * 1024 });
    try {
      const client = await connectRaw(busy.url);
      const big = 'b'.repeat(10_000);
      for (let i = 0; i < 12; i++) {
        await call(client, 'kvStore.setMany', { instanceId: 'floor', namespace: 'n', autoCreateInstance: true, entries: Array.from({ length: 100 }, (_, k) => ({ key: `k${i}-${k}`, value: big })) });
      }
      const engine = busy.server.engine;
      const from = 0;
      // A reader that pauses mid-replay (12 MB of events, more than one page of the log) while
      // 1300 more changes arrive, enough for retention to want the replay's next page gone.
      const reader = await connectRaw(busy.url);
      const revisions: number[] = [];
      reader.socket.on('message', (data) => {
        const frame = JSON.parse(String(data));
        if (frame.type === 'kvStore.event') revisions.push(frame.event.revision);
      });
      reader.send({ type: 'kvStore.watch', requestId: rid(), params: { instanceId: 'floor', fromRevision: from } });
      reader.socket.pause();
      // Wait until the replay has filled the socket and is waiting for the reader.
      await sleep(300);
      for (let i = 0; i < 13; i++) {
        await call(client, 'kvStore.setMany', { instanceId: 'floor', namespace: 'm', entries: Array.from({ length: 100 }, (_, k) => ({ key: `s${k}`, value: i })) });
      }
      await sleep(200);
      reader.socket.resume();
      const last = await engine.currentRevision();
      const deadline = Date.now() + 10_000;
      while (revisions.at(-1) !== last && Date.now() < deadline) await sleep(20);
      expect(revisions).toEqual(Array.from({ length: last - from }, (_, i) => from + 1 + i));
      // Once the replay is done, retention applies again.
      while ((await engine.oldestRevision()) <= from + 1 && Date.now() < deadline) await sleep(20);
      expect(await engine.oldestRevision()).toBeGreaterThan(from + 1);
      await Promise.all([reader.close(), client.close()]);
    } finally {
      await busy.close();
    }
  }, 30_000);
});
