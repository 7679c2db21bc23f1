import { z } from 'zod';
import {
  MAX_CONTENT_TYPE_LENGTH,
  MAX_INSTANCE_ID_LENGTH,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
  MAX_NAMESPACE_LENGTH,
  MAX_QUERY_CONDITIONS,
  MAX_QUERY_LIMIT,
  MAX_REQUEST_ID_LENGTH,
  utf8Length,
} from './limits.js';

// ---------------------------------------------------------------- building blocks

const wellFormed = (s: string) => s.isWellFormed();
const WELL_FORMED = { message: 'must be well-formed Unicode (no lone surrogates)' };

/** Client-chosen correlation id: 1..128 characters. */
export const RequestId = z.string().min(1).max(MAX_REQUEST_ID_LENGTH);
export const InstanceId = z.string().min(1).max(MAX_INSTANCE_ID_LENGTH).refine(wellFormed, WELL_FORMED);
export const Namespace = z.string().min(1).max(MAX_NAMESPACE_LENGTH).refine(wellFormed, WELL_FORMED);
export const Key = z
  .string()
  .min(1)
  .refine(wellFormed, WELL_FORMED)
  .refine((k) => utf8Length(k) <= MAX_KEY_BYTES, { message: `must be at most ${MAX_KEY_BYTES} UTF-8 bytes` });
/** Any JSON value, `null` included; a missing value is rejected. Depth and size are checked by the server. */
export const Value = z.unknown().refine((v) => v !== undefined, { message: 'value is required' });
/** `application/json` (the default) or any other type, whose value is base64 bytes. */
export const ContentType = z.string().min(1).max(MAX_CONTENT_TYPE_LENGTH).refine(wellFormed, WELL_FORMED);
/** Range-checked by the server, which answers INVALID_TTL outside 1..MAX_TTL_MS. */
export const TtlMs = z.number();
export const Version = z.number().int().nonnegative();
export const IsoTime = z.string();

/** A stored key and its value, as every reply carries it. */
export const KvRecord = z.object({
  id: z.string(),
  instanceId: z.string(),
  namespace: z.string(),
  key: z.string(),
  value: z.unknown(),
  contentType: z.string(),
  version: z.number().int(),
  revision: z.number().int(),
  createdAt: IsoTime,
  updatedAt: IsoTime,
  expiresAt: IsoTime.nullable(),
});
export type KvRecord = z.infer<typeof KvRecord>;

/** The record fields a query may `select`. */
export const RecordField = KvRecord.keyof();
export type RecordField = z.infer<typeof RecordField>;

export const Instance = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().optional(),
  createdAt: IsoTime,
  updatedAt: IsoTime,
});
export type Instance = z.infer<typeof Instance>;

const conditions = {
  ifVersion: Version.optional(),
  ifAbsent: z.boolean().optional(),
};
const noConflictingConditions = (p: { ifVersion?: number | undefined; ifAbsent?: boolean | undefined }) =>
  !(p.ifAbsent === true && p.ifVersion !== undefined);
const CONDITIONS_EXCLUSIVE = { message: 'ifVersion and ifAbsent cannot be combined', path: ['ifAbsent'] };

// ---------------------------------------------------------------- query DSL

export const QueryOperator = z.enum(['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'contains', 'startsWith', 'endsWith']);
export type QueryOperator = z.infer<typeof QueryOperator>;
/** `key`, `namespace`, `createdAt`, `updatedAt`, `version`, `value` or `value.<dot.path>`. */
export const QueryField = z
  .string()
  .regex(/^(key|namespace|createdAt|updatedAt|version|value(\.[^.]+)*)$/, {
    message: 'must be key, namespace, createdAt, updatedAt, version, value or value.<dot.path>',
  })
  .refine(wellFormed, WELL_FORMED);

export const Query = z.strictObject({
  from: z.strictObject({ instance: InstanceId, namespace: Namespace.optional() }),
  where: z.array(z.strictObject({ field: QueryField, operator: QueryOperator, value: Value })).max(MAX_QUERY_CONDITIONS).optional(),
  select: z.array(RecordField).min(1).max(RecordField.options.length).optional(),
  orderBy: z.strictObject({ field: QueryField, direction: z.enum(['asc', 'desc']).optional() }).optional(),
  limit: z.number().int().min(0).max(MAX_QUERY_LIMIT).optional(),
  offset: z.number().int().nonnegative().optional(),
});
export type Query = z.infer<typeof Query>;

// ---------------------------------------------------------------- atomic

export const AtomicCheck = z.strictObject({ namespace: Namespace, key: Key, version: Version.nullable() });
export const AtomicOp = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('set'),
    namespace: Namespace,
    key: Key,
    value: Value,
    contentType: ContentType.optional(),
    ttlMs: TtlMs.optional(),
  }),
  z.strictObject({ op: z.literal('delete'), namespace: Namespace, key: Key }),
  z.strictObject({
    op: z.literal('incr'),
    namespace: Namespace,
    key: Key,
    by: z.number().finite().optional(),
    ttlMs: TtlMs.optional(),
  }),
]);
export type AtomicOp = z.infer<typeof AtomicOp>;

