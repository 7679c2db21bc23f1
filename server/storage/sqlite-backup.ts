import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type Database from 'better-sqlite3';
import { SCHEMA_VERSION } from './migrations.js';
import { openDatabase, pragma } from './sqlite-native.js';
import { acquireFileLock } from './sqlite-lock.js';

/** What a finished copy holds. */
export interface CopyInfo {
  /** `meta.revision` of the copy: it holds every change up to this revision and none after. */
  revision: number;
  /** The copy's schema version (`user_version`). */
  schemaVersion: number;
}

/** A backup or restore that cannot go ahead, with a sentence for the operator. */
export class BackupError extends Error {
  override readonly name: string = 'BackupError';
}

/** The backup's destination exists and was not to be replaced. */
export class BackupExistsError extends BackupError {
  override readonly name = 'BackupExistsError';
  constructor(readonly path: string) {
    super(`${path} already exists`);
  }
}

/** Options of {@link writeBackup}. */
export interface WriteBackupOptions {
  /**
   * Pages copied per step; the event loop runs between steps. A step holds a read snapshot, and a
   * write to the source by another connection between steps restarts the copy, so a process that
   * does not own the source copies everything in one step (the default).
   * @default all pages in one step
   */
  pagesPerStep?: number;
  /** Replace `out` when it exists. @default false */
  overwrite?: boolean;
  /** Run `PRAGMA integrity_check` on the copy before it takes its name. @default false */
  verify?: boolean;
  /** Stops the copy between two steps; nothing is left behind. */
  signal?: AbortSignal;
}

const ALL_PAGES = 0x7fffffff;
let temporaries = 0;

/**
 * Copies the database open on `source` to the file `out` with SQLite's online backup API, so the
 * copy is one consistent state of the source while others keep writing: a copy made over several
 * steps follows the writes made through `source` itself and restarts when another connection
 * writes. The copy is written under a temporary name in `out`'s directory, switched to a
 * rollback journal (one self-contained file), fsynced, and only then named `out`, so `out` is
 * either absent or complete.
 */
export async function writeBackup(source: Database.Database, out: string, options: WriteBackupOptions = {}): Promise<CopyInfo> {
  const temp = join(dirname(out), `.${basename(out)}.${process.pid}-${++temporaries}.partial`);
  const pagesPerStep = options.pagesPerStep ?? ALL_PAGES;
  const signal = options.signal;
  try {
    signal?.throwIfAborted();
    await source.backup(temp, {
      progress: () => {
        signal?.throwIfAborted();
        return pagesPerStep;
      },
    });
    // better-sqlite3 reports a copy that never started (the source was busy) as finished, and
    // deletes the file of an unfinished copy: opening it must find it.
    const info = finishCopy(temp, out, options.verify ?? false);
    fsyncPath(temp);
    if (options.overwrite === true) {
      renameSync(temp, out);
    } else {
      // link() fails when `out` exists, where rename() would replace it.
      try {
        linkSync(temp, out);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new BackupExistsError(out);
        throw error;
      }
      unlinkSync(temp);
    }
    fsyncPath(dirname(out));
    return info;
  } finally {
    rmSync(temp, { force: true });
    rmSync(`${temp}-journal`, { force: true });
  }
}

/**
 * Makes a fresh copy self-contained (rollback journal instead of WAL, so no `-wal` file goes
 * with it) and reads what it holds; with `verify`, checks its integrity and schema first.
 */
function finishCopy(path: string, name: string, verify: boolean): CopyInfo {
  let db: Database.Database;
  try {
    db = openDatabase(path, { fileMustExist: true });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'SQLITE_CANTOPEN') throw new BackupError(`the copy to ${name} did not complete`);
    throw error;
  }
  try {
    pragma(db, 'journal_mode = DELETE');
    return verify ? checkCopy(db, name) : readCopy(db, name);
  } finally {
    db.close();
  }
}

/** Revision and schema version of a kvhub database; BackupError when it is not one. */
function readCopy(db: Database.Database, path: string): CopyInfo {
  const schemaVersion = pragma(db, 'user_version') as number;
  if (schemaVersion < 1) throw new BackupError(`${path} is not a kvhub database (it has no kvhub schema)`);
  if (schemaVersion > SCHEMA_VERSION) {
    throw new BackupError(`${path} has schema version ${schemaVersion}, but this kvhub understands versions up to ${SCHEMA_VERSION}`);
  }
  const hasMeta = db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'").pluck().get() === 1;
  const revision = hasMeta ? db.prepare("SELECT value FROM meta WHERE name = 'revision'").pluck().get() : undefined;
  if (typeof revision !== 'number') throw new BackupError(`${path} is not a kvhub database (it has no revision counter)`);
  return { revision, schemaVersion };
}

