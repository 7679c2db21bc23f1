import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestTypes, type ParamsInput, type RequestType } from '../protocol/index.js';
import { connectRaw, rid, type RawClient } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { bearer } from './helpers/upgrade.js';

/** Params of every request type aimed at instance `id`: the compiler insists on every type. */
const samples: { [T in RequestType]: (id: string) => ParamsInput<T> } = {
  'kvStore.createInstance': (id) => ({ name: 'made', id }),
  'kvStore.getInstance': (id) => ({ instanceId: id }),
  'kvStore.listInstances': () => ({}),
  'kvStore.updateInstance': (id) => ({ instanceId: id, name: 'renamed' }),
  'kvStore.deleteInstance': (id) => ({ instanceId: id }),
  'kvStore.get': (id) => ({ instanceId: id, namespace: 'n', key: 'k' }),
  'kvStore.set': (id) => ({ instanceId: id, namespace: 'n', key: 'k', value: 2 }),
  'kvStore.delete': (id) => ({ instanceId: id, namespace: 'n', key: 'k' }),
  'kvStore.deleteNamespace': (id) => ({ instanceId: id, namespace: 'n' }),
  'kvStore.query': (id) => ({ query: { from: { instance: id, namespace: 'n' } } }),
  'kvStore.getNamespaces': (id) => ({ instanceId: id }),
  'kvStore.getRecordCount': (id) => ({ instanceId: id }),
  'kvStore.hello': () => ({ protocolVersion: 1 }),
  'kvStore.ping': () => ({}),
  'kvStore.stats': (id) => ({ instanceId: id }),
  'kvStore.getMany': (id) => ({ instanceId: id, namespace: 'n', keys: ['k'] }),
  'kvStore.getValues': (id) => ({ instanceId: id, namespace: 'n', keys: ['k'] }),
  'kvStore.setMany': (id) => ({ instanceId: id, namespace: 'n', entries: [{ key: 'k', value: 2 }] }),
  'kvStore.setEach': (id) => ({ instanceId: id, namespace: 'n', entries: [{ key: 'k', value: 3 }] }),
  'kvStore.list': (id) => ({ instanceId: id, namespace: 'n', prefix: 'k' }),
  'kvStore.incr': (id) => ({ instanceId: id, namespace: 'n', key: 'c' }),
  'kvStore.expire': (id) => ({ instanceId: id, namespace: 'n', key: 'k', ttlMs: 60_000 }),
  'kvStore.ttl': (id) => ({ instanceId: id, namespace: 'n', key: 'k' }),
  'kvStore.watch': (id) => ({ instanceId: id, namespace: 'n' }),
  'kvStore.unwatch': () => ({ subscriptionId: 'none' }),
  'kvStore.atomic': (id) => ({ instanceId: id, checks: [{ namespace: 'n', key: 'k', version: 1 }], ops: [{ op: 'incr', namespace: 'n', key: 'c' }] }),
};

/** Written here, not taken from the server, so that a misclassification there fails this test. */
const WRITES = new Set<RequestType>([
  'kvStore.createInstance',
  'kvStore.updateInstance',
  'kvStore.deleteInstance',
  'kvStore.set',
  'kvStore.delete',
  'kvStore.deleteNamespace',
  'kvStore.setMany',
  'kvStore.setEach',
  'kvStore.incr',
  'kvStore.expire',
  'kvStore.atomic',
]);
/** Types that name no instance: allowed for every token. */
const CONNECTION_ONLY = new Set<RequestType>(['kvStore.hello', 'kvStore.ping', 'kvStore.listInstances', 'kvStore.unwatch']);

const own = (type: string) => `own:${type}`;
const other = (type: string) => `other:${type}`;
/** Odd ids the scoped token is NOT given, next to the one it is: case, LIKE wildcards, look-alikes. */
const MINE = 'app_1';
const LOOKALIKES = ['App_1', 'APP_1', 'app%1', 'app_%', 'app_1 ', ' app_1', 'app_', 'app', 'app_10', '%', '_', '*', 'аpp_1', 'app_1\u0000', 'app\\_1'];

