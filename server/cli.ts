#!/usr/bin/env node
/**
 * The server side of the `kvhub` command line: `serve` (what `npm start` runs), `backup` and
 * `restore`. The `kvhub` program in cli/ parses the flags (and `--config`, and the environment)
 * and hands them over as text; this module checks them, with the messages and exit codes below,
 * and does the work. Run as a script, as `npm start` does, this file is the whole `kvhub` CLI.
 */
import { mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseTokenFile, TokenConfigError, TokenSet, type TokenGrant } from './auth/index.js';
import { createServer, NonLoopbackHostError, type KvhubServer, type ServerOptions } from './index.js';
import { DEFAULT_CHANGE_RETENTION } from './housekeeping.js';
import { isLogLevel, jsonLogger, LOG_LEVELS } from './logger.js';
import { DatabaseInUseError } from './storage/sqlite.js';
import { DEFAULT_BACKUP, parseDuration } from './backup.js';
import { backupFile, BackupError, BackupExistsError, restoreFile } from './storage/sqlite-backup.js';
import { DatabaseOpenError, toOpenError } from './storage/sqlite-errors.js';
import { ProtocolError } from '../protocol/index.js';

/** The values `serve` takes for flags that are not given (as text, like given ones). */
export const SERVE_DEFAULTS = {
  port: '7420',
  host: '127.0.0.1',
  db: './data/kvhub.db',
  durability: 'full',
  'changelog-max-count': String(DEFAULT_CHANGE_RETENTION.maxCount),
  'changelog-max-age-ms': String(DEFAULT_CHANGE_RETENTION.maxAgeMs),
  'log-level': 'info',
} as const;

/** `serve`'s flags as given on the command line (or by `--config`), not checked yet. */
export interface ServeFlags {
  port: string;
  host: string;
  db: string;
  durability: string;
  'changelog-max-count': string;
  'changelog-max-age-ms': string;
  'token-file'?: string | undefined;
  'allow-origin': string[];
  'allow-host': string[];
  'tls-cert'?: string | undefined;
  'tls-key'?: string | undefined;
  'backup-dir'?: string | undefined;
  'backup-every'?: string | undefined;
  'backup-keep'?: string | undefined;
  'max-connections'?: string | undefined;
  'max-in-flight'?: string | undefined;
  'max-buffered-bytes'?: string | undefined;
  'heartbeat-interval-ms'?: string | undefined;
  'max-db-bytes'?: string | undefined;
  'log-level': string;
  /**
   * One more full-access token (`KVHUB_TOKEN`, `--token` or the config's `token`), with what to
   * call it in messages. An empty value counts as none, as shells commonly clear a variable that way.
   */
  token?: { value: string; name: string } | undefined;
}

/** Where `serve`, `backup` and `restore` write, and what stops `serve`. */
export interface ServeIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** Shuts the server down when it fires (the CLI fires it on SIGINT and SIGTERM); its reason names the signal. */
  readonly signal: AbortSignal;
}

/** A reason not to start, told as one sentence with the exit code: 2 for a bad setting, 1 for a file or system problem. */
class StartProblem extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

/**
 * Runs the server until `io.signal` fires; the ready line goes to stdout, JSON log lines to stderr.
 * Resolves with the exit code: 0 after a clean shutdown, 1 when it cannot start or stop cleanly,
 * 2 for a bad flag.
 */
export async function serve(flags: ServeFlags, io: ServeIo): Promise<number> {
  let settings: ReturnType<typeof readServeFlags>;
  try {
    settings = readServeFlags(flags);
  } catch (error) {
    if (error instanceof StartProblem) return report(io, error.message, error.exitCode);
    throw error;
  }
  const { options, tokenCount } = settings;
  const logger = jsonLogger(io.stderr, settings.logLevel);
  let server: KvhubServer;
  try {
    server = await createServer({ ...options, logger });
  } catch (error) {
    return report(io, startFailure(error, options.host, options.port, options.db), 1);
  }
  const auth = tokenCount > 0 ? `, ${tokenCount} token${tokenCount === 1 ? '' : 's'}` : '';
  io.stdout.write(`kvhub is ready on ${server.url} (database ${options.db}, durability ${options.durability}${auth}).\n`);

  const signal = await new Promise<unknown>((resolveStop) => {
    if (io.signal.aborted) resolveStop(io.signal.reason);
    else io.signal.addEventListener('abort', () => resolveStop(io.signal.reason), { once: true });
  });
  logger.info('shutting down', { signal });
  try {
    await server.close();
    return 0;
  } catch (error) {
    return report(io, `kvhub could not shut down cleanly: ${(error as Error).message}`, 1);
  }
}

