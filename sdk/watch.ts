import type { EVENT_PUSH_TYPE, ParamsInput, Reply, ReplyData, WatchEvent, WatchEventKind } from '../protocol/index.js';
import type { ConnectionState, Logger, PushMessage } from './connection.js';
import { KvError } from './errors.js';
import type { Send } from './kv-store.js';
import { decodeRecord } from './values.js';

/**
 * What a subscription's `ready` resolves with: the server's reply to the first `kvStore.watch`.
 * `revision` is the database revision when the subscription started.
 */
export type WatchReady = ReplyData<'kvStore.watch'>;

/** Callbacks and settings every `watch()` accepts. */
export interface WatchCallbacks {
  /**
   * Replay every matching change after this revision before the live events (e.g. the
   * `lastRevision` of an earlier subscription, or a `record.revision` you read). Above the
   * server's current revision it fails with VALIDATION_ERROR; older than the change log keeps,
   * with COMPACTED (`data.oldestRevision`).
   * @default undefined (live events only, from the moment the server answers)
   */
  fromRevision?: number;
  /**
   * Receives every event, in revision order, instead of the async iterator: events are then
   * not queued, and iterating the subscription yields nothing but still ends (or throws) when the
   * subscription does. Called synchronously as each event arrives; the SDK does not await a
   * returned promise. A throw or a rejected promise is reported to the client's `logger` and does
   * not end the subscription.
   * @default undefined (iterate the subscription instead)
   */
  onEvent?: (event: WatchEvent) => void | Promise<void>;
  /**
   * Told once when the subscription fails: the watch was refused (INSTANCE_NOT_FOUND,
   * VALIDATION_ERROR, COMPACTED, FORBIDDEN, ...), a resubscribe after a reconnect was refused
   * (COMPACTED when the server no longer holds the changes missed), the watch request got no
   * reply in time (TIMEOUT), or the connection closed for good without `client.close()`
   * (NOT_CONNECTED). The subscription has ended by then. Not called for `unsubscribe()`, `break`,
   * `signal`, `client.close()` or `instanceDeleted`, which end it normally.
   * @default undefined
   */
  onError?: (error: KvError) => void;
  /**
   * Ends the subscription when it fires, like `unsubscribe()`: the iteration finishes normally,
   * and `ready` rejects with ABORTED if the server had not answered yet.
   * @default undefined (ends on `unsubscribe()`, `break` or `client.close()` only)
   */
  signal?: AbortSignal;
  /**
   * Milliseconds each `kvStore.watch` request (the first one and every resubscribe) may wait for
   * its reply before the subscription fails with TIMEOUT. The first request may spend it waiting
   * for the connection; resubscribes are only sent once the connection is back, so an outage of
   * any length does not end a subscription.
   * @default the client's `requestTimeoutMs` (30000)
   */
  timeoutMs?: number;
}

/** Options of `client.kvStore.watch(instanceId, options)`. */
export interface WatchOptions extends WatchCallbacks {
  /** Only this namespace. @default undefined (every namespace of the instance) */
  namespace?: string;
  /** Only this key (needs `namespace`). @default undefined (every key) */
  key?: string;
  /** Only keys starting with this literal prefix (needs `namespace`; not with `key`). @default undefined (every key) */
  prefix?: string;
}

/** Options of a namespace handle's `watch()`. */
export type NamespaceWatchOptions = Omit<WatchOptions, 'namespace'>;

/** Options of an instance handle's `watch()` (every namespace of the instance). */
export type InstanceWatchOptions = WatchCallbacks;

/** Where a subscription stands. */
export type SubscriptionState =
  /** A `kvStore.watch` request is on its way (the first one, or a resubscribe). */
  | 'subscribing'
  /** The server acknowledged it; events flow. */
  | 'live'
  /** The connection dropped; it resubscribes as soon as the connection is back. */
  | 'disconnected'
  /** Finished: unsubscribed, `instanceDeleted`, client closed, or failed. */
  | 'ended';

