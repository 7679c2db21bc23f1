import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type WebSocketConstructor } from '../sdk/index.js';
import { connectRaw, rid } from './helpers/raw-client.js';
import { startCli, type CliProcess } from './helpers/cli.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { bearer } from './helpers/upgrade.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kvhub-auth-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the SDK', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'sdk-token' }, { token: 'scoped', instances: ['mine'] }] });
  });
  afterAll(() => server.close());

  it('connects with `token` (an Authorization header in Node)', async () => {
    const client = createClient({ url: server.url, token: 'sdk-token' });
    await client.waitForReady();
    const notes = client.instance('notes', { autoCreate: true }).namespace('n');
    await notes.set('k', 1);
    expect(await notes.get('k')).toBe(1);
    await client.close();
  });

  it('without a token fails at once with UNAUTHORIZED instead of retrying, even with reconnect on', async () => {
    const client = createClient({ url: server.url, requestTimeoutMs: 10_000 });
    const started = Date.now();
    await expect(client.waitForReady()).rejects.toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringMatching(/HTTP 401.*token/) });
    await expect(client.kvStore.get('notes', 'n', 'k')).rejects.toMatchObject({ code: 'NOT_CONNECTED', message: expect.stringMatching(/401/) });
    expect(client.state).toBe('closed');
    expect(Date.now() - started).toBeLessThan(5_000);
    await client.close();
    const wrong = createClient({ url: server.url, token: 'nope' });
    await expect(wrong.waitForReady()).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await wrong.close();
  });

  it('gets FORBIDDEN replies for instances outside its token’s scope', async () => {
    const client = createClient({ url: server.url, token: 'scoped' });
    await expect(client.instance('theirs').namespace('n').get('k')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await client.instance('mine', { autoCreate: true }).namespace('n').set('k', 1);
    await client.close();
  });

  it('with a browser-style WebSocket sends the two subprotocols, and the server selects kvhub.v1', async () => {
    const opened: WebSocket[] = [];
    const headers: (string | undefined)[] = [];
    // The browser signature: (url, protocols), no way to set headers.
    const BrowserLike = class extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        opened.push(this);
        this.on('upgrade', (response) => headers.push(response.headers['sec-websocket-protocol']));
      }
    } as unknown as WebSocketConstructor;
    const client = createClient({ url: server.url, token: 'sdk-token', WebSocket: BrowserLike });
    await client.waitForReady();
    expect(opened[0]?.protocol).toBe('kvhub.v1');
    expect(headers).toEqual(['kvhub.v1']);
    await client.close();
  });
});

describe('the command line', () => {
  const running: CliProcess[] = [];
  // The child inherits the environment at spawn time, so KVHUB_TOKEN is set only around the spawn.
  const cli = (args: string[], env: { KVHUB_TOKEN?: string } = {}) => {
    const saved = process.env['KVHUB_TOKEN'];
    if (env.KVHUB_TOKEN !== undefined) process.env['KVHUB_TOKEN'] = env.KVHUB_TOKEN;
    else delete process.env['KVHUB_TOKEN'];
    try {
      const proc = startCli(args);
      running.push(proc);
      return proc;
    } finally {
      if (saved !== undefined) process.env['KVHUB_TOKEN'] = saved;
      else delete process.env['KVHUB_TOKEN'];
    }
  };
  afterAll(async () => {
    for (const proc of running) if (proc.child.exitCode === null) proc.child.kill('SIGTERM');
    await Promise.all(running.map((proc) => proc.exited()));
  });

  it('serves tokens from --token-file and KVHUB_TOKEN', async () => {
    const file = join(dir, 'tokens.txt');
    writeFileSync(file, '# kvhub tokens\nfile-token\nreader instances=a readonly\n');
    const proc = cli(['--port', '0', '--db', ':memory:', '--token-file', file], { KVHUB_TOKEN: 'env-token' });
    const url = await proc.ready();
    expect(proc.stdout).toMatch(/3 tokens/);
    for (const token of ['file-token', 'env-token']) {
      const client = await connectRaw(url, bearer(token));
      expect(await client.request({ type: 'kvStore.ping', requestId: rid() })).toMatchObject({ success: true });
      await client.close();
    }
    const reader = await connectRaw(url, bearer('reader'));
    expect(await reader.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'a', namespace: 'n', key: 'k', value: 1 } })).toMatchObject({ code: 'FORBIDDEN' });
    await reader.close();
  });

  it('refuses bad security settings at start with a plain sentence', async () => {
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, 'ok-token\nnot/ok\n');
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '# nothing yet\n\n');
    const memory = ['--port', '0', '--db', ':memory:'];
    // Started together: each CLI takes a second or two to boot.
    const cases: [CliProcess, number, RegExp][] = [
      [cli([...memory, '--token-file', bad]), 2, /^kvhub cannot start: the token on line 2 of .*bad\.txt uses characters other than/],
      [cli([...memory, '--token-file', empty]), 2, /holds no token/],
      [cli([...memory, '--token-file', join(dir, 'missing.txt')]), 1, /cannot read --token-file .* does not exist/],
      [cli(memory, { KVHUB_TOKEN: 'bad token' }), 2, /KVHUB_TOKEN uses characters other than/],
      [cli([...memory, '--host', '0.0.0.0']), 1, /refusing to listen on 0\.0\.0\.0: .*no token is configured; set --token-file or KVHUB_TOKEN/],
      [cli([...memory, '--tls-cert', join(dir, 'cert.pem')]), 2, /--tls-cert and --tls-key go together/],
    ];
    for (const [proc, code, message] of cases) {
      expect(await proc.exited()).toBe(code);
      expect(proc.stderr).toMatch(message);
      expect(proc.stderr).not.toMatch(/\n\s+at /);
      expect(proc.stderr).not.toContain('not/ok');
    }
  });
});

describe('TLS', () => {
  let cert: string;
  let key: string;
  beforeAll(() => {
    const keyFile = join(dir, 'key.pem');
    const certFile = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', keyFile, '-out', certFile], {
      stdio: 'ignore',
    });
    cert = readFileSync(certFile, 'utf8');
    key = readFileSync(keyFile, 'utf8');
  });

  it('serves wss:// with --tls-cert/--tls-key, tokens and /healthz included', async () => {
    const server = await startTestServer({ tls: { cert, key }, tokens: [{ token: 'tls-token' }] });
    try {
      expect(server.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
      const client = await connectRaw(server.url, { ...bearer('tls-token'), rejectUnauthorized: false });
      expect(await client.request({ type: 'kvStore.hello', requestId: rid() })).toMatchObject({ success: true });
      await client.close();
      const health = await new Promise<number>((resolve, reject) => {
        httpsRequest(`${server.url.replace(/^wss/, 'https')}/healthz`, { rejectUnauthorized: false }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      expect(health).toBe(200);
      const sdk = createClient({ url: server.url, token: 'tls-token', WebSocket: insecureWs() });
      await sdk.waitForReady();
      await sdk.close();
    } finally {
      await server.close();
    }
  });
});

/** A `ws` constructor that trusts the self-signed test certificate and still sends the token as subprotocols. */
function insecureWs(): WebSocketConstructor {
  return class extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { rejectUnauthorized: false });
    }
  } as unknown as WebSocketConstructor;
}
