import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, DatabaseOpenError } from '../server/index.js';
import { openDatabase } from '../server/storage/sqlite-native.js';
import { startCli, type CliProcess } from './helpers/cli.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import {
  makeImmutable,
  overwritePages,
  pagesOf,
  PAGE_SIZE,
  releaseImmutable,
  startCliWithMount,
} from './helpers/storage-faults.js';

// Storage failures over real sockets, against real servers on real files: a database at its size
// cap, a file that cannot be written, and a file that is damaged. Every one must be answered
// STORAGE_ERROR (or refused at start with one sentence), never crash the server.

const MiB = 1024 * 1024;
/** A JSON string value of about 60 KB: fifteen pages in the records table, fifteen in the change log. */
const BIG = 'x'.repeat(60_000);

const dirs: string[] = [];
const servers: TestServer[] = [];
const clients: RawClient[] = [];
const processes: CliProcess[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-storage-'));
  dirs.push(dir);
  return dir;
}

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const started = await startTestServer({ db: join(tempDir(), 'kv.db'), ...options });
  servers.push(started);
  return started;
}

async function connect(url: string): Promise<RawClient> {
  const client = await connectRaw(url);
  clients.push(client);
  return client;
}

function cli(args: string[]): CliProcess {
  const proc = startCli(args);
  processes.push(proc);
  return proc;
}

/** The exit code, once the process has exited and everything it wrote has been read. */
async function finished(proc: CliProcess): Promise<number | null> {
  const code = await proc.exited();
  for (const stream of [proc.child.stdout!, proc.child.stderr!]) if (!stream.readableEnded) await once(stream, 'end');
  return code;
}

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  for (const proc of processes.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited();
    }
  }
  for (const started of servers.splice(0)) await started.close();
  // Files left immutable by a failed test could not be deleted.
  releaseImmutable();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- requests

const INSTANCE = 'store';
const NS = 'n';

async function call(client: RawClient, type: string, params: object = {}): Promise<any> {
  const requestId = rid();
  const reply = await client.request({ type: `kvStore.${type}`, requestId, params });
  expect(reply.requestId).toBe(requestId);
  return reply;
}

const set = (client: RawClient, key: string, value: unknown) =>
  call(client, 'set', { instanceId: INSTANCE, namespace: NS, key, value, autoCreateInstance: true });
const get = (client: RawClient, key: string) => call(client, 'get', { instanceId: INSTANCE, namespace: NS, key });
const count = (client: RawClient) => call(client, 'getRecordCount', { instanceId: INSTANCE, namespace: NS });

/** Writes `value` under new keys until a write fails; returns the keys stored and the failed reply. */
async function fillUp(client: RawClient, prefix: string, value: unknown, most = 500): Promise<{ stored: string[]; failure: any }> {
  const stored: string[] = [];
  for (let i = 0; i < most; i++) {
    const reply = await set(client, `${prefix}${i}`, value);
    if (!reply.success) return { stored, failure: reply };
    stored.push(`${prefix}${i}`);
  }
  throw new Error(`${most} writes of ${prefix} all fitted: the size cap was not applied`);
}

function expectDatabaseFull(reply: any): void {
  expect(reply).toMatchObject({ success: false, code: 'STORAGE_ERROR' });
  expect(reply.error).toMatch(/^the database is full\b/);
}

// ---------------------------------------------------------------- a full database

