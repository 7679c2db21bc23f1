/**
 * A work queue shared by several OS processes through kvhub.
 *
 *   npm run example
 *
 * The script starts its own kvhub server (a free loopback port, a temporary database), enqueues
 * JOBS jobs as keys `job:<n>`, and runs WORKERS worker processes — this same file in worker mode.
 * A worker claims job n by writing `lease:<n>` only if it is absent (`setnx`-style, `ifAbsent`)
 * with a TTL, does the work, and then records `done:<n>` and drops its lease in one `atomic`
 * that succeeds only while the lease is still its version and nobody has recorded `done:<n>` yet.
 * One worker dies (SIGKILL) right after its first claim: its lease stays behind, expires after
 * LEASE_MS, and another worker takes the job over. Idle workers do not poll: they watch `lease:*`
 * and look again when a lease goes away (a `delete` when its holder finished, an `expire` when
 * its holder died).
 *
 * At the end the script checks its invariants — every job done exactly once, by a live worker,
 * no lease left — prints a summary, cleans up, and exits 0 (1 if an invariant failed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createClient, isKvError, type KvStoreApi, type NamespaceHandle } from '../sdk/index.js';
import { createServer } from '../server/index.js';

const JOBS = 24;
const WORKERS = 4; // the last one dies after its first claim
const LEASE_MS = 1000;
const INSTANCE = 'work-queue';
const NAMESPACE = 'jobs';

/** What a worker prints, one JSON object per line. */
type WorkerLine =
  | { event: 'ready' }
  | { event: 'claimed'; job: number }
  | { event: 'done'; job: number }
  | { event: 'leaseLost'; job: number }
  | { event: 'leaseExpired'; job: number }
  | { event: 'finished'; completed: number[] };

interface WorkerSettings {
  url: string;
  workerId: string;
  /** Die (SIGKILL, so nothing is cleaned up) right after the first successful claim. */
  dieAfterClaim: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------- worker

async function runWorker(settings: WorkerSettings): Promise<void> {
  const say = (line: WorkerLine) => process.stdout.write(`${JSON.stringify(line)}\n`);
  const client = createClient({ url: settings.url, reconnect: false });
  await client.waitForReady();
  const jobs = client.instance(INSTANCE).namespace(NAMESPACE);
  // An idle worker does not poll: it waits until a lease goes away — released by a worker that
  // finished (delete) or run out because its holder died (expire) — with a slow poll as a backstop.
  let leaseFreed = false;
  let wake: (() => void) | undefined;
  const leases = jobs.watch({
    prefix: 'lease:',
    onEvent: (event) => {
      if (event.kind !== 'delete' && event.kind !== 'expire') return;
      if (event.kind === 'expire') say({ event: 'leaseExpired', job: Number(event.key?.slice('lease:'.length)) });
      leaseFreed = true;
      wake?.();
    },
  });
  await leases.ready;
  say({ event: 'ready' });
  await waitForGo();

  const completed: number[] = [];
  for (;;) {
    leaseFreed = false;
    const queued = await numbers(jobs, 'job:');
    const done = new Set(await numbers(jobs, 'done:'));
    const leased = new Set(await numbers(jobs, 'lease:'));
    if (queued.every((n) => done.has(n))) break;
    // Start at a different place in the queue than the other workers, to collide less often.
    const open = queued.filter((n) => !done.has(n) && !leased.has(n));
    const offset = open.length === 0 ? 0 : Math.floor(Math.random() * open.length);
    const candidates = [...open.slice(offset), ...open.slice(0, offset)];
    let claimedOne = false;
    for (const n of candidates) {
      const lease = await claim(jobs, n, settings.workerId);
      if (lease === undefined) continue; // someone else holds it
      claimedOne = true;
      say({ event: 'claimed', job: n });
      if (settings.dieAfterClaim) {
        // Die the hard way: no unsubscribe, no lease release, no socket close.
        process.kill(process.pid, 'SIGKILL');
      }
      const result = await work(jobs, n);
      if (await complete(client.kvStore, n, lease, settings.workerId, result)) {
        completed.push(n);
        say({ event: 'done', job: n });
      } else {
        say({ event: 'leaseLost', job: n });
      }
      break; // re-read the queue: others have moved on meanwhile
    }
    // Nothing claimable: the rest is leased by others (perhaps by a dead worker). Unless a lease
    // went away while we were looking, wait for one to.
    if (!claimedOne && !leaseFreed) {
      let backstop: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        backstop = setTimeout(resolve, 2000);
      });
      clearTimeout(backstop);
      wake = undefined;
    }
  }
  say({ event: 'finished', completed });
  await leases.unsubscribe();
  await client.close();
}

