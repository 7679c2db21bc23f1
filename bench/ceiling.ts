/**
 * The ceiling of the comparison benchmark: better-sqlite3 in-process, doing the writes kvhub
 * does for each workload with none of the network, protocol, validation or reply work.
 *
 * - The database has kvhub's schema for what a write touches (the `records` table, WITHOUT
 *   ROWID, the `changes` log, the `meta` revision counter), in WAL mode with
 *   `synchronous=FULL`: every commit is fsynced, as kvhub's `--durability full`.
 * - Writes are batched in-process: each transaction holds CEILING_RECORDS_PER_TXN records (200
 *   `set`s or `incr`s, or 2 `setMany`s of 100). Each record is an upsert into `records` plus a
 *   `changes` row holding the record's JSON, as kvhub writes it; the revision counter is written
 *   once per transaction. `incr` reads the counter and writes the sum.
 * - Reads are plain prepared statements outside any transaction: `get` one row by primary key;
 *   `list` a range of 100 rows by key prefix, ordered.
 *
 * The latency of a write is the time of the transaction that holds it (it is durable only at
 * COMMIT); of a read, the time of its statement.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import type { Latencies } from './stats.js';
import {
  COUNTER_NAMESPACE,
  COUNTERS,
  INSTANCE,
  KEYSPACE,
  KV_NAMESPACE,
  PAGE_GROUPS,
  PAGE_NAMESPACE,
  PAGE_SIZE,
  SET_MANY_SIZE,
  VALUE_JSON,
  counterName,
  keyName,
  pageKey,
  pagePrefix,
  randomInt,
  setManyBase,
  type Workload,
} from './workloads.js';

/** Records written per transaction by the ceiling's batched writes. */
export const CEILING_RECORDS_PER_TXN = 200;

interface Row {
  id: string;
  version: number;
  created_at: number;
}

export class Ceiling {
  private readonly db: Database.Database;
  private revision = 0;
  private readonly upsert: Database.Statement;
  private readonly logChange: Database.Statement;
  private readonly saveRevision: Database.Statement;
  private readonly getOne: Database.Statement;
  private readonly listPage: Database.Statement;
  private readonly writeTxn: (work: () => void) => void;

