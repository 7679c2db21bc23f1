import { nanoid } from 'nanoid';
import { ErrorCode, EVENT_PUSH_TYPE, ProtocolError, type WatchEvent } from '../protocol/index.js';
import { describeError, type Logger } from './logger.js';
import type { StorageEngine } from './storage/engine.js';
import { objectJson } from './storage/record-json.js';
import { isoTime } from './iso-time.js';

/** What a subscription asks for: one instance, optionally one namespace, one key or a key prefix. */
export interface WatchFilter {
  instanceId: string;
  namespace?: string;
  key?: string;
  prefix?: string;
}

/** The connection a subscription pushes to, as the hub sees it (it never touches sockets itself). */
export interface WatchSession {
  /** Queues a frame; false when the connection is gone. */
  push(frame: string): boolean;
  /** Bytes queued on the connection but not yet sent. */
  bufferedBytes(): number;
  /** Closes the connection (1013: the subscriber does not keep up). */
  close(code: number, reason: string): void;
}

/** Options of the hub. */
export interface WatchHubOptions {
  /** Unsent bytes above which a subscriber that does not read is closed with 1013. */
  maxBufferedBytes: number;
  logger: Logger;
}

/**
 * Where a subscription is: `pending` until its reply has been sent, `replaying` while it sends the
 * logged changes after `fromRevision`, `live` afterwards. Until live, new changes wait in `backlog`.
 */
type Phase = 'pending' | 'replaying' | 'live' | 'ended';

interface Subscription {
  readonly id: string;
  readonly session: WatchSession;
  readonly filter: WatchFilter;
  readonly fromRevision: number | undefined;
  phase: Phase;
  /** Changes before and at this revision come from the replay (or were before the subscription). */
  startRevision: number;
  /** The replay has sent everything up to this revision; undefined when there is nothing to replay. */
  replayedThrough: number | undefined;
  backlog: WatchEvent[];
  /** Serialized size of the backlog, bounded like a connection's unsent bytes. */
  backlogBytes: number;
}

/** Changes read from the log per step of a replay. */
const REPLAY_PAGE = 1000;
/** Changes a subscription may hold back while it replays before it counts as not keeping up (its bytes are bounded by maxBufferedBytes too). */
const MAX_BACKLOG = 100_000;
/** How long a replay waits for a subscriber that reads nothing before giving up on it. */
const REPLAY_DRAIN_TIMEOUT_MS = 30_000;
const CLOSE_TRY_AGAIN_LATER = 1013;

/** Each event is serialized once, however many subscriptions it goes to. */
const serialized = new WeakMap<WatchEvent, string>();
function eventJson(event: WatchEvent): string {
  let json = serialized.get(event);
  if (json === undefined) serialized.set(event, (json = objectJson(event)));
  return json;
}

/** True when `event` concerns what `filter` watches. */
export function matches(filter: WatchFilter, event: WatchEvent): boolean {
  if (event.instanceId !== filter.instanceId) return false;
  if (event.kind === 'instanceDeleted' || filter.namespace === undefined) return true;
  if (event.namespace !== filter.namespace) return false;
  // A namespace deletion reaches key and prefix subscriptions of that namespace too.
  if (event.kind === 'namespaceDeleted') return true;
  if (filter.key !== undefined) return event.key === filter.key;
  if (filter.prefix !== undefined) return event.key !== null && event.key.startsWith(filter.prefix);
  return true;
}

/**
 * The subscriptions of one server. It listens to the engine's commits and fans each change out to
 * the subscriptions that match, in revision order. The hand-over from replay to live is race-free:
 * a subscription is registered (collecting changes) before the current revision is read, and the
 * replay covers exactly the changes up to that revision, the backlog exactly those after it.
 */
export class WatchHub {
  private readonly byInstance = new Map<string, Set<Subscription>>();
  private readonly byId = new Map<string, Subscription>();
  private readonly stopListening: () => void;

  constructor(
    private readonly engine: StorageEngine,
    private readonly options: WatchHubOptions,
  ) {
    this.stopListening = engine.onCommit((changes) => this.dispatch(changes));
  }

