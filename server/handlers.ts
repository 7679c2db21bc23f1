import { Buffer } from 'node:buffer';
import {
  DEFAULT_LIST_LIMIT,
  ErrorCode,
  invalidParam,
  isValidTtl,
  MAX_TTL_MS,
  PROTOCOL_VERSION,
  ProtocolError,
  type KvRecord,
  type Params,
  type RecordField,
  type ReplyData,
  type RequestType,
  singleReplyRoom,
} from '../protocol/index.js';
import { canSeeInstance, type Principal } from './auth/index.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { toQueryInput } from './query.js';
import { assertFits, fitToBudget, wireSize } from './reply-budget.js';
import type { AtomicOpInput, SetEachInput, SetEntry, StorageEngine, StoredValue, WriteOptions } from './storage/engine.js';
import { KeyReading, KeyValue, Reading, setFailure } from './storage/record-json.js';
import { encodeValue } from './values.js';
import type { WatchHub, WatchSession } from './watch.js';

/** The limits a server enforces; reported in `hello.limits`. */
export interface Limits {
  maxValueBytes: number;
  maxPayloadBytes: number;
  maxBatch: number;
}

/**
 * The limits on connections a server enforces; reported in `hello.limits` next to {@link Limits}
 * so that a client can pace itself instead of learning them from RATE_LIMITED replies and closes.
 */
export interface ConnectionLimits {
  /** Open WebSocket connections; an upgrade above it is refused with HTTP 503. */
  maxConnections: number;
  /** Requests (batch elements counted one by one) one connection may have in flight; above it, RATE_LIMITED. */
  maxInFlight: number;
  /** Unsent bytes a connection may leave queued before it is closed with 1013. */
  maxBufferedBytes: number;
  /** Interval of the server's WebSocket ping; a peer that misses one is terminated at the next. */
  heartbeatIntervalMs: number;
}

/** What a handler may use besides its params. */
export interface HandlerContext {
  engine: StorageEngine;
  limits: Limits;
  /** Reported by hello only; enforced by the connection layer. */
  connectionLimits: ConnectionLimits;
  durability: 'full' | 'normal';
  serverVersion: string;
  /** Bytes the reply's `data` may take: list and query shorten to it, getMany and setMany refuse. */
  replyBudget: number;
  /** The server's subscriptions. */
  watch: WatchHub;
  /** The connection the request came on, for its subscriptions. */
  session: WatchSession;
  /** Runs `task` once the frame holding this request's reply has been sent. */
  afterReply(task: () => void): void;
  /**
   * True when the reply is written as JSON text (over a socket) and its records reach no other
   * code, so that reads may leave stored values unparsed (see ReadOptions); false when the reply
   * is handed over as objects (embedded).
   */
  repliesAsText: boolean;
  /** What the connection's token allows; dispatch has checked the request against it already. */
  principal: Principal;
  /**
   * The options of the request's write: its idempotency claim when it carries a key. A function,
   * called once the handler has validated the params, because the claim's fingerprint serializes them.
   */
  writeOptions(): WriteOptions;
}

type Handler<T extends RequestType> = (params: Params<T>, ctx: HandlerContext) => Promise<ReplyData<T>>;

/**
 * The items of a getMany or getValues: each key's record read in one go and wrapped as `Item`,
 * in the order asked, refused as a whole when they would not fit the reply.
 */
async function readKeys<Item>(
  p: { instanceId: string; namespace: string; keys: string[] },
  { engine, replyBudget, repliesAsText }: HandlerContext,
  Item: new (key: string, record: KvRecord | null) => Item,
  what: string,
): Promise<Item[]> {
  const records = await engine.getMany(p.instanceId, p.namespace, p.keys, replyBudget, { serializeOnly: repliesAsText });
  const items = p.keys.map((key, i) => new Item(key, records[i] ?? null));
  assertFits(items.reduce((sum, item) => sum + wireSize(item), 0), replyBudget, what);
  return items;
}

/** Capabilities announced in `hello`. */
export const CAPABILITIES = ['batch', 'binary', 'ttl', 'conditions', 'atomic', 'query', 'list', 'incr', 'watch', 'idempotency', 'getValues', 'setEach'] as const;

