import { closeSync, fdatasync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Sync } from './sqlite-group-commit.js';

/** A {@link Sync} that can let go of its file. */
export interface WalSync {
  sync: Sync;
  close(): void;
}

/**
 * Durability `full` without blocking the event loop: SQLite runs with `synchronous=NORMAL` (a
 * commit appends to the write-ahead log without an fsync) and kvhub fdatasyncs the log itself on
 * the thread pool before it acknowledges the commit. Every guarantee of `synchronous=FULL` holds
 * (NORMAL still syncs around checkpoints; FULL adds exactly this per-commit sync of the log), but
 * the requests that arrive during the sync are served and grouped into the next commit.
 *
 * The log is opened here, once the connection is in WAL mode (SQLite has created it by then), by
 * its absolute path and for writing (some systems refuse to sync a read-only handle), so that
 * opening it cannot fail later, mid-service. It stays the same file while the database is open:
 * SQLite rewinds it after a checkpoint but does not replace it.
 */
export function walSync(databasePath: string): WalSync {
  let fd: number | undefined = openSync(`${resolve(databasePath)}-wal`, 'r+');
  return {
    sync(done) {
      if (fd === undefined) return done(new Error('the write-ahead log is closed'));
      fdatasync(fd, done);
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
