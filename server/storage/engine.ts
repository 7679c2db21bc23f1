import type { Instance, KvRecord, ProtocolError, QueryOperator, RecordField, SetEachResult, WatchEvent } from '../../protocol/index.js';

/**
 * The storage engine interface. It knows nothing of sockets or of SQLite: the WebSocket server,
 * an embedded in-process store and later networked engines (PostgreSQL) all sit behind it, so
 * every method is asynchronous.
 *
 * Inputs arrive validated (ids, sizes, TTL ranges, batch limits, duplicate keys are checked by the
 * caller). Engines throw `ProtocolError` for outcomes the protocol names (INSTANCE_NOT_FOUND,
 * INSTANCE_EXISTS, CONFLICT with `data.current`, TYPE_MISMATCH, STORAGE_ERROR).
 *
 * Semantics every engine keeps:
 * - One database-wide revision counter. Every changed key takes its own revision; a multi-key
 *   write takes consecutive revisions in one transaction; deleteNamespace and deleteInstance take
 *   one revision each (none when they delete nothing).
 * - A key whose `expiresAt` has passed does not exist for any read, write, list, count, query or
 *   condition, whether or not it has been swept. A write that finds the key expired first records
 *   its expiry (one revision) and then creates the key afresh: version 1, a new id, a new createdAt.
 * - `version` is 1 on creation and +1 on every write of the key.
 * - `autoCreate` on a missing instance creates it with id = name = instanceId; without it, an
 *   operation on a missing instance throws INSTANCE_NOT_FOUND.
 * - A write acknowledged (its promise settled) is committed — in a durable engine, on disk — and
 *   no read ever returns what a write not yet committed changed.
 * - A write given an `idempotency` claim runs at most once per owner and key: its outcome, success
 *   or a ProtocolError other than STORAGE_ERROR and INTERNAL_ERROR, is kept in the write's own
 *   transaction, and a repeat returns (or throws) the kept outcome and writes nothing. A repeat
 *   whose fingerprint differs throws VALIDATION_ERROR.
 */
export interface StorageEngine {
  /**
   * True when calls take effect in the order they are made even when a call starts before the
   * previous one settled (the SQLite engine does each call's work before returning its promise).
   * Dispatch then starts the single-key elements of a batch together, so that its writes share a
   * commit. An engine that cannot promise it (say, a networked one that could reorder calls in
   * flight) says false and gets a batch's elements one at a time; requests in flight at once on
   * such an engine have no order among them anyway. Required, so that a wrapper around an engine
   * has to state it.
   */
  readonly appliesInCallOrder: boolean;
  createInstance(input: { id?: string; name: string; description?: string }, options?: WriteOptions): Promise<Instance>;
  getInstance(instanceId: string): Promise<Instance>;
  listInstances(): Promise<Instance[]>;
  updateInstance(instanceId: string, patch: { name?: string; description?: string }, options?: WriteOptions): Promise<Instance>;
  /** Deletes the instance and all of its records. */
  deleteInstance(instanceId: string, options?: WriteOptions): Promise<void>;

  /** The live record, or null when absent or expired. */
  get(instanceId: string, namespace: string, key: string, options?: ReadOptions): Promise<KvRecord | null>;
  /**
   * Live records in the order of `keys` (null where absent). Throws LIMIT_EXCEEDED, without
   * reading further, once the records read hold more than `maxBytes` of keys and values.
   */
  getMany(
    instanceId: string,
    namespace: string,
    keys: readonly string[],
    maxBytes?: number,
    options?: ReadOptions,
  ): Promise<(KvRecord | null)[]>;
  /** Replaces the whole record (a set without `ttlMs` clears the expiry). Throws CONFLICT when a condition fails. */
  set(input: SetInput, options?: WriteOptions): Promise<KvRecord>;
  /** All entries or none, consecutive revisions in entry order. */
  setMany(input: SetManyInput, options?: WriteOptions): Promise<KvRecord[]>;
  /**
   * Each entry set on its own, in order, as `set` would (a failed condition fails that entry
   * alone, with CONFLICT in its result), in one write: under one idempotency claim, the results
   * of all entries are kept together. A failure that is not the entry's own (a storage error)
   * fails the whole call, and none of its entries is written.
   */
  setEach(input: SetEachInput, options?: WriteOptions): Promise<SetEachResult[]>;
  /** False when the key was absent. Throws CONFLICT when `ifVersion` does not match. */
  delete(instanceId: string, namespace: string, key: string, ifVersion?: number, options?: WriteOptions): Promise<boolean>;
  /** Number of live keys deleted. */
  deleteNamespace(instanceId: string, namespace: string, options?: WriteOptions): Promise<number>;
  /** Adds `by` to a number value (creating it at `by`; `ttlMs` applies only then). Throws TYPE_MISMATCH. */
  incr(input: IncrInput, options?: WriteOptions): Promise<KvRecord>;
  /** Sets (ttlMs) or removes (null) the expiry of a live key; counts as a write. False when absent. */
  expire(instanceId: string, namespace: string, key: string, ttlMs: number | null, options?: WriteOptions): Promise<boolean>;
  /** Remaining time to live in ms (null: no expiry or absent). */
  ttl(instanceId: string, namespace: string, key: string): Promise<{ exists: boolean; ttlMs: number | null }>;
  /** Checks, then ops, in one transaction. CONFLICT carries the first failing check's current record. */
  atomic(input: AtomicInput, options?: WriteOptions): Promise<{ revision: number; records: (KvRecord | null)[] }>;

