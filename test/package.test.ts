import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
const expected = { protocol: true, version: expect.stringMatching(/^\d+\.\d+\.\d+/), value: { ok: true }, embedded: 2, sameErrorClass: true };

/** What each script below prints: the built package's entry points working together. */
const body = `
  const server = await createServer({ port: 0 });
  const client = createClient({ url: server.url });
  const hello = await client.waitForReady();
  const users = client.instance('pkg', { autoCreate: true }).namespace('users');
  await users.set('a', { ok: true });
  const value = await users.get('a');
  await client.close();
  await server.close();
  const kv = openKV({ path: ':memory:' });
  const counters = kv.instance('pkg', { autoCreate: true }).namespace('counters');
  await counters.incr('n');
  const embedded = await counters.incr('n');
  const sameErrorClass = await kv.instance('absent').namespace('n').get('k').catch((error) => error instanceof KvError);
  await kv.close();
  process.stdout.write(JSON.stringify({ protocol: hello.protocolVersion === PROTOCOL_VERSION, version: hello.serverVersion, value, embedded, sameErrorClass }));
`;

// The published entry points are the build in dist/, reached through package.json "exports".
// Build it, then load every entry point by its package name from plain Node processes.
describe('the built package', () => {
  beforeAll(() => {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'pipe' });
  }, 120_000);

  it('serves ES modules: kvhub/server starts a server that the kvhub SDK talks to, kvhub/embedded runs in-process', () => {
    const script = `
      import { createServer } from 'kvhub/server';
      import { createClient, KvError } from 'kvhub';
      import { openKV } from 'kvhub/embedded';
      import { PROTOCOL_VERSION } from 'kvhub/protocol';
      ${body}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(expected);
  });

  it('serves CommonJS: the same through require(), with one KvError class across entry points', () => {
    const script = `
      const { createServer } = require('kvhub/server');
      const { createClient, KvError } = require('kvhub');
      const { openKV } = require('kvhub/embedded');
      const { PROTOCOL_VERSION } = require('kvhub/protocol');
      (async () => { ${body} })().catch((error) => { console.error(error); process.exit(1); });`;
    const out = execFileSync(process.execPath, ['--input-type=commonjs', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(expected);
  });

  describe('type declarations', () => {
    const consumer = mkdtempSync(join(tmpdir(), 'kvhub-consumer-'));
    afterAll(() => rmSync(consumer, { recursive: true, force: true }));

    it('type-check an ES module and a CommonJS consumer, and catch a wrong type', () => {
      mkdirSync(join(consumer, 'node_modules'));
      symlinkSync(ROOT, join(consumer, 'node_modules', 'kvhub'));
      const tsconfig = { compilerOptions: { module: 'node16', moduleResolution: 'node16', strict: true, noEmit: true, skipLibCheck: true, types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')] } };
      writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({ ...tsconfig, files: ['esm.mts', 'cjs.cts'] }));
      const uses = (type: string) => `
        const client: KvClient = createClient({ url: 'ws://127.0.0.1:7420' });
        const users: NamespaceHandle = client.instance('app').namespace('users');
        const kv: EmbeddedKv = openKV({ path: ':memory:' });
        export const checks: [Promise<${type}>, typeof users, typeof kv, typeof createServer, typeof PROTOCOL_VERSION] = [users.incr('n'), users, kv, createServer, PROTOCOL_VERSION];`;
      writeFileSync(
        join(consumer, 'esm.mts'),
        `import { createClient, type KvClient, type NamespaceHandle } from 'kvhub';
         import { openKV, type EmbeddedKv } from 'kvhub/embedded';
         import { createServer } from 'kvhub/server';
         import { PROTOCOL_VERSION } from 'kvhub/protocol';${uses('number')}`,
      );
      writeFileSync(
        join(consumer, 'cjs.cts'),
        `import { createClient, type KvClient, type NamespaceHandle } from 'kvhub';
         import { openKV, type EmbeddedKv } from 'kvhub/embedded';
         import { createServer } from 'kvhub/server';
         import { PROTOCOL_VERSION } from 'kvhub/protocol';${uses('number')}`,
      );
      const check = () => {
        try {
          execFileSync(process.execPath, [TSC, '-p', consumer], { cwd: consumer, encoding: 'utf8', stdio: 'pipe' });
          return 'no errors';
        } catch (error) {
          return String((error as { stdout: string }).stdout);
        }
      };
      expect(check()).toBe('no errors');
      // The declarations are really read: incr() resolves to a number, not a string.
      writeFileSync(join(consumer, 'cjs.cts'), `import { createClient } from 'kvhub'; export const n: Promise<string> = createClient({ url: '' }).instance('a').namespace('b').incr('n');`);
      expect(check()).toMatch(/cjs\.cts.*Type 'Promise<number>' is not assignable to type 'Promise<string>'/);
    });
  });
});