  constructor(dir: string) {
    this.db = new Database(join(dir, 'ceiling.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
      INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
      CREATE TABLE IF NOT EXISTS records (
        instance_id TEXT NOT NULL, namespace TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL,
        value TEXT, data BLOB, content_type TEXT NOT NULL, version INTEGER NOT NULL,
        revision INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (instance_id, namespace, key),
        CHECK ((value IS NULL) <> (data IS NULL))
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
      CREATE TABLE IF NOT EXISTS changes (
        revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, instance_id TEXT NOT NULL,
        namespace TEXT, key TEXT, record TEXT, created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX IF NOT EXISTS changes_by_instance ON changes (instance_id, revision);
    `);
    this.revision = (this.db.prepare("SELECT value FROM meta WHERE name = 'revision'").pluck().get() as number) ?? 0;
    this.upsert = this.db.prepare(`
      INSERT INTO records (instance_id, namespace, key, id, value, data, content_type, version, revision, created_at, updated_at, expires_at)
      VALUES (?, ?, ?, ?, ?, NULL, 'application/json', 1, ?, ?, ?, NULL)
      ON CONFLICT (instance_id, namespace, key) DO UPDATE SET
        value = excluded.value, data = NULL, version = version + 1, revision = excluded.revision,
        updated_at = excluded.updated_at, expires_at = NULL
      RETURNING id, version, created_at`);
    this.logChange = this.db.prepare(
      "INSERT INTO changes (revision, kind, instance_id, namespace, key, record, created_at) VALUES (?, 'set', ?, ?, ?, ?, ?)",
    );
    this.saveRevision = this.db.prepare("UPDATE meta SET value = ? WHERE name = 'revision'");
    this.getOne = this.db.prepare('SELECT * FROM records WHERE instance_id = ? AND namespace = ? AND key = ?');
    this.listPage = this.db.prepare(
      'SELECT * FROM records WHERE instance_id = ? AND namespace = ? AND key >= ? AND key < ? ORDER BY key LIMIT ?',
    );
    this.writeTxn = (work) => {
      this.db.transaction(() => {
        work();
        this.saveRevision.run(this.revision);
      }).immediate();
    };
    this.preload();
  }

  close(): void {
    this.db.close();
  }

  /** The data set every workload expects: the keyspace and the page groups. */
  private preload(): void {
    const have = this.db.prepare('SELECT count(*) FROM records').pluck().get() as number;
    if (have > 0) return;
    this.writeTxn(() => {
      for (let n = 0; n < KEYSPACE; n++) this.write(KV_NAMESPACE, keyName(n), VALUE_JSON);
      for (let g = 0; g < PAGE_GROUPS; g++) for (let i = 0; i < PAGE_SIZE; i++) this.write(PAGE_NAMESPACE, pageKey(g, i), VALUE_JSON);
    });
  }

  /** One record written as kvhub writes it: the upsert, then the change log row with the record's JSON. */
  private write(namespace: string, key: string, valueJson: string): void {
    const revision = ++this.revision;
    const now = Date.now();
    const row = this.upsert.get(INSTANCE, namespace, key, newId(), valueJson, revision, now, now) as Row;
    const iso = new Date(now).toISOString();
    const record =
      `{"id":"${row.id}","instanceId":"${INSTANCE}","namespace":"${namespace}","key":${JSON.stringify(key)},"value":${valueJson},` +
      `"contentType":"application/json","version":${row.version},"revision":${revision},` +
      `"createdAt":"${new Date(row.created_at).toISOString()}","updatedAt":"${iso}","expiresAt":null}`;
    this.logChange.run(revision, INSTANCE, namespace, key, record, now);
  }

  private incr(key: string): void {
    const current = this.getOne.get(INSTANCE, COUNTER_NAMESPACE, key) as { value: string } | undefined;
    const next = (current === undefined ? 0 : (JSON.parse(current.value) as number)) + 1;
    this.write(COUNTER_NAMESPACE, key, String(next));
  }

  /**
   * Runs `workload` back to back for `ms`, recording each op's latency into `latencies` when
   * given; returns the number of ops done.
   */
  runFor(workload: Workload, ms: number, latencies?: Latencies): number {
    const end = performance.now() + ms;
    let ops = 0;
    if (workload === 'get' || workload === 'list') {
      while (performance.now() < end) {
        for (let i = 0; i < 100; i++) {
          const t0 = performance.now();
          if (workload === 'get') this.getOne.get(INSTANCE, KV_NAMESPACE, keyName(randomInt(KEYSPACE)));
          else {
            const prefix = pagePrefix(randomInt(PAGE_GROUPS));
            const rows = this.listPage.all(INSTANCE, PAGE_NAMESPACE, prefix, prefixEnd(prefix), PAGE_SIZE);
            if (rows.length !== PAGE_SIZE) throw new Error(`ceiling list page held ${rows.length} rows`);
          }
          latencies?.add(performance.now() - t0);
          ops++;
        }
      }
      return ops;
    }
    const opsPerTxn = workload === 'setMany' ? Math.max(1, Math.round(CEILING_RECORDS_PER_TXN / SET_MANY_SIZE)) : CEILING_RECORDS_PER_TXN;
    while (performance.now() < end) {
      const t0 = performance.now();
      this.writeTxn(() => {
        for (let op = 0; op < opsPerTxn; op++) {
          if (workload === 'set') this.write(KV_NAMESPACE, keyName(randomInt(KEYSPACE)), VALUE_JSON);
          else if (workload === 'incr') this.incr(counterName(randomInt(COUNTERS)));
          else {
            const base = setManyBase();
            for (let i = 0; i < SET_MANY_SIZE; i++) this.write(KV_NAMESPACE, keyName(base + i), VALUE_JSON);
          }
        }
      });
      latencies?.addMany(performance.now() - t0, opsPerTxn);
      ops += opsPerTxn;
    }
    return ops;
  }
}

/** The smallest string above every string that starts with `prefix` (its last character + 1). */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

function newId(): string {
  return (Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2)).slice(0, 21).padEnd(21, '0');
}
