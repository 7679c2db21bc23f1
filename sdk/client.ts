import type { ParamsInput, Reply, RequestType } from '../protocol/index.js';
import { DEFAULT_LIMITS } from '../protocol/limits.js';
import { DEFAULT_RECONNECT, type ReconnectOptions } from './backoff.js';
import { Connection, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_PING_TIMEOUT_MS, type ConnectionState, type Logger, type RequestOptions, type ServerInfo } from './connection.js';
import { InstanceHandle, type InstanceOptions } from './handles.js';
import { KvStoreApi, type Send } from './kv-store.js';
import type { WebSocketConstructor } from './transport.js';
import { WatchHub } from './watch.js';

/** Options of {@link createClient}. */
export interface ClientOptions {
  /**
   * The server's WebSocket URL (`ws://` or `wss://`).
   * @default 'ws://127.0.0.1:7420'
   */
  url?: string;
  /**
   * Default time a request may take — waiting for a connection included — before it rejects
   * with TIMEOUT. Each call may override it with `timeoutMs`.
   * @default 30000
   */
  requestTimeoutMs?: number;
  /**
   * Time one connection attempt (socket open + hello) may take before it is abandoned and retried.
   * @default 10000
   */
  connectTimeoutMs?: number;
  /**
   * Reconnect after the connection drops, with capped exponential backoff plus jitter; `false`
   * disables it, and then requests made while disconnected reject with NOT_CONNECTED. When the
   * connection drops, reads in flight reject with CONNECTION_CLOSED; writes in flight (each
   * carries an `idempotencyKey`, so the server runs it at most once) wait for the reconnect
   * within their timeout and are sent again. Without reconnecting they reject with CONNECTION_CLOSED.
   * @default { initialDelayMs: 100, maxDelayMs: 5000 }
   */
  reconnect?: ReconnectOptions | false;
  /**
   * A WebSocket constructor with the browser's signature, e.g. `globalThis.WebSocket` in a browser.
   * @default the `ws` package, loaded on first connect
   */
  WebSocket?: WebSocketConstructor;
  /**
   * Bearer token for servers that require one: sent as an `Authorization` header with `ws`, or as
   * the `kvhub.v1` + `kvhub.bearer.<token>` subprotocols with a custom `WebSocket`.
   * @default undefined (no token)
   */
  token?: string;
  /**
   * Largest frame accepted from the server (enforced with `ws` only).
   * @default 16777216 (16 MiB, the server's default `maxPayloadBytes`)
   */
  maxPayloadBytes?: number;
  /**
   * When nothing (reply, event, WebSocket ping or pong) has arrived for this long, the client
   * pings the server — a WebSocket ping with `ws`, a `kvStore.ping` request with a browser
   * socket — so that it notices a half-open connection (peer gone without a close). `false`
   * disables it.
   * @default 30000
   */
  idleTimeoutMs?: number | false;
  /**
   * How long that ping may go unanswered before the socket is dropped: reads in flight reject
   * with CONNECTION_CLOSED, writes in flight go out again once the client has reconnected.
   * @default 10000
   */
  pingTimeoutMs?: number;
  /**
   * Puts the single-key requests (get, set, delete, incr, expire, ttl) made in the same tick into
   * one batch frame, as many as the server's limits guarantee room for in one reply frame. The
   * server runs a batch's elements in order and their writes share one commit; the replies come
   * back together, so a request waits for the slowest of its batch. Requests go out in the order
   * they were made either way. `false` sends every request in its own frame.
   * @default true
   */
  batchRequests?: boolean;
  /**
   * Receives diagnostics (socket errors, ignored frames, reconnects).
   * @default undefined (silent)
   */
  logger?: Logger;
}

type ParamsArgs<T extends RequestType> =
  {} extends ParamsInput<T>
    ? [params?: ParamsInput<T>, options?: RequestOptions]
    : [params: ParamsInput<T>, options?: RequestOptions];

/**
 * A kvhub client: one WebSocket (replaced after drops), the Codebolt-compatible `kvStore` facade,
 * typed handles through `instance()`, and the raw `request()`. Make one with {@link createClient}.
 */
