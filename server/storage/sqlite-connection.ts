import type Database from 'better-sqlite3';
import { migrate } from './migrations.js';
import { DatabaseOpenError, toOpenError } from './sqlite-errors.js';
import { openDatabase, pragma } from './sqlite-native.js';
import { walSync, type WalSync } from './sqlite-wal-sync.js';

/** How a connection is set up; the engine's options minus what it does not configure. */
export interface ConnectionOptions {
  /**
   * `full`: every commit is fsynced before the write returns (for a file, by kvhub: see
   * sqlite-wal-sync.ts). `normal`: WAL commits are fsynced at checkpoints only; a power cut may
   * lose the latest writes but never corrupts the database (`PRAGMA synchronous=NORMAL`).
   * @default 'full'
   */
  durability?: 'full' | 'normal';
  /**
   * Cap on the database's size in bytes, rounded down to whole pages (`PRAGMA max_page_count`).
   * A write that needs more room fails with SQLITE_FULL (STORAGE_ERROR) and is rolled back;
   * space that deletes free is reused. A database already larger keeps its size as the cap.
   * The `-wal` file beside the database is not counted. @default undefined (no cap)
   */
  maxDbBytes?: number;
}

/**
 * Log pages after which a commit checkpoints: about 40 MB of log at 4 KB pages. Against SQLite's
 * default of 1,000, durable sets at 50x10 did about 6 % more (bench/README.md); the log file
 * keeps its largest size until the database closes. The checkpoint itself, with its copy and two
 * fsyncs, still runs inside a COMMIT, so the write that triggers it waits longer than before.
 */
export const CHECKPOINT_PAGES = 10_000;

/** True for paths that name a private in-memory (or temporary) database, which needs no lock. */
export function isInMemoryPath(path: string): boolean {
  return path === ':memory:' || path === '';
}

/** An open database and, when kvhub fsyncs its write-ahead log after each commit, what does that. */
export interface Connection {
  db: Database.Database;
  /** Present for a file with durability `full`: the engine syncs the log after each commit. */
  walSync: WalSync | undefined;
}

/**
 * Opens a connection to `path` with kvhub's settings and its schema migrated forward.
 * It claims nothing: the caller holds the file's lock first (see sqlite-lock.ts).
 *
 * - WAL for files: readers never block the writer and a commit is one append.
 * - `synchronous=NORMAL`: in WAL mode it fsyncs only around checkpoints, which can lose recent
 *   commits on a power cut but never corrupts the file. For durability 'full' the connection
 *   comes with a {@link WalSync} that fsyncs the log after every commit, off the event loop, so
 *   an acknowledged write survives a power cut. (An in-memory database has nothing to sync.)
 *
 * A file that cannot be served throws DatabaseOpenError, before anything is written to it: one
 * that is damaged or not kvhub's (checked whole, see {@link checkServable}), or that cannot be
 * written. Refusing at start, with one sentence, beats a server that fails later on some reads
 * or on every write.
 */
export function openConnection(path: string, options: ConnectionOptions = {}): Connection {
  const maxPages = options.maxDbBytes === undefined ? undefined : checkMaxDbBytes(options.maxDbBytes);
  let db: Database.Database | undefined;
  try {
    db = openDatabase(path);
    let wal = false;
    if (!isInMemoryPath(path)) {
      // Checked before anything is written: switching a file to WAL rewrites its header.
      checkServable(db, path);
      // SQLite keeps the old journal mode, without an error, where WAL cannot work.
      wal = pragma(db, 'journal_mode = WAL') === 'wal';
    }
    // Only a write-ahead log can be synced by kvhub; any other journal is synced by SQLite.
    const syncsItself = wal && options.durability !== 'normal';
    pragma(db, options.durability === 'normal' || syncsItself ? 'synchronous = NORMAL' : 'synchronous = FULL');
    // A checkpoint copies the log's pages back into the file and fsyncs both, inside the COMMIT
    // that takes the log past this many pages, on the event loop. At SQLite's 1,000, a steady
    // write load checkpointed every few group commits and copied each hot page again every time.
    pragma(db, `wal_autocheckpoint = ${CHECKPOINT_PAGES}`);
    migrate(db, path);
    // After the migrations, so that a cap can never stop a schema upgrade.
    if (maxPages !== undefined) capPages(db, maxPages(pragma(db, 'page_size') as number));
    return { db, walSync: syncsItself ? walSync(path) : undefined };
  } catch (error) {
    db?.close();
    throw toOpenError(error, path);
  }
}

/** Validates `maxDbBytes` and returns how many pages of a given size it allows (at least one). */
function checkMaxDbBytes(maxDbBytes: number): (pageSize: number) => number {
  if (!Number.isSafeInteger(maxDbBytes) || maxDbBytes < 1) {
    throw new RangeError(`maxDbBytes must be a whole number of at least 1, not ${maxDbBytes}`);
  }
  // max_page_count = 0 would leave the cap unchanged (no cap): a cap below one page is one page.
  return (pageSize) => Math.max(1, Math.floor(maxDbBytes / pageSize));
}

function capPages(db: Database.Database, pages: number): void {
  // SQLite never sets the cap below the current page count: a larger file keeps its size as the cap.
  pragma(db, `max_page_count = ${Math.trunc(pages)}`);
}

/**
 * Throws DatabaseOpenError unless the file is sound, kvhub's (or new) and writable.
 *
 * - `quick_check` reads every page once (about 2 s per GB), so damage anywhere in the file is
 *   found now rather than as a failed read hours later. It skips the slow index-to-table
 *   cross-checks of `integrity_check`, which find damage a page check does not.
 * - A SQLite database with tables but no schema version is some other program's: migrating it
 *   would write kvhub's tables into it.
 * - SQLite quietly opens a file it cannot write read-only (an immutable file, a file owned by
 *   another user) and only fails each write later, so one write is tried and rolled back.
 */
function checkServable(db: Database.Database, path: string): void {
  // The first statement reads the file's header: a file that is not a database fails here.
  const problems = db.prepare('PRAGMA quick_check(1)').pluck().all();
  if (problems.length !== 1 || problems[0] !== 'ok') throw new DatabaseOpenError(path, 'corrupt');

  const version = pragma(db, 'user_version') as number;
  const objects = db.prepare('SELECT count(*) FROM sqlite_schema').pluck().get() as number;
  if (version === 0 && objects > 0) throw new DatabaseOpenError(path, 'corrupt');

  db.exec('BEGIN IMMEDIATE');
  try {
    // Rewrites the version it already has: a write to page 1 that changes nothing, then undone.
    pragma(db, `user_version = ${Math.trunc(version)}`);
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK');
  }
}
