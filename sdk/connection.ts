import type { FailureReply, Reply, ReplyData, RequestType } from '../protocol/index.js';
import { batchCapacity, SINGLE_RECORD_REQUESTS } from '../protocol/batch.js';
import { PROTOCOL_VERSION, utf8Length } from '../protocol/limits.js';
import { backoffDelay, type ResolvedReconnectOptions } from './backoff.js';
import { getFrameBytes, getManyFrame, getManyOutcome, getTarget, groupGets, MAX_GETS_PER_GET_MANY, VALUE_ONLY, type GetTarget, type QueuedGet } from './coalesce.js';
import { KvError } from './errors.js';
import { isKeyedWrite, newIdempotencyKey, withIdempotencyKey } from './idempotency.js';
import { groupSets, MAX_SETS_PER_SET_EACH, setEachFrame, setEachOutcome, setFrame, setFrameBytes, setTarget, type QueuedSet, type SetTarget } from './set-each.js';
import { isRefusal, OPEN, openSocket, terminateSocket, type WebSocketConstructor, type WebSocketLike } from './transport.js';

/** Per-request options, accepted by every method that sends a request. */
export interface RequestOptions {
  /**
   * Milliseconds to wait for the reply — including any wait for the connection to come (back)
   * up — before rejecting with `TIMEOUT`.
   * @default the client's `requestTimeoutMs` (30000)
   */
  timeoutMs?: number;
  /**
   * Rejects the request with `ABORTED` when it fires. A request that was already sent may still
   * run on the server; only its reply is dropped.
   * @default undefined (not abortable)
   */
  signal?: AbortSignal;
}

/** Where a client's connection stands. */
export type ConnectionState =
  /** Opening a socket, or waiting for the `kvStore.hello` reply. */
  | 'connecting'
  /** Connected and greeted: requests are sent at once. */
  | 'ready'
  /** The connection dropped; waiting out the backoff delay before the next attempt. */
  | 'reconnecting'
  /** `close()` was called, the server speaks another protocol version, or the connection
   * dropped with reconnecting disabled. Requests reject with `NOT_CONNECTED`. */
  | 'closed';

/** A frame the server sent without a `requestId` (today only `kvStore.event` pushes). */
export type PushMessage = Record<string, unknown> & { type?: unknown };

/** What the server said about itself in its `kvStore.hello` reply. */
export type ServerInfo = ReplyData<'kvStore.hello'>;

/** Receives the SDK's diagnostics; the SDK never writes to the console. */
export interface Logger {
  /** Routine events: connects, reconnect delays, ignored frames. @default undefined (dropped) */
  debug?(message: string, details?: unknown): void;
  /** Things that went wrong but were handled: socket errors, malformed frames. @default undefined (dropped) */
  warn?(message: string, details?: unknown): void;
}

/** The connection's settings, every default applied. */
export interface ConnectionSettings {
  url: string;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: ResolvedReconnectOptions | false;
  WebSocket: WebSocketConstructor | undefined;
  token: string | undefined;
  maxPayloadBytes: number;
  logger: Logger | undefined;
  /** Quiet time after which the connection is probed with a ping; false never probes. @default 30000 */
  idleTimeoutMs?: number | false;
  /** Time the probe may take to be answered before the socket is dropped and replaced. @default 10000 */
  pingTimeoutMs?: number;
  /** Sends the single-key requests of one tick as a batch frame (see ClientOptions). Off unless set. */
  batchRequests?: boolean;
}

/** Defaults of the idle probe (see {@link ConnectionSettings}). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
export const DEFAULT_PING_TIMEOUT_MS = 10_000;

interface Pending {
  readonly type: string;
  /**
   * The request's frame. A plain get's (one with a `target`) is built only if it goes out on its
   * own, or if an upper bound of its size cannot tell that it fits the server's frames (see
   * {@link Connection.frameOf}): most go in a getMany, which never needs it.
   */
  frame: string | undefined;
  /** True while the frame is out on the current socket, waiting for its reply there. */
  sent: boolean;
  /** True once the frame went out on any socket: from then on whether the server ran it is unknown. */
  everSent: boolean;
  /**
   * A write with an idempotency key: when the socket drops before its reply, it is sent again on
   * the next connection (same frame: same requestId, key and params) instead of failing, because
   * the server runs a key at most once and answers a repeat with the reply it kept.
   */
  readonly resend: boolean;
  /** Where a plain get reads, so that the gets of one tick can go as one getMany (see coalesce.ts). */
  readonly target: GetTarget | undefined;
  /** A plain get, or a getMany, whose caller wants the values alone (see {@link VALUE_ONLY}). */
  readonly valueOnly: boolean;
  /** A plain set, so that the sets of one tick can go as one setEach (see set-each.ts). */
  readonly set: SetTarget | undefined;
  /** The requestId of the setEach this set went out in, while that setEach waits for its reply. */
  setEachId: string | undefined;
  resolve(reply: Reply): void;
  reject(error: KvError): void;
  /**
   * For a request with the client's default timeout: the `performance.now()` at which it times
   * out, which the connection's one deadline timer watches (see {@link Connection.expireRequests}).
   */
  readonly deadline: number | undefined;
  /** For a request with a timeout of its own: its timer. */
  readonly timer: ReturnType<typeof setTimeout> | undefined;
  /** Removes the abort listener. */
  cleanup(): void;
}

/** A request made ready this tick, waiting for {@link Connection.flush}. */
interface OutboxItem {
  requestId: string;
  /** A single-key request, which may share a batch frame. */
  batchable: boolean;
  /** A plain set going out for the first time, which may go in a setEach. */
  groupable: boolean;
}

interface Deferred<T> {
  promise: Promise<T>;
  settled: boolean;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // The ready promise may be rejected with nobody waiting on it (e.g. closing a client that was
  // never awaited); that must not surface as an unhandled rejection. Callers still see the rejection.
  promise.catch(() => undefined);
  const d: Deferred<T> = {
    promise,
    settled: false,
    resolve: (value) => {
      d.settled = true;
      resolve(value);
    },
    reject: (error) => {
      d.settled = true;
      reject(error);
    },
  };
  return d;
}

