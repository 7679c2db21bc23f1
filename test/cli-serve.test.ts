import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Capture, runKvhub, type RunResult } from './helpers/cli.js';
import { bearer, tryUpgrade } from './helpers/upgrade.js';

// `kvhub serve` run in this process: it serves until its stop signal fires, as it does on Ctrl-C.
const dir = mkdtempSync(join(tmpdir(), 'kvhub-cli-serve-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Serving {
  url: string;
  stdout: Capture;
  stderr: Capture;
  /** Stops the server as SIGINT would, and resolves with the run's result. */
  stop(): Promise<RunResult>;
}
const running: Serving[] = [];
afterEach(async () => {
  for (const serving of running.splice(0)) await serving.stop();
});

/** Starts `kvhub <args>` and waits for its ready line; rejects with the run's result if it ends first. */
async function serve(args: string[], env: Record<string, string> = {}): Promise<Serving> {
  const controller = new AbortController();
  const stdout = new Capture();
  const stderr = new Capture();
  const result = runKvhub(args, { env, stdout, stderr, signal: controller.signal });
  const ended = result.then((outcome) => {
    throw new Error(`kvhub ended before it was ready: ${JSON.stringify(outcome)}`);
  });
  const ready = await Promise.race([stdout.waitFor(/ready on ws:\/\/\S+:\d+/), ended]);
  const serving: Serving = {
    url: /ws:\/\/\S+:\d+/.exec(ready)![0],
    stdout,
    stderr,
    stop: () => {
      controller.abort('SIGINT');
      return result;
    },
  };
  running.push(serving);
  return serving;
}

function configFile(name: string, settings: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(settings));
  return file;
}

/** Sends a request that is not HTTP, which the server logs at debug level; resolves once the server has hung up. */
function sendGarbage(url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end('NOT HTTP AT ALL\r\n\r\n'));
    socket.on('error', reject).on('close', () => resolve());
    socket.resume();
  });
}

const logLines = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { level: string; msg: string });

