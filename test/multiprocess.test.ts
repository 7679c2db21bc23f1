/**
 * Many OS processes sharing one store: each worker in test/fixtures/ is a separate Node process
 * with its own SDK client, talking to a real server over a real socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createClient } from 'kvhub';
import { startTestServer, type TestServer } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A worker process from test/fixtures/ and the JSON lines it printed so far. */
interface Worker {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[];
  stderr: string;
  /** Resolves with the first line (already printed or still to come) that `match` accepts. */
  waitFor(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the `result` of the worker's last line once it has exited 0; rejects on any other exit. */
  result<T>(timeoutMs?: number): Promise<T>;
  /** Writes one line to the worker's stdin. */
  send(line: string): void;
}

const children = new Set<ChildProcess>();
const servers = new Set<TestServer>();

afterEach(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.clear();
  await Promise.all([...servers].map((s) => s.close()));
  servers.clear();
});

async function server(): Promise<TestServer> {
  const s = await startTestServer();
  servers.add(s);
  return s;
}

function startWorker(script: string, args: object): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', `test/fixtures/${script}`, JSON.stringify(args)], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  const listeners = new Set<() => void>();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let partial = '';
  const worker: Worker = {
    child,
    lines: [],
    stderr: '',
    waitFor(match, what, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = worker.lines.find(match);
          if (found === undefined) return false;
          done();
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${script}: no ${what} within ${timeoutMs} ms; stderr: ${worker.stderr}`));
        }, timeoutMs);
        const onExit = () => {
          if (check()) return;
          done();
          reject(new Error(`${script} exited (${child.exitCode}) before ${what}; stderr: ${worker.stderr}`));
        };
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', onExit);
        };
        if (check()) return;
        listeners.add(check);
        child.once('exit', onExit);
      });
    },
    async result<T>(timeoutMs = 30_000) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${script} did not exit within ${timeoutMs} ms; stderr: ${worker.stderr}`)), timeoutMs);
      });
      try {
        const code = await Promise.race([exited, timeout]);
        if (code !== 0) throw new Error(`${script} exited with ${code}; stderr: ${worker.stderr}`);
      } finally {
        clearTimeout(timer);
      }
      const last = worker.lines.at(-1);
      if (last === undefined || !('result' in last)) throw new Error(`${script} printed no result`);
      return last.result as T;
    },
    send(line) {
      child.stdin!.write(`${line}\n`);
    },
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const complete = partial.split('\n');
    partial = complete.pop()!;
    for (const line of complete) if (line.trim() !== '') worker.lines.push(parseLine(line));
    for (const listener of [...listeners]) listener();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (worker.stderr += chunk));
  child.stdin!.on('error', () => {});
  return worker;
}

/** A worker's stdout line: JSON by contract; anything else is kept as text rather than thrown. */
function parseLine(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { text: line };
  }
}

/** Waits until every worker is connected, then lets them all go at once. */
async function startTogether(workers: Worker[]): Promise<void> {
  await Promise.all(workers.map((w) => w.waitFor((line) => line.ready === true, 'ready line')));
  for (const w of workers) w.send('go');
}

