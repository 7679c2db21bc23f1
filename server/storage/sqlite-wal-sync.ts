import { closeSync, fdatasync, openSync } from 'node:fs';
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
 * The log is opened on the first sync (SQLite creates it with the first transaction) and stays
 * the same file while the database is open: SQLite rewinds it after a checkpoint but does not
 * replace it.
 */
export function walSync(databasePath: string): WalSync {
  let fd: number | undefined;
  return {
    sync(done) {
      try {
        fd ??= openSync(`${databasePath}-wal`, 'r');
      } catch (error) {
        return done(error as Error);
      }
      fdatasync(fd, done);
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
