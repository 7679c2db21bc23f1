import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkBindAllowed, createServer, NonLoopbackHostError } from '../server/index.js';
import { parseTokenFile, TokenConfigError, TokenSet } from '../server/auth/index.js';
import { connectRaw, rid } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { bearer, tryUpgrade } from './helpers/upgrade.js';

const TOKEN = 'good-Token_1.~';

function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}

describe('token file format', () => {
  it('reads full, scoped, read-only and every-instance tokens, skipping comments and blank lines', () => {
    const grants = parseTokenFile(
      ['# tokens', '', '  full-1  ', 'scoped instances=a,b # a comment', 'ro instances=a readonly', 'all instances=* readonly', '\t'].join('\n'),
    );
    expect(grants).toEqual([
      { token: 'full-1' },
      { token: 'scoped', instances: ['a', 'b'], readonly: false },
      { token: 'ro', instances: ['a'], readonly: true },
      { token: 'all', instances: '*', readonly: true },
    ]);
  });

  it.each([
    ['forbidden characters', 'tok/en', /characters other than/],
    ['a space inside a token', 'to ken', /is not 'TOKEN'/],
    ['an unknown flag', 'tok instances=a writeonly', /is not 'TOKEN'/],
    ['readonly without instances', 'tok readonly', /is not 'TOKEN'/],
    ['an empty instance id', 'tok instances=a,,b', /empty instance id/],
    ['a repeated token', 'tok\ntok instances=a', /line 2 .* repeats the token of line 1/],
    ['non-ASCII', 'tökén', /characters other than/],
  ])('refuses %s, naming the line and never the token', (_name, text, message) => {
    expect(() => parseTokenFile(text, 'tokens.txt')).toThrow(message);
    try {
      parseTokenFile(text, 'tokens.txt');
    } catch (error) {
      expect(error).toBeInstanceOf(TokenConfigError);
      expect((error as Error).message).not.toContain('tök');
    }
  });

  it('reads the README example as written', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = /```sh\n(# tokens\.txt[\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const grants = parseTokenFile(example!);
    expect(grants.map((grant) => [grant.instances ?? 'full', grant.readonly ?? false])).toEqual([
      ['full', false],
      [['app', 'jobs'], false],
      [['app'], true],
      ['*', true],
    ]);
  });

  it('looks tokens up whatever their length, and only exact matches', () => {
    const set = new TokenSet([{ token: 'abc' }, { token: 'scoped', instances: ['x'] }]);
    expect(set.lookup('abc')?.instances).toBeUndefined();
    expect([...(set.lookup('scoped')?.instances ?? [])]).toEqual(['x']);
    for (const guess of ['', 'ab', 'abcd', 'ABC', 'abc ', 'x'.repeat(10_000)]) expect(set.lookup(guess)).toBeUndefined();
  });
});

describe('binding', () => {
  it('refuses a non-loopback host without a token and allows it with one', async () => {
    expect(() => checkBindAllowed('0.0.0.0', false)).toThrow(NonLoopbackHostError);
    expect(() => checkBindAllowed('192.168.1.10', false)).toThrow(/no token is configured/);
    expect(() => checkBindAllowed('0.0.0.0', true)).not.toThrow();
    expect(() => checkBindAllowed('::', true)).not.toThrow();
    expect(() => checkBindAllowed('127.0.0.1', false)).not.toThrow();
    await expect(createServer({ host: '0.0.0.0', port: 0 })).rejects.toBeInstanceOf(NonLoopbackHostError);
  });

  it('refuses a TLS key that cannot be used, before opening the database', async () => {
    await expect(createServer({ port: 0, tls: { cert: 'not a certificate', key: 'not a key' } })).rejects.toThrow();
  });

  it('refuses a token with forbidden characters when embedded', async () => {
    await expect(createServer({ port: 0, tokens: [{ token: 'bad token' }] })).rejects.toBeInstanceOf(TokenConfigError);
  });
});

describe('upgrades with a token configured', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: TOKEN }] });
  });
  afterAll(() => server.close());

  it('refuses an upgrade without a token or with a wrong one: HTTP 401 before the upgrade', async () => {
    for (const options of [{}, bearer('wrong'), bearer(`${TOKEN}x`), { headers: { Authorization: `Basic ${TOKEN}` } }, bearer('')]) {
      const outcome = await tryUpgrade(server.url, options);
      expect(outcome).toMatchObject({ opened: false, status: 401 });
    }
    expect(await tryUpgrade(server.url, { protocols: ['kvhub.v1', 'kvhub.bearer.wrong'] })).toMatchObject({ opened: false, status: 401 });
    // The bearer subprotocol counts only when offered together with kvhub.v1.
    expect(await tryUpgrade(server.url, { protocols: [`kvhub.bearer.${TOKEN}`] })).toMatchObject({ opened: false, status: 401 });
  });

  it('accepts the Authorization header', async () => {
    const client = await connectRaw(server.url, bearer(TOKEN));
    const reply = await client.request({ type: 'kvStore.ping', requestId: rid() });
    expect(reply).toMatchObject({ success: true, data: { pong: true } });
    await client.close();
    expect(await tryUpgrade(server.url, { headers: { authorization: `bearer  ${TOKEN}` } })).toMatchObject({ opened: true });
  });

  it('accepts the two subprotocols and selects kvhub.v1, never echoing the token', async () => {
    expect(await tryUpgrade(server.url, { protocols: ['kvhub.v1', `kvhub.bearer.${TOKEN}`] })).toEqual({ opened: true, protocol: 'kvhub.v1' });
    // Even with the bearer offered first, which ws would select by default.
    expect(await tryUpgrade(server.url, { protocols: [`kvhub.bearer.${TOKEN}`, 'kvhub.v1'] })).toEqual({ opened: true, protocol: 'kvhub.v1' });
  });

  it('refuses header and subprotocol naming different tokens', async () => {
    const outcome = await tryUpgrade(server.url, { ...bearer(TOKEN), protocols: ['kvhub.v1', 'kvhub.bearer.other'] });
    expect(outcome).toMatchObject({ opened: false, status: 401 });
  });

  it('refuses a token in the query string, even alongside a valid header', async () => {
    expect(await tryUpgrade(`${server.url}/?token=${TOKEN}`)).toMatchObject({ opened: false, status: 401 });
    expect(await tryUpgrade(`${server.url}/?access_token=${TOKEN}`)).toMatchObject({ opened: false, status: 401 });
    const both = await tryUpgrade(`${server.url}/kv?Token=${TOKEN}`, bearer(TOKEN));
    expect(both).toMatchObject({ opened: false, status: 401 });
    expect(both.opened === false && both.body).toMatch(/query string/);
    // Other query parameters are fine.
    expect(await tryUpgrade(`${server.url}/kv?client=worker-1`, bearer(TOKEN))).toMatchObject({ opened: true });
  });

  it('keeps /healthz open and asks for the token elsewhere', async () => {
    const http = server.url.replace(/^ws/, 'http');
    expect(await httpGet(`${http}/healthz`)).toEqual({ status: 200, body: '{"status":"ok"}' });
    expect((await httpGet(`${http}/metrics`)).status).toBe(401);
    expect((await httpGet(`${http}/metrics`, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await httpGet(`${http}/elsewhere`)).status).toBe(401);
    expect((await httpGet(`${http}/elsewhere`, { authorization: `Bearer ${TOKEN}` })).status).toBe(404);
  });
});

describe('origins and hosts', () => {
  let open: TestServer;
  let guarded: TestServer;
  beforeAll(async () => {
    open = await startTestServer();
    guarded = await startTestServer({ allowOrigins: ['https://App.example/'], allowHosts: ['kv.internal', 'Other.Internal:1'] });
  });
  afterAll(async () => {
    await open.close();
    await guarded.close();
  });

  it('accepts no Origin and a same-origin page; refuses a foreign origin with 403, on loopback too', async () => {
    const self = `127.0.0.1:${open.port}`;
    expect(await tryUpgrade(open.url)).toMatchObject({ opened: true });
    expect(await tryUpgrade(open.url, { origin: `http://${self}` })).toMatchObject({ opened: true });
    expect(await tryUpgrade(open.url, { origin: `https://${self}` })).toMatchObject({ opened: true });
    for (const origin of ['http://evil.example', `http://${self}.evil.example`, 'null', `ftp://${self}`, `http://localhost:${open.port}`, 'http://127.0.0.1']) {
      expect(await tryUpgrade(open.url, { origin }), origin).toMatchObject({ opened: false, status: 403 });
    }
  });

  it('accepts an origin on --allow-origin', async () => {
    expect(await tryUpgrade(guarded.url, { origin: 'https://app.example' })).toMatchObject({ opened: true });
    expect(await tryUpgrade(guarded.url, { origin: 'http://app.example' })).toMatchObject({ opened: false, status: 403 });
  });

  it('refuses a Host that is not a loopback name (DNS rebinding) with 403', async () => {
    for (const host of ['evil.example', `evil.example:${open.port}`, `localhost.evil.example:${open.port}`, '::1', `127.0.0.1.nip.io:${open.port}`]) {
      expect(await tryUpgrade(open.url, { headers: { Host: host } }), host).toMatchObject({ opened: false, status: 403 });
    }
    for (const host of [`localhost:${open.port}`, 'localhost', `LocalHost:${open.port}`, `127.0.0.1:${open.port}`, '127.0.0.1', `[::1]:${open.port}`, '[::1]']) {
      expect(await tryUpgrade(open.url, { headers: { Host: host } }), host).toMatchObject({ opened: true });
    }
  });

  it('accepts a Host named by --allow-host (a bare name on any port, name:port on that port)', async () => {
    expect(await tryUpgrade(guarded.url, { headers: { Host: `kv.internal:${guarded.port}` } })).toMatchObject({ opened: true });
    expect(await tryUpgrade(guarded.url, { headers: { Host: 'KV.internal' } })).toMatchObject({ opened: true });
    expect(await tryUpgrade(guarded.url, { headers: { Host: 'other.internal:1' } })).toMatchObject({ opened: true });
    expect(await tryUpgrade(guarded.url, { headers: { Host: 'other.internal:2' } })).toMatchObject({ opened: false, status: 403 });
    expect(await tryUpgrade(guarded.url, { headers: { Host: 'evil.example' } })).toMatchObject({ opened: false, status: 403 });
    // Same-origin is judged against the Host the request carries.
    const viaAllowed = { headers: { Host: `kv.internal:${guarded.port}` }, origin: `http://kv.internal:${guarded.port}` };
    expect(await tryUpgrade(guarded.url, viaAllowed)).toMatchObject({ opened: true });
  });
});
