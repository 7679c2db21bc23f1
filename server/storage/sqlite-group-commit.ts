import type Database from 'better-sqlite3';
import { ErrorCode, ProtocolError } from '../../protocol/index.js';
import type { Outcome } from './kept-replies.js';

/**
 * What a transaction changes besides the database (cached counters, changes awaiting
 * announcement): the engine takes a mark before a change and returns to it when SQLite rolls the
 * change back.
 */
export interface TransactionState<Mark> {
  mark(): Mark;
  restore(mark: Mark): void;
  /** Runs inside the transaction just before COMMIT (persisting cached counters). */
  beforeCommit(start: Mark): void;
  /**
   * Runs right after COMMIT and returns what to run once that commit is durable, before any
   * caller hears of its outcome (announcing its changes to watchers).
   */
  afterCommit(): () => void;
}

/**
 * Makes every commit so far durable (an fsync of the write-ahead log), calling back once it is,
 * or with the error that stopped it. Runs off the event loop, so requests go on meanwhile.
 */
export type Sync = (done: (error: Error | null) => void) => void;

/** How a write is committed. */
export interface WriteOptions {
  /**
   * False for a write whose loss in a crash is harmless because it only forgets (trimming the
   * change log, forgetting old kept replies): its group gets no sync of its own, reads after it
   * do not wait for one, and the next sync makes it durable with the commits that follow. Its
   * outcome, and that of a read run in its group, still waits for the syncs of earlier commits.
   * A group with any other write is synced as usual. @default true
   */
  needsSync?: boolean;
}

/** A caller waiting for the group's commit: `failure` is set when the group did not commit. */
type Waiter = (failure?: unknown) => void;

interface Group<Mark> {
  /** The state before the group's first write: where a failed commit returns to. */
  start: Mark;
  waiters: Waiter[];
  /** Some write of the group needs its commit synced (see {@link WriteOptions}). */
  needsSync: boolean;
  /** Set once committed: what to run when the commit is durable. */
  durable?: () => void;
}

/**
 * Group commit. The writes that arrive in one turn of the event loop share one transaction: the
 * first opens it (BEGIN IMMEDIATE) and schedules its COMMIT with `setImmediate`, which runs after
 * every socket read of the current poll phase — so a lone write is committed in the same loop
 * iteration, with no timer to wait for, and writes that arrive together pay for one fsync.
 *
 * Each write runs in its own savepoint: its failure (CONFLICT, a validation error) rolls back only
 * itself. Every outcome, failures included, is handed out only after the commit, because each may
 * rest on the group's earlier writes; if the commit fails, nothing of the group remains and every
 * write in it fails with the commit's error.
 *
 * A read while a group is open runs at once (it sees the group's writes, keeping the order in
 * which requests arrived) but its result is held until the commit; if the commit fails, the read
 * runs again on what remains, so no caller ever observes a write that was not committed.
 *
 * With a {@link Sync} (durability full on a file), COMMIT itself does not fsync: the group's
 * outcomes wait for the next sync, which runs on the thread pool while the event loop goes on
 * reading requests and committing the next groups; one sync makes every commit before it durable.
 * A read that would see a commit not yet durable waits for that commit's sync too. A failed sync
 * fails its groups' callers with STORAGE_ERROR and stops all later writes: after a failed fsync
 * the kernel may have dropped the pages it could not write, so nothing later can be promised.
 */
export class GroupCommit<Mark> {
  private group: Group<Mark> | undefined;
  /** Committed groups waiting for a sync to start; the newest is last. */
  private unsynced: Group<Mark>[] = [];
  /** The groups the running sync will make durable; undefined while none runs. */
  private syncing: Group<Mark>[] | undefined;
  /** Set for good once a sync failed. */
  private syncFailure: Error | undefined;
  /** Resolvers of {@link settled} calls waiting for every commit to be durable. */
  private idleWaiters: (() => void)[] = [];
  private readonly begin: Database.Statement;
  private readonly commitStatement: Database.Statement;
  private readonly rollback: Database.Statement;
  private readonly savepointStatement: Database.Statement;
  private readonly release: Database.Statement;
  private readonly rollbackTo: Database.Statement;
  /** Commits run since the engine opened. */
  commits = 0;
  /** Syncs completed since the engine opened: each made every commit before it durable. */
  syncs = 0;
  /**
   * While false, each write commits before `write` returns. An online backup needs that: its
   * steps run between turns of the event loop and must never see an uncommitted page.
   */
  deferCommits = true;

  constructor(
    private readonly db: Database.Database,
    private readonly state: TransactionState<Mark>,
    private readonly sync?: Sync,
  ) {
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commitStatement = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    this.savepointStatement = db.prepare('SAVEPOINT kvhub_write');
    this.release = db.prepare('RELEASE kvhub_write');
    this.rollbackTo = db.prepare('ROLLBACK TO kvhub_write');
  }

  /** Runs `fn` in the open group (opening one) and settles with its outcome once the group commits. */
  write<T>(fn: () => T, options: WriteOptions = {}): Promise<T> {
    if (this.syncFailure !== undefined) return Promise.reject(this.syncFailure);
    let group: Group<Mark>;
    try {
      group = this.group ?? this.open();
    } catch (error) {
      return Promise.reject(error);
    }
    if (options.needsSync !== false) group.needsSync = true;
    let outcome: Outcome<T>;
    try {
      outcome = { ok: true, value: this.savepoint(fn) };
    } catch (error) {
      // SQLite ends the whole transaction on some errors (SQLITE_FULL, SQLITE_IOERR): the
      // group's earlier writes are gone too.
      if (!this.db.inTransaction) {
        this.abandon(group, error);
        return Promise.reject(error);
      }
      outcome = { ok: false, error };
    }
    const settled = new Promise<T>((resolve, reject) => {
      group.waiters.push((failure) => {
        if (failure !== undefined) reject(failure);
        else if (outcome.ok) resolve(outcome.value);
        else reject(outcome.error);
      });
    });
    if (!this.deferCommits) this.flush();
    return settled;
  }

