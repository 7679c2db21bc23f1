/**
 * Comparison benchmark: prints figures, asserts nothing about speed. Never part of `npm test`.
 *
 *   npm run bench                      # the whole matrix, 3 rounds (about 10 minutes on 2 cores)
 *   KVHUB_BENCH_QUICK=1 npm run bench  # smoke run: 1 short round (about 1.5 minutes)
 *
 * It measures kvhub against a floor, a ceiling and a peer, interleaved over several rounds
 * (every system runs a workload and load right after the others, in an order that rotates
 * between rounds), and reports the median of the rounds. See bench/README.md for what each
 * column means, the environment variables, and how workloads map onto Redis.
 *
 * - floor: bench/floor-server.ts, a bare `ws` server answering each frame with a reply of the
 *   size of kvhub's and doing nothing else;
 * - kvhub: the CLI (`server/cli.ts`) with `--durability full` and `normal`, driven with raw frames
 *   and with the SDK;
 * - peer: redis-server (appendfsync always and everysec) through ioredis, with and without
 *   enableAutoPipelining;
 * - ceiling: better-sqlite3 in-process doing the same writes batched (bench/ceiling.ts).
 *
 * The load comes from bench/driver.ts, a separate process. Every server is a child process on a
 * free 127.0.0.1 port with its data in a temporary directory; all are stopped by PID and the
 * directory removed at the end, also on Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { IdleTarget, RunCommand, RunResult, Target } from './driver.js';
import {
  REPO_ROOT,
  cpuTimeUs,
  machineCpu,
  redisVersion,
  rssBytes,
  startDriver,
  startFloor,
  startKvhub,
  startRedis,
  stealShare,
  stopAll,
  type Child,
  type Driver,
} from './processes.js';
import { compileKvhub } from './build.js';
import { preloadKvhub, preloadRedis, sampleReplies } from './setup.js';
import { median } from './stats.js';
import { CEILING_RECORDS_PER_TXN } from './ceiling.js';
import { REDIS_MAPPING, SET_MANY_SIZE, VALUE_JSON, WORKLOADS, type Workload } from './workloads.js';
import { checkTargets, type TargetResult } from './targets.js';
import { ALL_SERIES, CLIENTS, KVHUB_IDLE_LABEL, LOADS, SYSTEMS, matrixCells, type CellId, type ClientId, type LoadId, type Series, type SystemId } from './matrix.js';

// ------------------------------------------------------------------------ configuration (environment)

function listFromEnv<T extends string>(name: string, allowed: readonly T[]): T[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return [...allowed];
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      process.stderr.write(`${name}: '${item}' is not one of ${allowed.join(', ')}\n`);
      process.exit(2);
    }
  }
  return items as T[];
}

function numberFromEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    process.stderr.write(`${name} must be a number of at least ${min}, not '${raw}'\n`);
    process.exit(2);
  }
  return value;
}

const QUICK = process.env['KVHUB_BENCH_QUICK'] === '1';
const config = {
  quick: QUICK,
  rounds: Math.round(numberFromEnv('KVHUB_BENCH_ROUNDS', QUICK ? 1 : 3, 1)),
  seconds: numberFromEnv('KVHUB_BENCH_SECONDS', QUICK ? 0.2 : 0.8, 0.05),
  warmupSeconds: numberFromEnv('KVHUB_BENCH_WARMUP_SECONDS', QUICK ? 0.05 : 0.15, 0),
  idleConnections: Math.round(numberFromEnv('KVHUB_BENCH_IDLE_CONNECTIONS', QUICK ? 500 : 10_000, 0)),
  limitMinutes: numberFromEnv('KVHUB_BENCH_LIMIT_MINUTES', QUICK ? 5 : 25, 1),
  systems: listFromEnv('KVHUB_BENCH_SYSTEMS', SYSTEMS),
  clients: listFromEnv('KVHUB_BENCH_CLIENTS', CLIENTS),
  workloads: listFromEnv('KVHUB_BENCH_WORKLOADS', WORKLOADS),
  loads: listFromEnv('KVHUB_BENCH_LOADS', LOADS.map((l) => l.id)),
  out: resolve(REPO_ROOT, process.env['KVHUB_BENCH_OUT'] ?? 'bench/results.json'),
  dir: process.env['KVHUB_BENCH_DIR'] ?? tmpdir(),
};

const series = ALL_SERIES.filter((s) => config.systems.includes(s.system) && config.clients.includes(s.client));
const needs = (system: SystemId) => series.some((s) => s.system === system);

// ------------------------------------------------------------------------ results

interface RoundFigures {
  round: number;
  opsPerSec: number;
  /** False when no reply came inside the window: opsPerSec then counts the drain too. */
  windowed: boolean;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Server CPU per op in microseconds (for the ceiling, its own process's CPU). */
  serverCpuUsPerOp: number;
  /** The part of the server's CPU time spent in the kernel (system time), 0 to 1. */
  serverSystemShare: number;
  /** Driver CPU per op in microseconds (not for the ceiling). */
  driverCpuUsPerOp: number;
  /** The share of the machine's CPU time the hypervisor gave to other guests during the window, 0 to 1. */
  stealShare: number;
  /** Ops answered from the window's start until the last reply; of those, within the window. */
  ops: number;
  windowOps: number;
  windowMs: number;
  /** From the window's start to the last reply (the drain included). */
  elapsedMs: number;
  errors: Record<string, number>;
  stuck: number;
}

