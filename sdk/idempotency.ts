import { nanoid } from 'nanoid';
import type { ParamsInput, RequestType } from '../protocol/index.js';

/** True when params of type `P` name an `idempotencyKey` (a params type of `{}` has every key, and so does not count). */
type TakesKey<P> = string extends keyof P ? false : 'idempotencyKey' extends keyof P ? true : false;

/** The request types whose params take an `idempotencyKey`: the writes. */
type WriteType = { [T in RequestType]: TakesKey<ParamsInput<T>> extends true ? T : never }[RequestType];

/**
 * The writes, as a value. The protocol exports the same set (`WRITE_TYPES`), but it is built from
 * the zod schemas, and importing it would load zod and every schema into the SDK (and into browser
 * bundles) for one lookup. `satisfies` ties this list to the schemas instead: a write added to the
 * protocol, or a type listed here that takes no key, fails the type check.
 */
const WRITES = {
  'kvStore.createInstance': true,
  'kvStore.updateInstance': true,
  'kvStore.deleteInstance': true,
  'kvStore.set': true,
  'kvStore.delete': true,
  'kvStore.deleteNamespace': true,
  'kvStore.setMany': true,
  'kvStore.setEach': true,
  'kvStore.incr': true,
  'kvStore.expire': true,
  'kvStore.atomic': true,
} as const satisfies Record<WriteType, true>;

/** The request types that write; every request of one of them carries an `idempotencyKey`. */
const SDK_WRITE_TYPES: ReadonlySet<string> = new Set(Object.keys(WRITES));

function isParamsObject(params: unknown): params is Record<string, unknown> {
  return typeof params === 'object' && params !== null && !Array.isArray(params);
}

/**
 * `params` with a fresh `idempotencyKey` when `type` is a write that has none, so that the server
 * runs it at most once however often the SDK sends it. A key the caller gave is kept: reusing one
 * key is how a caller retries a write on another client or after a restart of its own process.
 * Params that are not an object go out as they are; the server rejects them.
 */
export function withIdempotencyKey(type: string, params: unknown): unknown {
  if (!SDK_WRITE_TYPES.has(type) || !isParamsObject(params) || params['idempotencyKey'] !== undefined) return params;
  // Not { ...params, idempotencyKey }: on Node 20 a spread followed by a new field takes V8's slow path (about 1.4 µs).
  return Object.assign({}, params, { idempotencyKey: newIdempotencyKey() });
}

/** A random prefix for this process's keys (made on first use: some runtimes refuse random numbers while a module loads), and the count of keys made with it. */
let keyPrefix: string | undefined;
let keysMade = 0;

/**
 * A key no other writer makes: this process's random prefix (126 bits, as a nanoid) and a
 * counter. Consecutive keys sort together, so the server files each in the index pages it filed
 * the last ones in, instead of dirtying a random page per write as fully random keys would.
 */
export function newIdempotencyKey(): string {
  keyPrefix ??= nanoid();
  return `${keyPrefix}.${(keysMade++).toString(36).padStart(10, '0')}`;
}

/**
 * True when a request may be sent again after the connection drops before its reply: a write
 * with a key, which the server answers from its kept reply instead of running it twice.
 */
export function isKeyedWrite(type: string, params: unknown): boolean {
  return SDK_WRITE_TYPES.has(type) && isParamsObject(params) && typeof params['idempotencyKey'] === 'string';
}
