import Database from 'better-sqlite3';
import { nanoid } from 'nanoid';
import {
  ErrorCode,
  invalidParam,
  JSON_CONTENT_TYPE,
  ProtocolError,
  type Instance,
  type KvRecord,
  type SetEachResult,
  type WatchEvent,
} from '../../protocol/index.js';
import { decodeValue } from '../values.js';
import { isoTime } from '../iso-time.js';
import { recordJson, setFailure, SetSuccess, StoredRecord } from './record-json.js';
import type {
  AtomicInput,
  ChangeRetention,
  EngineMetrics,
  EngineOptions,
  IdempotencyClaim,
  IncrInput,
  ListInput,
  QueryInput,
  ReadOptions,
  SetEachInput,
  SetEntry,
  SetInput,
  SetManyInput,
  Stats,
  StorageEngine,
  StoredValue,
  WriteOptions,
} from './engine.js';
import { prefixUpperBound } from './key-range.js';
import { join, raw, sql, type Bindable, type Sql } from './sql.js';
import { isInMemoryPath, openConnection, type Connection, type ConnectionOptions } from './sqlite-connection.js';
import { toEngineError } from './sqlite-errors.js';
import { acquireFileLock, type FileLock } from './sqlite-lock.js';
import { writeBackup } from './sqlite-backup.js';
import { GroupCommit, type TransactionState } from './sqlite-group-commit.js';
import type { WalSync } from './sqlite-wal-sync.js';
import { isKeptFailure, keptOutcome, parseOutcome, type Outcome } from './kept-replies.js';
import { buildQuery } from './sqlite-query.js';
import { RowCache } from './row-cache.js';

export { DatabaseInUseError } from './sqlite-lock.js';
export { SchemaTooNewError } from './migrations.js';

/** Options of the SQLite engine: its clock and how its connection is set up (durability, size cap). */
export interface SqliteEngineOptions extends EngineOptions, ConnectionOptions {}

/**
 * Opens (creating if needed) the SQLite database at `path`, or an in-memory one for `':memory:'`,
 * migrates its schema forward and claims it for this process.
 *
 * Throws DatabaseInUseError when another kvhub server holds the file, SchemaTooNewError when a
 * newer kvhub wrote it, and ProtocolError STORAGE_ERROR when SQLite cannot open it.
 */
export function openSqliteEngine(path: string, options: SqliteEngineOptions = {}): StorageEngine {
  const lock = isInMemoryPath(path) ? undefined : acquireFileLockOrThrow(path);
  let connection: Connection | undefined;
  try {
    connection = openConnection(path, options);
    return new SqliteEngine(connection, lock, options.now ?? Date.now);
  } catch (error) {
    connection?.db.close();
    lock?.release();
    throw toEngineError(error, path);
  }
}

function acquireFileLockOrThrow(path: string): FileLock {
  try {
    return acquireFileLock(path);
  } catch (error) {
    throw toEngineError(error, `${path}.lock`);
  }
}

// ---------------------------------------------------------------- rows

interface InstanceRow {
  id: string;
  name: string;
  description: string | null;
  created_at: number;
  updated_at: number;
}

interface RecordRow {
  instance_id: string;
  namespace: string;
  key: string;
  id: string;
  /** JSON text; null for binary records. */
  value: string | null;
  /** Bytes of a binary record; null for JSON records. */
  data: Uint8Array | null;
  content_type: string;
  version: number;
  revision: number;
  created_at: number;
  updated_at: number;
  expires_at: number | null;
  /**
   * The record's JSON text once built (see StoredRecord): a row is one version of a key and never
   * changes, so the text built for a write's change log or one read's reply serves every later
   * read of it from the row cache.
   */
  json: string | undefined;
}

interface ChangeRow {
  revision: number;
  kind: WatchEvent['kind'];
  instance_id: string;
  namespace: string | null;
  key: string | null;
  /** JSON of the new record for 'set'. */
  record: string | null;
  created_at: number;
}

interface KeptReplyRow {
  fingerprint: string;
  outcome: string;
}

interface KeyRow {
  instance_id: string;
  namespace: string;
  key: string;
}

/** What one revision changed. A later issue writes these to a change log (the watch feed). */
type Change =
  | { kind: 'set' | 'delete' | 'expire'; instanceId: string; namespace: string; key: string }
  | { kind: 'namespaceDeleted'; instanceId: string; namespace: string; key: null }
  | { kind: 'instanceDeleted'; instanceId: string; namespace: null; key: null };

/** The key a write goes to. */
interface KeyTarget {
  instanceId: string;
  namespace: string;
  key: string;
}

/** One key's write of a setMany: its live row before (null when absent) and what it becomes. */
interface KeyWrite {
  key: string;
  existing: RecordRow | null;
  next: Contents;
}

/** The value columns and expiry of a record about to be written. */
interface Contents {
  value: string | null;
  data: Uint8Array | null;
  content_type: string;
  expires_at: number | null;
}

/** A live record is one without an expiry or whose expiry is still ahead. */
const LIVE = '(expires_at IS NULL OR expires_at > ?)';

/**
 * The columns of a record row, in the order {@link toRow} reads them. Rows are read as arrays
 * (better-sqlite3's `raw` mode) and written with positional parameters: building an object per
 * row by name, or binding by name, costs more on the hot path than the statement itself.
 */
const RECORD_COLUMNS = 'instance_id, namespace, key, id, value, data, content_type, version, revision, created_at, updated_at, expires_at';
type RecordColumns = [string, string, string, string, string | null, Uint8Array | null, string, number, number, number, number, number | null];
const RECORD_SELECTION = raw(RECORD_COLUMNS);

/** The columns of a change log row, in the order of {@link ChangeColumns}. */
const CHANGE_COLUMNS = 'revision, kind, instance_id, namespace, key, record, created_at';
type ChangeColumns = [number, ChangeRow['kind'], string, string | null, string | null, string | null, number];

/**
 * Rows of a setMany written by one statement. A statement of many rows costs less per row than
 * a statement per row (one call into better-sqlite3, one step and reset of SQLite): in-process,
 * 100 rows and their change log went from about 10 to 8.7 µs per row.
 */
const ROWS_PER_STATEMENT = 32;

/** `(?, ?, ?), (?, ?, ?)`: the parameters of `rows` rows of the comma-separated `columns`. */
function valuesList(rows: number, columns: string): string {
  const row = `(${columns.split(',').map(() => '?').join(', ')})`;
  return Array<string>(rows).fill(row).join(', ');
}

