import { KvError } from './errors.js';

/**
 * The part of a WebSocket the SDK uses: the browser's `WebSocket` and the `ws` package's both
 * fit it, so a browser build can pass `globalThis.WebSocket` and never load `ws`.
 */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed (the standard values). */
  readonly readyState: number;
  /** Sends one text frame. */
  send(data: string): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
  /** Fires once the socket is open. */
  onopen: ((event: unknown) => void) | null;
  /** Fires for every frame; `data` is a string for text frames. */
  onmessage: ((event: { data: unknown }) => void) | null;
  /** Fires once when the socket is closed, whatever the reason. */
  onclose: ((event: { code: number; reason: string }) => void) | null;
  /** Fires on a socket error; a `close` event follows. */
  onerror: ((event: { message?: string; error?: unknown }) => void) | null;
}

/** A constructor with the browser's `WebSocket` signature. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The standard `readyState` of an open socket. */
export const OPEN = 1;

/** What the SDK needs to open one socket. */
export interface SocketSettings {
  url: string;
  /** A bearer token; sent as a header with `ws`, as the `kvhub.bearer.<token>` subprotocol otherwise. */
  token: string | undefined;
  /** Largest frame accepted from the server (only the `ws` package can enforce it). */
  maxPayloadBytes: number;
}

/** The subprotocol the server selects when a browser presents its token as a subprotocol. */
export const SUBPROTOCOL = 'kvhub.v1';

/** Offered next to {@link SUBPROTOCOL}, followed by the token: a browser cannot send an Authorization header. */
export const BEARER_SUBPROTOCOL_PREFIX = 'kvhub.bearer.';

/**
 * Opens a socket with `WebSocket` when one is given, else with the `ws` package, loaded on first
 * use through a dynamic import so that a browser bundle that passes its own constructor never needs it
 * (the browser build replaces that import with a stub; see sdk/browser.ts).
 */
export async function openSocket(settings: SocketSettings, WebSocket: WebSocketConstructor | undefined): Promise<WebSocketLike> {
  if (WebSocket !== undefined) {
    const protocols = settings.token !== undefined ? [SUBPROTOCOL, `${BEARER_SUBPROTOCOL_PREFIX}${settings.token}`] : undefined;
    return protocols !== undefined ? new WebSocket(settings.url, protocols) : new WebSocket(settings.url);
  }
  const { default: NodeWebSocket } = await import('ws');
  const socket = new NodeWebSocket(settings.url, {
    perMessageDeflate: false,
    // Each reply frame is handled in a task of its own, as a browser's WebSocket does, instead of
    // every frame of one socket read in one go. The requests that a reply's awaiters make then
    // leave before the next reply is read, so the server works on them while this process reads
    // the rest: at 1 connection x 100 gets in flight, 28,266 -> 46,719 gets/s (bench/README.md).
    allowSynchronousEvents: false,
    maxPayload: settings.maxPayloadBytes,
    ...(settings.token !== undefined ? { headers: { Authorization: `Bearer ${settings.token}` } } : {}),
  });
  // A refused upgrade (401 without or with a wrong token, 403 for a foreign origin or host) is
  // reported as a KvError with the server's reason, so the client can stop instead of retrying.
  socket.on('unexpected-response', (_request, response) => {
    let body = '';
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => void (body.length < 1024 && (body += chunk)));
    response.once('close', () => {
      socket.emit('error', refusalError(response.statusCode ?? 0, body));
      socket.terminate();
    });
  });
  // `ws` types its event attributes with its own event classes; at run time they carry the same
  // fields (`data` a string for text frames, `code`/`reason`, `message`/`error`) as WebSocketLike.
  return socket as unknown as WebSocketLike;
}

/**
 * The error for an upgrade the server answered with `status` instead of switching protocols;
 * `body` is the server's JSON answer, whose `error` sentence is quoted.
 */
export function refusalError(status: number, body: string): KvError {
  let reason: unknown;
  try {
    reason = (JSON.parse(body) as { error?: unknown }).error;
  } catch {
    reason = undefined;
  }
  const why = typeof reason === 'string' ? `: ${reason}` : '';
  if (status === 401) return new KvError('UNAUTHORIZED', `the server refused the connection with HTTP 401${why}; pass the client a valid \`token\``, { data: { status } });
  if (status === 403) return new KvError('FORBIDDEN', `the server refused the connection with HTTP 403${why}`, { data: { status } });
  return new KvError('NOT_CONNECTED', `the server answered the upgrade with HTTP ${status}${why}`, { data: { status } });
}

/** True for an upgrade refusal that retrying cannot cure (HTTP 401 or 403). */
export function isRefusal(error: unknown): error is KvError {
  return error instanceof KvError && (error.code === 'UNAUTHORIZED' || error.code === 'FORBIDDEN');
}

/**
 * Closes `socket` without waiting for the peer: `ws`'s `terminate()` where it exists (a plain
 * `close()` waits up to 30 s for an unresponsive server's closing handshake), else `close()`.
 */
export function terminateSocket(socket: WebSocketLike): void {
  const terminate = (socket as { terminate?: () => void }).terminate;
  if (typeof terminate === 'function') terminate.call(socket);
  else socket.close();
}