/** A request's TIMEOUT failure. */
function timeoutError(type: string, requestId: string, timeoutMs: number): KvError {
  return new KvError('TIMEOUT', `${type} got no reply within ${timeoutMs} ms`, { type, requestId });
}

/** The cleanup of a request without an abort signal. */
function noCleanup(): void {}

/** setTimeout fires at once for delays above 2^31-1 ms; longer timeouts are capped to that (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** How long `close()` waits for the server's side of the closing handshake before cutting the socket. */
const CLOSE_GRACE_MS = 1000;

/**
 * One logical connection to a kvhub server: the socket and its replacement after a drop, the
 * `kvStore.hello` greeting, the table of requests waiting for their reply, and the routing of
 * server pushes. Of what the requests mean it knows one thing: which of them write, because
 * writes carry an idempotency key and outlive a dropped socket (see {@link request}).
 */
export class Connection {
  private socket: WebSocketLike | undefined;
  private current: ConnectionState = 'connecting';
  private readonly pending = new Map<string, Pending>();
  private readonly pushListeners = new Set<(message: PushMessage) => void>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private seq = 0;
  /** Failed connection attempts since the last successful greeting. */
  private attempt = 0;
  /** Bumped on every connection attempt so a socket that opens late can tell it is stale. */
  private generation = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  /** The idle check of the current socket, or the deadline of its probe. */
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** `Date.now()` when the current socket last received anything: a frame, a ping or a pong. */
  private lastReceived = 0;
  private ready: Deferred<ServerInfo> = deferred();
  private info: ServerInfo | undefined;
  /** Why the connection is closed for good: what requests made from now on reject with. */
  private closedError: KvError | undefined;
  private closing: Promise<void> | undefined;
  /** The requests made ready this tick, in the order they were made; sent by {@link flush}. */
  private outbox: OutboxItem[] = [];
  /** The socket the outbox is for: requests left for a socket that has since dropped are not sent. */
  private outboxSocket: WebSocketLike | undefined;
  /** Most single-key requests per batch frame on this connection (from the server's hello); below 2, no batching. */
  private batchSize = 0;
  /** Most gets of one tick sent as one getMany on this connection; below 2, none are. */
  private getManySize = 0;
  /** The server answers `kvStore.getValues` (its hello lists the capability). */
  private getValues = false;
  /**
   * True once a getMany was refused as larger than a frame: the values read here can be large,
   * so from then on a getMany holds at most `batchSize` gets, which surely fit (see coalesce.ts).
   */
  private largeGets = false;
  /** The getManys out on the current socket, by requestId: the gets each answers, in key order. */
  private readonly getManys = new Map<string, QueuedGet[]>();
  /** Most sets of one tick sent as one setEach on this connection; below 2, none are. */
  private setEachSize = 0;
  /**
   * The setEachs sent and not yet answered, by requestId, on this socket or (after a drop) to go
   * out again whole on the next: their frame, the sets each answers in order, the socket it last
   * went out on, and whether it went out more than once.
   */
  private readonly setEachs = new Map<string, { frame: string; sets: string[]; sentOn: WebSocketLike | undefined; resent: boolean }>();
  /** Set while requests with the default timeout wait: fires at the earliest of their deadlines. */
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly settings: ConnectionSettings) {
    this.connect();
  }

  /** Where the connection stands now. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The server's hello data, while connected. */
  get server(): ServerInfo | undefined {
    return this.info;
  }

  /**
   * One memoised promise per connection: resolves once the hello round-trip is done. When the
   * connection drops, it is replaced by a fresh one that resolves on the next connection.
   */
  waitForReady(): Promise<ServerInfo> {
    return this.ready.promise;
  }

  /** Subscribes to frames without a `requestId` (server pushes). Returns the unsubscribe function. */
  onPush(listener: (message: PushMessage) => void): () => void {
    this.pushListeners.add(listener);
    return () => this.pushListeners.delete(listener);
  }

  /**
   * Subscribes to changes of {@link state}. `ready` is reported after the greeting, before the
   * requests queued while disconnected go out; `closed` after pending requests were rejected.
   * Returns the unsubscribe function.
   */
  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Sends one request and resolves with its reply envelope — a `success: false` reply included.
   * Rejects with a {@link KvError} only for local failures: TIMEOUT, ABORTED, CONNECTION_CLOSED,
   * NOT_CONNECTED, params that are not JSON (VALIDATION_ERROR), or a frame larger than the
   * server's `limits.maxPayloadBytes` (LIMIT_EXCEEDED, refused before sending so that the server
   * does not close the connection under the other requests in flight).
   *
   * A write gets an `idempotencyKey` unless its params carry one. When the socket drops before
   * its reply, a write waits for the next connection and goes out again with the same frame,
   * within its own timeout and signal; other requests reject with CONNECTION_CLOSED. A write
   * rejects with CONNECTION_CLOSED only when the connection closes for good.
   */
  request<T extends RequestType>(type: T, params: unknown, options: RequestOptions = {}): Promise<Reply<T>> {
    if (this.current === 'closed') {
      const reason = this.closedError;
      return Promise.reject(new KvError('NOT_CONNECTED', reason?.message ?? 'the client is closed', { cause: reason?.cause, type }));
    }
    return this.enqueue(type, params, options, false) as Promise<Reply<T>>;
  }

  /**
   * Closes the connection for good. Requests that were ever sent reject with CONNECTION_CLOSED
   * (writes waiting to go out again included), those still waiting for a connection with
   * NOT_CONNECTED; no reconnect follows. Resolves once the socket is closed (after at most about a
   * second). Idempotent.
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    // Requests made in this tick go out first, as they would have without batching.
    this.flush();
    this.shutdown(new KvError('NOT_CONNECTED', 'the client is closed'));
    const socket = this.socket;
    this.socket = undefined;
    this.closing = socket === undefined ? Promise.resolve() : closeGracefully(socket);
    return this.closing;
  }

  // ------------------------------------------------------------------ connecting

  private connect(): void {
    this.enter('connecting');
    const generation = ++this.generation;
    this.settings.logger?.debug?.('connecting', { url: this.settings.url, attempt: this.attempt });
    openSocket(this.settings, this.settings.WebSocket).then(
      (socket) => {
        if (this.current === 'closed' || generation !== this.generation) {
          discard(socket);
          return;
        }
        this.attach(socket);
      },
      (error: unknown) => {
        // The constructor threw or `ws` could not be loaded: count it as a failed attempt.
        this.settings.logger?.warn?.('could not open a socket', error);
        if (this.current !== 'closed' && generation === this.generation) this.lost(new KvError('NOT_CONNECTED', 'could not open a socket', { cause: error }));
      },
    );
  }

  private attach(socket: WebSocketLike): void {
    this.socket = socket;
    this.connectTimer = setTimeout(() => {
      if (this.socket === socket && this.current === 'connecting') {
        this.settings.logger?.warn?.(`not connected within ${this.settings.connectTimeoutMs} ms; retrying`);
        terminateSocket(socket);
      }
    }, Math.min(this.settings.connectTimeoutMs, MAX_TIMER_MS));
    socket.onopen = () => {
      if (this.socket === socket) this.greet(socket);
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.lastReceived = Date.now();
      this.onFrame(event.data);
    };
    // `ws` reports WebSocket-level pings and pongs as events; a browser socket has neither.
    const on = (socket as { on?: (event: string, listener: () => void) => void }).on;
    if (typeof on === 'function') {
      const heard = () => {
        if (this.socket === socket) this.lastReceived = Date.now();
      };
      on.call(socket, 'pong', heard);
      on.call(socket, 'ping', heard);
    }
    let refusal: KvError | undefined;
    // Without an error listener, `ws` rethrows socket errors and one bad frame kills the process.
    socket.onerror = (event) => {
      if (isRefusal(event.error)) refusal ??= event.error;
      this.settings.logger?.warn?.('socket error', event.error ?? event.message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.settings.logger?.debug?.('socket closed', { code: event.code, reason: event.reason });
      if (refusal !== undefined) {
        // HTTP 401/403 on the upgrade: a wrong token or origin does not get better by retrying.
        clearTimeout(this.connectTimer);
        this.shutdown(new KvError('NOT_CONNECTED', refusal.message, { cause: refusal }), refusal);
        return;
      }
      this.lost(new KvError('NOT_CONNECTED', `connection closed (${event.code})`));
    };
  }

  /** Sends `kvStore.hello` first thing on a new socket; the connection is ready once it is answered. */
  private greet(socket: WebSocketLike): void {
    const hello = this.enqueue('kvStore.hello', { protocolVersion: PROTOCOL_VERSION }, { timeoutMs: this.settings.connectTimeoutMs }, true);
    hello.then(
      (reply) => {
        if (this.socket !== socket) return;
        if (reply.success) this.becomeReady(reply.data as ServerInfo);
        else if (reply.code === 'VERSION_MISMATCH') {
          // Retrying cannot help: the server does not speak our version. Stop for good.
          const error = KvError.fromReply(reply);
          this.shutdown(new KvError('NOT_CONNECTED', `the server does not speak protocol version ${PROTOCOL_VERSION}`, { cause: error }), error);
          this.socket = undefined;
          void closeGracefully(socket);
        } else {
          this.settings.logger?.warn?.(`hello failed with ${reply.code}; retrying`, reply.error);
          terminateSocket(socket);
        }
      },
      () => {
        // TIMEOUT or CONNECTION_CLOSED: drop this socket (if still ours) and let `lost` retry.
        if (this.socket === socket) terminateSocket(socket);
      },
    );
  }

  private becomeReady(info: ServerInfo): void {
    clearTimeout(this.connectTimer);
    this.current = 'ready';
    this.attempt = 0;
    this.info = info;
    this.batchSize = this.settings.batchRequests === true ? batchSizeFor(info, this.settings.maxPayloadBytes) : 0;
    this.getManySize = this.settings.batchRequests === true ? getManySizeFor(info, this.settings.maxPayloadBytes) : 0;
    if (this.largeGets) this.getManySize = Math.min(this.getManySize, this.batchSize);
    this.getValues = hasCapability(info, 'getValues');
    this.setEachSize = this.settings.batchRequests === true ? setEachSizeFor(info) : 0;
    if (this.ready.settled) this.ready = deferred();
    this.ready.resolve(info);
    this.settings.logger?.debug?.('ready', { serverVersion: info.serverVersion });
    if (this.socket !== undefined) this.watchIdle(this.socket);
    this.emitState();
    // Requests made while disconnected go out now, in the order they were made.
    for (const [requestId, entry] of this.pending) if (!entry.sent) this.transmit(entry, requestId);
  }

  /** The socket is gone (or never came): reconnect, keeping the writes that were sent, or give up. */
  private lost(reason: KvError): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    this.info = undefined;
    this.getManys.clear();
    if (this.current === 'closed') return;
    const reconnect = this.settings.reconnect;
    if (reconnect === false) {
      this.shutdown(new KvError('NOT_CONNECTED', 'the connection is closed and reconnecting is disabled', { cause: reason }));
      return;
    }
    // Before the state changes: listeners count on every read that went out having failed.
    this.requeueSent();
    // Waiters on the old (resolved) ready promise are done; new ones wait for the next connection.
    if (this.ready.settled) this.ready = deferred();
    this.enter('reconnecting');
    const delay = backoffDelay(this.attempt++, reconnect);
    this.settings.logger?.debug?.(`reconnecting in ${Math.round(delay)} ms`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
    // A client that is only waiting to reconnect must not keep a Node process alive by itself
    // (pending requests keep it alive by their deadlines' ref'd timers).
    (this.reconnectTimer as { unref?: () => void }).unref?.();
  }

  /**
   * Enters the final `closed` state: requests that ever went out (writes waiting to go out again
   * included) reject with CONNECTION_CLOSED, the others with `reason`, waitForReady with `readyError`.
   */
  private shutdown(reason: KvError, readyError: KvError = reason): void {
    if (this.current === 'closed') return;
    this.current = 'closed';
    this.closedError = reason;
    this.info = undefined;
    this.getManys.clear();
    this.setEachs.clear();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    this.failSent();
    for (const [requestId, entry] of this.pending) {
      this.settle(requestId, (p) => p.reject(new KvError(reason.code, reason.message, { cause: reason.cause, type: entry.type, requestId })));
    }
    if (!this.ready.settled) this.ready.reject(readyError);
    else {
      this.ready = deferred();
      this.ready.reject(readyError);
    }
    this.emitState();
  }

  /**
   * Notices a half-open socket (the peer vanished without a close, so no `close` event comes):
   * once nothing was received for `idleTimeoutMs`, pings — at the WebSocket level where the
   * socket can (`ws`), else with a `kvStore.ping` request — and terminates the socket when
   * nothing at all arrives within `pingTimeoutMs`. The usual drop follows: reads in flight reject
   * with CONNECTION_CLOSED, writes go out again after the reconnect.
   */
  private watchIdle(socket: WebSocketLike): void {
    const idleMs = this.settings.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (idleMs === false) return;
    const pingMs = this.settings.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
    this.lastReceived = Date.now();
    const schedule = (delay: number, run: () => void) => {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(run, Math.min(Math.max(0, delay), MAX_TIMER_MS));
      // Watching an idle connection must not keep a Node process alive by itself.
      (this.idleTimer as { unref?: () => void }).unref?.();
    };
    const check = () => {
      if (this.socket !== socket) return;
      const quiet = Date.now() - this.lastReceived;
      if (quiet < idleMs) return schedule(idleMs - quiet, check);
      const probedAt = Date.now();
      this.settings.logger?.debug?.(`nothing received for ${quiet} ms; pinging the server`);
      this.probe(socket, pingMs);
      schedule(pingMs, () => {
        if (this.socket !== socket) return;
        if (this.lastReceived >= probedAt) return check();
        this.settings.logger?.warn?.(`no answer to a ping within ${pingMs} ms; dropping the connection`);
        terminateSocket(socket);
      });
    };
    schedule(idleMs, check);
  }

  private probe(socket: WebSocketLike, pingMs: number): void {
    const ping = (socket as { ping?: () => void }).ping;
    if (typeof ping === 'function') {
      try {
        ping.call(socket);
      } catch (error) {
        this.settings.logger?.warn?.('ping failed', error);
      }
      return;
    }
    // Any frame counts as an answer; the reply itself is not needed.
    this.enqueue('kvStore.ping', {}, { timeoutMs: pingMs }, true).catch(() => undefined);
  }

  /** Moves to `state` and tells the state listeners, if it is a change. */
  private enter(state: ConnectionState): void {
    if (this.current === state) return;
    this.current = state;
    this.emitState();
  }

  private emitState(): void {
    const state = this.current;
    for (const listener of this.stateListeners) {
      try {
        listener(state);
      } catch (error) {
        this.settings.logger?.warn?.('a state listener threw', error);
      }
    }
  }

  /**
   * After a drop that a reconnect follows: a keyed write that was out waits to be sent again by
   * {@link becomeReady}; any other request that was out fails, since the server may have run it.
   */
  private requeueSent(): void {
    for (const [requestId, entry] of this.pending) {
      if (!entry.sent) continue;
      if (entry.resend) entry.sent = false;
      else this.settle(requestId, (p) => p.reject(closedError(p.type, requestId)));
    }
    // A setEach goes out again whole (see transmitSetEach), unless none of its sets waits any more.
    for (const [id, setEach] of this.setEachs) {
      setEach.sentOn = undefined;
      if (this.setsWaitingFor(id, setEach.sets).length === 0) this.setEachs.delete(id);
    }
  }

  /** Closing for good: every request that ever went out fails, since the server may have run it. */
  private failSent(): void {
    for (const [requestId, entry] of this.pending) if (entry.everSent) this.settle(requestId, (p) => p.reject(closedError(p.type, requestId)));
  }

  // ------------------------------------------------------------------ requests

  /**
   * Registers a request, a write with an idempotency key (its caller's, or a fresh one); `immediate`
   * sends it on the current socket even before the greeting is done.
   */
  private enqueue(type: string, params: unknown, options: RequestOptions, immediate: boolean): Promise<Reply> {
    const { signal } = options;
    if (signal?.aborted === true) return Promise.reject(abortError(signal, type, undefined));
    const requestId = String(++this.seq);
    let target: GetTarget | undefined;
    let set: SetTarget | undefined;
    let frame: string | undefined;
    try {
      // All read the params, whose getters may throw. A plain get's or set's frame is built only
      // if it goes out on its own: most go in a getMany or a setEach.
      target = getTarget(type, params);
      set = target === undefined ? setTarget(type, params, newIdempotencyKey) : undefined;
      if (target === undefined && set === undefined) {
        params = withIdempotencyKey(type, params);
        frame = JSON.stringify({ type, requestId, params: params ?? {} });
      }
    } catch (cause) {
      return Promise.reject(new KvError('VALIDATION_ERROR', `the params of ${type} cannot be sent as JSON`, { cause, type }));
    }
    const timeoutMs = options.timeoutMs ?? this.settings.requestTimeoutMs;
    const delay = Math.min(Math.max(0, timeoutMs), MAX_TIMER_MS);
    const ownTimeout = timeoutMs !== this.settings.requestTimeoutMs;
    return new Promise<Reply>((resolve, reject) => {
      const onAbort = () => this.settle(requestId, (p) => p.reject(abortError(signal!, type, requestId)));
      const entry: Pending = {
        type,
        frame,
        sent: false,
        everSent: false,
        resend: set !== undefined || isKeyedWrite(type, params),
        target,
        set,
        setEachId: undefined,
        valueOnly: (target !== undefined || type === 'kvStore.getMany') && (options as { [VALUE_ONLY]?: boolean })[VALUE_ONLY] === true,
        resolve,
        reject,
        deadline: ownTimeout ? undefined : performance.now() + delay,
        timer: ownTimeout ? setTimeout(() => this.settle(requestId, (p) => p.reject(timeoutError(type, requestId, timeoutMs))), delay) : undefined,
        cleanup: signal === undefined ? noCleanup : () => signal.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(requestId, entry);
      // Deadlines of the default timeout only grow: one armed earlier fires first.
      if (!ownTimeout) this.deadlineTimer ??= setTimeout(() => this.expireRequests(), delay);
      if (immediate || this.current === 'ready') this.transmit(entry, requestId);
    });
  }

  private transmit(entry: Pending, requestId: string): void {
    // A set that went out in a setEach goes out again in it, whole (see set-each.ts).
    if (entry.setEachId !== undefined) return this.transmitSetEach(entry.setEachId);
    const socket = this.socket;
    // Not open (yet): it stays queued and goes out on the next `becomeReady`.
    if (socket === undefined || socket.readyState !== OPEN) return;
    // The server closes the whole connection (1009) on a frame above its limit, failing every
    // other request in flight with CONNECTION_CLOSED; refuse this one alone, before it goes out.
    const tooLarge = this.surelyFits(entry, requestId) ? undefined : this.oversize(this.frameOf(entry, requestId));
    if (tooLarge !== undefined) {
      // LIMIT_EXCEEDED promises that nothing ran. A write going out again after a drop (to a
      // server that now has a lower limit) may have run before, so its outcome stays unknown.
      const code = entry.everSent ? 'CONNECTION_CLOSED' : 'LIMIT_EXCEEDED';
      this.settle(requestId, (p) =>
        p.reject(
          new KvError(code, `the request is ${tooLarge.bytes} bytes; the server accepts frames of at most ${tooLarge.maxPayloadBytes} bytes`, {
            data: tooLarge,
            type: p.type,
            requestId,
          }),
        ),
      );
      return;
    }
    // Only a set that never went out may go in a setEach: one that went out on its own may have
    // run, and must go again with its own key, or it could run twice.
    const groupable = entry.set !== undefined && !entry.everSent;
    entry.sent = true;
    entry.everSent = true;
    if (!this.coalescing()) return this.sendFrame(socket, this.frameOf(entry, requestId));
    this.toOutbox(socket, { requestId, batchable: SINGLE_RECORD_REQUESTS.has(entry.type as RequestType), groupable });
  }

  /** True when requests wait for the end of the tick to go out together (in a batch frame, a getMany or a setEach). */
  private coalescing(): boolean {
    return (this.batchSize >= 2 || this.getManySize >= 2 || this.setEachSize >= 2) && this.current === 'ready';
  }

  /** Queues a request (or a setEach going out again) for {@link flush}, at the end of the tick, so that order is kept. */
  private toOutbox(socket: WebSocketLike, item: OutboxItem): void {
    if (this.outboxSocket !== socket) this.outbox = [];
    this.outboxSocket = socket;
    this.outbox.push(item);
    if (this.outbox.length === 1) endOfTick(() => this.flush());
  }

  /**
   * Sends a setEach again after a drop, whole, with its requestId and key, for the sets still
   * waiting for it. To a server that no longer takes it, or takes smaller frames, it cannot go:
   * those sets fail with CONNECTION_CLOSED, since it may have run before the drop.
   */
  private transmitSetEach(id: string): void {
    const socket = this.socket;
    const setEach = this.setEachs.get(id);
    if (socket === undefined || socket.readyState !== OPEN || setEach === undefined || setEach.sentOn === socket) return;
    const waiting = this.setsWaitingFor(id, setEach.sets);
    if (waiting.length === 0 || this.setEachSize < 2 || this.oversize(setEach.frame) !== undefined) {
      this.setEachs.delete(id);
      for (const requestId of waiting) this.settle(requestId, (p) => p.reject(closedError(p.type, requestId)));
      return;
    }
    for (const requestId of waiting) this.pending.get(requestId)!.sent = true;
    setEach.sentOn = socket;
    setEach.resent = true;
    if (!this.coalescing()) return this.sendFrame(socket, setEach.frame);
    this.toOutbox(socket, { requestId: id, batchable: false, groupable: false });
  }

  /** The sets of `requestIds` still waiting for the reply to setEach `id`. */
  private setsWaitingFor(id: string, requestIds: readonly string[]): string[] {
    return requestIds.filter((requestId) => this.pending.get(requestId)?.setEachId === id);
  }

  /**
   * Sends the requests of the outbox in order: each run of gets with nothing between them as one
   * getMany per instance and namespace (see coalesce.ts), each run of single-key requests as
   * batch frames of at most `batchSize` elements (and maxPayloadBytes), anything else on its own.
   * A socket that dropped meanwhile gets nothing: its requests were already failed or queued
   * again by `lost`. A request that timed out or was aborted since it was queued is left out.
   */
  private flush(): void {
    const frames = this.outbox;
    const socket = this.outboxSocket;
    this.outbox = [];
    this.outboxSocket = undefined;
    if (socket === undefined || socket !== this.socket || socket.readyState !== OPEN) return;
    const maxPayloadBytes = this.serverMaxPayloadBytes() ?? Infinity;
    let run: string[] = [];
    // An upper bound of the batch frame's UTF-8 size: 3 bytes per UTF-16 code unit, brackets, commas.
    let runBytes = 2;
    const sendRun = () => {
      if (run.length > 0) this.sendFrame(socket, run.length === 1 ? run[0]! : `[${run.join(',')}]`);
      run = [];
      runBytes = 2;
    };
    const batch = (frame: string) => {
      const bytes = frame.length * 3 + 1;
      if (run.length === this.batchSize || (run.length > 0 && runBytes + bytes > maxPayloadBytes) || this.batchSize < 2) sendRun();
      run.push(frame);
      runBytes += bytes;
    };
    /** Each group as one request (`sendGroup`) after the requests before it, a group of one as the request it is. */
    const sendGroups = <Queued extends { requestId: string }>(groups: Queued[][], sendGroup: (socket: WebSocketLike, group: Queued[]) => void) => {
      for (const group of groups) {
        if (group.length === 1) {
          const { requestId } = group[0]!;
          const entry = this.pending.get(requestId);
          if (entry !== undefined) batch(this.frameOf(entry, requestId));
        } else {
          sendRun();
          sendGroup.call(this, socket, group);
        }
      }
    };
    let sets: QueuedSet[] = [];
    const sendSets = () => {
      sendGroups(groupSets(sets, this.setEachSize, Math.min(maxPayloadBytes, this.settings.maxPayloadBytes)), this.sendSetEach);
      sets = [];
    };
    let gets: QueuedGet[] = [];
    const sendGets = () => {
      sendGroups(groupGets(gets, this.getManySize, maxPayloadBytes), this.sendGetMany);
      gets = [];
    };
    for (const { requestId, batchable, groupable } of frames) {
      const entry = this.pending.get(requestId);
      if (entry === undefined) {
        // A setEach going out again after a drop.
        const setEach = this.setEachs.get(requestId);
        if (setEach?.sentOn === socket) {
          sendGets();
          sendSets();
          sendRun();
          this.sendFrame(socket, setEach.frame);
        }
        continue;
      }
      if (groupable && this.setEachSize >= 2) {
        // After the gets before it, which must not see it.
        sendGets();
        sets.push({ requestId, target: entry.set! });
        continue;
      }
      // Gets and anything else go after the sets before them, which they must see.
      sendSets();
      if (entry.type === 'kvStore.get' && this.getManySize >= 2) {
        // Gets commute: one that cannot go in a getMany goes beside it without ending the run.
        if (entry.target !== undefined) gets.push({ requestId, target: entry.target, valueOnly: entry.valueOnly && this.getValues });
        else batch(this.frameOf(entry, requestId));
        continue;
      }
      const frame = this.frameOf(entry, requestId);
      sendGets();
      if (!batchable) {
        sendRun();
        this.sendFrame(socket, frame);
      } else batch(frame);
    }
    sendGets();
    sendSets();
    sendRun();
  }

  /** Sends the sets of `group` (one instance and namespace) as one setEach; {@link answerSets} answers them. */
  private sendSetEach(socket: WebSocketLike, group: QueuedSet[]): void {
    const id = String(++this.seq);
    const frame = setEachFrame(id, group, newIdempotencyKey());
    const sets = group.map(({ requestId }) => requestId);
    this.setEachs.set(id, { frame, sets, sentOn: socket, resent: false });
    for (const requestId of sets) this.pending.get(requestId)!.setEachId = id;
    this.sendFrame(socket, frame);
  }

  /** Fails the requests `requestIds`, grouped in one request whose reply `m` was not one, with INTERNAL_ERROR. */
  private rejectMalformed(requestIds: Iterable<string>, m: Record<string, unknown>): void {
    for (const requestId of requestIds) {
      this.settle(requestId, (p) => p.reject(new KvError('INTERNAL_ERROR', 'the server sent a malformed reply', { data: m, type: p.type, requestId })));
    }
  }

  /**
   * Answers the sets of a setEach from its reply or, when nothing of it ran, sends each of them
   * again on its own frame (see set-each.ts).
   */
  private answerSets(id: string, sets: readonly string[], resent: boolean, m: Record<string, unknown>): void {
    const waiting = new Set(this.setsWaitingFor(id, sets));
    const reply = readReply(m);
    const outcome = reply instanceof KvError ? ({ kind: 'malformed' } as const) : setEachOutcome(reply, sets);
    if (outcome.kind === 'answered') {
      for (const set of outcome.replies) if (waiting.has(set.requestId!)) this.settle(set.requestId!, (p) => p.resolve(set));
    } else if (outcome.kind === 'malformed') {
      this.rejectMalformed(waiting, m);
    } else if (resent) {
      // Refused now, but it went out before the drop too and may have run then: sent alone, under their own keys, the sets could run twice.
      for (const requestId of waiting) this.settle(requestId, (p) => p.reject(closedError(p.type, requestId)));
    } else {
      const socket = this.socket;
      for (const requestId of waiting) {
        const entry = this.pending.get(requestId)!;
        entry.setEachId = undefined;
        if (socket !== undefined) this.sendFrame(socket, this.frameOf(entry, requestId));
      }
    }
  }

  /** Sends the gets of `group` (one instance and namespace) as one getMany; {@link answerGets} answers them. */
  private sendGetMany(socket: WebSocketLike, group: QueuedGet[]): void {
    const requestId = String(++this.seq);
    this.getManys.set(requestId, group);
    this.sendFrame(socket, getManyFrame(requestId, group));
  }

  /**
   * Answers the gets of a getMany from its reply or, when it failed in a way a get alone might
   * not have, sends each of them again on its own frame (see coalesce.ts).
   */
  private answerGets(gets: QueuedGet[], m: Record<string, unknown>): void {
    const reply = readReply(m);
    const outcome = reply instanceof KvError ? ({ kind: 'malformed' } as const) : getManyOutcome(reply, gets);
    if (outcome.kind === 'answered') {
      for (const get of outcome.replies) this.settle(get.requestId!, (p) => p.resolve(get));
    } else if (outcome.kind === 'malformed') {
      this.rejectMalformed(gets.map(({ requestId }) => requestId), m);
    } else {
      if (outcome.tooLarge) {
        this.largeGets = true;
        this.getManySize = Math.min(this.getManySize, this.batchSize);
      }
      const socket = this.socket;
      for (const { requestId } of gets) {
        const entry = this.pending.get(requestId);
        if (entry !== undefined && socket !== undefined) this.sendFrame(socket, this.frameOf(entry, requestId));
      }
    }
  }

  /**
   * The request's frame, built on first need for a plain get (see {@link Pending.frame}). A
   * getMany that wants values alone goes as a getValues, whose params are the same, to a server
   * that lists it: decided as it goes out, for the server it goes to.
   */
  private frameOf(entry: Pending, requestId: string): string {
    if (entry.valueOnly && entry.target === undefined && this.getValues) return asGetValues(entry.frame!);
    return (entry.frame ??= entry.set !== undefined ? setFrame(requestId, entry.set) : JSON.stringify({ type: entry.type, requestId, params: entry.target }));
  }

  /** True when the request surely fits the server's frames, decided without building a plain get's frame. */
  private surelyFits(entry: Pending, requestId: string): boolean {
    if (entry.frame !== undefined || (entry.target === undefined && entry.set === undefined)) return false;
    const maxPayloadBytes = this.serverMaxPayloadBytes();
    if (maxPayloadBytes === undefined) return true;
    return (entry.target !== undefined ? getFrameBytes(requestId, entry.target) : setFrameBytes(requestId, entry.set!)) <= maxPayloadBytes;
  }

  private sendFrame(socket: WebSocketLike, frame: string): void {
    try {
      socket.send(frame);
    } catch (error) {
      this.settings.logger?.warn?.('send failed', error);
    }
  }

  /**
   * The frame's size in UTF-8 bytes and the server's limit, when the frame is above the
   * `maxPayloadBytes` of the server's hello; undefined when it fits or no limit is known yet
   * (before the hello reply, which is how the hello itself goes out unchecked).
   */
  private oversize(frame: string): { bytes: number; maxPayloadBytes: number } | undefined {
    const maxPayloadBytes = this.serverMaxPayloadBytes();
    if (maxPayloadBytes === undefined) return undefined;
    // A UTF-16 code unit takes 1 to 3 UTF-8 bytes, so most frames are decided without counting.
    if (frame.length * 3 <= maxPayloadBytes) return undefined;
    const bytes = utf8Length(frame);
    return bytes > maxPayloadBytes ? { bytes, maxPayloadBytes } : undefined;
  }

  /** The largest frame the server takes, from its hello; undefined before the hello or when the server does not say. */
  private serverMaxPayloadBytes(): number | undefined {
    // Read defensively: the hello reply is not validated, and a server may omit its limits.
    const maxPayloadBytes = (this.info as { limits?: { maxPayloadBytes?: unknown } } | undefined)?.limits?.maxPayloadBytes;
    return typeof maxPayloadBytes === 'number' ? maxPayloadBytes : undefined;
  }

  /** The single exit of a pending request: deletes it, clears its timer and listener, then settles it. */
  private settle(requestId: string, finish: (entry: Pending) => void): void {
    const entry = this.pending.get(requestId);
    if (entry === undefined) return;
    this.pending.delete(requestId);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    // Nothing left to time out: the timer must not keep a Node process alive until it fires.
    if (this.pending.size === 0 && this.deadlineTimer !== undefined) {
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = undefined;
    }
    entry.cleanup();
    finish(entry);
  }

  /**
   * Rejects with TIMEOUT each request with the default timeout whose deadline has passed, and
   * sets the deadline timer for the next one. Those requests time out in the order they were
   * made, which is the order of `pending`, so one timer serves them all: a timer of their own cost
   * a get about 2.6 µs of the client's CPU under load (bench/README.md).
   */
  private expireRequests(): void {
    this.deadlineTimer = undefined;
    const now = performance.now();
    for (const [requestId, entry] of this.pending) {
      if (entry.deadline === undefined) continue;
      if (entry.deadline > now) {
        this.deadlineTimer = setTimeout(() => this.expireRequests(), Math.ceil(entry.deadline - now));
        return;
      }
      this.settle(requestId, (p) => p.reject(timeoutError(p.type, requestId, this.settings.requestTimeoutMs)));
    }
  }

  // ------------------------------------------------------------------ incoming frames

  private onFrame(data: unknown): void {
    if (typeof data !== 'string') {
      this.settings.logger?.warn?.('ignored a binary frame from the server');
      return;
    }
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch (error) {
      this.settings.logger?.warn?.('ignored a frame that is not JSON', error);
      return;
    }
    // A batch reply is the replies of the batch's requests, in one frame.
    if (Array.isArray(message)) for (const item of message) this.onMessage(item);
    else this.onMessage(message);
  }

  private onMessage(message: unknown): void {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.settings.logger?.warn?.('ignored a frame that is not an object');
      return;
    }
    const m = message as Record<string, unknown>;
    const requestId = m['requestId'];
    if (typeof requestId === 'string') {
      const gets = this.getManys.get(requestId);
      if (gets !== undefined) {
        this.getManys.delete(requestId);
        return this.answerGets(gets, m);
      }
      const setEach = this.setEachs.get(requestId);
      if (setEach !== undefined) {
        this.setEachs.delete(requestId);
        return this.answerSets(requestId, setEach.sets, setEach.resent, m);
      }
      // Matched by requestId only: `type` is never used to pick the waiter.
      const entry = this.pending.get(requestId);
      if (entry === undefined) {
        this.settings.logger?.debug?.('ignored a reply to a request that is no longer waiting', { requestId });
        return;
      }
      const reply = readReply(m);
      if (reply instanceof KvError) this.settle(requestId, (p) => p.reject(reply));
      else this.settle(requestId, (p) => p.resolve(reply));
      return;
    }
    if (requestId === undefined) {
      for (const listener of this.pushListeners) {
        try {
          listener(m);
        } catch (error) {
          this.settings.logger?.warn?.('a push listener threw', error);
        }
      }
      return;
    }
    // `requestId: null`: the server could not read some frame; it cannot be tied to a request.
    this.settings.logger?.warn?.('the server reported an uncorrelated error', m);
  }
}

