import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openKV } from '../../embedded/index.js';
import { createClient, type KvClient } from '../../sdk/index.js';
import { startTestServer } from './server.js';

/** What the handle and facade tests use of a kvhub: the same API on a network client and an embedded store. */
export type KvApi = Pick<KvClient, 'instance' | 'kvStore'>;

/** A store under test, opened fresh, with its first client. */
export interface OpenedKv {
  readonly client: KvApi;
  /** Another client of the same data: a second connection to the server, or the embedded store itself. */
  connect(): KvApi & { close(): Promise<void> };
  /** Closes every client and the store, and deletes its files. */
  close(): Promise<void>;
}

/** One way to reach kvhub; the suites run against each. */
export interface KvTarget {
  readonly name: string;
  open(): Promise<OpenedKv>;
}

/**
 * The targets the SDK suites run against: a real server on 127.0.0.1 reached over WebSocket, and
 * `openKV` on a file in a temporary directory. Durability does not change what the API shows;
 * 'normal' keeps the concurrency tests quick.
 */
export function kvTargets(options: { requestTimeoutMs: number }): KvTarget[] {
  return [
    {
      name: 'network client',
      async open() {
        const server = await startTestServer({ durability: 'normal' });
        const clients: KvClient[] = [];
        const connect = () => {
          const client = createClient({ url: server.url, requestTimeoutMs: options.requestTimeoutMs });
          clients.push(client);
          return client;
        };
        const client = connect();
        await client.waitForReady();
        return {
          client,
          connect,
          async close() {
            await Promise.all(clients.map((c) => c.close()));
            await server.close();
          },
        };
      },
    },
    {
      name: 'embedded openKV',
      async open() {
        const dir = mkdtempSync(join(tmpdir(), 'kvhub-embedded-'));
        const kv = openKV({ path: join(dir, 'kv.db'), durability: 'normal' });
        // In one process there is one store: "another client" is the same store, used concurrently.
        const connect = () => ({ instance: kv.instance.bind(kv), kvStore: kv.kvStore, close: async () => undefined });
        return {
          client: kv,
          connect,
          async close() {
            await kv.close();
            rmSync(dir, { recursive: true, force: true });
          },
        };
      },
    },
  ];
}
