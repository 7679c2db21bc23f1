import { ErrorCode, ProtocolError, WRITE_TYPES, type Params, type RequestType } from '../../protocol/index.js';
import type { Principal } from './tokens.js';

/**
 * The instance a request touches, `undefined` when it names none (then a scoped token may not
 * send it: createInstance without `id`, a global `stats`), or CONNECTION when it touches only
 * the connection itself (hello, ping, unwatch of its own subscriptions, listInstances, which is
 * filtered instead). Whether it writes is the protocol's WRITE_TYPES.
 */
const CONNECTION = Symbol('connection');
/** A symbol, not a string, so that no instance id can pass for it. */
type Touched = string | undefined | typeof CONNECTION;

/** Every request type's instance, typed from the protocol: a new message does not compile until it is classified here. */
const touches: { [T in RequestType]: (params: Params<T>) => Touched } = {
  'kvStore.createInstance': (p) => p.id,
  'kvStore.getInstance': (p) => p.instanceId,
  'kvStore.listInstances': () => CONNECTION,
  'kvStore.updateInstance': (p) => p.instanceId,
  'kvStore.deleteInstance': (p) => p.instanceId,
  'kvStore.get': (p) => p.instanceId,
  'kvStore.set': (p) => p.instanceId,
  'kvStore.delete': (p) => p.instanceId,
  'kvStore.deleteNamespace': (p) => p.instanceId,
  'kvStore.query': (p) => p.query.from.instance,
  'kvStore.getNamespaces': (p) => p.instanceId,
  'kvStore.getRecordCount': (p) => p.instanceId,
  'kvStore.hello': () => CONNECTION,
  'kvStore.ping': () => CONNECTION,
  'kvStore.stats': (p) => p.instanceId,
  'kvStore.getMany': (p) => p.instanceId,
  'kvStore.getValues': (p) => p.instanceId,
  'kvStore.setMany': (p) => p.instanceId,
  'kvStore.setEach': (p) => p.instanceId,
  'kvStore.list': (p) => p.instanceId,
  'kvStore.incr': (p) => p.instanceId,
  'kvStore.expire': (p) => p.instanceId,
  'kvStore.ttl': (p) => p.instanceId,
  'kvStore.watch': (p) => p.instanceId,
  'kvStore.unwatch': () => CONNECTION,
  'kvStore.atomic': (p) => p.instanceId,
};

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
  const instance = (touches[type] as (p: Params<T>) => Touched)(params);
  if (instance === CONNECTION) return;
  if (WRITE_TYPES.has(type) && principal.readonly) throw new ProtocolError(ErrorCode.FORBIDDEN, `this token is read-only; ${type} writes`);
  if (instance === undefined) {
    if (principal.instances === undefined) return;
    throw new ProtocolError(ErrorCode.FORBIDDEN, `this token is limited to its instances; ${type} must name one of them`);
  }
  if (!canSeeInstance(principal, instance)) {
    throw new ProtocolError(ErrorCode.FORBIDDEN, 'this token has no access to that instance');
  }
}
