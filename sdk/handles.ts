import type { Instance, KvRecord, ParamsInput, ReplyData, RequestType } from '../protocol/index.js';
import { conflictDelay } from './backoff.js';
import { VALUE_ONLY } from './coalesce.js';
import type { RequestOptions } from './connection.js';
import { KvError } from './errors.js';
import type { Send } from './kv-store.js';
import { decodeRecord, fromWireValue, toWireValue } from './values.js';
import type { InstanceWatchOptions, NamespaceWatchOptions, Subscription, WatchHub } from './watch.js';

/** Options of `client.instance(id, options)`. */
export interface InstanceOptions {
  /**
   * Create the instance (with `id = name = instanceId`) on the first write that needs it. Until
   * then reads behave as on an empty instance instead of failing with INSTANCE_NOT_FOUND.
   * @default false
   */
  autoCreate?: boolean;
}

/** Options of a handle's `set`. */
export interface HandleSetOptions extends RequestOptions {
  /**
   * Expire the key this many milliseconds after the write.
   * @default undefined (no expiry; a set clears an existing one)
   */
  ttlMs?: number;
  /** Write only if the key exists with this version; else the set throws CONFLICT. @default undefined */
  ifVersion?: number;
  /** Write only if the key does not exist; else the set throws CONFLICT. @default undefined */
  ifAbsent?: boolean;
  /**
   * Content type of the value; any but `application/json` marks binary.
   * @default 'application/json', or 'application/octet-stream' for a Uint8Array
   */
  contentType?: string;
}

/** Options of a handle's `setnx`. */
export type SetnxOptions = Omit<HandleSetOptions, 'ifVersion' | 'ifAbsent'>;

/** Options of a handle's `incr`. */
export interface IncrOptions extends RequestOptions {
  /** Expiry given to the key when this incr creates it (a fixed window). @default undefined (none) */
  ttlMs?: number;
}

/** Options of a handle's `delete`. */
export interface HandleDeleteOptions extends RequestOptions {
  /** Delete only if the key has this version; else the delete throws CONFLICT. @default undefined */
  ifVersion?: number;
}

/** Options of a handle's `setMany`. */
export interface HandleSetManyOptions extends RequestOptions {
  /** Expiry for every entry that does not name its own. @default undefined (none) */
  ttlMs?: number;
}

/** One entry of a handle's `setMany`, when given as objects. */
export interface HandleSetManyEntry {
  /** The key. */
  key: string;
  /** Any JSON value, or a Uint8Array. */
  value: unknown;
  /** @default 'application/json', or 'application/octet-stream' for a Uint8Array */
  contentType?: string;
  /** @default the `ttlMs` option of the call */
  ttlMs?: number;
}

/** What a handle's `setMany` accepts: `{ key: value }`, `[key, value]` pairs (a Map too), or entry objects. */
export type SetManyInput = Record<string, unknown> | Iterable<readonly [string, unknown] | HandleSetManyEntry>;

/** Options of a handle's `update`. */
export interface UpdateOptions extends RequestOptions {
  /**
   * How many writes to try before giving up and throwing the last CONFLICT.
   * @default 100
   */
  maxAttempts?: number;
  /**
   * Expiry of the written value. `update` writes with `set`, which replaces the whole record:
   * without `ttlMs`, an existing expiry is cleared.
   * @default undefined (no expiry)
   */
  ttlMs?: number;
  /**
   * Content type to write with.
   * @default the current record's for a Uint8Array result, else as for `set`
   */
  contentType?: string;
  /**
   * Upper bound of the random delay before a retry; it grows from 1 ms up to this.
   * @default 50
   */
  maxRetryDelayMs?: number;
}

/** Options of a handle's `list`. */
export interface ListOptions extends RequestOptions {
  /** Only keys starting with this literal prefix (case-sensitive, no wildcards). @default '' (all keys) */
  prefix?: string;
  /** Walk keys in descending byte order. @default false */
  reverse?: boolean;
  /** Yield keys only (strings) instead of records. @default false */
  keysOnly?: boolean;
  /** Stop after this many items in total. @default Infinity (walk every page) */
  limit?: number;
  /** Keys fetched per request (1..1000). @default 100 */
  pageSize?: number;
}

/** What `list`-like iterators accept besides `keysOnly`. */
export type IterateOptions = Omit<ListOptions, 'keysOnly'>;

interface Context {
  readonly send: Send;
  readonly watches: WatchHub;
  readonly instanceId: string;
  readonly autoCreate: boolean;
}