let server: TestServer;
let admin: RawClient;
beforeAll(async () => {
  const scoped = [...requestTypes.map(own), MINE, 'auto-own'];
  server = await startTestServer({
    tokens: [
      { token: 'admin' },
      { token: 'scoped', instances: scoped },
      { token: 'reader', instances: scoped, readonly: true },
      { token: 'every-reader', instances: '*', readonly: true },
    ],
  });
  admin = await connectRaw(server.url, bearer('admin'));
});
afterAll(async () => {
  await admin.close();
  await server.close();
});

async function send(client: RawClient, type: string, params: object): Promise<any> {
  return client.request({ type, requestId: rid(), params });
}
async function ok(client: RawClient, type: string, params: object): Promise<any> {
  const reply = await send(client, type, params);
  expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
  return reply.data;
}
/** An instance with n/k = 1 (version 1) and n/c = 5. */
async function seed(id: string): Promise<void> {
  await ok(admin, 'kvStore.createInstance', { id, name: id });
  await ok(admin, 'kvStore.set', { instanceId: id, namespace: 'n', key: 'k', value: 1 });
  await ok(admin, 'kvStore.set', { instanceId: id, namespace: 'n', key: 'c', value: 5 });
}
/** What the admin sees of an instance: its record and its two keys. */
async function snapshot(id: string) {
  const instance = await send(admin, 'kvStore.getInstance', { instanceId: id });
  const items = await send(admin, 'kvStore.getMany', { instanceId: id, namespace: 'n', keys: ['k', 'c'] });
  return { instance: instance.data ?? instance.code, items: items.data?.items?.map((item: any) => [item.value, item.record?.version, item.record?.expiresAt]) };
}
/** A connection whose events are dropped, so `request` reads the reply. */
async function connectAs(token: string): Promise<RawClient> {
  return connectRaw(server.url, bearer(token));
}

describe.each(requestTypes)('%s', (type) => {
  const params = samples[type];
  const touchesInstance = !CONNECTION_ONLY.has(type);

  it('a scoped token: FORBIDDEN on another instance, which stays as it was; allowed on its own', async () => {
    await seed(other(type));
    if (type !== 'kvStore.createInstance') await seed(own(type));
    const before = await snapshot(other(type));
    const client = await connectAs('scoped');
    const elsewhere = await send(client, type, params(other(type)));
    if (touchesInstance) expect(elsewhere, JSON.stringify(elsewhere)).toMatchObject({ success: false, code: 'FORBIDDEN' });
    else expect(elsewhere).toMatchObject({ success: true });
    expect(await snapshot(other(type))).toEqual(before);
    await ok(client, type, params(own(type)));
    await client.close();
  });

  it(`a read-only token: ${WRITES.has(type) ? 'FORBIDDEN even on its own instance' : 'allowed on its own instance'}`, async () => {
    const id = own(type);
    if (type === 'kvStore.createInstance') await send(admin, 'kvStore.deleteInstance', { instanceId: id });
    else if ((await snapshot(id)).instance === 'INSTANCE_NOT_FOUND') await seed(id);
    const before = await snapshot(id);
    for (const token of ['reader', 'every-reader']) {
      const client = await connectAs(token);
      const reply = await send(client, type, params(id));
      if (WRITES.has(type)) expect(reply, JSON.stringify(reply)).toMatchObject({ success: false, code: 'FORBIDDEN' });
      else expect(reply, JSON.stringify(reply)).toMatchObject({ success: true });
      await client.close();
    }
    expect(await snapshot(id)).toEqual(before);
  });
});

