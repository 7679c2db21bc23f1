import { Option, type Command } from 'commander';
import { copy, serve, SERVE_DEFAULTS, type ServeFlags } from '../../server/cli.js';
import { DEFAULT_BACKUP } from '../../server/backup.js';
import { LOG_LEVELS } from '../../server/logger.js';
import { withConfig, type Act } from '../command.js';
import { repeatable, type Settings } from '../settings.js';

/** An option with a default, shown bare in the help (commander quotes a text default). */
function defaulted(flags: string, description: string, value: string): Option {
  return new Option(flags, description).default(value, value);
}

/** `serve` (the default command), `backup` and `restore`: the database side, run by server/cli.ts. */
export function registerServerCommands(program: Command, act: Act): void {
  const d = SERVE_DEFAULTS;
  act(
    withConfig(program.command('serve').description('run the server (the default command: `kvhub --port 0` is `kvhub serve --port 0`)'))
      .addOption(defaulted('--port <n>', 'port to listen on; 0 picks a free one', d.port))
      .addOption(defaulted('--host <addr>', 'address to bind; one other machines can reach needs a token (--token-file or KVHUB_TOKEN)', d.host))
      .addOption(defaulted('--db <file>', 'SQLite database file, or :memory:', d.db))
      .addOption(
        defaulted('--durability <mode>', 'full: acknowledge writes only once fsynced; normal: faster, may lose the last writes on power loss', d.durability),
      )
      .addOption(new Option('--max-db-bytes <n>', "cap on the database file's size; a write past it gets STORAGE_ERROR (default: no cap)"))
      .addOption(defaulted('--changelog-max-count <n>', 'changes kept for watch replays', d['changelog-max-count']))
      .addOption(defaulted('--changelog-max-age-ms <ms>', 'age after which changes are dropped, in ms (86400000 is 24 h)', d['changelog-max-age-ms']))
      .addOption(new Option('--max-connections <n>', 'connections served at once; more get HTTP 503 (default: 1024)'))
      .addOption(new Option('--max-in-flight <n>', 'requests in flight per connection; more get RATE_LIMITED (default: 1024)'))
      .addOption(new Option('--max-buffered-bytes <n>', 'unread bytes after which a connection is closed with 1013 (default: 64 MiB)'))
      .addOption(new Option('--heartbeat-interval-ms <ms>', 'ping interval; a peer that misses a ping is dropped (default: 30000)'))
      .addOption(
        new Option('--token-file <file>', 'tokens, one per line: TOKEN, or TOKEN instances=ID,ID[,...] [readonly]; with any token, every connection needs one'),
      )
      .addOption(new Option('--token <token>', 'one more full-access token (env KVHUB_TOKEN)'))
      .addOption(repeatable('--allow-origin <origin>', 'a browser origin allowed besides the same origin (repeatable)'))
      .addOption(repeatable('--allow-host <name>', 'a Host name a loopback-bound server answers besides loopback names (repeatable)'))
      .addOption(new Option('--tls-cert <file>', 'PEM certificate: serve wss:// instead of ws:// (with --tls-key)'))
      .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert'))
      .addOption(new Option('--backup-dir <dir>', 'back the database up into this directory while serving, as kvhub-<revision>-<time>.db'))
      .addOption(new Option('--backup-every <duration>', 'time between backups: ms, or a number with ms, s, m, h or d (default: 1h)'))
      .addOption(new Option('--backup-keep <n>', `how many of the newest backups to keep (default: ${DEFAULT_BACKUP.keep})`))
      .addOption(defaulted('--log-level <level>', `the least level of the JSON log lines on stderr: ${LOG_LEVELS.join(', ')}`, d['log-level']))
      .addHelpText('after', '\nThe ready line goes to stdout; logs go to stderr as JSON lines. SIGINT or SIGTERM shut the server down cleanly (exit 0).'),
    ({ settings, io }) => serve(serveFlags(settings), io),
  );

  const copyCommand = (name: 'backup' | 'restore', file: string, description: string) =>
    act(
      withConfig(program.command(name).description(description))
        .usage(`[--db <file>]${name === 'backup' ? ' [--force]' : ''} <${file}>`)
        // The file is optional to commander: copy() checks that there is exactly one, in its own words.
        .argument(`[${file}]`)
        .allowExcessArguments(true)
        .addOption(defaulted('--db <file>', 'the database file', SERVE_DEFAULTS.db))
        .addOption(new Option('--force', 'replace an existing <out>').hideHelp(name === 'restore')),
      ({ args, settings, io }) => copy(name, { db: settings.text('db')!, force: settings.on('force'), files: [...args] }, io),
    );
  copyCommand(
    'backup',
    'out',
    "copy the database to <out> with SQLite's online backup, whether or not a server is running on it, and check the copy",
  );
  copyCommand('restore', 'backup', 'replace the database with <backup> once it passes the integrity and schema checks; refused while a server holds the database');
}

/** The serve flags as server/cli.ts takes them. */
function serveFlags(settings: Settings): ServeFlags {
  const text = (name: string) => settings.text(name);
  const token = text('token');
  return {
    port: text('port')!,
    host: text('host')!,
    db: text('db')!,
    durability: text('durability')!,
    'changelog-max-count': text('changelog-max-count')!,
    'changelog-max-age-ms': text('changelog-max-age-ms')!,
    'token-file': text('token-file'),
    'allow-origin': settings.list('allow-origin'),
    'allow-host': settings.list('allow-host'),
    'tls-cert': text('tls-cert'),
    'tls-key': text('tls-key'),
    'backup-dir': text('backup-dir'),
    'backup-every': text('backup-every'),
    'backup-keep': text('backup-keep'),
    'max-connections': text('max-connections'),
    'max-in-flight': text('max-in-flight'),
    'max-buffered-bytes': text('max-buffered-bytes'),
    'heartbeat-interval-ms': text('heartbeat-interval-ms'),
    'max-db-bytes': text('max-db-bytes'),
    'log-level': text('log-level')!,
    token: token === undefined ? undefined : { value: token, name: settings.describe('token') },
  };
}
