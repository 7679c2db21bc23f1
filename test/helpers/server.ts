import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type KvhubServer, type ServerOptions } from '../../server/index.js';

/** A real kvhub server on a free loopback port that can be stopped and restarted in place. */
export interface TestServer {
  readonly url: string;
  readonly port: number;
  /** The database file (kept across restart). */
  readonly db: string;
  /** The running server; replaced by restart(). */
  readonly server: KvhubServer;
  /** Closes the server; the port and the database file stay for restart(). */
  stop(): Promise<void>;
  /** Starts a new server on the same port and database file. */
  restart(): Promise<void>;
  /** Stops the server and deletes its temporary files. */
  close(): Promise<void>;
}

/** Starts a server on 127.0.0.1, port 0 unless given, on a fresh temporary database file unless given. */
export async function startTestServer(
  options: { db?: string; port?: number } & Omit<ServerOptions, 'db' | 'port' | 'host'> = {},
): Promise<TestServer> {
  const dir = options.db === undefined ? mkdtempSync(join(tmpdir(), 'kvhub-test-')) : undefined;
  const db = options.db ?? join(dir!, 'kvhub.db');
  let server = await createServer({ ...options, host: '127.0.0.1', port: options.port ?? 0, db });
  const port = server.port;
  let running = true;
  return {
    url: server.url,
    port,
    db,
    get server() {
      return server;
    },
    async stop() {
      if (!running) return;
      running = false;
      await server.close();
    },
    async restart() {
      if (running) await server.close();
      server = await createServer({ ...options, host: '127.0.0.1', port, db });
      running = true;
    },
    async close() {
      if (running) await server.close();
      running = false;
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}