/** The `type` of event pushes, checked against the protocol's without importing its schemas at run time. */
const EVENT_TYPE: typeof EVENT_PUSH_TYPE = 'kvStore.event';

/** The event kinds this SDK knows; the compiler insists every kind of the protocol is listed. */
const KNOWN_KINDS: Record<WatchEventKind, true> = { set: true, delete: true, expire: true, namespaceDeleted: true, instanceDeleted: true };

function isKnownKind(kind: string): kind is WatchEventKind {
  return Object.hasOwn(KNOWN_KINDS, kind);
}

/** The filter of a subscription as sent on the wire, without `fromRevision` (chosen per attempt). */
export type WatchFilter = Omit<ParamsInput<'kvStore.watch'>, 'fromRevision'>;

/** What the hub needs from the client's connection. */
export interface WatchLink {
  readonly send: Send;
  readonly logger: Logger | undefined;
  state(): ConnectionState;
  onPush(listener: (message: PushMessage) => void): () => void;
  onStateChange(listener: (state: ConnectionState) => void): () => void;
}

/**
 * A client's subscriptions: routes `kvStore.event` pushes to them by `subscriptionId` and
 * resubscribes them after a reconnect. One per client.
 *
 * Pushes that name a subscription not known yet are held while a watch request awaits its reply:
 * the server sends the reply before the first event, but a socket may hand over several frames
 * before the reply's promise continuation runs (a `ws` socket passed in as `WebSocket` hands over
 * every frame of one network read at once; the SDK's own takes one frame per task).
 */
export class WatchHub {
  private readonly subscriptions = new Set<Subscription>();
  private readonly routes = new Map<string, Subscription>();
  private readonly held = new Map<string, unknown[]>();
  /** Ended subscriptions whose watch request is still pending; its abort is due when the connection leaves `ready`. */
  private readonly abandoned = new Set<Subscription>();
  private watchesInFlight = 0;
  private wasReady: boolean;
  private closedByClient = false;

  /** @internal made by the client */
  constructor(private readonly link: WatchLink) {
    this.wasReady = link.state() === 'ready';
    link.onPush((message) => this.onPush(message));
    link.onStateChange((state) => this.onStateChange(state));
  }

  /** Starts a subscription; `decode` turns binary record values into bytes (the handles' convention). */
  open(filter: WatchFilter, options: WatchCallbacks, decode: boolean): Subscription {
    return new Subscription(this, filter, options, decode);
  }

  /** Ends every subscription normally (for `client.close()`: the socket's close frees them on the server). */
  close(): void {
    this.closedByClient = true;
    for (const subscription of [...this.subscriptions]) subscription.finish('closed');
  }

  // ------------------------------------------------------------------ for Subscription

  /** @internal */
  get connectionState(): ConnectionState {
    return this.link.state();
  }

  /** @internal */
  get logger(): Logger | undefined {
    return this.link.logger;
  }

  /** @internal */
  register(subscription: Subscription): void {
    this.subscriptions.add(subscription);
  }

  /** @internal sends one request */
  send: Send = (type, params, options) => this.link.send(type, params, options);

  /**
   * @internal a watch request is on its way: until it is settled, pushes for unknown ids are held
   * (see the class comment). Pair every call with {@link watchSettled}.
   */
  watchStarted(): void {
    this.watchesInFlight++;
  }

  /** @internal the reply of a watch request was acted on (its events adopted, if any) */
  watchSettled(): void {
    if (--this.watchesInFlight === 0) this.held.clear();
  }

  /** @internal routes pushes for `id` to `subscription`; returns the events held for it */
  adopt(id: string, subscription: Subscription): unknown[] {
    this.routes.set(id, subscription);
    const held = this.held.get(id) ?? [];
    this.held.delete(id);
    return held;
  }

  /** @internal */
  unroute(id: string): void {
    this.routes.delete(id);
  }

  /** @internal */
  forget(subscription: Subscription, id: string | undefined): void {
    this.subscriptions.delete(subscription);
    if (id !== undefined && this.routes.get(id) === subscription) this.routes.delete(id);
  }

