/**
 * Exactly-once writes, SDK side: every write carries an `idempotencyKey`, and a write in flight
 * when the socket drops is sent again, with the same frame, after the reconnect; reads in flight
 * reject with CONNECTION_CLOSED. A frame-recording proxy sits between the SDK and a real kvhub
 * server, so the tests see exactly which frames went out on which connection and can lose a
 * request, lose a reply, or cut the connection at a chosen moment.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { WRITE_TYPES } from '../protocol/index.js';
import { createClient, type ClientOptions, type KvClient, type NamespaceHandle } from '../sdk/index.js';
import { startCli, type CliProcess } from './helpers/cli.js';
import { startTestServer, type TestServer } from './helpers/server.js';

// ---------------------------------------------------------------- helpers

/** Everything a test opened, closed after it (last first). */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
});

function client(url: string, options: ClientOptions = {}): KvClient {
  const c = createClient({ url, requestTimeoutMs: 5000, reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface RequestFrame {
  type: string;
  requestId: string;
  params?: Record<string, unknown>;
}

/** A request frame the proxy saw, with the number of the client connection it came on (1 for the first). */
interface Seen {
  connection: number;
  frame: RequestFrame;
}

/**
 * A WebSocket proxy on port 0 in front of a real kvhub server. Each client connection gets its
 * own upstream connection. Every request is recorded (each element of a batch frame on its own); the test decides, through the
 * mutable hooks, which requests reach the server and which replies reach the client.
 */
interface Proxy {
  readonly url: string;
  /** Every request frame from the clients, in the order they arrived. */
  readonly seen: Seen[];
  /** False keeps a request from the server: it is never run, and never answered on that connection. */
  toServer: (frame: RequestFrame, connection: number) => boolean;
  /** What the client gets for a server frame: the text as it is, another text, or nothing (undefined). */
  toClient: (text: string, connection: number) => string | undefined;
  /** True hangs up every new client connection at once, as a server that is down would. */
  refuse: boolean;
  /** Cuts every client connection (and its upstream), as a network failure would. */
  drop(): void;
}

async function startProxy(upstream: string): Promise<Proxy> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const sockets = new Set<WebSocket>();
  let connections = 0;
  const proxy: Proxy = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    seen: [],
    toServer: () => true,
    toClient: (text) => text,
    refuse: false,
    drop: () => {
      for (const socket of sockets) socket.terminate();
    },
  };
  wss.on('connection', (downstream) => {
    const connection = ++connections;
    downstream.on('error', () => undefined);
    if (proxy.refuse) {
      downstream.terminate();
      return;
    }
    const server = new WebSocket(upstream, { perMessageDeflate: false });
    server.on('error', () => undefined);
    sockets.add(downstream).add(server);
    const early: string[] = [];
    server.on('open', () => {
      for (const text of early.splice(0)) server.send(text);
    });
    downstream.on('message', (data) => {
      // A batch frame (the SDK batches the single-key requests of one tick) is recorded and
      // filtered element by element; the elements let through go on as one frame.
      const parsed = JSON.parse(data.toString()) as RequestFrame | RequestFrame[];
      const passed: RequestFrame[] = [];
      for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
        proxy.seen.push({ connection, frame });
        if (proxy.toServer(frame, connection)) passed.push(frame);
      }
      if (passed.length === 0) return;
      const text = JSON.stringify(Array.isArray(parsed) ? passed : passed[0]);
      if (server.readyState === WebSocket.OPEN) server.send(text);
      else early.push(text);
    });
    server.on('message', (data) => {
      const text = proxy.toClient(data.toString(), connection);
      if (text !== undefined && downstream.readyState === WebSocket.OPEN) downstream.send(text);
    });
    const hangUp = () => {
      sockets.delete(downstream);
      sockets.delete(server);
      downstream.terminate();
      server.terminate();
    };
    downstream.on('close', hangUp);
    server.on('close', hangUp);
  });
  cleanups.push(async () => {
    proxy.drop();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  return proxy;
}

/**
 * From now on, requests sent on connection 1 stay at the proxy: the server never runs them, so
 * they stay in flight until the connection drops. Returns a wait for the first `n` of them.
 */
function holdFirstConnection(proxy: Proxy): (n: number) => Promise<RequestFrame[]> {
  const from = proxy.seen.length;
  proxy.toServer = (frame, connection) => connection > 1 || frame.type === 'kvStore.hello';
  const held = () => proxy.seen.slice(from).filter((s) => s.connection === 1).map((s) => s.frame);
  return async (n) => {
    await expect.poll(() => held().length).toBe(n);
    return held();
  };
}

/**
 * Loses every reply to a request of `type` on connection 1 (the server ran the request), so that
 * the request waits for the reconnect. Returns the replies lost so far.
 */
function loseReplies(proxy: Proxy, type: string): string[] {
  const lost: string[] = [];
  proxy.toClient = (text, connection) => {
    if (connection !== 1 || (JSON.parse(text) as { type?: string }).type !== type) return text;
    lost.push(text);
    return undefined;
  };
  return lost;
}

/** Every recorded frame of the request `requestId`, one per time it went out. */
function sendsOf(proxy: Proxy, requestId: string): Seen[] {
  return proxy.seen.filter((s) => s.frame.requestId === requestId);
}

/** The requests (not greetings) the proxy saw on `connection`. */
function requestsOn(proxy: Proxy, connection: number): RequestFrame[] {
  return proxy.seen.filter((s) => s.connection === connection && s.frame.type !== 'kvStore.hello').map((s) => s.frame);
}

// ---------------------------------------------------------------- against a real server, through the proxy

describe('exactly-once writes through a proxy to a real server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'normal' });
  });
  afterAll(async () => {
    await server.close();
  });

  let n = 0;
  /** A namespace handle of `c` on a fresh instance, created by the first write. */
  function fresh(c: KvClient): { ns: NamespaceHandle; instanceId: string } {
    const instanceId = `eo-${++n}`;
    return { ns: c.instance(instanceId, { autoCreate: true }).namespace('n'), instanceId };
  }

  /** The same namespace seen by a client of its own, straight to the server: what really was written. */
  function direct(instanceId: string): NamespaceHandle {
    return client(server.url).instance(instanceId).namespace('n');
  }

  it('every write carries its own idempotencyKey, every write type included; reads carry none; a key the caller gave is kept', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const kv = c.kvStore;
    const id = `eo-keys-${++n}`;
    const where = { instanceId: id, namespace: 'n' };
    const ns = c.instance(id).namespace('h');
    const replies = [
      await kv.createInstance('keys', 'all writes', { id }),
      await kv.updateInstance(id, { name: 'renamed' }),
      await kv.set(id, 'n', 'k', 1),
      await kv.get(id, 'n', 'k'),
      await kv.incr({ ...where, key: 'c' }),
      await kv.expire({ ...where, key: 'k', ttlMs: 60_000 }),
      await kv.ttl({ ...where, key: 'k' }),
      await kv.setMany({ ...where, entries: [{ key: 'm', value: 1 }] }),
      await kv.setEach({ ...where, entries: [{ key: 'e', value: 1 }] }),
      await kv.getMany({ ...where, keys: ['m'] }),
      await kv.atomic({ instanceId: id, ops: [{ op: 'set', namespace: 'n', key: 'a', value: 1 }] }),
      await kv.list(where),
      await kv.query({ from: { instance: id } }),
      await kv.getNamespaces(id),
      await kv.getRecordCount(id, 'n'),
      await kv.stats(),
      await kv.ping(),
      await kv.delete(id, 'n', 'k'),
      await kv.deleteNamespace(id, 'n'),
      await c.request('kvStore.set', { ...where, key: 'mine', value: 1, idempotencyKey: 'caller-key-1' }),
      await kv.incr({ ...where, key: 'mine-too', idempotencyKey: 'caller-key-2' }),
    ] as { success: boolean }[];
    // The handles' writes go through the same door.
    await ns.set('s', 1);
    expect(await ns.setnx('s', 2)).toBe(false);
    expect(await ns.update('s', (v: number) => v + 1, 0)).toBe(2);
    expect(await ns.incr('i')).toBe(1);
    expect(await ns.delete('s')).toBe(true);
    expect(await ns.clear()).toBe(1);
    replies.push(await kv.deleteInstance(id));
    expect(replies.filter((r) => !r.success)).toEqual([]);

    const frames = proxy.seen.map((s) => s.frame).filter((f) => f.type !== 'kvStore.hello');
    const writes = frames.filter((f) => WRITE_TYPES.has(f.type as never));
    const reads = frames.filter((f) => !WRITE_TYPES.has(f.type as never));
    expect(new Set(writes.map((f) => f.type))).toEqual(new Set(WRITE_TYPES));
    expect(new Set(reads.map((f) => f.type))).toEqual(
      new Set(['kvStore.get', 'kvStore.ttl', 'kvStore.getMany', 'kvStore.list', 'kvStore.query', 'kvStore.getNamespaces', 'kvStore.getRecordCount', 'kvStore.stats', 'kvStore.ping']),
    );
    expect(reads.filter((f) => f.params !== undefined && 'idempotencyKey' in f.params)).toEqual([]);
    const keys = writes.map((f) => f.params?.['idempotencyKey']);
    for (const key of keys) expect(key).toEqual(expect.stringMatching(/^.{1,255}$/));
    expect(new Set(keys).size).toBe(writes.length);
    expect(writes.filter((f) => f.params?.['idempotencyKey'] === 'caller-key-1').map((f) => f.type)).toEqual(['kvStore.set']);
    expect(writes.filter((f) => f.params?.['idempotencyKey'] === 'caller-key-2').map((f) => f.type)).toEqual(['kvStore.incr']);
  });

  it('a drop with requests in flight: reads reject CONNECTION_CLOSED; writes go out again on the next connection, same frame, in order, and resolve', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns, instanceId } = fresh(c);
    await ns.set('seed', 0); // creates the instance, before anything is held
    const held = holdFirstConnection(proxy);

    const incr = ns.incr('counter');
    const read = ns.get('seed');
    const mine = c.request('kvStore.set', { instanceId, namespace: 'n', key: 'mine', value: 'x', idempotencyKey: 'caller-key' });
    const ping = c.kvStore.ping();
    const [incrFrame, readFrame, mineFrame, pingFrame] = await held(4);

    proxy.refuse = true; // down for a while, so that a write can be made while disconnected
    proxy.drop();
    await expect(read).rejects.toMatchObject({ code: 'CONNECTION_CLOSED', type: 'kvStore.get', requestId: readFrame!.requestId });
    await expect(ping).rejects.toMatchObject({ code: 'CONNECTION_CLOSED', type: 'kvStore.ping' });
    await expect.poll(() => c.state).not.toBe('ready');
    const later = ns.incr('counter', 10);
    await sleep(100);
    proxy.refuse = false;

    await expect(incr).resolves.toBe(1);
    await expect(mine).resolves.toMatchObject({ success: true, requestId: mineFrame!.requestId });
    await expect(later).resolves.toBe(11);

    for (const write of [incrFrame!, mineFrame!]) {
      const sends = sendsOf(proxy, write.requestId);
      expect(sends).toHaveLength(2);
      expect(sends[1]!.connection).toBeGreaterThan(1);
      expect(sends[1]!.frame).toEqual(write); // same requestId, key and params
    }
    expect(mineFrame!.params?.['idempotencyKey']).toBe('caller-key');
    expect(sendsOf(proxy, readFrame!.requestId)).toHaveLength(1);
    expect(sendsOf(proxy, pingFrame!.requestId)).toHaveLength(1);
    // On the new connection the writes that waited go out in the order they were made.
    const laterFrame = proxy.seen.find((s) => s.frame.params?.['by'] === 10)!.frame;
    const resent = requestsOn(proxy, sendsOf(proxy, incrFrame!.requestId)[1]!.connection);
    expect(resent.map((f) => f.requestId)).toEqual([incrFrame!.requestId, mineFrame!.requestId, laterFrame.requestId]);
    expect(sendsOf(proxy, laterFrame.requestId)).toHaveLength(1);

    const written = direct(instanceId);
    expect(await written.get('counter')).toBe(11);
    expect(await written.get('mine')).toBe('x');
  });

  it('a write waiting for the reconnect keeps its own deadline: TIMEOUT at the original time, never sent again', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns, instanceId } = fresh(c);
    await ns.set('seed', 0);
    const held = holdFirstConnection(proxy);

    const started = performance.now();
    const write = ns.incr('counter', 1, { timeoutMs: 800 });
    const [frame] = await held(1);
    await sleep(400 - (performance.now() - started));
    proxy.refuse = true;
    const droppedAt = performance.now() - started;
    proxy.drop();

    await expect(write).rejects.toMatchObject({ code: 'TIMEOUT', type: 'kvStore.incr', requestId: frame!.requestId });
    const elapsed = performance.now() - started;
    // A deadline counted again from the drop would end 800 ms after it or later (bounded by the
    // drop's real time, not the 400 ms planned, which a loaded machine's late timer overshoots).
    expect(elapsed).toBeGreaterThanOrEqual(790);
    expect(elapsed).toBeLessThan(droppedAt + 790);

    proxy.refuse = false;
    await c.waitForReady();
    await c.kvStore.ping(); // a round trip on the new connection: anything queued went out before it
    expect(sendsOf(proxy, frame!.requestId)).toHaveLength(1);
    expect(await direct(instanceId).get('counter')).toBeUndefined();
  });

  it('while a write waits for the reconnect: its signal rejects ABORTED; close() rejects it CONNECTION_CLOSED, and a write never sent NOT_CONNECTED', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns } = fresh(c);
    await ns.set('seed', 0);
    const held = holdFirstConnection(proxy);

    const controller = new AbortController();
    const aborted = ns.incr('a', 1, { signal: controller.signal });
    const waiting = ns.incr('b');
    await held(2);
    proxy.refuse = true;
    proxy.drop();
    await expect.poll(() => c.state).not.toBe('ready');
    const neverSent = ns.incr('c');

    controller.abort(new Error('gave up'));
    await expect(aborted).rejects.toMatchObject({ code: 'ABORTED', type: 'kvStore.incr' });
    // Both reject inside close(): their expectations are attached first, so neither rejection is
    // ever unhandled, however long close() takes.
    // It went out once and may have run: the caller must not take it for unsent.
    const waitingRejects = expect(waiting).rejects.toMatchObject({ code: 'CONNECTION_CLOSED', type: 'kvStore.incr' });
    const neverSentRejects = expect(neverSent).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await c.close();
    await waitingRejects;
    await neverSentRejects;
  });

  it('with reconnect: false, a write in flight rejects CONNECTION_CLOSED as before and is not sent again', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url, { reconnect: false });
    const { ns } = fresh(c);
    await ns.set('seed', 0);
    const held = holdFirstConnection(proxy);

    const write = ns.incr('counter');
    const [frame] = await held(1);
    proxy.drop();
    await expect(write).rejects.toMatchObject({ code: 'CONNECTION_CLOSED', requestId: frame!.requestId });
    expect(c.state).toBe('closed');
    expect(sendsOf(proxy, frame!.requestId)).toHaveLength(1);
  });

  it('a write that no longer fits the frame limit of the server it reconnects to rejects CONNECTION_CLOSED, not LIMIT_EXCEEDED', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns } = fresh(c);
    await ns.set('seed', 0);
    const held = holdFirstConnection(proxy);
    // From the second connection on, the server says it takes frames of at most 1000 bytes.
    proxy.toClient = (text, connection) => {
      const reply = JSON.parse(text) as { type?: string; data?: { limits?: { maxPayloadBytes?: number } } };
      if (connection === 1 || reply.type !== 'kvStore.hello' || reply.data?.limits === undefined) return text;
      reply.data.limits.maxPayloadBytes = 1000;
      return JSON.stringify(reply);
    };

    const big = 'x'.repeat(2000);
    const write = ns.set('big', big);
    const [frame] = await held(1);
    proxy.drop();
    // LIMIT_EXCEEDED would tell the caller nothing ran; the first send may well have.
    await expect(write).rejects.toMatchObject({ code: 'CONNECTION_CLOSED', requestId: frame!.requestId, data: { maxPayloadBytes: 1000 } });
    await c.waitForReady();
    await expect(ns.set('big', big)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
  });

  // Needs the server's side of exactly-once (a repeat with the same key gets the kept reply):
  // until the server keeps replies, the repeat runs again and this fails with 2 instead of 1.
  it('a write whose reply was lost runs once: the repeat after the reconnect gets the kept reply', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns, instanceId } = fresh(c);
    await ns.set('seed', 0);
    const lost = loseReplies(proxy, 'kvStore.incr');

    const write = ns.incr('counter');
    await expect.poll(() => lost.length).toBe(1); // the server ran it; its reply never came
    proxy.drop();
    await expect(write).resolves.toBe(1);
    expect(await direct(instanceId).get('counter')).toBe(1);
  });

  it("a handle's getMany made while disconnected goes out as the server reached then takes it: a getMany where getValues is not listed", async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns } = fresh(c);
    await ns.set('a', 1);
    proxy.refuse = true;
    proxy.drop();
    await expect.poll(() => c.state).not.toBe('ready');
    const read = ns.getMany(['a', 'b']);
    await sleep(50);
    // The next connection's server says it does not answer getValues.
    proxy.toClient = (text, connection) => (connection > 1 ? text.replace(',"getValues"', '') : text);
    proxy.refuse = false;
    expect(await read).toEqual([1, undefined]);
    const reads = proxy.seen.filter((s) => s.frame.params?.['keys'] !== undefined);
    expect(reads.map((s) => [s.frame.type, s.frame.params?.['keys']])).toEqual([['kvStore.getMany', ['a', 'b']]]);
    expect(reads[0]!.connection).toBeGreaterThan(1);
  });

  it('sets that went out in one setEach whose reply was lost go out again in it, whole, and run once', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns, instanceId } = fresh(c);
    await ns.set('seed', 0);
    const lost = loseReplies(proxy, 'kvStore.setEach');

    const sets = Promise.all([ns.set('a', 1), ns.set('b', 2), ns.set('a', 3)]);
    await expect.poll(() => lost.length).toBe(1); // the server ran it; its reply never came
    proxy.drop();
    const records = await sets;
    expect(records.map((record) => [record.key, record.version, record.value])).toEqual([
      ['a', 1, 1],
      ['b', 1, 2],
      ['a', 2, 3],
    ]);
    const sent = proxy.seen.filter((s) => s.frame.type === 'kvStore.setEach');
    expect(sent.map((s) => s.connection)).toEqual([1, expect.any(Number)]);
    expect(sent[1]!.connection).toBeGreaterThan(1);
    expect(sent[1]!.frame).toEqual(sent[0]!.frame); // same requestId, key and entries
    expect(proxy.seen.filter((s) => s.frame.type === 'kvStore.set' && s.frame.params?.['key'] !== 'seed')).toEqual([]);
    const written = direct(instanceId);
    expect(await written.getRecord('a')).toMatchObject({ value: 3, version: 2 });
    expect(await written.getRecord('b')).toMatchObject({ value: 2, version: 1 });
  });

  it('sets that went out on their own go out again on their own after a drop, never in a setEach under a new key', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns, instanceId } = fresh(c);
    await ns.set('seed', 0);
    const lost = loseReplies(proxy, 'kvStore.set');

    // Two ticks, one set each: each goes out alone, runs, and its reply is lost.
    const first = ns.set('a', 1);
    await expect.poll(() => lost.length).toBe(1);
    const second = ns.set('b', 2);
    await expect.poll(() => lost.length).toBe(2);
    proxy.drop();
    // After the reconnect both go out in the same tick: as themselves, answered from their kept replies.
    expect((await Promise.all([first, second])).map((record) => record.version)).toEqual([1, 1]);
    expect(proxy.seen.filter((s) => s.frame.type === 'kvStore.setEach')).toEqual([]);
    const written = direct(instanceId);
    expect([(await written.getRecord('a'))?.version, (await written.getRecord('b'))?.version]).toEqual([1, 1]);
  });

  it('a setEach that the server reached after the drop cannot take fails its sets with CONNECTION_CLOSED, and none goes out alone', async () => {
    const proxy = await startProxy(server.url);
    const c = client(proxy.url);
    const { ns } = fresh(c);
    await ns.set('seed', 0);
    const lost = loseReplies(proxy, 'kvStore.setEach');
    const replies = proxy.toClient;
    // The next connection's server says it does not take setEach.
    proxy.toClient = (text, connection) => (connection > 1 ? text.replace(',"setEach"', '') : replies(text, connection));

    const sets = Promise.allSettled([ns.set('a', 1), ns.set('b', 2)]);
    await expect.poll(() => lost.length).toBe(1);
    proxy.drop();
    const outcomes = await sets;
    expect(outcomes.map((o) => o.status === 'rejected' && (o.reason as { code: string }).code)).toEqual(['CONNECTION_CLOSED', 'CONNECTION_CLOSED']);
    expect(proxy.seen.filter((s) => s.frame.type === 'kvStore.setEach')).toHaveLength(1);
    expect(proxy.seen.filter((s) => s.frame.type === 'kvStore.set' && s.frame.params?.['key'] !== 'seed')).toEqual([]);
    // The client itself carries on.
    expect(await ns.set('c', 3)).toMatchObject({ key: 'c', version: 1 });
  });
});

