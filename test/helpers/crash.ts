/**
 * The machinery of the crash test (test/crash.test.ts) and `npm run torture` (bench/torture.ts):
 * a kvhub server run as its own process (optionally under strace) that can be SIGKILLed and
 * restarted on the same file, writer processes that outlive the kills (test/fixtures/crash-writer.ts),
 * a ledger of what each write's outcome was, and the checks made after every restart.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { createClient, type KvClient } from '../../sdk/index.js';
import { openDatabase } from '../../server/storage/sqlite-native.js';
import { CRASH_INSTANCE, CRASH_NAMESPACE, crashKey, crashValue, parseCrashKey } from '../fixtures/crash-data.js';
import type { EpochOutcomes } from '../fixtures/crash-writer.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** How to run the kvhub CLI: the command line before its flags. */
export interface ServerCommand {
  readonly argv: readonly string[];
  /** The process waits for a line on stdin before it starts the CLI (see WARM_LAUNCHER). */
  readonly waitsForRelease: boolean;
}

/** The server run from source, as `npm start` and the other CLI tests run it. */
export const SOURCE_CLI: ServerCommand = {
  argv: [process.execPath, '--import', 'tsx', fileURLToPath(new URL('../../server/cli.ts', import.meta.url))],
  waitsForRelease: false,
};

/**
 * A process that imports the server's modules (`preload`: server/index, the bulk of what the CLI
 * imports), waits for a line on stdin, then runs the CLI module (`cli`) with the remaining
 * arguments as its flags: from then on it is the CLI, with the same main(), ready line, signal
 * handling and exit codes as `npm start`. Loading the modules takes most of a start; a kill loop
 * spawns the next server processes while the current one runs and releases one the moment the
 * database file is free.
 */
const WARM_LAUNCHER = `
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
const [, preload, cli, ...flags] = process.argv;
await import(preload);
const stdin = createInterface({ input: process.stdin });
const released = await new Promise((resolve) => {
  stdin.once('line', () => resolve(true));
  stdin.once('close', () => resolve(false));
});
if (!released) process.exit(0);
stdin.close();
process.stdin.destroy();
process.argv = [process.argv[0], fileURLToPath(cli), ...flags];
await import(cli);
`;

/**
 * Compiles the current sources as `npm run build` does (tsconfig.build.json), but without the
 * type check (`npm run typecheck` does that) or declarations, into `<dir>/kvhub/dist`, beside a
 * copy of package.json and a link to node_modules, so that the output finds its dependencies
 * and its version as dist/ does. Returns the command for its CLI, spawned ahead and released
 * (WARM_LAUNCHER). Why: plain node loads the compiled server with a third of the CPU that tsx
 * needs for the sources, and a kill loop restarts the server many times; dist/ itself may be
 * stale, so it is not used.
 */
