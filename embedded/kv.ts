// First: the class below names Symbol.dispose and Symbol.asyncDispose, which this defines where missing.
import './dispose.js';
import { DEFAULT_LIMITS, type ParamsInput, type Reply, type RequestType } from '../protocol/index.js';
import type { ConnectionLimits, Limits } from '../server/handlers.js';
import { DEFAULT_CHANGE_RETENTION, startHousekeeping } from '../server/housekeeping.js';
import { describeError, silentLogger, type Logger } from '../server/logger.js';
import { assertReplyRoom } from '../server/reply-budget.js';
import { Metrics } from '../server/metrics.js';
import type { ChangeRetention, StorageEngine } from '../server/storage/engine.js';
import { openSqliteEngine } from '../server/storage/sqlite.js';
import { SERVER_VERSION } from '../server/version.js';
import { WatchHub as ServerWatchHub } from '../server/watch.js';
import type { RequestOptions } from '../sdk/connection.js';
import { InstanceHandle, type InstanceOptions } from '../sdk/handles.js';
import { KvStoreApi } from '../sdk/kv-store.js';
import { WatchHub } from '../sdk/watch.js';
import { LocalLink } from './link.js';

/** Options of {@link openKV}. */
export interface OpenKVOptions {
  /** The SQLite database file (created if missing), or `':memory:'` for a store that lives as long as the process. */
  path: string;
  /**
   * `full` makes every write durable before its promise resolves (one fsync per commit; writes
   * made in the same turn of the event loop share it). `normal` skips that fsync: a power cut may
   * lose the last writes, never the file. A process crash loses nothing in either.
   * @default 'full'
   */
  durability?: 'full' | 'normal';
  /**
   * Cap on the database file's size in bytes; a write that needs more room fails with
   * STORAGE_ERROR and stores nothing.
   * @default undefined (no cap)
   */
  maxDbBytes?: number;
  /**
   * Limits on values and batches, as a server has them; a list page also shortens to fit
   * `maxPayloadBytes`, so that code moved between embedded and networked kvhub sees the same pages.
   * @default DEFAULT_LIMITS (1 MiB values, 16 MiB replies, 1000 items per batch)
   */
  limits?: Partial<Limits>;
  /** How often expired keys are swept (reads never see them either way), in ms. @default 250 */
  sweepIntervalMs?: number;
  /** How much of the change log (what `watch` with `fromRevision` replays) to keep. @default 100000 changes, 24 h */
  changeRetention?: Partial<ChangeRetention>;
  /** How often the change log and the kept replies of keyed writes are trimmed, in ms. @default 5000 */
  pruneIntervalMs?: number;
  /** How long the outcome of a write sent with an `idempotencyKey` is kept, in ms. @default 24 h */
  keptReplyWindowMs?: number;
  /** Receives diagnostics (storage failures, housekeeping errors). @default silentLogger */
  logger?: Logger;
}

type ParamsArgs<T extends RequestType> =
  {} extends ParamsInput<T>
    ? [params?: ParamsInput<T>, options?: RequestOptions]
    : [params: ParamsInput<T>, options?: RequestOptions];

/** The longest delay a Node timer keeps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What `hello` reports for the connection limits: an in-process store has one caller, no socket
 * buffer and no heartbeat. `maxBufferedBytes` also bounds what a watch replay may hold back.
 */
const EMBEDDED_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 1,
  maxInFlight: Number.MAX_SAFE_INTEGER,
  maxBufferedBytes: 64 * 1024 * 1024,
  heartbeatIntervalMs: 0,
};

/**
 * A kvhub store inside this process: the SDK's typed handles and `kvStore` facade on a SQLite
 * file (or `:memory:`), with no server and no socket. Requests run through the server's own
 * validation and handlers, so every reply, error code and limit is the one a networked kvhub gives.
 * Open one with {@link openKV}; close it with `close()`, or let `using` / `await using` do it.
 */
export class EmbeddedKv implements Disposable, AsyncDisposable {
  /** The Codebolt-compatible facade, exactly as on a network client: methods resolve with reply envelopes. */
  readonly kvStore: KvStoreApi;
  /** The database file, or `':memory:'`. */
  readonly path: string;
  /** The durability the store was opened with. */
  readonly durability: 'full' | 'normal';
  private readonly link: LocalLink;
  private readonly watches: WatchHub;
  private readonly serverWatch: ServerWatchHub;
  private readonly housekeeping: { stop(): Promise<void> };
  private closing: Promise<void> | undefined;

  /** @internal use {@link openKV} */
  constructor(
    private readonly engine: StorageEngine,
    options: OpenKVOptions,
    limits: Limits,
  ) {
    const logger = options.logger ?? silentLogger;
    this.path = options.path;
    this.durability = options.durability ?? 'full';
    this.serverWatch = new ServerWatchHub(engine, { maxBufferedBytes: EMBEDDED_CONNECTION_LIMITS.maxBufferedBytes, logger });
    this.link = new LocalLink(
      {
        engine,
        limits,
        connectionLimits: EMBEDDED_CONNECTION_LIMITS,
        durability: this.durability,
        serverVersion: SERVER_VERSION,
        watch: this.serverWatch,
        // Part of dispatch's context; only the network path counts requests into it.
        metrics: new Metrics(),
      },
      logger,
    );
    this.watches = new WatchHub(this.link);
    this.kvStore = new KvStoreApi(this.link.send, this.watches);
    const serverWatch = this.serverWatch;
    this.housekeeping = startHousekeeping(
      engine,
      {
        sweepIntervalMs: options.sweepIntervalMs ?? 250,
        pruneIntervalMs: options.pruneIntervalMs ?? 5000,
        retention: { ...DEFAULT_CHANGE_RETENTION, ...options.changeRetention },
        keepFrom: () => serverWatch.replayFloor(),
        ...(options.keptReplyWindowMs !== undefined && { keptReplyWindowMs: options.keptReplyWindowMs }),
      },
      logger,
    );
  }

