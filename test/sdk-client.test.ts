import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { backoffDelay, DEFAULT_RECONNECT } from '../sdk/backoff.js';
import { createClient, isKvError, KvError, type ClientOptions, type KvClient, type WebSocketConstructor } from '../sdk/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';

// ---------------------------------------------------------------- helpers

/** Everything a test opened, closed after it. */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

function client(options: ClientOptions): KvClient {
  const c = createClient({ requestTimeoutMs: 5000, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

/** How many requests are waiting in the client's pending map (white-box: every exit path must empty it). */
function pendingCount(c: KvClient): number {
  return (c as unknown as { connection: { pending: Map<string, unknown> } }).connection.pending.size;
}

interface RawRequest {
  type: string;
  requestId: string;
  params?: Record<string, unknown>;
}

const HELLO_DATA = {
  protocolVersion: 1,
  serverVersion: 'raw',
  durability: 'normal',
  capabilities: [],
  limits: { maxValueBytes: 1024, maxPayloadBytes: 65536, maxBatch: 10 },
};

function ok(request: RawRequest, data: unknown): string {
  return JSON.stringify({ type: request.type, requestId: request.requestId, success: true, data, timestamp: new Date().toISOString() });
}

/**
 * A bare `ws` server on port 0 standing in for a kvhub server that misbehaves in a chosen way:
 * it answers `kvStore.hello` (unless `hello` says otherwise) and hands every other request to
 * `onRequest`, which may answer, answer later, or never answer.
 */
async function startRawServer(
  options: {
    hello?: (request: RawRequest, socket: WebSocket) => void;
    onRequest?: (request: RawRequest, socket: WebSocket) => void;
    onConnection?: (socket: WebSocket, request: IncomingMessage) => void;
  } = {},
) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const sockets = new Set<WebSocket>();
  wss.on('connection', (socket, req) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    options.onConnection?.(socket, req);
    socket.on('message', (data) => {
      const request = JSON.parse(data.toString()) as RawRequest;
      if (request.type === 'kvStore.hello') {
        if (options.hello !== undefined) options.hello(request, socket);
        else socket.send(ok(request, HELLO_DATA));
      } else options.onRequest?.(request, socket);
    });
  });
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const close = async () => {
    for (const socket of sockets) socket.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
  cleanups.push(close);
  return { url, wss, sockets, close };
}

// ---------------------------------------------------------------- against the real server

describe('against a real server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'normal' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('connects; waitForReady is one memoised promise resolving with the hello data', async () => {
    const c = client({ url: server.url });
    const first = c.waitForReady();
    expect(c.waitForReady()).toBe(first);
    const info = await first;
    expect(info).toMatchObject({ protocolVersion: 1, limits: { maxBatch: expect.any(Number) } });
    expect(c.waitForReady()).toBe(first);
    expect(c.state).toBe('ready');
    expect(c.server).toEqual(info);
  });

  it('requests made before the connection is up wait for it', async () => {
    const c = client({ url: server.url });
    expect(c.state).toBe('connecting');
    const reply = await c.kvStore.ping();
    expect(reply).toMatchObject({ type: 'kvStore.ping', success: true, data: { pong: true } });
  });

  it('correlates 500 concurrent requests by requestId', async () => {
    const c = client({ url: server.url });
    const n = 500;
    const writes = await Promise.all(
      Array.from({ length: n }, (_, i) => c.kvStore.set('corr', 'ns', `k${i}`, { i }, true)),
    );
    const reads = await Promise.all(Array.from({ length: n }, (_, i) => c.kvStore.get('corr', 'ns', `k${i}`)));
    writes.forEach((reply, i) => {
      expect(reply.success && reply.data.record.key).toBe(`k${i}`);
    });
    reads.forEach((reply, i) => {
      expect(reply.success && reply.data.value).toEqual({ i });
    });
    expect(new Set(reads.map((r) => r.requestId)).size).toBe(n);
    expect(pendingCount(c)).toBe(0);
  });

  it('a success:false reply resolves from kvStore.* and request(), but throws from handles', async () => {
    const c = client({ url: server.url });
    const reply = await c.kvStore.get('no-such-instance', 'ns', 'k');
    expect(reply).toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND', type: 'kvStore.get' });
    const raw = await c.request('kvStore.getInstance', { instanceId: 'no-such-instance' });
    expect(raw).toMatchObject({ success: false, code: 'INSTANCE_NOT_FOUND' });

    const handle = c.instance('no-such-instance').namespace('ns');
    await expect(handle.get('k')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND', type: 'kvStore.get' });
    await expect(handle.get('k')).rejects.toBeInstanceOf(KvError);
  });

  it('request() sends any message type, params optional where the type takes none', async () => {
    const c = client({ url: server.url });
    await expect(c.request('kvStore.ping')).resolves.toMatchObject({ success: true, data: { pong: true } });
    await expect(c.request('kvStore.listInstances', {}, { timeoutMs: 1000 })).resolves.toMatchObject({ success: true });
    const bad = await c.request('kvStore.set', { instanceId: 'x', namespace: 'n', key: 'k', value: 1, ifAbsent: true, ifVersion: 1 });
    expect(bad).toMatchObject({ success: false, code: 'VALIDATION_ERROR' });
  });

  it('params that are not JSON reject locally without sending anything', async () => {
    const c = client({ url: server.url });
    await c.waitForReady();
    await expect(c.kvStore.set('x', 'n', 'k', { big: 1n })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(pendingCount(c)).toBe(0);
  });

  it('works with a WebSocket constructor given as an option (the browser path)', async () => {
    const c = client({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await expect(c.kvStore.ping()).resolves.toMatchObject({ success: true });
  });

  it('close(): later calls reject NOT_CONNECTED, waitForReady rejects, close is idempotent', async () => {
    const c = client({ url: server.url });
    await c.waitForReady();
    await c.close();
    await c.close();
    expect(c.state).toBe('closed');
    await expect(c.kvStore.ping()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await expect(c.waitForReady()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  });

  it('closing a client that never connected settles everything', async () => {
    const c = client({ url: server.url });
    const ready = c.waitForReady();
    const queued = c.kvStore.ping();
    // Attached before close() rejects them, so neither rejection is ever unhandled.
    const readyRejects = expect(ready).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    const queuedRejects = expect(queued).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await c.close();
    await readyRejects;
    await queuedRejects;
    expect(pendingCount(c)).toBe(0);
  });
});

// ---------------------------------------------------------------- frame size

describe('requests larger than the server accepts', () => {
  const maxPayloadBytes = 256 * 1024;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ durability: 'normal', limits: { maxPayloadBytes, maxValueBytes: 64 * 1024 } });
  });
  afterAll(async () => {
    await server.close();
  });

  it('a frame above limits.maxPayloadBytes rejects LIMIT_EXCEEDED locally; the connection and concurrent requests survive', async () => {
    const c = client({ url: server.url });
    const ready = c.waitForReady();
    expect((await ready).limits.maxPayloadBytes).toBe(maxPayloadBytes);

    // Sent without awaiting: it is in flight while the big one is refused. Had the big frame gone
    // out, the server would close with 1009 and this one would fail with CONNECTION_CLOSED.
    const normal = c.kvStore.set('big', 'ns', 'small', { ok: true }, true);
    const big = c.kvStore.set('big', 'ns', 'large', 'x'.repeat(300 * 1024), true);
    await expect(big).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      type: 'kvStore.set',
      message: expect.stringMatching(/^the request is \d+ bytes; the server accepts frames of at most 262144 bytes$/),
      data: { bytes: expect.any(Number), maxPayloadBytes },
    });
    await expect(big).rejects.toBeInstanceOf(KvError);
    await expect(normal).resolves.toMatchObject({ success: true });

    expect(pendingCount(c)).toBe(0);
    expect(c.state).toBe('ready');
    expect(c.waitForReady()).toBe(ready); // replaced on any drop: the same promise means the same connection
    await expect(c.kvStore.get('big', 'ns', 'small')).resolves.toMatchObject({ success: true, data: { value: { ok: true } } });
  });

  it('refuses a plain get too large for a frame the same way, and answers the get made beside it', async () => {
    const c = client({ url: server.url });
    await c.waitForReady();
    await c.kvStore.set('big', 'ns', 'small', 1, true);
    const [near, far] = await Promise.allSettled([c.kvStore.get('big', 'ns', 'small'), c.kvStore.get('big', 'n'.repeat(300 * 1024), 'k')]);
    expect(near).toMatchObject({ status: 'fulfilled', value: { success: true, data: { value: 1 } } });
    expect(far).toMatchObject({ status: 'rejected', reason: { code: 'LIMIT_EXCEEDED', type: 'kvStore.get', data: { maxPayloadBytes } } });
    expect(c.state).toBe('ready');
  });

  it('measures the frame in UTF-8 bytes, not UTF-16 code units', async () => {
    const c = client({ url: server.url });
    await c.waitForReady();
    // 100 000 code units, 300 000 bytes: under the limit by .length, over it on the wire.
    const euros = '\u20ac'.repeat(100_000);
    await expect(c.kvStore.set('big', 'ns', 'euros', euros, true)).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      data: { bytes: expect.toSatisfy((n: number) => n > 300_000 && n < 300_200), maxPayloadBytes },
    });
    expect(pendingCount(c)).toBe(0);
    expect(c.state).toBe('ready');
  });

  it('a request queued before the hello is checked when it is flushed', async () => {
    const c = client({ url: server.url });
    expect(c.state).toBe('connecting');
    const big = c.kvStore.set('big', 'ns', 'queued', 'x'.repeat(300 * 1024), true);
    const small = c.kvStore.ping();
    await expect(big).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    await expect(small).resolves.toMatchObject({ success: true });
    expect(pendingCount(c)).toBe(0);
    expect(c.state).toBe('ready');
  });
});