type StartOptions = ServerOptions & Required<Pick<ServerOptions, 'port' | 'host' | 'db' | 'durability'>>;

/** The server options `flags` stand for; throws a {@link StartProblem} for the first bad one, in the order of the usage text. */
function readServeFlags(flags: ServeFlags): { options: StartOptions; tokenCount: number; logLevel: (typeof LOG_LEVELS)[number] } {
  const port = Number(flags.port);
  if (!/^\d+$/.test(flags.port) || port > 65535) throw new StartProblem(`--port must be a whole number from 0 to 65535, not '${flags.port}'.`, 2);
  if (flags.durability !== 'full' && flags.durability !== 'normal') {
    throw new StartProblem(`--durability must be 'full' or 'normal', not '${flags.durability}'.`, 2);
  }
  const logLevel = flags['log-level'];
  if (!isLogLevel(logLevel)) throw new StartProblem(`--log-level must be ${LOG_LEVELS.join(', ').replace(/, (\w+)$/, ' or $1')}, not '${logLevel}'.`, 2);
  const numbers = readWholeNumbers(flags, {
    'changelog-max-count': 0,
    'changelog-max-age-ms': 0,
    'max-connections': 1,
    'max-in-flight': 1,
    'max-buffered-bytes': 1,
    'heartbeat-interval-ms': 1,
    'max-db-bytes': 1,
  });
  const connectionLimits = {
    ...(numbers['max-connections'] !== undefined && { maxConnections: numbers['max-connections'] }),
    ...(numbers['max-in-flight'] !== undefined && { maxInFlight: numbers['max-in-flight'] }),
    ...(numbers['max-buffered-bytes'] !== undefined && { maxBufferedBytes: numbers['max-buffered-bytes'] }),
    ...(numbers['heartbeat-interval-ms'] !== undefined && { heartbeatIntervalMs: numbers['heartbeat-interval-ms'] }),
  };
  const backup = readBackupFlags(flags);
  const security = readSecurity(flags);
  const db = flags.db === ':memory:' ? flags.db : resolve(flags.db);
  if (db !== ':memory:') {
    try {
      mkdirSync(dirname(db), { recursive: true });
    } catch (error) {
      throw new StartProblem(`kvhub cannot start: cannot create the directory ${dirname(db)} for the database: ${fileProblem(error)}.`, 1);
    }
  }
  const options: StartOptions = {
    port,
    host: flags.host,
    db,
    durability: flags.durability,
    ...(numbers['max-db-bytes'] !== undefined && { maxDbBytes: numbers['max-db-bytes'] }),
    changeRetention: { maxCount: numbers['changelog-max-count']!, maxAgeMs: numbers['changelog-max-age-ms']! },
    ...connectionLimits,
    ...security,
    ...(backup !== undefined && { backup }),
  };
  return { options, tokenCount: security.tokens.length, logLevel };
}

