/**
 * What the comparison benchmark (bench/run.ts) measures, shared by the orchestrator, the load
 * driver (bench/driver.ts) and the in-process ceiling (bench/ceiling.ts): the data set, the
 * five workloads, and how each is spelled as a raw kvhub frame and as Redis commands.
 */

export const WORKLOADS = ['set', 'get', 'incr', 'setMany', 'list'] as const;
export type Workload = (typeof WORKLOADS)[number];

/** The instance every kvhub workload runs in. */
export const INSTANCE = 'bench';
/** Namespace of the single keys (`set`, `get`, `setMany`) and of the counters (`incr`). */
export const KV_NAMESPACE = 'kv';
export const COUNTER_NAMESPACE = 'ctr';
/** Namespace of the list pages: PAGE_GROUPS prefixes `g<n>:` of PAGE_SIZE keys each. */
export const PAGE_NAMESPACE = 'page';

/** Keys `k0` .. `k<KEYSPACE-1>` are preloaded; `get` reads and `set` overwrites random ones. */
export const KEYSPACE = 10_000;
/** `incr` adds 1 to one of this many counters, chosen at random. */
export const COUNTERS = 1_000;
/** Entries of one `setMany` (and of one Redis MSET). */
export const SET_MANY_SIZE = 100;
/** Records of one list page. */
export const PAGE_SIZE = 100;
export const PAGE_GROUPS = 10;

/**
 * The ~100-byte JSON value every write stores. As JSON text (what kvhub stores and Redis gets as
 * its string value) it is {@link VALUE_JSON}.
 */
export const VALUE = {
  name: 'Ada Lovelace',
  email: 'ada@example.com',
  roles: ['admin', 'dev'],
  active: true,
  visits: 1234,
  score: 98.5,
} as const;
export const VALUE_JSON = JSON.stringify(VALUE);

export function randomInt(n: number): number {
  return Math.floor(Math.random() * n);
}

export const keyName = (n: number) => `k${n}`;
export const counterName = (n: number) => `c${n}`;
export const pagePrefix = (group: number) => `g${group}:`;
/** Keys of one page group, zero-padded so that byte order is numeric order. */
export const pageKey = (group: number, i: number) => `${pagePrefix(group)}${String(i).padStart(3, '0')}`;

/** The first key of a random run of SET_MANY_SIZE consecutive keys inside the keyspace. */
export const setManyBase = () => randomInt(KEYSPACE - SET_MANY_SIZE);

// ------------------------------------------------------------------------ raw kvhub frames

/**
 * The text of one request frame for `workload`, with `requestId`. Built by concatenation around
 * the pre-serialized value: the raw driver should spend as little CPU as it can.
 */
export function rawFrame(workload: Workload, requestId: string): string {
  const head = `{"type":"kvStore.${workload}","requestId":"${requestId}","params":{"instanceId":"${INSTANCE}",`;
  switch (workload) {
    case 'set':
      return `${head}"namespace":"${KV_NAMESPACE}","key":"${keyName(randomInt(KEYSPACE))}","value":${VALUE_JSON}}}`;
    case 'get':
      return `${head}"namespace":"${KV_NAMESPACE}","key":"${keyName(randomInt(KEYSPACE))}"}}`;
    case 'incr':
      return `${head}"namespace":"${COUNTER_NAMESPACE}","key":"${counterName(randomInt(COUNTERS))}"}}`;
    case 'setMany':
      return `${head}"namespace":"${KV_NAMESPACE}","entries":${setManyEntriesJson(setManyBase())}}}`;
    case 'list':
      return `${head}"namespace":"${PAGE_NAMESPACE}","prefix":"${pagePrefix(randomInt(PAGE_GROUPS))}","limit":${PAGE_SIZE}}}`;
  }
}

function setManyEntriesJson(base: number): string {
  const parts: string[] = [];
  for (let i = 0; i < SET_MANY_SIZE; i++) parts.push(`{"key":"${keyName(base + i)}","value":${VALUE_JSON}}`);
  return `[${parts.join(',')}]`;
}

// ------------------------------------------------------------------------ Redis

/** Redis key of a kvhub (namespace, key): `<namespace>:<key>`. */
export const redisKey = (namespace: string, key: string) => `${namespace}:${key}`;

/** The keys a Redis "list page" reads with MGET: the PAGE_SIZE keys of one page group. */
export function redisPageKeys(group: number): string[] {
  return Array.from({ length: PAGE_SIZE }, (_, i) => redisKey(PAGE_NAMESPACE, pageKey(group, i)));
}

/** What each workload is in Redis, for the printed table and the README. */
export const REDIS_MAPPING: Record<Workload, string> = {
  set: 'SET kv:k<n> <value JSON>',
  get: 'GET kv:k<n>',
  incr: 'INCR ctr:c<n>',
  setMany: 'MSET of 100 keys (atomic, one command)',
  list: 'MGET of the 100 known keys of a page group (values only, no order/cursor)',
};
