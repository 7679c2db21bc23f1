import { ErrorCode, ProtocolError, type Params, type RequestType } from '../../protocol/index.js';
import type { Principal } from './tokens.js';

/**
 * What a request touches: `instance` — one instance, `undefined` when it names none (then a
 * scoped token may not send it: createInstance without `id`, a global `stats`); `connection` —
 * only the connection itself (hello, ping, unwatch of its own subscriptions, listInstances,
 * which is filtered instead).
 */
type Access = { write: boolean; instance: string | undefined } | 'connection';

const read = (instance: string | undefined): Access => ({ write: false, instance });
const write = (instance: string | undefined): Access => ({ write: true, instance });

/**
 * Every request type's access, typed from the protocol: a new message does not compile until it
 * is classified here. Writes are the messages that can change stored data or instances.
 */
const access: { [T in RequestType]: (params: Params<T>) => Access } = {
  'kvStore.createInstance': (p) => write(p.id),
  'kvStore.getInstance': (p) => read(p.instanceId),
  'kvStore.listInstances': () => 'connection',
  'kvStore.updateInstance': (p) => write(p.instanceId),
  'kvStore.deleteInstance': (p) => write(p.instanceId),
  'kvStore.get': (p) => read(p.instanceId),
  'kvStore.set': (p) => write(p.instanceId),
  'kvStore.delete': (p) => write(p.instanceId),
  'kvStore.deleteNamespace': (p) => write(p.instanceId),
  'kvStore.query': (p) => read(p.query.from.instance),
  'kvStore.getNamespaces': (p) => read(p.instanceId),
  'kvStore.getRecordCount': (p) => read(p.instanceId),
  'kvStore.hello': () => 'connection',
  'kvStore.ping': () => 'connection',
  'kvStore.stats': (p) => read(p.instanceId),
  'kvStore.getMany': (p) => read(p.instanceId),
  'kvStore.setMany': (p) => write(p.instanceId),
  'kvStore.list': (p) => read(p.instanceId),
  'kvStore.incr': (p) => write(p.instanceId),
  'kvStore.expire': (p) => write(p.instanceId),
  'kvStore.ttl': (p) => read(p.instanceId),
  'kvStore.watch': (p) => read(p.instanceId),
  'kvStore.unwatch': () => 'connection',
  'kvStore.atomic': (p) => write(p.instanceId),
};

/** Params that satisfy every accessor's reads, to classify types without a real request. */
const PROBE = { instanceId: 'probe', query: { from: { instance: 'probe' } } };

/** The request types that write: FORBIDDEN for a read-only token. */
export const WRITE_TYPES: ReadonlySet<RequestType> = new Set(
  (Object.keys(access) as RequestType[]).filter((type) => {
    const probe = (access[type] as (p: unknown) => Access)(PROBE);
    return probe !== 'connection' && probe.write;
  }),
);

/** True when `principal` may touch instance `id`. */
export function canSeeInstance(principal: Principal, id: string): boolean {
  return principal.instances === undefined || principal.instances.has(id);
}

/**
 * Throws FORBIDDEN when `principal` may not run request `type` with these (validated) params:
 * a write from a read-only token, an instance outside the token's list, or — for a scoped
 * token — a request that names no instance (a global `stats`, createInstance without `id`).
 */
export function authorize<T extends RequestType>(type: T, params: Params<T>, principal: Principal): void {
  if (principal.instances === undefined && !principal.readonly) return;
  const needs = (access[type] as (p: Params<T>) => Access)(params);
  if (needs === 'connection') return;
  if (needs.write && principal.readonly) throw new ProtocolError(ErrorCode.FORBIDDEN, `this token is read-only; ${type} writes`);
  if (needs.instance === undefined) {
    if (principal.instances === undefined) return;
    throw new ProtocolError(ErrorCode.FORBIDDEN, `this token is limited to its instances; ${type} must name one of them`);
  }
  if (!canSeeInstance(principal, needs.instance)) {
    throw new ProtocolError(ErrorCode.FORBIDDEN, 'this token has no access to that instance');
  }
}
