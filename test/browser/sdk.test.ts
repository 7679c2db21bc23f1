import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type KvClient } from '../../sdk/index.js';
import { bundle } from '../../server/inspector/bundle.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { collectProblems, httpOrigin, launchChromium } from './helpers.js';

/** The browser SDK as the page sees it, once {@link openSdkPage} has imported it. */
type BrowserSdk = typeof import('../../sdk/browser.js');
/** What the page keeps between evaluate calls. */
type PageGlobals = { kv: BrowserSdk; events: unknown[]; client?: import('../../sdk/index.js').KvClient };

let browser: Browser;
beforeAll(async () => {
  browser = await launchChromium();
});
afterAll(() => browser.close());

/** A page on the server's own origin (so its upgrades pass the origin check) that imported `/kvhub.js`. */
async function openSdkPage(server: TestServer): Promise<Page> {
  const page = await browser.newPage();
  // /healthz is a page of the server's origin without any script of its own.
  await page.goto(`${httpOrigin(server)}/healthz`);
  await page.addScriptTag({ type: 'module', content: "import * as kv from '/kvhub.js'; globalThis.kv = kv; globalThis.events = [];" });
  await page.waitForFunction(() => 'kv' in globalThis);
  return page;
}

describe('the browser SDK bundle', () => {
  it('holds no ws, no zod and no Node module', async () => {
    const { code, inputs } = await bundle('sdk');
    expect(inputs.filter((file) => /node_modules\/(ws|zod)\/|^node:/.test(file))).toEqual([]);
    expect(inputs).toContain('sdk/browser.ts');
    expect(code).not.toMatch(/\bfrom\s*["']node:|\brequire\(/);
  });
});

describe('the browser SDK against a server without tokens', () => {
  let server: TestServer;
  let node: KvClient;
  let page: Page;
  let problems: string[];
  beforeAll(async () => {
    server = await startTestServer();
    node = createClient({ url: server.url });
    page = await openSdkPage(server);
    problems = collectProblems(page);
  });
  afterAll(async () => {
    await page.close();
    await node.close();
    await server.close();
  });
  afterEach(() => expect(problems).toEqual([]));

  it('connects with the global WebSocket, sets and gets, and fails with a typed KvError', async () => {
    const result = await page.evaluate(async (url) => {
      const { kv } = globalThis as unknown as PageGlobals;
      const client = kv.createClient({ url });
      const hello = await client.waitForReady();
      const users = client.instance('web', { autoCreate: true }).namespace('users');
      const record = await users.set('ada', { name: 'Ada' });
      const value = await users.get('ada');
      const error = await client
        .instance('no-such-instance')
        .namespace('n')
        .set('k', 1)
        .then(
          () => undefined,
          (e: unknown) => ({ isKvError: e instanceof kv.KvError, code: (e as { code?: unknown }).code }),
        );
      await client.close();
      return { protocolVersion: hello.protocolVersion, version: record.version, value, error, state: client.state };
    }, server.url);
    expect(result).toEqual({
      protocolVersion: 1,
      version: 1,
      value: { name: 'Ada' },
      error: { isKvError: true, code: 'INSTANCE_NOT_FOUND' },
      state: 'closed',
    });
    // Written by the page, read by a Node client.
    expect(await node.instance('web').namespace('users').get('ada')).toEqual({ name: 'Ada' });
  });

  it('watches: a change made by a Node client arrives in the page', async () => {
    await node.instance('live', { autoCreate: true }).namespace('feed').set('first', 0);
    await page.evaluate(async (url) => {
      const g = globalThis as unknown as PageGlobals;
      g.client = g.kv.createClient({ url });
      const subscription = g.client.instance('live').namespace('feed').watch({
        onEvent: (event) => {
          g.events.push(event);
        },
      });
      await subscription.ready;
    }, server.url);
    await node.instance('live').namespace('feed').set('second', { n: 2 });
    await page.waitForFunction(() => (globalThis as unknown as PageGlobals).events.length > 0);
    const events = await page.evaluate(async () => {
      const g = globalThis as unknown as PageGlobals;
      await g.client?.close();
      return g.events;
    });
    expect(events).toEqual([expect.objectContaining({ kind: 'set', namespace: 'feed', key: 'second', record: expect.objectContaining({ value: { n: 2 } }) })]);
  });
});

describe('the browser SDK against a server with tokens', () => {
  let server: TestServer;
  let page: Page;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'browser-secret' }] });
    page = await openSdkPage(server);
  });
  afterAll(async () => {
    await page.close();
    await server.close();
  });

  it('can be imported by a page on another origin', async () => {
    const other = await startTestServer();
    try {
      // Another port is another origin: the module script is fetched with CORS.
      await page.addScriptTag({ type: 'module', content: `import * as kv from '${httpOrigin(other)}/kvhub.js'; globalThis.otherKv = kv;` });
      await page.waitForFunction(() => 'otherKv' in globalThis);
      expect(await page.evaluate(() => typeof (globalThis as unknown as { otherKv: BrowserSdk }).otherKv.createClient)).toBe('function');
    } finally {
      await other.close();
    }
  });

  it('connects with `token`, sent as the kvhub.bearer subprotocol', async () => {
    // Playwright shows no WebSocket handshake headers; the DevTools protocol does.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    const offered: unknown[] = [];
    cdp.on('Network.webSocketWillSendHandshakeRequest', ({ request }) => offered.push(request.headers['Sec-WebSocket-Protocol']));
    const value = await page.evaluate(async (url) => {
      const { kv } = globalThis as unknown as PageGlobals;
      const client = kv.createClient({ url, token: 'browser-secret' });
      const notes = client.instance('notes', { autoCreate: true }).namespace('n');
      await notes.set('k', [1, 2, 3]);
      const read = await notes.get('k');
      await client.close();
      return read;
    }, server.url);
    expect(value).toEqual([1, 2, 3]);
    expect(offered).toEqual(['kvhub.v1, kvhub.bearer.browser-secret']);
    await cdp.detach();
  });

  it('without a token, or with a wrong one, fails with UNAUTHORIZED instead of retrying', async () => {
    const outcomes = await page.evaluate(async (url) => {
      const { kv } = globalThis as unknown as PageGlobals;
      const attempt = async (token: string | undefined) => {
        const client = kv.createClient({ url, ...(token !== undefined ? { token } : {}) });
        const error = await client.waitForReady().then(
          () => undefined,
          (e: unknown) => ({ isKvError: e instanceof kv.KvError, code: (e as { code?: unknown }).code, message: String((e as Error).message) }),
        );
        // Closed right after the refusal: the client gave up instead of reconnecting.
        const outcome = { error, state: client.state };
        await client.close();
        return outcome;
      };
      return { none: await attempt(undefined), wrong: await attempt('not-the-token') };
    }, server.url);
    for (const outcome of [outcomes.none, outcomes.wrong]) {
      expect(outcome.error).toMatchObject({ isKvError: true, code: 'UNAUTHORIZED', message: expect.stringContaining('HTTP 401') });
      expect(outcome.state).toBe('closed');
    }
    expect(outcomes.none.error?.message).toContain('this server needs a token');
    expect(outcomes.wrong.error?.message).toContain('the token is not valid');
  });
});
