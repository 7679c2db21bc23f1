/**
 * The load driver of the comparison benchmark: a child process of bench/run.ts, separate from
 * every server it loads, that stays up for the whole run and takes one command per stdin line
 * (JSON), answering with JSON lines on stdout.
 *
 *   {"cmd":"run","target":T,"workload":W,"connections":C,"depth":D,"warmupMs":n,"durationMs":n}
 *     opens C connections to T and runs W on them with D requests in flight per connection:
 *     a warm-up not counted (warmupMs, and at least until C x D replies have arrived), then,
 *     without a pause, durationMs measured (longer for a slow cell, see schedule); it prints
 *     {"measuring":true} when the measured part starts, {"stopped":true} once the last reply of
 *     the run has arrived, then closes the connections and prints
 *     {"result":{ops, windowOps, windowMs, elapsedMs, p50Ms, p99Ms, maxMs, errors, selfCpuUs, stuck}},
 *     or {"error":…}. Throughput is windowOps / windowMs (replies within the window); CPU per
 *     op is CPU over the window and the drain after it, divided by every op answered then; the
 *     latencies are those of every request answered from the window's start on.
 *   {"cmd":"idle","target":{"kind":"ws","url":U}|{"kind":"tcp","port":P},"count":N}
 *     opens N idle connections, prints {"opened":n,"failed":n}, waits for "release", closes them,
 *     prints {"released":true}.
 *   {"cmd":"exit"}
 *
 * Targets: `raw` (kvhub frames written by hand over `ws`, for kvhub and for the floor), `sdk`
 * (kvhub's SDK, one createClient per connection), `redis` (ioredis, with or without
 * enableAutoPipelining), `ceiling` (better-sqlite3 in this process, see bench/ceiling.ts; its
 * connections and depth are ignored and its CPU is `selfCpuUs`).
 *
 * The driver competes with the server for the machine's two cores, so it does as little as it
 * can per request: raw frames are built by string concatenation, and a raw reply is matched by
 * reading its requestId (the slot number) and its `"success":true` from the bytes, without
 * JSON.parse unless the reply is a failure. Latencies go into a Float64Array.
 */
