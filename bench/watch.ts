/**
 * Watch benchmark: prints figures, asserts nothing about speed. Never part of `npm test`.
 *
 *   npm run bench:watch
 *
 * For each durability (full, then normal) it starts a kvhub server in this process on a free
 * loopback port with a temporary database file, and measures:
 *
 * 1. Fan-out under load: 1, then 10 watchers (each its own connection, all in one child process)
 *    subscribe to a namespace while a second child process runs a `set` load over 50 connections
 *    for LOAD_MS. Reported: writes acknowledged per second; events delivered per second (in all,
 *    and per watcher) from the start of the load until the last watcher has the last write; the
 *    latency from a writer sending its `set` to a watcher receiving the event (median and 99th
 *    percentile over every event); how long the watchers took to catch up after the load stopped;
 *    and whether every watcher got exactly one event per acknowledged write.
 * 2. Replay: REPLAY_CHANGES changes written with `setMany` batches into a fresh database, then a
 *    subscription with `fromRevision: 0` in a child process; reported: the time from sending the
 *    watch until the last replayed event arrived.
 *
 * The clients run in child processes so that the server does not share its event loop with them.
 * Every step has a time limit, and the whole run gives up after OVERALL_LIMIT_MS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createClient } from '../sdk/index.js';
import { createServer } from '../server/index.js';
import { parentLines } from './parent-lines.js';

const LOAD_CONNECTIONS = 50;
const LOAD_MS = 5_000;
const WATCHER_COUNTS = [1, 10];
const REPLAY_CHANGES = 100_000;
const SET_MANY_BATCH = 1_000;
const OVERALL_LIMIT_MS = 170_000;
const INSTANCE = 'bench';

type Durability = 'full' | 'normal';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes on one machine. */
const now = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------------ child-process roles

/** One JSON line to the parent. */
function say(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}


/** `set` load over `connections` clients for `durationMs`, one request in flight per connection. */
async function runLoad({ url, connections, durationMs }: { url: string; connections: number; durationMs: number }): Promise<void> {
  const next = parentLines();
  const clients = Array.from({ length: connections }, () => createClient({ url, reconnect: false }));
  await Promise.all(clients.map((c) => c.waitForReady()));
  say({ ready: true });
  while ((await next()) !== 'go');
  const started = performance.now();
  const deadline = started + durationMs;
  let acked = 0;
  let failed = 0;
  let maxRevision = 0;
  await Promise.all(
    clients.map(async (client, c) => {
      const ns = client.instance(INSTANCE).namespace('load');
      for (let i = 0; performance.now() < deadline; i++) {
        try {
          // `t` (wall clock, sub-millisecond) lets the watchers measure how long an event took to reach them.
          const record = await ns.set(`c${c}:${i % 100}`, { c, i, t: now() });
          acked++;
          if (record.revision > maxRevision) maxRevision = record.revision;
        } catch {
          failed++;
        }
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  await Promise.all(clients.map((c) => c.close()));
  say({ result: { acked, failed, maxRevision, elapsedMs } });
}

/** `watchers` subscriptions on the load namespace, each on its own connection, counting events. */
async function runWatchers({ url, watchers }: { url: string; watchers: number }): Promise<void> {
  const next = parentLines();
  const counts = new Array<number>(watchers).fill(0);
  const lastSeen = new Array<number>(watchers).fill(0);
  const latencies: number[] = [];
  let counting = false;
  const clients = Array.from({ length: watchers }, () => createClient({ url, reconnect: false }));
  const subscriptions = clients.map((client, w) =>
    client.kvStore.watch(INSTANCE, {
      namespace: 'load',
      onEvent: (event) => {
        lastSeen[w] = event.revision;
        if (!counting) return;
        counts[w]!++;
        const sent = (event.record?.value as { t?: unknown } | undefined)?.t;
        if (typeof sent === 'number') latencies.push(now() - sent);
      },
    }),
  );
  await Promise.all(subscriptions.map((s) => s.ready));
  say({ ready: true });
  while ((await next()) !== 'go');
  counting = true;
  const started = performance.now();
  const until = Number(JSON.parse(await next()).until);
  const loadStopped = performance.now();
  // The load has stopped; wait for every watcher to have the last write (bounded).
  while (lastSeen.some((r) => r < until) && performance.now() - loadStopped < 60_000) await sleep(1);
  const done = performance.now();
  await Promise.all(subscriptions.map((s) => s.unsubscribe()));
  await Promise.all(clients.map((c) => c.close()));
  latencies.sort((a, b) => a - b);
  const percentile = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN;
  say({
    result: {
      counts,
      latencyP50Ms: percentile(0.5),
      latencyP99Ms: percentile(0.99),
      caughtUp: lastSeen.every((r) => r >= until),
      elapsedMs: done - started,
      catchUpMs: done - loadStopped,
    },
  });
}

/** One subscription replaying `expected` changes from revision 0; times the replay. */
async function runReplay({ url, expected }: { url: string; expected: number }): Promise<void> {
  const client = createClient({ url, reconnect: false });
  await client.waitForReady();
  let count = 0;
  let resolveAll!: () => void;
  const all = new Promise<void>((resolve) => (resolveAll = resolve));
  const started = performance.now();
  const subscription = client.kvStore.watch(INSTANCE, {
    namespace: 'replay',
    fromRevision: 0,
    onEvent: () => {
      if (++count === expected) resolveAll();
    },
  });
  const reply = await subscription.ready;
  const replyMs = performance.now() - started;
  await Promise.race([all, sleep(60_000)]);
  const elapsedMs = performance.now() - started;
  await subscription.unsubscribe();
  await client.close();
  say({ result: { count, replyMs, elapsedMs, serverRevision: reply.revision } });
}

// ------------------------------------------------------------------------ the parent

interface Child {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string;
  /** The first line that matches, within `ms`. */
  waitFor(match: (line: Record<string, unknown>) => boolean, ms: number, what: string): Promise<Record<string, unknown>>;
  send(line: string): void;
}

const children = new Set<ChildProcess>();

function startChild(role: string, args: object): Child {
  // process.execArgv carries tsx's loader, so the child runs this TypeScript file the same way.
  const proc = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), role, JSON.stringify(args)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  const listeners = new Set<() => void>();
  const child: Child = {
    proc,
    lines: [],
    stderr: '',
    waitFor(match, ms, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = child.lines.find(match);
          if (found === undefined) return;
          cleanup();
          resolve(found);
        };
        const onExit = () => {
          check();
          cleanup();
          reject(new Error(`${role} exited before ${what}: ${child.stderr.trim()}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${role}: no ${what} within ${ms} ms: ${child.stderr.trim()}`));
        }, ms);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
          proc.off('exit', onExit);
        };
        listeners.add(check);
        proc.once('exit', onExit);
        check();
      });
    },
    send(line) {
      proc.stdin!.write(`${line}\n`);
    },
  };
  createInterface({ input: proc.stdout! }).on('line', (text) => {
    child.lines.push(JSON.parse(text) as Record<string, unknown>);
    for (const listener of [...listeners]) listener();
  });
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (child.stderr += chunk));
  proc.stdin!.on('error', () => {});
  return child;
}

