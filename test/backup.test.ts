import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../server/logger.js';
import { backupFile, restoreFile } from '../server/storage/sqlite-backup.js';
import { openDatabase, pragma } from '../server/storage/sqlite-native.js';
import { startCli, type CliProcess } from './helpers/cli.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const CLI = fileURLToPath(new URL('../server/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const dirs: string[] = [];
const servers: TestServer[] = [];
const processes: CliProcess[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-backup-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  for (const proc of processes.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited();
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs `kvhub <args>` to its end, as `npm run kvhub -- <args>` does. */
async function kvhub(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

/** A write the server acknowledged: the key, the value sent, the revision the reply gave. */
interface Acked {
  key: string;
  value: unknown;
  revision: number;
}

/**
 * Clients writing unique keys of instance `load`, namespace `w`, one request in flight each,
 * until stopped; every acknowledged write is recorded with its revision.
 */
async function startWriters(url: string, count: number) {
  const clients: RawClient[] = await Promise.all(Array.from({ length: count }, () => connectRaw(url)));
  const acked: Acked[] = [];
  let stopping = false;
  const loops = clients.map(async (client, c) => {
    for (let i = 0; !stopping; i++) {
      const key = `c${c}-${i}`;
      const value = { c, i, pad: 'x'.repeat(i % 50) };
      const reply = await client.request({
        type: 'kvStore.set',
        requestId: rid(),
        params: { instanceId: 'load', namespace: 'w', key, value, autoCreateInstance: true },
      });
      if (reply.success !== true) throw new Error(`write failed: ${JSON.stringify(reply)}`);
      acked.push({ key, value, revision: reply.data.record.revision as number });
    }
  });
  return {
    acked,
    /** Resolves once at least `n` writes are acknowledged. */
    async reach(n: number) {
      while (acked.length < n) await new Promise((resolve) => setTimeout(resolve, 5));
    },
    async stop() {
      stopping = true;
      await Promise.all(loops);
      await Promise.all(clients.map((client) => client.close()));
    },
  };
}

/**
 * Opens a copy and checks what "consistent" means: `PRAGMA integrity_check` is ok, and the copy
 * equals the source as of R = its `meta.revision`: every acknowledged write with revision <= R is
 * in it with its value and revision, none with a revision above R is, and nothing else is there.
 */
function expectConsistentCopy(file: string, acked: readonly Acked[]): number {
  const db = openDatabase(file, { readonly: true, fileMustExist: true });
  try {
    expect(db.prepare('PRAGMA integrity_check').pluck().all()).toEqual(['ok']);
    const revision = db.prepare("SELECT value FROM meta WHERE name = 'revision'").pluck().get() as number;
    const rows = db
      .prepare("SELECT key, value, revision FROM records WHERE instance_id = 'load' AND namespace = 'w'")
      .all() as { key: string; value: string; revision: number }[];
    const stored = new Map(rows.map((row) => [row.key, row]));
    const expected = acked.filter((write) => write.revision <= revision);
    for (const write of expected) {
      const row = stored.get(write.key);
      expect(row, `${write.key} (revision ${write.revision}) is missing from a copy at revision ${revision}`).toBeDefined();
      expect({ value: JSON.parse(row!.value), revision: row!.revision }).toEqual({ value: write.value, revision: write.revision });
    }
    // Each key is written once, so exactly the writes up to R are there: none after it, no stranger.
    expect(stored.size).toBe(expected.length);
    return revision;
  } finally {
    db.close();
  }
}

/** Fills instance `load`, namespace `big` with about 2 MB, so a copy takes many backup steps. */
async function prefill(server: TestServer): Promise<void> {
  await server.server.engine.setMany({
    instanceId: 'load',
    namespace: 'big',
    autoCreate: true,
    entries: Array.from({ length: 200 }, (_, i) => ({
      key: `big-${i}`,
      value: { contentType: 'application/json' as const, json: JSON.stringify('y'.repeat(10_000)) },
    })),
  });
}

function recordingLogger(): Logger & { lines: { msg: string; fields: Record<string, unknown> }[] } {
  const lines: { msg: string; fields: Record<string, unknown> }[] = [];
  const log = (msg: string, fields: Record<string, unknown> = {}) => void lines.push({ msg, fields });
  return { lines, debug: log, info: log, warn: log, error: log };
}

describe('kvhub backup', () => {
  it('copies a database under write load: the copy passes integrity_check and equals the source as of its revision', async () => {
    const dir = tempDir();
    const server = await startTestServer({ db: join(dir, 'live.db'), durability: 'normal' });
    servers.push(server);
    await prefill(server);
    const writers = await startWriters(server.url, 4);
    await writers.reach(300);
    const out = join(dir, 'copies', 'copy.db');
    const result = await kvhub('backup', '--db', server.db, out);
    const ackedDuringBackup = writers.acked.length;
    await writers.reach(ackedDuringBackup + 300);
    await writers.stop();

    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const revision = expectConsistentCopy(out, writers.acked);
    expect(result.stdout).toBe(`Backed up ${server.db} to ${out} at revision ${revision}; the copy passed the integrity check.\n`);
    // The copy was taken mid-load: writes came before it and after it.
    expect(writers.acked.some((write) => write.revision <= revision)).toBe(true);
    expect(writers.acked.some((write) => write.revision > revision)).toBe(true);
    // One self-contained file: no -wal beside it, nothing temporary left in its directory.
    expect(readdirSync(join(dir, 'copies'))).toEqual(['copy.db']);
  });

  it('refuses to overwrite a file unless --force, and reports bad usage with exit code 2', async () => {
    const dir = tempDir();
    const server = await startTestServer({ db: join(dir, 'live.db') });
    servers.push(server);
    await server.server.engine.createInstance({ id: 'one', name: 'one' });
    const out = join(dir, 'taken.db');
    writeFileSync(out, 'precious');
    const [refused, usage, memory, missing] = await Promise.all([
      kvhub('backup', '--db', server.db, out),
      kvhub('backup', '--db', server.db),
      kvhub('backup', '--db', ':memory:', join(dir, 'x.db')),
      kvhub('backup', '--db', join(dir, 'absent.db'), join(dir, 'y.db')),
    ]);
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr).toBe(`kvhub cannot back up: ${out} already exists; give --force to replace it.\n`);
    expect(readFileSync(out, 'utf8')).toBe('precious');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^backup takes one file, <out>\./);
    expect(memory.code).toBe(2);
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toMatch(/there is no database file at .*absent\.db/);
    expect(existsSync(join(dir, 'absent.db'))).toBe(false);

    const forced = await kvhub('backup', '--db', server.db, '--force', out);
    expect(forced.code).toBe(0);
    expect(expectConsistentCopy(out, [])).toBe(0);
  });
});

describe('kvhub restore', () => {
  it('is refused while a server holds the file; afterwards it replaces the file, stale WAL and all, and a server serves the backup', async () => {
    const dir = tempDir();
    const db = join(dir, 'live.db');
    const backup = join(dir, 'backup.db');
    const first = startCli(['--port', '0', '--db', db]);
    processes.push(first);
    const client = await connectRaw(await first.ready());
    const set = (value: number) =>
      client.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'app', namespace: 'n', key: 'k', value, autoCreateInstance: true } });
    const kept = (await set(1)).data.record;
    expect((await kvhub('backup', '--db', db, backup)).code).toBe(0);
    for (let i = 2; i <= 20; i++) await set(i);

    const refused = await kvhub('restore', '--db', db, backup);
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr).toBe(`kvhub cannot restore: the database file ${db} is in use by another kvhub server; stop that server first.\n`);
    // The server never noticed.
    expect((await set(21)).success).toBe(true);

    // Killed, the server leaves its newer commits in the -wal file: SQLite would replay them onto the restored file.
    first.child.kill('SIGKILL');
    await first.exited();
    await client.closed();
    expect(statSync(`${db}-wal`).size).toBeGreaterThan(0);

    const restored = await kvhub('restore', '--db', db, backup);
    expect(restored.stderr).toBe('');
    expect(restored).toMatchObject({ code: 0, stdout: `Restored ${db} from ${backup}; it holds revision ${kept.revision} now.\n` });
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(readdirSync(dir).filter((name) => name.startsWith('.'))).toEqual([]);

    const second = startCli(['--port', '0', '--db', db]);
    processes.push(second);
    const reader = await connectRaw(await second.ready());
    const got = await reader.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: 'app', namespace: 'n', key: 'k' } });
    expect(got.data).toMatchObject({ exists: true, value: 1, record: { revision: kept.revision } });
    await reader.close();
  });

  it('checks the backup first: not SQLite, not kvhub, a newer schema or corrupt leave the database as it was', async () => {
    const dir = tempDir();
    const server = await startTestServer({ db: join(dir, 'live.db') });
    await prefill(server);
    await server.stop();
    servers.push(server);
    const before = readFileSync(server.db);

    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, 'this is not a database, only some text that is long enough to look like a header');
    const foreign = join(dir, 'foreign.db');
    const other = openDatabase(foreign);
    other.exec('CREATE TABLE things (x)');
    other.close();
    const newer = join(dir, 'newer.db');
    await backupFile(server.db, newer);
    const edit = openDatabase(newer);
    pragma(edit, 'user_version = 99');
    edit.close();
    const corrupt = join(dir, 'corrupt.db');
    await backupFile(server.db, corrupt);
    const bytes = readFileSync(corrupt);
    // Scribble over three pages in the middle of the file, where the big values' overflow chains are.
    bytes.fill(0x5a, Math.floor(bytes.length / 2), Math.floor(bytes.length / 2) + 3 * 4096);
    writeFileSync(corrupt, bytes);

    await expect(restoreFile(server.db, garbage)).rejects.toThrow(`${garbage} is not a SQLite database`);
    await expect(restoreFile(server.db, foreign)).rejects.toThrow(`${foreign} is not a kvhub database (it has no kvhub schema)`);
    await expect(restoreFile(server.db, newer)).rejects.toThrow(/newer\.db has schema version 99, but this kvhub understands versions up to \d+$/);
    await expect(restoreFile(server.db, corrupt)).rejects.toThrow(/corrupt\.db (fails SQLite's integrity check|is corrupt)/);
    // The CLI says the same in one sentence, with exit code 1.
    const refused = await kvhub('restore', '--db', server.db, garbage);
    expect(refused).toMatchObject({ code: 1, stdout: '', stderr: `kvhub cannot restore: ${garbage} is not a SQLite database.\n` });
    expect(readFileSync(server.db).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((name) => name.startsWith('.'))).toEqual([]);
  });
});