// ---------------------------------------------------------------- timeouts, abort, close

describe('local failures', () => {
  it('a request the server never answers rejects with TIMEOUT (per request and client default); a late reply is ignored', async () => {
    const held: { request: RawRequest; socket: WebSocket }[] = [];
    let answer = false;
    const raw = await startRawServer({
      onRequest: (request, socket) => {
        if (answer) socket.send(ok(request, { pong: true }));
        else held.push({ request, socket });
      },
    });
    const c = client({ url: raw.url, requestTimeoutMs: 150 });
    await c.waitForReady();

    await expect(c.kvStore.ping({ timeoutMs: 50 })).rejects.toMatchObject({ code: 'TIMEOUT', type: 'kvStore.ping' });
    await expect(c.kvStore.getInstance('i')).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(pendingCount(c)).toBe(0);
    expect(held).toHaveLength(2);

    // The late replies find nobody waiting and change nothing; the connection stays usable.
    for (const { request, socket } of held) socket.send(ok(request, { pong: true }));
    answer = true;
    await expect(c.kvStore.ping()).resolves.toMatchObject({ success: true });
    expect(c.state).toBe('ready');
  });

  it('requests with the default timeout each time out at their own deadline, in the order they were made', async () => {
    const raw = await startRawServer({ onRequest: () => undefined });
    // Deadlines far apart, so that a loaded machine's late timers cannot swap their order.
    const c = client({ url: raw.url, requestTimeoutMs: 1000 });
    await c.waitForReady();
    const settledAt = new Map<string, number>();
    const start = performance.now();
    const track = (name: string, request: Promise<unknown>) =>
      request.then(
        () => settledAt.set(name, -1),
        (error: unknown) => void settledAt.set(name, isKvError(error, 'TIMEOUT') ? performance.now() - start : -1),
      );

    const first = track('first', c.kvStore.ping());
    await new Promise((resolve) => setTimeout(resolve, 150));
    const second = track('second', c.kvStore.getInstance('i'));
    // One with a timeout of its own, shorter than the others', between them.
    const own = track('own', c.kvStore.ping({ timeoutMs: 50 }));
    await Promise.all([first, second, own]);

    expect(settledAt.get('own')).toBeGreaterThanOrEqual(150 + 45);
    expect(settledAt.get('own')).toBeLessThan(900);
    expect(settledAt.get('first')).toBeGreaterThanOrEqual(995);
    // The second waited out its own 1,000 ms, not the first's deadline.
    expect(settledAt.get('second')).toBeGreaterThanOrEqual(150 + 995);
    expect(pendingCount(c)).toBe(0);
  });

  it('an AbortSignal rejects with ABORTED, before or after sending', async () => {
    const raw = await startRawServer({ onRequest: () => undefined });
    const c = client({ url: raw.url });
    await c.waitForReady();

    await expect(c.kvStore.ping({ signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORTED' });
    const controller = new AbortController();
    const inFlight = c.kvStore.get('i', 'n', 'k', { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new Error('user gave up'));
    await expect(inFlight).rejects.toMatchObject({ code: 'ABORTED', type: 'kvStore.get' });
    await expect(inFlight).rejects.toHaveProperty('cause', expect.objectContaining({ message: 'user gave up' }));
    expect(pendingCount(c)).toBe(0);
  });

  it('close() rejects sent requests with CONNECTION_CLOSED', async () => {
    const raw = await startRawServer({ onRequest: () => undefined });
    const c = client({ url: raw.url });
    await c.waitForReady();
    const pending = Promise.allSettled([c.kvStore.ping(), c.kvStore.listInstances(), c.request('kvStore.stats')]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await c.close();
    const results = await pending;
    expect(results.map((r) => r.status === 'rejected' && (r.reason as KvError).code)).toEqual(Array(3).fill('CONNECTION_CLOSED'));
    expect(pendingCount(c)).toBe(0);
  });

  it('the server dropping the connection rejects sent requests with CONNECTION_CLOSED; without reconnect, later ones NOT_CONNECTED', async () => {
    const raw = await startRawServer({ onRequest: (_request, socket) => setTimeout(() => socket.terminate(), 10) });
    const c = client({ url: raw.url, reconnect: false });
    await c.waitForReady();
    await expect(c.kvStore.ping()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(c.kvStore.ping()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await expect(c.waitForReady()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(c.state).toBe('closed');
  });

  it('without reconnect, a server that is not there fails waitForReady and queued requests with NOT_CONNECTED', async () => {
    const raw = await startRawServer();
    await raw.close();
    const c = client({ url: raw.url, reconnect: false });
    const queued = c.kvStore.ping();
    await expect(c.waitForReady()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await expect(queued).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  });

  it('a server without protocol version 1 fails waitForReady with VERSION_MISMATCH, for good', async () => {
    let hellos = 0;
    const raw = await startRawServer({
      hello: (request, socket) => {
        hellos++;
        expect(request.params).toEqual({ protocolVersion: 1 });
        socket.send(
          JSON.stringify({
            type: request.type,
            requestId: request.requestId,
            success: false,
            code: 'VERSION_MISMATCH',
            error: 'this server speaks version 2',
            timestamp: new Date().toISOString(),
          }),
        );
      },
    });
    const c = client({ url: raw.url });
    const queued = c.kvStore.ping();
    await expect(c.waitForReady()).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    await expect(queued).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(c.state).toBe('closed');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(hellos).toBe(1);
  });
});

// ---------------------------------------------------------------- hostile frames

describe('frames from the server', () => {
  it('garbage, pushes, uncorrelated errors and unknown fields do not crash the client; batch replies are matched', async () => {
    const warnings: string[] = [];
    const raw = await startRawServer({
      onRequest: (request, socket) => {
        if (request.type === 'kvStore.ping') {
          socket.send('not json {');
          socket.send('42');
          socket.send('null');
          socket.send('"a string"');
          socket.send(Buffer.from([1, 2, 3]), { binary: true });
          socket.send(JSON.stringify({ type: 'kvStore.event', subscriptionId: 's1', event: { kind: 'set' }, timestamp: 'x' }));
          socket.send(JSON.stringify({ type: 'kvStore.error', requestId: null, success: false, code: 'MALFORMED_MESSAGE', error: 'bad' }));
          socket.send(JSON.stringify({ requestId: 'nobody-asked', success: true, data: {} }));
          socket.send(JSON.stringify([1, null, { requestId: 'also-nobody' }]));
          // The real reply, with a field no version of the protocol has.
          socket.send(JSON.stringify({ ...JSON.parse(ok(request, { pong: true })), futureField: { x: 1 } }));
        }
      },
    });
    const c = client({ url: raw.url, logger: { warn: (message) => warnings.push(message) } });
    await expect(c.kvStore.ping()).resolves.toMatchObject({ success: true, data: { pong: true }, futureField: { x: 1 } });
    expect(warnings.length).toBeGreaterThan(0);
    expect(c.state).toBe('ready');
  });

  it('replies are matched by requestId only: out of order, in a batch array, with another type', async () => {
    const held: RawRequest[] = [];
    const raw = await startRawServer({
      onRequest: (request, socket) => {
        held.push(request);
        if (held.length < 4) return;
        const [a, b, c, d] = held as [RawRequest, RawRequest, RawRequest, RawRequest];
        // d and c answered first, a and b together in one batch frame; b's reply names another type.
        socket.send(ok(d, { echo: d.params }));
        socket.send(ok(c, { echo: c.params }));
        socket.send(`[${ok(a, { echo: a.params })},${JSON.stringify({ ...JSON.parse(ok(b, { echo: b.params })), type: 'kvStore.ping' })}]`);
      },
    });
    const c = client({ url: raw.url });
    await c.waitForReady();
    const replies = await Promise.all(['a', 'b', 'c', 'd'].map((key) => c.kvStore.get('i', 'n', key)));
    expect(replies.map((r) => (r.success ? (r.data as unknown as { echo: { key: string } }).echo.key : null))).toEqual(['a', 'b', 'c', 'd']);
  });

  it('handles each reply frame in its own task: the awaiter of the first of two replies read at once runs before the second is handled', async () => {
    const held: RawRequest[] = [];
    let tcp: Duplex | undefined;
    const raw = await startRawServer({
      onConnection: (_socket, req) => void (tcp = req.socket),
      onRequest: (request, socket) => {
        if (held.push(request) < 2) return;
        // Both replies in one write, so that the client reads them in one go.
        tcp!.cork();
        for (const r of held.splice(0)) socket.send(ok(r, { pong: true }));
        tcp!.uncork();
      },
    });
    const c = client({ url: raw.url, batchRequests: false });
    await c.waitForReady();
    const first = c.kvStore.ping();
    let secondSettled = false;
    const second = c.kvStore.ping().then(() => void (secondSettled = true));
    await first;
    // Every microtask and tick of the task that handled the first reply has run by now.
    await new Promise((resolve) => process.nextTick(resolve));
    expect(secondSettled).toBe(false);
    await second;
    expect(secondSettled).toBe(true);
  });

  it('a reply that is not an envelope rejects that request instead of hanging', async () => {
    const raw = await startRawServer({
      onRequest: (request, socket) => socket.send(JSON.stringify({ requestId: request.requestId, success: 'maybe' })),
    });
    const c = client({ url: raw.url });
    await expect(c.kvStore.ping()).rejects.toMatchObject({ code: 'INTERNAL_ERROR' });
    expect(pendingCount(c)).toBe(0);
  });

  it('sends the token as a bearer header with ws, as subprotocols with a custom WebSocket', async () => {
    const seen: { auth: string | undefined; protocol: string | undefined }[] = [];
    const raw = await startRawServer({
      onConnection: (_socket, req) =>
        seen.push({ auth: req.headers.authorization, protocol: req.headers['sec-websocket-protocol']?.replace(/\s+/g, '') }),
    });
    await client({ url: raw.url, token: 'tok-1' }).waitForReady();
    await client({ url: raw.url, token: 'tok-2', WebSocket: WebSocket as unknown as WebSocketConstructor }).waitForReady();
    expect(seen).toEqual([
      { auth: 'Bearer tok-1', protocol: undefined },
      { auth: undefined, protocol: 'kvhub.v1,kvhub.bearer.tok-2' },
    ]);
  });

  it('refuses a url that is not ws:// or wss://', () => {
    expect(() => createClient({ url: 'http://127.0.0.1:1' })).toThrow(TypeError);
    expect(() => createClient({ url: 'not a url' })).toThrow(TypeError);
  });
});

// ---------------------------------------------------------------- reconnect

describe('reconnect', () => {
  it('after restart(): waitForReady is replaced, waits for the new connection; queued requests go out; data persists', async () => {
    const server = await startTestServer({ durability: 'normal' });
    cleanups.push(() => server.close());
    const c = client({ url: server.url, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
    const first = c.waitForReady();
    await first;
    await c.kvStore.set('re', 'ns', 'k', 'before', true);

    await server.stop();
    await expect.poll(() => c.state).not.toBe('ready');
    const second = c.waitForReady();
    expect(second).not.toBe(first);
    expect(c.waitForReady()).toBe(second);

    const queued = c.kvStore.get('re', 'ns', 'k');
    await new Promise((resolve) => setTimeout(resolve, 150)); // several failed attempts while the server is down
    await server.restart();
    await second;
    expect(c.state).toBe('ready');
    await expect(queued).resolves.toMatchObject({ success: true, data: { value: 'before' } });
  });

  it('requests in flight when the connection drops reject CONNECTION_CLOSED; the client then reconnects', async () => {
    let connections = 0;
    const raw = await startRawServer({
      onConnection: () => connections++,
      onRequest: (request, socket) => {
        if (connections === 1) socket.terminate();
        else socket.send(ok(request, { pong: true }));
      },
    });
    const c = client({ url: raw.url });
    await c.waitForReady();
    await expect(c.kvStore.ping()).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await expect(c.kvStore.ping()).resolves.toMatchObject({ success: true });
    expect(connections).toBe(2);
  });

  it('a request made while disconnected waits within its own timeout', async () => {
    const server = await startTestServer({ durability: 'normal' });
    cleanups.push(() => server.close());
    const c = client({ url: server.url });
    await c.waitForReady();
    await server.stop();
    await expect.poll(() => c.state).not.toBe('ready');
    await expect(c.kvStore.ping({ timeoutMs: 100 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(pendingCount(c)).toBe(0);
  });

  it('attempts are spaced by a growing, capped backoff', async () => {
    const times: number[] = [];
    // Accepts the upgrade and hangs up at once: every attempt fails after the socket opens.
    const raw = await startRawServer({
      onConnection: (socket) => {
        times.push(performance.now());
        if (times.length <= 5) socket.terminate();
      },
    });
    const c = client({ url: raw.url, reconnect: { initialDelayMs: 20, maxDelayMs: 80 } });
    await c.waitForReady();
    expect(times).toHaveLength(6);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // Equal jitter: attempt n waits between half and all of min(80, 20 * 2^n).
    const minimum = [10, 20, 40, 40, 40];
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(minimum[i]! - 2));
  });

  it('backoffDelay: capped exponential with equal jitter', () => {
    const opts = { initialDelayMs: 100, maxDelayMs: 1000 };
    expect([0, 1, 2, 3, 4, 10, 5000].map((n) => backoffDelay(n, opts, () => 0))).toEqual([50, 100, 200, 400, 500, 500, 500]);
    expect([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, opts, () => 0.999999))).toEqual(
      [100, 200, 400, 800, 1000, 1000].map((d) => expect.closeTo(d, 2)),
    );
    expect(DEFAULT_RECONNECT).toEqual({ initialDelayMs: 100, maxDelayMs: 5000 });
    // Whatever the random draw, the delay stays in [capped / 2, capped].
    for (const r of [0, 0.25, 0.5, 0.75, 0.999999]) {
      for (const n of [0, 1, 2, 3, 4, 10]) {
        const capped = Math.min(1000, 100 * 2 ** n);
        const delay = backoffDelay(n, opts, () => r);
        expect(delay).toBe(capped / 2 + r * (capped / 2));
        expect(delay).toBeGreaterThanOrEqual(capped / 2);
        expect(delay).toBeLessThanOrEqual(capped);
      }
    }
  });
});
