import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

// The README's SDK example is run as written (only its URL points at a test server), so it stays true.
const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const MARKER = '<!-- example: sdk -->';

let server: TestServer;
let dir: string;
beforeAll(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'kvhub-readme-'));
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

it('the README SDK example runs against a real server', async () => {
  const after = README.slice(README.indexOf(MARKER));
  const match = /```ts\n([\s\S]*?)```/.exec(after);
  expect(README.includes(MARKER) && match !== null).toBe(true);
  const source = match![1]!;
  expect(source).toContain("from 'kvhub'");
  const file = join(dir, 'example.ts');
  writeFileSync(file, source.replaceAll('ws://127.0.0.1:7420', server.url));
  await import(/* @vite-ignore */ file);
  // The example wrote through the server: its instance exists now.
  const { engine } = server.server;
  expect((await engine.listInstances()).length).toBeGreaterThan(0);
});
