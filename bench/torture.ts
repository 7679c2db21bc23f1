/**
 * Crash torture: the long run of test/crash.test.ts. Prints figures; exits 1 when a write was
 * lost or a check failed. Never part of `npm test`; CI runs it after the tests. About four
 * minutes on 2 cores, most of it restarts and the check after each, which lists every key.
 *
 *   npm run torture                                   # 200 kills
 *   KVHUB_TORTURE_KILLS=500 KVHUB_TORTURE_SEED=7 npm run torture
 *
 * 1. Kill phase: 2 writer processes (2 connections each, 4 writes in flight on each) write new
 *    keys with `kvStore.set`, each key once with a value known from the key, while the server
 *    (the current sources compiled into a temporary dist/, --durability full) is SIGKILLed
 *    KVHUB_TORTURE_KILLS times (default 200) at moments drawn from KVHUB_TORTURE_SEED, and
 *    restarted on the same file. After each kill, `PRAGMA integrity_check` on the file (opened
 *    read-only while no server holds it); after each restart, through the server: every
 *    acknowledged write present (values compared for keys not compared before, and for every key
 *    each 25th restart and at the end), nothing stored that no writer sent, no stored key gone.
 *    Each server runs under `strace -f -c -e trace=fsync,fdatasync` to count its fsync calls.
 * 2. Final phase, not killed: a server under strace takes a fixed load (FINAL_WRITES per writer);
 *    then GET /metrics gives `kvhub_storage_commits_total` (committed transactions) and
 *    `kvhub_storage_syncs_total` (syncs of the log, each covering every commit before it), a
 *    SIGTERM ends the server and strace's table gives its fsyncs. With durability full every
 *    acknowledged commit waited for a sync, so fsyncs below syncs, or no sync at all for the
 *    commits, fail the run. A server without /metrics (404) prints "commits: unavailable".
 *
 * Compiling the sources first rather than running them under tsx, and spawning each next server
 * process while the current one runs (compileServer in test/helpers/crash.ts), keep 200 restarts
 * within minutes: tsx needs three times the CPU to load the server.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkClient,
  compileServer,
  integrityCheck,
  killLoop,
  killStarted,
  Ledger,
  requireStrace,
  startServer,
  straceSummaryCalls,
  Writers,
  type CheckResult,
  type ServerCommand,
  type ServerRun,
} from '../test/helpers/crash.js';

const KILLS = wholeNumber('KVHUB_TORTURE_KILLS', 200);
const SEED = wholeNumber('KVHUB_TORTURE_SEED', 20261122);
const WRITERS = 2;
const CONNECTIONS = 2;
const WINDOW = 4;
const FINAL_WRITES = 1000;
/** Values are compared for every key at this interval of restarts (and at the end); between, for new keys only. */
const COMPARE_ALL_EVERY = 25;
const PROGRESS_EVERY = 20;
/** A hung server or writer must not hold CI for its whole time budget. */
const OVERALL_LIMIT_MS = 120_000 + KILLS * 10_000;

function wholeNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new Error(`${name} must be a whole number, not '${raw}'`);
  return Number(raw);
}

/** Every problem seen, each once (a lost key is seen again at every later check). */
const problems = {
  lost: new Set<string>(),
  vanished: new Set<string>(),
  neverSent: new Set<string>(),
  wrongValue: new Set<string>(),
  strays: new Set<string>(),
  integrity: [] as string[],
  other: [] as string[],
};

function collect(check: CheckResult, when: string): void {
  for (const key of check.lost) problems.lost.add(key);
  for (const key of check.vanished) problems.vanished.add(key);
  for (const key of check.neverSent) problems.neverSent.add(key);
  for (const entry of check.wrongValue) problems.wrongValue.add(entry);
  for (const entry of check.strays) problems.strays.add(`${when}: ${entry}`);
}

function sample(items: Iterable<string>, max = 10): string {
  const all = [...items];
  return all.length === 0 ? '' : ` (${all.slice(0, max).join(', ')}${all.length > max ? `, ... ${all.length - max} more` : ''})`;
}