import { createConnection, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import WebSocket, { type RawData } from 'ws';
import type { KvClient } from '../sdk/index.js';
import { builtSdk } from './build.js';
import { Ceiling } from './ceiling.js';
import { parentLines } from './parent-lines.js';
import { Latencies } from './stats.js';
import {
  COUNTER_NAMESPACE,
  COUNTERS,
  INSTANCE,
  KEYSPACE,
  KV_NAMESPACE,
  PAGE_GROUPS,
  PAGE_NAMESPACE,
  PAGE_SIZE,
  SET_MANY_SIZE,
  VALUE,
  VALUE_JSON,
  counterName,
  keyName,
  pagePrefix,
  randomInt,
  rawFrame,
  redisKey,
  redisPageKeys,
  setManyBase,
  type Workload,
} from './workloads.js';

export type Target =
  | { kind: 'raw'; url: string }
  | { kind: 'sdk'; url: string }
  | { kind: 'redis'; port: number; autoPipelining: boolean }
  | { kind: 'ceiling'; dir: string };

export interface RunCommand {
  cmd: 'run';
  target: Target;
  workload: Workload;
  connections: number;
  depth: number;
  warmupMs: number;
  durationMs: number;
}

export type IdleTarget = { kind: 'ws'; url: string } | { kind: 'tcp'; port: number };

export interface RunResult {
  /** Requests answered with success from the start of the measured window until the last reply. */
  ops: number;
  /** Of those, the ones answered within the measured window, and the window's length: throughput is windowOps / windowMs. */
  windowOps: number;
  windowMs: number;
  /** From the start of the window until the last reply arrived. */
  elapsedMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Failed requests by error code. */
  errors: Record<string, number>;
  /** CPU (user + system) this process used during the measured run, in microseconds. */
  selfCpuUs: number;
  /** Requests still unanswered DRAIN_LIMIT_MS after the run stopped (a stuck server). */
  stuck: number;
}

/** How long the driver waits for the replies still in flight when a run stops. */
const DRAIN_LIMIT_MS = 15_000;
/** Connections opened at once (idle test and runs), so the server's accept backlog is not overrun. */
const CONNECT_BATCH = 200;

interface Tally {
  ops: number;
  errors: Record<string, number>;
}

/**
 * Where completed requests are counted: first the warm-up (counted, then dropped), then, from
 * {@link measure} on, the measured run. A request sent during the warm-up and answered after the
 * switch counts for the run: the load never pauses between the two.
 */
class Meter {
  tally: Tally = { ops: 0, errors: {} };
  latencies: Latencies | undefined;
  startedAt = 0;
  cpuAtStart = 0;
  /** When the measured window ended (no request sent after it), and the ops completed by then. */
  stoppedAt = 0;
  opsAtStop = 0;

  measure(): void {
    this.tally = { ops: 0, errors: {} };
    this.latencies = new Latencies();
    this.startedAt = now();
    this.cpuAtStart = cpuNow();
    // The parent reads the server's CPU time when it sees this line.
    say({ measuring: true });
  }

  /** The end of the measured window: the load stops sending; replies still due are waited for. */
  stop(): void {
    this.stoppedAt = now();
    this.opsAtStop = this.tally.ops;
  }

  /** Requests answered so far, successes and failures, warm-up included. */
  completed = 0;
  /** Replies that make one turnover of the pipeline (one per request in flight), and when they had all come. */
  turnover = Infinity;
  turnedOverAt: number | undefined;

  ok(latencyMs: number): void {
    this.answered();
    this.tally.ops++;
    this.latencies?.add(latencyMs);
  }

  failed(code: string): void {
    this.answered();
    this.tally.errors[code] = (this.tally.errors[code] ?? 0) + 1;
  }

  private answered(): void {
    if (++this.completed === this.turnover) this.turnedOverAt = now();
  }
}

/** A set of connections to one target that can run a workload on all of them. */
interface Load {
  /**
   * Runs the workload with `depth` in flight per connection: `warmupMs`, then (after
   * meter.measure()) `durationMs` or more (see {@link schedule}), then waits for every reply. Resolves with the number of
   * requests left unanswered DRAIN_LIMIT_MS after the stop (0 unless the server is stuck).
   */
  run(meter: Meter, warmupMs: number, durationMs: number): Promise<number>;
  close(): Promise<void>;
}

/** The longest a warm-up waits, past `warmupMs`, for the pipeline to have turned over once. */
const WARMUP_CAP_MS = 10_000;
/** A measured window lasts at least this many turnovers of the pipeline (see {@link schedule}). */
const WINDOW_TURNOVERS = 3;
/** The longest a window is stretched to. */
const WINDOW_CAP_MS = 15_000;

/**
 * Calls meter.measure() once the warm-up is over, then `stop` `durationMs` later, or later still
 * for a slow cell. The warm-up lasts `warmupMs` and, beyond that, until `inFlight` requests have
 * been answered (every slot has had a reply: the load is in its steady state even where one reply
 * takes longer than `warmupMs`), at most WARMUP_CAP_MS more. With `warmupMs` 0 there is none.
 *
 * The time that first turnover took is about one request's latency under this load. Where it is
 * long (a setMany with 500 in flight waits seconds for its reply), a window of `durationMs`
 * would catch one burst of replies or none, and its count would not be a rate: the window is
 * stretched to WINDOW_TURNOVERS turnovers, at most WINDOW_CAP_MS. Without a warm-up there is
 * no turnover to time, and no stretch.
 */
function schedule(meter: Meter, warmupMs: number, durationMs: number, inFlight: number, stop: () => void): void {
  const started = now();
  meter.turnover = meter.completed + inFlight;
  const measure = (turnoverMs: number) => {
    meter.measure();
    const windowMs = Math.max(durationMs, Math.min(WINDOW_TURNOVERS * turnoverMs, WINDOW_CAP_MS));
    setTimeout(() => {
      meter.stop();
      stop();
    }, windowMs);
  };
  const poll = () => {
    const waited = now() - started;
    if (meter.turnedOverAt !== undefined) measure(meter.turnedOverAt - started);
    else if (waited >= warmupMs + WARMUP_CAP_MS) measure(waited);
    else setTimeout(poll, 5);
  };
  if (warmupMs > 0) setTimeout(poll, warmupMs);
  else measure(0);
}

const now = () => performance.now();
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
const errorCode = (error: unknown) => String((error as { code?: unknown }).code ?? (error as Error).name ?? 'ERROR');

function cpuNow(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

async function inBatches<T>(count: number, open: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  const results: PromiseSettledResult<T>[] = [];
  for (let start = 0; start < count; start += CONNECT_BATCH) {
    const batch = Array.from({ length: Math.min(CONNECT_BATCH, count - start) }, (_, i) => open(start + i));
    results.push(...(await Promise.allSettled(batch)));
  }
  return results;
}

function openWs(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    ws.once('open', () => {
      ws.removeAllListeners('error');
      ws.on('error', () => {});
      resolve(ws);
    });
    ws.once('error', reject);
  });
}

