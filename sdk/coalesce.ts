import type { Reply, ReplyData } from '../protocol/index.js';
import { isValidKey } from '../protocol/limits.js';

/**
 * Gets made in the same tick, sent as one `kvStore.getMany` per instance and namespace.
 *
 * A server answers a getMany of n keys for a fraction of the work of n gets (one frame, one
 * validation, one read), and a getMany's reply has no worst-case size to reserve room for, unlike
 * a batch of gets. Reads commute, so the gets of a run with no other request between them may be
 * grouped in any order. Each get still resolves with the envelope it would have had alone: its
 * own `type` and `requestId`, `data: { value, exists, record }`, and the getMany's timestamp.
 *
 * When the getMany fails, each get gets the answer it would have had alone, at the same moment:
 * - a failure that a get of any of its keys would have had too (an unknown instance, a token
 *   that may not read it, a connection over its in-flight limit, a storage failure) answers
 *   every get, under the get's own type and requestId;
 * - LIMIT_EXCEEDED (the values together are more than a frame holds) and VALIDATION_ERROR (an
 *   instance id or namespace the server refuses) send each get again on its own. Those reads run
 *   later than they would have alone, after what was sent in the meantime; keys that the server
 *   would refuse never go in a getMany, so no valid key is read late because of another's. After
 *   a LIMIT_EXCEEDED the client puts no more gets in one getMany than a batch frame would hold
 *   (batchCapacity: 5 under the default limits), which always fit, so it happens once at most.
 * - A reply that is not a getMany's reply to these keys fails each get with INTERNAL_ERROR, as a
 *   malformed reply to a get alone does.
 *
 * A get that wants the value alone (a handle's `get`, see VALUE_ONLY below) goes in a
 * `kvStore.getValues` instead, when the server lists the `getValues` capability: the same read
 * with items of `{ key, exists, value, contentType }`, without the record that carries the value
 * a second time. Such a get resolves with `data: { value, exists, contentType }`; sent on its own,
 * with a get's full reply. Parsing replies was the largest part of a client's CPU per get.
 */

/**
 * Marks the options of a get or getMany whose caller wants the values alone (a handle's `get` and
 * `getMany`): with other such gets of its tick a get may go out as a `kvStore.getValues`, whose
 * reply leaves the record out (see above), and a getMany goes as one. A symbol, so that it is no
 * part of the public options.
 */
export const VALUE_ONLY: unique symbol = Symbol('kvhub.valueOnly');

/**
 * Most gets one getMany carries. Several smaller getManys beat one large one: the server answers
 * the first while the client still sends or reads the others. With 100 gets in flight on one
 * connection, getManys of 25 or 32 did about 47,000-50,000 gets/s, of 50 or of all 100 about
 * 36,000 (bench/README.md).
 */
export const MAX_GETS_PER_GET_MANY = 32;

/** Where a plain get reads: what a getMany needs to read the same key. */
export interface GetTarget {
  instanceId: string;
  namespace: string;
  key: string;
}

/**
 * The target of a plain `kvStore.get` (a plain object of exactly instanceId, namespace and key,
 * all strings, the key one the server accepts); undefined for anything else, which then goes
 * out as it was asked.
 */
export function getTarget(type: string, params: unknown): GetTarget | undefined {
  // Only a plain object: its frame (JSON.stringify) surely names the key read here (no toJSON).
  if (type !== 'kvStore.get' || typeof params !== 'object' || params === null || Object.getPrototypeOf(params) !== Object.prototype) return undefined;
  const { instanceId, namespace, key, ...rest } = params as Record<string, unknown>;
  if (typeof instanceId !== 'string' || typeof namespace !== 'string' || !isValidKey(key)) return undefined;
  return Object.keys(rest).length === 0 ? { instanceId, namespace, key } : undefined;
}

/** A get waiting to go out: its requestId, its target, and whether it goes in a getValues (see above). */
export interface QueuedGet {
  requestId: string;
  target: GetTarget;
  valueOnly: boolean;
}

/**
 * An upper bound of the UTF-8 bytes of `text` written as a JSON string: an escaped character
 * takes at most 6 bytes (\uXXXX), any other UTF-16 code unit at most 3, and two quotes.
 */
function jsonStringBytes(text: string): number {
  return 6 * text.length + 2;
}

/**
 * An upper bound of the UTF-8 bytes of a plain get's own frame, `{"type":"kvStore.get",
 * "requestId":...,"params":{"instanceId":...,"namespace":...,"key":...}}`: most never need it
 * built (they go in a getMany), so whether it would fit a frame is decided from this.
 */
