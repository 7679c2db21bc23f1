import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../protocol/index.js';
import { prefixUpperBound } from '../server/storage/key-range.js';
import { SCHEMA_VERSION } from '../server/storage/migrations.js';
import { DatabaseInUseError, SchemaTooNewError, openSqliteEngine } from '../server/storage/sqlite.js';
import { openConnection } from '../server/storage/sqlite-connection.js';
import { openDatabase, pragma } from '../server/storage/sqlite-native.js';
import type { StorageEngine } from '../server/storage/engine.js';
import { json, runStorageContract } from './storage-contract.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const engineModule = pathToFileURL(path.join(root, 'server/storage/sqlite.ts')).href;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvhub-sqlite-'));
let files = 0;
/** A fresh database path in this run's temp directory. */
const freshPath = () => path.join(tmp, `db-${++files}.db`);

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

runStorageContract('sqlite :memory:', ({ now }) => openSqliteEngine(':memory:', { now }));
runStorageContract('sqlite file', ({ now }) => openSqliteEngine(freshPath(), { now }));

describe('prefixUpperBound', () => {
  it('increments the last code point that can be, skipping surrogates and dropping what follows', () => {
    const max = String.fromCodePoint(0x10ffff);
    expect(prefixUpperBound('abc')).toBe('abd');
    expect(prefixUpperBound('a%')).toBe('a&');
    expect(prefixUpperBound('\uD7FF')).toBe('\uE000');
    expect(prefixUpperBound('x\uFFFF')).toBe('x\u{10000}');
    expect(prefixUpperBound('😀')).toBe('😁');
    expect(prefixUpperBound(`a${max}${max}`)).toBe('b');
    expect(prefixUpperBound(`${max}${max}`)).toBeNull();
    expect(prefixUpperBound('')).toBeNull();
  });
});

