import { openDatabase, pragma } from './sqlite-native.js';
import { isSqliteError } from './sqlite-errors.js';

/** Thrown when another kvhub server (in this process or another) holds the database file. */
export class DatabaseInUseError extends Error {
  override readonly name = 'DatabaseInUseError';
  constructor(readonly path: string) {
    super(`the database file ${path} is in use by another kvhub server`);
  }
}

/** An exclusive claim on a database file, held until `release()` or the process ends. */
export interface FileLock {
  /** Idempotent. */
  release(): void;
}

/**
 * Claims `${path}.lock` exclusively, or throws DatabaseInUseError at once.
 *
 * The lock file is a SQLite database of its own, opened with `locking_mode=EXCLUSIVE` and
 * written once: SQLite then keeps its exclusive OS lock until the connection closes. SQLite's
 * locks are seen by every connection, in this process (SQLite tracks them per inode) and in
 * others (POSIX advisory locks), and the OS drops them when the holder dies, so a crashed server
 * leaves no stale claim behind. A sidecar file, rather than locking the data file itself, keeps
 * the data file in ordinary WAL mode.
 */
export function acquireFileLock(path: string): FileLock {
  const lockPath = `${path}.lock`;
  // timeout 0: a held lock must fail now with SQLITE_BUSY, not after a busy wait.
  const db = openDatabase(lockPath, { timeout: 0 });
  try {
    pragma(db, 'locking_mode = EXCLUSIVE');
    // The journal of a one-row table need not touch the disk; this also avoids a stray -journal file.
    pragma(db, 'journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
    // A write is what makes EXCLUSIVE locking mode keep the lock after COMMIT.
    db.exec('CREATE TABLE IF NOT EXISTS owner (pid INTEGER NOT NULL, acquired_at INTEGER NOT NULL)');
    db.exec('DELETE FROM owner');
    db.prepare('INSERT INTO owner (pid, acquired_at) VALUES (?, ?)').run(process.pid, Date.now());
    db.exec('COMMIT');
  } catch (error) {
    db.close();
    if (isSqliteError(error) && error.code.startsWith('SQLITE_BUSY')) throw new DatabaseInUseError(path);
    throw error;
  }
  return {
    release() {
      if (db.open) db.close();
    },
  };
}