export function getFrameBytes(requestId: string, target: GetTarget): number {
  return 128 + requestId.length + jsonStringBytes(target.instanceId) + jsonStringBytes(target.namespace) + jsonStringBytes(target.key);
}

/**
 * The gets of a run grouped by instance and namespace, in the order each group's first get was
 * made, each group cut to at most `maxKeys` gets and to getMany frames of at most `maxBytes`
 * (counted with upper bounds: the envelope, instance id and namespace once, then each key).
 */
export function groupGets(run: readonly QueuedGet[], maxKeys: number, maxBytes: number): QueuedGet[][] {
  const open = new Map<string, { gets: QueuedGet[]; bytes: number }>();
  const groups: QueuedGet[][] = [];
  for (const get of run) {
    const { instanceId, namespace, key } = get.target;
    const place = `${get.valueOnly ? 'v' : 'r'}${instanceId.length}:${instanceId}${namespace}`;
    const bytes = jsonStringBytes(key) + 1;
    let group = open.get(place);
    if (group === undefined || group.gets.length >= maxKeys || group.bytes + bytes > maxBytes) {
      group = { gets: [], bytes: 256 + jsonStringBytes(instanceId) + jsonStringBytes(namespace) };
      open.set(place, group);
      groups.push(group.gets);
    }
    group.gets.push(get);
    group.bytes += bytes;
  }
  return groups;
}

/** The getMany (or getValues) frame reading the keys of `group` (gets of one instance and namespace, and one kind), in order. */
export function getManyFrame(requestId: string, group: readonly QueuedGet[]): string {
  const { target, valueOnly } = group[0]!;
  const { instanceId, namespace } = target;
  const type = valueOnly ? 'kvStore.getValues' : 'kvStore.getMany';
  return JSON.stringify({ type, requestId, params: { instanceId, namespace, keys: group.map((get) => get.target.key) } });
}

/**
 * A grouped request's failure (a getMany's, a setEach's) as each request of the group would have
 * had it alone: under its own type and requestId, with its own copy of `data`, so that a caller
 * that changes one reply does not change the others.
 */
export function failureForEach<T extends 'kvStore.get' | 'kvStore.set'>(reply: Reply & { success: false }, type: T, requestIds: readonly string[]): Reply<T>[] {
  return requestIds.map((requestId) => ({ ...reply, type, requestId, ...(reply.data !== undefined && { data: structuredClone(reply.data) }) }) as Reply<T>);
}

/** Failures of a getMany after which its gets go out again on their own (see above). */
const SPLIT_ON: ReadonlySet<unknown> = new Set(['LIMIT_EXCEEDED', 'VALIDATION_ERROR']);

/** What a getMany's reply means for its gets. */
export type GetManyOutcome =
  /** Each get's own reply, in the order of the gets. */
  | { kind: 'answered'; replies: Reply<'kvStore.get'>[] }
  /** Each get goes out again on its own; `tooLarge` when the values together were more than a frame holds. */
  | { kind: 'split'; tooLarge: boolean }
  /** The reply is not a getMany's reply to these keys. */
  | { kind: 'malformed' };

/**
 * What the getMany of `gets` was answered, get by get: a success's items (each checked against
 * its get's key), or a failure that every get shares, under each get's own type and requestId.
 */
export function getManyOutcome(reply: Reply, gets: readonly QueuedGet[]): GetManyOutcome {
  if (!reply.success) {
    if (SPLIT_ON.has(reply.code)) return { kind: 'split', tooLarge: reply.code === 'LIMIT_EXCEEDED' };
    return { kind: 'answered', replies: failureForEach(reply, 'kvStore.get', gets.map(({ requestId }) => requestId)) };
  }
  const items = (reply.data as { items?: unknown } | undefined)?.items;
  if (!Array.isArray(items) || items.length !== gets.length) return { kind: 'malformed' };
  const replies: Reply<'kvStore.get'>[] = [];
  for (const [i, item] of items.entries()) {
    const get = gets[i]!;
    if (typeof item !== 'object' || item === null || (item as { key?: unknown }).key !== get.target.key) return { kind: 'malformed' };
    const { value, exists, record, contentType } = item as Record<string, unknown>;
    // A getValues item's data has the item's contentType where a get's has its record (see above);
    // without it a binary value could not be told from a JSON string.
    if (get.valueOnly && (typeof exists !== 'boolean' || (contentType !== null && typeof contentType !== 'string'))) return { kind: 'malformed' };
    const data = get.valueOnly ? { value, exists, contentType } : { value, exists, record };
    replies.push({ type: 'kvStore.get', requestId: get.requestId, success: true, data: data as ReplyData<'kvStore.get'>, timestamp: reply.timestamp });
  }
  return { kind: 'answered', replies };
}
