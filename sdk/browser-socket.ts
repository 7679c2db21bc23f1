import type { KvError } from './errors.js';
import { BEARER_SUBPROTOCOL_PREFIX, refusalError, type WebSocketConstructor, type WebSocketLike } from './transport.js';

/**
 * The server's credential check over plain HTTP: `204` when the request's `Authorization: Bearer`
 * token (or none, on a server without tokens) would be let in, `401` with the reason otherwise.
 */
export const AUTH_CHECK_PATH = '/auth';

/** How long the credential check may take; past it the close is reported as an ordinary drop. */
const CHECK_TIMEOUT_MS = 5000;

/** The part of `fetch` the check uses, so tests and other runtimes can pass their own. */
export type FetchLike = (url: string, init: { headers: Record<string, string>; signal: AbortSignal; cache: 'no-store' }) => Promise<{
  status: number;
  text(): Promise<string>;
}>;

/**
 * Wraps a browser `WebSocket` constructor so that a refused upgrade is reported the way the `ws`
 * package reports it: an `error` event carrying the UNAUTHORIZED (or FORBIDDEN) `KvError`, then
 * the `close` event. The client then stops instead of retrying forever with a token that cannot
 * work.
 *
 * A browser hides why an upgrade failed: a refused token and a server that is down both end in
 * close code 1006. So when a socket closes before it ever opened, the wrapper asks the server
 * {@link AUTH_CHECK_PATH} with the same token (taken from the `kvhub.bearer.` subprotocol) before
 * passing the close on. Where that request cannot be made — the server is down, or it is on
 * another origin and the browser withholds the answer — the close goes on as an ordinary drop.
 */
export function withRefusalCheck(WebSocket: WebSocketConstructor, fetchLike: FetchLike): WebSocketConstructor {
  return class RefusalCheckedSocket implements WebSocketLike {
    onopen: WebSocketLike['onopen'] = null;
    onmessage: WebSocketLike['onmessage'] = null;
    onclose: WebSocketLike['onclose'] = null;
    onerror: WebSocketLike['onerror'] = null;
    private readonly inner: WebSocketLike;

    constructor(url: string, protocols?: string | string[]) {
      const inner = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
      this.inner = inner;
      let opened = false;
      inner.onopen = (event) => {
        opened = true;
        this.onopen?.(event);
      };
      inner.onmessage = (event) => this.onmessage?.(event);
      inner.onerror = (event) => this.onerror?.(event);
      inner.onclose = (event) => {
        if (opened) return void this.onclose?.(event);
        void checkCredentials(url, bearerToken(protocols), fetchLike).then((refusal) => {
          if (refusal !== undefined) this.onerror?.({ message: refusal.message, error: refusal });
          this.onclose?.(event);
        });
      };
    }

    get readyState(): number {
      return this.inner.readyState;
    }

    send(data: string): void {
      this.inner.send(data);
    }

    close(code?: number, reason?: string): void {
      this.inner.close(code, reason);
    }
  };
}

/** The token a `kvhub.bearer.<token>` subprotocol carries, if one is offered. */
function bearerToken(protocols: string | string[] | undefined): string | undefined {
  const offered = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
  return offered.find((p) => p.startsWith(BEARER_SUBPROTOCOL_PREFIX))?.slice(BEARER_SUBPROTOCOL_PREFIX.length);
}

/** The refusal the server's credential check answers for `token`, or undefined when it lets it in or cannot be asked. */
async function checkCredentials(socketUrl: string, token: string | undefined, fetchLike: FetchLike): Promise<KvError | undefined> {
  try {
    // Resolved relative to the socket's URL, so a server behind a proxy under /some/path/ is asked at /some/path/auth.
    const url = new URL(`.${AUTH_CHECK_PATH}`, socketUrl);
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    const headers: Record<string, string> = token !== undefined ? { authorization: `Bearer ${token}` } : {};
    const response = await fetchLike(url.href, { headers, signal: AbortSignal.timeout(CHECK_TIMEOUT_MS), cache: 'no-store' });
    if (response.status !== 401 && response.status !== 403) return undefined;
    return refusalError(response.status, await response.text());
  } catch {
    return undefined;
  }
}
