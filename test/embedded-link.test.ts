import { afterEach, expect, it } from 'vitest';
import { DEFAULT_LIMITS, type WatchEvent } from '../protocol/index.js';
import { silentLogger } from '../server/logger.js';
import { Metrics } from '../server/metrics.js';
import type { StorageEngine } from '../server/storage/engine.js';
import { openSqliteEngine } from '../server/storage/sqlite.js';
import { WatchHub as ServerWatchHub } from '../server/watch.js';
import { KvStoreApi } from '../sdk/kv-store.js';
import { WatchHub } from '../sdk/watch.js';
import { LocalLink } from '../embedded/link.js';

// The embedded store's link, assembled by hand so that the server's watch hub can be given a
// small buffer: the only way to make it give up on a subscriber in a test.

let engine: StorageEngine | undefined;
afterEach(async () => {
  await engine?.close();
  engine = undefined;
});

function assemble(maxBufferedBytes: number) {
  engine = openSqliteEngine(':memory:');
  const watch = new ServerWatchHub(engine, { maxBufferedBytes, logger: silentLogger });
  const link = new LocalLink(
    {
      engine,
      limits: { ...DEFAULT_LIMITS },
      connectionLimits: { maxConnections: 1, maxInFlight: 1000, maxBufferedBytes, heartbeatIntervalMs: 1000 },
      durability: 'full',
      serverVersion: 'test',
      watch,
      metrics: new Metrics(),
    },
    silentLogger,
  );
  const states: string[] = [];
  link.onStateChange((state) => states.push(state));
  const kvStore = new KvStoreApi(link.send, new WatchHub(link));
  return { link, kvStore, states, watch };
}

it('a subscriber the hub gives up on resubscribes from its last revision and misses nothing, as after a dropped socket', async () => {
  const { kvStore, states, watch } = assemble(2000);
  const big = 'x'.repeat(1500);
  for (let i = 0; i < 20; i++) await kvStore.set('app', 'ns', `old-${i}`, big, true);

  const seen: WatchEvent[] = [];
  const subscription = kvStore.watch('app', { namespace: 'ns', fromRevision: 0, onEvent: (event) => void seen.push(event) });
  await subscription.ready;
  // Written while the replay of the 20 old changes is under way: they wait in its backlog,
  // whose 2000 bytes they overflow, so the hub drops the subscription and closes the session.
  const writes = Array.from({ length: 5 }, (_, i) => kvStore.set('app', 'ns', `new-${i}`, big));
  await Promise.all(writes);
  for (let i = 0; i < 100 && seen.length < 25; i++) await new Promise((resolve) => setTimeout(resolve, 10));

  expect(states).toEqual(['reconnecting', 'ready']);
  expect(seen.map((e) => e.key)).toEqual([...Array.from({ length: 20 }, (_, i) => `old-${i}`), ...Array.from({ length: 5 }, (_, i) => `new-${i}`)]);
  expect(seen.map((e) => e.revision)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  expect(subscription.state).toBe('live');
  expect(watch.size).toBe(1);
  await subscription.unsubscribe();
  expect(watch.size).toBe(0);
});

it('a closed link refuses requests without running them and drops its subscriptions', async () => {
  const { link, kvStore, states, watch } = assemble(1 << 20);
  await kvStore.set('app', 'ns', 'k', 1, true);
  const subscription = kvStore.watch('app');
  await subscription.ready;
  expect(watch.size).toBe(1);
  link.close();
  expect(states).toEqual(['closed']);
  expect(watch.size).toBe(0);
  await expect(kvStore.set('app', 'ns', 'k', 2)).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  expect(await engine!.get('app', 'ns', 'k')).toMatchObject({ value: 1 });
});
