#!/usr/bin/env node
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseTokenFile, TokenConfigError, TokenSet, type TokenGrant } from './auth/index.js';
import { createServer, NonLoopbackHostError, type KvhubServer, type ServerOptions } from './index.js';
import { DEFAULT_CHANGE_RETENTION } from './housekeeping.js';
import { jsonLogger } from './logger.js';
import { DatabaseInUseError } from './storage/sqlite.js';
import { DEFAULT_BACKUP, parseDuration } from './backup.js';
import { backupFile, BackupError, BackupExistsError, restoreFile } from './storage/sqlite-backup.js';
import { DatabaseOpenError, toOpenError } from './storage/sqlite-errors.js';
import { ProtocolError } from '../protocol/index.js';

const USAGE = `Usage: npm start -- [--port <n>] [--host <addr>] [--db <file|:memory:>] [--durability full|normal]
                    [--changelog-max-count <n>] [--changelog-max-age-ms <ms>]
                    [--token-file <file>] [--allow-origin <origin>]... [--allow-host <name>]...
                    [--tls-cert <file> --tls-key <file>]
                    [--backup-dir <dir> [--backup-every <duration>] [--backup-keep <n>]]
                    [--max-connections <n>] [--max-in-flight <n>] [--max-buffered-bytes <n>]
                    [--heartbeat-interval-ms <ms>] [--max-db-bytes <n>]
       npm run kvhub -- backup [--db <file>] [--force] <out>
       npm run kvhub -- restore [--db <file>] <backup>

  --port        port to listen on; 0 picks a free one (default 7420)
  --host        address to bind (default 127.0.0.1); one other machines can reach
                needs a token (--token-file or KVHUB_TOKEN)
  --db          SQLite database file, or :memory: (default ./data/kvhub.db)
  --durability  full: acknowledge writes only once fsynced; normal: faster, may lose
                the last writes on power loss (default full)
  --max-db-bytes  cap on the database file's size; a write past it gets STORAGE_ERROR
                  (default: no cap)
  --changelog-max-count   changes kept for watch replays (default ${DEFAULT_CHANGE_RETENTION.maxCount})
  --changelog-max-age-ms  age after which changes are dropped (default ${DEFAULT_CHANGE_RETENTION.maxAgeMs}, 24 h)
  --max-connections       connections served at once; more get HTTP 503 (default 1024)
  --max-in-flight         requests in flight per connection; more get RATE_LIMITED (default 1024)
  --max-buffered-bytes    unread bytes after which a connection is closed with 1013 (default 64 MiB)
  --heartbeat-interval-ms ping interval; a peer that misses a ping is dropped (default 30000)
  --token-file  tokens, one per line: TOKEN, or TOKEN instances=ID,ID[,...] [readonly];
                with any token (this file or KVHUB_TOKEN), every connection needs one
  --allow-origin  a browser origin allowed besides the same origin (repeatable)
  --allow-host    a Host name a loopback-bound server answers besides loopback names (repeatable)
  --tls-cert, --tls-key  PEM certificate and key: serve wss:// instead of ws://
  --backup-dir    back the database up into this directory while serving, as
                  kvhub-<revision>-<time>.db
  --backup-every  time between backups: ms, or a number with ms, s, m, h or d (default 1h)
  --backup-keep   how many of the newest backups to keep (default ${DEFAULT_BACKUP.keep})

  backup   copy the database to <out> with SQLite's online backup, whether or not a server
           is running on it, and check the copy; --force replaces an existing <out>
  restore  replace the database with <backup> once it passes the checks; refused while a
           server holds the database

Environment: KVHUB_TOKEN adds one full-access token.`;

