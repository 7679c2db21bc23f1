/**
 * Takes the README's picture of the web inspector: starts a server on a free port with sample
 * data, opens the inspector in headless Chromium, picks a key and saves docs/inspector.png.
 *
 *   npx tsx scripts/screenshot-inspector.ts [--out docs/inspector.png] [--chromium /usr/bin/chromium]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { createClient } from '../sdk/index.js';
import { createServer } from '../server/index.js';

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: fileURLToPath(new URL('../docs/inspector.png', import.meta.url)) },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});

const server = await createServer({ port: 0, db: ':memory:' });
const client = createClient({ url: server.url });
const browser = await chromium.launch({ executablePath: values.chromium });
try {
  const shop = client.instance('shop', { autoCreate: true });
  await shop.namespace('carts').setMany({
    'cart:1042': { customer: 'ada', items: [{ sku: 'tea-earl-grey', qty: 2 }, { sku: 'mug-blue', qty: 1 }], total: 23.5 },
    'cart:1043': { customer: 'grace', items: [], total: 0 },
    'cart:1044': { customer: 'alan', items: [{ sku: 'notebook-a5', qty: 3 }], total: 11.7 },
  });
  await shop.namespace('carts').set('cart:1045', { customer: 'edsger', items: [{ sku: 'pen-black', qty: 10 }], total: 8 }, { ttlMs: 30 * 60_000 });
  await shop.namespace('carts').update('cart:1042', (cart: { total: number }) => ({ ...cart, total: 27 }), { total: 0 }, { ttlMs: 45 * 60_000 });
  await shop.namespace('users').setMany({ ada: { name: 'Ada Lovelace' }, grace: { name: 'Grace Hopper' } });
  await shop.namespace('settings').set('currency', 'EUR');
  await client.instance('jobs', { autoCreate: true }).namespace('queue').set('job:1', { state: 'pending' });
  await client.instance('sessions', { autoCreate: true }).namespace('web').set('s:9f2c', { user: 'ada' }, { ttlMs: 3_600_000 });

  const page = await browser.newPage({ viewport: { width: 1280, height: 640 }, deviceScaleFactor: 1 });
  await page.goto(`http://127.0.0.1:${server.port}/`);
  await page.locator('#instances button[data-name="shop"]').click();
  await page.locator('#namespaces button[data-name="carts"]').click();
  await page.locator('#keys button[data-name="cart:1042"]').click();
  await page.locator('#editor').waitFor({ state: 'visible' });
  await page.locator('#connection[data-state="ready"]').waitFor();
  await page.screenshot({ path: values.out });
  process.stdout.write(`wrote ${values.out}\n`);
} finally {
  await browser.close();
  await client.close();
  await server.close();
}