export class KvClient {
  /**
   * The twelve `codebolt.kvStore` methods with Codebolt's signatures, plus kvhub's own messages.
   * They resolve with the reply envelope, a `success: false` one included.
   */
  readonly kvStore: KvStoreApi;
  private readonly connection: Connection;
  private readonly send: Send;
  private readonly watches: WatchHub;

  /** Connects at once; prefer {@link createClient}. */
  constructor(options: ClientOptions = {}) {
    const url = options.url ?? 'ws://127.0.0.1:7420';
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`invalid kvhub url: ${url}`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new TypeError(`a kvhub url must start with ws:// or wss://, got ${url}`);
    this.connection = new Connection({
      url,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      reconnect: options.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...stripUndefined(options.reconnect ?? {}) },
      WebSocket: options.WebSocket,
      token: options.token,
      maxPayloadBytes: options.maxPayloadBytes ?? DEFAULT_LIMITS.maxPayloadBytes,
      logger: options.logger,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      pingTimeoutMs: options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
      batchRequests: options.batchRequests ?? true,
    });
    this.send = (type, params, requestOptions) => this.connection.request(type, params, requestOptions);
    const connection = this.connection;
    this.watches = new WatchHub({
      send: this.send,
      logger: options.logger,
      state: () => connection.state,
      onPush: (listener) => connection.onPush(listener),
      onStateChange: (listener) => connection.onStateChange(listener),
    });
    this.kvStore = new KvStoreApi(this.send, this.watches);
  }

  /** Where the connection stands: `connecting`, `ready`, `reconnecting` or `closed`. */
  get state(): ConnectionState {
    return this.connection.state;
  }

  /** What the server said in its hello (version, limits, capabilities), while connected. */
  get server(): ServerInfo | undefined {
    return this.connection.server;
  }

  /**
   * Resolves (with the server's hello data) once connected and greeted. Every call returns the
   * same promise until the connection drops; then a new one, for the next connection. Rejects
   * with VERSION_MISMATCH when the server lacks protocol version 1, and with NOT_CONNECTED when
   * the client is closed (or the connection dropped with reconnecting disabled). While the server
   * is unreachable and reconnecting is on, it keeps waiting.
   */
  waitForReady(): Promise<ServerInfo> {
    return this.connection.waitForReady();
  }

  /**
   * Sends any request and resolves with its reply envelope, typed from the protocol. A request
   * made while disconnected waits for the connection (within its timeout). Rejects with a
   * `KvError` only for local failures: TIMEOUT, ABORTED, CONNECTION_CLOSED, NOT_CONNECTED, and
   * LIMIT_EXCEEDED for a request larger than the server's `limits.maxPayloadBytes` (never sent).
   * A write gets a fresh `idempotencyKey` unless `params` carry one, and is sent again with it
   * after a reconnect (see the client's `reconnect` option).
   */
  request<T extends RequestType>(type: T, ...args: ParamsArgs<T>): Promise<Reply<T>> {
    const [params, options] = args;
    return this.connection.request(type, params ?? {}, options);
  }

  /** A typed handle on instance `id`; handle methods throw `KvError` on failure. */
  instance(id: string, options: InstanceOptions = {}): InstanceHandle {
    return new InstanceHandle({ send: this.send, watches: this.watches, instanceId: id, autoCreate: options.autoCreate === true });
  }

  /**
   * Closes the client for good: pending requests that were sent (writes waiting to go out again
   * included) reject with CONNECTION_CLOSED, queued ones and later calls with NOT_CONNECTED.
   * Every watch subscription ends normally (its iteration finishes after the events already
   * queued; `onError` is not called); the server frees them with the socket. Resolves once the
   * socket is closed.
   */
  close(): Promise<void> {
    this.watches.close();
    return this.connection.close();
  }
}

function stripUndefined<T extends object>(obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Creates a client and starts connecting. Await `client.waitForReady()` to know it is connected,
 * or just send requests: they wait for the connection.
 *
 * @example
 * const client = createClient({ url: 'ws://127.0.0.1:7420' });
 * const reply = await client.kvStore.set('app', 'users', 'u1', { name: 'Ada' }, true);
 * const users = client.instance('app', { autoCreate: true }).namespace('users');
 * await users.update('visits', (n: number) => n + 1, 0);
 */
export function createClient(options: ClientOptions = {}): KvClient {
  return new KvClient(options);
}