/**
 * Runs `task` once the current tick's work is done: after the promise callbacks it set off too
 * (process.nextTick runs after the microtask queue drains), so that the requests that awaited
 * callbacks make in reply to one frame share the next. Browsers, without it, get a microtask.
 */
const endOfTick: (task: () => void) => void =
  typeof globalThis.process?.nextTick === 'function' ? (task) => globalThis.process.nextTick(task) : (task) => queueMicrotask(task);

const GET_MANY_HEAD = '{"type":"kvStore.getMany",';
const GET_VALUES_HEAD = '{"type":"kvStore.getValues",';

/** A getMany's frame as a getValues: `type` comes first in the frames `enqueue` builds. */
function asGetValues(frame: string): string {
  return frame.startsWith(GET_MANY_HEAD) ? GET_VALUES_HEAD + frame.slice(GET_MANY_HEAD.length) : frame;
}

/** True when the server's hello lists `capability` (read defensively: the hello reply is not validated). */
function hasCapability(info: ServerInfo, capability: string): boolean {
  const { capabilities } = info as { capabilities?: unknown };
  return Array.isArray(capabilities) && capabilities.includes(capability);
}

/** How many single-key requests one batch frame may carry to this server and back; 0 when it does not take batches. */
function batchSizeFor(info: ServerInfo, clientMaxPayloadBytes: number): number {
  // Read defensively: the hello reply is not validated.
  const { capabilities, limits } = info as { capabilities?: unknown; limits?: { maxValueBytes?: unknown; maxPayloadBytes?: unknown; maxBatch?: unknown } };
  if (!Array.isArray(capabilities) || !capabilities.includes('batch') || limits === undefined) return 0;
  const { maxValueBytes, maxPayloadBytes, maxBatch } = limits;
  if (typeof maxValueBytes !== 'number' || typeof maxPayloadBytes !== 'number' || typeof maxBatch !== 'number') return 0;
  // The batch's reply must fit in the frames both sides accept.
  return batchCapacity({ maxValueBytes, maxPayloadBytes: Math.min(maxPayloadBytes, clientMaxPayloadBytes), maxBatch });
}

