import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type KvClient } from '../../sdk/index.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { collectProblems, collectSentTypes, httpOrigin, launchChromium } from './helpers.js';

let browser: Browser;
beforeAll(async () => {
  browser = await launchChromium();
});
afterAll(() => browser.close());

const poll = { timeout: 10_000, interval: 50 };

/** The names a list pane shows, in order. */
function listed(page: Page, list: 'instances' | 'namespaces' | 'keys'): Promise<string[]> {
  return page.locator(`#${list} button`).allTextContents();
}

/** Clicks the entry `name` of a list pane. */
function pick(page: Page, list: 'instances' | 'namespaces' | 'keys', name: string): Promise<void> {
  return page.locator(`#${list} button[data-name="${name}"]`).click();
}

/** The editor's value, parsed. */
async function shownValue(page: Page): Promise<unknown> {
  return JSON.parse(await page.inputValue('#value'));
}

describe('the web inspector at GET /', () => {
  let server: TestServer;
  /** The client that wrote the data before the page opened. */
  let writer: KvClient;
  /** Another client, changing data while the page watches. */
  let third: KvClient;
  let page: Page;
  let problems: string[];
  let sent: string[];

  beforeAll(async () => {
    server = await startTestServer();
    writer = createClient({ url: server.url });
    third = createClient({ url: server.url });
    const shop = writer.instance('shop', { autoCreate: true });
    await shop.namespace('carts').set('cart:1', { items: ['apple', 'pear'] }, { ttlMs: 600_000 });
    await shop.namespace('carts').set('cart:2', { items: [] });
    await shop.namespace('carts').set('order:9', { total: 12.5 });
    await shop.namespace('users').set('ada', { name: 'Ada' });
    await writer.instance('other', { autoCreate: true }).namespace('n').set('k', 1);
    page = await browser.newPage();
    problems = collectProblems(page);
    sent = collectSentTypes(page);
    await page.goto(`${httpOrigin(server)}/`);
  });
  afterAll(async () => {
    await page.close();
    await writer.close();
    await third.close();
    await server.close();
  });

  it('lists instances, then namespaces, then keys, and shows a key written by another client', async () => {
    await expect.poll(() => listed(page, 'instances'), poll).toEqual(['other', 'shop']);
    await expect.poll(() => page.textContent('#connection'), poll).toMatch(/^connected · kvhub \d+\.\d+\.\d+/);
    await pick(page, 'instances', 'shop');
    await expect.poll(() => listed(page, 'namespaces'), poll).toEqual(['carts', 'users']);
    await pick(page, 'namespaces', 'carts');
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:1', 'cart:2', 'order:9']);
    await pick(page, 'keys', 'cart:1');
    await expect.poll(() => page.inputValue('#value'), poll).not.toBe('');
    expect(await shownValue(page)).toEqual({ items: ['apple', 'pear'] });
    expect(await page.textContent('#meta-version')).toBe('1');
    expect(await page.textContent('#meta-expires')).toMatch(/\(in (9|10) min \d+ s\)$/);
    const record = await writer.instance('shop').namespace('carts').getRecord('cart:1');
    expect(await page.getAttribute('#meta-created', 'title')).toBe(record?.createdAt);
    expect(await page.getAttribute('#meta-updated', 'title')).toBe(record?.updatedAt);
  });

  it('searches keys by prefix', async () => {
    await page.fill('#prefix', 'cart:');
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:1', 'cart:2']);
    await page.fill('#prefix', 'nothing-starts-like-this');
    await expect.poll(() => page.locator('#keys .empty').textContent(), poll).toBe('No keys with this prefix');
    await page.fill('#prefix', '');
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:1', 'cart:2', 'order:9']);
  });

  it('refuses text that is not JSON in the page, sending nothing', async () => {
    // cart:1 is on screen already, so that seeing it there does not tell that the page has loaded it
    // again: a load that landed after the fill below would put its value back in the editor, and the
    // save would write it. Another key first, then cart:1, each waited for by its value.
    await pick(page, 'keys', 'order:9');
    await expect.poll(() => shownValue(page), poll).toEqual({ total: 12.5 });
    await pick(page, 'keys', 'cart:1');
    await expect.poll(() => shownValue(page), poll).toEqual({ items: ['apple', 'pear'] });
    expect(await page.textContent('#meta-version')).toBe('1');
    const before = sent.length;
    await page.fill('#value', '{"items": ["apple", ');
    await page.click('#save');
    await expect.poll(() => page.textContent('#editor-message'), poll).toMatch(/^Not valid JSON, nothing was saved: /);
    expect(sent.slice(before)).not.toContain('kvStore.set');
    expect(await writer.instance('shop').namespace('carts').getRecord('cart:1')).toMatchObject({ version: 1, value: { items: ['apple', 'pear'] } });
  });

  it('saves an edit, keeping the key’s expiry', async () => {
    const before = sent.length;
    await page.fill('#value', '{"items": ["apple", "pear", "plum"]}');
    await page.click('#save');
    await expect.poll(() => page.textContent('#editor-message'), poll).toBe('Saved: version 2.');
    expect(sent.slice(before)).toContain('kvStore.set');
    const record = await writer.instance('shop').namespace('carts').getRecord('cart:1');
    expect(record).toMatchObject({ version: 2, value: { items: ['apple', 'pear', 'plum'] } });
    expect(record?.expiresAt).not.toBeNull();
    expect(await page.textContent('#meta-version')).toBe('2');
  });

  it('shows a third client’s changes live: the open value, new and deleted keys, new namespaces', async () => {
    const carts = third.instance('shop').namespace('carts');
    await carts.set('cart:1', { items: ['kiwi'] });
    await expect.poll(() => shownValue(page), poll).toEqual({ items: ['kiwi'] });
    expect(await page.textContent('#meta-version')).toBe('3');
    expect(await page.textContent('#editor-message')).toBe('Updated by another client: now version 3.');
    // Set without ttlMs: the third client's write cleared the expiry.
    expect(await page.textContent('#meta-expires')).toBe('never');

    await carts.set('cart:0', { items: ['fig'] });
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:0', 'cart:1', 'cart:2', 'order:9']);
    await carts.delete('cart:2');
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:0', 'cart:1', 'order:9']);
    await third.instance('shop').namespace('invoices').set('i1', 100);
    await expect.poll(() => listed(page, 'namespaces'), poll).toEqual(['carts', 'invoices', 'users']);
  });

  it('keeps unsaved edits when another client writes, and refuses to save over that write', async () => {
    await page.fill('#value', '{"items": ["mine"]}');
    await third.instance('shop').namespace('carts').set('cart:1', { items: ['theirs'] });
    await expect.poll(() => page.textContent('#editor-message'), poll).toMatch(/^Another client saved version 4 meanwhile/);
    expect(await shownValue(page)).toEqual({ items: ['mine'] });
    await page.click('#save');
    await expect.poll(() => page.textContent('#editor-message'), poll).toMatch(/^Another client changed this key since it was loaded; nothing was saved/);
    expect(await third.instance('shop').namespace('carts').get('cart:1')).toEqual({ items: ['theirs'] });
    await page.click('#revert');
    expect(await shownValue(page)).toEqual({ items: ['theirs'] });
  });

  it('creates a key, and deletes one after a second click', async () => {
    await page.click('#new-key');
    await page.fill('#new-key-name', 'cart:3');
    await page.fill('#value', '{"items": ["new"]}');
    await page.fill('#ttl', '120');
    await page.click('#save');
    await expect.poll(() => page.textContent('#editor-message'), poll).toBe('Saved: version 1.');
    const created = await third.instance('shop').namespace('carts').getRecord('cart:3');
    expect(created?.value).toEqual({ items: ['new'] });
    expect(Date.parse(created!.expiresAt!) - Date.parse(created!.updatedAt)).toBe(120_000);
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:0', 'cart:1', 'cart:3', 'order:9']);

    await page.click('#delete');
    expect(await third.instance('shop').namespace('carts').has('cart:3')).toBe(true);
    await page.click('#delete');
    await expect.poll(() => third.instance('shop').namespace('carts').has('cart:3'), poll).toBe(false);
    await expect.poll(() => listed(page, 'keys'), poll).toEqual(['cart:0', 'cart:1', 'order:9']);
    expect(await page.isHidden('#editor')).toBe(true);
  });

  it('tells when the key on screen is deleted by another client', async () => {
    await pick(page, 'keys', 'order:9');
    await expect.poll(() => shownValue(page), poll).toEqual({ total: 12.5 });
    await third.instance('shop').namespace('carts').delete('order:9');
    await expect.poll(() => page.textContent('#notice'), poll).toBe('Key order:9 was deleted by another client.');
    expect(await page.isHidden('#editor')).toBe(true);
    expect(await listed(page, 'keys')).toEqual(['cart:0', 'cart:1']);
    await third.instance('shop').namespace('invoices').clear();
    await expect.poll(() => listed(page, 'namespaces'), poll).toEqual(['carts', 'users']);
  });

  it('ran without an uncaught error, a console error or a Content-Security-Policy violation', () => {
    expect(problems).toEqual([]);
  });
});