describe('many processes, one store', () => {
  it('4 processes × 500 incr on one key end at exactly 2000, each value handed out once', { timeout: 60_000 }, async () => {
    const s = await server();
    const workers = Array.from({ length: 4 }, () =>
      startWorker('incr-worker.ts', { url: s.url, instanceId: 'mp', namespace: 'counters', key: 'hits', count: 500, window: 8 }),
    );
    await startTogether(workers);
    const results = await Promise.all(workers.map((w) => w.result<{ values: number[] }>()));

    const values = results.flatMap((r) => r.values).sort((a, b) => a - b);
    expect(values).toEqual(Array.from({ length: 2000 }, (_, i) => i + 1));
    const client = createClient({ url: s.url });
    try {
      expect(await client.instance('mp').namespace('counters').get('hits')).toBe(2000);
    } finally {
      await client.close();
    }
  });

  it('4 processes running update() loops on 3 shared records lose no update', { timeout: 60_000 }, async () => {
    const s = await server();
    const keys = ['a', 'b', 'c'];
    const workers = Array.from({ length: 4 }, (_, i) =>
      startWorker('update-worker.ts', { url: s.url, instanceId: 'mp', namespace: 'shared', keys, count: 100, workerId: `w${i}` }),
    );
    await startTogether(workers);
    const results = await Promise.all(workers.map((w) => w.result<{ written: Record<string, string[]>; retries: number }>()));

    const client = createClient({ url: s.url });
    try {
      const ns = client.instance('mp').namespace('shared');
      let total = 0;
      for (const key of keys) {
        const record = await ns.get<{ n: number; log: string[] }>(key);
        const expected = results.flatMap((r) => r.written[key] ?? []);
        expect(record).toBeDefined();
        // Every acknowledged update is in the log exactly once, and nothing else is.
        expect([...record!.log].sort()).toEqual([...expected].sort());
        expect(new Set(record!.log).size).toBe(record!.log.length);
        expect(record!.n).toBe(record!.log.length);
        // Each worker's own entries stay in the order it wrote them.
        for (let i = 0; i < 4; i++) {
          const mine = record!.log.filter((e) => e.startsWith(`w${i}:`));
          expect(mine).toEqual(results[i]!.written[key] ?? []);
        }
        total += record!.n;
      }
      expect(total).toBe(400);
    } finally {
      await client.close();
    }
  });

  it('a watcher process sees every matching change once and in order, across a server restart', { timeout: 60_000 }, async () => {
    const s = await server();
    const client = createClient({ url: s.url, reconnect: { initialDelayMs: 50, maxDelayMs: 250 } });
    try {
      const ns = client.instance('mp', { autoCreate: true }).namespace('feed');
      // Changes made before the watcher subscribes come to it by replay (fromRevision).
      const from = (await ns.set('before-the-watch', 0)).revision;
      const early = [(await ns.set('k:early:0', 0)).revision, (await ns.set('k:early:1', 1)).revision];
      await ns.set('not-watched', 0);

      const watcher = startWorker('watch-worker.ts', { url: s.url, instanceId: 'mp', namespace: 'feed', prefix: 'k:', fromRevision: from });
      const writers = Array.from({ length: 3 }, (_, i) =>
        startWorker('write-worker.ts', { url: s.url, instanceId: 'mp', namespace: 'feed', prefix: 'k:', writerId: `w${i}`, count: 60, intervalMs: 5 }),
      );
      await watcher.waitFor((line) => line.ready === true, 'subscription');
      await startTogether(writers);

      // Restart the server (same port, same file) while every writer is mid-way.
      await Promise.all(writers.map((w) => w.waitFor((line) => Number(line.progress) >= 20, '20 writes')));
      const revisionAtStop = await s.server.engine.currentRevision();
      await s.stop();
      await new Promise((resolve) => setTimeout(resolve, 300));
      await s.restart();

      const results = await Promise.all(writers.map((w) => w.result<{ revisions: Record<string, number>; unwatched: number[] }>()));
      // Events come in revision order: once the watcher has this one, it has had every earlier one.
      const last = (await ns.set('k:last', 'end')).revision;
      await watcher.waitFor((line) => (line.event as { revision?: number } | undefined)?.revision === last, `the event of revision ${last}`);
      watcher.send('stop');
      const { count } = await watcher.result<{ count: number }>();

      const written = results.flatMap((r) => Object.values(r.revisions));
      const expected = [...early, ...written, last].sort((a, b) => a - b);
      expect(new Set(expected).size).toBe(expected.length);
      // The restart really fell in the middle of the writes.
      expect(written.some((r) => r <= revisionAtStop)).toBe(true);
      expect(written.some((r) => r > revisionAtStop)).toBe(true);

      const events = watcher.lines.flatMap((line) =>
        line.event === undefined ? [] : [line.event as { revision: number; kind: string; key: string; recordRevision: number }],
      );
      const seen = events.map((e) => e.revision);
      expect(seen).toEqual(expected); // each once, strictly increasing, none missing, none extra
      expect(count).toBe(expected.length);
      for (const e of events) {
        expect(e.kind).toBe('set');
        expect(e.key.startsWith('k:')).toBe(true);
        expect(e.recordRevision).toBe(e.revision);
      }
      // Nothing outside the filter leaked in.
      const unwatched = new Set(results.flatMap((r) => r.unwatched));
      expect(seen.filter((r) => unwatched.has(r))).toEqual([]);
    } finally {
      await client.close();
    }
  });
});
