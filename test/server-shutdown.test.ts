import { afterEach, expect, it } from 'vitest';
import { connectRaw, rid } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

it('close() sends the replies of requests in flight, then closes with 1001; every acknowledged write survives', async () => {
  server = await startTestServer();
  const client = await connectRaw(server.url);
  const acknowledged: string[] = [];
  client.socket.on('message', (data) => {
    const reply = JSON.parse(String(data));
    expect(reply.success, JSON.stringify(reply)).toBe(true);
    acknowledged.push(reply.data.record.key);
  });
  const closed = client.closed();
  for (let i = 0; i < 500; i++) {
    client.send({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'shutdown', namespace: 'n', key: `k${i}`, value: i, autoCreateInstance: true } });
  }
  // Shut down while the writes are still arriving.
  await new Promise((resolve) => client.socket.once('message', resolve));
  await server.stop();
  expect((await closed).code).toBe(1001);
  expect(acknowledged.length).toBeGreaterThan(0);

  await server.restart();
  const check = await connectRaw(server.url);
  const reply = await check.request({ type: 'kvStore.getMany', requestId: rid(), params: { instanceId: 'shutdown', namespace: 'n', keys: acknowledged } });
  expect(reply.data.items.every((item: { exists: boolean }) => item.exists)).toBe(true);
  await check.close();
});