  /** Runs `fn` now; while a group is open, its result waits for the commit (see the class comment). */
  read<T>(fn: () => T): Promise<T> {
    const group = this.group;
    const outcome = attempt(fn);
    if (group === undefined) return this.whenDurable(outcome);
    return new Promise<T>((resolve, reject) => {
      group.waiters.push((failure) => {
        // The group did not commit: read again what remains, which is (or will be) durable.
        const final = failure === undefined ? Promise.resolve(outcome).then(unwrap) : this.whenDurable(attempt(fn));
        final.then(resolve, reject);
      });
    });
  }

  /** Settles with `outcome` once every commit it may have seen is durable. */
  private whenDurable<T>(outcome: Outcome<T>): Promise<T> {
    const newest = this.newestNotDurable();
    if (newest === undefined) return outcome.ok ? Promise.resolve(outcome.value) : Promise.reject(outcome.error);
    return new Promise<T>((resolve, reject) => {
      newest.waiters.push((failure) => {
        if (failure !== undefined) reject(failure);
        else if (outcome.ok) resolve(outcome.value);
        else reject(outcome.error);
      });
    });
  }

  /** Resolves once no commit is waiting for its sync (at once without a Sync). */
  settled(): Promise<void> {
    if (this.syncing === undefined && this.unsynced.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Runs `fn` in a savepoint inside the open transaction: when it throws, its changes and the
   * engine state it touched are rolled back and the error is rethrown.
   */
  savepoint<T>(fn: () => T): T {
    const mark = this.state.mark();
    this.savepointStatement.run();
    try {
      const value = fn();
      this.release.run();
      return value;
    } catch (error) {
      if (this.db.inTransaction) {
        this.rollbackTo.run();
        this.release.run();
      }
      this.state.restore(mark);
      throw error;
    }
  }

  /** Commits the open group now, if there is one. */
  flush(): void {
    const group = this.group;
    if (group === undefined) return;
    // A group opened while the failing sync ran: after a failed fsync no commit can be promised.
    if (this.syncFailure !== undefined) return this.abandon(group, this.syncFailure);
    try {
      this.state.beforeCommit(group.start);
      this.commitStatement.run();
    } catch (error) {
      this.abandon(group, error);
      return;
    }
    this.group = undefined;
    this.commits++;
    group.durable = this.state.afterCommit();
    if (this.sync === undefined) return release(group);
    if (group.needsSync) {
      this.unsynced.push(group);
      this.startSync();
      return;
    }
    // Nothing of its own to sync, but a read that ran in the group may have seen earlier commits
    // whose sync is still to come: its outcome waits for those, as any read's does.
    const newest = this.newestNotDurable();
    if (newest === undefined) return release(group);
    newest.waiters.push((failure) => {
      if (failure === undefined) release(group);
      else for (const waiter of group.waiters) waiter(failure);
    });
  }

  /** The newest committed group whose sync has not ended: once it is durable, so is every earlier one. */
  private newestNotDurable(): Group<Mark> | undefined {
    return this.unsynced.at(-1) ?? this.syncing?.at(-1);
  }

  /** Starts a sync of every commit so far, unless one is running (its end starts the next). */
  private startSync(): void {
    if (this.syncing !== undefined || this.unsynced.length === 0) return;
    const groups = (this.syncing = this.unsynced);
    this.unsynced = [];
    this.sync!((error) => {
      this.syncing = undefined;
      if (error === null) {
        this.syncs++;
        for (const group of groups) release(group);
      } else {
        if (this.syncFailure === undefined) {
          this.syncFailure = new ProtocolError(
            ErrorCode.STORAGE_ERROR,
            'the disk failed to make writes durable; this server takes no more writes until it is restarted',
          );
          this.syncFailure.cause = error;
        }
        // Callers of later commits, already waiting, hear of it too: their writes are on the same file.
        for (const group of [...groups, ...this.unsynced.splice(0)]) for (const waiter of group.waiters) waiter(this.syncFailure);
      }
      this.startSync();
      if (this.syncing === undefined) for (const resolve of this.idleWaiters.splice(0)) resolve();
    });
  }

  private open(): Group<Mark> {
    const start = this.state.mark();
    this.begin.run();
    const group: Group<Mark> = { start, waiters: [], needsSync: false };
    this.group = group;
    if (this.deferCommits) setImmediate(() => this.group === group && this.flush());
    return group;
  }

  /** Ends a group that cannot commit: rolls back what SQLite still holds and fails every waiter. */
  private abandon(group: Group<Mark>, error: unknown): void {
    this.group = undefined;
    if (this.db.inTransaction) {
      try {
        this.rollback.run();
      } catch {
        // The connection is broken beyond a rollback; SQLite discards the transaction on close.
      }
    }
    this.state.restore(group.start);
    for (const waiter of group.waiters) waiter(error);
  }
}

/** Announces a durable group's changes, then hands out its outcomes. */
function release(group: Group<unknown>): void {
  group.durable?.();
  for (const waiter of group.waiters) waiter();
}

function unwrap<T>(outcome: Outcome<T>): T {
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}

function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