// ---------------------------------------------------------------- end to end: SIGKILL restarts under load

describe('exactly-once writes across server crashes', () => {
  const RESTARTS = 6;
  const CLIENTS = 4;
  const LANES = 4;

  /** A kvhub process on `port` (0: a free one) and `db`, killed after the test if still running. */
  async function startKvhub(port: number, db: string): Promise<{ proc: CliProcess; url: string }> {
    const proc = startCli(['--port', String(port), '--db', db, '--durability', 'normal']);
    cleanups.push(() => proc.child.exitCode === null && proc.child.signalCode === null && proc.child.kill('SIGKILL'));
    return { proc, url: await proc.ready() };
  }

  // Needs the server's side of exactly-once: until the server keeps replies, an incr that committed
  // just before a SIGKILL runs again when the SDK re-sends it, and the counter ends above the calls.
  it(`${RESTARTS} SIGKILL restarts during keyed incr load: every call resolves, and the counter equals the number of calls`, { timeout: 90_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvhub-eo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const db = join(dir, 'kvhub.db');
    let { proc, url } = await startKvhub(0, db);
    const port = Number(new URL(url).port);

    const counters = Array.from({ length: CLIENTS }, () =>
      client(url, { requestTimeoutMs: 25_000 }).instance('eo', { autoCreate: true }).namespace('load'),
    );
    let stop = false;
    let calls = 0;
    let resolved = 0;
    const lane = async (counter: NamespaceHandle) => {
      while (!stop) {
        calls++;
        await counter.incr('hits');
        resolved++;
      }
    };
    const load = Promise.all(counters.flatMap((counter) => Array.from({ length: LANES }, () => lane(counter))));
    load.catch(() => undefined); // awaited below; a rejection before then must not count as unhandled
    /** Waits until `more` calls have resolved since now: the clients are connected and the server is serving them. */
    const progress = async (more: number) => {
      const target = resolved + more;
      await expect.poll(() => resolved, { timeout: 10_000, interval: 10 }).toBeGreaterThanOrEqual(target);
    };

    let inFlightAtKills = 0;
    for (let i = 0; i < RESTARTS; i++) {
      await progress(50);
      inFlightAtKills += calls - resolved;
      proc.child.kill('SIGKILL');
      await proc.exited();
      ({ proc } = await startKvhub(port, db));
    }
    await progress(50);
    stop = true;
    await load;

    expect(inFlightAtKills).toBeGreaterThan(0); // the kills really landed on incr calls in flight
    const reader = client(url);
    expect(await reader.instance('eo').namespace('load').get('hits')).toBe(calls);
  });
});
