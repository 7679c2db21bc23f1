import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { createClient, type ClientOptions, type KvClient, type WebSocketConstructor, type WebSocketLike } from '../sdk/index.js';
import { createServer } from '../server/index.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tryUpgrade } from './helpers/upgrade.js';

/** Everything a test opened, closed after it (last opened first). */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const s = await startTestServer({ durability: 'normal', ...options });
  cleanups.push(() => s.close());
  return s;
}

async function raw(url: string): Promise<RawClient> {
  const c = await connectRaw(url);
  cleanups.push(() => c.close());
  return c;
}

function client(options: ClientOptions): KvClient {
  const c = createClient({ requestTimeoutMs: 5000, reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

/** Resolves once `check` holds, polling every 10 ms; rejects after `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Sends `frames` in one TCP write, so the server reads them in one chunk and dispatches them in one turn. */
function sendTogether(c: RawClient, frames: unknown[]): void {
  const tcp = (c.socket as unknown as { _socket: import('node:net').Socket })._socket;
  tcp.cork();
  for (const frame of frames) c.send(JSON.stringify(frame));
  process.nextTick(() => tcp.uncork());
}

describe('hello.limits', () => {
  it('reports every limit with its default', async () => {
    const s = await server();
    const c = await raw(s.url);
    const hello = await c.request({ type: 'kvStore.hello', requestId: rid() });
    expect(hello.data.limits).toEqual({
      maxValueBytes: 1024 * 1024,
      maxPayloadBytes: 16 * 1024 * 1024,
      maxBatch: 1000,
      maxTtlMs: 315_360_000_000,
      maxConnections: 1024,
      maxInFlight: 1024,
      maxBufferedBytes: 64 * 1024 * 1024,
      heartbeatIntervalMs: 30_000,
    });
  });

  it('reports configured limits', async () => {
    const s = await server({ maxConnections: 7, maxInFlight: 20, maxBufferedBytes: 2 * 1024 * 1024, heartbeatIntervalMs: 5000, limits: { maxBatch: 20 } });
    const c = client({ url: s.url });
    const info = await c.waitForReady();
    expect(info.limits).toMatchObject({ maxConnections: 7, maxInFlight: 20, maxBufferedBytes: 2 * 1024 * 1024, heartbeatIntervalMs: 5000, maxBatch: 20 });
  });

  it('refuses limits that cannot work', async () => {
    await expect(createServer({ port: 0, maxInFlight: 10 })).rejects.toThrow(/maxInFlight \(10\) must be at least maxBatch \(1000\)/);
    await expect(createServer({ port: 0, maxConnections: 0 })).rejects.toThrow(RangeError);
    await expect(createServer({ port: 0, heartbeatIntervalMs: 1.5 })).rejects.toThrow(RangeError);
  });
});

describe('maxConnections', () => {
  it('refuses the upgrade above the limit with HTTP 503 and serves again once a connection closes', async () => {
    const s = await server({ maxConnections: 2 });
    const first = await raw(s.url);
    await raw(s.url);
    const refused = await tryUpgrade(s.url);
    expect(refused).toMatchObject({ opened: false, status: 503 });
    expect(JSON.parse((refused as { body: string }).body)).toMatchObject({ error: expect.stringMatching(/limit of 2 connections/) });
    await first.close();
    await until(async () => (await tryUpgrade(s.url)).opened);
  });

  it('the SDK keeps retrying a full server and connects once there is room', async () => {
    const s = await server({ maxConnections: 1 });
    const holder = await raw(s.url);
    const c = client({ url: s.url });
    const ready = c.waitForReady();
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(c.state).not.toBe('ready');
    await holder.close();
    await ready;
    await expect(c.kvStore.ping()).resolves.toMatchObject({ success: true });
  });
});

describe('maxInFlight', () => {
  const get = () => ({ type: 'kvStore.getInstance', requestId: rid(), params: { instanceId: 'nope' } });

  it('answers a request above the limit RATE_LIMITED with retryAfterMs; every request gets exactly one reply', async () => {
    const s = await server({ maxInFlight: 4, limits: { maxBatch: 4 } });
    const c = await raw(s.url);
    // A batch of 4 fills the connection; the frames read in the same turn find no room. The
    // frames must arrive in one chunk for that, which loopback gives almost always: retry if not.
    let limited: any[] = [];
    for (let attempt = 0; attempt < 20 && limited.length === 0; attempt++) {
      const batch = [get(), get(), get(), get()];
      const singles = [get(), { type: 'kvStore.ping', requestId: rid() }];
      sendTogether(c, [batch, ...singles]);
      const replies = [await c.next(), await c.next(), await c.next()];
      const batchReply = replies.find(Array.isArray)!;
      expect(batchReply.map((r: any) => r.requestId)).toEqual(batch.map((r) => r.requestId));
      expect(batchReply.every((r: any) => r.code === 'INSTANCE_NOT_FOUND')).toBe(true);
      const others = replies.filter((r) => !Array.isArray(r));
      expect(others.map((r) => r.requestId).sort()).toEqual(singles.map((r) => r.requestId).sort());
      for (const reply of others) {
        if (reply.success === false && reply.code === 'RATE_LIMITED') limited.push(reply);
        else expect(reply.code === 'INSTANCE_NOT_FOUND' || reply.success === true).toBe(true);
      }
    }
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]).toMatchObject({ success: false, code: 'RATE_LIMITED', data: { retryAfterMs: expect.any(Number), maxInFlight: 4 } });
    expect(limited[0].data.retryAfterMs).toBeGreaterThan(0);
    expect(limited[0].data.retryAfterMs).toBeLessThanOrEqual(1000);
    // The room comes back once the replies are sent.
    expect(await c.request({ type: 'kvStore.ping', requestId: 'after' })).toMatchObject({ requestId: 'after', success: true });
  });

  it('admits a batch whole or not at all, answering each element RATE_LIMITED in its place', async () => {
    const s = await server({ maxInFlight: 4, limits: { maxBatch: 4 } });
    const c = await raw(s.url);
    let refusedBatch: any[] | undefined;
    for (let attempt = 0; attempt < 20 && refusedBatch === undefined; attempt++) {
      const first = [get(), get()];
      const second = [get(), { type: 'kvStore.ping', requestId: rid() }, 'not a request'];
      sendTogether(c, [first, second]);
      const replies: any[][] = [await c.next(), await c.next()];
      const secondReply = replies.find((r) => r[0].requestId === (second[0] as { requestId: string }).requestId)!;
      expect(secondReply).toHaveLength(3);
      if (secondReply[0].code === 'RATE_LIMITED') refusedBatch = secondReply;
      else expect(secondReply[1]).toMatchObject({ success: true });
    }
    expect(refusedBatch).toBeDefined();
    expect(refusedBatch).toMatchObject([
      { type: 'kvStore.getInstance', code: 'RATE_LIMITED' },
      { type: 'kvStore.ping', code: 'RATE_LIMITED' },
      { type: 'kvStore.error', requestId: null, code: 'RATE_LIMITED' },
    ]);
  });

  it('a connection at its limit does not limit another connection', async () => {
    const s = await server({ maxInFlight: 4, limits: { maxBatch: 4 } });
    const busy = await raw(s.url);
    const other = await raw(s.url);
    sendTogether(busy, [[get(), get(), get(), get()], get(), get()]);
    expect(await other.request({ type: 'kvStore.ping', requestId: 'x' })).toMatchObject({ success: true });
  });
});

describe('heartbeat', () => {
  it('terminates a peer that stops answering pings, freeing its connection slot', async () => {
    // Long enough that the second upgrade below is surely refused before the silent peer is dropped.
    const s = await server({ maxConnections: 1, heartbeatIntervalMs: 500 });
    const silent = await connectRaw(s.url);
    cleanups.push(async () => silent.socket.terminate());
    // Stop reading: the peer no longer answers the server's pings, like a machine that vanished.
    (silent.socket as unknown as { _socket: import('node:net').Socket })._socket.pause();
    expect(await tryUpgrade(s.url)).toMatchObject({ opened: false, status: 503 });
    await until(async () => (await tryUpgrade(s.url)).opened, 5000);
  });
});

describe('SDK idle ping', () => {
  /**
   * A real `ws` server that answers hello and ping, and — on the connections `freeze` picks —
   * stops reading its socket right after the hello reply: the TCP connection stays up, nothing
   * more is answered, not even WebSocket pings. A half-open peer, as after a lost network.
   */
  async function freezingServer(freeze: (n: number) => boolean) {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    let connections = 0;
    const received: string[] = [];
    wss.on('connection', (ws) => {
      const n = ++connections;
      ws.on('error', () => undefined);
      ws.on('message', (data) => {
        const request = JSON.parse(String(data)) as { type: string; requestId: string };
        received.push(request.type);
        const reply = (data: unknown) => ws.send(JSON.stringify({ type: request.type, requestId: request.requestId, success: true, data, timestamp: new Date().toISOString() }));
        if (request.type === 'kvStore.hello') {
          reply({ protocolVersion: 1, serverVersion: 'frozen', durability: 'normal', capabilities: [], limits: { maxValueBytes: 1024, maxPayloadBytes: 65536, maxBatch: 10 } });
          if (freeze(n)) (ws as unknown as { _socket: import('node:net').Socket })._socket.pause();
        } else if (request.type === 'kvStore.ping') reply({ pong: true });
        else if (request.type === 'kvStore.get') reply({ value: null, exists: false, record: null });
      });
    });
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(resolve));
    });
    return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, connections: () => connections, received };
  }

  const get = { instanceId: 'i', namespace: 'n', key: 'k' };

  it('drops a half-open connection: the request in flight rejects with CONNECTION_CLOSED, then the client reconnects', async () => {
    const frozen = await freezingServer((n) => n === 1);
    const c = client({ url: frozen.url, idleTimeoutMs: 150, pingTimeoutMs: 600 });
    await c.waitForReady();
    const started = Date.now();
    // Without the probe this would wait for its 20 s timeout: the socket never closes by itself.
    await expect(c.request('kvStore.get', get, { timeoutMs: 20_000 })).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    expect(Date.now() - started).toBeLessThan(3000);
    await c.waitForReady();
    expect(frozen.connections()).toBe(2);
    await expect(c.request('kvStore.get', get)).resolves.toMatchObject({ success: true, data: { exists: false } });
  });

  it('without ws-level ping (a browser socket), probes with kvStore.ping', async () => {
    const frozen = await freezingServer((n) => n === 1);
    const c = client({ url: frozen.url, idleTimeoutMs: 150, pingTimeoutMs: 600, WebSocket: BrowserLikeWebSocket });
    await c.waitForReady();
    await expect(c.request('kvStore.get', get, { timeoutMs: 20_000 })).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await c.waitForReady();
    expect(frozen.connections()).toBe(2);
    // The healthy second connection answers the probes, so it stays up. A probe answered is
    // followed by the next check after pingTimeoutMs: this wait spans at least two.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(frozen.received.filter((type) => type === 'kvStore.ping').length).toBeGreaterThan(1);
    expect(frozen.connections()).toBe(2);
    expect(c.state).toBe('ready');
  });

  it('keeps a healthy idle connection', async () => {
    const s = await server();
    const c = client({ url: s.url, idleTimeoutMs: 50, pingTimeoutMs: 500 });
    const ready = c.waitForReady();
    await ready;
    // A probe's answer is checked pingTimeoutMs after it went out: this wait spans two checks.
    await new Promise((resolve) => setTimeout(resolve, 1600));
    expect(c.state).toBe('ready');
    // The same memoised promise: the connection never dropped.
    expect(c.waitForReady()).toBe(ready);
  });

  it('idleTimeoutMs: false never probes', async () => {
    const frozen = await freezingServer(() => true);
    const c = client({ url: frozen.url, idleTimeoutMs: false, pingTimeoutMs: 50 });
    await c.waitForReady();
    await expect(c.request('kvStore.get', get, { timeoutMs: 400 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(frozen.connections()).toBe(1);
  });
});

/** The standard WebSocket surface only, as in a browser: no `ping()`, no `on()`, no `terminate()`. */
class BrowserLikeWebSocket implements WebSocketLike {
  private readonly inner: WebSocket;
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;
  constructor(url: string) {
    this.inner = new WebSocket(url);
    this.inner.on('open', () => this.onopen?.({}));
    this.inner.on('message', (data, isBinary) => this.onmessage?.({ data: isBinary ? data : String(data) }));
    this.inner.on('close', (code, reason) => this.onclose?.({ code, reason: String(reason) }));
    this.inner.on('error', (error) => this.onerror?.({ message: error.message, error }));
  }
  get readyState(): number {
    return this.inner.readyState;
  }
  send(data: string): void {
    this.inner.send(data);
  }
  close(): void {
    // A browser cannot cut a socket at once either; against a frozen peer this waits for TCP.
    this.inner.terminate();
  }
}
const _constructorCheck: WebSocketConstructor = BrowserLikeWebSocket;
void _constructorCheck;
