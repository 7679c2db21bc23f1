/**
 * Child processes of the comparison benchmark: the servers it measures (kvhub from its CLI, the
 * floor, redis-server) and the load driver; their CPU time and RSS from /proc. Every process
 * started here is remembered and stopped by its PID (SIGTERM, then SIGKILL), never by name.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BUILT_CLI, REPO_ROOT } from './build.js';

export { REPO_ROOT };

/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (all threads) the process has used so far, in microseconds: user, system. */
export function cpuTimeUs(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces and parentheses): state is [0], utime [11], stime [12].
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(fields[11]) / CLOCK_TICKS) * 1e6, system: (Number(fields[12]) / CLOCK_TICKS) * 1e6 };
}

/** The whole machine's CPU time so far, from /proc/stat's first line, in clock ticks. */
export interface MachineCpu {
  total: number;
  /** Time the hypervisor ran other guests while this machine had work: its cores were not ours. */
  steal: number;
}

export function machineCpu(): MachineCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user and nice.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { total: ticks.reduce((sum, n) => sum + n, 0), steal: ticks[7] ?? 0 };
}

/** The share of the machine's CPU time between two readings that was stolen, 0 to 1. */
export function stealShare(from: MachineCpu, to: MachineCpu): number {
  const total = to.total - from.total;
  return total > 0 ? (to.steal - from.steal) / total : 0;
}

/** Resident set size of the process, in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** A free TCP port on 127.0.0.1 (for redis-server, which cannot pick one itself and report it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** The last stderr (and, for processes whose stdout is not a protocol, stdout) text, for error messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Child>();

/** Stops every process this module started and that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((child) => child.stop()));
}

/**
 * Starts `command`, and resolves once a line of its stdout matches `ready` (with the match), or
 * rejects when it exits first or `timeoutMs` passes (and then stops it).
 */
export function startChild(
  name: string,
  command: string,
  args: string[],
  ready: RegExp,
  timeoutMs = 30_000,
): Promise<{ child: Child; match: RegExpExecArray }> {
  const proc = spawn(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (text: string) => {
    output = (output + text).slice(-4000);
  };
  proc.stderr!.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const child: Child = {
    name,
    pid: proc.pid ?? -1,
    proc,
    output: () => output,
    async stop(graceMs = 5000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(child);
    },
  };
  running.add(child);
  void exited.then(() => running.delete(child));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void child.stop(1000);
      reject(new Error(`${name} was not ready within ${timeoutMs} ms: ${output.trim()}`));
    }, timeoutMs);
    proc.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`${name} could not start: ${error.message}`));
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready: ${output.trim()}`));
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      keep(`${line}\n`);
      const match = ready.exec(line);
      if (match !== null) {
        clearTimeout(timer);
        resolve({ child, match });
      }
    });
  });
}

/** Node with tsx's loader, as the benchmark's TypeScript children run. */
const node = (script: string, args: string[]): [string, string[]] => [process.execPath, ['--import', 'tsx', script, ...args]];

export interface KvhubServer {
  child: Child;
  url: string;
}

export async function startKvhub(dir: string, durability: 'full' | 'normal', maxConnections: number): Promise<KvhubServer> {
  // The compiled CLI (bench/build.ts), run by plain Node.
  const [command, args] = [process.execPath, [
    BUILT_CLI,
    '--port',
    '0',
    '--db',
    join(dir, `kvhub-${durability}.db`),
    '--durability',
    durability,
    '--max-connections',
    String(maxConnections),
  ]];
  const { child, match } = await startChild(`kvhub --durability ${durability}`, command, args, /kvhub is ready on (wss?:\/\/\S+) \(/);
  return { child, url: match[1]! };
}

export async function startFloor(samplesFile: string): Promise<KvhubServer> {
  const [command, args] = node('bench/floor-server.ts', ['--port', '0', '--samples', samplesFile]);
  const { child, match } = await startChild('floor', command, args, /floor is ready on (ws:\/\/\S+)/);
  return { child, url: match[1]! };
}

export interface RedisServer {
  child: Child;
  port: number;
}

/** redis-server with an append-only file fsynced `always` or `everysec`, no RDB snapshots, on a free loopback port. */
export async function startRedis(dir: string, fsync: 'always' | 'everysec', maxClients: number): Promise<RedisServer> {
  const dataDir = join(dir, `redis-${fsync}`);
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'yes',
    '--appendfsync', fsync,
    // No background AOF rewrite (a fork) in the middle of a run.
    '--auto-aof-rewrite-percentage', '0',
    '--dir', dataDir,
    '--maxclients', String(maxClients),
    '--daemonize', 'no',
    '--logfile', '',
  ];
  const { child } = await startChild(`redis-server appendfsync ${fsync}`, 'redis-server', args, /Ready to accept connections/);
  return { child, port };
}

export function redisVersion(): string {
  try {
    return /v=(\S+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? 'unknown';
  } catch {
    return 'not installed';
  }
}

/** The load driver (bench/driver.ts): a child taking JSON command lines and answering with JSON lines. */
export interface Driver {
  child: Child;
  send(line: string | object): void;
  /** The next line it prints, parsed; rejects after `timeoutMs` or when it exits. */
  next(timeoutMs: number): Promise<Record<string, unknown>>;
}

export async function startDriver(): Promise<Driver> {
  const [command, args] = node('bench/driver.ts', []);
  const proc = spawn(command, args, { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
  proc.stdin!.on('error', () => {});
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const child: Child = {
    name: 'driver',
    pid: proc.pid ?? -1,
    proc,
    output: () => stderr,
    async stop(graceMs = 5000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.stdin!.end();
        const term = setTimeout(() => proc.kill('SIGTERM'), 1000);
        const kill = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(term);
        clearTimeout(kill);
      }
      running.delete(child);
    },
  };
  running.add(child);
  const buffered: Record<string, unknown>[] = [];
  const waiting: ((line: Record<string, unknown> | Error) => void)[] = [];
  createInterface({ input: proc.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { error: `driver printed: ${text}` };
    }
    const waiter = waiting.shift();
    if (waiter !== undefined) waiter(line);
    else buffered.push(line);
  });
  void exited.then(() => {
    running.delete(child);
    for (const waiter of waiting.splice(0)) waiter(new Error(`the driver exited: ${stderr.trim()}`));
  });
  const driver: Driver = {
    child,
    send(line) {
      proc.stdin!.write(`${typeof line === 'string' ? line : JSON.stringify(line)}\n`);
    },
    next(timeoutMs) {
      const line = buffered.shift();
      if (line !== undefined) return Promise.resolve(line);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`the driver exited: ${stderr.trim()}`));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const at = waiting.indexOf(handler);
          if (at >= 0) waiting.splice(at, 1);
          reject(new Error(`the driver said nothing within ${timeoutMs} ms: ${stderr.trim()}`));
        }, timeoutMs);
        const handler = (got: Record<string, unknown> | Error) => {
          clearTimeout(timer);
          if (got instanceof Error) reject(got);
          else resolve(got);
        };
        waiting.push(handler);
      });
    },
  };
  const hello = await driver.next(30_000);
  if (hello['driver'] !== 'ready') throw new Error(`the driver did not start: ${JSON.stringify(hello)}`);
  return driver;
}
