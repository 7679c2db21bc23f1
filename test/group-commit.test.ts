import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ErrorCode, type ProtocolError } from '../protocol/index.js';
import { GroupCommit, type Sync } from '../server/storage/sqlite-group-commit.js';
import { openDatabase } from '../server/storage/sqlite-native.js';

/** A real SQLite database under GroupCommit, with the log sync in the test's hands. */
function setUp() {
  const db = openDatabase(':memory:');
  db.exec('CREATE TABLE t (x INTEGER)');
  const insert = db.prepare<[number]>('INSERT INTO t VALUES (?)');
  const count = db.prepare<[], number>('SELECT count(*) FROM t').pluck();
  const syncs: Parameters<Sync>[0][] = [];
  const durable: number[] = [];
  let commits = 0;
  const group = new GroupCommit(
    db,
    { mark: () => 0, restore() {}, beforeCommit() {}, afterCommit: () => ((n) => () => durable.push(n))(++commits) },
    (done) => void syncs.push(done),
  );
  const settled = new Map<Promise<unknown>, string>();
  const watch = (promise: Promise<unknown>) => {
    settled.set(promise, 'pending');
    promise.then(
      (value) => settled.set(promise, `ok ${String(value)}`),
      (error: unknown) => settled.set(promise, `failed ${(error as ProtocolError).code ?? (error as Error).message}`),
    );
    return promise;
  };
  return {
    db,
    group,
    syncs,
    durable,
    settled,
    watch,
    write: (x: number) => watch(group.write(() => insert.run(x).changes)),
    /** A write that needs no sync, as housekeeping's trimming (see WriteOptions.needsSync). */
    forget: (x: number) => watch(group.write(() => insert.run(x).changes, { needsSync: false })),
    read: () => watch(group.read(() => count.get())),
  };
}

describe('group commit with the log synced off the event loop', () => {
  it('hands out outcomes only once a sync covers their commit, and makes reads of unsynced commits wait', async () => {
    const { group, syncs, durable, settled, write, read } = setUp();
    const first = write(1);
    await nextTurn();
    expect(group.commits).toBe(1);
    expect(syncs).toHaveLength(1);
    expect(settled.get(first)).toBe('pending');

    // Committed but not yet durable: a read sees it, and waits for the sync.
    const sawFirst = read();
    // The next group commits while the first sync runs; its sync waits for the first to end.
    const second = write(2);
    await nextTurn();
    expect(group.commits).toBe(2);
    expect(syncs).toHaveLength(1);
    expect([settled.get(sawFirst), settled.get(second)]).toEqual(['pending', 'pending']);

    syncs[0]!(null);
    await nextTurn();
    expect([settled.get(first), settled.get(sawFirst), settled.get(second)]).toEqual(['ok 1', 'ok 1', 'pending']);
    expect(durable).toEqual([1]);
    // The second commit gets a sync of its own.
    expect(syncs).toHaveLength(2);
    syncs[1]!(null);
    await nextTurn();
    expect(settled.get(second)).toBe('ok 1');
    expect(durable).toEqual([1, 2]);
    expect(group.syncs).toBe(2);
    await group.settled();
  });

  it('fails the writes a failed sync covered, and every later write, with STORAGE_ERROR; reads go on', async () => {
    const { group, syncs, settled, write, read } = setUp();
    const lost = write(1);
    await nextTurn();
    const committedMeanwhile = write(2);
    await nextTurn();
    syncs[0]!(new Error('EIO: the disk failed'));
    await nextTurn();
    expect([settled.get(lost), settled.get(committedMeanwhile)]).toEqual([`failed ${ErrorCode.STORAGE_ERROR}`, `failed ${ErrorCode.STORAGE_ERROR}`]);
    const later = write(3);
    await nextTurn();
    expect(settled.get(later)).toBe(`failed ${ErrorCode.STORAGE_ERROR}`);
    await expect(later).rejects.toThrow(/no more writes until it is restarted/);
    const afterwards = read();
    await nextTurn();
    expect(settled.get(afterwards)).toBe('ok 2');
    await group.settled();
  });

  it('settles a write that needs no sync at its commit, and reads after it do not wait; among synced writes it waits with them', async () => {
    const { group, syncs, settled, write, forget, read } = setUp();
    const trimmed = forget(1);
    await nextTurn();
    expect(group.commits).toBe(1);
    expect(syncs).toHaveLength(0);
    expect(settled.get(trimmed)).toBe('ok 1');
    const sawIt = read();
    await nextTurn();
    expect(settled.get(sawIt)).toBe('ok 1');

    // In one group with a write that needs the sync, it is synced and settles with it.
    const withOthers = forget(2);
    const needsIt = write(3);
    await nextTurn();
    expect(syncs).toHaveLength(1);
    expect([settled.get(withOthers), settled.get(needsIt)]).toEqual(['pending', 'pending']);
    // A read still waits for a synced commit it may have seen, even after a later unsynced one;
    // so does that unsynced one, which could have held a read too.
    const later = forget(4);
    await nextTurn();
    const sawAll = read();
    await nextTurn();
    expect([settled.get(later), settled.get(sawAll)]).toEqual(['pending', 'pending']);
    syncs[0]!(null);
    await nextTurn();
    expect([settled.get(withOthers), settled.get(needsIt), settled.get(later), settled.get(sawAll)]).toEqual(['ok 1', 'ok 1', 'ok 1', 'ok 4']);
    expect(syncs).toHaveLength(1);
    await group.settled();
  });

  it('holds a read that ran in a group needing no sync until the earlier commits it saw are synced', async () => {
    const { group, syncs, settled, write, forget, read } = setUp();
    const first = write(1);
    await nextTurn();
    expect(syncs).toHaveLength(1);
    const trimmed = forget(2);
    const sawFirst = read();
    await nextTurn();
    expect(group.commits).toBe(2);
    // The trimming's group committed, but the first write's sync has not ended.
    expect([settled.get(first), settled.get(trimmed), settled.get(sawFirst)]).toEqual(['pending', 'pending', 'pending']);
    syncs[0]!(null);
    await nextTurn();
    expect([settled.get(first), settled.get(trimmed), settled.get(sawFirst)]).toEqual(['ok 1', 'ok 1', 'ok 2']);
    expect(syncs).toHaveLength(1);
  });

  it('rolls back a group that opened while the failing sync ran, instead of committing it', async () => {
    const { db, group, syncs, settled, write, read } = setUp();
    write(1);
    await nextTurn();
    // Open, not yet committed, when the sync fails.
    const opened = write(2);
    syncs[0]!(new Error('EIO: the disk failed'));
    await nextTurn();
    expect(settled.get(opened)).toBe(`failed ${ErrorCode.STORAGE_ERROR}`);
    expect([group.commits, syncs.length, db.inTransaction]).toEqual([1, 1, false]);
    const afterwards = read();
    await nextTurn();
    expect(settled.get(afterwards)).toBe('ok 1');
  });
});