describe('scoped tokens', () => {
  it('listInstances lists only the token’s instances', async () => {
    await seed(MINE);
    const client = await connectAs('scoped');
    const { instances } = await ok(client, 'kvStore.listInstances', {});
    const ids: string[] = instances.map((instance: { id: string }) => instance.id);
    expect(ids).toContain(MINE);
    expect(ids.every((id) => id === MINE || id === 'auto-own' || id.startsWith('own:'))).toBe(true);
    const everyone = await connectAs('every-reader');
    const all = await ok(everyone, 'kvStore.listInstances', {});
    expect(all.instances.map((instance: { id: string }) => instance.id)).toEqual(
      (await ok(admin, 'kvStore.listInstances', {})).instances.map((instance: { id: string }) => instance.id),
    );
    await client.close();
    await everyone.close();
  });

  it('a global stats and a createInstance without id are FORBIDDEN; `instances=*` may run a global stats', async () => {
    const client = await connectAs('scoped');
    expect(await send(client, 'kvStore.stats', {})).toMatchObject({ success: false, code: 'FORBIDDEN' });
    expect(await send(client, 'kvStore.createInstance', { name: 'anonymous' })).toMatchObject({ success: false, code: 'FORBIDDEN' });
    await client.close();
    const everyone = await connectAs('every-reader');
    await ok(everyone, 'kvStore.stats', {});
    await everyone.close();
  });

  it('autoCreate cannot create an instance outside the list, but can create one in it', async () => {
    const client = await connectAs('scoped');
    for (const [type, extra] of [
      ['kvStore.set', { key: 'k', value: 1 }],
      ['kvStore.setMany', { entries: [{ key: 'k', value: 1 }] }],
      ['kvStore.incr', { key: 'k' }],
    ] as const) {
      const reply = await send(client, type, { instanceId: 'auto-other', namespace: 'n', autoCreateInstance: true, ...extra });
      expect(reply).toMatchObject({ success: false, code: 'FORBIDDEN' });
    }
    const atomic = await send(client, 'kvStore.atomic', { instanceId: 'auto-other', autoCreateInstance: true, ops: [{ op: 'set', namespace: 'n', key: 'k', value: 1 }] });
    expect(atomic).toMatchObject({ success: false, code: 'FORBIDDEN' });
    expect(await send(admin, 'kvStore.getInstance', { instanceId: 'auto-other' })).toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    await ok(client, 'kvStore.set', { instanceId: 'auto-own', namespace: 'n', key: 'k', value: 1, autoCreateInstance: true });
    const reader = await connectAs('reader');
    expect(await send(reader, 'kvStore.set', { instanceId: 'auto-own', namespace: 'n', key: 'k', value: 2, autoCreateInstance: true })).toMatchObject({ code: 'FORBIDDEN' });
    await reader.close();
    await client.close();
  });

  it('a batch is authorized element by element', async () => {
    await seed('batch-other');
    const client = await connectAs('scoped');
    client.send([
      { type: 'kvStore.get', requestId: 'b1', params: { instanceId: MINE, namespace: 'n', key: 'k' } },
      { type: 'kvStore.set', requestId: 'b2', params: { instanceId: 'batch-other', namespace: 'n', key: 'k', value: 9 } },
      { type: 'kvStore.query', requestId: 'b3', params: { query: { from: { instance: 'batch-other' } } } },
    ]);
    const replies = await client.next<any[]>();
    expect(replies.map((reply) => reply.success || reply.code)).toEqual([true, 'FORBIDDEN', 'FORBIDDEN']);
    expect((await ok(admin, 'kvStore.get', { instanceId: 'batch-other', namespace: 'n', key: 'k' })).value).toBe(1);
    await client.close();
  });

  it('a watch on its own instance sees none of another instance’s changes', async () => {
    await seed('watched-other');
    const client = await connectAs('scoped');
    await ok(client, 'kvStore.watch', { instanceId: MINE });
    await ok(admin, 'kvStore.set', { instanceId: 'watched-other', namespace: 'n', key: 'k', value: 'secret' });
    await ok(admin, 'kvStore.set', { instanceId: MINE, namespace: 'n', key: 'mark', value: 'mine' });
    const event = await client.next();
    expect(event).toMatchObject({ type: 'kvStore.event', event: { instanceId: MINE, key: 'mark' } });
    await client.close();
  });
});

