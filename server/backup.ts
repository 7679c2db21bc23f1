import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describeError, type Logger } from './logger.js';
import { startPeriodic } from './periodic.js';
import type { StorageEngine } from './storage/engine.js';

/** Options of the server's periodic backups ({@link startPeriodicBackups}). */
export interface PeriodicBackupOptions {
  /** Directory the copies are written to, created if missing. Give each server its own. */
  dir: string;
  /** Time between two backups, in ms; the first runs this long after the start. @default 3600000 (1 h) */
  everyMs?: number;
  /** How many of the newest copies to keep; older `kvhub-<revision>-<time>.db` files in `dir` are deleted. @default 24 */
  keep?: number;
}

/** Defaults of {@link PeriodicBackupOptions}. */
export const DEFAULT_BACKUP = { everyMs: 60 * 60 * 1000, keep: 24 } as const;

/** `kvhub-<revision>-<time>.db`, time as ISO 8601 with `-` for `:`, so names sort by time. */
const BACKUP_FILE = /^kvhub-(\d+)-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z)\.db$/;

/** The file name of a backup holding `revision`, started at `time`. */
export function backupFileName(revision: number, time: Date): string {
  return `kvhub-${revision}-${time.toISOString().replaceAll(':', '-')}.db`;
}

/**
 * Parses a duration: a whole number of milliseconds (`90000`) or a number with a unit, `ms`, `s`,
 * `m`, `h` or `d` (`500ms`, `30s`, `15m`, `1h`, `1.5h`); undefined when it is neither or not positive.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (match === null) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] ?? 'ms']!;
  const ms = Math.round(Number(match[1]) * unit);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

/**
 * Throws RangeError for an interval or count that is not a whole number of at least 1, and
 * TypeError when `engine` is given and cannot make backups: checked before a server opens anything.
 */
export function checkPeriodicBackups(options: PeriodicBackupOptions, engine?: StorageEngine): void {
  const { everyMs = DEFAULT_BACKUP.everyMs, keep = DEFAULT_BACKUP.keep } = options;
  if (!Number.isSafeInteger(everyMs) || everyMs < 1) throw new RangeError(`the backup interval must be a whole number of ms of at least 1, not ${everyMs}`);
  if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`the number of backups to keep must be a whole number of at least 1, not ${keep}`);
  if (engine !== undefined && engine.backup === undefined) throw new TypeError('this storage engine cannot make backups');
}

/**
 * Backs the engine up every `everyMs` into `dir` as `kvhub-<revision>-<time>.db`, then deletes
 * all but the newest `keep` such files. The engine's online backup copies in small steps, so
 * requests are served while it runs; a run still going when the next is due makes that one
 * skip. Each run logs one line: `backup written` (file, revision, ms, pruned) or `backup failed`.
 */
export function startPeriodicBackups(engine: StorageEngine, options: PeriodicBackupOptions, logger: Logger): { stop(): Promise<void> } {
  checkPeriodicBackups(options, engine);
  const everyMs = options.everyMs ?? DEFAULT_BACKUP.everyMs;
  const keep = options.keep ?? DEFAULT_BACKUP.keep;
  const backup = engine.backup!.bind(engine);
  const dir = resolve(options.dir);
  const aborter = new AbortController();

  async function run(): Promise<void> {
    const started = new Date();
    try {
      await mkdir(dir, { recursive: true });
      // The revision is known once the copy is done; until then the file has a name no pruning matches.
      const pending = join(dir, `.kvhub-${process.pid}-${started.getTime()}.pending`);
      const { revision } = await backup(pending, { signal: aborter.signal });
      const file = join(dir, backupFileName(revision, started));
      await rename(pending, file);
      const pruned = await prune(dir, keep);
      logger.info('backup written', { file, revision, ms: Date.now() - started.getTime(), pruned });
    } catch (error) {
      if (aborter.signal.aborted) logger.info('backup cancelled by shutdown', { dir });
      else logger.error('backup failed', { dir, ...describeError(error) });
    }
  }

  const periodic = startPeriodic(everyMs, run);
  return {
    async stop() {
      aborter.abort();
      await periodic.stop();
    },
  };
}

/** Deletes all but the newest `keep` backup files in `dir` (newest by time, then revision); returns their names. */
async function prune(dir: string, keep: number): Promise<string[]> {
  const backups = (await readdir(dir))
    .map((name) => ({ name, match: BACKUP_FILE.exec(name) }))
    .filter((entry): entry is { name: string; match: RegExpExecArray } => entry.match !== null)
    .sort((a, b) => compare(b.match[2]!, a.match[2]!) || Number(b.match[1]) - Number(a.match[1]));
  const doomed = backups.slice(keep).map((entry) => entry.name);
  for (const name of doomed) await rm(join(dir, name), { force: true });
  return doomed;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