describe('a full database: at its size cap (maxDbBytes), or on a full disk', () => {
  it('answers a write past the cap with STORAGE_ERROR; reads, this connection and others go on', async () => {
    const { url } = await server({ maxDbBytes: MiB });
    const writer = await connect(url);
    const other = await connect(url);

    const { stored, failure } = await fillUp(writer, 'big-', BIG);
    expectDatabaseFull(failure);
    // The cap is 1 MiB and each write costs about 120 KB (the record and its change-log entry).
    expect(stored.length).toBeGreaterThanOrEqual(4);
    expect(stored.length).toBeLessThanOrEqual(9);
    const failedKey = `big-${stored.length}`;

    // Nothing of the failed write is there; everything before it is, on both connections.
    expect((await get(writer, failedKey)).data).toMatchObject({ exists: false, record: null });
    for (const client of [writer, other]) {
      expect((await count(client)).data).toEqual({ count: stored.length });
      const first = await get(client, stored[0]!);
      expect(first.data).toMatchObject({ exists: true, value: BIG });
      expect((await call(client, 'ping')).data).toEqual({ pong: true });
    }
    // A second attempt on the other connection fails the same way: the cap holds for everyone.
    expectDatabaseFull(await set(other, failedKey, BIG));

    const stats = await call(other, 'stats');
    expect(stats.data.dbBytes).toBeLessThanOrEqual(MiB);
    expect(stats.data.dbBytes).toBeGreaterThan(MiB - 40 * PAGE_SIZE);

    // The server itself is fine: it answers HTTP and new connections.
    expect((await fetch(`${url.replace('ws:', 'http:')}/healthz`)).status).toBe(200);
    const late = await connect(url);
    expect((await get(late, stored.at(-1)!)).data.exists).toBe(true);
  });

  it('answers a repeated keyed write with its kept reply on a database filled to the last page', async () => {
    const { url } = await server({ maxDbBytes: MiB });
    const client = await connect(url);
    const keyed = { instanceId: INSTANCE, namespace: NS, key: 'kept', value: 'v', autoCreateInstance: true, idempotencyKey: 'op-1' };
    const first = await call(client, 'set', keyed);
    expect(first.success).toBe(true);
    expectDatabaseFull((await fillUp(client, 'big-', BIG)).failure);
    const small = await fillUp(client, 'small-', 's'.repeat(200), 5000);
    expectDatabaseFull(small.failure);
    // A repeat is a lookup: running the set again would need room for its change-log entry.
    const repeat = await call(client, 'set', keyed);
    expect(repeat).toMatchObject({ success: true, data: { record: first.data.record } });
    expectDatabaseFull(await set(client, 'one-more', 's'.repeat(200)));
  });

  it('stores none of a setMany, a setEach or an atomic that does not fit, and takes no revision for it', async () => {
    const { url } = await server({ maxDbBytes: MiB });
    const client = await connect(url);
    const first = await set(client, 'before', 'small');
    expect(first.success).toBe(true);

    // Twenty entries of 60 KB need about 2.4 MB; the first few alone would fit.
    const keys = Array.from({ length: 20 }, (_, i) => `many-${i}`);
    // Eighty entries of 10 KB need about 1.6 MB with their change-log entries. The SQLite engine
    // writes a setMany's rows 32 to a statement, and the first 32 (about 0.8 MB) fit: the failure
    // comes in a later statement, after rows of this setMany were written and cached.
    const smallKeys = Array.from({ length: 80 }, (_, i) => `many-small-${i}`);
    const tenKb = 'x'.repeat(10_000);
    for (const entries of [keys.map((key) => ({ key, value: BIG })), smallKeys.map((key) => ({ key, value: tenKb }))]) {
      expectDatabaseFull(await call(client, 'setMany', { instanceId: INSTANCE, namespace: NS, entries }));
    }
    // A setEach's entries fail one by one only for their own reasons (a condition): a full
    // database fails the whole, and none of it stays.
    expectDatabaseFull(await call(client, 'setEach', { instanceId: INSTANCE, namespace: NS, entries: keys.map((key) => ({ key, value: BIG })) }));
    const atomic = await call(client, 'atomic', {
      instanceId: INSTANCE,
      checks: [],
      ops: keys.map((key) => ({ op: 'set', namespace: NS, key, value: BIG })),
    });
    expectDatabaseFull(atomic);

    for (const asked of [keys, smallKeys]) {
      const items = (await call(client, 'getMany', { instanceId: INSTANCE, namespace: NS, keys: asked })).data.items;
      expect(items.map((item: { exists: boolean }) => item.exists)).toEqual(asked.map(() => false));
    }
    expect((await count(client)).data).toEqual({ count: 1 });
    // There was room for part of them (which makes "none" mean something), and the failed
    // writes left no gap in the revisions.
    const after = await set(client, 'many-0', BIG);
    expect(after.success).toBe(true);
    expect(after.data.record.revision).toBe(first.data.record.revision + 1);
  });

  it('serves deletes on a database filled to the last page, and reuses the room they free', async () => {
    const { url } = await server({ maxDbBytes: MiB });
    const client = await connect(url);
    const big = await fillUp(client, 'big-', BIG);
    expectDatabaseFull(big.failure);
    // Then small values, until not even one more fits: the file is full to the last page.
    const small = await fillUp(client, 'small-', 's'.repeat(200), 5000);
    expectDatabaseFull(small.failure);

    for (const key of big.stored.slice(0, 3)) {
      expect(await call(client, 'delete', { instanceId: INSTANCE, namespace: NS, key })).toMatchObject({ success: true, data: { deleted: true } });
    }
    // Three records of 60 KB freed: one new record of that size plus its change-log entry fits.
    const again = await set(client, 'after-delete', BIG);
    expect(again).toMatchObject({ success: true });
    expect((await get(client, 'after-delete')).data).toMatchObject({ exists: true, value: BIG });
    expect((await get(client, big.stored[3]!)).data.exists).toBe(true);

    // A namespace can be emptied too, and then takes new writes.
    const dropped = await call(client, 'deleteNamespace', { instanceId: INSTANCE, namespace: NS });
    expect(dropped).toMatchObject({ success: true, data: { deletedCount: big.stored.length - 3 + small.stored.length + 1 } });
    expect((await set(client, 'fresh', BIG)).success).toBe(true);
  });

  it('applies the cap again when the server reopens the file', async () => {
    const started = await server({ maxDbBytes: MiB });
    let client = await connect(started.url);
    const { stored, failure } = await fillUp(client, 'big-', BIG);
    expectDatabaseFull(failure);
    await client.close();

    // PRAGMA max_page_count lasts as long as one connection: the reopened server must set it again.
    await started.restart();
    client = await connect(started.url);
    expectDatabaseFull(await set(client, 'big-after-restart', BIG));
    expect((await count(client)).data).toEqual({ count: stored.length });

    // A larger cap on the same file gives room again.
    await started.stop();
    const roomier = await server({ db: started.db, maxDbBytes: 4 * MiB });
    client = await connect(roomier.url);
    expect((await set(client, 'big-after-restart', BIG)).success).toBe(true);
  });

  it('answers STORAGE_ERROR the same way when the disk itself is full, and keeps serving', async () => {
    // A 2 MiB tmpfs that only the server sees: the file system runs out of room (ENOSPC).
    const dir = tempDir();
    const db = join(dir, 'kv.db');
    const proc = startCliWithMount(dir, { tmpfsBytes: 2 * MiB }, ['--port', '0', '--db', db]);
    processes.push(proc);
    const url = await proc.ready();
    const writer = await connect(url);
    const other = await connect(url);
    const { stored, failure } = await fillUp(writer, 'big-', BIG);
    expectDatabaseFull(failure);
    expect(stored.length).toBeGreaterThan(0);

    expect((await get(writer, `big-${stored.length}`)).data.exists).toBe(false);
    expect((await get(other, stored[0]!)).data).toMatchObject({ exists: true, value: BIG });
    expect((await count(other)).data).toEqual({ count: stored.length });
    expect(await call(writer, 'delete', { instanceId: INSTANCE, namespace: NS, key: stored[0]! })).toMatchObject({ success: true, data: { deleted: true } });
    expect((await set(other, 'small', 1)).success).toBe(true);
    expect(proc.child.exitCode).toBeNull();
    // It shuts down cleanly too, even with the disk full.
    proc.child.kill('SIGTERM');
    expect(await proc.exited()).toBe(0);
  });

  it('refuses a cap that is not a whole number of at least 1 byte', async () => {
    for (const maxDbBytes of [0, -1, 1.5, Number.NaN]) {
      await expect(createServer({ host: '127.0.0.1', port: 0, db: ':memory:', maxDbBytes })).rejects.toThrow(/maxDbBytes must be a whole number/);
    }
  });

  it('is set from the command line with --max-db-bytes, and bad values are refused with exit code 2', async () => {
    const db = join(tempDir(), 'capped.db');
    const proc = cli(['--port', '0', '--db', db, '--max-db-bytes', String(MiB)]);
    const client = await connect(await proc.ready());
    const { stored, failure } = await fillUp(client, 'big-', BIG);
    expectDatabaseFull(failure);
    expect((await get(client, stored[0]!)).data.exists).toBe(true);
    expect(proc.child.exitCode).toBeNull();

    for (const bad of ['0', '1e6']) {
      const refused = cli(['--port', '0', '--db', ':memory:', '--max-db-bytes', bad]);
      expect(await finished(refused)).toBe(2);
      expect(refused.stderr).toBe(`--max-db-bytes must be a whole number of at least 1, not '${bad}'.\n`);
    }
  });
});