export function compileServer(dir: string): ServerCommand {
  const root = join(dir, 'kvhub');
  const dist = join(root, 'dist');
  mkdirSync(root, { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(root, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'), 'dir');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const flags = ['-p', join(ROOT, 'tsconfig.build.json'), '--noCheck', '--outDir', dist, '--declaration', 'false', '--sourceMap', 'false'];
  const result = spawnSync(process.execPath, [tsc, ...flags], { cwd: ROOT, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`tsc ${flags.join(' ')} failed (${result.status ?? result.signal}): ${result.stdout}${result.stderr}`);
  return {
    argv: [
      process.execPath,
      '--input-type=module',
      '-e',
      WARM_LAUNCHER,
      pathToFileURL(join(dist, 'server', 'index.js')).href,
      pathToFileURL(join(dist, 'server', 'cli.js')).href,
    ],
    waitsForRelease: true,
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Every process started here that may still run, so that a failed run can end them by PID. */
const started = new Set<ChildProcess>();
const startedServerPids = new Set<number>();

/** SIGKILLs every process this module started that is still running (servers, strace, writers). */
export async function killStarted(): Promise<void> {
  for (const pid of startedServerPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  startedServerPids.clear();
  await Promise.all(
    [...started].map((child) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      return exited;
    }),
  );
  started.clear();
}

function track(child: ChildProcess): ChildProcess {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

// ------------------------------------------------------------------------------ the server

/** Throws a sentence saying how to get strace when it is missing or cannot trace here. */
export function requireStrace(): void {
  const probe = spawnSync('strace', ['-f', '-e', 'trace=none', '-o', '/dev/null', 'true'], { encoding: 'utf8' });
  if (probe.error !== undefined) {
    throw new Error(`strace is needed to count fsync calls and was not found (${probe.error.message}); install it, e.g. apt-get install strace`);
  }
  if (probe.status !== 0) throw new Error(`strace cannot trace processes here (exit ${probe.status}): ${probe.stderr.trim()}`);
}

export interface StraceOptions {
  /** strace's output file. */
  out: string;
  /** true: `-c`, a table of call counts written when the server exits; false: one line per call, with the file (`-y`). */
  summary: boolean;
}

/** A running kvhub server process. */
export interface ServerRun {
  readonly url: string;
  readonly port: number;
  /** The kvhub process itself (strace's child when traced). */
  readonly pid: number;
  /** The last 64 KiB of its standard error (its JSON log). */
  stderr(): string;
  /** SIGKILLs the server; resolves once it (and strace, if any) has exited. */
  kill(): Promise<void>;
  /** SIGTERMs the server (a clean shutdown); resolves with its exit code. */
  stop(): Promise<number | null>;
}

export interface ServerOptions {
  cli: ServerCommand;
  db: string;
  args?: readonly string[];
  strace?: StraceOptions;
  readyTimeoutMs?: number;
}

/** A server process spawned and not yet started (with WARM_SOURCE_CLI: loading, waiting for release). */
export interface PendingServer {
  /** Starts the server (releases it, if it waits); resolves once it has printed its ready line. */
  start(): Promise<ServerRun>;
  /** Ends a process that waits for release without starting it (it exits when its stdin closes). */
  cancel(): void;
}

/** Spawns and starts `cli --host 127.0.0.1 --port 0 --db <db> ...args`; resolves once it is ready. */
export function startServer(options: ServerOptions): Promise<ServerRun> {
  return spawnServer(options).start();
}

/**
 * Spawns `cli --host 127.0.0.1 --port 0 --db <db> ...args`. Under strace, only fsync and
 * fdatasync are traced, and through a seccomp filter (`--seccomp-bpf`), so the server's other
 * system calls run at full speed.
 */
export function spawnServer(options: ServerOptions): PendingServer {
  const serverArgv = [...options.cli.argv, '--host', '127.0.0.1', '--port', '0', '--db', options.db, ...(options.args ?? [])];
  const straceArgv =
    options.strace === undefined
      ? []
      : ['strace', '-f', '--seccomp-bpf', ...(options.strace.summary ? ['-c'] : ['-y']), '-e', 'trace=fsync,fdatasync', '-o', options.strace.out];
  const argv = [...straceArgv, ...serverArgv];
  const child = track(spawn(argv[0]!, argv.slice(1), { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] }));
  child.stdin!.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-65_536)));

  const start = async (): Promise<ServerRun> => {
    if (options.cli.waitsForRelease) child.stdin!.write('start\n');
    const timeoutMs = options.readyTimeoutMs ?? 30_000;
    const ready = await new Promise<{ url: string; port: number } | string>((resolve) => {
      const check = () => {
        const match = /kvhub is ready on (ws:\/\/\S+:(\d+)) /.exec(stdout);
        if (match === null) return;
        done();
        resolve({ url: match[1]!, port: Number(match[2]) });
      };
      const timer = setTimeout(() => {
        done();
        resolve(`no ready line within ${timeoutMs} ms`);
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        child.stdout!.off('data', check);
      };
      child.stdout!.on('data', check);
      void exited.then(({ code, signal }) => {
        done();
        resolve(`exited (code ${code}, signal ${signal}) before it was ready`);
      });
      check();
    });
    if (typeof ready === 'string') {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`kvhub on ${options.db} ${ready}; stderr: ${stderr.slice(-4000)}`);
    }
    const pid = options.strace === undefined ? child.pid! : onlyChildOf(child.pid!);
    startedServerPids.add(pid);
    void exited.then(() => startedServerPids.delete(pid));
    const signal = async (name: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(pid, name);
        } catch {
          // It died on its own; `exited` says how.
        }
      }
      return exited;
    };
    return {
      ...ready,
      pid,
      stderr: () => stderr,
      kill: async () => {
        await signal('SIGKILL');
      },
      stop: async () => (await signal('SIGTERM')).code,
    };
  };
  return { start, cancel: () => void child.stdin!.end() };
}

/** The one child process of `ppid` (the server strace started), from /proc. */
function onlyChildOf(ppid: number): number {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after the command name, which is in parentheses and may hold spaces: state, ppid, ...
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (parent === ppid) children.push(Number(entry));
  }
  if (children.length !== 1) throw new Error(`expected strace (pid ${ppid}) to have one child, found ${children.length}`);
  return children[0]!;
}