/** Marks a call's result for "the instance does not exist yet" under `autoCreate`. */
const ABSENT = Symbol('absent');

const VALUE_ONLY_OPTIONS: RequestOptions = { [VALUE_ONLY]: true } as RequestOptions;

/** `options` marked for a get or getMany whose caller wants the values alone (see VALUE_ONLY). */
function valueOnly(options: RequestOptions | undefined): RequestOptions {
  // Not a spread: on Node 20 one followed by a new field takes V8's slow path.
  return options === undefined ? VALUE_ONLY_OPTIONS : Object.assign({ [VALUE_ONLY]: true }, options);
}

/**
 * A get's data or a getMany item (with `record`), or the same read through a getValues (with
 * `contentType` instead): the SDK sends a handle's reads, which want values alone, as getValues
 * where the server has it (see coalesce.ts and Connection.frameOf).
 */
type ValueOrRecordItem = Partial<ReplyData<'kvStore.getMany'>['items'][number] & ReplyData<'kvStore.getValues'>['items'][number]> & { exists: boolean };

/** The decoded value of an item that exists, from its record or, without one, its value and contentType. */
function itemValue(item: ValueOrRecordItem): unknown {
  return item.record != null ? fromWireValue(item.record.value, item.record.contentType) : fromWireValue(item.value, item.contentType ?? undefined);
}

/** Sends a request and returns its data; a `success: false` reply becomes a thrown KvError. */
async function call<T extends RequestType>(ctx: Context, type: T, params: ParamsInput<T>, options?: RequestOptions): Promise<ReplyData<T>> {
  const reply = await ctx.send(type, params, options);
  if (!reply.success) throw KvError.fromReply(reply);
  return reply.data;
}

/**
 * Like {@link call}, but with `autoCreate` an INSTANCE_NOT_FOUND means "nothing there yet":
 * the instance is created by the first write, so until then it reads as empty.
 */
async function read<T extends RequestType>(
  ctx: Context,
  type: T,
  params: ParamsInput<T>,
  options?: RequestOptions,
): Promise<ReplyData<T> | typeof ABSENT> {
  const reply = await ctx.send(type, params, options);
  if (reply.success) return reply.data;
  if (ctx.autoCreate && reply.code === 'INSTANCE_NOT_FOUND') return ABSENT;
  throw KvError.fromReply(reply);
}