/** The periodic backup flags; undefined when there are none. */
function readBackupFlags(flags: ServeFlags): ServerOptions['backup'] {
  const dir = flags['backup-dir'];
  if (dir === undefined) {
    if (flags['backup-every'] !== undefined || flags['backup-keep'] !== undefined) {
      throw new StartProblem('--backup-every and --backup-keep need --backup-dir.', 2);
    }
    return undefined;
  }
  const everyText = flags['backup-every'];
  const everyMs = everyText === undefined ? DEFAULT_BACKUP.everyMs : parseDuration(everyText);
  if (everyMs === undefined) {
    throw new StartProblem(`--backup-every must be a duration above 0: ms, or a number with ms, s, m, h or d (such as 30s or 1h), not '${everyText}'.`, 2);
  }
  const keepText = flags['backup-keep'] ?? String(DEFAULT_BACKUP.keep);
  const keep = Number(keepText);
  if (!/^\d+$/.test(keepText) || !Number.isSafeInteger(keep) || keep < 1) {
    throw new StartProblem(`--backup-keep must be a whole number of at least 1, not '${keepText}'.`, 2);
  }
  return { dir: resolve(dir), everyMs, keep };
}

/** What `backup` and `restore` take. */
export interface CopyFlags {
  /** The database file. */
  db: string;
  /** Replace an existing backup file (backup only). */
  force: boolean;
  /** The files named on the command line; exactly one is right. */
  files: string[];
}

/** `backup` and `restore`: one sentence on stdout when done, on stderr when not. Resolves with the exit code. */
export async function copy(command: 'backup' | 'restore', flags: CopyFlags, io: Omit<ServeIo, 'signal'>): Promise<number> {
  const what = command === 'backup' ? '<out>' : '<backup>';
  if (flags.files.length !== 1) return report(io, `${command} takes one file, ${what}.`, 2);
  if (flags.force && command === 'restore') return report(io, '--force is for backup only: restore always replaces the database.', 2);
  if (flags.db === ':memory:') return report(io, `${command} needs a database file, not :memory:.`, 2);
  const db = resolve(flags.db);
  const file = resolve(flags.files[0]!);
  if (file === db) return report(io, `${what} must be another file than the database ${db}.`, 2);
  try {
    if (command === 'backup') {
      mkdirSync(dirname(file), { recursive: true });
      const { revision } = await backupFile(db, file, { overwrite: flags.force });
      io.stdout.write(`Backed up ${db} to ${file} at revision ${revision}; the copy passed the integrity check.\n`);
    } else {
      mkdirSync(dirname(db), { recursive: true });
      const { revision } = await restoreFile(db, file);
      io.stdout.write(`Restored ${db} from ${file}; it holds revision ${revision} now.\n`);
    }
    return 0;
  } catch (error) {
    const verb = command === 'backup' ? 'back up' : 'restore';
    if (error instanceof DatabaseInUseError) return report(io, `kvhub cannot restore: ${error.message}; stop that server first.`, 1);
    if (error instanceof BackupExistsError) return report(io, `kvhub cannot back up: ${error.message}; give --force to replace it.`, 1);
    if (error instanceof BackupError) return report(io, `kvhub cannot ${verb}: ${error.message}.`, 1);
    return report(io, `kvhub cannot ${verb} ${db}: ${(error as Error).message}`, 1);
  }
}

type SecurityOptions = Required<Pick<ServerOptions, 'tokens' | 'allowOrigins' | 'allowHosts'>> & Pick<ServerOptions, 'tls'>;

/** Tokens, origins, hosts and TLS from the flags and the extra token. */
function readSecurity(flags: ServeFlags): SecurityOptions {
  const tokens: TokenGrant[] = [];
  const tokenFile = flags['token-file'];
  try {
    if (tokenFile !== undefined) {
      const grants = parseTokenFile(readSetting(tokenFile, '--token-file'), tokenFile);
      if (grants.length === 0) throw new TokenConfigError(`${tokenFile} holds no token; a server started with --token-file must have at least one`);
      tokens.push(...grants);
    }
    const extra = flags.token;
    if (extra !== undefined && extra.value !== '') {
      if (!/^[A-Za-z0-9\-_.~]+$/.test(extra.value)) {
        throw new TokenConfigError(`${extra.name} uses characters other than A-Z, a-z, 0-9, '-', '_', '.' and '~'`);
      }
      if (tokens.some((grant) => grant.token === extra.value)) throw new TokenConfigError(`${extra.name} repeats a token of the token file`);
      tokens.push({ token: extra.value });
    }
    // Refuses a token listed twice, which would leave its scope ambiguous.
    new TokenSet(tokens);
  } catch (error) {
    if (error instanceof TokenConfigError) throw new StartProblem(`kvhub cannot start: ${error.message}.`, 2);
    throw error;
  }
  const certFile = flags['tls-cert'];
  const keyFile = flags['tls-key'];
  if ((certFile === undefined) !== (keyFile === undefined)) throw new StartProblem('--tls-cert and --tls-key go together: give both, or neither.', 2);
  let tls: SecurityOptions['tls'];
  if (certFile !== undefined && keyFile !== undefined) tls = { cert: readSetting(certFile, '--tls-cert'), key: readSetting(keyFile, '--tls-key') };
  return { tokens, allowOrigins: flags['allow-origin'], allowHosts: flags['allow-host'], ...(tls !== undefined && { tls }) };
}