/**
 * How many gets of one tick may go as one getMany to this server; 0 when they go one by one: the
 * server does not take batches, or may send a getMany reply larger than this client accepts.
 */
function getManySizeFor(info: ServerInfo, clientMaxPayloadBytes: number): number {
  // Read defensively: the hello reply is not validated.
  const { capabilities, limits } = info as { capabilities?: unknown; limits?: { maxPayloadBytes?: unknown; maxBatch?: unknown } };
  if (!Array.isArray(capabilities) || !capabilities.includes('batch') || limits === undefined) return 0;
  const { maxPayloadBytes, maxBatch } = limits;
  if (typeof maxPayloadBytes !== 'number' || typeof maxBatch !== 'number' || maxPayloadBytes > clientMaxPayloadBytes) return 0;
  return Math.min(Math.floor(maxBatch), MAX_GETS_PER_GET_MANY);
}

/** How many sets of one tick may go as one setEach to this server; 0 when they go one by one (it does not list `setEach`). */
function setEachSizeFor(info: ServerInfo): number {
  // Read defensively: the hello reply is not validated.
  const maxBatch = (info as { limits?: { maxBatch?: unknown } }).limits?.maxBatch;
  if (!hasCapability(info, 'setEach') || typeof maxBatch !== 'number') return 0;
  return Math.min(Math.floor(maxBatch), MAX_SETS_PER_SET_EACH);
}

