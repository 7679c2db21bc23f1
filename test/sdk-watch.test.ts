import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import type { Connection, PushMessage } from '../sdk/connection.js';
import { createClient, isKvError, KvError, type ClientOptions, type KvClient, type NamespaceHandle, type Subscription, type WatchEvent } from '../sdk/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';

// ---------------------------------------------------------------- helpers

/** Everything a test opened, closed after it (last first). */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

function client(url: string, options: ClientOptions = {}): KvClient {
  const c = createClient({ url, requestTimeoutMs: 5000, reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

/** Rejects with a message naming `what` when `promise` takes longer than `ms` (generous: CI machines are slow). */
async function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next `n` events of `sub`, without ending it. */
async function take(sub: Subscription, n: number): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  while (out.length < n) {
    const result = await within(sub.next(), `event ${out.length + 1} of ${n}`);
    if (result.done === true) throw new Error(`the subscription ended after ${out.length} of ${n} events`);
    out.push(result.value);
  }
  return out;
}

/** Every `kvStore.event` push the client's connection receives, routed or not (white-box spy). */
function spyPushes(c: KvClient): PushMessage[] {
  const seen: PushMessage[] = [];
  (c as unknown as { connection: Connection }).connection.onPush((message) => seen.push(message));
  return seen;
}

/** Cuts the client's socket from under it, as a network failure would (white-box). */
function dropSocket(c: KvClient): void {
  const socket = (c as unknown as { connection: { socket?: { terminate(): void } } }).connection.socket;
  if (socket === undefined) throw new Error('the client has no socket');
  socket.terminate();
}

/** Starts the closing handshake on the client's socket (white-box): `readyState` is CLOSING at once, but the client still says `ready` until the close completes. */
function closeSocket(c: KvClient): void {
  const socket = (c as unknown as { connection: { socket?: { close(): void } } }).connection.socket;
  if (socket === undefined) throw new Error('the client has no socket');
  socket.close();
}

/** Tells `listener` of every state change of the client's connection (white-box; runs after the watch hub's own listener). */
function onState(c: KvClient, listener: (state: string) => void): void {
  (c as unknown as { connection: Connection }).connection.onStateChange(listener);
}

/** Resolves once `condition()` holds, polling; rejects naming `what` after `ms` (generous: CI machines are slow). */
async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function brief(events: readonly WatchEvent[]) {
  return events.map((e) => ({ kind: e.kind, namespace: e.namespace, key: e.key, revision: e.revision }));
}

// ---------------------------------------------------------------- one server for most tests

let server: TestServer;
let c: KvClient;
let writer: KvClient;
let n = 0;

beforeAll(async () => {
  server = await startTestServer({ durability: 'normal' });
  c = createClient({ url: server.url, requestTimeoutMs: 5000 });
  writer = createClient({ url: server.url, requestTimeoutMs: 5000 });
  await Promise.all([c.waitForReady(), writer.waitForReady()]);
});
afterAll(async () => {
  await c.close();
  await writer.close();
  await server.close();
});

/** A fresh instance (created) with a namespace handle for the watcher and one for the writer. */
async function fresh(namespace = 'ns'): Promise<{ id: string; watched: NamespaceHandle; written: NamespaceHandle }> {
  const id = `w-${++n}`;
  await writer.kvStore.createInstance(id, undefined, { id });
  return { id, watched: c.instance(id).namespace(namespace), written: writer.instance(id).namespace(namespace) };
}

async function currentRevision(id: string): Promise<number> {
  // A watch reply carries the current revision; unwatch it at once.
  const sub = writer.kvStore.watch(id);
  const { revision } = await sub.ready;
  await sub.unsubscribe();
  return revision;
}

// ---------------------------------------------------------------- live events

describe('live events', () => {
  it('a namespace handle yields set and delete events in revision order through for await', async () => {
    const { id, watched, written } = await fresh();
    const before = await currentRevision(id);
    const sub = watched.watch();
    const ready = await sub.ready;
    expect(ready).toEqual({ subscriptionId: expect.any(String), revision: before });
    expect(sub.state).toBe('live');
    expect(sub.lastRevision).toBeUndefined();

    const a = await written.set('a', { n: 1 });
    const b = await written.set('b', [2]);
    await written.delete('a');

    const events: WatchEvent[] = [];
    for await (const event of sub) {
      events.push(event);
      if (events.length === 3) break;
    }
    expect(brief(events)).toEqual([
      { kind: 'set', namespace: 'ns', key: 'a', revision: a.revision },
      { kind: 'set', namespace: 'ns', key: 'b', revision: b.revision },
      { kind: 'delete', namespace: 'ns', key: 'a', revision: b.revision + 1 },
    ]);
    expect(events[0]!.instanceId).toBe(id);
    expect(events[0]!.record).toMatchObject({ key: 'a', value: { n: 1 }, version: 1, revision: a.revision });
    expect(events[2]!.record).toBeNull();
    expect(sub.lastRevision).toBe(b.revision + 1);
    expect(sub.state).toBe('ended');
  });

  it('onEvent receives every event; kvStore.watch passes records as sent, handles decode binary values', async () => {
    const { id, watched, written } = await fresh();
    const raw: WatchEvent[] = [];
    const decoded: WatchEvent[] = [];
    const errors: KvError[] = [];
    const facade = c.kvStore.watch(id, { namespace: 'ns', onEvent: (event) => void raw.push(event), onError: (e) => void errors.push(e) });
    const handle = watched.watch({ onEvent: (event) => void decoded.push(event) });
    await Promise.all([facade.ready, handle.ready]);

    const bytes = new Uint8Array([0, 1, 2, 250]);
    const r1 = await written.set('bin', bytes);
    const r2 = await written.incr('count', 5);
    await expect.poll(() => raw.length + decoded.length, { timeout: 10_000 }).toBe(4);

    expect(raw.map((e) => e.revision)).toEqual([r1.revision, r1.revision + 1]);
    expect(raw[0]!.record).toMatchObject({ value: 'AAEC+g==', contentType: 'application/octet-stream' });
    expect(decoded[0]!.record!.value).toEqual(bytes);
    expect(decoded[1]!.record!.value).toBe(r2);
    expect(facade.lastRevision).toBe(r1.revision + 1);
    await Promise.all([facade.unsubscribe(), handle.unsubscribe()]);
    expect(errors).toEqual([]);
  });

  it('a key filter sees only that key; a prefix filter only its keys, and namespaceDeleted', async () => {
    const { watched, written } = await fresh();
    const byKey = watched.watch({ key: 'job:1' });
    const byPrefix = watched.watch({ prefix: 'job:' });
    await Promise.all([byKey.ready, byPrefix.ready]);

    const j1 = await written.set('job:1', 1);
    await written.set('other', 0);
    const j2 = await written.set('job:2', 2);
    await written.set('job', 'no colon: not in the prefix');
    await written.set('Job:3', 'case matters');
    const j1b = await written.set('job:1', 11);
    expect(await written.clear()).toBe(5);

    expect(brief(await take(byKey, 3))).toEqual([
      { kind: 'set', namespace: 'ns', key: 'job:1', revision: j1.revision },
      { kind: 'set', namespace: 'ns', key: 'job:1', revision: j1b.revision },
      { kind: 'namespaceDeleted', namespace: 'ns', key: null, revision: j1b.revision + 1 },
    ]);
    expect(brief(await take(byPrefix, 4)).map((e) => [e.kind, e.key])).toEqual([
      ['set', 'job:1'],
      ['set', 'job:2'],
      ['set', 'job:1'],
      ['namespaceDeleted', null],
    ]);
    expect(byPrefix.lastRevision).toBe(j1b.revision + 1);
    expect(j2.revision).toBeGreaterThan(j1.revision);
    await Promise.all([byKey.unsubscribe(), byPrefix.unsubscribe()]);
  });

  it('an instance handle watches every namespace of the instance', async () => {
    const { id } = await fresh();
    const sub = c.instance(id).watch();
    await sub.ready;
    const w = writer.instance(id);
    const x = await w.namespace('x').set('k', 1);
    const y = await w.namespace('y').set('k', 2);
    const nested = await w.namespace('x').namespace('z').set('k', 3);
    expect(brief(await take(sub, 3)).map((e) => [e.namespace, e.revision])).toEqual([
      ['x', x.revision],
      ['y', y.revision],
      ['x/z', nested.revision],
    ]);
    await sub.unsubscribe();
  });
});

// ---------------------------------------------------------------- fromRevision

describe('fromRevision', () => {
  it('replays the changes after it, then continues live with no gap and no duplicate', async () => {
    const { id, watched, written } = await fresh();
    const start = await currentRevision(id);
    const early = [await written.set('a', 1), await written.set('b', 2), await written.set('a', 3)].map((r) => r.revision);

    const sub = watched.watch({ fromRevision: start });
    expect((await sub.ready).revision).toBe(early[2]);
    const live = (await written.set('c', 4)).revision;
    expect((await take(sub, 4)).map((e) => e.revision)).toEqual([...early, live]);

    // A new subscription resumed from lastRevision picks up exactly where this one stopped.
    const resumeFrom = sub.lastRevision!;
    await sub.unsubscribe();
    const missed = (await written.set('d', 5)).revision;
    const resumed = watched.watch({ fromRevision: resumeFrom });
    expect(brief(await take(resumed, 1))).toEqual([{ kind: 'set', namespace: 'ns', key: 'd', revision: missed }]);
    await resumed.unsubscribe();
  });
});

// ---------------------------------------------------------------- ending

describe('ending a subscription', () => {
  it('unsubscribe() ends the iteration and frees the subscription on the server', async () => {
    const { watched, written } = await fresh();
    const pushes = spyPushes(c);
    const sub = watched.watch();
    const { subscriptionId } = await sub.ready;
    await written.set('a', 1);
    await take(sub, 1);

    const pending = sub.next();
    await sub.unsubscribe();
    await expect(pending).resolves.toEqual({ done: true, value: undefined });
    await expect(sub.next()).resolves.toEqual({ done: true, value: undefined });
    expect(sub.state).toBe('ended');
    expect(sub.subscriptionId).toBeUndefined();

    const mark = pushes.length;
    const second = watched.watch();
    expect((await second.ready).subscriptionId).not.toBe(subscriptionId);
    const later = await written.set('b', 2);
    expect((await take(second, 1))[0]!.revision).toBe(later.revision);
    await c.kvStore.ping(); // every push of that write went out before this reply
    expect(pushes.slice(mark).filter((p) => p['subscriptionId'] === subscriptionId)).toEqual([]);
    await second.unsubscribe();
  });

  it('break out of for await sends unwatch: the server stops sending, another subscription still works', async () => {
    const { watched, written } = await fresh();
    const pushes = spyPushes(c);
    const sub = watched.watch({ prefix: 'k' });
    const { subscriptionId } = await sub.ready;
    await written.set('k1', 1);
    await written.set('k2', 2);
    for await (const event of sub) {
      expect(event.key).toBe('k1');
      break;
    }
    expect(sub.state).toBe('ended');
    const mark = pushes.length;

    const again = watched.watch({ prefix: 'k' });
    await again.ready;
    const r = await written.set('k3', 3);
    expect((await take(again, 1))[0]!.revision).toBe(r.revision);
    await c.kvStore.ping();
    expect(pushes.slice(mark).filter((p) => p['subscriptionId'] === subscriptionId)).toEqual([]);
    await again.unsubscribe();
  });

  it('an AbortSignal ends the iteration normally; aborted before the reply, ready rejects with ABORTED', async () => {
    const { watched, written } = await fresh();
    const controller = new AbortController();
    const sub = watched.watch({ signal: controller.signal });
    await sub.ready;
    const loop = (async () => {
      const keys: (string | null)[] = [];
      for await (const event of sub) {
        keys.push(event.key);
        controller.abort();
      }
      return keys;
    })();
    await written.set('a', 1);
    await expect(within(loop, 'the loop to end')).resolves.toEqual(['a']);

    const early = watched.watch({ signal: AbortSignal.abort() });
    await expect(early.ready).rejects.toMatchObject({ code: 'ABORTED' });
    await expect(early.next()).resolves.toMatchObject({ done: true });
  });

  it('instanceDeleted is delivered, then the iteration ends', async () => {
    const { id, watched, written } = await fresh();
    const sub = watched.watch();
    const whole = c.instance(id).watch();
    await Promise.all([sub.ready, whole.ready]);
    await written.set('a', 1);
    await writer.kvStore.deleteInstance(id);

    const seen: WatchEvent[] = [];
    for await (const event of whole) seen.push(event);
    expect(seen.map((e) => [e.kind, e.namespace, e.key])).toEqual([
      ['set', 'ns', 'a'],
      ['instanceDeleted', null, null],
    ]);
    expect(whole.state).toBe('ended');
    const kinds: string[] = [];
    for await (const event of sub) kinds.push(event.kind);
    expect(kinds).toEqual(['set', 'instanceDeleted']);
  });

  it('client.close() ends every iteration normally, after the events already received', async () => {
    const own = client(server.url);
    const { id, written } = await fresh();
    const errors: unknown[] = [];
    const sub = own.instance(id).namespace('ns').watch({ onError: (e) => errors.push(e) });
    await sub.ready;
    const r = await written.set('a', 1);
    await expect.poll(() => spyCount(own, sub), { timeout: 10_000 }).toBeGreaterThan(0);
    await own.close();
    const revisions: number[] = [];
    await within(
      (async () => {
        for await (const event of sub) revisions.push(event.revision);
      })(),
      'the iteration to end',
    );
    expect(revisions).toEqual([r.revision]);
    expect(errors).toEqual([]);
    // A watch on a closed client fails at once.
    await expect(own.instance(id).watch().ready).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  });
});

/** Events received by `sub` but not yet consumed (white-box, to wait for arrival without consuming). */
function spyCount(_c: KvClient, sub: Subscription): number {
  const s = sub as unknown as { queue: unknown[]; head: number };
  return s.queue.length - s.head;
}

// ---------------------------------------------------------------- failures

describe('failures surface as KvError', () => {
  it('INSTANCE_NOT_FOUND: ready rejects, the iterator throws, onError is told', async () => {
    const errors: KvError[] = [];
    const sub = c.kvStore.watch('no-such-instance', { onError: (e) => errors.push(e) });
    await expect(sub.ready).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    await expect(sub.next()).rejects.toBeInstanceOf(KvError);
    await expect(sub.next()).resolves.toMatchObject({ done: true });
    expect(errors.map((e) => e.code)).toEqual(['INSTANCE_NOT_FOUND']);
    expect(sub.state).toBe('ended');

    const thrown = await (async () => {
      for await (const _ of c.instance('no-such-instance').namespace('x').watch()) void _;
    })().catch((e: unknown) => e);
    expect(isKvError(thrown, 'INSTANCE_NOT_FOUND')).toBe(true);
  });

  it('VALIDATION_ERROR: a fromRevision above the current revision, a key without a namespace', async () => {
    const { id, watched } = await fresh();
    const now = await currentRevision(id);
    await expect(watched.watch({ fromRevision: now + 1000 }).ready).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    await expect(c.kvStore.watch(id, { key: 'k' }).next()).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
  });

  it('COMPACTED with data.oldestRevision when fromRevision is older than the change log', async () => {
    const { id, watched, written } = await fresh();
    const start = await currentRevision(id);
    await written.setMany(Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, i])));
    await server.server.engine.pruneChanges({ maxCount: 3, maxAgeMs: 86_400_000 }, 1_000_000);
    const oldest = await server.server.engine.oldestRevision();
    const errors: KvError[] = [];
    const sub = watched.watch({ fromRevision: start, onError: (e) => errors.push(e) });
    const error = await sub.ready.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'COMPACTED', data: { oldestRevision: oldest } });
    await expect(sub.next()).rejects.toMatchObject({ code: 'COMPACTED' });
    expect(errors.map((e) => e.code)).toEqual(['COMPACTED']);
    // From oldestRevision - 1 it is still whole.
    const ok = watched.watch({ fromRevision: oldest - 1 });
    expect((await take(ok, 3)).map((e) => e.key)).toEqual(['k7', 'k8', 'k9']);
    await ok.unsubscribe();
  });

  it('COMPACTED when a resubscribe after a drop asks for changes no longer kept: queued events first, then the error', async () => {
    // A slow reconnect (at least 1 s: half the delay is fixed) leaves time to write and prune while this client is away.
    const slow = client(server.url, { reconnect: { initialDelayMs: 2000, maxDelayMs: 2000 } });
    const { id, written } = await fresh();
    const errors: KvError[] = [];
    const sub = slow.instance(id).namespace('ns').watch({ onError: (e) => errors.push(e) });
    await sub.ready;
    const first = await written.set('before', 0);
    await expect.poll(() => spyCount(slow, sub), { timeout: 10_000 }).toBe(1);

    dropSocket(slow);
    await written.setMany(Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, i])));
    await server.server.engine.pruneChanges({ maxCount: 3, maxAgeMs: 86_400_000 }, 1_000_000);

    const got: number[] = [];
    const error = await within(
      (async () => {
        for await (const event of sub) got.push(event.revision);
      })().catch((e: unknown) => e),
      'the COMPACTED error',
    );
    expect(got).toEqual([first.revision]);
    expect(error).toMatchObject({ code: 'COMPACTED', data: { oldestRevision: expect.any(Number) } });
    expect(errors.map((e) => e.code)).toEqual(['COMPACTED']);
    expect(sub.state).toBe('ended');
  });
});

