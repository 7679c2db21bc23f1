import type { ParamsInput, Reply, RequestType } from '../protocol/index.js';
import { FULL_ACCESS } from '../server/auth/index.js';
import { replyToRequest, type DispatchContext } from '../server/dispatch.js';
import type { HandlerContext } from '../server/handlers.js';
import { describeError, type LogFields, type Logger } from '../server/logger.js';
import type { WatchSession } from '../server/watch.js';
import type { ConnectionState, Logger as SdkLogger, PushMessage, RequestOptions } from '../sdk/connection.js';
import { KvError } from '../sdk/errors.js';
import type { Send } from '../sdk/kv-store.js';
import type { WatchLink } from '../sdk/watch.js';

/** What every request of the store shares: the dispatch context without the caller's identity and watch session. */
export type SharedContext = Omit<DispatchContext, 'session' | 'principal'>;

/**
 * The in-process counterpart of the SDK's connection: requests go through the server's own
 * dispatch (`replyToRequest`: the protocol's zod schemas, then the same handlers on the same
 * engine), so validation errors, CONFLICT, TTL and watch behave exactly as over a socket, and the
 * reply envelope is the one the SDK's handles already read.
 *
 * What it leaves out is what only a network needs: frames, idempotency keys (nothing is ever sent
 * twice here), reconnects, timeouts by default.
 */
export class LocalLink implements WatchLink {
  private current: ConnectionState = 'ready';
  private seq = 0;
  private readonly ctx: DispatchContext & Pick<HandlerContext, 'afterReply'>;
  private readonly pushListeners = new Set<(message: PushMessage) => void>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  /** Event frames waiting for the next microtask (see {@link session}). */
  private pushes: string[] = [];
  private pushedBytes = 0;

  /** The SDK's diagnostics (its watch hub's), passed on to the store's logger. */
  readonly logger: SdkLogger;

  constructor(
    shared: SharedContext,
    private readonly serverLogger: Logger,
  ) {
    this.logger = {
      debug: (message, details) => serverLogger.debug(message, fields(details)),
      warn: (message, details) => serverLogger.warn(message, fields(details)),
    };
    this.ctx = {
      ...shared,
      principal: FULL_ACCESS,
      session: this.session(),
      // A watch starts its replay once its reply is handed back; a macrotask later, every
      // promise continuation of the caller's has run, as when a reply frame has gone out.
      afterReply: (task) => void setImmediate(task),
    };
  }

  /**
   * Sends one request and resolves with its reply envelope, a `success: false` one included.
   * Rejects with a KvError only for what the SDK's connection also rejects for: NOT_CONNECTED
   * once the store is closed, VALIDATION_ERROR for params that are not JSON, ABORTED and TIMEOUT
   * when the caller's `signal` or `timeoutMs` asks for them.
   */
  readonly send: Send = <T extends RequestType>(type: T, params: ParamsInput<T>, options?: RequestOptions): Promise<Reply<T>> => {
    if (this.current === 'closed') return Promise.reject(new KvError('NOT_CONNECTED', 'the store is closed', { type }));
    const signal = options?.signal;
    // As over a socket, a request whose signal has already fired is not run at all.
    if (signal?.aborted === true) return Promise.reject(new KvError('ABORTED', `${type} was aborted`, { cause: signal.reason, type }));
    let copy: unknown;
    try {
      copy = jsonCopy(params ?? {});
    } catch (cause) {
      return Promise.reject(new KvError('VALIDATION_ERROR', `the params of ${type} cannot be sent as JSON`, { cause, type }));
    }
    const requestId = String(++this.seq);
    // The engine call is made before this returns: a write cannot be overtaken by a later one.
    // Dispatch types its envelopes loosely; they are the protocol's, as the SDK reads them off a socket.
    const reply = replyToRequest({ type, requestId, params: copy }, this.ctx, this.serverLogger) as unknown as Promise<Reply<T>>;
    if (options === undefined || (signal === undefined && options.timeoutMs === undefined)) return reply;
    return bounded(reply, type, requestId, options);
  };

  state(): ConnectionState {
    return this.current;
  }

  onPush(listener: (message: PushMessage) => void): () => void {
    this.pushListeners.add(listener);
    return () => this.pushListeners.delete(listener);
  }

  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Ends the link for good: later requests reject with NOT_CONNECTED, and the watch hub drops this session. */
  close(): void {
    if (this.current === 'closed') return;
    this.ctx.watch.dropSession(this.ctx.session);
    this.pushes = [];
    this.pushedBytes = 0;
    this.enter('closed');
  }

