import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type KvClient } from '../sdk/index.js';
import { PROJECT_ROOT, startKvhub, watchCli, type CliProcess } from './helpers/cli.js';
import { startTestServer, type TestServer } from './helpers/server.js';

// The kvhub command as users start it: bin/kvhub.js (package.json "bin"), and through npx.
let server: TestServer;
let client: KvClient;
const started: CliProcess[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  server = await startTestServer();
  client = createClient({ url: server.url });
  await client.instance('app', { autoCreate: true }).namespace('users').set('ada', { name: 'Ada' });
});
afterEach(async () => {
  for (const proc of started.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited();
    }
  }
});
afterAll(async () => {
  await client.close();
  await server.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function kvhub(args: string[], env: Record<string, string> = {}): CliProcess {
  const proc = startKvhub(args, { env: { KVHUB_URL: server.url, ...env } });
  started.push(proc);
  return proc;
}

/** Waits until `read()` matches `pattern`, polling. */
async function until(read: () => string, pattern: RegExp): Promise<void> {
  while (!pattern.test(read())) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('the kvhub binary', () => {
  it('exits 0 on success, 1 for an absent key, 2 for bad input, with nothing but one sentence on stderr', async () => {
    // Started together: each takes about a second to boot tsx.
    const [found, absent, bad] = [kvhub(['get', 'app', 'users', 'ada']), kvhub(['get', 'app', 'users', 'bob']), kvhub(['set', 'app', 'users', 'x', '{oops'])];
    expect(await found.exited()).toBe(0);
    expect(JSON.parse(found.stdout)).toEqual({ name: 'Ada' });
    expect(found.stderr).toBe('');
    expect(await absent.exited()).toBe(1);
    expect(absent.stderr).toBe("Key 'bob' in namespace 'users' of instance 'app' does not exist.\n");
    expect(await bad.exited()).toBe(2);
    expect(bad.stderr).toMatch(/^The value is not JSON \(.*\); quote a string, as in '"text"'\.\n$/);
  });

  it('watch streams events line by line until SIGINT, then exits 0', async () => {
    const watch = kvhub(['watch', 'app', 'users']);
    await until(() => watch.stderr, /Watching namespace 'users' of instance 'app'/);
    const first = await client.instance('app').namespace('users').set('grace', { name: 'Grace' });
    await until(() => watch.stdout, /\n/);
    // The first line is out before the second change is made: the output is not held back.
    expect(watch.stdout).toBe(`${first.revision}\tset\tusers\tgrace\t{"name":"Grace"}\n`);
    await client.instance('app').namespace('users').delete('grace');
    await until(() => watch.stdout, /\tdelete\t/);
    watch.child.kill('SIGINT');
    expect(await watch.exited()).toBe(0);
    expect(watch.stdout.split('\n')).toEqual([`${first.revision}\tset\tusers\tgrace\t{"name":"Grace"}`, `${first.revision + 1}\tdelete\tusers\tgrace`, '']);
  });

  it('serve runs the server with --log-level, and SIGTERM stops it with exit 0', async () => {
    const serve = kvhub(['serve', '--port', '0', '--db', ':memory:', '--log-level', 'warn']);
    const url = await serve.ready();
    const probe = createClient({ url });
    await probe.waitForReady();
    await probe.close();
    serve.child.kill('SIGTERM');
    expect(await serve.exited()).toBe(0);
    // Nothing at warn level or above happened.
    expect(serve.stderr).toBe('');
    const loud = kvhub(['serve', '--port', '0', '--db', ':memory:', '--log-level', 'loud']);
    expect(await loud.exited()).toBe(2);
    expect(loud.stderr).toBe("--log-level must be debug, info, warn or error, not 'loud'.\n");
  });
});

describe('npx kvhub', () => {
  it('works in the project without a build, from a fresh npx cache and offline', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'kvhub-npx-cache-'));
    dirs.push(cache);
    const npx = (args: string[]) => {
      const env = { ...process.env, KVHUB_URL: server.url, npm_config_cache: cache, npm_config_offline: 'true', npm_config_update_notifier: 'false' };
      const proc = watchCli(spawn('npx', ['--yes', 'kvhub', ...args], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
      started.push(proc);
      return proc;
    };
    const get = npx(['get', 'app', 'users', 'ada', '--json']);
    expect(await get.exited()).toBe(0);
    expect(JSON.parse(get.stdout)).toMatchObject({ exists: true, value: { name: 'Ada' } });
    const absent = npx(['get', 'app', 'users', 'nobody']);
    expect(await absent.exited()).toBe(1);
    expect(absent.stderr).toContain("Key 'nobody' in namespace 'users' of instance 'app' does not exist.");
  }, 60_000);
});