// ---------------------------------------------------------------- reconnect

describe('reconnect disabled', () => {
  it('a drop ends the subscription with NOT_CONNECTED: events may have been missed', async () => {
    const fragile = client(server.url, { reconnect: false });
    const { id } = await fresh();
    const errors: KvError[] = [];
    const sub = fragile.instance(id).watch({ onError: (e) => errors.push(e) });
    await sub.ready;
    dropSocket(fragile);
    await expect(within(sub.next(), 'the error')).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(errors.map((e) => e.code)).toEqual(['NOT_CONNECTED']);
    expect(sub.state).toBe('ended');
  });
});


describe('reconnect', () => {
  it('a consumer sees every change exactly once, in order, across server restarts while another client keeps writing', async () => {
    const own = await startTestServer({ durability: 'normal' });
    cleanups.push(() => own.close());
    // The watcher comes back well after the writer, so it misses changes the replay must bring.
    const watcher = client(own.url, { reconnect: { initialDelayMs: 200, maxDelayMs: 200 } });
    const author = client(own.url);
    await author.kvStore.createInstance('feed', undefined, { id: 'feed' });
    const ns = author.instance('feed').namespace('events');

    const sub = watcher.instance('feed').namespace('events').watch({ prefix: 'p:' });
    const ids = [(await sub.ready).subscriptionId];
    const seen: number[] = [];
    let target: number | undefined;
    const consuming = (async () => {
      for await (const event of sub) {
        seen.push(event.revision);
        if (target !== undefined && event.revision >= target) break;
      }
    })();

    /** Writes `key` once: after a lost reply, the record tells whether (and at which revision) it landed. */
    async function write(key: string, value: number): Promise<number> {
      for (;;) {
        try {
          return (await ns.set(key, value)).revision;
        } catch (error) {
          if (!isKvError(error, 'CONNECTION_CLOSED') && !isKvError(error, 'TIMEOUT')) throw error;
          const record = await ns.getRecord(key);
          if (record !== undefined) return record.revision;
        }
      }
    }

    const matching: number[] = [];
    let written = 0;
    let stop = false;
    async function writeLoop(lane: number): Promise<void> {
      for (let i = 0; !stop; i++) {
        const key = i % 3 === 2 ? `q:${lane}:${i}` : `p:${lane}:${i}`;
        const revision = await write(key, i);
        if (key.startsWith('p:')) matching.push(revision);
        written++;
      }
    }
    const tick = () => new Promise((resolve) => setTimeout(resolve, 2));
    const writesMore = async (count: number) => {
      const goal = written + count;
      while (written < goal) await tick();
    };
    async function restarts(): Promise<void> {
      for (let round = 0; round < 2; round++) {
        await writesMore(80);
        await own.restart();
        // Let the watcher resubscribe before the next restart, so that each restart is seen: the
        // state alone may still be the old 'live' if the client has not processed the close yet.
        await until(() => sub.state === 'live' && sub.subscriptionId !== ids.at(-1), `the resubscribe after restart ${round + 1}`, 20_000);
        ids.push(sub.subscriptionId!);
      }
      await writesMore(80);
      stop = true;
    }
    await within(Promise.all([writeLoop(1), writeLoop(2), restarts()]), 'the writers', 40_000);

    matching.sort((a, b) => a - b);
    target = matching.at(-1)!;
    // Already past it (the loop is waiting for more): end the loop from outside.
    if ((seen.at(-1) ?? -1) >= target) void sub.unsubscribe();
    await within(consuming, 'the watcher to see the last write', 15_000);

    expect(seen.length).toBe(matching.length);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
    expect(seen).toEqual(matching);
    expect(sub.state).toBe('ended');
    // It resubscribed after each restart.
    expect(new Set(ids).size).toBe(3);
  }, 60_000);
});