/** Writes `rows` record rows, each a whole record: a new key, or a new version replacing the row. */
function putRowsSql(rows: number): string {
  return `INSERT INTO records (${RECORD_COLUMNS}) VALUES ${valuesList(rows, RECORD_COLUMNS)}
    ON CONFLICT (instance_id, namespace, key) DO UPDATE SET
      id = excluded.id, value = excluded.value, data = excluded.data, content_type = excluded.content_type,
      version = excluded.version, revision = excluded.revision, created_at = excluded.created_at,
      updated_at = excluded.updated_at, expires_at = excluded.expires_at`;
}

/** Appends `rows` rows to the change log. */
function logChangesSql(rows: number): string {
  return `INSERT INTO changes (${CHANGE_COLUMNS}) VALUES ${valuesList(rows, CHANGE_COLUMNS)}`;
}

function prepareStatements(db: Database.Database) {
  return {
    loadRevision: db.prepare<[], number>("SELECT value FROM meta WHERE name = 'revision'").pluck(),
    saveRevision: db.prepare<[number]>("UPDATE meta SET value = ? WHERE name = 'revision'"),
    loadOldestChange: db.prepare<[], number>("SELECT value FROM meta WHERE name = 'oldest_change'").pluck(),
    saveOldestChange: db.prepare<[number]>("UPDATE meta SET value = ? WHERE name = 'oldest_change'"),

    logChange: db.prepare<ChangeColumns>(logChangesSql(1)),
    changesSince: db.prepare<[string, number, number, number], ChangeRow>(
      'SELECT * FROM changes WHERE instance_id = ? AND revision > ? AND revision <= ? ORDER BY revision LIMIT ?',
    ),
    oldestChanges: db.prepare<[number], Pick<ChangeRow, 'revision' | 'created_at'>>(
      'SELECT revision, created_at FROM changes ORDER BY revision LIMIT ?',
    ),
    dropChangesThrough: db.prepare<[number]>('DELETE FROM changes WHERE revision <= ?'),
    anyKeptReplyBefore: db.prepare<[number], number>('SELECT 1 FROM kept_replies WHERE created_at < ? LIMIT 1').pluck(),

    getKeptReply: db.prepare<[string, string], KeptReplyRow>('SELECT fingerprint, outcome FROM kept_replies WHERE owner = ? AND key = ?'),
    keepReply: db.prepare<[string, string, string, string, number]>(
      'INSERT INTO kept_replies (owner, key, fingerprint, outcome, created_at) VALUES (?, ?, ?, ?, ?)',
    ),
    pruneKeptReplies: db.prepare<[number, number]>(
      'DELETE FROM kept_replies WHERE rowid IN (SELECT rowid FROM kept_replies WHERE created_at < ? ORDER BY created_at LIMIT ?)',
    ),

    getInstance: db.prepare<[string], InstanceRow>('SELECT * FROM instances WHERE id = ?'),
    listInstances: db.prepare<[], InstanceRow>('SELECT * FROM instances ORDER BY created_at, id'),
    insertInstance: db.prepare<[InstanceRow]>(
      'INSERT INTO instances (id, name, description, created_at, updated_at) VALUES (@id, @name, @description, @created_at, @updated_at)',
    ),
    updateInstance: db.prepare<[InstanceRow]>(
      'UPDATE instances SET name = @name, description = @description, updated_at = @updated_at WHERE id = @id',
    ),
    deleteInstance: db.prepare<[string]>('DELETE FROM instances WHERE id = ?'),
    deleteInstanceRecords: db.prepare<[string]>('DELETE FROM records WHERE instance_id = ?'),

    getRow: db
      .prepare<[string, string, string], RecordColumns>(`SELECT ${RECORD_COLUMNS} FROM records WHERE instance_id = ? AND namespace = ? AND key = ?`)
      .raw(),
    putRow: db.prepare<RecordColumns>(putRowsSql(1)),
    deleteRow: db.prepare<[string, string, string]>('DELETE FROM records WHERE instance_id = ? AND namespace = ? AND key = ?'),
    deleteNamespace: db.prepare<[string, string]>('DELETE FROM records WHERE instance_id = ? AND namespace = ?'),

    countInNamespace: db
      .prepare<[string, string, number], number>(`SELECT count(*) FROM records WHERE instance_id = ? AND namespace = ? AND ${LIVE}`)
      .pluck(),
    countInInstance: db.prepare<[string, number], number>(`SELECT count(*) FROM records WHERE instance_id = ? AND ${LIVE}`).pluck(),
    namespaces: db
      .prepare<[string, number], string>(`SELECT DISTINCT namespace FROM records WHERE instance_id = ? AND ${LIVE} ORDER BY namespace`)
      .pluck(),
    expiredKeys: db.prepare<[number, number], KeyRow>(
      'SELECT instance_id, namespace, key FROM records WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
    ),
    expiredInNamespace: db.prepare<[string, string, number], KeyRow>(
      'SELECT instance_id, namespace, key FROM records WHERE instance_id = ? AND namespace = ? AND expires_at <= ?',
    ),
    expiredInInstance: db.prepare<[string, number], KeyRow>(
      'SELECT instance_id, namespace, key FROM records WHERE instance_id = ? AND expires_at <= ?',
    ),

    databaseBytes: db.prepare<[], number>('SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()').pluck(),
    stats: db.prepare<[{ now: number }], Stats>(
      `SELECT
         (SELECT count(*) FROM instances) AS instances,
         (SELECT count(*) FROM (SELECT DISTINCT instance_id, namespace FROM records
            WHERE expires_at IS NULL OR expires_at > @now)) AS namespaces,
         (SELECT count(*) FROM records WHERE expires_at IS NULL OR expires_at > @now) AS records,
         (SELECT count(*) FROM records WHERE expires_at <= @now) AS expiredPending,
         (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()) AS dbBytes`,
    ),
    instanceStats: db.prepare<[{ now: number; instanceId: string }], Stats>(
      `SELECT
         1 AS instances,
         (SELECT count(DISTINCT namespace) FROM records
            WHERE instance_id = @instanceId AND (expires_at IS NULL OR expires_at > @now)) AS namespaces,
         (SELECT count(*) FROM records
            WHERE instance_id = @instanceId AND (expires_at IS NULL OR expires_at > @now)) AS records,
         (SELECT count(*) FROM records WHERE instance_id = @instanceId AND expires_at <= @now) AS expiredPending,
         (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()) AS dbBytes`,
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** Pages (4 KiB each) a backup copies between two turns of the event loop: about a millisecond's work. */
const BACKUP_PAGES_PER_STEP = 256;

/**
 * Rows kept in the row cache, and the bytes of the text they hold (see cachedRowBytes). With each
 * entry's own cost (the row object, its key and id strings: a few hundred bytes), the cache takes
 * about 80 MiB at most.
 */
const ROW_CACHE_ENTRIES = 100_000;
const ROW_CACHE_BYTES = 48 * 1024 * 1024;

/** Query statements are built per shape; this many shapes stay prepared. */
const STATEMENT_CACHE_SIZE = 200;

// ---------------------------------------------------------------- engine

/** What a savepoint or a failed commit returns to: see {@link TransactionState}. */
interface Mark {
  revision: number;
  oldestChange: number;
  /** How many of `uncommitted` there were. */
  changes: number;
}

/**
 * The SQLite engine. better-sqlite3 is synchronous: each write runs in its own savepoint of the
 * open group-commit transaction with nothing awaited inside, and a read's statements run back to
 * back, so no other call can interleave with either (see {@link GroupCommit}).
 */
class SqliteEngine implements StorageEngine {
  /** Every call does its SQLite work before it returns its promise (one connection, run synchronously). */
  readonly appliesInCallOrder = true;
  private readonly stmts: Statements;
  private readonly cache = new Map<string, Database.Statement<Bindable[], unknown>>();
  private readonly group: GroupCommit<Mark>;
  /** Online backups running: while any does, writes commit one by one (see GroupCommit.deferCommits). */
  private backups = 0;
  /** The highest revision taken; `meta.revision` is brought up to it before each commit. */
  private revision: number;
  /** The oldest revision the change log holds; mirrors `meta.oldest_change`. */
  private oldestChange: number;
  /** Changes of the transaction under way, announced to listeners once it commits. */
  private uncommitted: WatchEvent[] = [];
  private readonly listeners = new Set<(changes: readonly WatchEvent[]) => void>();
  /**
   * Instances known to exist in the state the connection sees (uncommitted writes included):
   * only ever holds ids that exist, because a deletion removes its id and any rollback clears it.
   */
  private readonly knownInstances = new Set<string>();
  /** Multi-row statements of setMany, by their count of rows (see commitSets). */
  private readonly putRows: Database.Statement<unknown[]>[] = [];
  private readonly logChanges: Database.Statement<unknown[]>[] = [];
  /** Recently read and written rows (see RowCache): a hot key's read needs no statement. */
  private readonly recentRows = new RowCache<RecordRow>(ROW_CACHE_ENTRIES, ROW_CACHE_BYTES, cachedRowBytes);
  /** Keys a read found expired; their expiry is recorded (and announced) right after the read. */
  private readonly foundExpired = new Map<string, KeyRow>();
  private closed = false;

  private readonly db: Database.Database;
  private readonly walSync: WalSync | undefined;

  constructor(
    connection: Connection,
    private readonly lock: FileLock | undefined,
    private readonly now: () => number,
  ) {
    this.db = connection.db;
    this.walSync = connection.walSync;
    this.stmts = prepareStatements(this.db);
    this.group = new GroupCommit(this.db, this.transactionState(), this.walSync?.sync);
    this.revision = this.stmts.loadRevision.get() ?? 0;
    this.oldestChange = this.stmts.loadOldestChange.get() ?? 1;
  }

  // ------------------------------------------------------------ instances

  async createInstance(input: { id?: string; name: string; description?: string }, options?: WriteOptions): Promise<Instance> {
    return this.write(options, () => {
      const id = input.id ?? nanoid();
      if (this.stmts.getInstance.get(id) !== undefined) {
        throw new ProtocolError(ErrorCode.INSTANCE_EXISTS, `instance '${id}' already exists`);
      }
      const now = this.now();
      const row: InstanceRow = { id, name: input.name, description: input.description ?? null, created_at: now, updated_at: now };
      this.stmts.insertInstance.run(row);
      return toInstance(row);
    });
  }

  async getInstance(instanceId: string): Promise<Instance> {
    return this.read(() => toInstance(this.instanceRow(instanceId)));
  }

  async listInstances(): Promise<Instance[]> {
    return this.read(() => this.stmts.listInstances.all().map(toInstance));
  }

  async updateInstance(instanceId: string, patch: { name?: string; description?: string }, options?: WriteOptions): Promise<Instance> {
    return this.write(options, () => {
      const current = this.instanceRow(instanceId);
      const row: InstanceRow = {
        ...current,
        name: patch.name ?? current.name,
        description: patch.description ?? current.description,
        updated_at: this.now(),
      };
      this.stmts.updateInstance.run(row);
      return toInstance(row);
    });
  }

  async deleteInstance(instanceId: string, options?: WriteOptions): Promise<void> {
    await this.write(options, () => {
      this.assertInstance(instanceId);
      // Like any write that finds keys expired, record their expiries before its own revision.
      for (const row of this.stmts.expiredInInstance.all(instanceId, this.now())) this.expireKey(row);
      this.commit({ kind: 'instanceDeleted', instanceId, namespace: null, key: null }, () => {
        this.stmts.deleteInstanceRecords.run(instanceId);
        this.stmts.deleteInstance.run(instanceId);
        this.recentRows.clear();
        this.knownInstances.delete(instanceId);
        return null;
      });
    });
  }

  // ------------------------------------------------------------ single keys

  async get(instanceId: string, namespace: string, key: string, options?: ReadOptions): Promise<KvRecord | null> {
    return this.read(() => {
      this.assertInstance(instanceId);
      const row = this.liveRow(instanceId, namespace, key, this.now());
      return row === null ? null : toRecord(row, options?.serializeOnly);
    });
  }

  async getMany(
    instanceId: string,
    namespace: string,
    keys: readonly string[],
    maxBytes = Infinity,
    options?: ReadOptions,
  ): Promise<(KvRecord | null)[]> {
    const serializeOnly = options?.serializeOnly;
    return this.read(() => {
      this.assertInstance(instanceId);
      const now = this.now();
      let bytes = 0;
      return keys.map((key) => {
        const row = this.liveRow(instanceId, namespace, key, now);
        if (row === null) return null;
        bytes += rowBytes(row);
        if (bytes > maxBytes) {
          throw new ProtocolError(ErrorCode.LIMIT_EXCEEDED, 'the values of these keys would exceed the reply size limit', { budgetBytes: maxBytes });
        }
        return toRecord(row, serializeOnly);
      });
    });
  }

  async set(input: SetInput, options?: WriteOptions): Promise<KvRecord> {
    return this.write(options, () => this.setKey(input.instanceId, input.namespace, input.autoCreate, input));
  }

  async setEach(input: SetEachInput, options?: WriteOptions): Promise<SetEachResult[]> {
    return this.write(options, () => {
      const { instanceId, namespace, autoCreate } = input;
      return input.entries.map((entry) => {
        if ('refused' in entry) return setFailure(entry.refused);
        // A condition fails after the entry has looked (and may have recorded an expiry), so a
        // conditional entry runs in a savepoint of its own. An unconditional one can fail on its
        // own only before it writes (its instance missing), and a savepoint per entry costs:
        // SQLite journals again, for each, every page the entries before it touched.
        const conditional = entry.ifVersion !== undefined || entry.ifAbsent !== undefined;
        const revision = this.revision;
        try {
          const set = () => this.setKey(instanceId, namespace, autoCreate, entry);
          return new SetSuccess(conditional ? this.group.savepoint(set) : set());
        } catch (error) {
          // As for a keyed write: the entry's own failure is its result; anything else fails the
          // whole, as does a failure after an unconditional entry took a revision (none is known
          // to exist). A kept failure added after requireInstance would need the savepoint: an
          // instance it created takes no revision, and would stay.
          if (!isKeptFailure(error) || !this.db.inTransaction || this.revision !== revision) throw error;
          return setFailure(error);
        }
      });
    });
  }

  /** A set's work, inside the open write. */
  private setKey(instanceId: string, namespace: string, autoCreate: boolean | undefined, input: SetEntry): KvRecord {
    const { key } = input;
    const now = this.now();
    this.requireInstance(instanceId, autoCreate, now);
    const existing = this.rowForWrite(instanceId, namespace, key, now);
    if (input.ifAbsent === true && existing !== null) {
      throw conflict(`key '${key}' already exists in namespace '${namespace}'`, existing);
    }
    if (input.ifVersion !== undefined && existing?.version !== input.ifVersion) {
      throw conflict(versionMismatch(key, namespace, existing, input.ifVersion), existing);
    }
    return this.writeKey({ instanceId, namespace, key }, existing, contents(input.value, input.ttlMs, now), now);
  }

  async setMany(input: SetManyInput, options?: WriteOptions): Promise<KvRecord[]> {
    return this.write(options, () => {
      const { instanceId, namespace } = input;
      const now = this.now();
      this.requireInstance(instanceId, input.autoCreate, now);
      // Expiries found on the way are recorded first, so the writes take consecutive revisions.
      const writes = input.entries.map((entry): KeyWrite => ({
        key: entry.key,
        existing: this.rowForWrite(instanceId, namespace, entry.key, now),
        next: contents(entry.value, entry.ttlMs, now),
      }));
      return this.commitSets(instanceId, namespace, writes, now);
    });
  }

  async delete(instanceId: string, namespace: string, key: string, ifVersion?: number, options?: WriteOptions): Promise<boolean> {
    return this.write(options, () => {
      const now = this.now();
      this.assertInstance(instanceId);
      const existing = this.rowForWrite(instanceId, namespace, key, now);
      if (ifVersion !== undefined && existing?.version !== ifVersion) {
        throw conflict(versionMismatch(key, namespace, existing, ifVersion), existing);
      }
      return existing !== null && this.deleteKey(existing);
    });
  }

  async deleteNamespace(instanceId: string, namespace: string, options?: WriteOptions): Promise<number> {
    return this.write(options, () => {
      const now = this.now();
      this.assertInstance(instanceId);
      // Like any write that finds keys expired, record their expiries before its own revision.
      for (const row of this.stmts.expiredInNamespace.all(instanceId, namespace, now)) this.expireKey(row);
      const live = this.stmts.countInNamespace.get(instanceId, namespace, now) ?? 0;
      if (live === 0) return 0;
      this.commit({ kind: 'namespaceDeleted', instanceId, namespace, key: null }, () => {
        this.stmts.deleteNamespace.run(instanceId, namespace);
        this.recentRows.clear();
        return null;
      });
      return live;
    });
  }

  async incr(input: IncrInput, options?: WriteOptions): Promise<KvRecord> {
    return this.write(options, () => {
      const now = this.now();
      this.requireInstance(input.instanceId, input.autoCreate, now);
      const existing = this.rowForWrite(input.instanceId, input.namespace, input.key, now);
      return this.incrKey(input, existing, now);
    });
  }

  async expire(instanceId: string, namespace: string, key: string, ttlMs: number | null, options?: WriteOptions): Promise<boolean> {
    return this.write(options, () => {
      const now = this.now();
      this.assertInstance(instanceId);
      const existing = this.rowForWrite(instanceId, namespace, key, now);
      if (existing === null) return false;
      this.writeKey({ instanceId, namespace, key }, existing, { ...existing, expires_at: ttlMs === null ? null : now + ttlMs }, now);
      return true;
    });
  }

  async ttl(instanceId: string, namespace: string, key: string): Promise<{ exists: boolean; ttlMs: number | null }> {
    return this.read(() => {
      this.assertInstance(instanceId);
      const now = this.now();
      const row = this.liveRow(instanceId, namespace, key, now);
      if (row === null) return { exists: false, ttlMs: null };
      return { exists: true, ttlMs: row.expires_at === null ? null : row.expires_at - now };
    });
  }

  async atomic(input: AtomicInput, options?: WriteOptions): Promise<{ revision: number; records: (KvRecord | null)[] }> {
    return this.write(options, () => {
      const { instanceId } = input;
      const now = this.now();
      this.requireInstance(instanceId, input.autoCreate, now);
      for (const check of input.checks) {
        // Like the ops' keys, a checked key found expired has its expiry recorded first.
        const current = this.rowForWrite(instanceId, check.namespace, check.key, now);
        if (check.version === null ? current !== null : current?.version !== check.version) {
          const expected = check.version === null ? 'to be absent' : `at version ${check.version}`;
          throw conflict(`check failed: key '${check.key}' in namespace '${check.namespace}' was expected ${expected}`, current);
        }
      }
      // As in setMany: expiries of the keys written are recorded before the ops' revisions.
      const existing = input.ops.map((op) => this.rowForWrite(instanceId, op.namespace, op.key, now));
      const records = input.ops.map((op, i): KvRecord | null => {
        const row = existing[i]!;
        const target = { instanceId, namespace: op.namespace, key: op.key };
        switch (op.op) {
          case 'set':
            return this.writeKey(target, row, contents(op.value, op.ttlMs, now), now);
          case 'incr':
            // `by` first: on Node 20 a literal that starts with a spread and adds fields is slow.
            return this.incrKey({ by: op.by, ...target, ...(op.ttlMs !== undefined ? { ttlMs: op.ttlMs } : {}) }, row, now);
          case 'delete':
            if (row !== null) this.deleteKey(row);
            return null;
        }
      });
      return { revision: this.revision, records };
    });
  }

  // ------------------------------------------------------------ reading many

  async list(input: ListInput): Promise<{ records: KvRecord[]; more: boolean }> {
    return this.read(() => {
      this.assertInstance(input.instanceId);
      const terms: Sql[] = [
        sql`instance_id = ${input.instanceId}`,
        sql`namespace = ${input.namespace}`,
        sql`(expires_at IS NULL OR expires_at > ${this.now()})`,
      ];
      if (input.prefix !== undefined && input.prefix !== '') {
        terms.push(sql`key >= ${input.prefix}`);
        const upper = prefixUpperBound(input.prefix);
        if (upper !== null) terms.push(sql`key < ${upper}`);
      }
      if (input.after !== undefined) terms.push(input.reverse === true ? sql`key < ${input.after}` : sql`key > ${input.after}`);
      const order = input.reverse === true ? sql`key DESC` : sql`key ASC`;
      const where = join(terms, ' AND ');
      const rows = this.rows((limit, offset) => sql`SELECT ${RECORD_SELECTION} FROM records WHERE ${where} ORDER BY ${order} LIMIT ${limit} OFFSET ${offset}`, input.limit + 1);
      const page = takeWithin(rows, input.limit, input.maxBytes);
      return { records: page.rows.map((row) => pageRecord(row)), more: page.more };
    });
  }

  async query(input: QueryInput): Promise<{ records: KvRecord[]; total: number }> {
    return this.read(() => {
      this.assertInstance(input.instanceId);
      const { where, orderBy } = buildQuery(input, this.now());
      const count = sql`SELECT count(*) AS total FROM records WHERE ${where}`;
      const { total } = this.cached(count.text).get(...count.params) as { total: number };
      const page = (limit: number, offset: number) =>
        sql`SELECT ${RECORD_SELECTION} FROM records WHERE ${where} ORDER BY ${orderBy} LIMIT ${limit} OFFSET ${input.offset + offset}`;
      const rows = takeWithin(this.rows(page, input.limit), input.limit, input.maxBytes).rows;
      return { records: rows.map((row) => pageRecord(row)), total };
    });
  }

  async getNamespaces(instanceId: string): Promise<string[]> {
    return this.read(() => {
      this.assertInstance(instanceId);
      return this.stmts.namespaces.all(instanceId, this.now());
    });
  }

  async count(instanceId: string, namespace?: string): Promise<number> {
    return this.read(() => {
      this.assertInstance(instanceId);
      const now = this.now();
      const count =
        namespace === undefined
          ? this.stmts.countInInstance.get(instanceId, now)
          : this.stmts.countInNamespace.get(instanceId, namespace, now);
      return count ?? 0;
    });
  }

  async stats(instanceId?: string): Promise<Stats> {
    return this.read(() => {
      const now = this.now();
      if (instanceId === undefined) return { ...this.stmts.stats.get({ now })! };
      this.assertInstance(instanceId);
      return { ...this.stmts.instanceStats.get({ now, instanceId })! };
    });
  }

  // ------------------------------------------------------------ housekeeping

  async currentRevision(): Promise<number> {
    return this.read(() => this.revision);
  }

  onCommit(listener: (changes: readonly WatchEvent[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async changesSince(instanceId: string, after: number, upTo: number, limit: number): Promise<WatchEvent[]> {
    return this.read(() => this.stmts.changesSince.all(instanceId, after, upTo, limit).map(toWatchEvent));
  }

  async oldestRevision(): Promise<number> {
    return this.read(() => this.oldestChange);
  }

  async pruneChanges(retention: ChangeRetention, limit: number, keepFrom = Infinity): Promise<number> {
    return this.housekeep(
      () => this.changesToDrop(retention, limit, keepFrom),
      (drop) =>
        this.forget(() => {
          this.stmts.dropChangesThrough.run(drop.last);
          this.oldestChange = drop.last + 1;
          this.stmts.saveOldestChange.run(this.oldestChange);
          return drop.count;
        }),
    );
  }

  /** The leading run of the change log past its retention: only such a run goes, so the log always holds every revision from oldestChange on. */
  private changesToDrop(retention: ChangeRetention, limit: number, keepFrom: number): { last: number; count: number } | undefined {
    const countCutoff = this.revision - retention.maxCount;
    const ageCutoff = this.now() - retention.maxAgeMs;
    let last: number | undefined;
    let count = 0;
    for (const row of this.stmts.oldestChanges.all(limit)) {
      if (row.revision >= keepFrom || (row.revision > countCutoff && row.created_at >= ageCutoff)) break;
      last = row.revision;
      count++;
    }
    return last === undefined ? undefined : { last, count };
  }

  async sweepExpired(limit: number): Promise<number> {
    return this.housekeep(
      () => {
        const expired = this.stmts.expiredKeys.all(this.now(), limit);
        return expired.length === 0 ? undefined : expired;
      },
      (expired) =>
        this.write(undefined, () => {
          for (const row of expired) this.expireKey(row);
          return expired.length;
        }),
    );
  }

  async pruneKeptReplies(maxAgeMs: number, limit: number): Promise<number> {
    return this.housekeep(
      () => this.stmts.anyKeptReplyBefore.get(this.now() - maxAgeMs),
      () => this.forget(() => this.stmts.pruneKeptReplies.run(this.now() - maxAgeMs, limit).changes),
    );
  }

  /**
   * Runs a housekeeping step as a write only when its look (a read) finds work, which it hands
   * on: an idle server used to commit on every step, and in `full` fsync, to change nothing. The
   * look and the write's start run in one synchronous call on the only connection that writes,
   * so what the look found still holds.
   */
  private housekeep<W>(look: () => W | undefined, write: (found: W) => Promise<number>): Promise<number> {
    this.assertOpen();
    let found: W | undefined;
    try {
      found = look();
    } catch (error) {
      return Promise.reject(toEngineError(error));
    }
    return found === undefined ? Promise.resolve(0) : write(found);
  }

  async metrics(): Promise<EngineMetrics> {
    this.assertOpen();
    return { commits: this.group.commits, syncs: this.group.syncs, databaseBytes: this.stmts.databaseBytes.get() ?? 0 };
  }

  /**
   * Copies the database with SQLite's online backup API in small steps, so requests are served
   * between them; the writes this connection makes meanwhile are carried into the copy, which
   * therefore holds the state at the moment the last step ran.
   */
  async backup(path: string, options: { signal?: AbortSignal } = {}): Promise<{ revision: number }> {
    this.assertOpen();
    // The copy's steps run between turns of the event loop, where a group's transaction would be
    // open: commit it, and commit each write at once until the copy is done.
    this.group.flush();
    this.backups++;
    this.group.deferCommits = false;
    try {
      const { revision } = await writeBackup(this.db, path, { pagesPerStep: BACKUP_PAGES_PER_STEP, signal: options.signal });
      return { revision };
    } catch (error) {
      throw toEngineError(error, path);
    } finally {
      this.backups--;
      this.group.deferCommits = this.backups === 0;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.group.flush();
      await this.group.settled();
      this.db.close();
    } finally {
      this.walSync?.close();
      this.lock?.release();
    }
  }

  // ------------------------------------------------------------ internals

  /**
   * Where revisions are taken (with commitSets, its form for many sets at once): every change of
   * the database goes through here, inside the caller's transaction. `apply` performs the change
   * stamped with `revision`.
   */
  private commit<T extends KvRecord | null>(change: Change, apply: (revision: number) => T): T {
    const revision = this.revision + 1;
    const result = apply(revision);
    this.revision = revision;
    // The change log row is written in the same transaction as the change itself.
    this.stmts.logChange.run(...this.logged(change, result, revision));
    return result;
  }

  /**
   * commit() for the sets of many keys of one namespace (setMany): each takes the next revision,
   * and their rows and change log rows go in with multi-row statements, ROWS_PER_STATEMENT at a
   * time. A failed statement leaves revisions taken; the savepoint's rollback restores them.
   */
  private commitSets(instanceId: string, namespace: string, writes: readonly KeyWrite[], now: number): KvRecord[] {
    const records: KvRecord[] = [];
    for (let start = 0; start < writes.length; start += ROWS_PER_STATEMENT) {
      const chunk = writes.slice(start, start + ROWS_PER_STATEMENT);
      const rows: RecordRow[] = [];
      const rowColumns: unknown[] = [];
      const changeColumns: unknown[] = [];
      for (const write of chunk) {
        const revision = ++this.revision;
        const change = { kind: 'set', instanceId, namespace, key: write.key } as const;
        const row = nextRow(change, write.existing, write.next, revision, now);
        const record = toRecord(row);
        rows.push(row);
        rowColumns.push(...toColumns(row));
        changeColumns.push(...this.logged(change, record, revision));
        records.push(record);
      }
      this.multiRow(this.putRows, putRowsSql, chunk.length).run(rowColumns);
      this.multiRow(this.logChanges, logChangesSql, chunk.length).run(changeColumns);
      for (const row of rows) this.recentRows.set(row.instance_id, row.namespace, row.key, row);
    }
    return records;
  }

  /** The statement writing `rows` rows, prepared once per count and kept in `prepared`. */
  private multiRow(prepared: Database.Statement<unknown[]>[], text: (rows: number) => string, rows: number): Database.Statement<unknown[]> {
    return (prepared[rows] ??= this.db.prepare<unknown[]>(text(rows)));
  }

  /** The change log row of a change, which is announced to listeners once its transaction commits. */
  private logged(change: Change, record: KvRecord | null, revision: number): ChangeColumns {
    // Field by field: on Node 20, a spread followed by new fields ({ ...change, revision }) costs about 3 µs.
    this.uncommitted.push({ kind: change.kind, instanceId: change.instanceId, namespace: change.namespace, key: change.key, record, revision } as WatchEvent);
    return [revision, change.kind, change.instanceId, change.namespace, change.key, record === null ? null : recordJson(record), this.now()];
  }

  /** Writes `contents` to a key: a new record (version 1) when `existing` is null, else the next version. */
  private writeKey(target: KeyTarget, existing: RecordRow | null, next: Contents, now: number): KvRecord {
    return this.commit({ kind: 'set', ...target }, (revision) => {
      const row = nextRow(target, existing, next, revision, now);
      this.stmts.putRow.run(...toColumns(row));
      this.recentRows.set(row.instance_id, row.namespace, row.key, row);
      return toRecord(row);
    });
  }

  private incrKey(input: Omit<IncrInput, 'autoCreate'>, existing: RecordRow | null, now: number): KvRecord {
    const target = { instanceId: input.instanceId, namespace: input.namespace, key: input.key };
    if (existing === null) {
      const expiresAt = input.ttlMs === undefined ? null : now + input.ttlMs;
      return this.writeKey(target, null, jsonContents(input.by, expiresAt), now);
    }
    const current = existing.value === null ? undefined : (JSON.parse(existing.value) as unknown);
    if (typeof current !== 'number') {
      throw new ProtocolError(
        ErrorCode.TYPE_MISMATCH,
        `cannot increment key '${input.key}' in namespace '${input.namespace}': its value is not a number`,
      );
    }
    const sum = current + input.by;
    if (!Number.isFinite(sum)) {
      throw invalidParam(['by'], `incrementing key '${input.key}' by ${input.by} leaves the range of finite numbers`);
    }
    // The expiry is kept: incr's ttlMs only sets the window of a new key.
    return this.writeKey(target, existing, jsonContents(sum, existing.expires_at), now);
  }

  private deleteKey(row: RecordRow): true {
    this.commit({ kind: 'delete', instanceId: row.instance_id, namespace: row.namespace, key: row.key }, () => {
      this.deleteRow(row);
      return null;
    });
    return true;
  }

  private expireKey(row: KeyRow): void {
    this.commit({ kind: 'expire', instanceId: row.instance_id, namespace: row.namespace, key: row.key }, () => {
      this.deleteRow(row);
      return null;
    });
  }

  /**
   * The stored row when live; null when absent or expired. An expired row is noted, and its
   * expiry recorded once the current read or write is done (see settleFoundExpired).
   */
  private liveRow(instanceId: string, namespace: string, key: string, now: number): RecordRow | null {
    const row = this.storedRow(instanceId, namespace, key);
    if (row === undefined) return null;
    if (!isExpired(row, now)) return row;
    this.foundExpired.set(JSON.stringify([instanceId, namespace, key]), row);
    return null;
  }

  /**
   * Records the expiry of keys that a read found expired, each with its own revision and
   * `expire` event, so watchers hear of it at once rather than at the next sweep. A key already
   * swept or rewritten in the meantime is left alone, so each expiry is recorded once.
   */
  private settleFoundExpired(): void {
    if (this.foundExpired.size === 0) return;
    const found = [...this.foundExpired.values()];
    this.foundExpired.clear();
    this.group
      .write(() => {
        const now = this.now();
        for (const row of found) this.rowForWrite(row.instance_id, row.namespace, row.key, now);
      })
      .catch(() => {
        // A read must not fail because recording an expiry could not be written (a full or
        // read-only disk): the key is absent either way, and the sweeper records it later.
      });
  }

  /** The stored row of a key, live or expired: from the row cache, or read (and then cached). */
  private storedRow(instanceId: string, namespace: string, key: string): RecordRow | undefined {
    const cached = this.recentRows.get(instanceId, namespace, key);
    if (cached !== undefined) return cached;
    const columns = this.stmts.getRow.get(instanceId, namespace, key);
    if (columns === undefined) return undefined;
    const row = toRow(columns);
    this.recentRows.set(instanceId, namespace, key, row);
    return row;
  }

  private deleteRow(row: KeyRow): void {
    this.stmts.deleteRow.run(row.instance_id, row.namespace, row.key);
    this.recentRows.delete(row.instance_id, row.namespace, row.key);
  }

  /** For writes: like liveRow, but an expired row is removed first, recording its expiry. */
  private rowForWrite(instanceId: string, namespace: string, key: string, now: number): RecordRow | null {
    const row = this.storedRow(instanceId, namespace, key);
    if (row === undefined) return null;
    if (!isExpired(row, now)) return row;
    this.expireKey(row);
    return null;
  }

  /**
   * Throws INSTANCE_NOT_FOUND unless the instance exists. Most requests name an instance that
   * exists, so one found is remembered and the next check needs no statement.
   */
  private assertInstance(instanceId: string): void {
    if (this.knownInstances.has(instanceId)) return;
    this.instanceRow(instanceId);
    this.knownInstances.add(instanceId);
  }

  private instanceRow(instanceId: string): InstanceRow {
    const row = this.stmts.getInstance.get(instanceId);
    if (row === undefined) throw new ProtocolError(ErrorCode.INSTANCE_NOT_FOUND, `instance '${instanceId}' not found`);
    return row;
  }

  /** For writes that may create the instance: with `autoCreate`, a missing one gets id = name = instanceId. */
  private requireInstance(instanceId: string, autoCreate: boolean | undefined, now: number): void {
    if (autoCreate !== true) {
      this.assertInstance(instanceId);
    } else if (!this.knownInstances.has(instanceId)) {
      if (this.stmts.getInstance.get(instanceId) === undefined) {
        this.stmts.insertInstance.run({ id: instanceId, name: instanceId, description: null, created_at: now, updated_at: now });
      }
      this.knownInstances.add(instanceId);
    }
  }

  /**
   * Up to `count` record rows of a page query (one selecting {@link RECORD_COLUMNS}), read in
   * steps that grow from 16 rows, so that a page that stops early at its byte budget reads little
   * past it. Each step is a plain `all()`: better-sqlite3's `iterate()` makes a native iterator,
   * and on Node 24.19 and later the garbage collector aborts the process when it frees one (see
   * sqlite-native.ts). The steps run back to back, so they read one state of the database.
   */
  private *rows(page: (limit: number, offset: number) => Sql, count: number): IterableIterator<RecordRow> {
    let offset = 0;
    for (let step = 16; offset < count; step *= 2) {
      const limit = Math.min(step, count - offset);
      const query = page(limit, offset);
      const chunk = this.cached(query.text).raw().all(...query.params) as RecordColumns[];
      for (const columns of chunk) yield toRow(columns);
      if (chunk.length < limit) return;
      offset += limit;
    }
  }

  private cached(text: string): Database.Statement<Bindable[], unknown> {
    let statement = this.cache.get(text);
    if (statement === undefined) {
      statement = this.db.prepare<Bindable[], unknown>(text);
      if (this.cache.size >= STATEMENT_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(text, statement);
    }
    return statement;
  }

  /** Runs a read (see GroupCommit.read); SQLite failures become ProtocolErrors. */
  private read<T>(fn: () => T): Promise<T> {
    this.assertOpen();
    const result = this.group.read(fn);
    this.settleFoundExpired();
    return result.catch(rethrowEngineError);
  }

  /**
   * Runs `fn` in its own savepoint of the group-commit transaction and settles once that commits
   * (see GroupCommit.write). With an idempotency claim, the write runs at most once (see keyed).
   */
  private write<T>(options: WriteOptions | undefined, fn: () => T): Promise<T> {
    this.assertOpen();
    const claim = options?.idempotency;
    const result = claim === undefined ? this.group.write(fn) : this.group.write(() => this.keyed(claim, fn)).then(unwrap);
    this.settleFoundExpired();
    return result.catch(rethrowEngineError);
  }

  /**
   * A write that only forgets history (old change-log rows, old kept replies). Losing it in a
   * crash is harmless (what it dropped comes back and is dropped again), so it is not worth a
   * sync of its own: without this, a backlog of them (after a bulk import, hundreds of batches)
   * made every read that came meanwhile wait for one of their fsyncs.
   */
  private forget<T>(fn: () => T): Promise<T> {
    this.assertOpen();
    return this.group.write(fn, { needsSync: false }).catch(rethrowEngineError);
  }

  /**
   * Runs a keyed write once: a repeat gets the kept outcome and writes nothing. The outcome is
   * returned, not thrown, so that a kept failure (a CONFLICT, say) stays kept: the failed write's
   * own changes roll back in an inner savepoint, the kept row commits with the group.
   *
   * The kept row is looked up before the write runs, not learnt of from a conflict when it is
   * inserted after: a repeat must cost a lookup, never a run of the write again, which could fail
   * on its own (SQLITE_FULL at the size cap ends the whole group's transaction) and would clear
   * the row cache when rolled back.
   */
  private keyed<T>(claim: IdempotencyClaim, fn: () => T): Outcome<T> {
    const kept = this.stmts.getKeptReply.get(claim.owner, claim.key);
    if (kept !== undefined) {
      if (kept.fingerprint !== claim.fingerprint) {
        throw invalidParam(['idempotencyKey'], `the key '${claim.key}' was already used by a write with other params`);
      }
      return parseOutcome<T>(kept.outcome);
    }
    let outcome: Outcome<T>;
    try {
      outcome = { ok: true, value: this.group.savepoint(fn) };
    } catch (error) {
      // STORAGE_ERROR and INTERNAL_ERROR are not kept: a retry may succeed.
      if (!isKeptFailure(error) || !this.db.inTransaction) throw error;
      outcome = { ok: false, error };
    }
    this.stmts.keepReply.run(claim.owner, claim.key, claim.fingerprint, keptOutcome(outcome), this.now());
    return outcome;
  }

  private transactionState(): TransactionState<Mark> {
    return {
      mark: () => ({ revision: this.revision, oldestChange: this.oldestChange, changes: this.uncommitted.length }),
      restore: (mark) => {
        // An instance created by what rolled back may be remembered. Rows change only through
        // commit() and commitSets(), which take revisions: if none was taken, the cached rows are
        // all still true.
        this.knownInstances.clear();
        if (this.revision !== mark.revision) this.recentRows.clear();
        this.revision = mark.revision;
        this.oldestChange = mark.oldestChange;
        this.uncommitted.length = mark.changes;
      },
      beforeCommit: (start) => {
        if (this.revision !== start.revision) this.stmts.saveRevision.run(this.revision);
      },
      afterCommit: () => {
        const changes = this.uncommitted;
        this.uncommitted = [];
        return () => this.announce(changes);
      },
    };
  }

  /** Hands a durable transaction's changes to the listeners. */
  private announce(changes: readonly WatchEvent[]): void {
    if (changes.length === 0) return;
    for (const listener of this.listeners) {
      // A listener's failure must not turn a committed write into a failed one; listeners
      // (the server's watch hub) report their own errors.
      try {
        listener(changes);
      } catch {
        /* see above */
      }
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new ProtocolError(ErrorCode.STORAGE_ERROR, 'the storage engine is closed');
  }
}

// ---------------------------------------------------------------- conversions

function unwrap<T>(outcome: Outcome<T>): T {
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}

function rethrowEngineError(error: unknown): never {
  throw toEngineError(error);
}

/** A lower bound of a row's size in a reply: its key and its value as they travel. */
function rowBytes(row: RecordRow): number {
  return row.key.length + (row.value !== null ? row.value.length : Math.ceil((row.data?.byteLength ?? 0) / 3) * 4);
}

/**
 * The text a cached row holds, roughly: its key and value, and, once a reply or the change log
 * has needed it, its record's JSON (the value again, and about 250 bytes of fields), which is
 * counted from the start: the cache measures a row once, when it is stored.
 */
function cachedRowBytes(row: RecordRow): number {
  return 2 * rowBytes(row) + 256;
}

/**
 * Up to `limit` rows, stopping after the row that takes their bytes past `maxBytes`, so a page of
 * large values is never read whole only to be cut down (the caller trims to the exact reply size).
 * `more` tells whether a row follows, so a page that ends at the last row says so.
 */
function takeWithin(rows: IterableIterator<RecordRow>, limit: number, maxBytes = Infinity): { rows: RecordRow[]; more: boolean } {
  const taken: RecordRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    if (taken.length >= limit || bytes > maxBytes) return { rows: taken, more: true };
    taken.push(row);
    bytes += rowBytes(row);
  }
  return { rows: taken, more: false };
}

function isExpired(row: RecordRow, now: number): boolean {
  return row.expires_at !== null && row.expires_at <= now;
}

function contents(value: StoredValue, ttlMs: number | undefined, now: number): Contents {
  const expiresAt = ttlMs === undefined ? null : now + ttlMs;
  if ('json' in value) return { value: value.json, data: null, content_type: JSON_CONTENT_TYPE, expires_at: expiresAt };
  return { value: null, data: value.bytes, content_type: value.contentType, expires_at: expiresAt };
}

function jsonContents(value: number, expiresAt: number | null): Contents {
  return { value: JSON.stringify(value), data: null, content_type: JSON_CONTENT_TYPE, expires_at: expiresAt };
}

/**
 * The record of a row the row cache may hold. With `serializeOnly` (see ReadOptions), a JSON
 * value is left unparsed: the reply splices its stored text in, and nothing reads it.
 */
function toRecord(row: RecordRow, serializeOnly = false): KvRecord {
  const record = pageRecord(row, serializeOnly);
  // Built now, while no caller can have changed the record's fields: the text is kept on the row
  // and serves every later read of this version of the key (once per version, not per read).
  record.toJsonText();
  return record;
}

/**
 * The record of a row read for a page (list, query), which the row cache does not hold: its text
 * is built only if a reply needs it (not for `keysOnly` pages or a query's `select`).
 */
function pageRecord(row: RecordRow, serializeOnly = false): StoredRecord {
  const value = serializeOnly && row.value !== null ? undefined : decodeValue(row.content_type, row.value, row.data);
  // The reply, the change log and watch events splice the stored JSON text in (see StoredRecord);
  // a binary value travels as its base64 string.
  return new StoredRecord(
    row.id,
    row.instance_id,
    row.namespace,
    row.key,
    value,
    row.value ?? JSON.stringify(value),
    row.content_type,
    row.version,
    row.revision,
    isoTime(row.created_at),
    isoTime(row.updated_at),
    row.expires_at === null ? null : isoTime(row.expires_at),
    row,
  );
}

function toRow(c: RecordColumns): RecordRow {
  return {
    instance_id: c[0],
    namespace: c[1],
    key: c[2],
    id: c[3],
    value: c[4],
    data: c[5],
    content_type: c[6],
    version: c[7],
    revision: c[8],
    created_at: c[9],
    updated_at: c[10],
    expires_at: c[11],
    json: undefined,
  };
}

/** The row of a key's next version, stamped with `revision`. */
function nextRow(target: KeyTarget, existing: RecordRow | null, next: Contents, revision: number, now: number): RecordRow {
  return {
    instance_id: target.instanceId,
    namespace: target.namespace,
    key: target.key,
    id: existing?.id ?? nanoid(),
    value: next.value,
    data: next.data,
    content_type: next.content_type,
    version: (existing?.version ?? 0) + 1,
    revision,
    created_at: existing?.created_at ?? now,
    updated_at: now,
    expires_at: next.expires_at,
    json: undefined,
  };
}

function toColumns(r: RecordRow): RecordColumns {
  return [r.instance_id, r.namespace, r.key, r.id, r.value, r.data, r.content_type, r.version, r.revision, r.created_at, r.updated_at, r.expires_at];
}

function toWatchEvent(row: ChangeRow): WatchEvent {
  return {
    kind: row.kind,
    instanceId: row.instance_id,
    namespace: row.namespace,
    key: row.key,
    record: row.record === null ? null : (JSON.parse(row.record) as KvRecord),
    revision: row.revision,
  };
}

function toInstance(row: InstanceRow): Instance {
  return {
    id: row.id,
    name: row.name,
    ...(row.description !== null ? { description: row.description } : {}),
    createdAt: isoTime(row.created_at),
    updatedAt: isoTime(row.updated_at),
  };
}


function conflict(message: string, current: RecordRow | null): ProtocolError {
  return new ProtocolError(ErrorCode.CONFLICT, message, { current: current === null ? null : toRecord(current) });
}

function versionMismatch(key: string, namespace: string, existing: RecordRow | null, expected: number): string {
  const actual = existing === null ? 'does not exist' : `is at version ${existing.version}`;
  return `key '${key}' in namespace '${namespace}' ${actual}, not version ${expected}`;
}