/** Runs the server from command-line flags; the ready line goes to stdout, logs to stderr. */
async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'backup' || argv[0] === 'restore') return copyCommand(argv[0], argv.slice(1));
  let flags;
  try {
    flags = parseArgs({
      args: argv,
      strict: true,
      options: {
        port: { type: 'string', default: '7420' },
        host: { type: 'string', default: '127.0.0.1' },
        db: { type: 'string', default: './data/kvhub.db' },
        durability: { type: 'string', default: 'full' },
        'changelog-max-count': { type: 'string', default: String(DEFAULT_CHANGE_RETENTION.maxCount) },
        'changelog-max-age-ms': { type: 'string', default: String(DEFAULT_CHANGE_RETENTION.maxAgeMs) },
        'token-file': { type: 'string' },
        'allow-origin': { type: 'string', multiple: true, default: [] },
        'allow-host': { type: 'string', multiple: true, default: [] },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'backup-dir': { type: 'string' },
        'backup-every': { type: 'string' },
        'backup-keep': { type: 'string' },
        'max-connections': { type: 'string' },
        'max-in-flight': { type: 'string' },
        'max-buffered-bytes': { type: 'string' },
        'heartbeat-interval-ms': { type: 'string' },
        'max-db-bytes': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (error) {
    return fail(`${(error as Error).message.replace(/\.+$/, '')}.\n\n${USAGE}`, 2);
  }
  if (flags.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const port = Number(flags.port);
  if (!/^\d+$/.test(flags.port) || port > 65535) return fail(`--port must be a whole number from 0 to 65535, not '${flags.port}'.`, 2);
  if (flags.durability !== 'full' && flags.durability !== 'normal') {
    return fail(`--durability must be 'full' or 'normal', not '${flags.durability}'.`, 2);
  }
  const numbers = readWholeNumbers(flags, {
    'changelog-max-count': 0,
    'changelog-max-age-ms': 0,
    'max-connections': 1,
    'max-in-flight': 1,
    'max-buffered-bytes': 1,
    'heartbeat-interval-ms': 1,
    'max-db-bytes': 1,
  });
  if (numbers === undefined) return;
  const maxCount = numbers['changelog-max-count']!;
  const maxAgeMs = numbers['changelog-max-age-ms']!;
  const connectionLimits = {
    ...(numbers['max-connections'] !== undefined && { maxConnections: numbers['max-connections'] }),
    ...(numbers['max-in-flight'] !== undefined && { maxInFlight: numbers['max-in-flight'] }),
    ...(numbers['max-buffered-bytes'] !== undefined && { maxBufferedBytes: numbers['max-buffered-bytes'] }),
    ...(numbers['heartbeat-interval-ms'] !== undefined && { heartbeatIntervalMs: numbers['heartbeat-interval-ms'] }),
  };
  const backup = readBackupFlags(flags);
  if (backup === 'failed') return;
  const security = readSecurity(flags, process.env['KVHUB_TOKEN']);
  if (typeof security === 'string') return;
  const db = flags.db === ':memory:' ? flags.db : resolve(flags.db);
  if (db !== ':memory:') {
    try {
      mkdirSync(dirname(db), { recursive: true });
    } catch (error) {
      return fail(`kvhub cannot start: cannot create the directory ${dirname(db)} for the database: ${fileProblem(error)}.`, 1);
    }
  }

  let server: KvhubServer;
  try {
    server = await createServer({
      port,
      host: flags.host,
      db,
      durability: flags.durability,
      ...(numbers['max-db-bytes'] !== undefined && { maxDbBytes: numbers['max-db-bytes'] }),
      changeRetention: { maxCount, maxAgeMs },
      ...connectionLimits,
      ...security,
      ...(backup !== undefined && { backup }),
      logger: jsonLogger(process.stderr),
    });
  } catch (error) {
    return fail(startFailure(error, flags.host, port, db), 1);
  }
  const auth = security.tokens.length > 0 ? `, ${security.tokens.length} token${security.tokens.length === 1 ? '' : 's'}` : '';
  process.stdout.write(`kvhub is ready on ${server.url} (database ${db}, durability ${flags.durability}${auth}).\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'shutting down', signal })}\n`);
    server.close().then(
      () => process.exit(0),
      (error: unknown) => fail(`kvhub could not shut down cleanly: ${(error as Error).message}`, 1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/** The periodic backup flags; 'failed' (after reporting, exit 2) when they are wrong. */
function readBackupFlags(flags: { 'backup-dir'?: string; 'backup-every'?: string; 'backup-keep'?: string }): ServerOptions['backup'] | 'failed' {
  const dir = flags['backup-dir'];
  if (dir === undefined) {
    if (flags['backup-every'] !== undefined || flags['backup-keep'] !== undefined) {
      return failed('--backup-every and --backup-keep need --backup-dir.', 2);
    }
    return undefined;
  }
  const everyText = flags['backup-every'];
  const everyMs = everyText === undefined ? DEFAULT_BACKUP.everyMs : parseDuration(everyText);
  if (everyMs === undefined) {
    return failed(`--backup-every must be a duration above 0: ms, or a number with ms, s, m, h or d (such as 30s or 1h), not '${everyText}'.`, 2);
  }
  const keepText = flags['backup-keep'] ?? String(DEFAULT_BACKUP.keep);
  const keep = Number(keepText);
  if (!/^\d+$/.test(keepText) || !Number.isSafeInteger(keep) || keep < 1) return failed(`--backup-keep must be a whole number of at least 1, not '${keepText}'.`, 2);
  return { dir: resolve(dir), everyMs, keep };
}

const COPY_USAGE = `Usage: npm run kvhub -- backup [--db <file>] [--force] <out>
       npm run kvhub -- restore [--db <file>] <backup>

  backup   copies the database to <out> with SQLite's online backup, whether or not a server
           is running on it, and checks the copy's integrity. Refuses an existing <out>
           unless --force is given.
  restore  replaces the database with <backup> after checking its integrity and schema
           version. Refused while a server holds the database: stop it first.
  --db     the database file (default ./data/kvhub.db)

Exit codes: 0 done, 1 failed, 2 bad usage.`;

/** `backup` and `restore`: one sentence on stdout when done, on stderr when not. */
async function copyCommand(command: 'backup' | 'restore', argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        db: { type: 'string', default: './data/kvhub.db' },
        force: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    return fail(`${(error as Error).message.replace(/\.+$/, '')}.\n\n${COPY_USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) return void process.stdout.write(`${COPY_USAGE}\n`);
  const what = command === 'backup' ? '<out>' : '<backup>';
  if (positionals.length !== 1) return fail(`${command} takes one file, ${what}.\n\n${COPY_USAGE}`, 2);
  if (values.force && command === 'restore') return fail(`--force is for backup only: restore always replaces the database.\n\n${COPY_USAGE}`, 2);
  if (values.db === ':memory:') return fail(`${command} needs a database file, not :memory:.`, 2);
  const db = resolve(values.db);
  const file = resolve(positionals[0]!);
  if (file === db) return fail(`${what} must be another file than the database ${db}.`, 2);
  try {
    if (command === 'backup') {
      mkdirSync(dirname(file), { recursive: true });
      const { revision } = await backupFile(db, file, { overwrite: values.force });
      process.stdout.write(`Backed up ${db} to ${file} at revision ${revision}; the copy passed the integrity check.\n`);
    } else {
      mkdirSync(dirname(db), { recursive: true });
      const { revision } = await restoreFile(db, file);
      process.stdout.write(`Restored ${db} from ${file}; it holds revision ${revision} now.\n`);
    }
  } catch (error) {
    const verb = command === 'backup' ? 'back up' : 'restore';
    if (error instanceof DatabaseInUseError) return fail(`kvhub cannot restore: ${error.message}; stop that server first.`, 1);
    if (error instanceof BackupExistsError) {
      return fail(`kvhub cannot back up: ${error.message}; give --force to replace it.`, 1);
    }
    if (error instanceof BackupError) return fail(`kvhub cannot ${verb}: ${error.message}.`, 1);
    return fail(`kvhub cannot ${verb} ${db}: ${(error as Error).message}`, 1);
  }
}

type SecurityOptions = Required<Pick<ServerOptions, 'tokens' | 'allowOrigins' | 'allowHosts'>> & Pick<ServerOptions, 'tls'>;

/**
 * Tokens, origins, hosts and TLS from the flags and KVHUB_TOKEN. On a problem it reports it and
 * returns 'failed': exit 2 for a bad setting, 1 for a file that cannot be read.
 */
function readSecurity(
  flags: { 'token-file'?: string; 'allow-origin': string[]; 'allow-host': string[]; 'tls-cert'?: string; 'tls-key'?: string },
  envToken: string | undefined,
): SecurityOptions | 'failed' {
  const tokens: TokenGrant[] = [];
  const tokenFile = flags['token-file'];
  try {
    if (tokenFile !== undefined) {
      const text = readSetting(tokenFile, '--token-file');
      if (text === undefined) return 'failed';
      const grants = parseTokenFile(text, tokenFile);
      if (grants.length === 0) throw new TokenConfigError(`${tokenFile} holds no token; a server started with --token-file must have at least one`);
      tokens.push(...grants);
    }
    // An empty KVHUB_TOKEN is read as unset, as shells commonly clear a variable that way.
    if (envToken !== undefined && envToken !== '') {
      if (!/^[A-Za-z0-9\-_.~]+$/.test(envToken)) {
        throw new TokenConfigError("KVHUB_TOKEN uses characters other than A-Z, a-z, 0-9, '-', '_', '.' and '~'");
      }
      if (tokens.some((grant) => grant.token === envToken)) throw new TokenConfigError('KVHUB_TOKEN repeats a token of the token file');
      tokens.push({ token: envToken });
    }
    // Refuses a token listed twice, which would leave its scope ambiguous.
    new TokenSet(tokens);
  } catch (error) {
    if (error instanceof TokenConfigError) return failed(`kvhub cannot start: ${error.message}.`, 2);
    throw error;
  }
  const certFile = flags['tls-cert'];
  const keyFile = flags['tls-key'];
  if ((certFile === undefined) !== (keyFile === undefined)) return failed('--tls-cert and --tls-key go together: give both, or neither.', 2);
  let tls: SecurityOptions['tls'];
  if (certFile !== undefined && keyFile !== undefined) {
    const cert = readSetting(certFile, '--tls-cert');
    const key = cert === undefined ? undefined : readSetting(keyFile, '--tls-key');
    if (cert === undefined || key === undefined) return 'failed';
    tls = { cert, key };
  }
  return { tokens, allowOrigins: flags['allow-origin'], allowHosts: flags['allow-host'], ...(tls !== undefined && { tls }) };
}

function readSetting(file: string, flag: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it does not exist' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    fail(`kvhub cannot start: cannot read ${flag} ${file}: ${why}.`, 1);
    return undefined;
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

function failed(message: string, exitCode: number): 'failed' {
  fail(message, exitCode);
  return 'failed';
}

/**
 * The given numeric flags as whole numbers (absent flags stay undefined), each at least its
 * minimum; undefined after reporting the first bad one.
 */
function readWholeNumbers<K extends string>(
  flags: Readonly<Record<string, unknown>>,
  minimums: Record<K, number>,
): Partial<Record<K, number>> | undefined {
  const numbers: Partial<Record<K, number>> = {};
  for (const name of Object.keys(minimums) as K[]) {
    const raw = flags[name];
    if (raw === undefined) continue;
    const value = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < minimums[name]) {
      fail(`--${name} must be a whole number of at least ${minimums[name]}, not '${String(raw)}'.`, 2);
      return undefined;
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

function fail(message: string, exitCode: number): void {
  process.stderr.write(`${message}\n`);
  process.exitCode = exitCode;
}

await main(process.argv.slice(2));
