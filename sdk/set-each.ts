import type { Reply, ReplyData } from '../protocol/index.js';
import { ENVELOPE_RESERVE_BYTES } from '../protocol/batch.js';
import { failureForEach } from './coalesce.js';
import { isValidKey, isValidName, MAX_CONTENT_TYPE_LENGTH, MAX_INSTANCE_ID_LENGTH, MAX_NAMESPACE_LENGTH } from '../protocol/limits.js';

/**
 * Sets made in the same tick, sent as one `kvStore.setEach` per run of sets to one instance and
 * namespace.
 *
 * A keyed write costs the server a kept reply (a row written, a lookup, a digest of the params)
 * besides the write itself, and a batch frame of sets pays it per set. A setEach writes its
 * entries each as its set alone would, in order, under one idempotency key: one kept reply for
 * the whole. Each set still resolves with the envelope it would have had alone: its own `type`
 * and `requestId`, `data: { record }` or its own failure, and the setEach's timestamp.
 *
 * Only a run of sets with no other request between them is grouped, and only consecutive sets to
 * the same instance and namespace: the server runs them in the order they were made, as it would
 * have run them alone. A set goes out on its own (or in a batch frame) when its caller gave an
 * idempotency key (the caller may retry with it elsewhere, so it must be the key the server
 * keeps), when it has a condition (a failed condition's result carries the key's current
 * record, of any size), and when its params are not plain or not ones the server's schema takes
 * (see setTarget): so the server has no reason to refuse a setEach as a whole.
 *
 * When a server does refuse one as a whole:
 * - VALIDATION_ERROR, LIMIT_EXCEEDED or UNKNOWN_TYPE mean that nothing ran: each set goes out
 *   again on its own, with its own key. It then runs after whatever the client sent meanwhile.
 * - Any other failure (FORBIDDEN, RATE_LIMITED, a storage error) answers every set with it, as
 *   each would have been answered alone.
 * - A reply whose results do not match the sets fails each with INTERNAL_ERROR.
 * After a drop, the setEach goes out again whole, with the same requestId and key, so that it runs
 * once; its sets never go out on their own then. A set that went out on its own goes out again on
 * its own, never in a setEach: under another key it could run twice.
 */

/** Most sets one setEach carries: enough for a tick's sets under usual loads, few enough that the server answers the first while the client still sends the next. */
export const MAX_SETS_PER_SET_EACH = 32;

/** A plain set, as a setEach entry needs it, and as it goes out on its own. */
export interface SetTarget {
  instanceId: string;
  namespace: string;
  autoCreate: boolean | undefined;
  /** The entry's JSON text: the set's params without instanceId, namespace and autoCreateInstance. */
  entryJson: string;
  /** The idempotency key the set carries when it goes out on its own. */
  ownKey: string;
  /** An upper bound of the bytes the server counts for the entry's result in its reply. */
  replyBytes: number;
}

/** The params a set that goes in a setEach may have. */
const PLAIN_SET_FIELDS: ReadonlySet<string> = new Set(['instanceId', 'namespace', 'autoCreateInstance', 'key', 'value', 'contentType', 'ttlMs']);

/**
 * The target of a plain `kvStore.set` that may go in a setEach: a plain object of an instanceId,
 * namespace and key the server accepts, a value, and otherwise only a content type the server
 * accepts, a finite ttlMs and a boolean autoCreateInstance, without an idempotency key of the
 * caller's. Anything else is undefined and goes out as it was asked: a set that the server's
 * schema would refuse must not take the setEach's other sets down with it, so the checks here
 * are the schema's. (A TTL out of range, or a value too large or too deep, fails its entry alone.)
 * `ownKey` makes the key it goes out with alone.
 */
export function setTarget(type: string, params: unknown, ownKey: () => string): SetTarget | undefined {
  // Only a plain object: it has no toJSON or getters of a class that could change its frame.
  if (type !== 'kvStore.set' || typeof params !== 'object' || params === null || Object.getPrototypeOf(params) !== Object.prototype) return undefined;
  const { instanceId, namespace, autoCreateInstance, key, value, contentType, ttlMs } = params as Record<string, unknown>;
  if (!isValidName(instanceId, MAX_INSTANCE_ID_LENGTH) || !isValidName(namespace, MAX_NAMESPACE_LENGTH) || !isValidKey(key) || value === undefined) return undefined;
  if (autoCreateInstance !== undefined && typeof autoCreateInstance !== 'boolean') return undefined;
  if (contentType !== undefined && !isValidName(contentType, MAX_CONTENT_TYPE_LENGTH)) return undefined;
  if (ttlMs !== undefined && !Number.isFinite(ttlMs)) return undefined;
  for (const field of Object.keys(params)) if (!PLAIN_SET_FIELDS.has(field)) return undefined;
  const valueJson = JSON.stringify(value);
  // A value that JSON leaves out (a function, a symbol) goes alone, to be refused as missing.
  if (valueJson === undefined) return undefined;
  let entryJson = `{"key":${JSON.stringify(key)},"value":${valueJson}`;
  if (contentType !== undefined) entryJson += `,"contentType":${JSON.stringify(contentType)}`;
  if (ttlMs !== undefined) entryJson += `,"ttlMs":${JSON.stringify(ttlMs)}`;
  entryJson += '}';
  // The server's own bound: 512 bytes, the value as it travels, and the strings at their worst JSON escaping.
  const strings = 3 * (instanceId.length + namespace.length + key.length + (contentType?.length ?? 16));
  return { instanceId, namespace, autoCreate: autoCreateInstance, entryJson, ownKey: ownKey(), replyBytes: 512 + 3 * valueJson.length + 6 * strings };
}

