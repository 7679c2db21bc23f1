import type { IncomingMessage } from 'node:http';
import { isLoopbackHost } from '../loopback.js';
import { FULL_ACCESS, type Principal, type TokenSet } from './tokens.js';

/** The subprotocol the server selects; a browser offers it together with `kvhub.bearer.<token>`. */
export const SUBPROTOCOL = 'kvhub.v1';
const BEARER_SUBPROTOCOL = 'kvhub.bearer.';

/** Query parameters that look like a credential: an upgrade carrying one is refused. */
const CREDENTIAL_PARAMS = new Set(['token', 'access_token', 'accesstoken', 'auth', 'authorization', 'bearer', 'apikey', 'api_key']);

/** What the upgrade checks need to know about the server. */
export interface UpgradePolicy {
  tokens: TokenSet;
  /** True when the server is bound to a loopback address: then the Host check applies. */
  loopback: boolean;
  /** `--allow-origin` values, normalised by {@link normaliseOrigin}. */
  allowOrigins: ReadonlySet<string>;
  /** `--allow-host` values, lower case: a bare name allows it on any port, `name:port` that port only. */
  allowHosts: ReadonlySet<string>;
}

/** An upgrade let in, with what its connection may do. */
export interface Admitted {
  ok: true;
  principal: Principal;
}

/** An upgrade turned away before it happens, with the HTTP status to answer. */
export interface Refused {
  ok: false;
  status: 401 | 403;
  reason: string;
}

/**
 * Decides an upgrade request, in this order: the Host check (a loopback server only talks to
 * loopback names, against DNS rebinding), the Origin check, then the token. Nothing here
 * touches the socket.
 */
export function checkUpgrade(request: IncomingMessage, policy: UpgradePolicy): Admitted | Refused {
  const host = request.headers.host;
  if (policy.loopback && !hostAllowed(host, policy.allowHosts)) {
    return { ok: false, status: 403, reason: 'this server only answers requests addressed to a loopback name (see --allow-host)' };
  }
  const origin = request.headers.origin;
  if (origin !== undefined && !originAllowed(origin, host, policy.allowOrigins)) {
    return { ok: false, status: 403, reason: 'this origin is not allowed (see --allow-origin)' };
  }
  return authenticate(request, policy.tokens);
}

/** The principal of the token an upgrade presents, or a 401 refusal. */
export function authenticate(request: IncomingMessage, tokens: TokenSet): Admitted | Refused {
  if (!tokens.enabled) return { ok: true, principal: FULL_ACCESS };
  if (hasCredentialInQuery(request.url ?? '/')) {
    return { ok: false, status: 401, reason: 'a token in the query string is refused; send an Authorization header or the kvhub.bearer subprotocol' };
  }
  const presented = presentedToken(request);
  if (presented === 'conflict') return { ok: false, status: 401, reason: 'the Authorization header and the kvhub.bearer subprotocol name different tokens' };
  if (presented === undefined) return { ok: false, status: 401, reason: 'this server needs a token' };
  const principal = tokens.lookup(presented);
  return principal !== undefined ? { ok: true, principal } : { ok: false, status: 401, reason: 'the token is not valid' };
}

/**
 * The bearer token of a request: the `Authorization: Bearer` header, else the token of a
 * `kvhub.bearer.<token>` subprotocol offered together with `kvhub.v1`. 'conflict' when both
 * are given and differ.
 */
export function presentedToken(request: IncomingMessage): string | undefined | 'conflict' {
  const header = request.headers.authorization;
  const fromHeader = header === undefined ? undefined : (/^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)?.[1] ?? '');
  const offered = offeredSubprotocols(request);
  const bearers = offered.filter((p) => p.startsWith(BEARER_SUBPROTOCOL));
  const fromProtocol =
    offered.includes(SUBPROTOCOL) && bearers.length === 1 ? bearers[0]!.slice(BEARER_SUBPROTOCOL.length) : undefined;
  if (fromHeader !== undefined && fromProtocol !== undefined && fromHeader !== fromProtocol) return 'conflict';
  return fromHeader ?? fromProtocol;
}

function offeredSubprotocols(request: IncomingMessage): string[] {
  const header = request.headers['sec-websocket-protocol'];
  if (header === undefined) return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p !== '');
}

/** The subprotocol to answer with: `kvhub.v1` when offered, else none — never a bearer token. */
export function selectSubprotocol(offered: ReadonlySet<string>): string | false {
  return offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false;
}

function hasCredentialInQuery(url: string): boolean {
  const query = url.indexOf('?');
  if (query === -1) return false;
  const params = new URLSearchParams(url.slice(query + 1));
  for (const name of params.keys()) if (CREDENTIAL_PARAMS.has(name.toLowerCase())) return true;
  return false;
}

/** Splits a Host header into its lower-case name (IPv6 in brackets) and port; undefined when malformed. */
export function parseHost(host: string): { name: string; port: string | undefined } | undefined {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(host.trim());
  if (match === null) return undefined;
  return { name: match[1]!.toLowerCase(), port: match[2] };
}

/**
 * True when `host` (a Host header) names this machine — `localhost` or a loopback address such
 * as `127.0.0.1` or `[::1]`, with or without a port — or is named by `--allow-host`.
 * Host names other than `localhost` are refused because DNS may point them anywhere.
 */
export function hostAllowed(host: string | undefined, allowHosts: ReadonlySet<string>): boolean {
  if (host === undefined) return false;
  const parsed = parseHost(host);
  if (parsed === undefined) return false;
  if (allowHosts.has(parsed.name) || (parsed.port !== undefined && allowHosts.has(`${parsed.name}:${parsed.port}`))) return true;
  const bare = parsed.name.replace(/^\[(.*)\]$/, '$1');
  // An unbracketed IPv6 address is not a valid Host; isLoopbackHost would accept '::1'.
  if (bare.includes(':') && !parsed.name.startsWith('[')) return false;
  return isLoopbackHost(parsed.name);
}

/** An origin as compared: lower case, without a trailing slash. */
export function normaliseOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, '');
}

/**
 * True for a same-origin page (`http://` or `https://` followed by the request's own Host) and
 * for an origin on `--allow-origin`. `Origin: null` (sandboxed frames, files) is never same-origin.
 */
export function originAllowed(origin: string, host: string | undefined, allowOrigins: ReadonlySet<string>): boolean {
  const normal = normaliseOrigin(origin);
  if (allowOrigins.has(normal)) return true;
  if (host === undefined) return false;
  const self = host.trim().toLowerCase();
  return normal === `http://${self}` || normal === `https://${self}`;
}