/** `PRAGMA integrity_check`, then {@link readCopy}. */
function checkCopy(db: Database.Database, path: string): CopyInfo {
  const problems = db.prepare('PRAGMA integrity_check(10)').pluck().all() as string[];
  if (problems.length !== 1 || problems[0] !== 'ok') {
    throw new BackupError(`${path} fails SQLite's integrity check: ${problems.join('; ')}`);
  }
  return readCopy(db, path);
}

/**
 * Opens an existing database file to read from it; BackupError when it is missing. Opened
 * read-write but `query_only`: a read-only connection to a WAL database would leave empty
 * `-wal` and `-shm` files behind, which the last read-write connection removes on close.
 */
function openForReading(path: string): Database.Database {
  let db: Database.Database;
  try {
    // A long busy timeout: the only lock a reader waits for in WAL mode is a brief one during recovery.
    db = openDatabase(path, { fileMustExist: true, timeout: 5000 });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'SQLITE_CANTOPEN') throw new BackupError(`there is no database file at ${path}, or it cannot be read`);
    throw error;
  }
  pragma(db, 'query_only = ON');
  return db;
}

/**
 * Backs up the kvhub database file `db` to `out`, whether or not a server is running on it (it
 * takes no lock: the online backup reads a consistent snapshot beside the server's writes), and
 * checks the copy's integrity. BackupError when `out` exists and `overwrite` is not set.
 */
export async function backupFile(db: string, out: string, options: { overwrite?: boolean } = {}): Promise<CopyInfo> {
  const source = openForReading(db);
  try {
    // Reading the source's schema first turns "not a database" into a clear sentence.
    readCopy(source, db);
    return await writeBackup(source, out, { overwrite: options.overwrite ?? false, verify: true });
  } catch (error) {
    throw describeSqliteFailure(error, db);
  } finally {
    source.close();
  }
}

/**
 * Replaces the database file `db` with the backup `backup`, after checking that the backup passes
 * `PRAGMA integrity_check` and has a schema this kvhub understands. Throws DatabaseInUseError when
 * a server holds `db`; holds `db`'s lock throughout, so no server starts on a half-restored file.
 *
 * The backup is copied (with the online backup API, so a backup file that still has a `-wal`
 * is read whole) to a temporary file beside `db`, checked, fsynced, and renamed over `db` once
 * `db`'s `-wal` and `-shm` are gone: those belong to the old contents and SQLite would replay
 * them onto the new ones.
 */
export async function restoreFile(db: string, backup: string): Promise<CopyInfo> {
  const lock = acquireFileLock(db);
  try {
    const source = openForReading(backup);
    const temp = join(dirname(db), `.${basename(db)}.${process.pid}-${++temporaries}.restoring`);
    try {
      // Checked on the source first, so that a file that is no kvhub backup is named as such.
      readCopy(source, backup);
      let info: CopyInfo;
      try {
        info = await writeBackup(source, temp, { verify: true });
      } catch (error) {
        // The checks ran on the copy; the operator knows the file by the backup's name.
        if (error instanceof BackupError) throw new BackupError(error.message.replaceAll(temp, backup));
        throw error;
      }
      for (const suffix of ['-wal', '-shm', '-journal']) rmSync(`${db}${suffix}`, { force: true });
      renameSync(temp, db);
      fsyncPath(dirname(db));
      return info;
    } catch (error) {
      throw describeSqliteFailure(error, backup);
    } finally {
      source.close();
      rmSync(temp, { force: true });
    }
  } finally {
    lock.release();
  }
}

/** SQLite's "not a database" and "corrupt" as sentences naming the file. */
function describeSqliteFailure(error: unknown, path: string): unknown {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string' || error instanceof BackupError) return error;
  if (code.startsWith('SQLITE_NOTADB')) return new BackupError(`${path} is not a SQLite database`);
  if (code.startsWith('SQLITE_CORRUPT')) return new BackupError(`${path} is corrupt (${code})`);
  return error;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
