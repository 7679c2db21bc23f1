import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type KvClient } from '../sdk/index.js';
import { Capture, runKvhub } from './helpers/cli.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer;
let client: KvClient;
let dir: string;
/** The environment that points the CLI at the test server. */
let env: Record<string, string>;

beforeAll(async () => {
  server = await startTestServer();
  client = createClient({ url: server.url });
  await client.waitForReady();
  dir = mkdtempSync(join(tmpdir(), 'kvhub-cli-commands-'));
  env = { KVHUB_URL: server.url };
});
afterAll(async () => {
  await client.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const kvhub = (args: string[], options: Parameters<typeof runKvhub>[1] = {}) => runKvhub(args, { env, ...options });

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

function configFile(name: string, settings: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof settings === 'string' ? settings : JSON.stringify(settings));
  return file;
}

describe('get, set, del', () => {
  it('set writes a JSON value, get prints it as text or, with --json, the reply data', async () => {
    const set = await kvhub(['set', 'app', 'users', 'ada', '{"name":"Ada","born":1815}', '--create']);
    expect(set).toMatchObject({ code: 0, stderr: '' });
    expect(set.stdout).toMatch(/^Wrote key 'ada' in namespace 'users' of instance 'app': version 1, revision \d+\.\n$/);

    const text = await kvhub(['get', 'app', 'users', 'ada']);
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(text.stdout)).toEqual({ name: 'Ada', born: 1815 });

    const json = await kvhub(['get', 'app', 'users', 'ada', '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ exists: true, value: { name: 'Ada', born: 1815 }, record: { key: 'ada', version: 1, expiresAt: null } });

    const setJson = await kvhub(['set', 'app', 'users', 'ada', '"Lovelace"', '--json']);
    expect(JSON.parse(setJson.stdout)).toMatchObject({ record: { key: 'ada', value: 'Lovelace', version: 2 } });
    expect(await client.instance('app').namespace('users').get('ada')).toBe('Lovelace');
  });

  it('a missing key exits 1 with a sentence; --json still prints the reply data', async () => {
    const text = await kvhub(['get', 'app', 'users', 'nobody']);
    expect(text).toEqual({ code: 1, stdout: '', stderr: "Key 'nobody' in namespace 'users' of instance 'app' does not exist.\n", stdoutBytes: expect.any(Buffer) });
    const json = await kvhub(['get', 'app', 'users', 'nobody', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual({ value: null, exists: false, record: null });
  });

  it('a missing instance exits 1; set names --create, which creates it', async () => {
    const get = await kvhub(['get', 'ghost', 'n', 'k']);
    expect(get).toMatchObject({ code: 1, stdout: '', stderr: "Instance 'ghost' not found.\n" });
    const set = await kvhub(['set', 'ghost', 'n', 'k', '1']);
    expect(set).toMatchObject({ code: 1, stdout: '', stderr: "Instance 'ghost' not found; give --create to create it.\n" });
    expect((await kvhub(['set', 'ghost', 'n', 'k', '1', '--create'])).code).toBe(0);
    expect((await kvhub(['get', 'ghost', 'n', 'k'])).stdout).toBe('1\n');
  });

  it('refuses a value that is not JSON with exit 2, writing nothing', async () => {
    const bad = await kvhub(['set', 'app', 'users', 'bad', 'hello']);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^The value is not JSON \(.*\); quote a string, as in '"text"'\.\n$/);
    expect(await client.instance('app').namespace('users').has('bad')).toBe(false);
  });

  it('reads the value from stdin for -, and sets an expiry with --ttl', async () => {
    expect((await kvhub(['set', 'app', 'users', 'piped', '-'], { stdin: '{"from":"stdin"}\n' })).code).toBe(0);
    expect(await client.instance('app').namespace('users').get('piped')).toEqual({ from: 'stdin' });

    const before = Date.now();
    const set = await kvhub(['set', 'app', 'users', 'brief', 'true', '--ttl', '60000', '--json']);
    const expiresAt = Date.parse(JSON.parse(set.stdout).record.expiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 60_000);
    expect((await kvhub(['set', 'app', 'users', 'brief', 'true', '--ttl', '60000'])).stdout).toMatch(/, expires \d{4}-\d\d-\d\dT.*Z\.\n$/);

    for (const ttl of ['0', 'soon', '-5']) {
      const bad = await kvhub(['set', 'app', 'users', 'brief', 'true', '--ttl', ttl]);
      expect(bad).toMatchObject({ code: 2, stdout: '', stderr: `--ttl must be a whole number of at least 1, not '${ttl}'.\n` });
    }
  });

  it('del deletes a key, and exits 1 when there is none', async () => {
    await client.instance('app').namespace('trash').set('doomed', 1);
    expect(await kvhub(['del', 'app', 'trash', 'doomed'])).toMatchObject({ code: 0, stdout: "Deleted key 'doomed' in namespace 'trash' of instance 'app'.\n", stderr: '' });
    expect(await kvhub(['del', 'app', 'trash', 'doomed'])).toMatchObject({ code: 1, stdout: '', stderr: "Key 'doomed' in namespace 'trash' of instance 'app' does not exist.\n" });
    const json = await kvhub(['del', 'app', 'trash', 'doomed', '--json']);
    expect(json).toMatchObject({ code: 1, stdout: '{"deleted":false}\n' });
  });

  it('prints a binary value as raw bytes into a pipe, and describes it on a terminal', async () => {
    const bytes = Uint8Array.from([0, 1, 2, 250, 255]);
    await client.instance('app').namespace('files').set('blob', bytes);
    const piped = await kvhub(['get', 'app', 'files', 'blob']);
    expect(piped.code).toBe(0);
    expect([...piped.stdoutBytes]).toEqual([...bytes]);
    const terminal = await kvhub(['get', 'app', 'files', 'blob'], { stdout: new Capture(true) });
    expect(terminal.stdout).toMatch(/^<5 bytes of application\/octet-stream: redirect the output/);
    expect((await kvhub(['list', 'app', 'files'])).stdout).toBe('blob\t<5 bytes of application/octet-stream>\n');
  });
});

describe('incr', () => {
  it('adds 1 by default, or [by] (negative and fractional too), and prints the new value', async () => {
    expect(await kvhub(['incr', 'app', 'counters', 'hits'])).toMatchObject({ code: 0, stdout: '1\n', stderr: '' });
    expect((await kvhub(['incr', 'app', 'counters', 'hits', '10'])).stdout).toBe('11\n');
    expect((await kvhub(['incr', 'app', 'counters', 'hits', '-2'])).stdout).toBe('9\n');
    expect((await kvhub(['incr', 'app', 'counters', 'hits', '0.5'])).stdout).toBe('9.5\n');
    const json = await kvhub(['incr', 'app', 'counters', 'hits', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ value: 10.5, record: { key: 'hits', value: 10.5 } });
  });

  it('refuses a [by] that is not a number, and reports a value that is not one', async () => {
    expect(await kvhub(['incr', 'app', 'counters', 'hits', 'ten'])).toMatchObject({ code: 2, stderr: "[by] must be a number, not 'ten'.\n" });
    await client.instance('app').namespace('counters').set('name', 'not a number');
    const mismatch = await kvhub(['incr', 'app', 'counters', 'name']);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toMatch(/^[A-Z].*\(TYPE_MISMATCH\)\.\n$/);
  });

  it('needs --create for an instance that does not exist yet', async () => {
    expect((await kvhub(['incr', 'fresh', 'n', 'k'])).code).toBe(1);
    expect((await kvhub(['incr', 'fresh', 'n', 'k', '--create'])).stdout).toBe('1\n');
  });
});

describe('list, instances, namespaces', () => {
  beforeAll(async () => {
    const big = client.instance('lists', { autoCreate: true }).namespace('big');
    const keys = Array.from({ length: 1205 }, (_, i) => `k${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 1000) await big.setMany(keys.slice(i, i + 1000).map((key) => [key, { n: Number(key.slice(1)) }] as const));
    await client.instance('lists').namespace('small').setMany({ 'a:1': 1, 'a:2': 2, 'b:1': 3 });
  });

  it('follows the cursor through every page, in key order', async () => {
    const all = await kvhub(['list', 'lists', 'big']);
    expect(all.code).toBe(0);
    const lines = all.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(1205);
    expect(lines[0]).toBe('k0000\t{"n":0}');
    expect(lines[1204]).toBe('k1204\t{"n":1204}');
    expect([...lines].sort()).toEqual(lines);
  });

  it('takes --prefix, --keys-only, --limit, and continues from the cursor --json gives', async () => {
    expect((await kvhub(['list', 'lists', 'small', '--prefix', 'a:'])).stdout).toBe('a:1\t1\na:2\t2\n');
    expect((await kvhub(['list', 'lists', 'small', '--keys-only'])).stdout).toBe('a:1\na:2\nb:1\n');
    const first = JSON.parse((await kvhub(['list', 'lists', 'small', '--json', '--limit', '2', '--keys-only'])).stdout);
    expect(first).toEqual({ keys: ['a:1', 'a:2'], cursor: expect.any(String) });
    const rest = JSON.parse((await kvhub(['list', 'lists', 'small', '--json', '--cursor', first.cursor])).stdout);
    expect(rest).toMatchObject({ records: [{ key: 'b:1', value: 3 }], cursor: null });
    expect((await kvhub(['list', 'lists', 'small', '--limit', '0'])).code).toBe(2);
  });

  it('exits 1 for the namespaces or keys of an instance that does not exist', async () => {
    expect(await kvhub(['list', 'ghost2', 'n'])).toMatchObject({ code: 1, stderr: "Instance 'ghost2' not found.\n" });
    expect(await kvhub(['namespaces', 'ghost2'])).toMatchObject({ code: 1, stderr: "Instance 'ghost2' not found.\n" });
  });

  it('lists instances and namespaces as text and as JSON', async () => {
    await client.kvStore.createInstance('Described', 'has a description', { id: 'described' });
    const text = await kvhub(['instances']);
    expect(text.code).toBe(0);
    expect(text.stdout.split('\n')).toContain('described\tDescribed\thas a description');
    expect(text.stdout.split('\n')).toContain('lists\tlists');
    const json = JSON.parse((await kvhub(['instances', '--json'])).stdout);
    expect(json.instances).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'described', name: 'Described', description: 'has a description' })]));
    expect(await kvhub(['namespaces', 'lists'])).toMatchObject({ code: 0, stdout: 'big\nsmall\n' });
    expect(JSON.parse((await kvhub(['namespaces', 'lists', '--json'])).stdout)).toEqual({ namespaces: ['big', 'small'] });
  });
});

describe('watch', () => {
  it('prints each change as it happens, one line per event, until stopped (exit 0)', async () => {
    await client.kvStore.createInstance('watched', undefined, { id: 'watched' });
    const stop = new AbortController();
    const stdout = new Capture();
    const stderr = new Capture();
    const running = kvhub(['watch', 'watched', 'tasks'], { stdout, stderr, signal: stop.signal });
    await stderr.waitFor(/^Watching namespace 'tasks' of instance 'watched' from revision \d+; Ctrl-C stops\.\n$/);
    const tasks = client.instance('watched').namespace('tasks');
    const set = await tasks.set('t1', { todo: 'write' });
    await client.instance('watched').namespace('other').set('x', 1);
    await tasks.delete('t1');
    await stdout.waitFor(/\tdelete\t/);
    stop.abort('SIGINT');
    const result = await running;
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n')).toEqual([`${set.revision}\tset\ttasks\tt1\t{"todo":"write"}`, `${set.revision + 2}\tdelete\ttasks\tt1`, '']);
  });

  it('--json prints each event as a JSON line, and --prefix filters keys', async () => {
    const stop = new AbortController();
    const stdout = new Capture();
    const stderr = new Capture();
    const running = kvhub(['watch', 'watched', 'tasks', '--prefix', 'a', '--json'], { stdout, stderr, signal: stop.signal });
    await stderr.waitFor(/^Watching keys starting with 'a' in namespace 'tasks'/);
    const tasks = client.instance('watched').namespace('tasks');
    await tasks.set('b1', 0);
    await tasks.set('a1', 1);
    await stdout.waitFor(/\n/);
    stop.abort('SIGINT');
    const result = await running;
    expect(result.code).toBe(0);
    const events = result.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(events).toEqual([expect.objectContaining({ kind: 'set', instanceId: 'watched', namespace: 'tasks', key: 'a1', record: expect.objectContaining({ value: 1 }) })]);
  });

  it('rides out a server restart: the watch resumes after the last event it printed', async () => {
    const restartable = await startTestServer();
    const writer = createClient({ url: restartable.url });
    try {
      const notes = writer.instance('r', { autoCreate: true }).namespace('n');
      await notes.set('before', 0);
      const stop = new AbortController();
      const stdout = new Capture();
      const stderr = new Capture();
      const running = kvhub(['watch', 'r', 'n', '--url', restartable.url], { stdout, stderr, signal: stop.signal });
      await stderr.waitFor(/Watching/);
      await notes.set('a', 1);
      await stdout.waitFor(/\ta\t/);
      await restartable.restart();
      await notes.set('b', 2);
      await stdout.waitFor(/\tb\t/);
      stop.abort('SIGINT');
      const result = await running;
      expect(result.code).toBe(0);
      expect(result.stdout.trimEnd().split('\n').map((line) => line.split('\t').slice(1).join(' '))).toEqual(['set n a 1', 'set n b 2']);
    } finally {
      await writer.close();
      await restartable.close();
    }
  });

  it('exits 1 for an instance that does not exist or is deleted while watched, 2 for bad usage', async () => {
    expect(await kvhub(['watch', 'nowhere'])).toMatchObject({ code: 1, stderr: "Instance 'nowhere' not found.\n" });
    expect(await kvhub(['watch', 'watched', '--prefix', 'a'])).toMatchObject({ code: 2, stderr: '--prefix needs a <namespace>.\n' });

    await client.kvStore.createInstance('doomed', undefined, { id: 'doomed' });
    const stderr = new Capture();
    const running = kvhub(['watch', 'doomed'], { stderr });
    await stderr.waitFor(/Watching/);
    await client.kvStore.deleteInstance('doomed');
    const result = await running;
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^\d+\tinstanceDeleted\tdoomed\n$/);
    expect(result.stderr).toMatch(/Instance 'doomed' was deleted; the watch has ended\.\n$/);
  });
});

describe('connections and usage', () => {
  it('reports a refused connection in one sentence, exit 2', async () => {
    const url = `ws://127.0.0.1:${await closedPort()}`;
    const refused = await kvhub(['get', 'a', 'b', 'c'], { env: { KVHUB_URL: url } });
    expect(refused).toMatchObject({ code: 2, stdout: '', stderr: `Cannot connect to ${url}: connection refused; is a kvhub server running there?\n` });
    expect(await kvhub(['instances', '--url', 'http://127.0.0.1:7420'])).toMatchObject({ code: 2, stderr: "--url must be a ws:// or wss:// URL, not 'http://127.0.0.1:7420'.\n" });
  });

  it('stops a command when its stop signal has fired (Ctrl-C), exit 2', async () => {
    const stopped = await kvhub(['get', 'app', 'users', 'ada'], { signal: AbortSignal.abort('SIGINT') });
    expect(stopped).toMatchObject({ code: 2, stdout: '', stderr: 'Stopped by SIGINT before the command finished.\n' });
  });

  it('says when the server needs a token, or refuses the one given, naming where it came from', async () => {
    const guarded = await startTestServer({ tokens: [{ token: 'right-token' }] });
    try {
      const url = guarded.url;
      expect(await kvhub(['instances', '--url', url])).toMatchObject({ code: 2, stderr: `The server at ${url} needs a token: pass --token or set KVHUB_TOKEN.\n` });
      expect(await kvhub(['instances', '--url', url, '--token', 'wrong'])).toMatchObject({ code: 2, stderr: `The server at ${url} refused the token from --token (HTTP 401).\n` });
      expect(await kvhub(['instances', '--url', url], { env: { KVHUB_TOKEN: 'wrong' } })).toMatchObject({ stderr: `The server at ${url} refused the token from KVHUB_TOKEN (HTTP 401).\n` });
      expect(await kvhub(['instances', '--url', url, '--token', 'right-token'])).toMatchObject({ code: 0, stderr: '' });
      expect(await kvhub(['instances', '--url', url], { env: { KVHUB_TOKEN: 'right-token' } })).toMatchObject({ code: 0 });
    } finally {
      await guarded.close();
    }
  });

  it('reports bad usage with exit 2 and a pointer to the help', async () => {
    expect(await kvhub(['get', 'app', 'users'])).toMatchObject({ code: 2, stdout: '', stderr: "Missing required argument 'key' (see kvhub get --help).\n" });
    expect(await kvhub(['get', 'a', 'b', 'c', 'd'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Too many arguments for 'get'.*\(see kvhub get --help\)\.\n$/) });
    expect(await kvhub(['list', 'a', 'b', '--prefx', 'x'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Unknown option '--prefx' \(Did you mean --prefix\?\) \(see kvhub list --help\)\.\n$/) });
    expect(await kvhub(['frobnicate'])).toMatchObject({ code: 2, stderr: "Unknown command 'frobnicate' (see kvhub --help).\n" });
    // A leading flag means serve, the default command, which says so.
    expect(await kvhub(['--url', server.url, 'instances'])).toMatchObject({
      code: 2,
      stderr: "Unknown option '--url' (see kvhub serve --help; serve is the default command, other commands go first: kvhub <command> [flags]).\n",
    });
    const help = await kvhub(['get', '--help']);
    expect(help).toMatchObject({ code: 0, stderr: '' });
    expect(help.stdout).toMatch(/^Usage: kvhub get \[options\] <instance> <namespace> <key>/);
    const top = await kvhub(['--help']);
    expect(top.stdout).toMatch(/serve is the default command/);
    for (const command of ['serve', 'get', 'set', 'del', 'list', 'incr', 'watch', 'instances', 'namespaces', 'export', 'import', 'backup', 'restore']) {
      expect(top.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect((await kvhub(['--version'])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
});

describe('settings: flags beat the environment, which beats --config', () => {
  it('takes url and token from the config file when nothing else gives them', async () => {
    const guarded = await startTestServer({ tokens: [{ token: 'config-token' }] });
    try {
      const config = configFile('connect.json', { url: guarded.url, token: 'config-token', json: true });
      const result = await kvhub(['instances', '--config', config], { env: {} });
      expect(result).toMatchObject({ code: 0, stderr: '' });
      // "json": true in the file turns on --json.
      expect(JSON.parse(result.stdout)).toEqual({ instances: [] });
      // The environment beats the file: a wrong KVHUB_TOKEN is used, and named.
      expect(await kvhub(['instances', '--config', config], { env: { KVHUB_TOKEN: 'wrong' } })).toMatchObject({
        code: 2,
        stderr: `The server at ${guarded.url} refused the token from KVHUB_TOKEN (HTTP 401).\n`,
      });
      // The flag beats both.
      expect((await kvhub(['instances', '--config', config, '--token', 'config-token'], { env: { KVHUB_TOKEN: 'wrong' } })).code).toBe(0);
      // An empty variable counts as unset.
      expect((await kvhub(['instances', '--config', config], { env: { KVHUB_TOKEN: '' } })).code).toBe(0);
    } finally {
      await guarded.close();
    }
  });

  it('a flag beats KVHUB_URL, which beats the config file', async () => {
    const dead = `ws://127.0.0.1:${await closedPort()}`;
    const deadConfig = configFile('dead.json', { url: dead });
    const liveConfig = configFile('live.json', { url: server.url });
    expect((await kvhub(['instances', '--config', deadConfig], { env: { KVHUB_URL: server.url } })).code).toBe(0);
    expect(await kvhub(['instances', '--config', liveConfig], { env: { KVHUB_URL: dead } })).toMatchObject({ code: 2, stderr: expect.stringContaining(`Cannot connect to ${dead}`) });
    expect((await kvhub(['instances', '--config', liveConfig, '--url', server.url], { env: { KVHUB_URL: dead } })).code).toBe(0);
    expect((await kvhub(['instances', '--url', dead, '--config', liveConfig])).code).toBe(2);
  });

  it('refuses a config file that is missing, not JSON, not an object, or names no kvhub flag', async () => {
    const cases: [string, RegExp][] = [
      [join(dir, 'absent.json'), /^cannot read --config .*absent\.json: it does not exist\.\n$/],
      [configFile('broken.json', '{"url": '), /^--config .*broken\.json is not JSON: /],
      [configFile('list.json', '[]'), /^--config .*list\.json must hold a JSON object of settings named like the flags/],
      [configFile('typo.json', { uri: 'ws://x' }), /^--config .*typo\.json has "uri", which is not a kvhub flag/],
      [configFile('type.json', { json: 'yes' }), /^"json" in .*type\.json must be true or false\.\n$/],
      [configFile('number.json', { url: { host: 'x' } }), /^"url" in .*number\.json must be a string or a number\.\n$/],
    ];
    for (const [file, message] of cases) {
      const result = await kvhub(['instances', '--config', file]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(message);
    }
  });

  it('a key that only another command takes is skipped, so one file serves them all', async () => {
    const shared = configFile('shared.json', { url: server.url, port: 0, db: ':memory:', 'log-level': 'warn' });
    expect((await kvhub(['instances', '--config', shared], { env: {} })).code).toBe(0);
  });
});
