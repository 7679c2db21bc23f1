import Database from 'better-sqlite3';
import { ErrorCode, ProtocolError } from '../../protocol/index.js';

/**
 * SQLite result codes that mean the storage itself is in trouble (full, read-only, corrupt,
 * unreachable or busy): the request may succeed later, so callers see STORAGE_ERROR.
 * Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, ...) belong to their base code.
 */
const STORAGE_FAILURES: readonly [base: string, sentence: string][] = [
  ['SQLITE_FULL', 'the database is full (it reached its size limit, or the disk has no room left)'],
  ['SQLITE_READONLY', 'the database is read-only'],
  ['SQLITE_CORRUPT', 'the database file is corrupt'],
  ['SQLITE_NOTADB', 'the database file is not a SQLite database'],
  ['SQLITE_IOERR', 'a disk I/O error occurred in the database'],
  ['SQLITE_CANTOPEN', 'the database file cannot be opened'],
  ['SQLITE_PERM', 'the database file cannot be accessed (permission denied)'],
  ['SQLITE_BUSY', 'the database is busy'],
];

/** True when `code` is `base` or one of its extended codes (`SQLITE_IOERR_WRITE` for `SQLITE_IOERR`). */
function hasBase(code: string, base: string): boolean {
  return code === base || code.startsWith(`${base}_`);
}

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
  const failure = STORAGE_FAILURES.find(([base]) => hasBase(error.code, base));
  const where = path === undefined ? '' : ` (${path})`;
  const mapped =
    failure !== undefined
      ? new ProtocolError(ErrorCode.STORAGE_ERROR, `${failure[1]}${where}: ${error.code}`)
      : new ProtocolError(ErrorCode.INTERNAL_ERROR, `the storage engine failed${where}: ${error.code}`);
  mapped.cause = error;
  return mapped;
}

/** Why a database file could not be opened for serving; see {@link DatabaseOpenError}. */
export type OpenFailureReason = 'corrupt' | 'read-only' | 'unavailable' | 'full' | 'io' | 'busy';

/**
 * The database file cannot be served: it is damaged or not kvhub's, cannot be written, or the
 * disk failed while it was opened. A STORAGE_ERROR like any other storage failure, so embedders
 * that branch on `code` need nothing new; its message is one sentence naming the file, written
 * for the person who starts the server (the CLI prints it as it is).
 */
export class DatabaseOpenError extends ProtocolError {
  constructor(
    readonly path: string,
    readonly reason: OpenFailureReason,
    sqliteCode?: string,
  ) {
    super(ErrorCode.STORAGE_ERROR, openFailureSentence(path, reason, sqliteCode));
  }
}

function openFailureSentence(path: string, reason: OpenFailureReason, sqliteCode: string | undefined): string {
  switch (reason) {
    case 'corrupt':
      return `cannot open ${path}: the file is not a kvhub database or is corrupt`;
    case 'read-only':
      return `cannot open ${path} for writing: the file or its directory is read-only`;
    case 'unavailable':
      return `cannot open ${path}: SQLite cannot open the file, or cannot create its -wal and -shm files beside it; check that the file and its directory exist and are writable`;
    case 'full':
      return `cannot open ${path}: the disk is full`;
    case 'busy':
      return `cannot open ${path}: another program holds a lock on it`;
    case 'io':
      return `cannot open ${path}: a disk I/O error occurred${sqliteCode === undefined ? '' : ` (${sqliteCode})`}`;
  }
}

const OPEN_FAILURES: readonly [base: string, reason: OpenFailureReason][] = [
  ['SQLITE_NOTADB', 'corrupt'],
  ['SQLITE_CORRUPT', 'corrupt'],
  ['SQLITE_READONLY', 'read-only'],
  ['SQLITE_CANTOPEN', 'unavailable'],
  ['SQLITE_PERM', 'unavailable'],
  ['SQLITE_FULL', 'full'],
  ['SQLITE_IOERR', 'io'],
  ['SQLITE_BUSY', 'busy'],
];

/**
 * What opening `path` throws for `error`: a storage failure of SQLite becomes a
 * {@link DatabaseOpenError} (with the SQLite error as `cause`); anything else (a kvhub error such
 * as SchemaTooNewError, a programming error) passes through untouched.
 */
export function toOpenError(error: unknown, path: string): unknown {
  if (!isSqliteError(error)) return error;
  const failure = OPEN_FAILURES.find(([base]) => hasBase(error.code, base));
  if (failure === undefined) return error;
  const mapped = new DatabaseOpenError(path, failure[1], error.code);
  mapped.cause = error;
  return mapped;
}
