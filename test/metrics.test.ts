import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw, rid } from './helpers/raw-client.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** The value of one sample line of a Prometheus exposition, or undefined when it is absent. */
function sample(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const scrape = (server: TestServer, headers: Record<string, string> = {}) =>
  fetch(`http://127.0.0.1:${server.port}/metrics`, { headers });

describe('GET /metrics', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('counts requests by type, errors by code, latency, connections, watchers, commits and size', async () => {
    const client = await connectRaw(server.url);
    try {
      const set = (key: string) =>
        client.request({ type: 'kvStore.set', requestId: rid(), params: { instanceId: 'm', namespace: 'n', key, value: 1, autoCreateInstance: true } });
      await set('a');
      await set('b');
      await client.request({ type: 'kvStore.get', requestId: rid(), params: { instanceId: 'nope', namespace: 'n', key: 'a' } });
      await client.request({ type: 'kvStore.whatever', requestId: rid() });
      await client.request({ type: 'kvStore.watch', requestId: rid(), params: { instanceId: 'm' } });

      const response = await scrape(server);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await response.text();
      expect(sample(text, 'kvhub_requests_total{type="kvStore.set"}')).toBe(2);
      expect(sample(text, 'kvhub_requests_total{type="kvStore.get"}')).toBe(1);
      expect(sample(text, 'kvhub_requests_total{type="unknown"}')).toBe(1);
      expect(text).not.toContain('kvStore.whatever');
      expect(sample(text, 'kvhub_errors_total{code="INSTANCE_NOT_FOUND"}')).toBe(1);
      expect(sample(text, 'kvhub_errors_total{code="UNKNOWN_TYPE"}')).toBe(1);
      expect(sample(text, 'kvhub_request_duration_seconds_count')).toBe(5);
      expect(sample(text, 'kvhub_request_duration_seconds_bucket{le="+Inf"}')).toBe(5);
      expect(sample(text, 'kvhub_connections')).toBe(1);
      expect(sample(text, 'kvhub_watchers')).toBe(1);
      expect(sample(text, 'kvhub_storage_commits_total')).toBeGreaterThanOrEqual(2);
      expect(sample(text, 'kvhub_database_bytes')).toBeGreaterThan(0);
      // Every sample belongs to a declared metric.
      const declared = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
      for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
        expect(declared.has(line.split(/[{ ]/)[0]!.replace(/_(bucket|sum|count)$/, ''))).toBe(true);
      }
    } finally {
      await client.close();
    }
  });
});

describe('GET /metrics with tokens', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ tokens: [{ token: 'ops' }] });
  });
  afterAll(async () => {
    await server.close();
  });

  it('needs the Authorization header', async () => {
    expect((await scrape(server)).status).toBe(401);
    expect((await scrape(server, { authorization: 'Bearer wrong' })).status).toBe(401);
    const response = await scrape(server, { authorization: 'Bearer ops' });
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('kvhub_connections 0');
  });
});