/**
 * One handler per request type, typed from the protocol: adding a message to protocol/ without
 * a handler here does not compile. Handlers validate what the schema cannot (limits, TTL ranges,
 * value sizes) and leave storage semantics to the engine.
 */
export const handlers: { [T in RequestType]: Handler<T> } = {
  'kvStore.createInstance': async ({ idempotencyKey: _, ...input }, { engine, writeOptions }) => ({
    instance: await engine.createInstance(input, writeOptions()),
  }),
  'kvStore.getInstance': async (p, { engine }) => ({ instance: await engine.getInstance(p.instanceId) }),
  'kvStore.listInstances': async (_p, { engine, principal }) => ({
    instances: (await engine.listInstances()).filter((instance) => canSeeInstance(principal, instance.id)),
  }),
  'kvStore.updateInstance': async ({ instanceId, idempotencyKey: _, ...patch }, { engine, writeOptions }) => ({
    instance: await engine.updateInstance(instanceId, patch, writeOptions()),
  }),
  'kvStore.deleteInstance': async (p, { engine, writeOptions }) => {
    await engine.deleteInstance(p.instanceId, writeOptions());
    return { deleted: true };
  },

  'kvStore.get': async (p, { engine, repliesAsText }) => {
    return new Reading(await engine.get(p.instanceId, p.namespace, p.key, { serializeOnly: repliesAsText }));
  },
  'kvStore.set': async (p, { engine, limits, writeOptions }) => {
    const record = await engine.set(
      {
        instanceId: p.instanceId,
        namespace: p.namespace,
        ...setEntry(p, limits),
        ...(p.autoCreateInstance !== undefined && { autoCreate: p.autoCreateInstance }),
      },
      writeOptions(),
    );
    return { record };
  },
  'kvStore.delete': async (p, { engine, writeOptions }) => ({
    deleted: await engine.delete(p.instanceId, p.namespace, p.key, p.ifVersion, writeOptions()),
  }),
  'kvStore.deleteNamespace': async (p, { engine, writeOptions }) => ({
    deletedCount: await engine.deleteNamespace(p.instanceId, p.namespace, writeOptions()),
  }),
  'kvStore.query': async (p, { engine, limits, replyBudget }) => {
    const input = toQueryInput(p.query, limits.maxValueBytes);
    const { records, total } = await engine.query({ ...input, maxBytes: replyBudget });
    const select = p.query.select;
    const projected = select ? records.map((record) => pick(record, select)) : records;
    return { result: { records: fitToBudget(projected, replyBudget), total, limit: input.limit, offset: input.offset } };
  },
  'kvStore.getNamespaces': async (p, { engine }) => ({ namespaces: await engine.getNamespaces(p.instanceId) }),
  'kvStore.getRecordCount': async (p, { engine }) => ({ count: await engine.count(p.instanceId, p.namespace) }),

  'kvStore.hello': async (p, { limits, connectionLimits, durability, serverVersion }) => {
    if (p.protocolVersion !== undefined && p.protocolVersion !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        ErrorCode.VERSION_MISMATCH,
        `this server speaks protocol version ${PROTOCOL_VERSION}, not ${p.protocolVersion}`,
        { supported: [PROTOCOL_VERSION] },
      );
    }
    return {
      protocolVersion: PROTOCOL_VERSION,
      serverVersion,
      durability,
      capabilities: [...CAPABILITIES],
      limits: { ...limits, maxTtlMs: MAX_TTL_MS, ...connectionLimits },
    };
  },
  'kvStore.ping': async () => ({ pong: true }),
  'kvStore.stats': async (p, { engine }) => engine.stats(p.instanceId),
  'kvStore.getMany': async (p, ctx) => ({ items: await readKeys(p, ctx, KeyReading, 'getMany') }),
  // The engine bounds its read by whole records, which are larger than these items: at worst a
  // read refused as too large that would have fitted, which a client splits as for getMany.
  'kvStore.getValues': async (p, ctx) => ({ items: await readKeys(p, ctx, KeyValue, 'getValues') }),
  'kvStore.setMany': async (p, { engine, limits, replyBudget, writeOptions }) => {
    checkDistinct(p.entries.map((entry) => entry.key), (i) => ['entries', i, 'key']);
    const entries = p.entries.map((entry, i) => {
      const ttlMs = checkTtl(entry.ttlMs, ['entries', i, 'ttlMs']);
      const value = encodeValue(entry.value, entry.contentType, limits.maxValueBytes, `entries.${i}.value`);
      return { key: entry.key, value, ...(ttlMs !== undefined && { ttlMs }) };
    });
    const replyBytes = entries.reduce(
      (sum, entry) => sum + recordSizeBound(p.instanceId, p.namespace, entry.key, entry.value),
      0,
    );
    assertFits(replyBytes, replyBudget, 'setMany');
    const records = await engine.setMany(
      {
        instanceId: p.instanceId,
        namespace: p.namespace,
        entries,
        ...(p.autoCreateInstance !== undefined && { autoCreate: p.autoCreateInstance }),
      },
      writeOptions(),
    );
    return { records };
  },
  'kvStore.setEach': async (p, { engine, limits, replyBudget, writeOptions }) => {
    // An entry that its set alone would have failed before writing is refused in its place, with
    // that failure as its result; the others are written.
    let replyBytes = 0;
    const entries = p.entries.map((params): SetEachInput['entries'][number] => {
      try {
        const entry = setEntry(params, limits);
        // A failed condition's result carries the key's current record, which may be of any size.
        const conditional = entry.ifVersion !== undefined || entry.ifAbsent !== undefined;
        replyBytes += conditional ? singleReplyRoom(limits.maxValueBytes) : recordSizeBound(p.instanceId, p.namespace, entry.key, entry.value);
        return entry;
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        replyBytes += wireSize(setFailure(error));
        return { refused: error };
      }
    });
    assertFits(replyBytes, replyBudget, 'setEach');
    // Nothing to write: nothing ran, so nothing is kept, as for a set refused alone.
    if (entries.every(isRefused)) return { results: entries.map((entry) => setFailure(entry.refused)) };
    const input = { instanceId: p.instanceId, namespace: p.namespace, entries, ...(p.autoCreateInstance !== undefined && { autoCreate: p.autoCreateInstance }) };
    return { results: await engine.setEach(input, writeOptions()) };
  },
  'kvStore.list': async (p, { engine, replyBudget }) => {
    const limit = p.limit ?? DEFAULT_LIST_LIMIT;
    const after = p.cursor !== undefined && p.cursor !== null ? decodeCursor(p.cursor) : undefined;
    const page = await engine.list({
      instanceId: p.instanceId,
      namespace: p.namespace,
      limit,
      maxBytes: replyBudget,
      ...(p.prefix !== undefined && p.prefix !== '' && { prefix: p.prefix }),
      ...(after !== undefined && { after }),
      ...(p.reverse !== undefined && { reverse: p.reverse }),
    });
    const items = fitToBudget(
      page.records.map((record) => (p.keysOnly ? record.key : record)),
      replyBudget,
    );
    const more = page.more || items.length < page.records.length;
    const last = page.records[items.length - 1];
    const cursor = more && last ? encodeCursor(last.key) : null;
    return p.keysOnly ? { keys: items as string[], cursor } : { records: items as KvRecord[], cursor };
  },
  'kvStore.incr': async (p, { engine, writeOptions }) => {
    const ttlMs = checkTtl(p.ttlMs, ['ttlMs']);
    const record = await engine.incr(
      {
        instanceId: p.instanceId,
        namespace: p.namespace,
        key: p.key,
        by: p.by ?? 1,
        ...(ttlMs !== undefined && { ttlMs }),
        ...(p.autoCreateInstance !== undefined && { autoCreate: p.autoCreateInstance }),
      },
      writeOptions(),
    );
    return { value: record.value as number, record };
  },
  'kvStore.expire': async (p, { engine, writeOptions }) => {
    const ttlMs = p.ttlMs === null ? null : checkTtl(p.ttlMs, ['ttlMs'])!;
    return { updated: await engine.expire(p.instanceId, p.namespace, p.key, ttlMs, writeOptions()) };
  },
  'kvStore.ttl': async (p, { engine }) => engine.ttl(p.instanceId, p.namespace, p.key),
  'kvStore.watch': async ({ fromRevision, ...filter }, { watch, session, afterReply }) => {
    const subscription = await watch.subscribe(session, filter, fromRevision);
    // Replayed and live events follow the reply (in a batch, the whole reply frame).
    afterReply(() => watch.start(subscription.subscriptionId));
    return subscription;
  },
  'kvStore.unwatch': async (p, { watch, session }) => ({ removed: watch.unsubscribe(session, p.subscriptionId) }),
  'kvStore.atomic': async (p, { engine, limits, replyBudget, writeOptions }) => {
    const checks = p.checks ?? [];
    checkDistinct(
      p.ops.map((op) => JSON.stringify([op.namespace, op.key])),
      (i) => ['ops', i, 'key'],
    );
    let replyBytes = 0;
    const ops = p.ops.map((op, i): AtomicOpInput => {
      if (op.op === 'delete') return op;
      const ttlMs = checkTtl(op.ttlMs, ['ops', i, 'ttlMs']);
      const ttl = ttlMs !== undefined ? { ttlMs } : {};
      if (op.op === 'incr') {
        replyBytes += recordSizeBound(p.instanceId, op.namespace, op.key, { contentType: 'application/json', json: '0'.repeat(32) });
        return { op: 'incr', namespace: op.namespace, key: op.key, by: op.by ?? 1, ...ttl };
      }
      const value = encodeValue(op.value, op.contentType, limits.maxValueBytes, `ops.${i}.value`);
      replyBytes += recordSizeBound(p.instanceId, op.namespace, op.key, value);
      return { op: 'set', namespace: op.namespace, key: op.key, value, ...ttl };
    });
    assertFits(replyBytes, replyBudget, 'atomic');
    const result = await engine.atomic(
      {
        instanceId: p.instanceId,
        checks,
        ops,
        ...(p.autoCreateInstance !== undefined && { autoCreate: p.autoCreateInstance }),
      },
      writeOptions(),
    );
    return { committed: true, ...result };
  },
};

