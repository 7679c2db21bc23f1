#!/usr/bin/env node
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createServer, NonLoopbackHostError, type KvhubServer } from './index.js';
import { DEFAULT_CHANGE_RETENTION } from './housekeeping.js';
import { jsonLogger } from './logger.js';
import { DatabaseInUseError } from './storage/sqlite.js';

const USAGE = `Usage: npm start -- [--port <n>] [--host <addr>] [--db <file|:memory:>] [--durability full|normal]
                    [--changelog-max-count <n>] [--changelog-max-age-ms <ms>]

  --port        port to listen on; 0 picks a free one (default 7420)
  --host        loopback address to bind (default 127.0.0.1)
  --db          SQLite database file, or :memory: (default ./data/kvhub.db)
  --durability  full: acknowledge writes only once fsynced; normal: faster, may lose
                the last writes on power loss (default full)
  --changelog-max-count   changes kept for watch replays (default ${DEFAULT_CHANGE_RETENTION.maxCount})
  --changelog-max-age-ms  age after which changes are dropped (default ${DEFAULT_CHANGE_RETENTION.maxAgeMs}, 24 h)`;

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
      logger: jsonLogger(process.stderr),
    });
  } catch (error) {
    return fail(startFailure(error, flags.host, port, db), 1);
  }
  process.stdout.write(`kvhub is ready on ${server.url} (database ${db}, durability ${flags.durability}).\n`);

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

function startFailure(error: unknown, host: string, port: number, db: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (error instanceof DatabaseInUseError || error instanceof NonLoopbackHostError) return `kvhub cannot start: ${error.message}.`;
  if (code === 'EADDRINUSE') return `kvhub cannot start: port ${port} on ${host} is already in use.`;
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') return `kvhub cannot start: ${host} is not an address of this machine.`;
  if (code === 'EACCES') return `kvhub cannot start: no permission to listen on ${host}:${port}.`;
  return `kvhub cannot start with database ${db}: ${(error as Error).message}`;
}

function fail(message: string, exitCode: number): void {
  process.stderr.write(`${message}\n`);
  process.exitCode = exitCode;
}

await main(process.argv.slice(2));