// ---------------------------------------------------------------- a read-only database

/** A kvhub database file holding key `k` and `more` other keys, written by a real server that has since stopped. */
async function seededDatabase(dir: string, more = 0): Promise<string> {
  const db = join(dir, 'kv.db');
  const seeding = await startTestServer({ db });
  const client = await connectRaw(seeding.url);
  expect((await set(client, 'k', 'kept')).success).toBe(true);
  if (more > 0) {
    const entries = Array.from({ length: more }, (_, i) => ({ key: `k-${i}`, value: 'v'.repeat(300) }));
    expect((await call(client, 'setMany', { instanceId: INSTANCE, namespace: NS, entries })).success).toBe(true);
  }
  await client.close();
  await seeding.close();
  return db;
}

describe('a database file that cannot be written', () => {
  it('stops the server at start with one sentence and exit code 1 when the file is immutable', async () => {
    const dir = tempDir();
    const db = await seededDatabase(dir);
    // A clean shutdown leaves no -wal or -shm: SQLite opens the file read-only without a word.
    expect(existsSync(`${db}-wal`)).toBe(false);
    makeImmutable(db);
    const proc = cli(['--port', '0', '--db', db]);
    expect(await finished(proc)).toBe(1);
    expect(proc.stdout).toBe('');
    expect(proc.stderr).toBe(`kvhub cannot start: cannot open ${db} for writing: the file or its directory is read-only.\n`);
  });

  it('stops the server at start when the database is on a read-only file system', async () => {
    const dir = tempDir();
    const db = await seededDatabase(dir);
    const proc = startCliWithMount(dir, { readOnly: true }, ['--port', '0', '--db', db]);
    processes.push(proc);
    expect(await finished(proc)).toBe(1);
    expect(proc.stdout).toBe('');
    expect(proc.stderr).toBe(`kvhub cannot start: cannot open ${db} for writing: the file or its directory is read-only.\n`);
  });

  it('stops the server at start when it cannot create the -wal beside the database', async () => {
    const dir = tempDir();
    const db = await seededDatabase(dir);
    makeImmutable(dir);
    const proc = cli(['--port', '0', '--db', db]);
    expect(await finished(proc)).toBe(1);
    expect(proc.stdout).toBe('');
    expect(proc.stderr).toBe(
      `kvhub cannot start: cannot open ${db}: SQLite cannot open the file, or cannot create its -wal and -shm files beside it; check that the file and its directory exist and are writable.\n`,
    );

    // The same directory, but the database in a subdirectory that cannot be created.
    const nested = join(dir, 'sub', 'kv.db');
    const missing = cli(['--port', '0', '--db', nested]);
    expect(await finished(missing)).toBe(1);
    expect(missing.stderr).toBe(`kvhub cannot start: cannot create the directory ${join(dir, 'sub')} for the database: permission denied.\n`);
  });

  it('answers writes STORAGE_ERROR while the files turn unwritable under a running server, serves reads, and writes again after', async () => {
    const db = join(tempDir(), 'kv.db');
    const proc = cli(['--port', '0', '--db', db]);
    const url = await proc.ready();
    const writer = await connect(url);
    const reader = await connect(url);
    expect((await set(writer, 'before', { n: 1 })).success).toBe(true);
    expect(existsSync(`${db}-wal`)).toBe(true);

    // Not the -shm: SQLite maps it into memory, and a store into an immutable mapping is a
    // SIGBUS that no program survives.
    makeImmutable(db, `${db}-wal`);
    const refused = await set(writer, 'during', { n: 2 });
    expect(refused).toMatchObject({ success: false, code: 'STORAGE_ERROR' });
    expect(refused.error).toMatch(/^a disk I\/O error occurred in the database: SQLITE_IOERR/);
    expect((await get(writer, 'during')).data.exists).toBe(false);
    expect((await get(reader, 'before')).data).toMatchObject({ exists: true, value: { n: 1 } });
    expect((await call(reader, 'ping')).success).toBe(true);
    expect(proc.child.exitCode).toBeNull();

    releaseImmutable(db, `${db}-wal`);
    const later = await set(writer, 'during', { n: 3 });
    expect(later).toMatchObject({ success: true, data: { record: { version: 1 } } });
    expect((await get(reader, 'during')).data).toMatchObject({ exists: true, value: { n: 3 } });

    // And what was written survives a clean restart on the file.
    proc.child.kill('SIGTERM');
    expect(await proc.exited()).toBe(0);
    const again = cli(['--port', '0', '--db', db]);
    const client = await connect(await again.ready());
    expect((await get(client, 'during')).data.value).toEqual({ n: 3 });
    expect((await count(client)).data).toEqual({ count: 2 });
  });
});