  /**
   * @internal `subscription` ended while its watch request is pending: the request is aborted
   * (see {@link Subscription.abortUnsent}) as soon as the connection leaves `ready`, e.g. when it
   * was queued on a socket that was already closing. Undone by {@link released}.
   */
  abandon(subscription: Subscription): void {
    this.abandoned.add(subscription);
  }

  /** @internal the watch request of `subscription` is settled */
  released(subscription: Subscription): void {
    this.abandoned.delete(subscription);
  }

  /** @internal frees `id` on the server; failures are ignored (a closed socket frees it anyway) */
  async unwatch(id: string): Promise<void> {
    if (this.link.state() !== 'ready') return;
    try {
      await this.link.send('kvStore.unwatch', { subscriptionId: id });
    } catch (error) {
      this.link.logger?.debug?.('unwatch failed; the server frees the subscription when the socket closes', error);
    }
  }

  // ------------------------------------------------------------------ connection events

  private onPush(message: PushMessage): void {
    if (message.type !== EVENT_TYPE) return;
    const id = message['subscriptionId'];
    if (typeof id !== 'string') {
      this.link.logger?.warn?.('ignored an event push without a subscriptionId', message);
      return;
    }
    const subscription = this.routes.get(id);
    if (subscription !== undefined) {
      subscription.accept(message['event']);
      return;
    }
    if (this.watchesInFlight > 0) {
      const held = this.held.get(id);
      if (held === undefined) this.held.set(id, [message['event']]);
      else held.push(message['event']);
      return;
    }
    this.link.logger?.debug?.('ignored an event for a subscription that is no longer open', { subscriptionId: id });
  }

  private onStateChange(state: ConnectionState): void {
    if (state === 'ready') {
      this.wasReady = true;
      for (const subscription of [...this.subscriptions]) subscription.reconnected();
      return;
    }
    if (this.wasReady) {
      // The server dropped every subscription of the old socket; their ids mean nothing now.
      this.wasReady = false;
      this.routes.clear();
      this.held.clear();
      for (const subscription of [...this.subscriptions]) subscription.disconnected();
    }
    // Not ready: no request is on a socket any more, so the watches nobody wants can be dropped unsent.
    for (const subscription of [...this.abandoned]) subscription.abortUnsent();
    if (state === 'closed' && !this.closedByClient) {
      const error = new KvError('NOT_CONNECTED', 'the connection closed for good (reconnecting is disabled or impossible); changes after the last event were not seen');
      for (const subscription of [...this.subscriptions]) subscription.fail(error);
    }
  }
}

interface Waiter {
  resolve(result: IteratorResult<WatchEvent, undefined>): void;
  reject(error: unknown): void;
}

/**
 * A live change feed, returned by `client.kvStore.watch()` and the handles' `watch()`.
 *
 * Iterate it with `for await (const event of subscription)`, or pass `onEvent`. Events arrive in
 * revision order, each exactly once: after a reconnect (a server restart, a dropped network, a
 * 1013 close) the SDK resubscribes with `fromRevision` set to the last revision it received, so
 * the server replays what was missed, and drops any event at or below that revision.
 *
 * It ends:
 * - normally (the iteration finishes) on `unsubscribe()`, `break`/`return` out of the loop, the
 *   `signal`, or `client.close()` — the first three also send `kvStore.unwatch`; events still
 *   queued are dropped on `unsubscribe()`/`break`/`signal` and still yielded after `client.close()`;
 * - normally after yielding an `instanceDeleted` event (the server ends the subscription);
 * - with a {@link KvError} thrown by the iterator (after the events already queued), passed to
 *   `onError`, and rejecting `ready` if it had not resolved: when the server refuses the watch
 *   or a resubscribe (INSTANCE_NOT_FOUND, VALIDATION_ERROR, COMPACTED with `data.oldestRevision`,
 *   ...), on TIMEOUT, or when the connection closes for good without `client.close()`.
 *
 * Events of kinds this SDK version does not know (a later protocol may add some) are skipped; they
 * still count as received for resubscribing.
 *
 * Memory: the SDK always reads the socket, so the server's slow-consumer protection (closing with
 * 1013) never sees a slow iterator. Events wait in this subscription's queue until the iterator
 * asks for them: a consumer that stops reading grows the client's memory without bound. Iterate
 * promptly, use `onEvent`, or `unsubscribe()` and later resume with `fromRevision: lastRevision`.
 *
 * One consumer: the subscription is its own iterator, so two loops over it share (split) the events.
 */
