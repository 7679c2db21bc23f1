import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startCli, type CliProcess } from './helpers/cli.js';
import { connectRaw, rid } from './helpers/raw-client.js';

const started: CliProcess[] = [];
const dirs: string[] = [];
function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'kvhub-cli-'));
  dirs.push(dir);
  return dir;
}
function cli(args: string[], cwd?: string) {
  const proc = startCli(args, cwd);
  started.push(proc);
  return proc;
}
afterEach(async () => {
  for (const proc of started.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited();
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the CLI', () => {
  it('prints the ready line on stdout, logs JSON on stderr, and shuts down on SIGTERM with 1001 and exit 0', async () => {
    const dir = tempDir();
    const proc = cli(['--port', '0', '--db', join(dir, 'nested', 'store.db')]);
    const url = await proc.ready();
    expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    expect(proc.stdout.trim().split('\n')).toHaveLength(1);
    expect(existsSync(join(dir, 'nested', 'store.db'))).toBe(true);
    const client = await connectRaw(url);
    expect(await client.request({ type: 'kvStore.ping', requestId: rid() })).toMatchObject({ success: true });
    const closed = client.closed();
    proc.child.kill('SIGTERM');
    expect((await closed).code).toBe(1001);
    expect(await proc.exited()).toBe(0);
    for (const line of proc.stderr.trim().split('\n')) expect(JSON.parse(line)).toHaveProperty('level');
  });

  it('serves :memory: and answers /healthz on the same port', async () => {
    const proc = cli(['--port', '0', '--db', ':memory:']);
    const url = await proc.ready();
    const response = await fetch(url.replace('ws:', 'http:') + '/healthz');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
    proc.child.kill('SIGINT');
    expect(await proc.exited()).toBe(0);
  });

  it('keeps data across a restart on the same file', async () => {
    const db = join(tempDir(), 'kv.db');
    const first = cli(['--port', '0', '--db', db]);
    let client = await connectRaw(await first.ready());
    const params = { instanceId: 'keep', namespace: 'n', key: 'k' };
    expect(await client.request({ type: 'kvStore.set', requestId: rid(), params: { ...params, value: { kept: true }, autoCreateInstance: true } })).toMatchObject({ success: true });
    first.child.kill('SIGTERM');
    await first.exited();
    const second = cli(['--port', '0', '--db', db]);
    client = await connectRaw(await second.ready());
    expect((await client.request({ type: 'kvStore.get', requestId: rid(), params })).data).toMatchObject({ exists: true, value: { kept: true } });
    await client.close();
  });

  it('refuses a second server on a database file that a running server holds', async () => {
    const db = join(tempDir(), 'held.db');
    const holder = cli(['--port', '0', '--db', db]);
    await holder.ready();
    const intruder = cli(['--port', '0', '--db', db]);
    expect(await intruder.exited()).toBe(1);
    expect(intruder.stdout).toBe('');
    expect(intruder.stderr).toMatch(/in use/);
    expect(intruder.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses to bind an address other machines can reach when no token is configured', async () => {
    const open = cli(['--port', '0', '--db', ':memory:', '--host', '0.0.0.0']);
    expect(await open.exited()).toBe(1);
    expect(open.stderr).toMatch(/refusing to listen on 0\.0\.0\.0/);
    const ipv6 = cli(['--port', '0', '--db', ':memory:', '--host', '::1']);
    expect(await ipv6.ready()).toMatch(/^ws:\/\/\[::1\]:\d+$/);
  });

  it('passes the connection limits on: --max-connections 1 turns a second connection away with 503', async () => {
    const proc = cli(['--port', '0', '--db', ':memory:', '--max-connections', '1', '--max-in-flight', '2000']);
    const url = await proc.ready();
    const first = await connectRaw(url);
    const hello = await first.request({ type: 'kvStore.hello', requestId: rid() });
    expect(hello.data.limits).toMatchObject({ maxConnections: 1, maxInFlight: 2000 });
    await expect(connectRaw(url)).rejects.toThrow(/503/);
    await first.close();
  });

  it('refuses a port in use and bad flags with a plain sentence', async () => {
    const holder = cli(['--port', '0', '--db', ':memory:']);
    const port = new URL(await holder.ready()).port;
    const clash = cli(['--port', port, '--db', ':memory:']);
    expect(await clash.exited()).toBe(1);
    expect(clash.stderr).toMatch(new RegExp(`port ${port} .* already in use`));
    const bad = cli(['--port', 'eighty']);
    expect(await bad.exited()).toBe(2);
    expect(bad.stderr).toMatch(/--port must be/);
    const unknown = cli(['--colour', 'red']);
    expect(await unknown.exited()).toBe(2);
    expect(unknown.stderr).toMatch(/colour/);
  });
});