export const SetManyEntry = z.strictObject({
  key: Key,
  value: Value,
  contentType: ContentType.optional(),
  ttlMs: TtlMs.optional(),
});

/** One set of a `kvStore.setEach`: a `kvStore.set`'s params without the instance, namespace, autoCreateInstance and key of the whole. */
export const SetEachEntry = z
  .strictObject({
    key: Key,
    value: Value,
    contentType: ContentType.optional(),
    ttlMs: TtlMs.optional(),
    ...conditions,
  })
  .refine(noConflictingConditions, CONDITIONS_EXCLUSIVE);

/** A setEach entry's result: what the entry's `kvStore.set` alone would have been answered, without its envelope. */
export const SetEachResult = z.union([
  z.object({ success: z.literal(true), record: KvRecord }),
  z.object({ success: z.literal(false), code: z.string(), error: z.string(), data: z.unknown().optional() }),
]);
export type SetEachResult = z.infer<typeof SetEachResult>;

const empty = z.strictObject({});

/** Makes a write exactly-once: a repeat with the same key and params gets the kept reply. */
export const IdempotencyKey = z.string().min(1).max(255);
/** The params every write takes besides its own. */
const writeParams = { idempotencyKey: IdempotencyKey.optional() };

/** A literal key prefix: compared as UTF-8 bytes, no wildcards. */
export const Prefix = z
  .string()
  .refine(wellFormed, WELL_FORMED)
  .refine((p) => utf8Length(p) <= MAX_KEY_BYTES, { message: `must be at most ${MAX_KEY_BYTES} UTF-8 bytes` });

// ---------------------------------------------------------------- watch

/** Event kinds of protocol version 1; clients ignore kinds they do not know. */
export const WatchEventKind = z.enum(['set', 'delete', 'expire', 'namespaceDeleted', 'instanceDeleted']);
export type WatchEventKind = z.infer<typeof WatchEventKind>;

/** One committed change as a subscription receives it. */
export const WatchEvent = z.object({
  kind: WatchEventKind,
  instanceId: z.string(),
  /** null for instanceDeleted. */
  namespace: z.string().nullable(),
  /** null for namespaceDeleted and instanceDeleted. */
  key: z.string().nullable(),
  /** The new record for `set`; null otherwise. */
  record: KvRecord.nullable(),
  revision: z.number().int(),
});
export type WatchEvent = z.infer<typeof WatchEvent>;

/** The push frame carrying one event of one subscription (it has no requestId). */
export const EventPush = z.object({
  type: z.literal('kvStore.event'),
  subscriptionId: z.string(),
  event: WatchEvent,
  timestamp: IsoTime,
});
export type EventPush = z.infer<typeof EventPush>;

/** `type` of event pushes. */
export const EVENT_PUSH_TYPE = 'kvStore.event';

// ---------------------------------------------------------------- messages

/**
 * Every request type with the schema of its `params` and of its reply's `data`.
 * Adding a message means adding an entry here and one handler on the server.
 */
