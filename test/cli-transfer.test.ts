import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type KvClient, type KvRecord } from '../sdk/index.js';
import { Capture, runKvhub } from './helpers/cli.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const dir = mkdtempSync(join(tmpdir(), 'kvhub-cli-transfer-'));
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh server and a client on it, both closed after the test. */
async function serverWithClient(options: Parameters<typeof startTestServer>[0] = {}): Promise<{ server: TestServer; client: KvClient }> {
  const server = await startTestServer(options);
  const client = createClient({ url: server.url });
  await client.waitForReady();
  cleanups.push(() => server.close(), () => client.close());
  return { server, client };
}

/** Every record of every namespace of `instanceId`, by namespace then key (values decoded). */
async function dump(client: KvClient, instanceId: string): Promise<Record<string, KvRecord[]>> {
  const instance = client.instance(instanceId);
  const out: Record<string, KvRecord[]> = {};
  for (const namespace of await instance.namespaces()) {
    out[namespace] = [];
    for await (const record of instance.namespace(namespace).list()) out[namespace].push(record);
  }
  return out;
}

describe('export, then import', () => {
  let source: { server: TestServer; client: KvClient };
  const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 255]);

  beforeAll(async () => {
    const server = await startTestServer();
    const client = createClient({ url: server.url });
    await client.waitForReady();
    source = { server, client };
    await client.kvStore.createInstance('Shop', 'the shop', { id: 'shop' });
    const items = client.instance('shop').namespace('items');
    await items.set('apple', { price: 1.25, tags: ['fruit', 'red'], stock: null });
    await items.set('émoji ✓', 'naïve – "quoted"\nline');
    await items.set('zero', 0);
    await items.set('nothing', null);
    await items.set('gone', true);
    await items.delete('gone');
    await client.instance('shop').namespace('blobs').set('logo', PNG, { contentType: 'image/png' });
    await client.instance('shop').namespace('blobs').set('empty', new Uint8Array(0));
    await client.instance('shop').namespace('sessions').set('s1', { user: 'ada' }, { ttlMs: 60_000 });
    await client.instance('other', { autoCreate: true }).namespace('n').set('k', [1, 2, 3]);
  });
  afterAll(async () => {
    await source.client.close();
    await source.server.close();
  });

  it('round-trips instances, values, content types, binary values and expiry times', async () => {
    const file = join(dir, 'all.jsonl');
    const exported = await runKvhub(['export', '--out', file], { env: { KVHUB_URL: source.server.url } });
    expect(exported).toMatchObject({ code: 0, stdout: `Exported 8 keys of 2 instances to ${file}.\n`, stderr: '' });

    const target = await serverWithClient();
    const imported = await runKvhub(['import', '--file', file, '--url', target.server.url]);
    expect(imported).toMatchObject({ code: 0, stdout: `Imported 8 keys into 2 instances from ${file}.\n`, stderr: '' });

    const instances = async (client: KvClient) => {
      const reply = await client.kvStore.listInstances();
      return reply.success ? reply.data.instances.map(({ id, name, description }) => ({ id, name, description })) : [];
    };
    expect(await instances(target.client)).toEqual(await instances(source.client));
    for (const instanceId of ['shop', 'other']) {
      const before = await dump(source.client, instanceId);
      const after = await dump(target.client, instanceId);
      expect(Object.keys(after)).toEqual(Object.keys(before));
      for (const namespace of Object.keys(before)) {
        expect(after[namespace]!.map(({ key, value, contentType }) => ({ key, value, contentType }))).toEqual(
          before[namespace]!.map(({ key, value, contentType }) => ({ key, value, contentType })),
        );
        // The absolute expiry comes back: never earlier, and later only by the time the import took.
        for (const [i, record] of before[namespace]!.entries()) {
          const copy = after[namespace]![i]!;
          if (record.expiresAt === null) expect(copy.expiresAt).toBeNull();
          else {
            const drift = Date.parse(copy.expiresAt!) - Date.parse(record.expiresAt);
            expect(drift).toBeGreaterThanOrEqual(0);
            expect(drift).toBeLessThan(5_000);
          }
        }
      }
    }
    expect(await target.client.instance('shop').namespace('blobs').get('logo')).toEqual(PNG);
    expect(await target.client.instance('shop').namespace('items').has('gone')).toBe(false);
  });

  it('writes JSON Lines to stdout, one instance or record per line, and can take one instance, namespace or prefix', async () => {
    const env = { KVHUB_URL: source.server.url };
    const all = await runKvhub(['export'], { env });
    expect(all.code).toBe(0);
    const lines = all.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(lines).toHaveLength(10);
    expect(lines[0]).toMatchObject({ type: 'instance' });
    expect(lines).toContainEqual({ type: 'instance', id: 'other', name: 'other' });
    expect(lines).toContainEqual({ type: 'instance', id: 'shop', name: 'Shop', description: 'the shop' });
    expect(lines).toContainEqual({ type: 'record', instanceId: 'shop', namespace: 'blobs', key: 'logo', value: Buffer.from(PNG).toString('base64'), contentType: 'image/png', expiresAt: null });
    expect(lines).toContainEqual(expect.objectContaining({ namespace: 'sessions', key: 's1', expiresAt: expect.stringMatching(/Z$/) }));

    const shop = await runKvhub(['export', 'shop'], { env });
    expect(shop.stdout.trimEnd().split('\n')).toHaveLength(8);
    const items = (await runKvhub(['export', 'shop', 'items', '--prefix', 'a'], { env })).stdout.trimEnd().split('\n');
    expect(items.map((line) => JSON.parse(line).key ?? JSON.parse(line).type)).toEqual(['instance', 'apple']);
  });

  it('exits 1 for an instance that does not exist, 2 for --prefix without a namespace', async () => {
    const env = { KVHUB_URL: source.server.url };
    expect(await runKvhub(['export', 'nowhere'], { env })).toMatchObject({ code: 1, stdout: '', stderr: "Instance 'nowhere' not found.\n" });
    expect(await runKvhub(['export', 'shop', '--prefix', 'a'], { env })).toMatchObject({ code: 2, stderr: '--prefix needs a <namespace>.\n' });
    const unwritable = join(dir, 'no', 'such', 'dir', 'x.jsonl');
    expect(await runKvhub(['export', '--out', unwritable], { env })).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Cannot write --out .*x\.jsonl: ENOENT/) });
  });

  it('draws a progress bar on stderr only when stderr is a terminal', async () => {
    const env = { KVHUB_URL: source.server.url };
    const file = join(dir, 'progress.jsonl');
    const plain = await runKvhub(['export', '--out', file], { env });
    expect(plain.stderr).toBe('');
    const terminal = new Capture(true);
    const drawn = await runKvhub(['export', '--out', file], { env, stderr: terminal });
    expect(drawn.code).toBe(0);
    expect(drawn.stderr).toMatch(/100% \| 8\/8 keys/);

    const target = await serverWithClient();
    const importing = new Capture(true);
    const size = readFileSync(file).length;
    expect((await runKvhub(['import', '--file', file, '--url', target.server.url], { stderr: importing })).code).toBe(0);
    expect(importing.text).toContain(`100% | ${size}/${size} bytes`);
    expect((await runKvhub(['import', '--url', target.server.url], { stdin: readFileSync(file, 'utf8'), stderr: new Capture(true) })).stderr).toBe('');
  });
});

