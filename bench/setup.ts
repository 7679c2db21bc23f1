/**
 * Data the benchmark's workloads expect, loaded into each server before the runs, and the
 * samples of kvhub's replies the floor answers with.
 */
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import {
  INSTANCE,
  KEYSPACE,
  KV_NAMESPACE,
  PAGE_GROUPS,
  PAGE_NAMESPACE,
  PAGE_SIZE,
  VALUE,
  VALUE_JSON,
  WORKLOADS,
  keyName,
  pageKey,
  rawFrame,
  redisKey,
} from './workloads.js';

interface Reply {
  requestId: string;
  success: boolean;
  data?: unknown;
  code?: string;
  error?: string;
}

/** A minimal raw-frame client: one request at a time is all setup needs. */
async function rawSession<T>(url: string, work: (send: (frame: string) => Promise<Reply>) => Promise<T>): Promise<T> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const pending = new Map<string, (reply: Reply) => void>();
  ws.on('message', (data) => {
    const reply = JSON.parse(String(data)) as Reply;
    pending.get(reply.requestId)?.(reply);
    pending.delete(reply.requestId);
  });
  const send = (frame: string) =>
    new Promise<Reply>((resolve) => {
      const { requestId } = JSON.parse(frame) as { requestId: string };
      pending.set(requestId, resolve);
      ws.send(frame);
    });
  try {
    return await work(send);
  } finally {
    ws.close();
  }
}

function request(type: string, requestId: string, params: object): string {
  return JSON.stringify({ type: `kvStore.${type}`, requestId, params });
}

function check(reply: Reply, what: string): Reply {
  if (!reply.success) throw new Error(`${what} failed: ${reply.code} ${reply.error}`);
  return reply;
}

/** Creates the instance and writes the keyspace and the page groups into a kvhub server. */
export async function preloadKvhub(url: string): Promise<void> {
  await rawSession(url, async (send) => {
    const created = await send(request('createInstance', 'create', { name: INSTANCE, id: INSTANCE }));
    if (!created.success && created.code !== 'INSTANCE_EXISTS') check(created, 'createInstance');
    for (let start = 0; start < KEYSPACE; start += 1000) {
      const entries = Array.from({ length: Math.min(1000, KEYSPACE - start) }, (_, i) => ({ key: keyName(start + i), value: VALUE }));
      check(await send(request('setMany', `kv${start}`, { instanceId: INSTANCE, namespace: KV_NAMESPACE, entries })), 'preload setMany');
    }
    for (let g = 0; g < PAGE_GROUPS; g++) {
      const entries = Array.from({ length: PAGE_SIZE }, (_, i) => ({ key: pageKey(g, i), value: VALUE }));
      check(await send(request('setMany', `page${g}`, { instanceId: INSTANCE, namespace: PAGE_NAMESPACE, entries })), 'preload page');
    }
  });
}

/**
 * One reply of kvhub to each workload's request, by message type: the `data` the floor puts in
 * its replies so that they have the size of kvhub's. Also returns each reply's size in bytes.
 */
export async function sampleReplies(url: string): Promise<{ samples: Record<string, unknown>; bytes: Record<string, number> }> {
  return rawSession(url, async (send) => {
    const samples: Record<string, unknown> = {};
    const bytes: Record<string, number> = {};
    for (const workload of WORKLOADS) {
      const reply = check(await send(rawFrame(workload, 'sample')), `sample ${workload}`);
      samples[`kvStore.${workload}`] = reply.data;
      bytes[workload] = Buffer.byteLength(JSON.stringify(reply));
    }
    return { samples, bytes };
  });
}

/** The same data set in Redis: `kv:k<n>` and the page keys, values the JSON text. */
export async function preloadRedis(port: number): Promise<void> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0 });
  redis.on('error', () => {});
  await redis.connect();
  try {
    for (let start = 0; start < KEYSPACE; start += 1000) {
      const args: string[] = [];
      for (let n = start; n < Math.min(KEYSPACE, start + 1000); n++) args.push(redisKey(KV_NAMESPACE, keyName(n)), VALUE_JSON);
      await redis.mset(...args);
    }
    const args: string[] = [];
    for (let g = 0; g < PAGE_GROUPS; g++) for (let i = 0; i < PAGE_SIZE; i++) args.push(redisKey(PAGE_NAMESPACE, pageKey(g, i)), VALUE_JSON);
    await redis.mset(...args);
  } finally {
    await redis.quit();
  }
}