/** What one key's set writes, from its params: the value encoded and both checked against the limits, as a set alone checks them. */
function setEntry(
  p: { key: string; value: unknown; contentType?: string | undefined; ttlMs?: number | undefined; ifVersion?: number | undefined; ifAbsent?: boolean | undefined },
  limits: Limits,
): SetEntry {
  const ttlMs = checkTtl(p.ttlMs, ['ttlMs']);
  const value = encodeValue(p.value, p.contentType, limits.maxValueBytes);
  return {
    key: p.key,
    value,
    ...(ttlMs !== undefined && { ttlMs }),
    ...(p.ifVersion !== undefined && { ifVersion: p.ifVersion }),
    ...(p.ifAbsent !== undefined && { ifAbsent: p.ifAbsent }),
  };
}

/** A setEach entry refused before any write (see SetEachInput). */
function isRefused(entry: SetEachInput['entries'][number]): entry is { refused: ProtocolError } {
  return 'refused' in entry;
}

/** The TTL as given, or INVALID_TTL when it is a number outside the contract's range. */
function checkTtl(ttlMs: number | undefined, path: (string | number)[]): number | undefined {
  if (ttlMs === undefined || isValidTtl(ttlMs)) return ttlMs;
  throw new ProtocolError(ErrorCode.INVALID_TTL, `params.${path.join('.')} must be an integer from 1 to ${MAX_TTL_MS} milliseconds`, {
    path,
    maxTtlMs: MAX_TTL_MS,
  });
}

function checkDistinct(keys: string[], pathOf: (index: number) => (string | number)[]): void {
  const seen = new Set<string>();
  keys.forEach((key, index) => {
    if (seen.has(key)) {
      throw invalidParam(pathOf(index), 'the same key appears twice');
    }
    seen.add(key);
  });
}

/**
 * An upper bound of one record's serialized size: the value as it travels plus the other fields,
 * with the strings at their worst JSON escaping (6 bytes per byte for control characters).
 */
function recordSizeBound(instanceId: string, namespace: string, key: string, value: StoredValue): number {
  const valueBytes = 'json' in value ? Buffer.byteLength(value.json) : Math.ceil(value.bytes.byteLength / 3) * 4 + 2;
  const strings = Buffer.byteLength(instanceId) + Buffer.byteLength(namespace) + Buffer.byteLength(key) + value.contentType.length;
  return 512 + valueBytes + 6 * strings;
}

function pick(record: KvRecord, fields: readonly RecordField[]): Partial<KvRecord> {
  const picked: Partial<KvRecord> = {};
  for (const field of fields) (picked as Record<string, unknown>)[field] = record[field];
  return picked;
}