/** fsync + fdatasync calls in a `strace -c` table. */
export function straceSummaryCalls(text: string): number {
  let calls = 0;
  for (const line of text.split('\n')) {
    // % time, seconds, usecs/call, calls, [errors], syscall
    const match = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(?:fsync|fdatasync)\s*$/.exec(line);
    if (match !== null) calls += Number(match[1]);
  }
  return calls;
}

/** fsync + fdatasync calls per file in a `strace -y` log (a call split by another thread counts once). */
export function straceCallsByFile(text: string): Map<string, number> {
  const byFile = new Map<string, number>();
  for (const match of text.matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)) byFile.set(match[1]!, (byFile.get(match[1]!) ?? 0) + 1);
  return byFile;
}

/**
 * `PRAGMA integrity_check` on the database file, opened read-only: `['ok']` when sound, else the
 * problems it lists (or why the file could not be checked at all). Call it only while no server
 * holds the file: the reader then replays the WAL the dead server left as SQLite's recovery
 * would, and writes nothing to the database or its WAL.
 */
export function integrityCheck(db: string): string[] {
  try {
    const connection = openDatabase(db, { readonly: true, fileMustExist: true });
    try {
      return connection.prepare('PRAGMA integrity_check').pluck().all() as string[];
    } finally {
      connection.close();
    }
  } catch (error) {
    // A file damaged enough makes SQLite refuse it outright ("database disk image is malformed").
    return [`cannot be checked: ${(error as Error).message}`];
  }
}

// ------------------------------------------------------------------------------ the writers

/** One writer process of test/fixtures/crash-writer.ts and the JSON lines it printed. */
class WriterProcess {
  readonly child: ChildProcess;
  private readonly lines: Record<string, unknown>[] = [];
  private readonly waiters = new Set<() => void>();
  private stderr = '';