function readSetting(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it does not exist' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    throw new StartProblem(`kvhub cannot start: cannot read ${flag} ${file}: ${why}.`, 1);
  }
}

/** A file system error in words, for a sentence. */
function fileProblem(error: unknown): string {
  switch ((error as NodeJS.ErrnoException).code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'the file system is read-only';
    case 'ENOTDIR':
      return 'part of the path is not a directory';
    case 'ENOSPC':
      return 'the disk is full';
    default:
      return (error as Error).message;
  }
}

/** The given numeric flags as whole numbers (absent flags stay undefined), each at least its minimum. */
function readWholeNumbers<K extends keyof ServeFlags & string>(flags: ServeFlags, minimums: Record<K, number>): Partial<Record<K, number>> {
  const numbers: Partial<Record<K, number>> = {};
  for (const name of Object.keys(minimums) as K[]) {
    const raw = flags[name];
    if (raw === undefined) continue;
    const value = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < minimums[name]) {
      throw new StartProblem(`--${name} must be a whole number of at least ${minimums[name]}, not '${String(raw)}'.`, 2);
    }
    numbers[name] = value;
  }
  return numbers;
}

function startFailure(error: unknown, host: string, port: number, db: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (error instanceof DatabaseInUseError || error instanceof NonLoopbackHostError) return `kvhub cannot start: ${error.message}.`;
  if (error instanceof DatabaseOpenError) return `kvhub cannot start: ${error.message}.`;
  // In a read-only directory the lock file beside the database fails first, with the SQLite
  // error the database itself would have given: say it about the database.
  if (error instanceof ProtocolError && error.cause !== undefined) {
    const opening = toOpenError(error.cause, db);
    if (opening instanceof DatabaseOpenError) return `kvhub cannot start: ${opening.message}.`;
  }
  if (code === 'EADDRINUSE') return `kvhub cannot start: port ${port} on ${host} is already in use.`;
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') return `kvhub cannot start: ${host} is not an address of this machine.`;
  if (error instanceof TokenConfigError) return `kvhub cannot start: ${error.message}.`;
  if (/PEM|key values mismatch|certificate/i.test((error as Error).message)) {
    return `kvhub cannot start: the TLS certificate or key cannot be used (${(error as Error).message}).`;
  }
  if (code === 'EACCES') return `kvhub cannot start: no permission to listen on ${host}:${port}.`;
  return `kvhub cannot start with database ${db}: ${(error as Error).message}`;
}

function report(io: { readonly stderr: NodeJS.WritableStream }, message: string, exitCode: number): number {
  io.stderr.write(`${message}\n`);
  return exitCode;
}

/** True when this module is the script Node was started with (not imported by the CLI in cli/). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

// `npm start` (and the tests, through `node --import tsx server/cli.ts`) run this file: it is then
// the whole kvhub CLI, serving when the first argument is a flag. Not awaited: cli/ imports this
// module, and a top-level await on cli/ here would wait on itself.
if (isEntryPoint()) {
  import('../cli/main.js').then(
    ({ main }) => main(),
    (error: unknown) => {
      process.stderr.write(`kvhub cannot load its command line: ${(error as Error).message}\n`);
      process.exitCode = 2;
    },
  );
}