async function openAll<T>(count: number, open: () => Promise<T>, close: (c: T) => unknown): Promise<T[]> {
  const settled = await inBatches(count, () => open());
  const opened = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failure !== undefined) {
    for (const c of opened) close(c);
    throw new Error(`${count - opened.length} of ${count} connections failed: ${(failure.reason as Error).message}`);
  }
  return opened;
}

// ------------------------------------------------------------------------ raw frames over ws

const REQUEST_ID = Buffer.from('"requestId":"');
const SUCCESS_TRUE = Buffer.from('","success":true');

interface RawConnection {
  ws: WebSocket;
  sentAt: Float64Array;
  outstanding: number;
  onReply: (slot: number, ok: boolean, data: Buffer) => void;
}

async function rawLoad(url: string, workload: Workload, connections: number, depth: number): Promise<Load> {
  const sockets = await openAll(connections, () => openWs(url), (ws) => ws.terminate());
  const conns: RawConnection[] = sockets.map((ws) => {
    const conn: RawConnection = { ws, sentAt: new Float64Array(depth), outstanding: 0, onReply: () => {} };
    ws.on('message', (data: RawData) => {
      const buf = data as Buffer;
      const at = buf.indexOf(REQUEST_ID);
      let slot = -1;
      let end = -1;
      if (at >= 0) {
        slot = 0;
        for (end = at + REQUEST_ID.length; end < buf.length; end++) {
          const c = buf[end]!;
          if (c < 48 || c > 57) break;
          slot = slot * 10 + (c - 48);
        }
      }
      const ok = at >= 0 && buf.compare(SUCCESS_TRUE, 0, SUCCESS_TRUE.length, end, end + SUCCESS_TRUE.length) === 0;
      conn.onReply(slot, ok, buf);
    });
    return conn;
  });
  return {
    run(meter, warmupMs, durationMs) {
      return new Promise<number>((resolve) => {
        let stopping = false;
        let outstanding = 0;
        let drainTimer: NodeJS.Timeout | undefined;
        const finish = () => {
          if (drainTimer !== undefined) clearTimeout(drainTimer);
          resolve(0);
        };
        const send = (conn: RawConnection, slot: number) => {
          conn.sentAt[slot] = now();
          conn.outstanding++;
          outstanding++;
          conn.ws.send(rawFrame(workload, String(slot)));
        };
        for (const conn of conns) {
          conn.onReply = (slot, ok, data) => {
            if (slot < 0 || slot >= depth) {
              meter.failed('UNMATCHED_REPLY');
              return;
            }
            const latency = now() - conn.sentAt[slot]!;
            conn.outstanding--;
            outstanding--;
            if (ok) meter.ok(latency);
            else {
              let code = 'UNPARSED';
              try {
                code = String((JSON.parse(data.toString('utf8')) as { code?: unknown }).code);
              } catch {
                // counted as UNPARSED
              }
              meter.failed(code);
            }
            if (!stopping) send(conn, slot);
            else if (outstanding === 0) finish();
          };
        }
        for (const conn of conns) for (let slot = 0; slot < depth; slot++) send(conn, slot);
        schedule(meter, warmupMs, durationMs, conns.length * depth, () => {
          stopping = true;
          if (outstanding === 0) return finish();
          drainTimer = setTimeout(() => {
            // The replies may never come: those sockets are no use for another run.
            for (const conn of conns) if (conn.outstanding > 0) conn.ws.terminate();
            resolve(outstanding);
          }, DRAIN_LIMIT_MS);
        });
      });
    },
    async close() {
      await Promise.all(
        conns.map(
          ({ ws }) =>
            new Promise<void>((resolve) => {
              if (ws.readyState === ws.CLOSED) return resolve();
              ws.once('close', () => resolve());
              ws.close();
              setTimeout(() => ws.terminate(), 2000).unref();
            }),
        ),
      );
    },
  };
}