  /**
   * The watch session of this store, as the server's hub sees a connection. Events arrive inside
   * the engine's commit; they are handed to the SDK's subscriptions in a microtask, never from
   * within the commit, so that a subscriber's code (which may write) runs as it would over a
   * socket: after the write that caused it has finished.
   */
  private session(): WatchSession {
    const session: WatchSession = {
      push: (frame) => {
        if (this.current !== 'ready') return false;
        if (this.pushes.length === 0) queueMicrotask(() => this.deliver());
        this.pushes.push(frame);
        this.pushedBytes += frame.length;
        return true;
      },
      bufferedBytes: () => this.pushedBytes,
      // The hub gave up on this session's subscriptions (a replay that failed, a backlog it could
      // not hold) and dropped them. Over a socket the SDK would see the connection drop and
      // resubscribe from the last revision it received; the same sequence is played here.
      close: () => {
        if (this.current !== 'ready') return;
        this.pushes = [];
        this.pushedBytes = 0;
        this.enter('reconnecting');
        setImmediate(() => {
          if (this.current === 'reconnecting') this.enter('ready');
        });
      },
    };
    return session;
  }

  private deliver(): void {
    const frames = this.pushes;
    this.pushes = [];
    this.pushedBytes = 0;
    for (const frame of frames) {
      // Parsed per frame, as a client would: each subscriber gets records of its own.
      const message = JSON.parse(frame) as PushMessage;
      for (const listener of this.pushListeners) {
        try {
          listener(message);
        } catch (error) {
          this.serverLogger.warn('a watch listener threw', describeError(error));
        }
      }
    }
  }

  private enter(state: ConnectionState): void {
    this.current = state;
    for (const listener of this.stateListeners) {
      try {
        listener(state);
      } catch (error) {
        this.serverLogger.warn('a state listener threw', describeError(error));
      }
    }
  }
}

/** SDK diagnostics carry any value as details; the server's logger takes fields. */
function fields(details: unknown): LogFields | undefined {
  if (details === undefined) return undefined;
  if (details instanceof Error) return describeError(details);
  return typeof details === 'object' && details !== null && !Array.isArray(details) ? (details as LogFields) : { details };
}

/**
 * A copy of `params` with JSON's meaning, as the network path gives the server: `undefined`
 * properties dropped, `toJSON` applied (a Date becomes its ISO text), NaN as null. Throws for
 * what JSON cannot hold (a BigInt, a cycle). The copy is also what keeps the store independent of
 * the caller's objects: changing a value after `set` cannot change what was written.
 */
function jsonCopy(params: unknown): unknown {
  return isFlatJson(params) ? params : (JSON.parse(JSON.stringify(params)) as unknown);
}

/**
 * True for a plain object whose own fields are all strings, finite numbers, booleans or null:
 * what reads send (ids, keys, a cursor). Its JSON copy would equal it field for field, and it holds
 * nothing the caller could change later, so it is used as it is. The check costs a small fraction
 * of the copy, which is about a tenth of an in-process read.
 */
function isFlatJson(params: unknown): boolean {
  if (typeof params !== 'object' || params === null || Object.getPrototypeOf(params) !== Object.prototype) return false;
  for (const name in params) {
    if (!Object.hasOwn(params, name)) return false;
    const field = (params as Record<string, unknown>)[name];
    if (typeof field === 'string' || typeof field === 'boolean' || field === null) continue;
    if (typeof field !== 'number' || !Number.isFinite(field)) return false;
  }
  return true;
}

/** setTimeout fires at once for delays above 2^31-1 ms; longer timeouts are capped to that (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** `reply`, rejected with ABORTED when `signal` fires or with TIMEOUT after `timeoutMs` (the request may still run). */
function bounded<R>(reply: Promise<R>, type: string, requestId: string, options: RequestOptions): Promise<R> {
  const { signal, timeoutMs } = options;
  return new Promise<R>((resolve, reject) => {
    const onAbort = () => {
      finish();
      reject(new KvError('ABORTED', `${type} was aborted`, { cause: signal?.reason, type, requestId }));
    };
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            finish();
            reject(new KvError('TIMEOUT', `${type} got no reply within ${timeoutMs} ms`, { type, requestId }));
          }, Math.min(Math.max(0, timeoutMs), MAX_TIMER_MS));
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    reply.then(
      (value) => {
        finish();
        resolve(value);
      },
      (error: unknown) => {
        finish();
        reject(error);
      },
    );
  });
}