/** A server of the test's own, a watcher client (with `options`) and an author client; instance `i` exists. */
async function serverWithWatcher(options?: ClientOptions) {
  const own = await startTestServer({ durability: 'normal' });
  cleanups.push(() => own.close());
  const watcher = client(own.url, options);
  const author = client(own.url);
  await author.kvStore.createInstance('i', undefined, { id: 'i' });
  await watcher.waitForReady();
  return { own, watcher, author };
}

describe('watch requests crossing a reconnect', () => {
  it('a watch made while the socket is closing is adopted after the reconnect: exactly one server subscription, each change pushed once', async () => {
    const { own, watcher, author } = await serverWithWatcher();
    const pushes = spyPushes(watcher);

    closeSocket(watcher);
    expect(watcher.state).toBe('ready'); // the close has not completed: the request stays queued
    const sub = watcher.instance('i').namespace('ns').watch();
    const { subscriptionId } = await within(sub.ready, 'the watch to be answered after the reconnect', 10_000);
    expect(sub.state).toBe('live');
    expect(sub.subscriptionId).toBe(subscriptionId);
    await watcher.kvStore.ping(); // any second watch would have been answered by now
    expect(own.server.subscriptionCount()).toBe(1);

    const mark = pushes.length;
    const r = await author.instance('i').namespace('ns').set('k', 1);
    expect((await take(sub, 1))[0]!.revision).toBe(r.revision);
    await author.kvStore.ping();
    await watcher.kvStore.ping(); // every push of that write reached the watcher before this reply
    expect(pushes.slice(mark).map((p) => p['subscriptionId'])).toEqual([subscriptionId]);

    await sub.unsubscribe();
    expect(own.server.subscriptionCount()).toBe(0);
  });

  it('a watch that crosses a reconnect and is unsubscribed before its reply is unwatched when the reply comes', async () => {
    const { own, watcher, author } = await serverWithWatcher();

    closeSocket(watcher);
    const sub = watcher.instance('i').watch();
    let unsubscribing: Promise<void> | undefined;
    // Ready again: the queued watch goes out right after this listener; unsubscribe before its reply.
    onState(watcher, (state) => {
      if (state === 'ready' && unsubscribing === undefined) unsubscribing = sub.unsubscribe();
    });
    await until(() => unsubscribing !== undefined, 'the reconnect');
    await within(unsubscribing!, 'unsubscribe() to resolve');
    await expect(sub.ready).rejects.toMatchObject({ code: 'ABORTED' });
    await watcher.kvStore.ping(); // the unwatch went out before this request
    expect(own.server.subscriptionCount()).toBe(0);
  });
});

