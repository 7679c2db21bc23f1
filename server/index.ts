import { once } from 'node:events';
import { createServer as createHttpServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { DEFAULT_LIMITS } from '../protocol/index.js';
import {
  authenticate,
  checkUpgrade,
  normaliseOrigin,
  selectSubprotocol,
  TokenSet,
  type Refused,
  type TokenGrant,
  type UpgradePolicy,
} from './auth/index.js';
import { serveConnection, type ConnectionDeps } from './connection.js';
import type { ConnectionLimits, Limits } from './handlers.js';
import { describeError, silentLogger, type Logger } from './logger.js';
import { assertReplyRoom } from './reply-budget.js';
import { isLoopbackHost } from './loopback.js';
import type { ChangeRetention, StorageEngine } from './storage/engine.js';
import { openSqliteEngine } from './storage/sqlite.js';
import { Metrics } from './metrics.js';
import { DEFAULT_CHANGE_RETENTION, startHousekeeping } from './housekeeping.js';
import { checkPeriodicBackups, startPeriodicBackups, type PeriodicBackupOptions } from './backup.js';
import { SERVER_VERSION } from './version.js';
import { PendingWork } from './pending-work.js';
import { WatchHub } from './watch.js';
import { serveInspector } from './inspector/index.js';

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** Port to listen on; 0 picks a free one. @default 7420 */
  port?: number;
  /** Address to bind. @default '127.0.0.1' */
  host?: string;
  /** SQLite database file, or ':memory:'. Ignored when `engine` is given. @default ':memory:' */
  db?: string;
  /** A storage engine to serve instead of opening `db`; the server closes it on close(). */
  engine?: StorageEngine;
  /** 'full' acknowledges a write only after it is fsynced; 'normal' may lose the last writes on power loss. @default 'full' */
  durability?: 'full' | 'normal';
  /**
   * Cap on the database file's size in bytes (whole pages; the `-wal` file beside it is not
   * counted). A write that needs more room is answered `STORAGE_ERROR` and stores nothing; reads,
   * deletes and writes that fit in space freed by deletes go on. A database already larger keeps
   * its size as the cap. Ignored when `engine` is given. @default undefined (no cap)
   */
  maxDbBytes?: number;
  /** How long the reply to a write with an `idempotencyKey` is kept, in ms. @default 24 h */
  keptReplyWindowMs?: number;
  /** Limits on values, frames and batches. @default DEFAULT_LIMITS */
  limits?: Partial<Limits>;
  /** How often expired keys are swept, in ms. @default 250 */
  sweepIntervalMs?: number;
  /** How much of the change log (the watch feed) to keep. @default DEFAULT_CHANGE_RETENTION: 100000 changes, 24 h */
  changeRetention?: Partial<ChangeRetention>;
  /** How often the change log is trimmed to its retention, in ms. @default 5000 */
  pruneIntervalMs?: number;
  /**
   * Bytes of replies a connection may leave unread before it is closed with 1013, so a client
   * that sends but never reads cannot grow the server's memory. @default 64 MiB
   */
  maxBufferedBytes?: number;
  /**
   * Interval of the WebSocket ping that finds dead peers, in ms: a connection that has not
   * answered one ping when the next is due is terminated. @default 30000
   */
  heartbeatIntervalMs?: number;
  /**
   * Open WebSocket connections the server serves at once. An upgrade above it is refused before
   * the upgrade with HTTP 503 and `Retry-After: 1`; the SDK retries it with its backoff. @default 1024
   */
  maxConnections?: number;
  /**
   * Requests one connection may have in flight (received, reply not yet sent), batch elements
   * counted one by one. A frame that would go above it is not run: each of its requests is
   * answered `RATE_LIMITED` with `data.retryAfterMs`. At least `limits.maxBatch`, so that a full
   * batch fits on an idle connection. @default 1024
   */
  maxInFlight?: number;
  /** Structured logs. @default silentLogger */
  logger?: Logger;
  /**
   * Tokens the server accepts (see {@link parseTokenFile} for the file format). With at least one,
   * every upgrade must present one, and a non-loopback `host` is allowed. @default [] (no tokens)
   */
  tokens?: readonly TokenGrant[];
  /** Origins (`https://app.example`) allowed besides the same origin. @default [] */
  allowOrigins?: readonly string[];
  /** Host names (`kv.internal`, or `kv.internal:7420` for one port) a loopback server answers besides loopback names. @default [] */
  allowHosts?: readonly string[];
  /** Certificate and key (PEM) to serve `wss://` instead of `ws://`. @default undefined (plain ws://) */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Periodic online backups of the database into a directory, keeping the newest few. @default undefined (none) */
  backup?: PeriodicBackupOptions;
}

/** A running kvhub server. */
export interface KvhubServer {
  /** `ws://host:port` of the listening socket. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly engine: StorageEngine;
  /** Live watch subscriptions across all connections. */
  subscriptionCount(): number;
  /** Sends replies in flight, closes sockets with 1001, closes the database. Idempotent. */
  close(): Promise<void>;
}

