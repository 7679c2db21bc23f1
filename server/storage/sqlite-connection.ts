import type Database from 'better-sqlite3';
import { migrate } from './migrations.js';
import { openDatabase, pragma } from './sqlite-native.js';

/** How a connection is set up; the engine's options minus what it does not configure. */
export interface ConnectionOptions {
  /** @default 'full' */
  durability?: 'full' | 'normal';
}

/** True for paths that name a private in-memory (or temporary) database, which needs no lock. */
export function isInMemoryPath(path: string): boolean {
  return path === ':memory:' || path === '';
}

/**
 * Opens a connection to `path` with kvhub's settings and its schema migrated forward.
 * It claims nothing: the caller holds the file's lock first (see sqlite-lock.ts).
 *
 * - WAL for files: readers never block the writer and a commit is one append.
 * - `synchronous=FULL` (durability 'full') fsyncs every commit, so an acknowledged write survives
 *   a power cut; NORMAL fsyncs only at checkpoints, which in WAL mode can lose recent commits but
 *   never corrupts the file.
 */
export function openConnection(path: string, options: ConnectionOptions = {}): Database.Database {
  const db = openDatabase(path);
  try {
    if (!isInMemoryPath(path)) pragma(db, 'journal_mode = WAL');
    pragma(db, options.durability === 'normal' ? 'synchronous = NORMAL' : 'synchronous = FULL');
    migrate(db, path);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