// ------------------------------------------------------------------------ loops of awaited calls (SDK, ioredis)

/** `depth` loops per connection, each awaiting `op` over and over until told to stop. */
function loopLoad<C>(clients: C[], depth: number, op: (client: C) => Promise<unknown>, close: (client: C) => Promise<void>): Load {
  return {
    async run(meter, warmupMs, durationMs) {
      let stopping = false;
      let running = 0;
      const loop = async (client: C) => {
        running++;
        while (!stopping) {
          const t0 = now();
          try {
            await op(client);
            meter.ok(now() - t0);
          } catch (error) {
            meter.failed(errorCode(error));
            // A client that fails at once (closed) must not spin on microtasks and starve the timers.
            await yieldToLoop();
          }
        }
        running--;
      };
      const all = Promise.all(clients.flatMap((client) => Array.from({ length: depth }, () => loop(client))));
      let drainTimer: NodeJS.Timeout | undefined;
      const drained = new Promise<'stuck'>((resolve) => {
        schedule(meter, warmupMs, durationMs, clients.length * depth, () => {
          stopping = true;
          drainTimer = setTimeout(() => resolve('stuck'), DRAIN_LIMIT_MS);
        });
      });
      const outcome = await Promise.race([all, drained]);
      clearTimeout(drainTimer);
      return outcome === 'stuck' ? running : 0;
    },
    async close() {
      await Promise.all(clients.map(close));
    },
  };
}

async function sdkLoad(url: string, workload: Workload, connections: number, depth: number): Promise<Load> {
  const { createClient } = await builtSdk();
  const clients = await openAll(
    connections,
    async () => {
      const client = createClient({ url, reconnect: false });
      try {
        await client.waitForReady();
      } catch (error) {
        await client.close();
        throw error;
      }
      return client;
    },
    (client) => client.close(),
  );
  const op = sdkOp(workload);
  return loopLoad(clients, depth, op, (client) => client.close());
}

function sdkOp(workload: Workload): (client: KvClient) => Promise<unknown> {
  switch (workload) {
    case 'set':
      return (client) => client.instance(INSTANCE).namespace(KV_NAMESPACE).set(keyName(randomInt(KEYSPACE)), VALUE);
    case 'get':
      return (client) => client.instance(INSTANCE).namespace(KV_NAMESPACE).get(keyName(randomInt(KEYSPACE)));
    case 'incr':
      return (client) => client.instance(INSTANCE).namespace(COUNTER_NAMESPACE).incr(counterName(randomInt(COUNTERS)));
    case 'setMany':
      return (client) => {
        const base = setManyBase();
        const entries = Array.from({ length: SET_MANY_SIZE }, (_, i) => [keyName(base + i), VALUE] as const);
        return client.instance(INSTANCE).namespace(KV_NAMESPACE).setMany(entries);
      };
    case 'list':
      return async (client) => {
        let count = 0;
        const page = client.instance(INSTANCE).namespace(PAGE_NAMESPACE);
        for await (const record of page.list({ prefix: pagePrefix(randomInt(PAGE_GROUPS)), limit: PAGE_SIZE, pageSize: PAGE_SIZE })) {
          if (record !== undefined) count++;
        }
        if (count !== PAGE_SIZE) throw Object.assign(new Error(`list page held ${count} records`), { code: 'SHORT_PAGE' });
      };
  }
}