describe('periodic backups', () => {
  it('are written under load as kvhub-<revision>-<time>.db, consistent, and only the newest --backup-keep stay', async () => {
    const dir = tempDir();
    const backupDir = join(dir, 'backups');
    const logger = recordingLogger();
    const server = await startTestServer({
      db: join(dir, 'live.db'),
      durability: 'normal',
      logger,
      backup: { dir: backupDir, everyMs: 100, keep: 2 },
    });
    servers.push(server);
    await prefill(server);
    const writers = await startWriters(server.url, 4);
    const written = () => logger.lines.filter((line) => line.msg === 'backup written');
    while (written().length < 4) await new Promise((resolve) => setTimeout(resolve, 20));
    await writers.stop();
    await server.stop();

    expect(logger.lines.filter((line) => line.msg === 'backup failed')).toEqual([]);
    const files = readdirSync(backupDir).sort();
    expect(files).toHaveLength(2);
    const logged = written().map((line) => line.fields);
    // The two kept are the two newest written; every older one was pruned.
    const newest = logged.slice(-2).map((fields) => (fields['file'] as string).slice(backupDir.length + 1));
    expect(files).toEqual([...newest].sort());
    expect(logged.flatMap((fields) => fields['pruned'] as string[]).length).toBe(logged.length - 2);
    for (const name of files) {
      const match = /^kvhub-(\d+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z\.db$/.exec(name);
      expect(match).not.toBeNull();
      expect(expectConsistentCopy(join(backupDir, name), writers.acked)).toBe(Number(match![1]));
    }
  });

  it('the CLI takes --backup-dir, --backup-every and --backup-keep, and refuses bad values with exit code 2', async () => {
    const dir = tempDir();
    const [everyWithoutDir, badEvery, badKeep] = await Promise.all([
      kvhub('--port', '0', '--db', ':memory:', '--backup-every', '1h'),
      kvhub('--port', '0', '--db', ':memory:', '--backup-dir', dir, '--backup-every', 'soon'),
      kvhub('--port', '0', '--db', ':memory:', '--backup-dir', dir, '--backup-keep', '0'),
    ]);
    expect(everyWithoutDir).toMatchObject({ code: 2, stderr: '--backup-every and --backup-keep need --backup-dir.\n' });
    expect(badEvery.code).toBe(2);
    expect(badEvery.stderr).toMatch(/^--backup-every must be a duration/);
    expect(badKeep).toMatchObject({ code: 2, stderr: "--backup-keep must be a whole number of at least 1, not '0'.\n" });

    const backupDir = join(dir, 'every');
    const proc = startCli(['--port', '0', '--db', join(dir, 'cli.db'), '--backup-dir', backupDir, '--backup-every', '200ms', '--backup-keep', '1']);
    processes.push(proc);
    await proc.ready();
    while (proc.stderr.split('\n').filter((line) => line.includes('"backup written"')).length < 2) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    proc.child.kill('SIGTERM');
    expect(await proc.exited()).toBe(0);
    expect(readdirSync(backupDir)).toHaveLength(1);
  });
});