export class Subscription implements AsyncIterableIterator<WatchEvent, undefined, undefined> {
  /**
   * Resolves with the server's reply to the first watch (`subscriptionId`, `revision`), once it
   * is subscribed. Rejects with the failure's KvError; with ABORTED if unsubscribed before the
   * server answered; with NOT_CONNECTED if the client closed first. Never an unhandled rejection.
   */
  readonly ready: Promise<WatchReady>;
  private phase: SubscriptionState = 'subscribing';
  private id: string | undefined;
  /** The highest revision accepted (queued or delivered): where a resubscribe starts. */
  private received: number | undefined;
  private delivered: number | undefined;
  private queue: WatchEvent[] = [];
  private head = 0;
  private readonly waiters: Waiter[] = [];
  private failure: KvError | undefined;
  private failureThrown = false;
  private readySettled = false;
  private resolveReady!: (data: WatchReady) => void;
  private rejectReady!: (error: KvError) => void;
  /** The watch request in flight, if any; `unsubscribe()` waits for it so that it can be undone. */
  private attempt: Promise<void> | undefined;
  /** Aborts the watch request in flight; only ever fired while it is unsent (see {@link abortUnsent}). */
  private attemptController: AbortController | undefined;
  private readonly removeAbortListener: () => void;

  /** @internal use `client.kvStore.watch()` or a handle's `watch()` */
  constructor(
    private readonly hub: WatchHub,
    private readonly filter: WatchFilter,
    private readonly options: WatchCallbacks,
    private readonly decode: boolean,
  ) {
    this.ready = new Promise<WatchReady>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // Callers that iterate or use onError need not also watch `ready`.
    this.ready.catch(() => undefined);
    const { signal } = options;
    const onAbort = () => void this.unsubscribe();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.removeAbortListener = () => signal?.removeEventListener('abort', onAbort);
    if (signal?.aborted === true) {
      this.removeAbortListener();
      this.finish('unsubscribed');
      return;
    }
    hub.register(this);
    this.attempt = this.subscribe(options.fromRevision);
  }

  /** Where the subscription stands. */
  get state(): SubscriptionState {
    return this.phase;
  }

  /** The server's id of this subscription, while live (it changes when it resubscribes after a reconnect). */
  get subscriptionId(): string | undefined {
    return this.id;
  }

  /**
   * The revision of the last event handed to the consumer (yielded, or passed to `onEvent`);
   * `undefined` before the first. Resume a later subscription from here with `fromRevision`.
   */
  get lastRevision(): number | undefined {
    return this.delivered;
  }

  /**
   * Ends the subscription: the iteration finishes, queued events are dropped, and
   * `kvStore.unwatch` is sent (its failure is ignored: a closed socket frees the subscription on
   * the server too). Resolves once the server answered the unwatch, or at once when not
   * connected. Idempotent.
   */
  async unsubscribe(): Promise<void> {
    if (this.phase !== 'ended') {
      const id = this.phase === 'live' ? this.id : undefined;
      this.finish('unsubscribed');
      if (id !== undefined) await this.hub.unwatch(id);
    }
    // A watch not sent yet (not connected) is dropped now; one already sent is undone by
    // `subscribe` itself when its reply comes; one queued on a socket that is closing is dropped
    // when the connection leaves `ready` (the hub calls abortUnsent then).
    this.abortUnsent();
    await this.attempt;
  }