  /** True once `close()` was called: every request from then on rejects with NOT_CONNECTED. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** A typed handle on instance `id`; handle methods throw `KvError` on failure. Making one does nothing. */
  instance(id: string, options: InstanceOptions = {}): InstanceHandle {
    return new InstanceHandle({ send: this.link.send, watches: this.watches, instanceId: id, autoCreate: options.autoCreate === true });
  }

  /** Runs any request of the protocol and resolves with its reply envelope, typed from the protocol (as `client.request`). */
  request<T extends RequestType>(type: T, ...args: ParamsArgs<T>): Promise<Reply<T>> {
    const [params, options] = args;
    return this.link.send(type, (params ?? {}) as ParamsInput<T>, options);
  }

  /**
   * Closes the store: watch subscriptions end normally, requests from now on reject with
   * NOT_CONNECTED, and the database is closed. Requests already made complete first: each has
   * reached the engine by the time its call returned, and closing commits the writes waiting for
   * their commit. Resolves once the database is closed and its file free for another store or a
   * server. Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.watches.close();
    this.link.close();
    this.serverWatch.close();
    // Started together: stopping housekeeping clears its timers at once and then waits for a run
    // under way, whose write the engine's close commits.
    const stopped = this.housekeeping.stop();
    const closed = this.engine.close();
    this.closing = Promise.all([stopped, closed]).then(() => undefined);
    return this.closing;
  }

  /** For `await using kv = openKV(...)`: closes the store and waits for it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * For `using kv = openKV(...)`: starts closing the store, as `close()`. Requests made after the
   * block reject at once, but a synchronous dispose cannot wait for the database to be released,
   * nor report a failure to close (it is logged). Prefer `await using` when the process opens the
   * same file again soon after, or when that failure matters.
   */
  [Symbol.dispose](): void {
    this.close().catch((error: unknown) => this.link.logger.warn?.('closing the store failed', error));
  }
}

/**
 * Opens a kvhub store in this process, on the SQLite file `path` (created if missing) or on
 * `':memory:'`. It returns at once, ready to use; it takes no server and opens no socket.
 *
 * Throws `DatabaseInUseError` when another process (a kvhub server, another store) holds the file,
 * `DatabaseOpenError` when the file is damaged or not kvhub's, and `RangeError` for bad options.
 *
 * @example
 * await using kv = openKV({ path: 'app.db' });
 * const users = kv.instance('app', { autoCreate: true }).namespace('users');
 * await users.set('u1', { name: 'Ada' });
 * await users.update('visits', (n: number) => n + 1, 0);
 */
export function openKV(options: OpenKVOptions | string): EmbeddedKv {
  const resolved: OpenKVOptions = typeof options === 'string' ? { path: options } : options;
  const limits = checkOptions(resolved);
  const engine = openSqliteEngine(resolved.path, {
    durability: resolved.durability ?? 'full',
    ...(resolved.maxDbBytes !== undefined && { maxDbBytes: resolved.maxDbBytes }),
  });
  try {
    return new EmbeddedKv(engine, resolved, limits);
  } catch (error) {
    engine.close().catch((closeError: unknown) => resolved.logger?.warn('closing the database failed', describeError(closeError)));
    throw error;
  }
}

/** The limits in force, after refusing options that could not work (before the file is touched). */
function checkOptions(options: OpenKVOptions): Limits {
  if (typeof options !== 'object' || options === null) throw new TypeError('openKV takes { path } or a path');
  if (typeof options.path !== 'string') throw new TypeError(`openKV needs a path (a file, or ':memory:'), not ${String(options.path)}`);
  if (options.durability !== undefined && options.durability !== 'full' && options.durability !== 'normal') {
    throw new RangeError(`durability must be 'full' or 'normal', not ${String(options.durability)}`);
  }
  const limits: Limits = { ...DEFAULT_LIMITS, ...options.limits };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`limits.${name} must be a whole number of at least 1, not ${value}`);
  }
  assertReplyRoom(limits, 'limits.maxPayloadBytes');
  // Intervals go to setInterval, which fires at once (and keeps firing) above 2^31-1 ms.
  const bounds = { sweepIntervalMs: MAX_TIMER_MS, pruneIntervalMs: MAX_TIMER_MS, keptReplyWindowMs: Number.MAX_SAFE_INTEGER };
  for (const [name, max] of Object.entries(bounds) as [keyof typeof bounds, number][]) {
    const value = options[name];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1 || value > max)) {
      throw new RangeError(`${name} must be a whole number from 1 to ${max}, not ${value}`);
    }
  }
  return limits;
}