/** The `<n>` of every key `<prefix><n>` in the namespace. */
async function numbers(ns: NamespaceHandle, prefix: string): Promise<number[]> {
  const out: number[] = [];
  for await (const key of ns.list({ prefix, keysOnly: true, pageSize: 1000 })) out.push(Number(key.slice(prefix.length)));
  return out;
}

/** Takes the lease on job `n` for LEASE_MS: its version, or undefined when another worker holds it. */
async function claim(ns: NamespaceHandle, n: number, workerId: string): Promise<number | undefined> {
  try {
    const record = await ns.set(`lease:${n}`, workerId, { ifAbsent: true, ttlMs: LEASE_MS });
    // The job may have been finished between our listing and the claim.
    if (await ns.has(`done:${n}`)) {
      await ns.delete(`lease:${n}`, { ifVersion: record.version }).catch(() => {});
      return undefined;
    }
    return record.version;
  } catch (error) {
    if (isKvError(error, 'CONFLICT')) return undefined;
    throw error;
  }
}

/** The "work": read the job, think for a moment, produce a result. */
async function work(ns: NamespaceHandle, n: number): Promise<number> {
  const job = await ns.get<{ input: number }>(`job:${n}`);
  await sleep(20 + Math.random() * 60);
  return (job?.input ?? 0) ** 2;
}

/**
 * Records the result and releases the lease in one transaction. The `done` check (must not exist)
 * is what makes completion happen at most once: a lease that expired mid-work may have been
 * taken by someone else, and their lease of the same job can even have the same version.
 */
async function complete(kv: KvStoreApi, n: number, leaseVersion: number, workerId: string, result: number): Promise<boolean> {
  const reply = await kv.atomic({
    instanceId: INSTANCE,
    checks: [
      { namespace: NAMESPACE, key: `lease:${n}`, version: leaseVersion },
      { namespace: NAMESPACE, key: `done:${n}`, version: null },
    ],
    ops: [
      { op: 'set', namespace: NAMESPACE, key: `done:${n}`, value: { worker: workerId, result } },
      { op: 'delete', namespace: NAMESPACE, key: `lease:${n}` },
    ],
  });
  if (reply.success) return true;
  if (reply.code === 'CONFLICT') return false;
  throw new Error(`atomic failed: ${reply.code} ${reply.error}`);
}

function waitForGo(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  return new Promise((resolve) =>
    rl.on('line', (line) => {
      if (line !== 'go') return;
      rl.close();
      resolve();
    }),
  );
}

// ---------------------------------------------------------------------------------- main

interface RunningWorker {
  id: string;
  child: ChildProcess;
  lines: WorkerLine[];
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  ready: Promise<void>;
}

function startWorker(settings: WorkerSettings): RunningWorker {
  // process.execArgv carries tsx's loader, so the child runs this TypeScript file the same way.
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), 'worker', JSON.stringify(settings)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const worker: RunningWorker = {
    id: settings.workerId,
    child,
    lines: [],
    stderr: '',
    exit: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    ready: Promise.resolve(),
  };
  worker.ready = new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      const line = JSON.parse(text) as WorkerLine;
      worker.lines.push(line);
      if (line.event === 'ready') resolve();
    });
    child.once('exit', () => reject(new Error(`${settings.workerId} exited before it was ready: ${worker.stderr}`)));
  });
  worker.ready.catch(() => {});
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (worker.stderr += chunk));
  child.stdin!.on('error', () => {});
  return worker;
}