interface Cell extends CellId {
  rounds: RoundFigures[];
  failures: string[];
  median?: { opsPerSec: number; p50Ms: number; p99Ms: number; serverCpuUsPerOp: number; serverSystemShare: number; driverCpuUsPerOp: number };
  vsFloor?: number;
  vsRedis?: number;
  /** The Redis series `vsRedis` compares with. */
  redisPeer?: string;
}

interface IdleFigures {
  system: string;
  connections: number;
  opened: number;
  failed: number;
  rssBeforeBytes: number;
  rssWithBytes: number;
  bytesPerConnection: number;
  error?: string;
}

// ------------------------------------------------------------------------ running

interface Servers {
  kvhubFull?: { child: Child; url: string };
  kvhubNormal?: { child: Child; url: string };
  floor?: { child: Child; url: string };
  redisAlways?: { child: Child; port: number };
  redisEverysec?: { child: Child; port: number };
}

function targetOf(s: Series, servers: Servers, dir: string): { target: Target; pid?: number } {
  switch (s.system) {
    case 'floor':
      return { target: { kind: 'raw', url: servers.floor!.url }, pid: servers.floor!.child.pid };
    case 'kvhub-full':
    case 'kvhub-normal': {
      const server = s.system === 'kvhub-full' ? servers.kvhubFull! : servers.kvhubNormal!;
      return { target: { kind: s.client === 'sdk' ? 'sdk' : 'raw', url: server.url }, pid: server.child.pid };
    }
    case 'redis-always':
    case 'redis-everysec': {
      const server = s.system === 'redis-always' ? servers.redisAlways! : servers.redisEverysec!;
      return { target: { kind: 'redis', port: server.port, autoPipelining: s.client === 'ioredis-ap' }, pid: server.child.pid };
    }
    case 'ceiling':
      return { target: { kind: 'ceiling', dir } };
  }
}

let driver: Driver | undefined;

async function freshDriver(): Promise<Driver> {
  if (driver !== undefined) await driver.child.stop(2000);
  driver = await startDriver();
  return driver;
}