  /**
   * One page of live keys in UTF-8 byte order (or reverse), strictly after `after` when given.
   * The page ends early (with `more`) once its records hold more than `maxBytes` of keys and values.
   */
  list(input: ListInput): Promise<{ records: KvRecord[]; more: boolean }>;
  /**
   * Records matching every condition, ordered, after `offset`, at most `limit` and ending early
   * once they hold more than `maxBytes` of keys and values; `total` ignores limit and offset.
   */
  query(input: QueryInput): Promise<{ records: KvRecord[]; total: number }>;
  /** Namespaces holding at least one live key, in byte order. */
  getNamespaces(instanceId: string): Promise<string[]>;
  /** Live keys in the instance, or in one namespace of it. */
  count(instanceId: string, namespace?: string): Promise<number>;
  /** Whole-database counts, or one instance's (then `instances` is 1). `dbBytes` is always the whole database. */
  stats(instanceId?: string): Promise<Stats>;

  /** The highest revision taken so far (0 for a new database). */
  currentRevision(): Promise<number>;

  // ---- the change log (watch)
  /**
   * Calls `listener` after every commit that changed something, with that commit's changes in
   * revision order — never for a transaction that rolled back. Listeners run synchronously after
   * the commit, before the write's promise settles. Returns the function that removes the listener.
   */
  onCommit(listener: (changes: readonly WatchEvent[]) => void): () => void;
  /** One instance's logged changes with `after < revision <= upTo`, in revision order, at most `limit`. */
  changesSince(instanceId: string, after: number, upTo: number, limit: number): Promise<WatchEvent[]>;
  /** The oldest revision the change log still holds; `currentRevision() + 1` when it holds none. */
  oldestRevision(): Promise<number>;
  /**
   * Drops logged changes beyond the newest `maxCount` or older than `maxAgeMs`, at most `limit`
   * in one call, but none from revision `keepFrom` on (a replay under way still needs them);
   * returns how many. Replays from before the oldest kept revision are COMPACTED.
   */
  pruneChanges(retention: ChangeRetention, limit: number, keepFrom?: number): Promise<number>;
  /** Deletes up to `limit` expired keys (each takes a revision); returns how many. */
  sweepExpired(limit: number): Promise<number>;
  /** Forgets up to `limit` kept replies of keyed writes older than `maxAgeMs`; returns how many. */
  pruneKeptReplies(maxAgeMs: number, limit: number): Promise<number>;
  /** Figures for monitoring; cheap enough to read on every scrape. */
  metrics(): Promise<EngineMetrics>;
  /**
   * Optional, for engines that keep their data in a file: writes a consistent copy of the whole
   * store to the new file `path` (refusing one that exists) while requests go on, and returns the
   * revision the copy holds (every change up to it, none after). `signal` stops the copy.
   */
  backup?(path: string, options?: { signal?: AbortSignal }): Promise<{ revision: number }>;
  /** Flushes and releases the database. Idempotent. */
  close(): Promise<void>;
}

/** Options of every write. */
export interface WriteOptions {
  /** Makes the write exactly-once (see {@link StorageEngine}). */
  idempotency?: IdempotencyClaim;
}