  /**
   * Registers a subscription and checks `fromRevision`; nothing is sent until {@link start}, which
   * the caller runs once the watch reply is on its way.
   */
  async subscribe(
    session: WatchSession,
    filter: WatchFilter,
    fromRevision: number | undefined,
  ): Promise<{ subscriptionId: string; revision: number }> {
    const subscription: Subscription = {
      id: nanoid(),
      session,
      filter,
      fromRevision,
      phase: 'pending',
      startRevision: Number.POSITIVE_INFINITY,
      replayedThrough: fromRevision,
      backlog: [],
      backlogBytes: 0,
    };
    // Registered before anything is read, so a change committed meanwhile (even the instance's
    // deletion) is held for it rather than missed.
    this.add(subscription);
    try {
      subscription.startRevision = await this.engine.currentRevision();
      if (fromRevision !== undefined) await this.checkFrom(fromRevision, subscription.startRevision);
      await this.checkInstance(filter.instanceId, fromRevision, subscription.startRevision);
    } catch (error) {
      this.remove(subscription);
      throw error;
    }
    return { subscriptionId: subscription.id, revision: subscription.startRevision };
  }

  /** Replays what was asked for, then goes live. Runs after the watch reply was sent. */
  start(subscriptionId: string): void {
    const subscription = this.byId.get(subscriptionId);
    if (subscription === undefined || subscription.phase !== 'pending') return;
    subscription.phase = 'replaying';
    this.replay(subscription).catch((error: unknown) => {
      this.options.logger.error('replaying changes failed', { subscriptionId, ...describeError(error) });
      this.remove(subscription);
      subscription.session.close(1011, 'replaying changes failed');
    });
  }

  /** Ends one subscription of this session; false when it has none by that id. */
  unsubscribe(session: WatchSession, subscriptionId: string): boolean {
    const subscription = this.byId.get(subscriptionId);
    if (subscription === undefined || subscription.session !== session) return false;
    this.remove(subscription);
    return true;
  }

  /** Ends every subscription of a connection that closed. */
  dropSession(session: WatchSession): void {
    for (const subscription of this.byId.values()) if (subscription.session === session) this.remove(subscription);
  }

  /**
   * The oldest revision a replay under way (or about to start) still has to send, which the
   * change log must keep; undefined when no replay needs anything.
   */
  replayFloor(): number | undefined {
    let floor: number | undefined;
    for (const subscription of this.byId.values()) {
      const next = subscription.replayedThrough;
      if (next !== undefined && (subscription.phase === 'pending' || subscription.phase === 'replaying')) {
        floor = Math.min(floor ?? Number.POSITIVE_INFINITY, next + 1);
      }
    }
    return floor;
  }

  /** Number of subscriptions, for stats and tests. */
  get size(): number {
    return this.byId.size;
  }

  close(): void {
    this.stopListening();
    for (const subscription of [...this.byId.values()]) this.remove(subscription);
  }

  // ------------------------------------------------------------------ internals

  /**
   * INSTANCE_NOT_FOUND for a missing instance — unless the change log still holds changes of it
   * after `fromRevision`: a client resuming after the instance was deleted gets those changes,
   * ending with instanceDeleted, rather than losing them.
   */
  private async checkInstance(instanceId: string, fromRevision: number | undefined, current: number): Promise<void> {
    try {
      await this.engine.getInstance(instanceId);
    } catch (error) {
      const missing = error instanceof ProtocolError && error.code === ErrorCode.INSTANCE_NOT_FOUND;
      if (!missing || fromRevision === undefined) throw error;
      const missed = await this.engine.changesSince(instanceId, fromRevision, current, 1);
      if (missed.length === 0) throw error;
    }
  }

