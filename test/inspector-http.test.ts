import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../server/inspector/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { httpOrigin } from './browser/helpers.js';

// The inspector's HTTP side, without a browser: what each route answers, and who may ask.
describe('the inspector routes on a server with tokens', () => {
  let server: TestServer;
  let origin: string;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'http-secret' }] });
    origin = httpOrigin(server);
  });
  afterAll(() => server.close());

  it.each([
    ['/', 'text/html; charset=utf-8', '<title>kvhub inspector</title>'],
    ['/inspector.js', 'text/javascript; charset=utf-8', 'from "./kvhub.js"'],
    ['/inspector.css', 'text/css; charset=utf-8', '.columns'],
    ['/favicon.svg', 'image/svg+xml', '<svg'],
    ['/kvhub.js', 'text/javascript; charset=utf-8', 'kvhub.bearer.'],
  ])('serves %s without a token, as %s, with the security headers', async (path, type, excerpt) => {
    const response = await fetch(`${origin}${path}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe(type);
    expect(response.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(response.headers.get('etag')).toMatch(/^"[\w-]+"$/);
    expect(await response.text()).toContain(excerpt);
  });

  it('lets pages on other origins load the SDK bundle, and only it', async () => {
    expect((await fetch(`${origin}/kvhub.js`)).headers.get('access-control-allow-origin')).toBe('*');
    expect((await fetch(`${origin}/`)).headers.get('access-control-allow-origin')).toBeNull();
    expect((await fetch(`${origin}/inspector.js`)).headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers 304 to a request that names the current ETag, and HEAD without a body', async () => {
    const first = await fetch(`${origin}/kvhub.js`);
    const etag = first.headers.get('etag')!;
    const again = await fetch(`${origin}/kvhub.js`, { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
    const listed = await fetch(`${origin}/kvhub.js`, { headers: { 'if-none-match': `"older", W/${etag}` } });
    expect(listed.status).toBe(304);
    const stale = await fetch(`${origin}/kvhub.js`, { headers: { 'if-none-match': '"something-else"' } });
    expect(stale.status).toBe(200);
    const head = await fetch(`${origin}/`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await head.text()).toBe('');
  });

  it('GET /auth: 204 for a valid token, 401 with the reason otherwise', async () => {
    const valid = await fetch(`${origin}/auth`, { headers: { authorization: 'Bearer http-secret' } });
    expect(valid.status).toBe(204);
    const none = await fetch(`${origin}/auth`);
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ error: 'this server needs a token' });
    const wrong = await fetch(`${origin}/auth`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: 'the token is not valid' });
  });

  it('leaves every other request to the token check: /metrics, and methods other than GET and HEAD on /', async () => {
    expect((await fetch(`${origin}/metrics`)).status).toBe(401);
    expect((await fetch(`${origin}/`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect((await fetch(`${origin}/`, { method: 'POST', body: '{}', headers: { authorization: 'Bearer http-secret' } })).status).toBe(404);
  });
});

describe('the inspector routes on a server without tokens', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server.close());

  it('GET /auth answers 204 with or without a token', async () => {
    expect((await fetch(`${httpOrigin(server)}/auth`)).status).toBe(204);
    expect((await fetch(`${httpOrigin(server)}/auth`, { headers: { authorization: 'Bearer anything' } })).status).toBe(204);
  });
});
