#!/usr/bin/env node
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseTokenFile, TokenConfigError, TokenSet, type TokenGrant } from './auth/index.js';
import { createServer, NonLoopbackHostError, type KvhubServer, type ServerOptions } from './index.js';
import { DEFAULT_CHANGE_RETENTION } from './housekeeping.js';
import { jsonLogger } from './logger.js';
import { DatabaseInUseError } from './storage/sqlite.js';

const USAGE = `Usage: npm start -- [--port <n>] [--host <addr>] [--db <file|:memory:>] [--durability full|normal]
                    [--changelog-max-count <n>] [--changelog-max-age-ms <ms>]
                    [--token-file <file>] [--allow-origin <origin>]... [--allow-host <name>]...
                    [--tls-cert <file> --tls-key <file>]

  --port        port to listen on; 0 picks a free one (default 7420)
  --host        address to bind (default 127.0.0.1); one other machines can reach
                needs a token (--token-file or KVHUB_TOKEN)
  --db          SQLite database file, or :memory: (default ./data/kvhub.db)
  --durability  full: acknowledge writes only once fsynced; normal: faster, may lose
                the last writes on power loss (default full)
  --changelog-max-count   changes kept for watch replays (default ${DEFAULT_CHANGE_RETENTION.maxCount})
  --changelog-max-age-ms  age after which changes are dropped (default ${DEFAULT_CHANGE_RETENTION.maxAgeMs}, 24 h)
  --token-file  tokens, one per line: TOKEN, or TOKEN instances=ID,ID[,...] [readonly];
                with any token (this file or KVHUB_TOKEN), every connection needs one
  --allow-origin  a browser origin allowed besides the same origin (repeatable)
  --allow-host    a Host name a loopback-bound server answers besides loopback names (repeatable)
  --tls-cert, --tls-key  PEM certificate and key: serve wss:// instead of ws://

Environment: KVHUB_TOKEN adds one full-access token.`;

/** Runs the server from command-line flags; the ready line goes to stdout, logs to stderr. */
async function main(argv: string[]): Promise<void> {
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
  const maxCount = Number(flags['changelog-max-count']);
  const maxAgeMs = Number(flags['changelog-max-age-ms']);
  for (const [flag, value] of [['--changelog-max-count', maxCount], ['--changelog-max-age-ms', maxAgeMs]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) return fail(`${flag} must be a whole number of at least 0.`, 2);
  }
  const security = readSecurity(flags, process.env['KVHUB_TOKEN']);
  if (typeof security === 'string') return;
  const db = flags.db === ':memory:' ? flags.db : resolve(flags.db);
  if (db !== ':memory:') mkdirSync(dirname(db), { recursive: true });

  let server: KvhubServer;
  try {
    server = await createServer({
      port,
      host: flags.host,
      db,
      durability: flags.durability,
      changeRetention: { maxCount, maxAgeMs },
      ...security,
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

function failed(message: string, exitCode: number): 'failed' {
  fail(message, exitCode);
  return 'failed';
}

function startFailure(error: unknown, host: string, port: number, db: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (error instanceof DatabaseInUseError || error instanceof NonLoopbackHostError) return `kvhub cannot start: ${error.message}.`;
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
