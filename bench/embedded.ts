/**
 * Embedded kvhub (`openKV`) against keyv 5 + @keyv/sqlite 4, in this process, on files in a fresh
 * temporary directory: sequential `set` of N keys (each awaited before the next), then sequential
 * `get` of the same keys, with a ~100-byte JSON value. Each round opens a fresh database per
 * contender and runs them one after the other (interleaved, so drift of the machine hits all of
 * them alike); the figures are medians over the rounds after one warm-up round. Prints, asserts
 * nothing.
 *
 *   npx tsx bench/embedded.ts                     # 2000 ops, 5 rounds
 *   KVHUB_BENCH_OPS=5000 KVHUB_BENCH_ROUNDS=7 npx tsx bench/embedded.ts
 *
 * Durability: kvhub `full` (WAL, one fdatasync of the log per commit, made by kvhub on the thread
 * pool, as synchronous=FULL would make it) and `normal` (WAL, synchronous=NORMAL: no fsync on commit). keyv as installed uses SQLite's defaults, read back from
 * its own connection and printed; it is also run with WAL + synchronous=NORMAL set through its
 * connection, which is what `normal` is to be compared with.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import KeyvSqlite from '@keyv/sqlite';
import Database from 'better-sqlite3';
import Keyv from 'keyv';
import { openKV } from '../embedded/index.js';
import { median } from './stats.js';

const OPS = positive('KVHUB_BENCH_OPS', 2000);
const ROUNDS = positive('KVHUB_BENCH_ROUNDS', 5);

/** About 100 bytes of JSON. */
const VALUE = { id: 12345, name: 'Ada Lovelace', email: 'ada@example.com', tags: ['math', 'engines'], active: true, score: 97.5 };

function positive(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number of at least 1, not ${raw}`);
  return value;
}

/** One contender: a store opened on `file`, its sequential set and get, and how to close it. */
interface Store {
  set(key: string, value: unknown): Promise<unknown>;
  get(key: string): Promise<unknown>;
  close(): Promise<void>;
}

interface Contender {
  name: string;
  open(file: string): Promise<Store>;
  /** What the store's SQLite connection runs with, read back once from a store it opened. */
  durability(file: string): Promise<string>;
}

function kvhub(durability: 'full' | 'normal'): Contender {
  return {
    name: `kvhub openKV ${durability}`,
    async open(file) {
      const kv = openKV({ path: file, durability });
      const ns = kv.instance('bench', { autoCreate: true }).namespace('ns');
      return { set: (key, value) => ns.set(key, value), get: (key) => ns.get(key), close: () => kv.close() };
    },
    async durability(file) {
      // The journal mode is stored in the file; synchronous is per connection and set from the option.
      const kv = openKV({ path: file, durability });
      await kv.instance('bench', { autoCreate: true }).namespace('ns').set('probe', 1);
      await kv.close();
      const db = new Database(file, { readonly: true });
      const journal = db.pragma('journal_mode', { simple: true }) as string;
      db.close();
      const sync = durability === 'full' ? 'an fdatasync of the log per commit' : 'no fsync on commit';
      return `journal_mode=${journal}, ${sync} (kvhub's durability '${durability}')`;
    },
  };
}

type KeyvStore = KeyvSqlite & { query(sql: string, ...params: unknown[]): Promise<Record<string, unknown>[]> };

function keyv(tuned: boolean): Contender {
  const open = async (file: string) => {
    const store = new KeyvSqlite({ uri: `sqlite://${file}` }) as KeyvStore;
    if (tuned) {
      await store.query('PRAGMA journal_mode = WAL');
      await store.query('PRAGMA synchronous = NORMAL');
    }
    return { keyv: new Keyv({ store }), store };
  };
  return {
    name: tuned ? 'keyv + @keyv/sqlite WAL/NORMAL' : 'keyv + @keyv/sqlite defaults',
    async open(file) {
      const { keyv } = await open(file);
      return { set: (key, value) => keyv.set(key, value), get: (key) => keyv.get(key), close: () => keyv.disconnect() };
    },
    async durability(file) {
      const { keyv, store } = await open(file);
      const [journal] = await store.query('PRAGMA journal_mode');
      const [synchronous] = await store.query('PRAGMA synchronous');
      await keyv.disconnect();
      const level = ['OFF', 'NORMAL', 'FULL', 'EXTRA'][Number(synchronous?.['synchronous'])] ?? String(synchronous?.['synchronous']);
      return `journal_mode=${String(journal?.['journal_mode'])}, synchronous=${level} (read from its connection)`;
    },
  };
}