function requestOptions(options: RequestOptions | undefined): RequestOptions {
  const out: RequestOptions = {};
  if (options?.signal !== undefined) out.signal = options.signal;
  if (options?.timeoutMs !== undefined) out.timeoutMs = options.timeoutMs;
  return out;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new KvError('ABORTED', 'aborted', { cause: signal.reason }));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new KvError('ABORTED', 'aborted', { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A typed handle on one instance: `client.instance(id, { autoCreate })`. It holds no state
 * beyond its id; making one sends nothing.
 */
export class InstanceHandle {
  /** @internal use `client.instance()` */
  constructor(private readonly ctx: Context) {}

  /** The instance id. */
  get id(): string {
    return this.ctx.instanceId;
  }

  /** A handle on namespace `name` of this instance (nest with `.namespace(sub)`: `name/sub`). */
  namespace(name: string): NamespaceHandle {
    return new NamespaceHandle(this.ctx, name);
  }

  /** The instance's metadata. Throws INSTANCE_NOT_FOUND when it does not exist. */
  async info(options?: RequestOptions): Promise<Instance> {
    return (await call(this.ctx, 'kvStore.getInstance', { instanceId: this.id }, options)).instance;
  }

  /** The namespaces that hold at least one live key. */
  async namespaces(options?: RequestOptions): Promise<string[]> {
    const data = await read(this.ctx, 'kvStore.getNamespaces', { instanceId: this.id }, options);
    return data === ABSENT ? [] : data.namespaces;
  }

  /** The number of live keys across all namespaces. */
  async count(options?: RequestOptions): Promise<number> {
    const data = await read(this.ctx, 'kvStore.getRecordCount', { instanceId: this.id }, options);
    return data === ABSENT ? 0 : data.count;
  }

  /**
   * Subscribes to every change of this instance, in every namespace (see {@link Subscription}).
   * Binary values in event records are decoded to `Uint8Array`. Fails with INSTANCE_NOT_FOUND
   * when the instance does not exist, `autoCreate` or not: create it first.
   *
   * @example
   * for await (const event of client.instance('app').watch()) {
   *   if (event.kind === 'set') render(event.namespace, event.key, event.record?.value);
   * }
   */
  watch(options: InstanceWatchOptions = {}): Subscription {
    return this.ctx.watches.open({ instanceId: this.id }, options, true);
  }
}

/**
 * A typed handle on one namespace of one instance, for code written by hand. Its methods return
 * plain values and throw a {@link KvError} (with the reply's `code`) on a `success: false` reply.
 *
 * Binary values round-trip: a `Uint8Array` is written as base64 with a binary content type, and a
 * record whose content type is not `application/json` reads back as a `Uint8Array`.
 */
export class NamespaceHandle {
  /** @internal use `instance.namespace()` */
  constructor(
    private readonly ctx: Context,
    /** The full namespace name (`parent/child` for nested handles). */
    readonly name: string,
  ) {}

  /** The instance this namespace belongs to. */
  get instanceId(): string {
    return this.ctx.instanceId;
  }

  /** A handle on the nested namespace `${this.name}/${name}` (namespaces are flat on the server). */
  namespace(name: string): NamespaceHandle {
    return new NamespaceHandle(this.ctx, `${this.name}/${name}`);
  }

  /**
   * The params that name `key`. A request's params start with these fields spelled out, not with
   * a spread of this object: on Node 20, a literal that starts with a spread and goes on with
   * more fields takes V8's slow path, about 1 to 4 µs per request.
   */
  private where(key: string) {
    return { instanceId: this.ctx.instanceId, namespace: this.name, key };
  }

  private autoCreate(): { autoCreateInstance?: true } {
    return this.ctx.autoCreate ? { autoCreateInstance: true } : {};
  }

  /** The value of `key`, or `undefined` when it does not exist (a stored `null` reads as `null`). */
  async get<T = unknown>(key: string, options?: RequestOptions): Promise<T | undefined> {
    const data: ValueOrRecordItem | typeof ABSENT = await read(this.ctx, 'kvStore.get', this.where(key), valueOnly(options));
    // A full reply whose record is null reads as absent, as getRecord reads it.
    if (data === ABSENT || !data.exists || data.record === null) return undefined;
    return itemValue(data) as T;
  }

  /** The whole record of `key` (value decoded), or `undefined` when it does not exist. */
  async getRecord(key: string, options?: RequestOptions): Promise<KvRecord | undefined> {
    const data = await read(this.ctx, 'kvStore.get', this.where(key), options);
    if (data === ABSENT || !data.exists || data.record === null) return undefined;
    return decodeRecord(data.record);
  }

  /** True when `key` exists (and has not expired). */
  async has(key: string, options?: RequestOptions): Promise<boolean> {
    const data = await read(this.ctx, 'kvStore.ttl', this.where(key), options);
    return data !== ABSENT && data.exists;
  }

  /** Writes `value` and returns the new record (value decoded). Conditions that fail throw CONFLICT. */
  async set(key: string, value: unknown, options: HandleSetOptions = {}): Promise<KvRecord> {
    const { ttlMs, ifVersion, ifAbsent, contentType } = options;
    const params = {
      instanceId: this.ctx.instanceId,
      namespace: this.name,
      key,
      ...toWireValue(value, contentType),
      ...(ttlMs !== undefined ? { ttlMs } : {}),
      ...(ifVersion !== undefined ? { ifVersion } : {}),
      ...(ifAbsent !== undefined ? { ifAbsent } : {}),
      ...this.autoCreate(),
    };
    return decodeRecord((await call(this.ctx, 'kvStore.set', params, requestOptions(options))).record);
  }

  /** Writes `value` only if `key` does not exist: true when written, false when it already existed. */
  async setnx(key: string, value: unknown, options: SetnxOptions = {}): Promise<boolean> {
    try {
      await this.set(key, value, { ...options, ifAbsent: true });
      return true;
    } catch (error) {
      if (error instanceof KvError && error.code === 'CONFLICT') return false;
      throw error;
    }
  }

  /** Deletes `key`: true if it existed. With `ifVersion`, a version mismatch throws CONFLICT. */
  async delete(key: string, options: HandleDeleteOptions = {}): Promise<boolean> {
    const params = { instanceId: this.ctx.instanceId, namespace: this.name, key, ...(options.ifVersion !== undefined ? { ifVersion: options.ifVersion } : {}) };
    const data = await read(this.ctx, 'kvStore.delete', params, requestOptions(options));
    return data !== ABSENT && data.deleted;
  }

  /**
   * Adds `by` to the number at `key` (a missing key counts as 0) and returns the new value.
   * `ttlMs` applies only when this call creates the key. A non-number value throws TYPE_MISMATCH.
   */
  async incr(key: string, by = 1, options: IncrOptions = {}): Promise<number> {
    const params = {
      instanceId: this.ctx.instanceId,
      namespace: this.name,
      key,
      by,
      ...(options.ttlMs !== undefined ? { ttlMs: options.ttlMs } : {}),
      ...this.autoCreate(),
    };
    return (await call(this.ctx, 'kvStore.incr', params, requestOptions(options))).value;
  }

  /** Sets `key` to expire in `ttlMs` ms, or removes its expiry with `null`. False when the key does not exist. */
  async expire(key: string, ttlMs: number | null, options?: RequestOptions): Promise<boolean> {
    const data = await read(this.ctx, 'kvStore.expire', { instanceId: this.ctx.instanceId, namespace: this.name, key, ttlMs }, options);
    return data !== ABSENT && data.updated;
  }

  /** Milliseconds `key` has left, or `null` when it has no expiry or does not exist (tell them apart with `has`). */
  async ttl(key: string, options?: RequestOptions): Promise<number | null> {
    const data = await read(this.ctx, 'kvStore.ttl', this.where(key), options);
    return data === ABSENT ? null : data.ttlMs;
  }

  /**
   * Read-modify-write without lost updates: reads `key` (or takes `defaultValue` when it does not
   * exist), applies `fn`, and writes the result on condition that nobody wrote in between
   * (`ifVersion`, or `ifAbsent` for a new key). On CONFLICT it applies `fn` again to the value the
   * conflict reply carries, after a small random delay, at most `maxAttempts` writes in all.
   * `fn` may therefore run several times; it should have no side effects. Returns the value written.
   */
  async update<T>(key: string, fn: (current: T) => T | Promise<T>, defaultValue: T, options: UpdateOptions = {}): Promise<T> {
    const { maxAttempts = 100, ttlMs, contentType, maxRetryDelayMs = 50 } = options;
    const request = requestOptions(options);
    let current: KvRecord | null = (await this.getRecord(key, request)) ?? null;
    for (let attempt = 1; ; attempt++) {
      const next = await fn(current === null ? defaultValue : (current.value as T));
      const binaryType = next instanceof Uint8Array && current !== null && current.value instanceof Uint8Array ? current.contentType : undefined;
      const params = {
        ...this.where(key),
        ...toWireValue(next, contentType ?? binaryType),
        ...(ttlMs !== undefined ? { ttlMs } : {}),
        ...(current === null ? { ifAbsent: true } : { ifVersion: current.version }),
        ...this.autoCreate(),
      };
      const reply = await this.ctx.send('kvStore.set', params, request);
      if (reply.success) return next;
      if (reply.code !== 'CONFLICT' || attempt >= maxAttempts) throw KvError.fromReply(reply);
      // The conflict reply names the record that won; start over from it without another read.
      const winner = (reply.data as { current?: KvRecord | null } | undefined)?.current;
      current = winner === undefined ? ((await this.getRecord(key, request)) ?? null) : winner === null ? null : decodeRecord(winner);
      await sleep(conflictDelay(attempt, 1, maxRetryDelayMs), request.signal);
    }
  }

  /** The values of `keys`, in the order asked; `undefined` for a key that does not exist. */
  async getMany<T = unknown>(keys: readonly string[], options?: RequestOptions): Promise<(T | undefined)[]> {
    if (keys.length === 0) return [];
    const params = { instanceId: this.instanceId, namespace: this.name, keys: [...keys] };
    const data = await read(this.ctx, 'kvStore.getMany', params, valueOnly(options));
    if (data === ABSENT) return keys.map(() => undefined);
    return (data.items as ValueOrRecordItem[]).map((item) => (item.exists ? (itemValue(item) as T) : undefined));
  }

  /** Writes several keys at once, all or nothing; returns the new records (values decoded). */
  async setMany(entries: SetManyInput, options: HandleSetManyOptions = {}): Promise<KvRecord[]> {
    const list: HandleSetManyEntry[] = [];
    if (Symbol.iterator in entries) {
      for (const entry of entries as Iterable<readonly [string, unknown] | HandleSetManyEntry>) {
        list.push(isPair(entry) ? { key: entry[0], value: entry[1] } : entry);
      }
    } else {
      for (const [key, value] of Object.entries(entries)) list.push({ key, value });
    }
    if (list.length === 0) return [];
    const wire = list.map((entry) => {
      const ttlMs = entry.ttlMs ?? options.ttlMs;
      return { key: entry.key, ...toWireValue(entry.value, entry.contentType), ...(ttlMs !== undefined ? { ttlMs } : {}) };
    });
    const params = { instanceId: this.instanceId, namespace: this.name, entries: wire, ...this.autoCreate() };
    return (await call(this.ctx, 'kvStore.setMany', params, requestOptions(options))).records.map(decodeRecord);
  }

  /**
   * Walks the namespace in key byte order, one page per request, following the cursor until the
   * last page: yields records (values decoded), or keys with `keysOnly: true`.
   */
  list(options: ListOptions & { keysOnly: true }): AsyncIterableIterator<string>;
  list(options?: ListOptions & { keysOnly?: false }): AsyncIterableIterator<KvRecord>;
  list(options: ListOptions): AsyncIterableIterator<string | KvRecord>;
  list(options: ListOptions = {}): AsyncIterableIterator<string | KvRecord> {
    return this.walk(options);
  }

  /** Every key, in byte order (see {@link list}). */
  keys(options: IterateOptions = {}): AsyncIterableIterator<string> {
    return this.list({ ...options, keysOnly: true });
  }

  /** Every `[key, value]` pair, in key byte order (see {@link list}). */
  async *entries<T = unknown>(options: IterateOptions = {}): AsyncIterableIterator<[string, T]> {
    for await (const record of this.list({ ...options, keysOnly: false })) yield [record.key, record.value as T];
  }

  /** `for await (const [key, value] of namespace)`: same as {@link entries}. */
  [Symbol.asyncIterator](): AsyncIterableIterator<[string, unknown]> {
    return this.entries();
  }

  /** The number of live keys in this namespace (nested namespaces are separate and not counted). */
  async count(options?: RequestOptions): Promise<number> {
    const data = await read(this.ctx, 'kvStore.getRecordCount', { instanceId: this.instanceId, namespace: this.name }, options);
    return data === ABSENT ? 0 : data.count;
  }

  /**
   * Subscribes to the changes of this namespace (nested namespaces are separate and not
   * included), of one `key`, or of the keys starting with `prefix` (see {@link Subscription}).
   * Binary values in event records are decoded to `Uint8Array`. Fails with INSTANCE_NOT_FOUND
   * when the instance does not exist, `autoCreate` or not.
   *
   * @example
   * const tasks = client.instance('app').namespace('tasks');
   * for await (const event of tasks.watch({ prefix: 'todo:', fromRevision: saved })) {
   *   await handle(event);
   *   saved = event.revision;
   * }
   */
  watch(options: NamespaceWatchOptions = {}): Subscription {
    const { key, prefix, ...callbacks } = options;
    const filter = {
      instanceId: this.instanceId,
      namespace: this.name,
      ...(key !== undefined ? { key } : {}),
      ...(prefix !== undefined ? { prefix } : {}),
    };
    return this.ctx.watches.open(filter, callbacks, true);
  }

  /** Deletes every key of this namespace (not of nested ones); returns how many went. */
  async clear(options?: RequestOptions): Promise<number> {
    const data = await read(this.ctx, 'kvStore.deleteNamespace', { instanceId: this.instanceId, namespace: this.name }, options);
    return data === ABSENT ? 0 : data.deletedCount;
  }

  private async *walk(options: ListOptions): AsyncGenerator<string | KvRecord> {
    const { prefix, reverse, keysOnly = false, limit = Infinity, pageSize = 100 } = options;
    const request = requestOptions(options);
    let remaining = limit;
    let cursor: string | null | undefined;
    while (remaining > 0) {
      const params = {
        instanceId: this.instanceId,
        namespace: this.name,
        limit: Math.min(pageSize, remaining),
        ...(prefix !== undefined ? { prefix } : {}),
        ...(reverse !== undefined ? { reverse } : {}),
        ...(keysOnly ? { keysOnly } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
      };
      const data = await read(this.ctx, 'kvStore.list', params, request);
      if (data === ABSENT) return;
      const items: (string | KvRecord)[] = keysOnly ? (data.keys ?? []) : (data.records ?? []).map(decodeRecord);
      for (const item of items) {
        yield item;
        if (--remaining <= 0) return;
      }
      if (data.cursor === null) return;
      cursor = data.cursor;
    }
  }
}

function isPair(entry: readonly [string, unknown] | HandleSetManyEntry): entry is readonly [string, unknown] {
  return Array.isArray(entry);
}