  /** The next event, waiting for one; done once the subscription ended. */
  next(): Promise<IteratorResult<WatchEvent, undefined>> {
    if (this.head < this.queue.length) return Promise.resolve({ done: false, value: this.take() });
    if (this.phase === 'ended') {
      if (this.failure !== undefined && !this.failureThrown) {
        this.failureThrown = true;
        return Promise.reject(this.failure);
      }
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Called by `break` (and by `return` in the loop): unsubscribes, as {@link unsubscribe}. */
  async return(): Promise<IteratorResult<WatchEvent, undefined>> {
    await this.unsubscribe();
    return { done: true, value: undefined };
  }

  /** The subscription is its own iterator. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  // ------------------------------------------------------------------ from the hub

  /** @internal one event push for this subscription */
  accept(raw: unknown): void {
    if (this.phase === 'ended') return;
    if (!isEventShape(raw)) {
      this.hub.logger?.warn?.('ignored a malformed event', raw);
      return;
    }
    // At or below the high-water mark: a replay overlapping what was already received.
    if (this.received !== undefined && raw.revision <= this.received) return;
    this.received = raw.revision;
    if (!isKnownKind(raw.kind)) {
      this.hub.logger?.debug?.(`skipped an event of unknown kind '${raw.kind}'`, { revision: raw.revision });
      return;
    }
    const event = raw as WatchEvent;
    this.deliver(this.decode && event.record !== null ? { ...event, record: decodeRecord(event.record) } : event);
    // The server ends a subscription on instanceDeleted; nothing to unwatch.
    if (event.kind === 'instanceDeleted') this.finish('completed');
  }

  /** @internal the connection dropped */
  disconnected(): void {
    if (this.phase !== 'live') return;
    this.phase = 'disconnected';
    this.id = undefined;
  }

  /** @internal the connection is back */
  reconnected(): void {
    if (this.phase !== 'disconnected') return;
    this.attempt = this.subscribe(this.received ?? this.options.fromRevision);
  }

  /**
   * @internal drops the pending watch request of an ended subscription, if the connection is not
   * `ready`. Safe only then: the connection sends requests only while `ready`, and when it leaves
   * `ready` it first rejects every request that went out (CONNECTION_CLOSED) except writes, which
   * it keeps to send again; a watch is no write, so one still pending while not ready was never
   * sent and cannot have started a subscription on the server.
   */
  abortUnsent(): void {
    if (this.phase !== 'ended' || this.attemptController === undefined) return;
    if (this.hub.connectionState === 'ready') return;
    this.attemptController.abort();
  }

  /** @internal ends the subscription with `error` */
  fail(error: KvError): void {
    if (this.phase === 'ended') return;
    this.failure = error;
    this.finish('failed');
    try {
      this.options.onError?.(error);
    } catch (thrown) {
      this.hub.logger?.warn?.('an onError callback threw', thrown);
    }
  }

  /** @internal ends the subscription; see the class comment for what each way means */
  finish(how: 'unsubscribed' | 'completed' | 'closed' | 'failed'): void {
    if (this.phase === 'ended') return;
    const id = this.id;
    this.phase = 'ended';
    this.id = undefined;
    this.hub.forget(this, id);
    if (this.attemptController !== undefined) this.hub.abandon(this);
    this.removeAbortListener();
    if (how === 'unsubscribed') {
      this.queue = [];
      this.head = 0;
    }
    if (!this.readySettled) {
      this.readySettled = true;
      this.rejectReady(
        this.failure ??
          (how === 'closed'
            ? new KvError('NOT_CONNECTED', 'the client closed before the server answered the watch', { type: 'kvStore.watch' })
            : new KvError('ABORTED', 'unsubscribed before the server answered the watch', { type: 'kvStore.watch' })),
      );
    }
    // Waiters exist only while the queue is empty.
    const waiters = this.waiters.splice(0);
    for (const [i, waiter] of waiters.entries()) {
      if (i === 0 && this.failure !== undefined) {
        this.failureThrown = true;
        waiter.reject(this.failure);
      } else waiter.resolve({ done: true, value: undefined });
    }
  }

  // ------------------------------------------------------------------ internals

  /** Sends one `kvStore.watch` and acts on its outcome. Never rejects. */
  private async subscribe(fromRevision: number | undefined): Promise<void> {
    this.phase = 'subscribing';
    const params: ParamsInput<'kvStore.watch'> = { ...this.filter, ...(fromRevision !== undefined ? { fromRevision } : {}) };
    const { timeoutMs } = this.options;
    const controller = new AbortController();
    this.attemptController = controller;
    let outcome: Reply<'kvStore.watch'> | KvError;
    this.hub.watchStarted();
    try {
      outcome = await this.hub.send('kvStore.watch', params, { signal: controller.signal, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    } catch (error) {
      outcome = error instanceof KvError ? error : new KvError('INTERNAL_ERROR', 'the watch request failed', { cause: error, type: 'kvStore.watch' });
    }
    if (this.attemptController === controller) this.attemptController = undefined;
    this.hub.released(this);
    let orphan: string | undefined;
    try {
      orphan = this.settle(outcome, fromRevision);
    } finally {
      this.hub.watchSettled();
    }
    if (orphan !== undefined) await this.hub.unwatch(orphan);
  }

  /**
   * Acts on the outcome of a watch request, synchronously so that no push slips between the
   * reply and the routing. Returns a subscription id to unwatch when nobody wants it any more.
   */
  private settle(outcome: Reply<'kvStore.watch'> | KvError, fromRevision: number | undefined): string | undefined {
    if (outcome instanceof KvError) {
      if (this.phase === 'ended') return undefined;
      // Sent, then the socket closed: try again on the next connection.
      if (outcome.code === 'CONNECTION_CLOSED') this.retryLater();
      else this.fail(outcome);
      return undefined;
    }
    if (!outcome.success) {
      this.fail(KvError.fromReply(outcome));
      return undefined;
    }
    const { subscriptionId, revision } = outcome.data;
    // Nobody wants it any more: free it on the server (`unwatch` skips it when not connected,
    // since the socket that carried it is gone and took the subscription with it).
    if (this.phase === 'ended') return subscriptionId;
    // The connection reads replies from its current socket only, so the reply came on the socket
    // that is current now — whenever the request was made or sent (a request queued while the
    // socket was closing goes out on the next one). Unless that socket closed between the reply
    // and this continuation: then the subscription died with it, and it is tried again on the next
    // connection (a new socket cannot have become ready in between: that takes network round trips).
    if (this.hub.connectionState !== 'ready') {
      this.retryLater();
      return subscriptionId;
    }
    this.received ??= fromRevision ?? revision;
    this.id = subscriptionId;
    this.phase = 'live';
    if (!this.readySettled) {
      this.readySettled = true;
      this.resolveReady({ subscriptionId, revision });
    }
    for (const event of this.hub.adopt(subscriptionId, this)) this.accept(event);
    return undefined;
  }

  private retryLater(): void {
    this.phase = 'disconnected';
    this.id = undefined;
    if (this.hub.connectionState === 'ready') this.reconnected();
  }

  private deliver(event: WatchEvent): void {
    const { onEvent } = this.options;
    if (onEvent !== undefined) {
      this.delivered = event.revision;
      try {
        const result = onEvent(event);
        if (isPromiseLike(result)) {
          result.then(undefined, (error: unknown) => this.hub.logger?.warn?.('an onEvent callback rejected', error));
        }
      } catch (error) {
        this.hub.logger?.warn?.('an onEvent callback threw', error);
      }
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      this.delivered = event.revision;
      waiter.resolve({ done: false, value: event });
    } else this.queue.push(event);
  }

  private take(): WatchEvent {
    const event = this.queue[this.head++]!;
    // Drop consumed events now and then rather than shifting the array every time.
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.delivered = event.revision;
    return event;
  }
}

function isEventShape(raw: unknown): raw is { kind: string; revision: number; record: unknown } & Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null) return false;
  const e = raw as Record<string, unknown>;
  return typeof e['kind'] === 'string' && typeof e['revision'] === 'number' && Number.isSafeInteger(e['revision']);
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