describe('odd characters never reach another instance’s or namespace’s data', () => {
  it.each(LOOKALIKES)('instance id %j is another instance for a token scoped to app_1', async (id) => {
    await seed(id);
    const client = await connectAs('scoped');
    for (const type of requestTypes.filter((t) => !CONNECTION_ONLY.has(t) && t !== 'kvStore.deleteInstance')) {
      const reply = await send(client, type, samples[type](id));
      expect(reply, `${type} ${JSON.stringify(reply)}`).toMatchObject({ success: false, code: 'FORBIDDEN' });
    }
    expect(await snapshot(id)).toMatchObject({ items: [[1, 1, null], [5, 1, null]] });
    await client.close();
  });

  it('`%`, `_` and case in namespaces, keys and prefixes are literal', async () => {
    const id = MINE;
    const keys = ['a_b', 'axb', 'A_b', 'a%b', 'a%', 'a', '_', '%', 'a_b_c', 'ä_b'];
    for (const namespace of ['ns', 'NS', 'n_', 'nx', 'n%', 'n%x']) {
      await ok(admin, 'kvStore.setMany', { instanceId: id, namespace, entries: keys.map((key) => ({ key, value: `${namespace}/${key}` })) });
    }
    const client = await connectAs('scoped');
    const list = async (namespace: string, prefix: string) =>
      (await ok(client, 'kvStore.list', { instanceId: id, namespace, prefix, keysOnly: true })).keys as string[];
    expect(await list('ns', 'a_')).toEqual(['a_b', 'a_b_c']);
    expect(await list('ns', '%')).toEqual(['%']);
    expect(await list('ns', '_')).toEqual(['_']);
    expect(await list('ns', 'a%')).toEqual(['a%', 'a%b']);
    expect(await list('ns', 'A')).toEqual(['A_b']);
    expect(await list('n_', 'a_b')).toEqual(['a_b', 'a_b_c']);
    const records = (await ok(client, 'kvStore.list', { instanceId: id, namespace: 'n_' })).records as { value: string }[];
    expect(records.every((record) => record.value.startsWith('n_/'))).toBe(true);
    expect((await ok(client, 'kvStore.getRecordCount', { instanceId: id, namespace: 'n%' })).count).toBe(keys.length);
    const queried = await ok(client, 'kvStore.query', { query: { from: { instance: id, namespace: 'n_' }, where: [{ field: 'key', operator: 'startsWith', value: 'a_' }] } });
    expect(queried.result.records.map((record: any) => record.value)).toEqual(['n_/a_b', 'n_/a_b_c']);
    const contains = await ok(client, 'kvStore.query', { query: { from: { instance: id, namespace: 'ns' }, where: [{ field: 'key', operator: 'contains', value: '%' }] } });
    expect(contains.result.records.map((record: any) => record.key).sort()).toEqual(['%', 'a%', 'a%b']);
    expect((await ok(client, 'kvStore.get', { instanceId: id, namespace: 'NS', key: 'A_b' })).value).toBe('NS/A_b');
    expect((await ok(client, 'kvStore.deleteNamespace', { instanceId: id, namespace: 'n_' })).deletedCount).toBe(keys.length);
    for (const namespace of ['nx', 'n%', 'n%x', 'ns', 'NS']) {
      expect((await ok(client, 'kvStore.getRecordCount', { instanceId: id, namespace })).count, namespace).toBe(keys.length);
    }
    await client.close();
  });

  it('a prefix watch with `_` and `%` gets only literal matches', async () => {
    const client = await connectAs('scoped');
    await ok(client, 'kvStore.watch', { instanceId: MINE, namespace: 'w_', prefix: 'p_' });
    for (const [namespace, key] of [['wx', 'p_1'], ['w_', 'px1'], ['w_', 'P_1'], ['w%', 'p_1'], ['w_', 'p%'], ['w_', 'p_ok']]) {
      await ok(admin, 'kvStore.set', { instanceId: MINE, namespace, key, value: 1 });
    }
    expect(await client.next()).toMatchObject({ event: { namespace: 'w_', key: 'p_ok' } });
    await client.close();
  });
});
