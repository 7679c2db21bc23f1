import type { IncomingMessage, ServerResponse } from 'node:http';
import { findAsset, loadAsset } from './assets.js';

/**
 * Only the server's own origin: the page's script, style, icon and WebSocket (CSP 3 lets 'self'
 * match ws:// and wss:// on the same host). No inline code, no framing (the page can delete data).
 */
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

/**
 * Answers GET and HEAD for the web inspector's files (`/`, `/inspector.js`, `/kvhub.js`, ...) and
 * returns true; returns false for any other request, which the caller answers. The files hold no
 * data, so no token is asked for: the page gets the data over the WebSocket, with the token.
 */
export function serveInspector(request: IncomingMessage, response: ServerResponse, path: string): boolean {
  if (request.method !== 'GET' && request.method !== 'HEAD') return false;
  const spec = findAsset(path);
  if (spec === undefined) return false;
  loadAsset(spec).then(
    (asset) => {
      // The URLs carry no version: let the browser keep a copy but ask each time whether it changed.
      const headers = {
        ...SECURITY_HEADERS,
        'content-type': asset.contentType,
        etag: asset.etag,
        'cache-control': 'no-cache',
        // Browsers fetch module scripts with CORS: pages on other origins may import the SDK (it holds no data).
        ...(spec.crossOrigin === true ? { 'access-control-allow-origin': '*' } : {}),
      };
      if (namesEtag(request.headers['if-none-match'], asset.etag)) return void response.writeHead(304, headers).end();
      response.writeHead(200, { ...headers, 'content-length': asset.body.length }).end(asset.body);
    },
    (error: Error) => {
      response.writeHead(503, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(`${error.message}\n`);
    },
  );
  return true;
}

/** True when an If-None-Match header (a list of tags, weak ones included, or `*`) names `etag`. */
function namesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((tag) => {
    const trimmed = tag.trim();
    return trimmed === '*' || trimmed === etag || trimmed === `W/${etag}`;
  });
}