/** How the records a read returns will be used. */
export interface ReadOptions {
  /**
   * The caller only serializes the records (into a reply it writes to a socket, with recordJson
   * and the like) and never reads their `value`. A hint: parsed values are always right.
   * - An engine may leave `value` undefined only on a StoredRecord whose value text is exactly
   *   `JSON.stringify(value)` as stored (the text a database like PostgreSQL gives for `jsonb`
   *   is normalized, so it would not qualify); binary values still come out as base64.
   * - Callers set it only where the records reach no other code; a wrapper engine passes it on
   *   only if it does not read `value` itself.
   */
  serializeOnly?: boolean;
}

/** A keyed write: who sent it, the key, and a digest of the request (type and params). */
export interface IdempotencyClaim {
  owner: string;
  key: string;
  fingerprint: string;
}

export interface EngineMetrics {
  /** Transactions committed since the engine opened. */
  commits: number;
  /**
   * Flushes to disk that made commits durable, since the engine opened; with durability full,
   * every commit is covered by one before it is acknowledged, and one may cover several.
   */
  syncs: number;
  /** The size of the stored data. */
  databaseBytes: number;
}

/** A value ready to store: JSON text, or bytes with their content type. */
export type StoredValue =
  | { contentType: 'application/json'; json: string }
  | { contentType: string; bytes: Uint8Array };

/** One key's set: what `set` and each entry of `setEach` write. */
export interface SetEntry {
  key: string;
  value: StoredValue;
  ttlMs?: number;
  ifVersion?: number;
  ifAbsent?: boolean;
}

export interface SetInput extends SetEntry {
  instanceId: string;
  namespace: string;
  autoCreate?: boolean;
}

export interface SetEachInput {
  instanceId: string;
  namespace: string;
  /**
   * In order. A refused entry failed the caller's checks before any write (a TTL out of range, a
   * value too large): its result is that failure, kept with the others, so that a repeat gets the
   * same results even if the checks would now decide otherwise.
   */
  entries: (SetEntry | { refused: ProtocolError })[];
  autoCreate?: boolean;
}

export interface SetManyInput {
  instanceId: string;
  namespace: string;
  entries: { key: string; value: StoredValue; ttlMs?: number }[];
  autoCreate?: boolean;
}

export interface IncrInput {
  instanceId: string;
  namespace: string;
  key: string;
  by: number;
  ttlMs?: number;
  autoCreate?: boolean;
}

export type AtomicOpInput =
  | { op: 'set'; namespace: string; key: string; value: StoredValue; ttlMs?: number }
  | { op: 'delete'; namespace: string; key: string }
  | { op: 'incr'; namespace: string; key: string; by: number; ttlMs?: number };

export interface AtomicInput {
  instanceId: string;
  /** `version: null` means the key must not exist. */
  checks: { namespace: string; key: string; version: number | null }[];
  ops: AtomicOpInput[];
  autoCreate?: boolean;
}

export interface ListInput {
  instanceId: string;
  namespace: string;
  /** Literal prefix, compared as UTF-8 bytes (no wildcards, case-sensitive). */
  prefix?: string;
  /** Resume strictly after this key (strictly before it when `reverse`). */
  after?: string;
  limit: number;
  reverse?: boolean;
  /** Byte budget of the page (see {@link StorageEngine.list}). @default unlimited */
  maxBytes?: number;
}

/** A query field: a record column, or a path into a JSON value (empty path = the whole value). */
export type QueryTarget =
  | { kind: 'column'; column: 'key' | 'namespace' | 'createdAt' | 'updatedAt' | 'version' }
  | { kind: 'value'; path: string[] };

export interface QueryCondition {
  target: QueryTarget;
  operator: QueryOperator;
  /** For createdAt/updatedAt, epoch milliseconds; otherwise the JSON operand as sent. */
  operand: unknown;
}

export interface QueryInput {
  instanceId: string;
  namespace?: string;
  where: QueryCondition[];
  orderBy: { target: QueryTarget; direction: 'asc' | 'desc' };
  limit: number;
  offset: number;
  /** Byte budget of the page (see {@link StorageEngine.query}). @default unlimited */
  maxBytes?: number;
}

export interface Stats {
  instances: number;
  namespaces: number;
  records: number;
  expiredPending: number;
  dbBytes: number;
}

/** How much of the change log to keep: a change goes once either bound is passed. */
export interface ChangeRetention {
  /** At most this many newest changes are kept. @default 100000 */
  maxCount: number;
  /** No change older than this is kept, in ms. @default 86400000 (24 h) */
  maxAgeMs: number;
}

/** Options every engine takes. */
export interface EngineOptions {
  /** The clock, in epoch ms; tests replace it to move time. @default Date.now */
  now?: () => number;
}

export type { RecordField };
