/**
 * kvhub's SDK for browsers: the same API as the `kvhub` entry, with `createClient()` using the
 * browser's own `WebSocket`. Nothing here loads a Node module; the ESM bundle built from this
 * file (`dist/browser/kvhub.js`, served by the server at `/kvhub.js`) contains neither `ws` nor zod.
 *
 * @example
 * import { createClient } from 'http://127.0.0.1:7420/kvhub.js';
 * const client = createClient({ url: 'ws://127.0.0.1:7420', token });
 * await client.instance('app', { autoCreate: true }).namespace('users').set('u1', { name: 'Ada' });
 */
import { withRefusalCheck, type FetchLike } from './browser-socket.js';
import { createClient as createNodeClient, type ClientOptions, type KvClient } from './client.js';
import type { WebSocketConstructor } from './transport.js';

export * from './index.js';

/**
 * Creates a client that talks through the browser's `WebSocket` (or the `WebSocket` option), with
 * the token sent as the `kvhub.bearer.<token>` subprotocol. A refused token rejects
 * `waitForReady()` with UNAUTHORIZED, as in Node, when the server is on the page's own origin
 * (the browser keeps an upgrade's HTTP status from scripts; the SDK asks the server's
 * `/auth` instead, which only same-origin pages may read). Other options as in the Node SDK.
 *
 * @throws TypeError when there is no global `WebSocket` and none is given.
 */
export function createClient(options: ClientOptions = {}): KvClient {
  const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocket === undefined) throw new TypeError('this environment has no global WebSocket; pass one as the `WebSocket` option');
  return createNodeClient({ ...options, WebSocket: withRefusalCheck(WebSocket, browserFetch) });
}

/** `fetch` called on the global object: browsers throw "Illegal invocation" for a detached `fetch`. */
const browserFetch: FetchLike = (url, init) => globalThis.fetch(url, init);