describe('kvhub serve', () => {
  it('is the default command when the first argument is a flag, and shuts down cleanly on its stop signal', async () => {
    const serving = await serve(['--port', '0', '--db', ':memory:']);
    expect(serving.stdout.text).toMatch(/^kvhub is ready on ws:\/\/127\.0\.0\.1:\d+ \(database :memory:, durability full\)\.\n$/);
    await sendGarbage(serving.url);
    running.pop();
    const result = await serving.stop();
    expect(result.code).toBe(0);
    expect(logLines(result.stderr).map(({ level, msg }) => `${level} ${msg}`)).toEqual(['info listening', 'info shutting down', 'info closed']);
  });

  it('--log-level sets the least level of the JSON log lines, and refuses an unknown level with exit 2', async () => {
    const quiet = await serve(['serve', '--port', '0', '--db', ':memory:', '--log-level', 'warn']);
    await sendGarbage(quiet.url);
    await tryUpgrade(quiet.url, { origin: 'http://evil.example' });
    running.pop();
    expect((await quiet.stop()).stderr).toBe('');

    const chatty = await serve(['serve', '--port', '0', '--db', ':memory:', '--log-level', 'debug']);
    await sendGarbage(chatty.url);
    running.pop();
    const lines = logLines((await chatty.stop()).stderr).map(({ level, msg }) => `${level} ${msg}`);
    expect(lines).toContain('debug bad HTTP request');
    expect(lines).toContain('info listening');

    const bad = await runKvhub(['serve', '--port', '0', '--db', ':memory:', '--log-level', 'loud']);
    expect(bad).toMatchObject({ code: 2, stdout: '', stderr: "--log-level must be debug, info, warn or error, not 'loud'.\n" });
  });

  it('takes its flags from --config, under the flags and KVHUB_TOKEN', async () => {
    const config = configFile('serve.json', {
      port: 'not a port',
      db: ':memory:',
      token: 'config-token',
      'allow-origin': ['https://a.example', 'https://b.example'],
      'log-level': 'error',
      url: 'ws://ignored.example',
    });
    const serving = await serve(['serve', '--config', config, '--port', '0']);
    expect(serving.stdout.text).toMatch(/durability full, 1 token\)\.\n$/);
    expect(await tryUpgrade(serving.url, { ...bearer('config-token'), origin: 'https://b.example' })).toMatchObject({ opened: true });
    expect(await tryUpgrade(serving.url, { ...bearer('config-token'), origin: 'https://c.example' })).toMatchObject({ opened: false, status: 403 });

    const fromEnvironment = await serve(['--config', config, '--port', '0'], { KVHUB_TOKEN: 'env-token' });
    expect(await tryUpgrade(fromEnvironment.url, bearer('env-token'))).toMatchObject({ opened: true });
    expect(await tryUpgrade(fromEnvironment.url, bearer('config-token'))).toMatchObject({ opened: false, status: 401 });

    // Without the flag, the file's port is used, and refused.
    expect(await runKvhub(['serve', '--config', config])).toMatchObject({ code: 2, stderr: "--port must be a whole number from 0 to 65535, not 'not a port'.\n" });
  });

  it('names where a bad token came from', async () => {
    const config = configFile('bad-token.json', { token: 'bad token', port: 0, db: ':memory:' });
    const fromFile = await runKvhub(['serve', '--config', config]);
    expect(fromFile.code).toBe(2);
    expect(fromFile.stderr).toBe(`kvhub cannot start: "token" in ${config} uses characters other than A-Z, a-z, 0-9, '-', '_', '.' and '~'.\n`);
    const fromFlag = await runKvhub(['serve', '--port', '0', '--db', ':memory:', '--token', 'bad token']);
    expect(fromFlag.stderr).toMatch(/^kvhub cannot start: --token uses characters other than/);
    const fromEnvironment = await runKvhub(['serve', '--port', '0', '--db', ':memory:'], { env: { KVHUB_TOKEN: 'bad token' } });
    expect(fromEnvironment.stderr).toMatch(/^kvhub cannot start: KVHUB_TOKEN uses characters other than/);
  });

  it('backup and restore keep their messages and exit codes', async () => {
    const db = join(dir, 'copy-source.db');
    const serving = await serve(['--port', '0', '--db', db, '--log-level', 'error']);
    const set = await runKvhub(['set', 'app', 'n', 'k', '42', '--create', '--url', serving.url]);
    expect(set.code).toBe(0);
    running.pop();
    await serving.stop();
    const out = join(dir, 'copy.db');
    const backup = await runKvhub(['backup', '--db', db, out]);
    expect(backup).toMatchObject({ code: 0, stderr: '', stdout: `Backed up ${db} to ${out} at revision 1; the copy passed the integrity check.\n` });
    expect(await runKvhub(['backup', '--db', db])).toMatchObject({ code: 2, stderr: 'backup takes one file, <out>.\n' });
    expect(await runKvhub(['backup', '--db', db, out, 'extra'])).toMatchObject({ code: 2, stderr: 'backup takes one file, <out>.\n' });
    expect(await runKvhub(['backup', '--db', db, out])).toMatchObject({ code: 1, stderr: `kvhub cannot back up: ${out} already exists; give --force to replace it.\n` });
    expect(await runKvhub(['restore', '--force', '--db', db, out])).toMatchObject({ code: 2, stderr: '--force is for backup only: restore always replaces the database.\n' });
    const restoredDb = join(dir, 'restored.db');
    expect(await runKvhub(['restore', '--db', restoredDb, out])).toMatchObject({ code: 0, stdout: `Restored ${restoredDb} from ${out}; it holds revision 1 now.\n` });
    // The restored database serves the key.
    const again = await serve(['--port', '0', '--db', restoredDb, '--log-level', 'error']);
    expect((await runKvhub(['get', 'app', 'n', 'k', '--url', again.url])).stdout).toBe('42\n');
  });
});