describe('unsubscribe() while not connected', () => {
  it('unsubscribe() resolves at once while the server is down, and the queued watch is never sent', async () => {
    // A long request timeout: the bug made unsubscribe() wait for it.
    const { own, watcher, author } = await serverWithWatcher({ requestTimeoutMs: 30_000 });

    await own.stop();
    await until(() => watcher.state !== 'ready', 'the client to see the drop');
    const sub = watcher.instance('i').watch();
    expect(sub.state).toBe('subscribing');
    // Well below the 30 s request timeout the bug waited for.
    await within(sub.unsubscribe(), 'unsubscribe() while disconnected', 5000);
    expect(sub.state).toBe('ended');
    await expect(sub.ready).rejects.toMatchObject({ code: 'ABORTED' });
    await expect(sub.next()).resolves.toEqual({ done: true, value: undefined });

    await own.restart();
    await within(watcher.kvStore.ping(), 'the client to reconnect', 10_000);
    expect(own.server.subscriptionCount()).toBe(0);
  });

  it('unsubscribe() of a watch queued on a closing socket resolves once the socket is closed, without waiting for the reconnect', async () => {
    // A slow reconnect (0.5 to 1 s): unsubscribe() must not wait for it.
    const { own, watcher, author } = await serverWithWatcher({ requestTimeoutMs: 30_000, reconnect: { initialDelayMs: 1000, maxDelayMs: 1000 } });

    closeSocket(watcher);
    const sub = watcher.instance('i').watch();
    await within(sub.unsubscribe(), 'unsubscribe() on a closing socket');
    // It resolved once the socket closed, before the reconnect (the bug waited for the reply on the next socket).
    expect(watcher.state).not.toBe('ready');
    await expect(sub.ready).rejects.toMatchObject({ code: 'ABORTED' });
    await within(watcher.kvStore.ping(), 'the client to reconnect', 10_000);
    expect(own.server.subscriptionCount()).toBe(0);
  });
});