/** Refusal to serve on an address other machines can reach while no token is configured. */
export class NonLoopbackHostError extends Error {
  override readonly name = 'NonLoopbackHostError';
  constructor(readonly host: string) {
    super(
      `refusing to listen on ${host}: it is reachable from other machines and no token is configured; set --token-file or KVHUB_TOKEN, or use a loopback address such as 127.0.0.1`,
    );
  }
}

/**
 * Throws {@link NonLoopbackHostError} when `host` is reachable from other machines and the
 * server would let anyone in (no token configured).
 */
export function checkBindAllowed(host: string, hasTokens: boolean): void {
  if (!hasTokens && !isLoopbackHost(host)) throw new NonLoopbackHostError(host);
}

const CLOSE_GOING_AWAY = 1001;
const DEFAULT_MAX_CONNECTIONS = 1024;
const DEFAULT_MAX_IN_FLIGHT = 1024;
const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const DEFAULT_HEARTBEAT_INTERVAL_MS = 30_000;

function checkConnectionLimits(connection: ConnectionLimits, limits: Limits): void {
  for (const [name, value] of Object.entries(connection)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number of at least 1, not ${value}`);
  }
  if (connection.maxInFlight < limits.maxBatch) {
    throw new RangeError(`maxInFlight (${connection.maxInFlight}) must be at least maxBatch (${limits.maxBatch}), so that a full batch can run`);
  }
}

/** Opens the storage engine, then serves the protocol over WebSocket and `GET /healthz` over HTTP. */
export async function createServer(options: ServerOptions = {}): Promise<KvhubServer> {
  const logger = options.logger ?? silentLogger;
  const durability = options.durability ?? 'full';
  const host = options.host ?? '127.0.0.1';
  const tokens = new TokenSet(options.tokens ?? []);
  // Without tokens, anyone who can reach the port owns the data: stay on loopback.
  checkBindAllowed(host, tokens.enabled);
  const policy: UpgradePolicy = {
    tokens,
    loopback: isLoopbackHost(host),
    allowOrigins: new Set((options.allowOrigins ?? []).map(normaliseOrigin)),
    allowHosts: new Set((options.allowHosts ?? []).map((name) => name.trim().toLowerCase())),
  };
  const limits: Limits = { ...DEFAULT_LIMITS, ...options.limits };
  assertReplyRoom(limits, 'maxPayloadBytes');
  const connectionLimits: ConnectionLimits = {
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    maxInFlight: options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
    maxBufferedBytes: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS,
  };
  checkConnectionLimits(connectionLimits, limits);
  if (options.maxDbBytes !== undefined && (!Number.isSafeInteger(options.maxDbBytes) || options.maxDbBytes < 1)) {
    throw new RangeError(`maxDbBytes must be a whole number of at least 1, not ${options.maxDbBytes}`);
  }
  if (options.backup !== undefined) checkPeriodicBackups(options.backup, options.engine);
  // Made before the database is opened: a certificate that does not fit its key throws here.
  const metrics = new Metrics();
  const answer = (request: IncomingMessage, response: ServerResponse) => answerHttp(request, response, tokens, metricsText);
  const http = options.tls !== undefined ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, answer) : createHttpServer(answer);
  const engine = options.engine ?? openSqliteEngine(options.db ?? ':memory:', { durability, maxDbBytes: options.maxDbBytes });
  const { maxBufferedBytes } = connectionLimits;
  const watch = new WatchHub(engine, { maxBufferedBytes, logger });

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.maxPayloadBytes,
    perMessageDeflate: false,
    // Without this, ws would select the first protocol offered, which may be `kvhub.bearer.<token>`.
    handleProtocols: (offered) => selectSubprotocol(offered),
  });
  const inFlight = new PendingWork();
  let closing = false;
  const shared = { engine, limits, connectionLimits, durability, serverVersion: SERVER_VERSION, watch, metrics };
  async function metricsText(): Promise<string> {
    const { commits, syncs, databaseBytes } = await engine.metrics();
    return metrics.render({ connections: wss.clients.size, watchers: watch.size, databaseBytes, commits, syncs });
  }
  // Each connection gets its own ctx, carrying the principal its token was checked for.
  const deps: Omit<ConnectionDeps, 'ctx'> = {
    logger,
    maxBufferedBytes,
    heartbeatIntervalMs: connectionLimits.heartbeatIntervalMs,
    maxInFlight: connectionLimits.maxInFlight,
    isClosing: () => closing,
    work: inFlight,
  };

  http.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    logger.debug('bad HTTP request', describeError(error));
    // Answer what can still be answered (431 for headers above Node's 16 KiB maxHeaderSize), then drop it.
    if (!socket.writable || error.code === 'ECONNRESET') return void socket.destroy();
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    socket.once('finish', () => socket.destroy());
    // A peer that does not read the answer does not keep the socket.
    setTimeout(() => socket.destroy(), 1000).unref();
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  http.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', (error) => logger.debug('socket error during upgrade', describeError(error)));
    if (closing) return void socket.destroy();
    const verdict = checkUpgrade(request, policy);
    if (!verdict.ok) {
      logger.info('upgrade refused', { status: verdict.status, reason: verdict.reason, peer: socket.remoteAddress });
      return refuse(socket, verdict);
    }
    // ws adds a client to `clients` synchronously inside handleUpgrade, so this count is exact.
    if (wss.clients.size >= connectionLimits.maxConnections) {
      logger.warn('upgrade refused: connection limit reached', { maxConnections: connectionLimits.maxConnections, peer: socket.remoteAddress });
      return refuse(socket, { status: 503, reason: `the server is at its limit of ${connectionLimits.maxConnections} connections; retry later` });
    }
    const connectionDeps: ConnectionDeps = { ...deps, ctx: { ...shared, principal: verdict.principal } };
    wss.handleUpgrade(request, socket, head, (ws) => serveConnection(ws, request, connectionDeps));
  });

  const housekeeping = startHousekeeping(
    engine,
    {
      sweepIntervalMs: options.sweepIntervalMs ?? 250,
      pruneIntervalMs: options.pruneIntervalMs ?? 5000,
      retention: { ...DEFAULT_CHANGE_RETENTION, ...options.changeRetention },
      keepFrom: () => watch.replayFloor(),
      ...(options.keptReplyWindowMs !== undefined && { keptReplyWindowMs: options.keptReplyWindowMs }),
    },
    logger,
  );

  const backups = options.backup === undefined ? undefined : startPeriodicBackups(engine, options.backup, logger);

  http.listen(options.port ?? 7420, host);
  try {
    await once(http, 'listening');
  } catch (error) {
    watch.close();
    await backups?.stop();
    await housekeeping.stop();
    await engine.close();
    throw error;
  }
  const address = http.address() as AddressInfo;
  const url = `${options.tls !== undefined ? 'wss' : 'ws'}://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`;
  logger.info('listening', { url });

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing = true;
    http.close();
    await inFlight.idle();
    await Promise.all(
      [...wss.clients].map(async (ws) => {
        if (ws.readyState === ws.CLOSED) return;
        const gone = once(ws, 'close');
        ws.close(CLOSE_GOING_AWAY, 'server shutting down');
        const timer = setTimeout(() => ws.terminate(), 2000);
        await gone;
        clearTimeout(timer);
      }),
    );
    http.closeAllConnections();
    watch.close();
    await backups?.stop();
    await housekeeping.stop();
    await engine.close();
    logger.info('closed', { url });
  }

  return {
    url,
    host: address.address,
    port: address.port,
    engine,
    subscriptionCount: () => watch.size,
    close: () => (closed ??= close()),
  };
}