interface FanOutRow {
  watchers: number;
  writesPerSec: number;
  eventsPerSec: number;
  perWatcherPerSec: number;
  catchUpMs: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  complete: boolean;
}

async function fanOut(url: string, watchers: number): Promise<FanOutRow> {
  const watching = startChild('watchers', { url, watchers });
  await watching.waitFor((l) => l.ready === true, 30_000, 'subscriptions');
  const load = startChild('load', { url, connections: LOAD_CONNECTIONS, durationMs: LOAD_MS });
  await load.waitFor((l) => l.ready === true, 30_000, 'load connections');
  watching.send('go');
  load.send('go');
  const loadResult = (await load.waitFor((l) => l.result !== undefined, LOAD_MS + 30_000, 'load result')).result as {
    acked: number;
    failed: number;
    maxRevision: number;
    elapsedMs: number;
  };
  watching.send(JSON.stringify({ until: loadResult.maxRevision }));
  const watchResult = (await watching.waitFor((l) => l.result !== undefined, 90_000, 'watcher result')).result as {
    counts: number[];
    caughtUp: boolean;
    elapsedMs: number;
    catchUpMs: number;
    latencyP50Ms: number;
    latencyP99Ms: number;
  };
  if (loadResult.failed > 0) process.stderr.write(`warning: ${loadResult.failed} writes failed\n`);
  const events = watchResult.counts.reduce((a, b) => a + b, 0);
  const eventsPerSec = events / (watchResult.elapsedMs / 1000);
  return {
    watchers,
    writesPerSec: loadResult.acked / (loadResult.elapsedMs / 1000),
    eventsPerSec,
    perWatcherPerSec: eventsPerSec / watchers,
    catchUpMs: watchResult.catchUpMs,
    latencyP50Ms: watchResult.latencyP50Ms,
    latencyP99Ms: watchResult.latencyP99Ms,
    complete: watchResult.caughtUp && watchResult.counts.every((c) => c === loadResult.acked),
  };
}