  constructor(readonly writer: number, connections: number, window: number) {
    const args = JSON.stringify({ writer, connections, window });
    this.child = track(spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/crash-writer.ts', args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] }));
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      const complete = partial.split('\n');
      partial = complete.pop()!;
      for (const line of complete) if (line.trim() !== '') this.lines.push(parseLine(line));
      for (const waiter of [...this.waiters]) waiter();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-16_384)));
    this.child.once('exit', () => {
      for (const waiter of [...this.waiters]) waiter();
    });
    this.child.stdin!.on('error', () => {});
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Takes the next line that has `field` (dropping the lines before it). */
  take(field: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const index = this.lines.findIndex((line) => field in line);
        if (index >= 0) {
          done();
          resolve(this.lines.splice(0, index + 1).at(-1)!);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          done();
          reject(new Error(`writer ${this.writer} exited (${this.child.exitCode ?? this.child.signalCode}) before '${field}'; stderr: ${this.stderr}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`writer ${this.writer}: no '${field}' within ${timeoutMs} ms; stderr: ${this.stderr}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }
}

/** A writer's stdout line: JSON by contract; anything else is kept as text rather than thrown. */
function parseLine(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { text: line };
  }
}

/** Writer processes that write to whichever server they are sent to, and survive its kills. */
export class Writers {
  private constructor(private readonly processes: WriterProcess[]) {}

  /** Starts `count` writer processes of `connections` connections with `window` writes in flight on each. */
  static start(count: number, connections: number, window: number): Writers {
    return new Writers(Array.from({ length: count }, (_, writer) => new WriterProcess(writer, connections, window)));
  }

  /** Sends every writer to `url`; resolves once all have connected (or failed to) and started writing. */
  async go(url: string, limit?: number): Promise<void> {
    for (const p of this.processes) p.send(limit === undefined ? `go ${url}` : `go ${url} ${limit}`);
    await Promise.all(this.processes.map((p) => p.take('writing')));
  }

  /** Resolves once every writer has made the `limit` writes given to `go`. */
  async done(timeoutMs = 120_000): Promise<void> {
    await Promise.all(this.processes.map((p) => p.take('done', timeoutMs)));
  }

  /** Stops the writers; resolves with each one's outcomes since `go`, once nothing is in flight. */
  async stop(): Promise<{ writer: number; outcomes: EpochOutcomes }[]> {
    for (const p of this.processes) p.send('stop');
    return Promise.all(this.processes.map(async (p) => ({ writer: p.writer, outcomes: (await p.take('epoch')).epoch as EpochOutcomes })));
  }

  /** Ends the writer processes. */
  async exit(): Promise<void> {
    await Promise.all(
      this.processes.map(async (p) => {
        const exited = new Promise((resolve) => p.child.once('exit', resolve));
        p.send('exit');
        await p.take('result');
        await exited;
      }),
    );
  }
}

// ------------------------------------------------------------------------------ the ledger and the checks

type Outcome = 'acked' | 'unknown' | 'unsent' | 'rejected';

/** What each write's outcome was, and what the checks have seen stored. */
export class Ledger {
  private readonly outcome = new Map<string, Outcome>();
  /** Keys seen stored by any check: once committed, a key must stay. */
  private readonly stored = new Set<string>();
  /** Keys whose value a check has already compared. */
  private readonly compared = new Set<string>();
  readonly rejected: string[] = [];

  record(writer: number, outcomes: EpochOutcomes): void {
    for (const seq of outcomes.acked) this.outcome.set(crashKey(writer, seq), 'acked');
    for (const seq of outcomes.unknown) this.outcome.set(crashKey(writer, seq), 'unknown');
    for (const seq of outcomes.unsent) this.outcome.set(crashKey(writer, seq), 'unsent');
    for (const r of outcomes.rejected) {
      this.outcome.set(crashKey(writer, r.seq), 'rejected');
      this.rejected.push(`${crashKey(writer, r.seq)}: ${r.code} ${r.error}`);
    }
  }

  count(outcome: Outcome): number {
    let n = 0;
    for (const o of this.outcome.values()) if (o === outcome) n++;
    return n;
  }

  /** Writes that reached a server: acknowledged, or sent with the reply lost. */
  get sent(): number {
    return this.count('acked') + this.count('unknown');
  }

  /** Keys stored whose writes were never acknowledged (sent, and the server died before replying). */
  storedUnacknowledged(): string[] {
    return [...this.stored].filter((key) => this.outcome.get(key) === 'unknown');
  }

  /**
   * Reads the whole namespace through the server at `client` and checks it against the ledger.
   * `allValues` compares every stored value; otherwise only those not compared before (every key
   * is still checked for presence).
   */
  async check(client: KvClient, allValues: boolean): Promise<CheckResult> {
    const values = new Map<string, unknown>();
    const keys = await listKeys(client, allValues ? values : undefined);
    const now = new Set(keys);
    if (!allValues) {
      const unseen = keys.filter((key) => !this.compared.has(key));
      for (let i = 0; i < unseen.length; i += 500) {
        const batch = unseen.slice(i, i + 500);
        const reply = await client.kvStore.getMany({ instanceId: CRASH_INSTANCE, namespace: CRASH_NAMESPACE, keys: batch });
        if (!reply.success) throw new Error(`getMany failed: ${reply.code} ${reply.error}`);
        for (const item of reply.data.items) if (item.exists) values.set(item.key, item.value);
      }
    }
    const result: CheckResult = { stored: keys.length, lost: [], vanished: [], neverSent: [], wrongValue: [], strays: [] };
    for (const key of keys) {
      const outcome = this.outcome.get(key);
      if (parseCrashKey(key) === undefined || outcome === undefined || outcome === 'unsent' || outcome === 'rejected') {
        result.neverSent.push(`${key} (${outcome ?? 'never written'})`);
      }
      if (values.has(key)) {
        if (!isDeepStrictEqual(values.get(key), crashValue(key))) result.wrongValue.push(`${key}: ${JSON.stringify(values.get(key)).slice(0, 200)}`);
        else this.compared.add(key);
      } else if (!this.compared.has(key)) {
        result.wrongValue.push(`${key}: listed, but its value could not be read`);
      }
    }
    for (const [key, outcome] of this.outcome) if (outcome === 'acked' && !now.has(key)) result.lost.push(key);
    for (const key of this.stored) if (!now.has(key) && this.outcome.get(key) !== 'acked') result.vanished.push(key);
    for (const key of keys) this.stored.add(key);
    // Nothing may be stored outside the one namespace written to (`stats` counts every live key).
    const stats = await client.kvStore.stats({});
    if (!stats.success) throw new Error(`stats failed: ${stats.code} ${stats.error}`);
    if (stats.data.records !== keys.length) result.strays.push(`${stats.data.records} records in the database, ${keys.length} in ${CRASH_INSTANCE}/${CRASH_NAMESPACE}`);
    if (stats.data.instances > 1) result.strays.push(`${stats.data.instances} instances`);
    return result;
  }
}

export interface CheckResult {
  /** Keys stored in the namespace. */
  stored: number;
  /** Acknowledged writes missing. */
  lost: string[];
  /** Unacknowledged writes seen stored by an earlier check and missing now. */
  vanished: string[];
  /** Stored keys no writer sent (never issued, refused, or never put on the wire). */
  neverSent: string[];
  /** Stored keys whose value is not the one sent. */
  wrongValue: string[];
  /** Records outside the namespace written to. */
  strays: string[];
}

/** Every key of the crash namespace, in list order; with `values`, also fills it with each key's value. */
async function listKeys(client: KvClient, values: Map<string, unknown> | undefined): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | null = null;
  do {
    const reply = await client.kvStore.list({ instanceId: CRASH_INSTANCE, namespace: CRASH_NAMESPACE, limit: 1000, cursor, keysOnly: values === undefined });
    if (!reply.success) {
      // Killed before the first write committed: the instance was never created.
      if (reply.code === 'INSTANCE_NOT_FOUND' && keys.length === 0) return [];
      throw new Error(`list failed: ${reply.code} ${reply.error}`);
    }
    const data = reply.data as { keys?: string[]; records?: { key: string; value: unknown }[]; cursor: string | null };
    if (values === undefined) keys.push(...(data.keys ?? []));
    else {
      for (const record of data.records ?? []) {
        keys.push(record.key);
        values.set(record.key, record.value);
      }
    }
    cursor = data.cursor;
  } while (cursor !== null);
  return keys;
}

