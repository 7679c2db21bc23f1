import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

// The published entry points are the build in dist/, reached through package.json "exports".
// Build it, then load every entry point by its package name from a plain Node process.
it('the built package serves: kvhub/server starts a server that the kvhub SDK talks to', () => {
  execFileSync(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
  });
  const script = `
    import { createServer } from 'kvhub/server';
    import { createClient } from 'kvhub';
    import { PROTOCOL_VERSION } from 'kvhub/protocol';
    const server = await createServer({ port: 0 });
    const client = createClient({ url: server.url });
    const hello = await client.waitForReady();
    const users = client.instance('pkg', { autoCreate: true }).namespace('users');
    await users.set('a', { ok: true });
    const value = await users.get('a');
    await client.close();
    await server.close();
    process.stdout.write(JSON.stringify({ protocol: hello.protocolVersion === PROTOCOL_VERSION, version: hello.serverVersion, value }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
  expect(JSON.parse(out)).toEqual({ protocol: true, version: expect.stringMatching(/^\d+\.\d+\.\d+/), value: { ok: true } });
}, 60_000);
