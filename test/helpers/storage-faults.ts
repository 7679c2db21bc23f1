import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { openDatabase, pragma } from '../../server/storage/sqlite-native.js';
import { CLI_PATH, PROJECT_ROOT, watchCli, type CliProcess } from './cli.js';

/**
 * Ways to damage a real database file from outside, as a disk, an operator or another program
 * would. The tests run as root, for whom permission bits stop nothing; the immutable attribute
 * (`chattr +i`) and read-only mounts are what root obeys.
 */


/** Paths made immutable and not yet released: `releaseImmutable()` undoes them all. */
const immutable = new Set<string>();

/** Sets the immutable attribute: nobody, root included, may write, rename or (for a directory) add files. */
export function makeImmutable(...paths: string[]): void {
  for (const path of paths) {
    execFileSync('chattr', ['+i', path]);
    immutable.add(path);
  }
}

/** Clears the attribute from `paths`, or from every path still immutable, so the files can be deleted. */
export function releaseImmutable(...paths: string[]): void {
  for (const path of paths.length > 0 ? paths : [...immutable]) {
    execFileSync('chattr', ['-i', path]);
    immutable.delete(path);
  }
}

/** Page numbers (1-based) of the b-tree pages of `name` (a table or index) of that type. */
export function pagesOf(file: string, name: string, pagetype: 'leaf' | 'internal' | 'overflow'): number[] {
  // A read-only connection on a file no server holds: it writes nothing, not even a -wal. Opened
  // through openDatabase, which keeps its native objects from a collector that would abort on Node 24.19+.
  const db = openDatabase(file, { readonly: true, fileMustExist: true });
  try {
    const pageSize = pragma(db, 'page_size') as number;
    if (pageSize !== PAGE_SIZE) throw new Error(`expected ${PAGE_SIZE}-byte pages, found ${pageSize}`);
    return db.prepare('SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY pageno').pluck().all(name, pagetype) as number[];
  } finally {
    db.close();
  }
}

/** SQLite's default page size, which kvhub keeps. */
export const PAGE_SIZE = 4096;

/** Overwrites whole pages of `file` in place with `fill` (a byte pattern repeated over each page). */
export function overwritePages(file: string, pages: readonly number[], fill: Buffer): void {
  const page = Buffer.alloc(PAGE_SIZE, fill);
  const fd = openSync(file, 'r+');
  try {
    for (const number of pages) writeSync(fd, page, 0, PAGE_SIZE, (number - 1) * PAGE_SIZE);
  } finally {
    closeSync(fd);
  }
}

/** What {@link startCliWithMount} mounts on the directory for the server. */
export type PrivateMount =
  /** The directory itself, read-only (a read-only bind mount): a read-only file system. */
  | { readOnly: true }
  /** An empty tmpfs of this many bytes: a small disk that fills up for real (ENOSPC). */
  | { tmpfsBytes: number };

/**
 * Starts the kvhub CLI, as startCli does, in a private mount namespace in which `dir` is mounted
 * as `mount` says: the server sees that file system, the rest of the machine does not, and the
 * mount disappears with the process.
 */
export function startCliWithMount(dir: string, mount: PrivateMount, args: string[]): CliProcess {
  const setup =
    'readOnly' in mount
      ? 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1"'
      : `mount -t tmpfs -o size=${Math.trunc(mount.tmpfsBytes)} kvhub-test "$1"`;
  const shell = `${setup} && shift && exec "$@"`;
  return watchCli(
    spawn('unshare', ['--mount', 'sh', '-c', shell, 'sh', dir, process.execPath, '--import', 'tsx', CLI_PATH, ...args], {
      cwd: PROJECT_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}