const contenders = [kvhub('full'), kvhub('normal'), keyv(false), keyv(true)];

/** Ops per second of `op` run on keys 0..OPS-1, one at a time. */
async function timed(op: (key: string) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < OPS; i++) await op(`key:${i}`);
  return (OPS / (performance.now() - started)) * 1000;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvhub-bench-embedded-'));
  const cleanUp = () => fs.rmSync(dir, { recursive: true, force: true });
  process.once('SIGINT', () => {
    cleanUp();
    process.exit(130);
  });
  try {
    let files = 0;
    const fresh = () => path.join(dir, `db-${++files}.sqlite`);
    // The machine may be shared: its load says how far to trust the spread of the rounds.
    console.log(`node ${process.version}, ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)}; ${OPS} sequential ops per run, ${ROUNDS} rounds after a warm-up`);
    console.log(`value: ${JSON.stringify(VALUE).length} bytes of JSON; databases in ${os.tmpdir()}\n`);
    for (const contender of contenders) console.log(`${contender.name.padEnd(34)} ${await contender.durability(fresh())}`);

    const results = new Map(contenders.map((c) => [c.name, { set: [] as number[], get: [] as number[] }]));
    for (let round = 0; round <= ROUNDS; round++) {
      for (const contender of contenders) {
        const store = await contender.open(fresh());
        try {
          const set = await timed((key) => store.set(key, VALUE));
          const get = await timed((key) => store.get(key));
          if ((await store.get(`key:${OPS - 1}`)) === undefined) throw new Error(`${contender.name} lost a key`);
          if (round > 0) {
            results.get(contender.name)!.set.push(set);
            results.get(contender.name)!.get.push(get);
          }
        } finally {
          await store.close();
        }
      }
      process.stdout.write(round === 0 ? '\nwarm-up done' : ` · round ${round}/${ROUNDS}`);
    }

    const figures = (name: string) => {
      const r = results.get(name)!;
      return { set: median(r.set), get: median(r.get) };
    };
    const row = (cells: string[]) => console.log(cells.map((cell, i) => (i === 0 ? cell.padEnd(34) : cell.padStart(12))).join(''));
    console.log('\n\nmedian ops/s (min–max over rounds)');
    row(['', 'set', 'get']);
    for (const contender of contenders) {
      const r = results.get(contender.name)!;
      const cell = (values: number[]) => `${Math.round(median(values))}`;
      row([contender.name, cell(r.set), cell(r.get)]);
      row(['', `${Math.round(Math.min(...r.set))}–${Math.round(Math.max(...r.set))}`, `${Math.round(Math.min(...r.get))}–${Math.round(Math.max(...r.get))}`]);
    }
    const ratio = (a: string, b: string) => {
      const x = figures(a);
      const y = figures(b);
      row([`${a.replace('kvhub openKV ', 'kvhub ')} ÷ ${b.replace('keyv + @keyv/sqlite ', 'keyv ')}`, `${(x.set / y.set).toFixed(1)}×`, `${(x.get / y.get).toFixed(1)}×`]);
    };
    console.log(`\nratios of the medians (load average at the end: ${os.loadavg()[0]!.toFixed(1)})`);
    ratio('kvhub openKV full', 'keyv + @keyv/sqlite defaults');
    ratio('kvhub openKV normal', 'keyv + @keyv/sqlite defaults');
    ratio('kvhub openKV normal', 'keyv + @keyv/sqlite WAL/NORMAL');
  } finally {
    cleanUp();
  }
}

await main();