// ---------------------------------------------------------------- a corrupt database

/** Damages a copy of a good database in one way; `file` is where the damaged copy is. */
type Damage = (file: string, good: string) => void;

const DAMAGES: [what: string, damage: Damage][] = [
  ['a file of garbage', (file) => writeFileSync(file, Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => (i * 7919 + 13) % 251)))],
  ['a text file', (file) => writeFileSync(file, 'name,value\nk,kept\n')],
  [
    'a database cut short',
    (file, good) => {
      copyFileSync(good, file);
      truncateSync(file, Math.floor(readFileSync(file).length / 2));
    },
  ],
  [
    'a database with one records page overwritten',
    (file, good) => {
      copyFileSync(good, file);
      const leaves = pagesOf(file, 'records', 'leaf');
      expect(leaves.length).toBeGreaterThan(2);
      overwritePages(file, [leaves[Math.floor(leaves.length / 2)]!], Buffer.from('not a b-tree page '));
    },
  ],
  [
    "another program's SQLite database",
    (file) => {
      // Through openDatabase: it keeps its native objects from a collector that would abort on Node 24.19+.
      const other = openDatabase(file);
      other.exec("CREATE TABLE records (name TEXT, value TEXT); INSERT INTO records VALUES ('k', 'theirs')");
      other.close();
    },
  ],
];

