import Database from 'better-sqlite3';

/**
 * better-sqlite3 12 builds its databases and statements on node::ObjectWrap. Since Node 24.19,
 * that class's destructor aborts the whole process when the garbage collector runs it
 * (`Assertion failed: (env) != nullptr`, nodejs/node#65446); better-sqlite3 13 avoids it but
 * needs Node 22, and kvhub supports Node 20. So on those Node versions every database and
 * statement is kept reachable for the life of the process: a few hundred bytes each, and the
 * server prepares its statements once. Statement iterators are ObjectWraps too, made per call:
 * kvhub never calls `iterate()` (it reads pages with `all()`).
 */
const COLLECTING_ABORTS = (() => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 24 || (major === 24 && minor >= 19);
})();

const kept: object[] = [];

/**
 * Opens a better-sqlite3 database whose JS objects the garbage collector may safely collect:
 * where collecting would abort the process, the database and every statement it prepares are kept.
 */
export function openDatabase(path: string, options?: Database.Options): Database.Database {
  const db = new Database(path, options);
  if (COLLECTING_ABORTS) {
    kept.push(db);
    const prepare = db.prepare.bind(db);
    db.prepare = ((source: string) => {
      const statement = prepare(source);
      kept.push(statement);
      return statement;
    }) as Database.Database['prepare'];
    keepBackups(db);
  }
  return db;
}

/**
 * `db.backup()` makes a native Backup object (another ObjectWrap) through the native database's
 * `backup` method, out of reach of the wrapper above; this shadows that method on the instance so
 * every Backup is kept too. Should a later better-sqlite3 move it, backups are refused rather
 * than risk the abort.
 */
function keepBackups(db: Database.Database): void {
  const holder = db as unknown as Record<symbol, unknown>;
  const native = Object.getOwnPropertySymbols(db)
    .map((symbol) => holder[symbol])
    .find((value): value is { backup: (...args: unknown[]) => object } => {
      return typeof value === 'object' && value !== null && typeof (value as { backup?: unknown }).backup === 'function';
    });
  if (native === undefined) {
    db.backup = () => Promise.reject(new Error(`online backup is unavailable on Node ${process.versions.node} with this better-sqlite3`));
    return;
  }
  const backup = native.backup.bind(native);
  Object.defineProperty(native, 'backup', {
    value: (...args: unknown[]) => {
      const handle = backup(...args);
      kept.push(handle);
      return handle;
    },
  });
}

/**
 * Runs a PRAGMA and returns its first value (undefined for pragmas that return nothing).
 * `db.pragma()` would prepare a statement out of `openDatabase`'s reach; this goes through `prepare`.
 */
export function pragma(db: Database.Database, source: string): unknown {
  const statement = db.prepare(`PRAGMA ${source}`);
  if (!statement.reader) {
    statement.run();
    return undefined;
  }
  return statement.pluck().get();
}