/**
 * `/healthz` and the web inspector's files (`/`, `/kvhub.js`, ...: no data in them) are open to
 * all; any other path (`/metrics`, `/auth`) needs the token when tokens are configured.
 */
function answerHttp(request: IncomingMessage, response: ServerResponse, tokens: TokenSet, metricsText: () => Promise<string>): void {
  const path = (request.url ?? '/').split('?')[0] ?? '/';
  if (request.method === 'GET' && path === '/healthz') return void json(response, 200, { status: 'ok' });
  if (serveInspector(request, response, path)) return;
  const verdict = authenticate(request, tokens);
  if (!verdict.ok) return void json(response, 401, { error: verdict.reason }, { 'www-authenticate': 'Bearer realm="kvhub"' });
  // The token was let in. A browser, which cannot see why its upgrade failed, asks this (sdk/browser-socket.ts).
  if (request.method === 'GET' && path === '/auth') return void response.writeHead(204, { 'cache-control': 'no-store' }).end();
  if (request.method === 'GET' && path === '/metrics') {
    metricsText().then(
      (text) => response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text),
      // The engine is closed or failing: the scrape fails, visibly, and the server goes on.
      () => json(response, 503, { error: 'metrics are unavailable: the storage engine is not serving' }),
    );
    return;
  }
  json(response, 404, { error: 'not found' });
}

function json(response: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/** Answers a refused upgrade with a plain HTTP response on the raw socket, then closes it. */
function refuse(socket: Socket, { status, reason }: { status: Refused['status'] | 503; reason: string }): void {
  const body = JSON.stringify({ error: reason });
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
    'Connection: close',
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...(status === 401 ? ['WWW-Authenticate: Bearer realm="kvhub"'] : []),
    ...(status === 503 ? ['Retry-After: 1'] : []),
  ];
  socket.once('finish', () => socket.destroy());
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}


export type { ConnectionLimits, Limits } from './handlers.js';
export { parseTokenFile, TokenConfigError, type Principal, type TokenGrant } from './auth/index.js';
export type { Logger } from './logger.js';
export { jsonLogger, silentLogger } from './logger.js';
export type { StorageEngine } from './storage/engine.js';
export { openSqliteEngine, DatabaseInUseError } from './storage/sqlite.js';
export { DatabaseOpenError } from './storage/sqlite-errors.js';