/** The frame of a set sent on its own: the params it was made with, and its own key. */
export function setFrame(requestId: string, target: SetTarget): string {
  return `{"type":"kvStore.set","requestId":${JSON.stringify(requestId)},"params":${paramsHead(target)},${target.entryJson.slice(1, -1)},"idempotencyKey":${JSON.stringify(target.ownKey)}}}`;
}

/** An upper bound of the UTF-8 bytes of a set's own frame (see setFrame): most never need it built. */
export function setFrameBytes(requestId: string, target: SetTarget): number {
  // The entry is JSON text already (at most 3 bytes per UTF-16 code unit); the other strings are yet to be escaped (at most 6).
  return 160 + 3 * (target.entryJson.length + target.ownKey.length) + 6 * (requestId.length + target.instanceId.length + target.namespace.length);
}

/** A set waiting to go out: its requestId and its target. */
export interface QueuedSet {
  requestId: string;
  target: SetTarget;
}

/**
 * A run of sets cut into setEach groups: consecutive sets to one instance, namespace and
 * autoCreateInstance, at most `maxSets` each, whose results fit a reply of `maxReplyBytes`.
 */
export function groupSets(run: readonly QueuedSet[], maxSets: number, maxReplyBytes: number): QueuedSet[][] {
  const groups: QueuedSet[][] = [];
  let group: QueuedSet[] = [];
  let bytes = 0;
  for (const set of run) {
    const first = group[0]?.target;
    const { target } = set;
    const samePlace = first !== undefined && first.instanceId === target.instanceId && first.namespace === target.namespace && first.autoCreate === target.autoCreate;
    if (!samePlace || group.length >= maxSets || bytes + target.replyBytes > maxReplyBytes - ENVELOPE_RESERVE_BYTES) {
      if (group.length > 0) groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(set);
    bytes += target.replyBytes;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/** The setEach frame writing the sets of `group` (of one instance, namespace and autoCreateInstance), in order, under `idempotencyKey`. */
export function setEachFrame(requestId: string, group: readonly QueuedSet[], idempotencyKey: string): string {
  const entries = group.map((set) => set.target.entryJson).join(',');
  return `{"type":"kvStore.setEach","requestId":${JSON.stringify(requestId)},"params":${paramsHead(group[0]!.target)},"entries":[${entries}],"idempotencyKey":${JSON.stringify(idempotencyKey)}}}`;
}

/** The opening of a set's or setEach's params, up to the entry's own fields: `{"instanceId":…,"namespace":…[,"autoCreateInstance":…]`. */
function paramsHead(target: SetTarget): string {
  const autoCreate = target.autoCreate === undefined ? '' : `,"autoCreateInstance":${target.autoCreate}`;
  return `{"instanceId":${JSON.stringify(target.instanceId)},"namespace":${JSON.stringify(target.namespace)}${autoCreate}`;
}

/** Failures of a setEach after which its sets go out again on their own: nothing of it ran. */
const SPLIT_ON: ReadonlySet<unknown> = new Set(['VALIDATION_ERROR', 'LIMIT_EXCEEDED', 'UNKNOWN_TYPE']);

/** What a setEach's reply means for its sets. */
export type SetEachOutcome =
  /** Each set's own reply, in the order of the sets. */
  | { kind: 'answered'; replies: Reply<'kvStore.set'>[] }
  /** Nothing ran: each set goes out again on its own. */
  | { kind: 'split' }
  /** The reply is not a setEach's reply to these sets. */
  | { kind: 'malformed' };

/** What the setEach of the sets `requestIds` was answered, set by set (see above). */
export function setEachOutcome(reply: Reply, requestIds: readonly string[]): SetEachOutcome {
  const { timestamp } = reply;
  if (!reply.success) {
    if (SPLIT_ON.has(reply.code)) return { kind: 'split' };
    return { kind: 'answered', replies: failureForEach(reply, 'kvStore.set', requestIds) };
  }
  const results = (reply.data as { results?: unknown } | undefined)?.results;
  if (!Array.isArray(results) || results.length !== requestIds.length) return { kind: 'malformed' };
  const replies: Reply<'kvStore.set'>[] = [];
  for (const [i, result] of results.entries()) {
    const requestId = requestIds[i]!;
    if (typeof result !== 'object' || result === null) return { kind: 'malformed' };
    const { success, record, code, error, data } = result as Record<string, unknown>;
    if (success === true && typeof record === 'object' && record !== null) {
      replies.push({ type: 'kvStore.set', requestId, success: true, data: { record } as ReplyData<'kvStore.set'>, timestamp });
    } else if (success === false && typeof code === 'string') {
      const message = typeof error === 'string' ? error : code;
      replies.push({ type: 'kvStore.set', requestId, success: false, code, error: message, ...(data !== undefined && { data }), timestamp } as Reply<'kvStore.set'>);
    } else return { kind: 'malformed' };
  }
  return { kind: 'answered', replies };
}