async function redisLoad(port: number, autoPipelining: boolean, workload: Workload, connections: number, depth: number): Promise<Load> {
  const clients = await openAll(
    connections,
    async () => {
      const redis = new Redis({
        host: '127.0.0.1',
        port,
        lazyConnect: true,
        enableAutoPipelining: autoPipelining,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      redis.on('error', () => {});
      await redis.connect();
      return redis;
    },
    (redis) => redis.disconnect(),
  );
  const op = redisOp(workload);
  return loopLoad(clients, depth, op, async (redis) => {
    await redis.quit().catch(() => redis.disconnect());
  });
}

function redisOp(workload: Workload): (redis: Redis) => Promise<unknown> {
  switch (workload) {
    case 'set':
      return (redis) => redis.set(redisKey(KV_NAMESPACE, keyName(randomInt(KEYSPACE))), VALUE_JSON);
    case 'get':
      return (redis) => redis.get(redisKey(KV_NAMESPACE, keyName(randomInt(KEYSPACE))));
    case 'incr':
      return (redis) => redis.incr(redisKey(COUNTER_NAMESPACE, counterName(randomInt(COUNTERS))));
    case 'setMany':
      return (redis) => {
        const base = setManyBase();
        const args: string[] = [];
        for (let i = 0; i < SET_MANY_SIZE; i++) args.push(redisKey(KV_NAMESPACE, keyName(base + i)), VALUE_JSON);
        return redis.mset(...args);
      };
    case 'list':
      return async (redis) => {
        const values = await redis.mget(redisPageKeys(randomInt(PAGE_GROUPS)));
        if (values.length !== PAGE_SIZE || values.some((v) => v === null)) {
          throw Object.assign(new Error('MGET page incomplete'), { code: 'SHORT_PAGE' });
        }
      };
  }
}

// ------------------------------------------------------------------------ commands

const ceilings = new Map<string, Ceiling>();

async function run(command: RunCommand): Promise<RunResult> {
  const { target, workload, connections, depth, warmupMs, durationMs } = command;
  const meter = new Meter();
  let stuck = 0;
  let elapsedMs = 0;
  let selfCpuUs = 0;
  const stopped = () => {
    elapsedMs = now() - meter.startedAt;
    selfCpuUs = cpuNow() - meter.cpuAtStart;
    // The parent reads the server's CPU time again when it sees this line.
    say({ stopped: true });
  };
  if (target.kind === 'ceiling') {
    let ceiling = ceilings.get(target.dir);
    if (ceiling === undefined) ceilings.set(target.dir, (ceiling = new Ceiling(target.dir)));
    ceiling.runFor(workload, warmupMs);
    meter.measure();
    meter.tally.ops = ceiling.runFor(workload, durationMs, meter.latencies);
    meter.stop();
    stopped();
  } else {
    const load =
      target.kind === 'raw'
        ? await rawLoad(target.url, workload, connections, depth)
        : target.kind === 'sdk'
          ? await sdkLoad(target.url, workload, connections, depth)
          : await redisLoad(target.port, target.autoPipelining, workload, connections, depth);
    try {
      stuck = await load.run(meter, warmupMs, durationMs);
      stopped();
    } finally {
      await load.close();
    }
  }
  const { p50, p99, max } = meter.latencies!.summary();
  return {
    ops: meter.tally.ops,
    windowOps: meter.opsAtStop,
    windowMs: meter.stoppedAt - meter.startedAt,
    elapsedMs,
    p50Ms: p50,
    p99Ms: p99,
    maxMs: max,
    errors: meter.tally.errors,
    selfCpuUs,
    stuck,
  };
}

async function idle(target: IdleTarget, count: number, next: () => Promise<string>): Promise<void> {
  const closers: (() => void)[] = [];
  const settled = await inBatches(count, () =>
    target.kind === 'ws'
      ? openWs(target.url).then((ws) => void closers.push(() => ws.terminate()))
      : new Promise<void>((resolve, reject) => {
          const socket: Socket = createConnection({ host: '127.0.0.1', port: target.port });
          socket.once('connect', () => {
            socket.removeAllListeners('error');
            socket.on('error', () => {});
            closers.push(() => socket.destroy());
            resolve();
          });
          socket.once('error', reject);
        }),
  );
  const failed = settled.filter((s) => s.status === 'rejected').length;
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  say({ opened: closers.length, failed, ...(failure !== undefined && { error: (failure.reason as Error).message }) });
  await expectLine(next, 'release');
  for (const close of closers) close();
  say({ released: true });
}

function say(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function expectLine(next: () => Promise<string>, expected: string): Promise<void> {
  const line = await next();
  if (line !== expected) throw new Error(`driver expected '${expected}', got '${line}'`);
}


async function main(): Promise<void> {
  // The parent went away: nothing more to do.
  const next = parentLines(() => process.exit(0));
  say({ driver: 'ready', pid: process.pid });
  for (;;) {
    const command = JSON.parse(await next()) as RunCommand | { cmd: 'idle'; target: IdleTarget; count: number } | { cmd: 'exit' };
    try {
      if (command.cmd === 'exit') break;
      if (command.cmd === 'idle') await idle(command.target, command.count, next);
      else say({ result: await run(command) });
    } catch (error) {
      say({ error: (error as Error).message });
    }
  }
  for (const ceiling of ceilings.values()) ceiling.close();
  process.exit(0);
}

await main();