  private async checkFrom(fromRevision: number, current: number): Promise<void> {
    if (fromRevision > current) {
      throw new ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        `params.fromRevision: ${fromRevision} is ahead of this database (at revision ${current}); it came from another database, so re-read instead`,
        { issues: [{ path: ['fromRevision'], code: 'custom', message: 'ahead of the current revision' }], revision: current },
      );
    }
    const oldestRevision = await this.engine.oldestRevision();
    if (fromRevision < oldestRevision - 1) {
      throw new ProtocolError(
        ErrorCode.COMPACTED,
        `changes after revision ${fromRevision} are no longer kept; the change log starts at revision ${oldestRevision}`,
        { oldestRevision },
      );
    }
  }

  private async replay(subscription: Subscription): Promise<void> {
    let after = subscription.fromRevision ?? subscription.startRevision;
    while (after < subscription.startRevision && subscription.phase === 'replaying') {
      const page = await this.engine.changesSince(subscription.filter.instanceId, after, subscription.startRevision, REPLAY_PAGE);
      if (page.length === 0) break;
      for (const event of page) {
        if (subscription.phase !== 'replaying') return;
        if (matches(subscription.filter, event)) this.send(subscription, event);
        // The pruner keeps what is still to be sent (see replayFloor).
        subscription.replayedThrough = after = event.revision;
        if (subscription.session.bufferedBytes() > this.options.maxBufferedBytes / 4) await this.drained(subscription);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (subscription.phase !== 'replaying') return;
    // Changes committed during the replay waited in the backlog; they follow without a gap.
    const backlog = subscription.backlog;
    subscription.backlog = [];
    subscription.backlogBytes = 0;
    subscription.phase = 'live';
    // deliver() stops once the subscription ends (instanceDeleted, or a subscriber too slow).
    for (const event of backlog) this.deliver(subscription, event);
  }

  /**
   * Waits until the subscriber has read most of what was sent, so a replay paces itself to it;
   * gives up on a subscriber that reads nothing for REPLAY_DRAIN_TIMEOUT_MS.
   */
  private async drained(subscription: Subscription): Promise<void> {
    let unsent = subscription.session.bufferedBytes();
    let deadline = Date.now() + REPLAY_DRAIN_TIMEOUT_MS;
    while (subscription.phase === 'replaying' && unsent > this.options.maxBufferedBytes / 8) {
      if (Date.now() > deadline) return this.tooSlow(subscription, 'subscriber is not reading its events');
      await new Promise((resolve) => setTimeout(resolve, 5));
      const now = subscription.session.bufferedBytes();
      if (now < unsent) deadline = Date.now() + REPLAY_DRAIN_TIMEOUT_MS;
      unsent = now;
    }
  }

  private dispatch(changes: readonly WatchEvent[]): void {
    for (const event of changes) {
      const subscriptions = this.byInstance.get(event.instanceId);
      if (subscriptions === undefined) continue;
      for (const subscription of [...subscriptions]) {
        if (!matches(subscription.filter, event)) continue;
        if (subscription.phase === 'live') this.deliver(subscription, event);
        else this.holdBack(subscription, event);
      }
    }
  }

  /** Keeps a change for a subscription that is not live yet; deliver() later drops those at or before its start. */
  private holdBack(subscription: Subscription, event: WatchEvent): void {
    subscription.backlog.push(event);
    subscription.backlogBytes += eventJson(event).length;
    if (subscription.backlog.length > MAX_BACKLOG || subscription.backlogBytes > this.options.maxBufferedBytes) {
      this.tooSlow(subscription, 'subscriber fell too far behind');
    }
  }

  private deliver(subscription: Subscription, event: WatchEvent): void {
    if (subscription.phase !== 'live' || event.revision <= subscription.startRevision) return;
    // Unsent bytes from earlier frames show whether the subscriber reads at all.
    if (subscription.session.bufferedBytes() > this.options.maxBufferedBytes) {
      return this.tooSlow(subscription, 'subscriber is not reading its events');
    }
    this.send(subscription, event);
  }

  private send(subscription: Subscription, event: WatchEvent): void {
    const frame = `{"type":"${EVENT_PUSH_TYPE}","subscriptionId":${JSON.stringify(subscription.id)},"event":${eventJson(event)},"timestamp":"${isoTime(Date.now())}"}`;
    if (!subscription.session.push(frame)) return this.remove(subscription);
    // An instance deletion ends every subscription on it.
    if (event.kind === 'instanceDeleted') this.remove(subscription);
  }

  private tooSlow(subscription: Subscription, reason: string): void {
    this.options.logger.warn('closing a subscriber that does not keep up', { subscriptionId: subscription.id, reason });
    this.dropSession(subscription.session);
    subscription.session.close(CLOSE_TRY_AGAIN_LATER, reason);
  }

  private add(subscription: Subscription): void {
    this.byId.set(subscription.id, subscription);
    let set = this.byInstance.get(subscription.filter.instanceId);
    if (set === undefined) this.byInstance.set(subscription.filter.instanceId, (set = new Set()));
    set.add(subscription);
  }

  private remove(subscription: Subscription): void {
    subscription.phase = 'ended';
    subscription.backlog = [];
    subscription.backlogBytes = 0;
    this.byId.delete(subscription.id);
    const set = this.byInstance.get(subscription.filter.instanceId);
    set?.delete(subscription);
    if (set?.size === 0) this.byInstance.delete(subscription.filter.instanceId);
  }
}