export const messages = {
  // Codebolt-compatible
  'kvStore.createInstance': {
    params: z.strictObject({
      ...writeParams,
      name: z.string().min(1).max(256).refine(wellFormed, WELL_FORMED),
      description: z.string().max(4096).refine(wellFormed, WELL_FORMED).optional(),
      id: InstanceId.optional(),
    }),
    data: z.object({ instance: Instance }),
  },
  'kvStore.getInstance': {
    params: z.strictObject({ instanceId: InstanceId }),
    data: z.object({ instance: Instance }),
  },
  'kvStore.listInstances': {
    params: empty,
    data: z.object({ instances: z.array(Instance) }),
  },
  'kvStore.updateInstance': {
    params: z.strictObject({
      ...writeParams,
      instanceId: InstanceId,
      name: z.string().min(1).max(256).refine(wellFormed, WELL_FORMED).optional(),
      description: z.string().max(4096).refine(wellFormed, WELL_FORMED).optional(),
    }),
    data: z.object({ instance: Instance }),
  },
  'kvStore.deleteInstance': {
    params: z.strictObject({ instanceId: InstanceId, ...writeParams }),
    data: z.object({ deleted: z.literal(true) }),
  },
  'kvStore.get': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, key: Key }),
    data: z.object({ value: z.unknown(), exists: z.boolean(), record: KvRecord.nullable() }),
  },
  'kvStore.set': {
    params: z
      .strictObject({
        ...writeParams,
        instanceId: InstanceId,
        namespace: Namespace,
        key: Key,
        value: Value,
        contentType: ContentType.optional(),
        autoCreateInstance: z.boolean().optional(),
        ttlMs: TtlMs.optional(),
        ...conditions,
      })
      .refine(noConflictingConditions, CONDITIONS_EXCLUSIVE),
    data: z.object({ record: KvRecord }),
  },
  'kvStore.delete': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, key: Key, ifVersion: Version.optional(), ...writeParams }),
    data: z.object({ deleted: z.boolean() }),
  },
  'kvStore.deleteNamespace': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, ...writeParams }),
    data: z.object({ deletedCount: z.number().int() }),
  },
  'kvStore.query': {
    params: z.strictObject({ query: Query }),
    data: z.object({
      result: z.object({
        records: z.array(KvRecord.partial()),
        total: z.number().int(),
        limit: z.number().int(),
        offset: z.number().int(),
      }),
    }),
  },
  'kvStore.getNamespaces': {
    params: z.strictObject({ instanceId: InstanceId }),
    data: z.object({ namespaces: z.array(z.string()) }),
  },
  'kvStore.getRecordCount': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace.optional() }),
    data: z.object({ count: z.number().int() }),
  },

  // Beyond Codebolt
  'kvStore.hello': {
    params: z.strictObject({ protocolVersion: z.number().int().optional() }),
    data: z.object({
      protocolVersion: z.number().int(),
      serverVersion: z.string(),
      durability: z.enum(['full', 'normal']),
      capabilities: z.array(z.string()),
      limits: z.object({ maxValueBytes: z.number(), maxPayloadBytes: z.number(), maxBatch: z.number() }).loose(),
    }),
  },
  'kvStore.ping': {
    params: empty,
    data: z.object({ pong: z.literal(true) }),
  },
  'kvStore.stats': {
    params: z.strictObject({ instanceId: InstanceId.optional() }),
    data: z.object({
      instances: z.number().int(),
      namespaces: z.number().int(),
      records: z.number().int(),
      expiredPending: z.number().int(),
      dbBytes: z.number().int(),
    }),
  },
  'kvStore.getMany': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, keys: z.array(Key).min(1) }),
    data: z.object({
      items: z.array(z.object({ key: z.string(), exists: z.boolean(), value: z.unknown(), record: KvRecord.nullable() })),
    }),
  },
  'kvStore.getValues': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, keys: z.array(Key).min(1) }),
    data: z.object({
      items: z.array(z.object({ key: z.string(), exists: z.boolean(), value: z.unknown(), contentType: z.string().nullable() })),
    }),
  },
  'kvStore.setMany': {
    params: z.strictObject({
      ...writeParams,
      instanceId: InstanceId,
      namespace: Namespace,
      entries: z.array(SetManyEntry).min(1),
      autoCreateInstance: z.boolean().optional(),
    }),
    data: z.object({ records: z.array(KvRecord) }),
  },
  'kvStore.setEach': {
    params: z.strictObject({
      ...writeParams,
      instanceId: InstanceId,
      namespace: Namespace,
      entries: z.array(SetEachEntry).min(1),
      autoCreateInstance: z.boolean().optional(),
    }),
    data: z.object({ results: z.array(SetEachResult) }),
  },
  'kvStore.list': {
    params: z.strictObject({
      instanceId: InstanceId,
      namespace: Namespace,
      prefix: Prefix.optional(),
      cursor: z.string().max(4096).nullable().optional(),
      limit: z.number().int().min(1).max(MAX_LIST_LIMIT).optional(),
      keysOnly: z.boolean().optional(),
      reverse: z.boolean().optional(),
    }),
    data: z.object({
      records: z.array(KvRecord).optional(),
      keys: z.array(z.string()).optional(),
      cursor: z.string().nullable(),
    }),
  },
  'kvStore.incr': {
    params: z.strictObject({
      ...writeParams,
      instanceId: InstanceId,
      namespace: Namespace,
      key: Key,
      by: z.number().finite().optional(),
      ttlMs: TtlMs.optional(),
      autoCreateInstance: z.boolean().optional(),
    }),
    data: z.object({ value: z.number(), record: KvRecord }),
  },
  'kvStore.expire': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, key: Key, ttlMs: TtlMs.nullable(), ...writeParams }),
    data: z.object({ updated: z.boolean() }),
  },
  'kvStore.ttl': {
    params: z.strictObject({ instanceId: InstanceId, namespace: Namespace, key: Key }),
    data: z.object({ exists: z.boolean(), ttlMs: z.number().int().nullable() }),
  },
  'kvStore.atomic': {
    params: z.strictObject({
      ...writeParams,
      instanceId: InstanceId,
      checks: z.array(AtomicCheck).optional(),
      ops: z.array(AtomicOp).min(1),
      autoCreateInstance: z.boolean().optional(),
    }),
    data: z.object({ committed: z.literal(true), revision: z.number().int(), records: z.array(KvRecord.nullable()) }),
  },
  'kvStore.watch': {
    params: z
      .strictObject({
        instanceId: InstanceId,
        namespace: Namespace.optional(),
        key: Key.optional(),
        prefix: Prefix.optional(),
        fromRevision: z.number().int().nonnegative().optional(),
      })
      .refine((p) => (p.key === undefined && p.prefix === undefined) || p.namespace !== undefined, {
        message: 'key and prefix need a namespace',
        path: ['namespace'],
      })
      .refine((p) => p.key === undefined || p.prefix === undefined, {
        message: 'key and prefix cannot be combined',
        path: ['prefix'],
      }),
    data: z.object({ subscriptionId: z.string(), revision: z.number().int() }),
  },
  'kvStore.unwatch': {
    params: z.strictObject({ subscriptionId: z.string().min(1).max(128) }),
    data: z.object({ removed: z.boolean() }),
  },
} as const;