/** One measured run of a cell; its figures, or a sentence saying why there are none. */
async function runCell(cell: Cell, round: number, servers: Servers, dir: string): Promise<RoundFigures | string> {
  const { target, pid } = targetOf(cell, servers, dir);
  const warmupMs = Math.round(config.warmupSeconds * 1000);
  const durationMs = Math.round(config.seconds * 1000);
  const command: RunCommand = {
    cmd: 'run',
    target,
    workload: cell.workload,
    connections: cell.connections,
    depth: cell.depth,
    warmupMs,
    durationMs,
  };
  const d = driver ?? (await freshDriver());
  try {
    d.send(command);
    const measuring = await d.next(warmupMs + 60_000);
    if (measuring['measuring'] !== true) return String(measuring['error'] ?? JSON.stringify(measuring));
    const cpu0 = pid === undefined ? undefined : cpuTimeUs(pid);
    const machine0 = machineCpu();
    const stopped = await d.next(durationMs + 60_000);
    const cpu1 = pid === undefined ? undefined : cpuTimeUs(pid);
    const machine1 = machineCpu();
    if (stopped['stopped'] !== true) return String(stopped['error'] ?? JSON.stringify(stopped));
    const line = await d.next(30_000);
    if (line['result'] === undefined) return String(line['error'] ?? JSON.stringify(line));
    const result = line['result'] as RunResult;
    if (result.ops === 0) return `no request succeeded (errors: ${JSON.stringify(result.errors)}, stuck: ${result.stuck})`;
    // A window shorter than one reply: count the drain too rather than report nothing.
    const windowed = result.windowOps > 0;
    const serverUser = cpu0 === undefined || cpu1 === undefined ? result.selfCpuUs : cpu1.user - cpu0.user;
    const serverSystem = cpu0 === undefined || cpu1 === undefined ? 0 : cpu1.system - cpu0.system;
    return {
      round,
      opsPerSec: windowed ? result.windowOps / (result.windowMs / 1000) : result.ops / (result.elapsedMs / 1000),
      windowed,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      maxMs: result.maxMs,
      serverCpuUsPerOp: (serverUser + serverSystem) / result.ops,
      serverSystemShare: cpu0 === undefined ? Number.NaN : serverSystem / Math.max(1, serverUser + serverSystem),
      driverCpuUsPerOp: pid === undefined ? Number.NaN : result.selfCpuUs / result.ops,
      stealShare: stealShare(machine0, machine1),
      ops: result.ops,
      windowOps: result.windowOps,
      windowMs: result.windowMs,
      elapsedMs: result.elapsedMs,
      errors: result.errors,
      stuck: result.stuck,
    };
  } catch (error) {
    // A driver that timed out or died is out of step with us: start a new one for the next cell.
    await freshDriver();
    return (error as Error).message;
  }
}

async function measureIdle(system: string, pid: number, target: IdleTarget, count: number): Promise<IdleFigures> {
  const d = driver ?? (await freshDriver());
  const figures: IdleFigures = { system, connections: count, opened: 0, failed: 0, rssBeforeBytes: rssBytes(pid), rssWithBytes: 0, bytesPerConnection: 0 };
  try {
    d.send({ cmd: 'idle', target, count });
    const opened = await d.next(120_000);
    if (opened['opened'] === undefined) throw new Error(String(opened['error'] ?? JSON.stringify(opened)));
    figures.opened = Number(opened['opened']);
    figures.failed = Number(opened['failed']);
    if (opened['error'] !== undefined) figures.error = String(opened['error']);
    // Let the server finish whatever the upgrades left to do.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    figures.rssWithBytes = rssBytes(pid);
    figures.bytesPerConnection = figures.opened > 0 ? (figures.rssWithBytes - figures.rssBeforeBytes) / figures.opened : Number.NaN;
    d.send('release');
    await d.next(60_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
  } catch (error) {
    figures.error = (error as Error).message;
    await freshDriver();
  }
  return figures;
}

// ------------------------------------------------------------------------ output

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const fmtMs = (n: number) => (!Number.isFinite(n) ? 'n/a' : n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n.toFixed(1));
const fmtUs = (n: number) => (!Number.isFinite(n) ? '-' : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));
const fmtRatio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '-' : n >= 10 ? `${n.toFixed(0)}x` : `${n.toFixed(2)}x`);
const fmtMiB = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

