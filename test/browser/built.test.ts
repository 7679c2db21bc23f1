import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createClient } from '../../sdk/index.js';
import { buildBrowser } from '../../scripts/build-browser.js';
import { collectProblems, httpOrigin, launchChromium } from './helpers.js';

type ServerModule = typeof import('../../server/index.js');

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MARK = '// built-by-the-test';

/** A copy of the package: its package.json, and the build in dist/. */
let pkg: string;
let out: string;
let built: ServerModule;
let server: Awaited<ReturnType<ServerModule['createServer']>>;
let browser: Browser;
let page: Page;

// The published package: package.json, and dist/ from `tsc -p tsconfig.build.json` then the
// browser build, in a directory inside node_modules/ so that the built server finds `ws` and
// `better-sqlite3` as an installed package would. It must serve the prebuilt files, not bundle.
beforeAll(async () => {
  mkdirSync(join(ROOT, 'node_modules/.cache'), { recursive: true });
  pkg = mkdtempSync(join(ROOT, 'node_modules/.cache/kvhub-built-'));
  copyFileSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  out = join(pkg, 'dist');
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', out], { cwd: ROOT });
  await buildBrowser(out);
  // Marks the prebuilt SDK bundle, so the test can tell it from a bundle made on request.
  appendFileSync(join(out, 'browser/kvhub.js'), `\n${MARK}\n`);
  built = (await import(pathToFileURL(join(out, 'server/index.js')).href)) as ServerModule;
  server = await built.createServer({ port: 0 });
  browser = await launchChromium();
  page = await browser.newPage();
}, 180_000);
afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (pkg !== undefined) rmSync(pkg, { recursive: true, force: true });
});

it('a build without a browser file answers 503 naming it, and serves it once it is back', async () => {
  const icon = join(out, 'server/inspector/public/favicon.svg');
  renameSync(icon, `${icon}.away`);
  const missing = await fetch(`${httpOrigin(server)}/favicon.svg`);
  expect(missing.status).toBe(503);
  expect(await missing.text()).toMatch(/^server\/inspector\/public\/favicon\.svg is missing from this build of kvhub; .*npm run build/);
  renameSync(`${icon}.away`, icon);
  const back = await fetch(`${httpOrigin(server)}/favicon.svg`);
  expect(back.status).toBe(200);
  expect(back.headers.get('content-type')).toBe('image/svg+xml');
});

it('the built server serves the prebuilt SDK bundle and the inspector, which shows the data', async () => {
  const writer = createClient({ url: server.url });
  await writer.instance('built', { autoCreate: true }).namespace('ns').set('key', { from: 'node' });
  await writer.close();

  const bundle = await fetch(`${httpOrigin(server)}/kvhub.js`);
  expect(bundle.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
  const text = await bundle.text();
  expect(text).toContain(MARK);
  expect(text).toBe(readFileSync(join(out, 'browser/kvhub.js'), 'utf8'));

  const problems = collectProblems(page);
  await page.goto(`${httpOrigin(server)}/`);
  await page.locator('#instances button[data-name="built"]').click();
  await page.locator('#namespaces button[data-name="ns"]').click();
  await page.locator('#keys button[data-name="key"]').click();
  await expect.poll(() => page.inputValue('#value'), { timeout: 10_000 }).not.toBe('');
  expect(JSON.parse(await page.inputValue('#value'))).toEqual({ from: 'node' });
  expect(problems).toEqual([]);
});