describe('the web inspector on a server with tokens', () => {
  let server: TestServer;
  let page: Page;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'inspector-secret' }] });
    const writer = createClient({ url: server.url, token: 'inspector-secret' });
    await writer.instance('vault', { autoCreate: true }).namespace('n').set('k', 'v');
    await writer.close();
    page = await browser.newPage();
  });
  afterAll(async () => {
    await page.close();
    await server.close();
  });

  it('asks for the token, refuses a wrong one, and connects with the right one', async () => {
    await page.goto(`${httpOrigin(server)}/`);
    await page.locator('#token-form').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await page.isHidden('#app')).toBe(true);
    expect(await page.textContent('#token-message')).toMatch(/^Enter a token/);

    await page.fill('#token-input', 'wrong-token');
    await page.click('#token-form button[type="submit"]');
    await expect.poll(() => page.textContent('#token-message'), poll).toBe('The server refused this token. Check it and try again.');

    await page.fill('#token-input', 'inspector-secret');
    await page.click('#token-form button[type="submit"]');
    await expect.poll(() => listed(page, 'instances'), poll).toEqual(['vault']);
    expect(await page.isHidden('#token-form')).toBe(true);

    // The tab keeps the token: a reload connects without asking again.
    await page.reload();
    await expect.poll(() => listed(page, 'instances'), poll).toEqual(['vault']);
    expect(await page.isHidden('#token-form')).toBe(true);
  });
});