function printTable(header: string[], rows: string[][], leftColumns: number): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(`  ${line(header)}`);
  console.log(`  ${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const row of rows) console.log(`  ${line(row)}`);
}

/** The CPU steal in a round from which a cell's notes mention it. */
const NOTABLE_STEAL = 0.05;

function notes(cell: Cell): string {
  const out: string[] = [];
  const errors: Record<string, number> = {};
  let stuck = 0;
  for (const r of cell.rounds) {
    for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
    stuck += r.stuck;
  }
  for (const [code, n] of Object.entries(errors)) out.push(`${code} x${n}`);
  if (stuck > 0) out.push(`${stuck} unanswered`);
  // Another guest of the hypervisor had part of the cores: such a round's figures run low.
  const steal = Math.max(0, ...cell.rounds.map((r) => r.stealShare));
  if (steal >= NOTABLE_STEAL) out.push(`CPU steal up to ${Math.round(steal * 100)}%`);
  const unwindowed = cell.rounds.filter((r) => !r.windowed).length;
  if (unwindowed > 0) out.push(`${unwindowed} round(s) without a reply inside the window (ops/s over window + drain)`);
  if (cell.failures.length > 0) out.push(`failed ${cell.failures.length}/${cell.failures.length + cell.rounds.length}: ${cell.failures[0]!.slice(0, 120)}`);
  return out.join('; ');
}

function printResults(cells: Cell[], idle: IdleFigures[]): void {
  const systemLabel = (s: Series) => `${s.system} ${s.client}`;
  for (const workload of config.workloads) {
    const rows = cells.filter((c) => c.workload === workload);
    if (rows.length === 0) continue;
    console.log(`\n${workload}  (Redis: ${REDIS_MAPPING[workload]})`);
    printTable(
      ['system / client', 'load', 'ops/s', 'p50 ms', 'p99 ms', 'srv CPU us/op', 'sys', 'drv CPU us/op', 'vs floor', 'vs redis', 'notes'],
      rows.map((c) => {
        const m = c.median;
        return [
          systemLabel(c),
          c.load,
          m === undefined ? 'failed' : fmtInt(m.opsPerSec),
          m === undefined ? '-' : fmtMs(m.p50Ms),
          m === undefined ? '-' : fmtMs(m.p99Ms),
          m === undefined ? '-' : fmtUs(m.serverCpuUsPerOp),
          m === undefined || !Number.isFinite(m.serverSystemShare) ? '-' : `${Math.round(m.serverSystemShare * 100)}%`,
          m === undefined ? '-' : fmtUs(m.driverCpuUsPerOp),
          fmtRatio(c.vsFloor),
          fmtRatio(c.vsRedis),
          notes(c),
        ];
      }),
      2,
    );
  }

  const setMany = cells.filter((c) => c.workload === 'setMany' && c.median !== undefined && c.system !== 'floor' && c.system !== 'redis-everysec' && c.system !== 'kvhub-normal');
  if (setMany.length > 0) {
    console.log(`\ndurable setMany (every record fsynced before the reply): records/s = setMany ops/s x ${SET_MANY_SIZE}`);
    printTable(
      ['system / client', 'load', 'records/s'],
      setMany.map((c) => [systemLabel(c), c.load, fmtInt(c.median!.opsPerSec * SET_MANY_SIZE)]),
      2,
    );
  }

  if (idle.length > 0) {
    console.log('\nidle connections: RSS of the server before and while holding them (opened by the driver process)');
    printTable(
      ['server', 'connections', 'RSS before', 'RSS holding them', 'per connection', 'notes'],
      idle.map((i) => [
        i.system,
        `${fmtInt(i.opened)}/${fmtInt(i.connections)}`,
        fmtMiB(i.rssBeforeBytes),
        i.rssWithBytes > 0 ? fmtMiB(i.rssWithBytes) : '-',
        Number.isFinite(i.bytesPerConnection) ? `${(i.bytesPerConnection / 1024).toFixed(1)} KiB` : '-',
        [i.failed > 0 ? `${i.failed} failed` : '', i.error ?? ''].filter((s) => s !== '').join('; ').slice(0, 160),
      ]),
      1,
    );
  }
}

function printTargets(targets: readonly TargetResult[]): void {
  console.log("\nissue 5's targets, on kvhub-full (this run's medians; see bench/README.md for what each compares)");
  printTable(
    ['target', 'measured', 'met'],
    targets.map((t) => [t.target, t.measured, t.met === undefined ? '-' : t.met ? 'yes' : 'no']),
    2,
  );
}

// ------------------------------------------------------------------------ main

function summarise(cells: Cell[]): void {
  for (const c of cells) {
    if (c.rounds.length === 0) continue;
    const pick = (f: (r: RoundFigures) => number) => median(c.rounds.map(f));
    c.median = {
      opsPerSec: pick((r) => r.opsPerSec),
      p50Ms: pick((r) => r.p50Ms),
      p99Ms: pick((r) => r.p99Ms),
      serverCpuUsPerOp: pick((r) => r.serverCpuUsPerOp),
      serverSystemShare: pick((r) => r.serverSystemShare),
      driverCpuUsPerOp: pick((r) => r.driverCpuUsPerOp),
    };
  }
  const find = (system: SystemId, client: ClientId, workload: Workload, load: LoadId) =>
    cells.find((c) => c.system === system && c.client === client && c.workload === workload && c.load === load)?.median;
  for (const c of cells) {
    if (c.median === undefined || c.system === 'ceiling') continue;
    const floor = find('floor', 'raw', c.workload, c.load);
    if (floor !== undefined && c.system !== 'floor') c.vsFloor = c.median.opsPerSec / floor.opsPerSec;
    if (c.system === 'kvhub-full' || c.system === 'kvhub-normal') {
      const peer = c.system === 'kvhub-full' ? 'redis-always' : 'redis-everysec';
      const redis = find(peer, 'ioredis-ap', c.workload, c.load);
      if (redis !== undefined) {
        c.vsRedis = c.median.opsPerSec / redis.opsPerSec;
        c.redisPeer = `${peer} ioredis-ap`;
      }
    }
  }
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}+uncommitted` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const machineAtStart = machineCpu();
  const deadline = started + config.limitMinutes * 60_000;
  const dir = mkdtempSync(join(config.dir, 'kvhub-bench-'));
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: stopping the servers and removing ${dir}\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  const cells: Cell[] = matrixCells(series, config.workloads, config.loads).map((cell) => ({ ...cell, rounds: [], failures: [] }));
  const perCellSeconds = config.seconds + config.warmupSeconds + 0.4;
  console.log(
    `kvhub comparison benchmark: ${cells.length} cells x ${config.rounds} round(s), ${config.seconds} s each (+${config.warmupSeconds} s warm-up)` +
      `; expect about ${Math.ceil((cells.length * config.rounds * perCellSeconds + 30 + (config.idleConnections > 0 ? 30 : 0)) / 60)} min` +
      ' and more for cells whose replies take long (their windows stretch)' +
      ` (limit ${config.limitMinutes} min). ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(2)} at start.`,
  );
  console.log(`  value: ${Buffer.byteLength(VALUE_JSON)}-byte JSON; data in ${dir}`);

  compileKvhub();
  const servers: Servers = {};
  let sampleBytes: Record<string, number> = {};
  const idle: IdleFigures[] = [];
  const maxClients = Math.max(1024, config.idleConnections + 100);
  try {
    // Servers, each preloaded with the data set.
    if (needs('kvhub-full')) {
      servers.kvhubFull = await startKvhub(dir, 'full', maxClients);
      await preloadKvhub(servers.kvhubFull.url);
    }
    if (needs('kvhub-normal') || needs('floor')) {
      servers.kvhubNormal = await startKvhub(dir, 'normal', maxClients);
      await preloadKvhub(servers.kvhubNormal.url);
    }
    if (needs('floor')) {
      const sampled = await sampleReplies(servers.kvhubNormal!.url);
      sampleBytes = sampled.bytes;
      const samplesFile = join(dir, 'floor-samples.json');
      writeFileSync(samplesFile, JSON.stringify(sampled.samples));
      servers.floor = await startFloor(samplesFile);
      console.log(`  kvhub reply sizes (the floor answers with the same): ${Object.entries(sampleBytes).map(([w, b]) => `${w} ${b} B`).join(', ')}`);
    }
    if (needs('redis-always')) {
      servers.redisAlways = await startRedis(dir, 'always', maxClients);
      await preloadRedis(servers.redisAlways.port);
    }
    if (needs('redis-everysec')) {
      servers.redisEverysec = await startRedis(dir, 'everysec', maxClients);
      await preloadRedis(servers.redisEverysec.port);
    }
    await freshDriver();

    // Idle connections first, while the servers are fresh.
    if (config.idleConnections > 0) {
      const idleTargets: [string, { child: Child } | undefined, (s: Servers) => IdleTarget][] = [
        [KVHUB_IDLE_LABEL, servers.kvhubFull, (s) => ({ kind: 'ws', url: s.kvhubFull!.url })],
        ['floor', servers.floor, (s) => ({ kind: 'ws', url: s.floor!.url })],
        ['redis (everysec)', servers.redisEverysec, (s) => ({ kind: 'tcp', port: s.redisEverysec!.port })],
      ];
      for (const [name, server, target] of idleTargets) {
        if (server === undefined) continue;
        process.stdout.write(`  idle connections: ${name} ...`);
        const figures = await measureIdle(name, server.child.pid, target(servers), config.idleConnections);
        idle.push(figures);
        process.stdout.write(` ${fmtInt(figures.opened)} open, ${Number.isFinite(figures.bytesPerConnection) ? `${(figures.bytesPerConnection / 1024).toFixed(1)} KiB each` : figures.error}\n`);
      }
    }

    // The matrix: round after round; inside a round, each workload and load runs on every system
    // in turn, starting one system later each round.
    let aborted = false;
    for (let round = 1; round <= config.rounds && !aborted; round++) {
      const roundStarted = Date.now();
      process.stdout.write(`  round ${round}/${config.rounds}: `);
      const groups = new Map<string, Cell[]>();
      for (const cell of cells) {
        const key = `${cell.workload}/${cell.load === 'in-proc' ? 'in-proc' : cell.load}`;
        groups.set(key, [...(groups.get(key) ?? []), cell]);
      }
      for (const group of groups.values()) {
        const shift = (round - 1) % group.length;
        for (const cell of [...group.slice(shift), ...group.slice(0, shift)]) {
          if (Date.now() > deadline) {
            aborted = true;
            break;
          }
          const figures = await runCell(cell, round, servers, dir);
          if (typeof figures === 'string') {
            cell.failures.push(figures);
            process.stdout.write('x');
          } else {
            cell.rounds.push(figures);
            process.stdout.write(Object.keys(figures.errors).length > 0 || figures.stuck > 0 ? '!' : '.');
          }
        }
        if (aborted) break;
      }
      process.stdout.write(` ${((Date.now() - roundStarted) / 1000).toFixed(0)} s\n`);
    }
    if (aborted) console.log(`  stopped at the time limit of ${config.limitMinutes} min (KVHUB_BENCH_LIMIT_MINUTES); the figures below are partial`);

    for (const [name, server] of [
      ['kvhub full', servers.kvhubFull],
      ['kvhub normal', servers.kvhubNormal],
      ['floor', servers.floor],
      ['redis always', servers.redisAlways],
      ['redis everysec', servers.redisEverysec],
    ] as const) {
      if (server !== undefined && (server.child.proc.exitCode !== null || server.child.proc.signalCode !== null)) {
        console.log(`  WARNING: ${name} exited during the run (${server.child.proc.exitCode ?? server.child.proc.signalCode}): ${server.child.output().trim().slice(-500)}`);
      }
    }
  } finally {
    await driver?.child.stop(2000);
    await cleanup();
  }

  summarise(cells);
  const elapsedS = (Date.now() - started) / 1000;
  console.log(
    `\nMedians of ${config.rounds} round(s) of ${config.seconds} s. ops/s: requests answered with success per second;` +
      ' p50/p99: latency from send to reply; srv CPU: server process CPU time per op (ceiling: its own process), sys: the kernel part of it;' +
      ' drv CPU: the driver process per op; vs floor / vs redis: ops/s ratios (redis = same durability, ioredis with auto-pipelining);' +
      ` notes name the CPU steal of a round from ${NOTABLE_STEAL * 100}% up (the hypervisor gave that share of the cores to other guests; such figures run low).`,
  );
  printResults(cells, idle);
  const measured = cells.map((c) => ({ ...c, complete: c.rounds.length === config.rounds && c.rounds.every((r) => r.windowed) }));
  const targets = checkTargets(measured, idle, { setManySize: SET_MANY_SIZE, quick: config.quick });
  printTargets(targets);
  const steal = stealShare(machineAtStart, machineCpu());
  console.log(
    `\nfinished in ${Math.round(elapsedS)} s; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end;` +
      ` CPU steal ${(steal * 100).toFixed(1)}% over the run; results in ${config.out}`,
  );

  const packageVersion = (name: string) => {
    try {
      return (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  writeFileSync(
    config.out,
    `${JSON.stringify(
      {
        meta: {
          date: new Date(started).toISOString(),
          elapsedSeconds: Math.round(elapsedS),
          commit: gitCommit(),
          node: process.version,
          cpus: cpus().length,
          cpuModel: cpus()[0]?.model,
          loadAverageAtEnd: loadavg(),
          stealShare: steal,
          versions: { ws: packageVersion('ws'), 'better-sqlite3': packageVersion('better-sqlite3'), ioredis: packageVersion('ioredis'), redis: redisVersion() },
          config: { ...config, out: undefined, dir: undefined },
          valueBytes: Buffer.byteLength(VALUE_JSON),
          replyBytes: sampleBytes,
          ceilingRecordsPerTransaction: CEILING_RECORDS_PER_TXN,
          redisMapping: REDIS_MAPPING,
        },
        cells,
        idle,
        targets,
      },
      null,
      2,
    )}\n`,
  );
}

await main();