interface ReplayRow {
  writeMs: number;
  replayMs: number;
  replyMs: number;
  count: number;
}

async function replay(durability: Durability): Promise<ReplayRow> {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-bench-replay-'));
  const server = await createServer({
    host: '127.0.0.1',
    port: 0,
    db: join(dir, 'bench.db'),
    durability,
    changeRetention: { maxCount: REPLAY_CHANGES * 2 },
  });
  const client = createClient({ url: server.url });
  try {
    await client.kvStore.createInstance(INSTANCE, 'watch benchmark', { id: INSTANCE });
    const ns = client.instance(INSTANCE).namespace('replay');
    const writeStarted = performance.now();
    for (let done = 0; done < REPLAY_CHANGES; done += SET_MANY_BATCH) {
      await ns.setMany(Array.from({ length: SET_MANY_BATCH }, (_, i) => [`k${done + i}`, { n: done + i }] as const));
    }
    const writeMs = performance.now() - writeStarted;
    const child = startChild('replay', { url: server.url, expected: REPLAY_CHANGES });
    const result = (await child.waitFor((l) => l.result !== undefined, 90_000, 'replay result')).result as {
      count: number;
      replyMs: number;
      elapsedMs: number;
    };
    return { writeMs, replayMs: result.elapsedMs, replyMs: result.replyMs, count: result.count };
  } finally {
    await client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchDurability(durability: Durability): Promise<{ rows: FanOutRow[]; replay: ReplayRow }> {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-bench-'));
  const server = await createServer({ host: '127.0.0.1', port: 0, db: join(dir, 'bench.db'), durability });
  const rows: FanOutRow[] = [];
  try {
    const client = createClient({ url: server.url });
    await client.kvStore.createInstance(INSTANCE, 'watch benchmark', { id: INSTANCE });
    await client.close();
    for (const watchers of WATCHER_COUNTS) rows.push(await fanOut(server.url, watchers));
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { rows, replay: await replay(durability) };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function printResults(durability: Durability, { rows, replay: r }: { rows: FanOutRow[]; replay: ReplayRow }): void {
  console.log(`\ndurability ${durability}`);
  console.log(`  ${LOAD_CONNECTIONS}-connection set load for ${LOAD_MS / 1000} s, watchers on the written namespace`);
  console.log('  (latency: from a writer sending set to a watcher receiving the event; catch-up: after the load stopped)');
  const header = ['watchers', 'writes/s', 'events/s total', 'events/s per watcher', 'latency p50', 'p99', 'catch-up', 'every event'];
  const table = rows.map((row) => [
    String(row.watchers),
    fmt(row.writesPerSec),
    fmt(row.eventsPerSec),
    fmt(row.perWatcherPerSec),
    `${row.latencyP50Ms.toFixed(1)} ms`,
    `${row.latencyP99Ms.toFixed(1)} ms`,
    `${fmt(row.catchUpMs)} ms`,
    row.complete ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
  for (const line of [header, ...table]) console.log(`  ${line.map((cell, i) => cell.padStart(widths[i]!)).join('  ')}`);
  const perSec = r.count / (r.replayMs / 1000);
  console.log(
    `  replay of ${fmt(REPLAY_CHANGES)} changes (fromRevision 0): ${fmt(r.replayMs)} ms to the last event` +
      ` (${fmt(perSec)} events/s; watch reply after ${fmt(r.replyMs)} ms)${r.count === REPLAY_CHANGES ? '' : `, ONLY ${fmt(r.count)} EVENTS`}`,
  );
  console.log(`  (writing them: ${fmt(r.writeMs)} ms, ${REPLAY_CHANGES / SET_MANY_BATCH} setMany of ${fmt(SET_MANY_BATCH)})`);
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: gave up after ${OVERALL_LIMIT_MS / 1000} s\n`);
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  }, OVERALL_LIMIT_MS);
  const started = performance.now();
  console.log(`kvhub watch benchmark: node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'}), ${process.platform} ${process.arch}`);
  for (const durability of ['full', 'normal'] as const) printResults(durability, await benchDurability(durability));
  console.log(`\nfinished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  clearTimeout(watchdog);
}

const role = process.argv[2];
const roleArgs = JSON.parse(process.argv[3] ?? '{}');
const run =
  role === 'load' ? runLoad(roleArgs) : role === 'watchers' ? runWatchers(roleArgs) : role === 'replay' ? runReplay(roleArgs) : main();
run.then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  },
);