describe('import', () => {
  it('reads stdin, takes hand-written lines, skips blank lines and keys that have expired since', async () => {
    const { server, client } = await serverWithClient();
    const lines = [
      '{"instanceId":"hand","namespace":"n","key":"plain","value":{"written":"by hand"}}',
      '',
      `{"type":"record","instanceId":"hand","namespace":"n","key":"stale","value":1,"expiresAt":"${new Date(Date.now() - 1000).toISOString()}"}`,
      `{"instanceId":"hand","namespace":"n","key":"fresh","value":2,"expiresAt":"${new Date(Date.now() + 60_000).toISOString()}"}`,
    ];
    const result = await runKvhub(['import', '--url', server.url], { stdin: lines.join('\n') });
    expect(result).toMatchObject({ code: 0, stdout: 'Imported 2 keys into 1 instance from stdin; skipped 1 that had expired.\n', stderr: '' });
    const n = client.instance('hand').namespace('n');
    expect(await n.get('plain')).toEqual({ written: 'by hand' });
    expect(await n.has('stale')).toBe(false);
    expect(await n.ttl('fresh')).toBeGreaterThan(50_000);
    const json = await runKvhub(['import', '--url', server.url, '--json'], { stdin: lines[0]! });
    expect(JSON.parse(json.stdout)).toEqual({ records: 1, instances: 1, expired: 0 });
  });

  it('gives an existing instance the exported name and description', async () => {
    const { server, client } = await serverWithClient();
    await client.kvStore.createInstance('Old name', undefined, { id: 'app' });
    const line = JSON.stringify({ type: 'instance', id: 'app', name: 'New name', description: 'imported' });
    expect((await runKvhub(['import', '--url', server.url], { stdin: line })).code).toBe(0);
    const reply = await client.kvStore.getInstance('app');
    expect(reply.success && reply.data.instance).toMatchObject({ name: 'New name', description: 'imported' });
  });

  it('stops at a bad line with its number, after importing the lines before it', async () => {
    const { server, client } = await serverWithClient();
    const good = '{"instanceId":"i","namespace":"n","key":"k1","value":1}';
    const cases: [string, RegExp][] = [
      ['{"instanceId":"i","namespace":"n","key":"k2",', /^Line 2 of stdin is not a kvhub export line: it is not JSON \(.*\); the 1 key before it were imported\.\n$/],
      ['{"instanceId":"i","namespace":"n","value":1}', /^Line 2 of stdin is not a kvhub export line: key: .*; the 1 key before it were imported\.\n$/],
      ['{"instanceId":"i","namespace":"n","key":"k2","value":1,"colour":"red"}', /^Line 2 of stdin is not a kvhub export line: .*colour.*\n$/],
      ['{"instanceId":"i","namespace":"n","key":"k2","value":1,"expiresAt":"tomorrow"}', /^Line 2 of stdin is not a kvhub export line: expiresAt: must be an ISO 8601 time;/],
      ['[1,2]', /^Line 2 of stdin is not a kvhub export line: /],
    ];
    for (const [bad, message] of cases) {
      const result = await runKvhub(['import', '--url', server.url], { stdin: `${good}\n${bad}\n${good.replace('k1', 'k3')}\n` });
      expect(result.code).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(message);
    }
    const n = client.instance('i').namespace('n');
    expect(await n.get('k1')).toBe(1);
    expect(await n.has('k3')).toBe(false);
    expect(await runKvhub(['import', '--file', join(dir, 'absent.jsonl'), '--url', server.url])).toMatchObject({
      code: 2,
      stderr: `Cannot read --file ${join(dir, 'absent.jsonl')}: it does not exist.\n`,
    });
  });

  it("splits its writes by the server's batch and frame limits, and reports a refused batch by line", async () => {
    const { server, client } = await serverWithClient({ limits: { maxBatch: 10, maxPayloadBytes: 64 * 1024, maxValueBytes: 8 * 1024 } });
    const big = 'x'.repeat(6000);
    const lines = Array.from({ length: 45 }, (_, i) => JSON.stringify({ instanceId: 'lim', namespace: i < 25 ? 'small' : 'big', key: `k${i}`, value: i < 25 ? i : big }));
    const file = join(dir, 'limits.jsonl');
    writeFileSync(file, `${lines.join('\n')}\n`);
    expect(await runKvhub(['import', '--file', file, '--url', server.url])).toMatchObject({ code: 0, stdout: `Imported 45 keys into 1 instance from ${file}.\n` });
    expect(await client.instance('lim').namespace('small').count()).toBe(25);
    expect(await client.instance('lim').namespace('big').count()).toBe(20);

    const tooBig = JSON.stringify({ instanceId: 'lim', namespace: 'huge', key: 'h', value: 'y'.repeat(9000) });
    const refused = await runKvhub(['import', '--url', server.url], { stdin: `${lines[0]}\n${tooBig}\n` });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^The server refused the keys of line 2 of stdin: .* \(VALUE_TOO_LARGE\); 1 key before them were imported\.\n$/);
  });
});
