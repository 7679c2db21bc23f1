import Database from 'better-sqlite3';
import { ErrorCode, ProtocolError } from '../../protocol/index.js';

/**
 * SQLite result codes that mean the storage itself is in trouble (full, read-only, corrupt,
 * unreachable or busy): the request may succeed later, so callers see STORAGE_ERROR.
 * Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, ...) share their base prefix.
 */
const STORAGE_FAILURES: readonly [prefix: string, sentence: string][] = [
  ['SQLITE_FULL', 'the database or the disk is full'],
  ['SQLITE_READONLY', 'the database is read-only'],
  ['SQLITE_CORRUPT', 'the database file is corrupt'],
  ['SQLITE_NOTADB', 'the database file is not a SQLite database'],
  ['SQLITE_IOERR', 'a disk I/O error occurred in the database'],
  ['SQLITE_CANTOPEN', 'the database file cannot be opened'],
  ['SQLITE_PERM', 'the database file cannot be accessed (permission denied)'],
  ['SQLITE_BUSY', 'the database is busy'],
];

/** True for errors raised by SQLite through better-sqlite3. */
export function isSqliteError(error: unknown): error is InstanceType<typeof Database.SqliteError> {
  return error instanceof Database.SqliteError;
}

/**
 * What a public engine method throws for `error`: ProtocolErrors pass through, SQLite failures
 * become STORAGE_ERROR (or INTERNAL_ERROR for codes that can only mean a bug, such as a
 * constraint violation), keeping the original as `cause` for the server's log. Anything else is
 * a programming error and is rethrown untouched so its stack reaches the log.
 */
export function toEngineError(error: unknown, path?: string): unknown {
  if (error instanceof ProtocolError || !isSqliteError(error)) return error;
  const failure = STORAGE_FAILURES.find(([prefix]) => error.code.startsWith(prefix));
  const where = path === undefined ? '' : ` (${path})`;
  const mapped =
    failure !== undefined
      ? new ProtocolError(ErrorCode.STORAGE_ERROR, `${failure[1]}${where}: ${error.code}`)
      : new ProtocolError(ErrorCode.INTERNAL_ERROR, `the storage engine failed${where}: ${error.code}`);
  mapped.cause = error;
  return mapped;
}
