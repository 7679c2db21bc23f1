import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DatabaseInUseError,
  ensureDisposeSymbols,
  EmbeddedKv,
  KvError,
  openKV,
  type KvRecord,
  type WatchEvent,
} from '../embedded/index.js';
import { startTestServer } from './helpers/server.js';

// The handle and facade behaviour (get/set/delete/incr/setMany/list/TTL/conflicts/autoCreate/...)
// is asserted for embedded stores and network clients alike by sdk-handles.test.ts and
// sdk-kvstore.test.ts. This file holds what only an embedded store has: opening, closing,
// disposal, files, isolation from the caller's objects, its own request path.

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvhub-embedded-test-'));
let files = 0;
const freshPath = () => path.join(tmp, `db-${++files}.sqlite`);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** The error `promise` rejects with, failing the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<KvError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(KvError);
  return error as KvError;
}

describe('openKV', () => {
  it('serves the typed handles on :memory:, with no server', async () => {
    await using kv = openKV({ path: ':memory:' });
    const users = kv.instance('app', { autoCreate: true }).namespace('users');
    expect(await users.get('ada')).toBeUndefined();
    const record = await users.set('ada', { name: 'Ada', born: 1815 });
    expect(record).toMatchObject({ instanceId: 'app', namespace: 'users', key: 'ada', version: 1, value: { name: 'Ada', born: 1815 } });
    expect(await users.get('ada')).toEqual({ name: 'Ada', born: 1815 });
    expect(await users.incr('visits', 3)).toBe(3);
    await users.setMany({ grace: { name: 'Grace' }, alan: { name: 'Alan' } });
    expect(await collect(users.keys())).toEqual(['ada', 'alan', 'grace', 'visits']);
    expect(await users.delete('alan')).toBe(true);
    expect(await users.count()).toBe(3);
    expect(await kv.instance('app').info()).toMatchObject({ id: 'app', name: 'app' });
  });

  it('takes a path alone; each :memory: store is its own', async () => {
    await using a = openKV(':memory:');
    await using b = openKV(':memory:');
    await a.instance('i', { autoCreate: true }).namespace('n').set('k', 'a');
    expect(await b.instance('i', { autoCreate: true }).namespace('n').get('k')).toBeUndefined();
    expect(a.path).toBe(':memory:');
  });

  it('keeps everything in its file across close and reopen, revisions included', async () => {
    const file = freshPath();
    const first = openKV({ path: file, durability: 'normal' });
    const ns = first.instance('app', { autoCreate: true }).namespace('ns');
    await ns.set('kept', { n: 1 });
    const second = await ns.set('kept', { n: 2 });
    await ns.set('gone', 1);
    await ns.delete('gone');
    await first.close();

    await using again = openKV({ path: file });
    const reopened = again.instance('app').namespace('ns');
    expect(await reopened.getRecord('kept')).toEqual(second);
    expect(await reopened.has('gone')).toBe(false);
    expect((await reopened.set('kept', 3)).revision).toBe(second.revision + 3);
  });

  it('reports its durability and limits in hello, as a server does', async () => {
    await using kv = openKV({ path: ':memory:', durability: 'normal', limits: { maxValueBytes: 4096, maxPayloadBytes: 100_000 } });
    expect(kv.durability).toBe('normal');
    const hello = await kv.kvStore.hello();
    expect(hello).toMatchObject({ success: true, data: { protocolVersion: 1, durability: 'normal', limits: { maxValueBytes: 4096, maxPayloadBytes: 100_000 } } });
    await expect(kv.instance('i', { autoCreate: true }).namespace('n').set('big', 'x'.repeat(5000))).rejects.toMatchObject({
      code: 'VALUE_TOO_LARGE',
    });
  });

  it('refuses bad options before touching any file', () => {
    const file = freshPath();
    expect(() => openKV({} as never)).toThrow(TypeError);
    expect(() => openKV({ path: file, durability: 'sometimes' as never })).toThrow(RangeError);
    expect(() => openKV({ path: file, limits: { maxBatch: 0 } })).toThrow(/maxBatch/);
    expect(() => openKV({ path: file, limits: { maxValueBytes: 1 << 20, maxPayloadBytes: 1 << 20 } })).toThrow(/maxPayloadBytes/);
    expect(() => openKV({ path: file, sweepIntervalMs: -5 })).toThrow(/sweepIntervalMs/);
    expect(() => openKV({ path: file, pruneIntervalMs: 2 ** 31 })).toThrow(/pruneIntervalMs/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('refuses a file a server (or another store) holds with DatabaseInUseError', async () => {
    const server = await startTestServer();
    try {
      expect(() => openKV({ path: server.db })).toThrow(DatabaseInUseError);
    } finally {
      await server.close();
    }
    const file = freshPath();
    await using kv = openKV({ path: file });
    expect(() => openKV({ path: file })).toThrow(DatabaseInUseError);
    expect(kv.closed).toBe(false);
  });
});

describe('closing', () => {
  it('after close() every call rejects with NOT_CONNECTED; close is idempotent', async () => {
    const kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    await ns.set('k', 1);
    const closing = kv.close();
    expect(kv.closed).toBe(true);
    expect(kv.close()).toBe(closing);
    await closing;
    const error = await rejection(ns.get('k'));
    expect(error).toMatchObject({ code: 'NOT_CONNECTED', message: 'the store is closed', type: 'kvStore.get' });
    expect((await rejection(ns.set('k', 2))).code).toBe('NOT_CONNECTED');
    expect((await rejection(kv.kvStore.get('app', 'ns', 'k'))).code).toBe('NOT_CONNECTED');
    expect((await rejection(kv.request('kvStore.ping'))).code).toBe('NOT_CONNECTED');
  });

  it('writes made before close() are committed; the file is free once close() resolves', async () => {
    const file = freshPath();
    const kv = openKV({ path: file });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    // Not awaited: they wait for their commit, which close() performs.
    const writes = [ns.set('a', 1), ns.set('b', 2), ns.incr('c')];
    await kv.close();
    await expect(Promise.all(writes)).resolves.toHaveLength(3);
    await using reopened = openKV({ path: file });
    expect(await reopened.instance('app').namespace('ns').getMany(['a', 'b', 'c'])).toEqual([1, 2, 1]);
  });

  it('`await using` closes the store at the end of the block', async () => {
    const file = freshPath();
    let kept: EmbeddedKv | undefined;
    {
      await using kv = openKV({ path: file });
      kept = kv;
      await kv.instance('app', { autoCreate: true }).namespace('ns').set('k', 'v');
      expect(kv.closed).toBe(false);
    }
    expect(kept.closed).toBe(true);
    await expect(kept.instance('app').namespace('ns').get('k')).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await using again = openKV({ path: file });
    expect(await again.instance('app').namespace('ns').get('k')).toBe('v');
  });

  it('`using` closes the store at the end of the block', async () => {
    const file = freshPath();
    let kept: EmbeddedKv | undefined;
    {
      using kv = openKV({ path: file });
      kept = kv;
      await kv.instance('app', { autoCreate: true }).namespace('ns').set('k', 'v');
    }
    expect(kept.closed).toBe(true);
    await expect(kept.instance('app').namespace('ns').get('k')).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    // A synchronous dispose cannot wait for the database to be released; close() tells when it is.
    await kept.close();
    using again = openKV({ path: file });
    expect(await again.instance('app').namespace('ns').get('k')).toBe('v');
  });

  it('ends watch subscriptions normally', async () => {
    const kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    await ns.set('k', 0);
    const subscription = ns.watch();
    await subscription.ready;
    const events = collect(subscription);
    await ns.set('k', 1);
    await kv.close();
    expect((await events).map((e) => [e.kind, e.key])).toEqual([['set', 'k']]);
    expect(subscription.state).toBe('ended');
  });
});

describe('the request path', () => {
  it('replies with the protocol codes, typed as KvError by the handles', async () => {
    await using kv = openKV({ path: ':memory:', limits: { maxBatch: 3 } });
    const missing = kv.instance('nope').namespace('ns');
    expect(await rejection(missing.get('k'))).toMatchObject({ code: 'INSTANCE_NOT_FOUND', message: "instance 'nope' not found", type: 'kvStore.get' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    const v1 = await ns.set('k', 'one');
    const conflict = await rejection(ns.set('k', 'two', { ifVersion: v1.version + 1 }));
    expect(conflict).toMatchObject({ code: 'CONFLICT', data: { current: { version: 1, value: 'one' } } });
    expect(conflict.reply).toMatchObject({ success: false, code: 'CONFLICT', requestId: expect.any(String), timestamp: expect.any(String) });
    expect((await rejection(ns.set('', 1))).code).toBe('VALIDATION_ERROR');
    expect((await rejection(ns.set('k', 1, { ttlMs: 0 }))).code).toBe('INVALID_TTL');
    expect((await rejection(ns.incr('k'))).code).toBe('TYPE_MISMATCH');
    expect((await rejection(ns.setMany({ a: 1, b: 2, c: 3, d: 4 }))).code).toBe('LIMIT_EXCEEDED');
    expect(await ns.getMany(['a', 'b'])).toEqual([undefined, undefined]);
  });

  it('answers raw requests with reply envelopes, failures included', async () => {
    await using kv = openKV({ path: ':memory:' });
    expect(await kv.request('kvStore.ping')).toMatchObject({ type: 'kvStore.ping', success: true, data: { pong: true } });
    // A type the protocol lacks, as a caller without the types could send it.
    const untyped = kv.request.bind(kv) as (type: string) => Promise<unknown>;
    const unknown = await untyped('kvStore.nope');
    expect(unknown).toMatchObject({ type: 'kvStore.nope', success: false, code: 'UNKNOWN_TYPE' });
    const invalid = await kv.request('kvStore.get', { instanceId: 'i', namespace: 'n' } as never);
    expect(invalid).toMatchObject({ success: false, code: 'VALIDATION_ERROR', data: { issues: [{ path: ['key'] }] } });
    const strict = await kv.request('kvStore.ping', { extra: 1 } as never);
    expect(strict).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
  });

  it('gives values JSON meaning, as the network does, and refuses what JSON cannot hold', async () => {
    await using kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    const record = await ns.set('k', { kept: 1, dropped: undefined, when: new Date(0), nan: Number.NaN });
    expect(record.value).toEqual({ kept: 1, when: '1970-01-01T00:00:00.000Z', nan: null });
    expect(await ns.get('k')).toEqual(record.value);
    const error = await rejection(ns.set('big', 10n));
    expect(error).toMatchObject({ code: 'VALIDATION_ERROR', type: 'kvStore.set' });
    const cycle: Record<string, unknown> = {};
    cycle['self'] = cycle;
    expect((await rejection(ns.set('cycle', cycle))).code).toBe('VALIDATION_ERROR');
    expect(await ns.has('big')).toBe(false);
  });

  it('keeps stored data apart from the caller’s objects, both ways', async () => {
    await using kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    const value = { list: [1, 2], nested: { a: 1 } };
    const written = await ns.set('k', value);
    value.list.push(3);
    value.nested.a = 99;
    (written.value as { nested: { a: number } }).nested.a = 42;
    const read = (await ns.get<{ list: number[]; nested: { a: number } }>('k'))!;
    expect(read).toEqual({ list: [1, 2], nested: { a: 1 } });
    read.list.push(4);
    expect(await ns.get('k')).toEqual({ list: [1, 2], nested: { a: 1 } });
  });

  it('applies writes in call order, also when they are not awaited one by one', async () => {
    await using kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    const records = await Promise.all([ns.set('k', 'first'), ns.set('k', 'second'), ns.set('k', 'third')]);
    expect(records.map((r) => r.version)).toEqual([1, 2, 3]);
    expect(await ns.get('k')).toBe('third');
  });

  it('honours an AbortSignal that has fired: nothing runs', async () => {
    await using kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    const controller = new AbortController();
    controller.abort(new Error('changed my mind'));
    expect(await rejection(ns.set('k', 1, { signal: controller.signal }))).toMatchObject({ code: 'ABORTED', type: 'kvStore.set' });
    expect(await ns.has('k')).toBe(false);
    expect(await ns.set('k', 2, { signal: new AbortController().signal, timeoutMs: 5000 })).toMatchObject({ value: 2 });
  });

  it('expires keys by TTL, and its sweeper announces the expiry to watchers', async () => {
    await using kv = openKV({ path: ':memory:', sweepIntervalMs: 10 });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    await ns.set('other', 0); // creates the instance, which a watch needs
    // Watching before the write, and a TTL well above the sweep's interval: a late timer on a
    // loaded machine can neither expire the key before ttl() reads it nor announce it unwatched.
    const subscription = ns.watch({ key: 'short' });
    await subscription.ready;
    await ns.set('short', 1, { ttlMs: 300 });
    expect(await ns.ttl('short')).toBeGreaterThan(0);
    expect((await subscription.next()).value).toMatchObject({ kind: 'set', key: 'short' });
    const next = await subscription.next();
    expect(next.value).toMatchObject({ kind: 'expire', key: 'short' });
    expect(await ns.get('short')).toBeUndefined();
    await subscription.unsubscribe();
  });
});

describe('watch', () => {
  it('delivers live events in revision order, binary values decoded, and replays from a revision', async () => {
    await using kv = openKV({ path: ':memory:' });
    const inst = kv.instance('app', { autoCreate: true });
    const ns = inst.namespace('ns');
    const first = await ns.set('a', 1);
    const seen: WatchEvent[] = [];
    const subscription = inst.watch({ onEvent: (event) => void seen.push(event) });
    await subscription.ready;
    await ns.set('b', new Uint8Array([1, 2]));
    await ns.delete('a');
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen.map((e) => [e.kind, e.key])).toEqual([
      ['set', 'b'],
      ['delete', 'a'],
    ]);
    expect((seen[0]!.record as KvRecord).value).toEqual(new Uint8Array([1, 2]));
    await subscription.unsubscribe();

    const replay = ns.watch({ fromRevision: first.revision });
    await replay.ready;
    const replayed = [await replay.next(), await replay.next()].map((r) => [r.value?.kind, r.value?.key]);
    expect(replayed).toEqual([
      ['set', 'b'],
      ['delete', 'a'],
    ]);
    await replay.unsubscribe();
  });

  it('lets a subscriber write from its callback', async () => {
    await using kv = openKV({ path: ':memory:' });
    const ns = kv.instance('app', { autoCreate: true }).namespace('ns');
    await ns.set('ping', 0);
    const echoes: Promise<KvRecord>[] = [];
    const subscription = ns.watch({
      key: 'ping',
      onEvent: (event) => void echoes.push(ns.set('pong', (event.record as KvRecord).value)),
    });
    await subscription.ready;
    await ns.set('ping', 1);
    await ns.set('ping', 2);
    await new Promise((resolve) => setImmediate(resolve));
    expect((await Promise.all(echoes)).map((r) => [r.value, r.version])).toEqual([
      [1, 1],
      [2, 2],
    ]);
    expect(await ns.get('pong')).toBe(2);
    await subscription.unsubscribe();
  });

  it('refuses a watch on a missing instance with INSTANCE_NOT_FOUND', async () => {
    await using kv = openKV({ path: ':memory:' });
    const subscription = kv.instance('nope').namespace('ns').watch();
    await expect(subscription.ready).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    await expect(subscription.next()).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
  });
});

describe('module', () => {
  it('does not load ws, not even lazily', async () => {
    const root = fileURLToPath(new URL('..', import.meta.url));
    const result = await build({
      entryPoints: [path.join(root, 'embedded/index.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const imports = Object.values(result.metafile.outputs).flatMap((output) => output.imports.map((i) => i.path));
    expect(imports).toContain('better-sqlite3');
    expect(imports.filter((name) => name === 'ws' || name.startsWith('ws/'))).toEqual([]);
    // The SDK's transport is where a network client loads ws; the store never reaches it.
    expect(Object.keys(result.metafile.inputs).filter((input) => input.endsWith('sdk/transport.ts'))).toEqual([]);
  });

  it('defines Symbol.dispose and Symbol.asyncDispose where a runtime lacks them, and keeps them where it has them', () => {
    const bare = {};
    ensureDisposeSymbols(bare);
    expect(bare).toMatchObject({ dispose: Symbol.for('Symbol.dispose'), asyncDispose: Symbol.for('Symbol.asyncDispose') });
    const own = Symbol('own');
    const complete = { dispose: own, asyncDispose: own };
    ensureDisposeSymbols(complete);
    expect(complete).toEqual({ dispose: own, asyncDispose: own });
    expect(typeof Symbol.dispose).toBe('symbol');
    expect(typeof EmbeddedKv.prototype[Symbol.dispose]).toBe('function');
    expect(typeof EmbeddedKv.prototype[Symbol.asyncDispose]).toBe('function');
  });
});