/** `kvhub_storage_commits_total` and `kvhub_storage_syncs_total` from GET /metrics, or why they are unavailable. */
async function readCommits(server: ServerRun): Promise<{ commits: number; syncs: number } | string> {
  try {
    const response = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    const text = await response.text();
    if (response.status !== 200) return `GET /metrics answered ${response.status}`;
    const counter = (name: string) => {
      const match = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\d+(?:\\.\\d+)?(?:e\\+?\\d+)?)\\s*$`, 'm').exec(text);
      return match === null ? undefined : Number(match[1]);
    };
    const commits = counter('kvhub_storage_commits_total');
    const syncs = counter('kvhub_storage_syncs_total');
    if (commits === undefined || syncs === undefined) return 'GET /metrics lacks kvhub_storage_commits_total or kvhub_storage_syncs_total';
    return { commits, syncs };
  } catch (error) {
    return `GET /metrics failed: ${(error as Error).message}`;
  }
}

async function main(): Promise<boolean> {
  const began = performance.now();
  const seconds = () => ((performance.now() - began) / 1000).toFixed(1);
  requireStrace();
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-torture-'));
  const db = join(dir, 'torture.db');
  const cli = compileServer(dir);
  console.log(
    `kvhub crash torture: node ${process.version}, ${availableParallelism()} cores; server compiled from the sources, durability full; ` +
      `${KILLS} kills, seed ${SEED} (KVHUB_TORTURE_SEED); ${WRITERS} writer processes × ${CONNECTIONS} connections × ${WINDOW} writes in flight; files in ${dir}`,
  );

  const ledger = new Ledger();
  const kills = { done: 0, midWrite: 0 };
  let final: { counts: { commits: number; syncs: number } | string; fsyncs: number; acked: number } | undefined;
  try {
    const writers = Writers.start(WRITERS, CONNECTIONS, WINDOW);
    const { server: last } = await killLoop(
      {
        db,
        cli,
        kills: KILLS,
        seed: SEED,
        writers,
        strace: (run) => ({ out: join(dir, `strace-kill-${run}.txt`), summary: true }),
        compareAllValues: (kill) => kill % COMPARE_ALL_EVERY === 0 || kill === KILLS,
        onCycle: (report) => {
          const when = `kill ${report.kill} (${report.delayMs} ms into the writes)`;
          kills.done = report.kill;
          if (report.inFlight > 0) kills.midWrite++;
          if (report.integrity.join() !== 'ok') problems.integrity.push(`${when}: ${report.integrity.join('; ')}`);
          const newlyLost = report.check.lost.filter((key) => !problems.lost.has(key));
          if (newlyLost.length > 0) console.log(`  LOST after ${when}: ${newlyLost.length} acknowledged writes${sample(newlyLost)}`);
          collect(report.check, when);
          if (report.kill % PROGRESS_EVERY === 0 || report.kill === KILLS) {
            console.log(
              `  kill ${report.kill}/${KILLS}: ${ledger.count('acked')} acknowledged, ${report.check.stored} stored, ` +
                `${problems.lost.size} lost, ${problems.integrity.length} integrity failures, ${seconds()} s`,
            );
          }
        },
      },
      ledger,
    );
    const lastCode = await last.stop();
    if (lastCode !== 0) problems.other.push(`the server after the last restart exited with ${lastCode} on SIGTERM`);
    const afterStop = integrityCheck(db);
    if (afterStop.join() !== 'ok') problems.integrity.push(`after the clean stop: ${afterStop.join('; ')}`);
    final = await finalPhase(cli, db, join(dir, 'strace-final.txt'), writers, ledger);
  } catch (error) {
    // A server that no longer starts on the file (or a writer that died) ends the run; report what was seen.
    problems.other.push(`the run stopped after ${kills.done} kills: ${error instanceof Error ? error.message : String(error)}`);
  }
  problems.other.push(...ledger.rejected.map((r) => `refused by the server: ${r}`));

  let killPhaseFsyncs = 0;
  let killPhaseRuns = 0;
  for (const file of readdirSync(dir).filter((name) => /^strace-kill-\d+\.txt$/.test(name))) {
    const text = readFileSync(join(dir, file), 'utf8');
    // strace prints no table for a process without fsyncs: one spawned ahead and never released.
    if (text.trim() === '') continue;
    killPhaseFsyncs += straceSummaryCalls(text);
    killPhaseRuns++;
  }
  const unacked = ledger.storedUnacknowledged();
  const failed =
    problems.lost.size + problems.vanished.size + problems.neverSent.size + problems.wrongValue.size + problems.strays.size + problems.integrity.length + problems.other.length > 0;
  console.log(`\nkill phase`);
  console.log(`  kills:                                ${kills.done} (${kills.midWrite} with writes in flight)`);
  console.log(`  writes sent:                          ${ledger.sent - (final?.acked ?? 0)}`);
  console.log(`  acknowledged writes:                  ${ledger.count('acked') - (final?.acked ?? 0)}`);
  console.log(`  lost writes (acknowledged, missing):  ${problems.lost.size}${sample(problems.lost)}`);
  console.log(`  stored but never acknowledged:        ${unacked.length} of ${ledger.count('unknown')} whose reply was lost (allowed)${sample(unacked, 5)}`);
  console.log(`  stored but never sent:                ${problems.neverSent.size}${sample(problems.neverSent)}`);
  console.log(`  stored with another value:            ${problems.wrongValue.size}${sample(problems.wrongValue, 3)}`);
  console.log(`  stored keys that disappeared later:   ${problems.vanished.size}${sample(problems.vanished)}`);
  console.log(`  records outside the written namespace: ${problems.strays.size}${sample(problems.strays, 3)}`);
  console.log(`  integrity failures:                   ${problems.integrity.length}${sample(problems.integrity, 3)}`);
  console.log(`  fsync calls:                          ${killPhaseFsyncs} (strace -c, ${killPhaseRuns} server runs)`);
  console.log(`\nfinal phase (${WRITERS} writers × ${FINAL_WRITES} writes, not killed)`);
  if (final === undefined) console.log('  not run');
  else if (typeof final.counts !== 'string') {
    const { commits, syncs } = final.counts;
    console.log(
      `  commits ${commits}, log syncs ${syncs}, fsyncs ${final.fsyncs}, acknowledged writes ${final.acked} ` +
        `(${(final.acked / Math.max(commits, 1)).toFixed(2)} writes per commit, ${(commits / Math.max(syncs, 1)).toFixed(2)} commits per sync)`,
    );
  } else {
    console.log(`  commits: unavailable (${final.counts}); fsyncs ${final.fsyncs}, acknowledged writes ${final.acked}`);
  }
  for (const problem of problems.other) console.log(`  PROBLEM: ${problem}`);
  console.log(`\ntorture: ${failed ? 'FAILED' : 'passed'} in ${seconds()} s`);
  if (failed) console.log(`(the database and strace files are kept in ${dir})`);
  else rmSync(dir, { recursive: true, force: true });
  return !failed;
}

/**
 * One server under strace, not killed: FINAL_WRITES writes per writer, then its commit count from
 * GET /metrics, a check of the store, a SIGTERM, and the fsyncs from strace's table.
 */
async function finalPhase(cli: ServerCommand, db: string, straceOut: string, writers: Writers, ledger: Ledger) {
  const server = await startServer({ cli, db, strace: { out: straceOut, summary: true } });
  await writers.go(server.url, FINAL_WRITES);
  await writers.done();
  let acked = 0;
  for (const { writer, outcomes } of await writers.stop()) {
    ledger.record(writer, outcomes);
    acked += outcomes.acked.length;
    if (outcomes.acked.length !== FINAL_WRITES) problems.other.push(`final phase: writer ${writer} got ${outcomes.acked.length} of ${FINAL_WRITES} writes acknowledged`);
  }
  await writers.exit();
  const counts = await readCommits(server);
  const client = checkClient(server.url);
  try {
    collect(await ledger.check(client, true), 'final phase');
  } finally {
    await client.close();
  }
  const code = await server.stop();
  if (code !== 0) problems.other.push(`the final-phase server exited with ${code} on SIGTERM`);
  const fsyncs = straceSummaryCalls(readFileSync(straceOut, 'utf8'));
  const integrity = integrityCheck(db);
  if (integrity.join() !== 'ok') problems.integrity.push(`after the final phase: ${integrity.join('; ')}`);
  if (typeof counts !== 'string' && (fsyncs < counts.syncs || (counts.commits > 0 && counts.syncs === 0))) {
    problems.other.push(`final phase: ${fsyncs} fsyncs and ${counts.syncs} log syncs for ${counts.commits} commits, but with durability full every commit is synced before its acknowledgement`);
  }
  return { counts, fsyncs, acked };
}

const watchdog = setTimeout(() => {
  process.stderr.write(`torture: gave up after ${OVERALL_LIMIT_MS / 1000} s\n`);
  void killStarted().finally(() => process.exit(1));
}, OVERALL_LIMIT_MS);
main().then(
  async (passed) => {
    clearTimeout(watchdog);
    await killStarted();
    process.exit(passed ? 0 : 1);
  },
  async (error: unknown) => {
    clearTimeout(watchdog);
    process.stderr.write(`torture: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    await killStarted();
    process.exit(1);
  },
);