// ---------------------------------------------------------------- against a scripted server

interface RawRequest {
  type: string;
  requestId: string;
  params?: Record<string, unknown>;
}

/** A bare `ws` server that answers hello and hands every other request to `onRequest`. */
async function scriptedServer(onRequest: (request: RawRequest, socket: WebSocket, connection: number) => void) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  let connections = 0;
  const sockets = new Set<WebSocket>();
  wss.on('connection', (socket) => {
    const connection = ++connections;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('message', (data) => {
      const request = JSON.parse(String(data)) as RawRequest;
      if (request.type === 'kvStore.ping') socket.send(JSON.stringify(reply(request, { pong: true })));
      else if (request.type === 'kvStore.hello') {
        const hello = { protocolVersion: 1, serverVersion: 'scripted', durability: 'normal', capabilities: [], limits: { maxValueBytes: 1024, maxPayloadBytes: 65536, maxBatch: 10 } };
        socket.send(JSON.stringify(reply(request, hello)));
      } else onRequest(request, socket, connection);
    });
  });
  cleanups.push(async () => {
    for (const socket of sockets) socket.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}` };
}

function reply(request: RawRequest, data: unknown) {
  return { type: request.type, requestId: request.requestId, success: true, data, timestamp: new Date().toISOString() };
}

function push(subscriptionId: string, revision: number, kind = 'set', key: string | null = `k${revision}`) {
  return {
    type: 'kvStore.event',
    subscriptionId,
    event: { kind, instanceId: 'i', namespace: 'ns', key, record: null, revision },
    timestamp: new Date().toISOString(),
  };
}

describe('against a scripted server', () => {
  it('events in the same frame as the reply are kept; duplicates, older revisions and unknown kinds are dropped; the resubscribe asks from the last revision received', async () => {
    const watches: { connection: number; params: Record<string, unknown> | undefined }[] = [];
    const { url } = await scriptedServer((request, socket, connection) => {
      if (request.type !== 'kvStore.watch') return;
      watches.push({ connection, params: request.params });
      if (connection === 1) {
        // One frame: the reply, then events a synchronous reader sees before the reply's promise settles.
        socket.send(
          JSON.stringify([
            reply(request, { subscriptionId: 's1', revision: 4 }),
            push('s1', 5),
            push('s1', 5),
            push('s1', 3),
            push('s1', 6, 'someFutureKind', null),
            push('s1', 7),
          ]),
          // Then the connection dies, once that frame is handed to the OS (it still arrives first).
          () => socket.terminate(),
        );
      } else {
        // The replay overlaps what the client already has: 7 again, then 8.
        socket.send(JSON.stringify(reply(request, { subscriptionId: 's2', revision: 8 })));
        socket.send(JSON.stringify(push('s2', 7)));
        socket.send(JSON.stringify(push('s2', 8)));
        socket.send(JSON.stringify(push('s1', 9))); // an id of the dead socket: not ours any more
      }
    });
    const own = client(url);
    const sub = own.kvStore.watch('i', { namespace: 'ns' });
    expect(await sub.ready).toEqual({ subscriptionId: 's1', revision: 4 });
    const events = await take(sub, 3);
    expect(events.map((e) => e.revision)).toEqual([5, 7, 8]);
    expect(watches).toEqual([
      { connection: 1, params: { instanceId: 'i', namespace: 'ns' } },
      { connection: 2, params: { instanceId: 'i', namespace: 'ns', fromRevision: 7 } },
    ]);
    expect(sub.subscriptionId).toBe('s2');
    await own.kvStore.ping(); // sent after the push for s1, so that push was read by now
    expect(spyCount(own, sub)).toBe(0);
  });
});