/** The error of a request that went out and whose reply will not come: the server may or may not have run it. */
function closedError(type: string, requestId: string): KvError {
  return new KvError('CONNECTION_CLOSED', 'the connection closed before the reply came', { type, requestId });
}

/** The reply envelope in `m`, or the error to reject with when it is not one. Unknown fields are kept. */
function readReply(m: Record<string, unknown>): Reply | KvError {
  if (m['success'] === true) return m as unknown as Reply;
  if (m['success'] === false && typeof m['code'] === 'string') {
    const error = typeof m['error'] === 'string' ? m['error'] : m['code'];
    return { ...m, error } as unknown as FailureReply<RequestType>;
  }
  return new KvError('INTERNAL_ERROR', 'the server sent a malformed reply', {
    data: m,
    ...(typeof m['type'] === 'string' ? { type: m['type'] } : {}),
    ...(typeof m['requestId'] === 'string' ? { requestId: m['requestId'] } : {}),
  });
}

function abortError(signal: AbortSignal, type: string, requestId: string | undefined): KvError {
  return new KvError('ABORTED', `${type} was aborted`, {
    cause: signal.reason,
    type,
    ...(requestId !== undefined ? { requestId } : {}),
  });
}

/** Drops a socket we no longer want, keeping an error listener on it so `ws` cannot throw. */
function discard(socket: WebSocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = () => undefined;
  terminateSocket(socket);
}

/** Starts the closing handshake; resolves on `close`, or cuts the socket after a grace period. */
function closeGracefully(socket: WebSocketLike): Promise<void> {
  return new Promise<void>((resolve) => {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onerror = () => undefined;
    const timer = setTimeout(() => {
      terminateSocket(socket);
      resolve();
    }, CLOSE_GRACE_MS);
    socket.onclose = () => {
      clearTimeout(timer);
      resolve();
    };
    if (socket.readyState === 3 /* CLOSED */) {
      clearTimeout(timer);
      resolve();
      return;
    }
    try {
      socket.close(1000, 'client closed');
    } catch {
      clearTimeout(timer);
      terminateSocket(socket);
      resolve();
    }
  });
}