describe('a damaged database file', () => {
  it.each(DAMAGES)('stops the server at start with one sentence and exit code 1, leaving the file as it was: %s', async (_what, damage) => {
    const dir = tempDir();
    // Enough keys for the records table to span many pages.
    const good = await seededDatabase(dir, 400);
    const db = join(dir, 'damaged.db');
    damage(db, good);
    const before = readFileSync(db);
    const proc = cli(['--port', '0', '--db', db]);
    expect(await finished(proc)).toBe(1);
    expect(proc.stdout).toBe('');
    expect(proc.stderr).toBe(`kvhub cannot start: cannot open ${db}: the file is not a kvhub database or is corrupt.\n`);
    // Refused before writing: not even switched to WAL.
    expect(readFileSync(db).equals(before)).toBe(true);
  });

  it('refuses the same files when the server is embedded: createServer rejects with a DatabaseOpenError', async () => {
    const db = join(tempDir(), 'garbage.db');
    DAMAGES[0]![1](db, '');
    const failure = await createServer({ host: '127.0.0.1', port: 0, db }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(DatabaseOpenError);
    expect(failure).toMatchObject({ code: 'STORAGE_ERROR', reason: 'corrupt', path: db, cause: { code: 'SQLITE_NOTADB' } });
  });

  it('answers STORAGE_ERROR, not a crash, when a read finds a page damaged while the server runs', async () => {
    const dir = tempDir();
    const db = join(dir, 'kv.db');
    // About 24 MB of records, more than the server's page cache holds (better-sqlite3's default,
    // 16000 KiB): a scan of the table in key order then finds none of its pages still cached from
    // the scan before (least recently used goes first), so it reads every page from the file.
    const seeding = await startTestServer({ db });
    let client = await connectRaw(seeding.url);
    const BATCHES = 27;
    for (let batch = 0; batch < BATCHES; batch++) {
      const entries = Array.from({ length: 1000 }, (_, i) => ({ key: `k-${batch}-${i}`, value: `${batch}-${i}-`.padEnd(900, 'v') }));
      expect((await call(client, 'setMany', { instanceId: INSTANCE, namespace: NS, entries, autoCreateInstance: true })).success).toBe(true);
    }
    await client.close();
    await seeding.close();
    const leaves = pagesOf(db, 'records', 'leaf');
    expect(leaves.length * PAGE_SIZE).toBeGreaterThan(16_000 * 1024 * 1.3);

    const proc = cli(['--port', '0', '--db', db]);
    const url = await proc.ready();
    client = await connect(url);
    const other = await connect(url);
    expect((await count(client)).data).toEqual({ count: BATCHES * 1000 });

    // Every leaf page of the records table, behind the running server's back.
    overwritePages(db, leaves, Buffer.from('garbage in a b-tree page '));
    const scan = await count(client);
    expect(scan).toMatchObject({ success: false, code: 'STORAGE_ERROR' });
    expect(scan.error).toMatch(/^the database file is corrupt: SQLITE_CORRUPT/);
    // The same read on another connection fails the same way: the damage is in the file.
    expect(await count(other)).toMatchObject({ success: false, code: 'STORAGE_ERROR' });

    // The server lives on: both connections are answered, and what is not damaged is served.
    expect((await call(client, 'ping')).data).toEqual({ pong: true });
    expect((await call(other, 'getInstance', { instanceId: INSTANCE })).data.instance).toMatchObject({ id: INSTANCE });
    expect((await fetch(`${url.replace('ws:', 'http:')}/healthz`)).status).toBe(200);
    expect(proc.child.exitCode).toBeNull();

    // Stopped, it will not start again on the damaged file.
    proc.child.kill('SIGTERM');
    expect(await proc.exited()).toBe(0);
    const again = cli(['--port', '0', '--db', db]);
    expect(await finished(again)).toBe(1);
    expect(again.stderr).toBe(`kvhub cannot start: cannot open ${db}: the file is not a kvhub database or is corrupt.\n`);
  }, 60_000);
});
