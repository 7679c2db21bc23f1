import type { Database } from 'better-sqlite3';

import { pragma } from './sqlite-native.js';
/** One forward step of the schema. `version` is the `user_version` the database has after it. */
export interface Migration {
  version: number;
  description: string;
  up(db: Database): void;
}

/** The schema history, oldest first. Never edit a released migration: append a new one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'meta (revision counter), instances, records',
    up(db) {
      db.exec(`
        CREATE TABLE meta (
          name TEXT PRIMARY KEY,
          value INTEGER NOT NULL
        ) STRICT;
        INSERT INTO meta (name, value) VALUES ('revision', 0);

        CREATE TABLE instances (
          id TEXT PRIMARY KEY,
          name TEXT NOT NULL,
          description TEXT,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX instances_by_creation ON instances (created_at, id);

        -- value holds JSON text for application/json records, data the bytes of binary ones.
        -- BINARY collation on key is UTF-8 byte order: the list order of the protocol.
        CREATE TABLE records (
          instance_id TEXT NOT NULL,
          namespace TEXT NOT NULL,
          key TEXT NOT NULL,
          id TEXT NOT NULL,
          value TEXT,
          data BLOB,
          content_type TEXT NOT NULL,
          version INTEGER NOT NULL,
          revision INTEGER NOT NULL,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          expires_at INTEGER,
          PRIMARY KEY (instance_id, namespace, key),
          CHECK ((value IS NULL) <> (data IS NULL))
        ) STRICT, WITHOUT ROWID;
        -- Only keys with a TTL are indexed: the sweeper and expiredPending read it.
        CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
      `);
    },
  },
  {
    version: 2,
    description: 'change log (the watch feed) and the oldest revision it holds',
    up(db) {
      db.exec(`
        -- One row per revision, written in the transaction of the change. record is the JSON of
        -- the new record for 'set', else NULL. created_at (ms) serves age-based retention.
        CREATE TABLE changes (
          revision INTEGER PRIMARY KEY,
          kind TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          namespace TEXT,
          key TEXT,
          record TEXT,
          created_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX changes_by_instance ON changes (instance_id, revision);
        -- A database from before the log has no history: replays start after its last revision.
        INSERT INTO meta (name, value) SELECT 'oldest_change', value + 1 FROM meta WHERE name = 'revision';
      `);
    },
  },
  {
    version: 3,
    description: 'kept replies of keyed writes (exactly-once)',
    up(db) {
      db.exec(`
        -- The outcome of each write sent with an idempotencyKey, per owner (a token's digest, or
        -- '' without auth), written in the transaction of the write. fingerprint identifies the
        -- request (type and params) so that a reused key with other params is refused.
        CREATE TABLE kept_replies (
          owner TEXT NOT NULL,
          key TEXT NOT NULL,
          fingerprint TEXT NOT NULL,
          outcome TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          PRIMARY KEY (owner, key)
        ) STRICT;
        CREATE INDEX kept_replies_by_age ON kept_replies (created_at);
      `);
    },
  },
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Thrown when a database was written by a newer kvhub than this one. */
export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
  constructor(
    readonly path: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      `the database file ${path} has schema version ${found}, but this kvhub understands versions up to ${supported}: upgrade kvhub to open it`,
    );
  }
}

/**
 * Brings the schema to SCHEMA_VERSION. Each migration runs in its own transaction together with
 * its `user_version` bump, so a crash leaves the database at a version it really has.
 */
export function migrate(db: Database, path: string): void {
  const current = pragma(db, 'user_version') as number;
  if (current > SCHEMA_VERSION) throw new SchemaTooNewError(path, current, SCHEMA_VERSION);
  for (const migration of MIGRATIONS.slice(current)) {
    db.transaction(() => {
      migration.up(db);
      // PRAGMA takes no parameters; the version is a constant of this file, never input.
      pragma(db, `user_version = ${Math.trunc(migration.version)}`);
    }).immediate();
  }
}

// The array index and the version must agree, or `slice(current)` would skip or repeat steps.
MIGRATIONS.forEach((migration, i) => {
  if (migration.version !== i + 1) throw new Error(`migration ${i} must have version ${i + 1}`);
});