/**
 * The request types that write: each takes an `idempotencyKey`. Derived from the schemas, so a new
 * write is listed by giving it {@link writeParams}.
 */
export const WRITE_TYPES: ReadonlySet<keyof typeof messages> = new Set(
  (Object.keys(messages) as (keyof typeof messages)[]).filter((type) => 'idempotencyKey' in messages[type].params.shape),
);

/**
 * The array params that hold one item per key, entry, op or check: at most the server's
 * `maxBatch` items each (more is LIMIT_EXCEEDED, checked before the rest of the params).
 */
export const batchParams: { readonly [T in RequestType]?: readonly (keyof Params<T> & string)[] } = {
  'kvStore.getMany': ['keys'],
  'kvStore.getValues': ['keys'],
  'kvStore.setMany': ['entries'],
  'kvStore.setEach': ['entries'],
  'kvStore.atomic': ['ops', 'checks'],
};

/** Every request `type` the server answers. */
export type RequestType = keyof typeof messages;
/** The `params` of request type `T`, after parsing (defaults applied). */
export type Params<T extends RequestType> = z.output<(typeof messages)[T]['params']>;
/** The `params` a caller may send for request type `T`. */
export type ParamsInput<T extends RequestType> = z.input<(typeof messages)[T]['params']>;
/** The `data` of a successful reply to request type `T`. */
export type ReplyData<T extends RequestType> = z.output<(typeof messages)[T]['data']>;

export const requestTypes = Object.keys(messages) as RequestType[];

/** True when `type` names a request the protocol defines. */
export function isRequestType(type: string): type is RequestType {
  return Object.hasOwn(messages, type);
}