describe('sqlite engine: files', () => {
  it('keeps instances, records and the revision counter across close and reopen', async () => {
    const file = freshPath();
    const first = openSqliteEngine(file);
    await first.createInstance({ id: 'i1', name: 'one', description: 'kept' });
    const record = await first.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json({ a: 1 }) });
    await first.set({ instanceId: 'i1', namespace: 'ns', key: 'gone', value: json(1) });
    await first.delete('i1', 'ns', 'gone');
    await first.close();

    const second = openSqliteEngine(file);
    try {
      expect(await second.getInstance('i1')).toMatchObject({ name: 'one', description: 'kept' });
      expect(await second.get('i1', 'ns', 'k')).toEqual(record);
      expect(await second.currentRevision()).toBe(3);
      expect((await second.set({ instanceId: 'i1', namespace: 'ns', key: 'k', value: json(2) })).revision).toBe(4);
    } finally {
      await second.close();
    }
  });

  it('migrates a new file to the latest schema version, in WAL mode', async () => {
    const file = freshPath();
    await openSqliteEngine(file).close();
    const raw = openDatabase(file, { readonly: true });
    try {
      expect(pragma(raw, 'user_version')).toBe(SCHEMA_VERSION);
      expect(pragma(raw, 'journal_mode')).toBe('wal');
    } finally {
      raw.close();
    }
  });

  it('syncs the log itself for durability full (the default) and leaves it to checkpoints for normal', () => {
    const full = openConnection(freshPath());
    const normal = openConnection(freshPath(), { durability: 'normal' });
    const memory = openConnection(':memory:');
    try {
      // SQLite never fsyncs at commit; full gets kvhub's own sync of the log after each commit.
      expect(pragma(full.db, 'synchronous')).toBe(1);
      expect(pragma(normal.db, 'synchronous')).toBe(1);
      expect(pragma(full.db, 'journal_mode')).toBe('wal');
      expect(full.walSync).toBeDefined();
      expect(normal.walSync).toBeUndefined();
      expect(memory.walSync).toBeUndefined();
    } finally {
      for (const connection of [full, normal, memory]) {
        connection.walSync?.close();
        connection.db.close();
      }
    }
  });

  it('lets the log grow past SQLite’s default 1,000 pages before a checkpoint, and empties it on close', async () => {
    const file = freshPath();
    const engine = openSqliteEngine(file, { durability: 'normal' });
    const value = json('x'.repeat(2000));
    // Each setMany commits about 100 records and their 100 change-log rows: some 100 pages.
    for (let batch = 0; batch < 30; batch++) {
      const entries = Array.from({ length: 100 }, (_, i) => ({ key: `k${batch}-${i}`, value }));
      await engine.setMany({ instanceId: 'i', namespace: 'ns', entries, autoCreate: true });
    }
    // At SQLite's default the log would have been checkpointed and rewound at about 1,000 pages
    // (4 MB of 4 KB pages) and never grown past that plus one commit.
    expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(2_000 * 4096);
    await engine.close();
    // The last connection to close checkpoints the whole log and deletes it.
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
  });

  it('acknowledges a write under durability full only once a sync covers its commit', async () => {
    const full = openSqliteEngine(freshPath());
    const normal = openSqliteEngine(freshPath(), { durability: 'normal' });
    try {
      for (const engine of [full, normal]) {
        for (let i = 0; i < 5; i++) {
          const before = await engine.metrics();
          await engine.set({ instanceId: 'i', namespace: 'n', key: `k${i}`, value: json(i), autoCreate: true });
          const after = await engine.metrics();
          expect(after.commits).toBe(before.commits + 1);
          // Awaited one by one, each write is its own commit, synced before set() resolved.
          expect(after.syncs - before.syncs).toBe(engine === full ? 1 : 0);
        }
      }
      // Writes issued together share a commit and its sync.
      const before = await full.metrics();
      await Promise.all([1, 2, 3].map((i) => full.set({ instanceId: 'i', namespace: 'n', key: `g${i}`, value: json(i) })));
      const after = await full.metrics();
      expect([after.commits - before.commits, after.syncs - before.syncs]).toEqual([1, 1]);
    } finally {
      await full.close();
      await normal.close();
    }
  });

  it('trims the change log and kept replies without a sync of their own under durability full', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const engine = openSqliteEngine(freshPath(), { now: () => now });
    try {
      for (let i = 0; i < 10; i++) await engine.set({ instanceId: 'i', namespace: 'n', key: `k${i}`, value: json(i), autoCreate: true });
      await engine.set({ instanceId: 'i', namespace: 'n', key: 'keyed', value: json(0) }, { idempotency: { owner: '', key: 'op-1', fingerprint: 'f' } });
      now += 1000;
      const before = await engine.metrics();
      expect(await engine.pruneChanges({ maxCount: 2, maxAgeMs: 60_000 }, 256)).toBe(9);
      expect(await engine.pruneKeptReplies(500, 256)).toBe(1);
      const after = await engine.metrics();
      expect([after.commits - before.commits, after.syncs - before.syncs]).toEqual([2, 0]);
      expect(await engine.oldestRevision()).toBe(10);
      // The next write's sync covers the trimming too.
      await engine.set({ instanceId: 'i', namespace: 'n', key: 'after', value: json(1) });
      expect((await engine.metrics()).syncs).toBe(after.syncs + 1);
    } finally {
      await engine.close();
    }
  });

  it('runs housekeeping that finds nothing to do without a commit, and commits once when it finds some', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const engine = openSqliteEngine(freshPath(), { now: () => now });
    try {
      await engine.set({ instanceId: 'i', namespace: 'n', key: 'short', value: json(1), ttlMs: 60_000, autoCreate: true });
      const before = await engine.metrics();
      expect(await engine.sweepExpired(256)).toBe(0);
      expect(await engine.pruneChanges({ maxCount: 100, maxAgeMs: 60_000 }, 256)).toBe(0);
      expect(await engine.pruneKeptReplies(60_000, 256)).toBe(0);
      const after = await engine.metrics();
      // The server runs the sweep every 250 ms: a commit (and in full an fsync) each time would
      // keep an idle server's disk busy and count commits no client made.
      expect([after.commits - before.commits, after.syncs - before.syncs]).toEqual([0, 0]);
      now += 61_000;
      expect(await engine.sweepExpired(256)).toBe(1);
      expect((await engine.metrics()).commits).toBe(after.commits + 1);
      expect(await engine.get('i', 'n', 'short')).toBeNull();
    } finally {
      await engine.close();
    }
  });

  it('never serves a write that rolled back from its row cache', async () => {
    const engine = openSqliteEngine(freshPath());
    try {
      await engine.set({ instanceId: 'i', namespace: 'n', key: 'a', value: json(1), autoCreate: true });
      await engine.set({ instanceId: 'i', namespace: 'n', key: 'text', value: json('not a number') });
      // The set of `a` runs (and is cached) before the incr fails: the whole atomic rolls back.
      const failed = engine.atomic({
        instanceId: 'i',
        checks: [],
        ops: [
          { op: 'set', namespace: 'n', key: 'a', value: json(2) },
          { op: 'incr', namespace: 'n', key: 'text', by: 1 },
        ],
      });
      await expect(failed).rejects.toMatchObject({ code: 'TYPE_MISMATCH' });
      expect((await engine.get('i', 'n', 'a'))?.value).toBe(1);
      expect((await engine.get('i', 'n', 'a'))?.version).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('refuses a database written by a newer kvhub', async () => {
    const file = freshPath();
    await openSqliteEngine(file).close();
    const raw = openDatabase(file);
    pragma(raw, `user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => openSqliteEngine(file)).toThrow(SchemaTooNewError);
    expect(() => openSqliteEngine(file)).toThrow(new RegExp(`schema version ${SCHEMA_VERSION + 1}.*upgrade kvhub`));
  });

  it('reports a file that is not a database as STORAGE_ERROR, not a raw SQLite error', () => {
    const file = freshPath();
    fs.writeFileSync(file, 'this is not a SQLite database, just some text that is long enough to have a header');
    expect(() => openSqliteEngine(file)).toThrow(ProtocolError);
    expect(() => openSqliteEngine(file)).toThrow(expect.objectContaining({ code: 'STORAGE_ERROR' }));
    // The failed opens released their claim on the file.
    fs.writeFileSync(file, '');
    return openSqliteEngine(file).close();
  });

  it('gives :memory: engines no lock and separate contents', async () => {
    const a = openSqliteEngine(':memory:');
    const b = openSqliteEngine(':memory:');
    await a.createInstance({ id: 'i', name: 'i' });
    await expect(b.getInstance('i')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    await a.close();
    await b.close();
  });
});

describe('sqlite engine: exclusive ownership', () => {
  it('refuses a second open of a held file in the same process, also by another spelling of the path', async () => {
    const file = freshPath();
    const holder = openSqliteEngine(file);
    try {
      expect(() => openSqliteEngine(file)).toThrow(DatabaseInUseError);
      expect(() => openSqliteEngine(file)).toThrow(`the database file ${file} is in use by another kvhub server`);
      const other = path.join(path.dirname(file), '.', '..', path.basename(tmp), path.basename(file));
      expect(() => openSqliteEngine(other)).toThrow(DatabaseInUseError);
      // The refused opens did not disturb the holder.
      await holder.createInstance({ id: 'i', name: 'i' });
    } finally {
      await holder.close();
    }
  });

  it('releases the file on close', async () => {
    const file = freshPath();
    await openSqliteEngine(file).close();
    const again = openSqliteEngine(file);
    await again.close();
    await again.close();
    await openSqliteEngine(file).close();
  });

  it('refuses an open from another process while this one holds the file', async () => {
    const file = freshPath();
    const holder = openSqliteEngine(file);
    try {
      // A refused open in this process must not drop the holder's OS lock (POSIX locks are per process).
      expect(() => openSqliteEngine(file)).toThrow(DatabaseInUseError);
      expect(await tryOpenInChild(file)).toEqual({
        name: 'DatabaseInUseError',
        message: `the database file ${file} is in use by another kvhub server`,
      });
    } finally {
      await holder.close();
    }
    expect(await tryOpenInChild(file)).toEqual({ opened: true });
  }, 30_000);

  it('is freed when the holding process dies', async () => {
    const file = freshPath();
    const child = spawnTs(
      `import { openSqliteEngine } from ${JSON.stringify(engineModule)};
       const engine = openSqliteEngine(process.env.KVHUB_TEST_DB);
       await engine.createInstance({ id: 'from-child', name: 'c' });
       process.stdout.write('ready\\n');
       setInterval(() => {}, 1000);`,
      file,
    );
    try {
      await waitForLine(child, 'ready');
      expect(() => openSqliteEngine(file)).toThrow(DatabaseInUseError);
    } finally {
      child.kill('SIGKILL');
    }
    await once(child, 'exit');
    const engine = openSqliteEngine(file);
    try {
      expect((await engine.getInstance('from-child')).name).toBe('c');
    } finally {
      await engine.close();
    }
  }, 30_000);
});

describe('sqlite engine: storage failures', () => {
  it(
    'reports a failed write (file size limit reached) as STORAGE_ERROR and stays consistent',
    async () => {
      const file = freshPath();
      // RLIMIT_FSIZE makes the kernel refuse writes past the limit, as a full disk would;
      // Node ignores SIGXFSZ, so SQLite sees the failed write.
      const child = spawnTs(
        `import { openSqliteEngine } from ${JSON.stringify(engineModule)};
         const engine = openSqliteEngine(process.env.KVHUB_TEST_DB);
         await engine.createInstance({ id: 'i', name: 'i' });
         const big = JSON.stringify('x'.repeat(100_000));
         let written = 0, failure;
         try {
           for (; written < 200; written++) {
             await engine.set({ instanceId: 'i', namespace: 'n', key: 'k' + written, value: { contentType: 'application/json', json: big } });
           }
         } catch (error) {
           failure = { name: error.name, code: error.code, message: error.message, cause: error.cause?.code };
         }
         const state = { revision: await engine.currentRevision(), count: await engine.count('i'), last: await engine.get('i', 'n', 'k' + written) };
         console.log(JSON.stringify({ written, failure, ...state }));
         await engine.close();`,
        file,
        { fileSizeBlocks: 2048 },
      );
      const [line] = await waitForLine(child, '{');
      const report = JSON.parse(line!) as {
        written: number;
        failure?: { name: string; code: string; message: string; cause: string };
        revision: number;
        count: number;
        last: unknown;
      };
      expect(report.failure).toMatchObject({ name: 'ProtocolError', code: 'STORAGE_ERROR' });
      expect(report.failure?.cause).toMatch(/^SQLITE_(FULL|IOERR)/);
      expect(report.written).toBeGreaterThan(0);
      // The failed write left nothing behind: not its record and not its revision.
      expect(report).toMatchObject({ revision: report.written, count: report.written, last: null });
    },
    30_000,
  );
});

describe('sqlite engine: group commit', () => {
  const setKey = (engine: StorageEngine, key: string, value: unknown, extra: { ifAbsent?: boolean } = {}) =>
    engine.set({ instanceId: 'i', namespace: 'n', key, value: json(value), ...extra });

  async function withEngine(run: (engine: StorageEngine) => Promise<void>): Promise<void> {
    const engine = openSqliteEngine(freshPath());
    try {
      await engine.createInstance({ id: 'i', name: 'i' });
      await run(engine);
    } finally {
      await engine.close();
    }
  }

  it('gives the writes of one turn one commit and one announcement, in the order they came', async () => {
    await withEngine(async (engine) => {
      const announced: number[][] = [];
      engine.onCommit((changes) => announced.push(changes.map((change) => change.revision)));
      const before = (await engine.metrics()).commits;
      const records = await Promise.all(['a', 'b', 'c', 'd'].map((key, i) => setKey(engine, key, i)));
      expect(records.map((record) => record.revision)).toEqual([1, 2, 3, 4]);
      expect((await engine.metrics()).commits).toBe(before + 1);
      expect(announced).toEqual([[1, 2, 3, 4]]);
      // A lone write is committed on its own, without waiting for company.
      await setKey(engine, 'e', 5);
      expect((await engine.metrics()).commits).toBe(before + 2);
    });
  });

  it("undoes only the failed write of a group, and its revision is not taken", async () => {
    await withEngine(async (engine) => {
      await setKey(engine, 'taken', 'zero');
      const results = await Promise.allSettled([
        setKey(engine, 'a', 1),
        setKey(engine, 'taken', 'again', { ifAbsent: true }),
        engine.incr({ instanceId: 'i', namespace: 'n', key: 'taken', by: 1 }),
        setKey(engine, 'b', 2),
      ]);
      expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
      expect(results.map((result) => (result.status === 'rejected' ? (result.reason as ProtocolError).code : null))).toEqual([
        null,
        'CONFLICT',
        'TYPE_MISMATCH',
        null,
      ]);
      expect((await engine.get('i', 'n', 'b'))?.revision).toBe(3);
      expect((await engine.get('i', 'n', 'taken'))?.value).toBe('zero');
      expect(await engine.currentRevision()).toBe(3);
    });
  });

  it('forgets an instance that a failed write created or a later write deleted, in the same turn', async () => {
    await withEngine(async (engine) => {
      const autoSet = (instanceId: string, extra: { ifVersion?: number } = {}) =>
        engine.set({ instanceId, namespace: 'n', key: 'k', value: json(1), autoCreate: true, ...extra });
      const [failed, read] = await Promise.allSettled([autoSet('ghost', { ifVersion: 3 }), engine.get('ghost', 'n', 'k')]);
      expect(failed).toMatchObject({ status: 'rejected', reason: { code: 'CONFLICT' } });
      expect(read).toMatchObject({ status: 'rejected', reason: { code: 'INSTANCE_NOT_FOUND' } });
      await autoSet('brief');
      const [, afterDelete] = await Promise.allSettled([
        engine.deleteInstance('brief'),
        engine.set({ instanceId: 'brief', namespace: 'n', key: 'k', value: json(2) }),
      ]);
      expect(afterDelete).toMatchObject({ status: 'rejected', reason: { code: 'INSTANCE_NOT_FOUND' } });
      await expect(engine.getInstance('ghost')).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    });
  });

  it('keeps the order of requests: a read sees the writes before it in the turn, not those after', async () => {
    await withEngine(async (engine) => {
      await setKey(engine, 'k', 'old');
      const [before, , after] = await Promise.all([engine.get('i', 'n', 'k'), setKey(engine, 'k', 'new'), engine.get('i', 'n', 'k')]);
      expect(before?.value).toBe('old');
      expect(after?.value).toBe('new');
    });
  });

  it.runIf(process.platform === 'linux')(
    'fails every write of a group whose commit fails, leaves none of them, and re-reads for held reads',
    async () => {
      // The writes fit in SQLite's page cache, so nothing reaches the file before COMMIT, which
      // then cannot write the WAL past RLIMIT_FSIZE.
      const child = spawnTs(
        `import { openSqliteEngine } from ${JSON.stringify(engineModule)};
         const engine = openSqliteEngine(process.env.KVHUB_TEST_DB);
         await engine.createInstance({ id: 'i', name: 'i' });
         await engine.set({ instanceId: 'i', namespace: 'n', key: 'k0', value: { contentType: 'application/json', json: '"before"' } });
         const revision = await engine.currentRevision();
         const commits = (await engine.metrics()).commits;
         const big = JSON.stringify('x'.repeat(200_000));
         const writes = Array.from({ length: 10 }, (_, i) =>
           engine.set({ instanceId: 'i', namespace: 'n', key: 'k' + i, value: { contentType: 'application/json', json: big } }));
         const heldRead = engine.get('i', 'n', 'k0');
         const outcomes = await Promise.allSettled(writes);
         const read = await heldRead;
         console.log(JSON.stringify({
           codes: outcomes.map((o) => o.status === 'rejected' ? o.reason.code : 'ok'),
           revisionBefore: revision, revisionAfter: await engine.currentRevision(),
           commits: (await engine.metrics()).commits - commits,
           count: await engine.count('i'), read: read?.value,
         }));
         await engine.close();`,
        freshPath(),
        { fileSizeBlocks: 1024 },
      );
      const [line] = await waitForLine(child, '{');
      const report = JSON.parse(line!) as { codes: string[]; revisionBefore: number; revisionAfter: number; commits: number; count: number; read: unknown };
      expect(report.codes).toEqual(Array(10).fill('STORAGE_ERROR'));
      expect(report).toMatchObject({ revisionAfter: report.revisionBefore, commits: 0, count: 1, read: 'before' });
    },
    30_000,
  );
});

// ---------------------------------------------------------------- child processes

/** Runs an inline ES module (TypeScript imports allowed) in a fresh Node, with KVHUB_TEST_DB set. */
function spawnTs(script: string, file: string, limits: { fileSizeBlocks?: number } = {}) {
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script];
  const [command, ...args] =
    limits.fileSizeBlocks === undefined ? node : ['/bin/sh', '-c', `ulimit -f ${limits.fileSizeBlocks} && exec "$@"`, 'sh', ...node];
  return spawn(command!, args, {
    cwd: root,
    env: { ...process.env, KVHUB_TEST_DB: file },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Resolves with the child's stdout lines once one starts with `prefix`; rejects if it exits first. */
async function waitForLine(child: ReturnType<typeof spawnTs>, prefix: string): Promise<string[]> {
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const lines = stdout.split('\n').filter((l) => l.startsWith(prefix));
      if (lines.length > 0) resolve(lines);
    });
    child.on('exit', (code) => reject(new Error(`child exited (${code}) before printing '${prefix}': ${stdout}${stderr}`)));
  });
}

/** Opens `file` in another process and reports what happened. */
async function tryOpenInChild(file: string): Promise<unknown> {
  const child = spawnTs(
    `import { openSqliteEngine } from ${JSON.stringify(engineModule)};
     try {
       await openSqliteEngine(process.env.KVHUB_TEST_DB).close();
       console.log(JSON.stringify({ opened: true }));
     } catch (error) {
       console.log(JSON.stringify({ name: error.name, message: error.message }));
     }`,
    file,
  );
  const [line] = await waitForLine(child, '{');
  return JSON.parse(line!);
}