/** A client for the checks, which must not outlive its server. */
export function checkClient(url: string): KvClient {
  return createClient({ url, reconnect: false, requestTimeoutMs: 30_000 });
}

// ------------------------------------------------------------------------------ the kill loop

/** A small seeded generator (mulberry32), so that a run's kill moments can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * How long after the writers start to kill: one kill in five within the first 20 ms (while
 * connections and the instance's creation are fresh), the rest spread over 20-400 ms.
 */
function killDelayMs(random: () => number): number {
  const r = random();
  return Math.round(r < 0.2 ? (r / 0.2) * 20 : 20 + ((r - 0.2) / 0.8) * 380);
}

export interface CycleReport {
  kill: number;
  delayMs: number;
  acked: number;
  /** Writes in flight when the server died (sent, outcome unknown). */
  inFlight: number;
  integrity: string[];
  check: CheckResult;
}

export interface KillLoopOptions {
  db: string;
  cli: ServerCommand;
  kills: number;
  seed: number;
  writers: Writers;
  /** Extra server flags (the same for every run). */
  serverArgs?: readonly string[];
  /** strace for server run `n` (0 is the first start), or none. */
  strace?: (run: number) => StraceOptions;
  /** Compare every stored value after a restart when this returns true; otherwise only values not compared yet. */
  compareAllValues: (kill: number) => boolean;
  onCycle?: (report: CycleReport) => void;
}

/**
 * Starts a server on `db`, then `kills` times: lets the writers write, SIGKILLs the server at a
 * seeded random moment, collects the writers' outcomes once nothing is in flight, runs the
 * integrity check on the file while no server holds it, restarts the server on the same file
 * and checks the store against the ledger. Resolves with the server that runs after the last
 * restart (the caller stops it) and the number of server runs started.
 */
export async function killLoop(options: KillLoopOptions, ledger: Ledger): Promise<{ server: ServerRun; runs: number }> {
  const random = seededRandom(options.seed);
  let runs = 0;
  const spawnNext = () => {
    const strace = options.strace?.(runs);
    runs++;
    return spawnServer({ cli: options.cli, db: options.db, args: options.serverArgs ?? [], ...(strace && { strace }) });
  };
  // With a command that waits for release, the next two server processes load while the current
  // one takes writes: loading takes longer than one kill cycle, and CPU that goes unused otherwise.
  const ahead: PendingServer[] = [];
  const refill = () => {
    while (options.cli.waitsForRelease && ahead.length < 2) ahead.push(spawnNext());
  };
  const nextServer = () => (ahead.shift() ?? spawnNext()).start();
  refill();
  let server = await nextServer();
  for (let kill = 1; kill <= options.kills; kill++) {
    refill();
    await options.writers.go(server.url);
    const delayMs = killDelayMs(random);
    await sleep(delayMs);
    await server.kill();
    let acked = 0;
    let inFlight = 0;
    for (const { writer, outcomes } of await options.writers.stop()) {
      ledger.record(writer, outcomes);
      acked += outcomes.acked.length;
      inFlight += outcomes.unknown.length;
    }
    const integrity = integrityCheck(options.db);
    server = await nextServer();
    const client = checkClient(server.url);
    let check: CheckResult;
    try {
      check = await ledger.check(client, options.compareAllValues(kill));
    } finally {
      await client.close();
    }
    options.onCycle?.({ kill, delayMs, acked, inFlight, integrity, check });
  }
  // Processes spawned ahead and never started (strace's files number them last) exit when their stdin closes.
  const startedRuns = runs - ahead.length;
  for (const unused of ahead.splice(0)) unused.cancel();
  return { server, runs: startedRuns };
}