async function main(): Promise<number> {
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-work-queue-'));
  const server = await createServer({ host: '127.0.0.1', port: 0, db: join(dir, 'queue.db') });
  const client = createClient({ url: server.url });
  const workers: RunningWorker[] = [];
  try {
    const jobs = client.instance(INSTANCE, { autoCreate: true }).namespace(NAMESPACE);
    await jobs.setMany(Array.from({ length: JOBS }, (_, n) => [`job:${n}`, { input: n }] as const));
    console.log(`kvhub work queue on ${server.url}: ${JOBS} jobs, ${WORKERS} worker processes, leases of ${LEASE_MS} ms.`);

    for (let i = 0; i < WORKERS; i++) {
      workers.push(startWorker({ url: server.url, workerId: `worker-${i + 1}`, dieAfterClaim: i === WORKERS - 1 }));
    }
    await withTimeout(Promise.all(workers.map((w) => w.ready)), 20_000, 'workers to connect');
    for (const w of workers) w.child.stdin!.write('go\n');
    const exits = await withTimeout(Promise.all(workers.map((w) => w.exit)), 40_000, 'workers to finish');

    // ---- check the invariants
    const problems: string[] = [];
    const doneBy = new Map<number, string>();
    for await (const record of jobs.list({ prefix: 'done:' })) {
      doneBy.set(Number(record.key.slice('done:'.length)), (record.value as { worker: string }).worker);
    }
    const leftLeases: string[] = [];
    for await (const key of jobs.list({ prefix: 'lease:', keysOnly: true })) leftLeases.push(key);

    const reported = new Map<number, string[]>();
    const crashed = workers[WORKERS - 1]!;
    const crashedJob = crashed.lines.find((l) => l.event === 'claimed')?.job;
    for (const [i, w] of workers.entries()) {
      const exit = exits[i]!;
      if (w === crashed) {
        if (exit.signal !== 'SIGKILL') problems.push(`${w.id} was meant to die after a claim, but exited with ${exit.code ?? exit.signal}`);
        continue;
      }
      if (exit.code !== 0) problems.push(`${w.id} exited with ${exit.code ?? exit.signal}: ${w.stderr.trim()}`);
      const finished = w.lines.find((l) => l.event === 'finished');
      for (const n of finished?.event === 'finished' ? finished.completed : []) reported.set(n, [...(reported.get(n) ?? []), w.id]);
    }
    for (let n = 0; n < JOBS; n++) {
      const by = reported.get(n) ?? [];
      if (!doneBy.has(n)) problems.push(`job ${n} has no done:${n}`);
      if (by.length !== 1) problems.push(`job ${n} was reported done ${by.length} times (${by.join(', ')})`);
      else if (doneBy.get(n) !== by[0]) problems.push(`done:${n} names ${doneBy.get(n)}, but ${by[0]} reported it`);
    }
    if (doneBy.size !== JOBS) problems.push(`${doneBy.size} done keys for ${JOBS} jobs`);
    if (crashedJob === undefined) problems.push(`${crashed.id} never claimed a job`);
    else if (doneBy.get(crashedJob) === crashed.id) problems.push(`job ${crashedJob} is marked done by the worker that died`);
    if (leftLeases.length > 0) problems.push(`leases left behind: ${leftLeases.join(', ')}`);

    // ---- summary
    for (const w of workers) {
      if (w === crashed) {
        const heir = crashedJob === undefined ? undefined : doneBy.get(crashedJob);
        const noticed = workers.filter((o) => o.lines.some((l) => l.event === 'leaseExpired' && l.job === crashedJob)).length;
        console.log(
          `  ${w.id}: claimed job ${crashedJob} and died; its lease expired (the 'expire' event reached ${noticed} live worker(s)) and ${heir ?? 'nobody'} did the job`,
        );
        continue;
      }
      const mine = [...doneBy].filter(([, by]) => by === w.id).map(([n]) => n).sort((a, b) => a - b);
      const lost = w.lines.filter((l) => l.event === 'leaseLost').length;
      console.log(`  ${w.id}: ${String(mine.length).padStart(2)} jobs (${mine.join(', ')})${lost > 0 ? `, ${lost} lease(s) lost` : ''}`);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    if (problems.length > 0) {
      console.error(`FAILED after ${seconds} s:\n  ${problems.join('\n  ')}`);
      return 1;
    }
    console.log(`Every job done exactly once (${doneBy.size}/${JOBS}), no lease left behind, in ${seconds} s.`);
    return 0;
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting ${ms} ms for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

if (process.argv[2] === 'worker') {
  const settings = JSON.parse(process.argv[3] ?? '{}') as WorkerSettings;
  runWorker(settings).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
} else {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
