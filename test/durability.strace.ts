/**
 * The durability check that needs strace, kept out of `npm test` (a fresh machine has no strace):
 * `npm run test:durability` runs it, and CI installs strace first. `npm test` checks the pragma
 * in-process (test/storage-sqlite.test.ts); this checks what the server process really does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CRASH_INSTANCE, CRASH_NAMESPACE, crashValue } from './fixtures/crash-data.js';
import { checkClient, killStarted, requireStrace, SOURCE_CLI, startServer, straceCallsByFile } from './helpers/crash.js';

const dirs: string[] = [];
afterEach(async () => {
  await killStarted();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-durability-'));
  dirs.push(dir);
  return dir;
}

describe('durability full, seen from outside the server', () => {
  /**
   * `synchronous` is a per-connection setting inside the server process, invisible from outside,
   * and hello's `durability` only echoes the configuration. So this counts what the process
   * really does: in WAL mode, SQLite with synchronous=FULL fsyncs the WAL at every commit, and
   * with NORMAL only at checkpoints. N writes sent one after another (each awaited, so each is
   * its own transaction whatever batching the server does) must cause at least N fsyncs of
   * `<db>-wal` under the default durability; a server that ran NORMAL would fail that. The same
   * writes under `--durability normal` are the control: far fewer fsyncs, which shows the count
   * tells the two settings apart.
   */
  it('the default durability (full) fsyncs the WAL at least once per acknowledged sequential write; normal does not', { timeout: 60_000 }, async () => {
    requireStrace();
    const WRITES = 40;
    const run = async (args: string[]) => {
      const dir = tempDir();
      const db = join(dir, 'durability.db');
      const out = join(dir, 'strace.log');
      const server = await startServer({ cli: SOURCE_CLI, db, args, strace: { out, summary: false } });
      const client = checkClient(server.url);
      let durability: string;
      let acked = 0;
      try {
        const hello = await client.kvStore.hello();
        if (!hello.success) throw new Error(`hello failed: ${hello.code} ${hello.error}`);
        durability = hello.data.durability;
        for (let i = 0; i < WRITES; i++) {
          const key = `seq:${i}`;
          const reply = await client.kvStore.set(CRASH_INSTANCE, CRASH_NAMESPACE, key, crashValue(key), true);
          if (reply.success) acked++;
        }
      } finally {
        await client.close();
      }
      expect(await server.stop()).toBe(0);
      const calls = straceCallsByFile(readFileSync(out, 'utf8'));
      return { durability, acked, walSyncs: calls.get(`${db}-wal`) ?? 0, calls };
    };

    const full = await run([]);
    const normal = await run(['--durability', 'normal']);
    console.log(
      `durability: ${WRITES} sequential writes → ${full.walSyncs} fsyncs of the WAL with the default (full), ${normal.walSyncs} with normal ` +
        `(all files: ${JSON.stringify(Object.fromEntries(full.calls))})`,
    );
    expect(full.durability).toBe('full');
    expect(full.acked).toBe(WRITES);
    expect(full.walSyncs).toBeGreaterThanOrEqual(WRITES);
    expect(normal.durability).toBe('normal');
    expect(normal.acked).toBe(WRITES);
    expect(normal.walSyncs).toBeLessThan(WRITES / 2);
  });
});
