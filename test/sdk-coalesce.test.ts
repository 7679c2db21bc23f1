/**
 * The SDK's grouping of gets into getManys and its reading of a getMany's reply, as pure
 * functions; test/coalesced-gets.test.ts runs them end to end against a real server.
 */
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import type { Reply } from '../protocol/index.js';
import { getFrameBytes, getManyFrame, getManyOutcome, getTarget, groupGets, type QueuedGet } from '../sdk/coalesce.js';

const queued = (requestId: string, instanceId: string, namespace: string, key: string): QueuedGet => ({
  requestId,
  target: { instanceId, namespace, key },
  valueOnly: false,
});

describe('getTarget', () => {
  it('takes plain gets only, with keys the server would accept', () => {
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'k' })).toEqual({ instanceId: 'i', namespace: 'n', key: 'k' });
    expect(getTarget('kvStore.ttl', { instanceId: 'i', namespace: 'n', key: 'k' })).toBeUndefined();
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'k', extra: 1 })).toBeUndefined();
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: '' })).toBeUndefined();
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'é'.repeat(513) })).toBeUndefined();
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: 'é'.repeat(512) })).toBeDefined();
    expect(getTarget('kvStore.get', { instanceId: 'i', namespace: 'n', key: '\ud800' })).toBeUndefined();
    class Params {
      instanceId = 'i';
      namespace = 'n';
      key = 'k';
    }
    expect(getTarget('kvStore.get', new Params())).toBeUndefined();
  });
});

describe('groupGets', () => {
  it('groups by instance and namespace, in the order of each group first get, within the key and byte caps', () => {
    const run = [queued('1', 'i', 'a', 'x'), queued('2', 'i', 'b', 'y'), queued('3', 'i', 'a', 'z'), queued('4', 'ia', '', 'w'), queued('5', 'i', 'a', 'v')];
    const ids = (groups: QueuedGet[][]) => groups.map((group) => group.map((get) => get.requestId));
    // 'i' + 'a' and 'ia' + '' must not share a group.
    expect(ids(groupGets(run, 32, Infinity))).toEqual([['1', '3', '5'], ['2'], ['4']]);
    expect(ids(groupGets(run, 2, Infinity))).toEqual([['1', '3'], ['2'], ['4'], ['5']]);
    // A getMany of 'i'/'a' counts 256 + 8 + 8 bytes, and 6 + 2 + 1 more per one-character key.
    expect(ids(groupGets(run, 32, 272 + 2 * 9))).toEqual([['1', '3'], ['2'], ['4'], ['5']]);
    expect(ids(groupGets(run, 32, 272 + 3 * 9))).toEqual([['1', '3', '5'], ['2'], ['4']]);
  });

  it('counts no fewer bytes than the getMany frame takes, whatever the names hold', () => {
    const names = ['k', '\u0000\u001f"\\', 'é'.repeat(100), '😀'.repeat(50), '\u2028x'];
    for (const instanceId of names) {
      for (const key of names) {
        const run = [queued('1', instanceId, 'n', key), queued('2', instanceId, 'n', key)];
        const frame = getManyFrame('12345', run);
        const bytes = Buffer.byteLength(frame);
        // A cap one byte below the frame's size must split the two gets: the bound is not below the size.
        expect(groupGets(run, 32, bytes - 1)).toHaveLength(2);
        expect(Buffer.byteLength(JSON.stringify({ type: 'kvStore.get', requestId: '12345', params: run[0]!.target }))).toBeLessThanOrEqual(
          getFrameBytes('12345', run[0]!.target),
        );
      }
    }
  });
});

describe('gets that want the value alone', () => {
  const valueOnly = (requestId: string, key: string): QueuedGet => ({ ...queued(requestId, 'i', 'n', key), valueOnly: true });
  const envelope = { type: 'kvStore.getValues' as const, requestId: '9', timestamp: '2026-11-22T00:00:00.000Z' };

  it('go in a getValues of their own, apart from the gets of the same namespace that want records', () => {
    const run = [queued('1', 'i', 'n', 'a'), valueOnly('2', 'b'), queued('3', 'i', 'n', 'c'), valueOnly('4', 'd')];
    const groups = groupGets(run, 32, Infinity);
    expect(groups.map((group) => group.map((get) => get.requestId))).toEqual([['1', '3'], ['2', '4']]);
    expect(JSON.parse(getManyFrame('7', groups[0]!))).toEqual({ type: 'kvStore.getMany', requestId: '7', params: { instanceId: 'i', namespace: 'n', keys: ['a', 'c'] } });
    expect(JSON.parse(getManyFrame('8', groups[1]!))).toEqual({ type: 'kvStore.getValues', requestId: '8', params: { instanceId: 'i', namespace: 'n', keys: ['b', 'd'] } });
  });

  it('are answered with the value and its content type, and a getValues item without them is malformed', () => {
    const gets = [valueOnly('1', 'a'), valueOnly('2', 'b')];
    const items = [
      { key: 'a', exists: true, value: 'AAH+', contentType: 'application/octet-stream' },
      { key: 'b', exists: false, value: null, contentType: null },
    ];
    expect(getManyOutcome({ ...envelope, success: true, data: { items } } as unknown as Reply, gets)).toEqual({
      kind: 'answered',
      replies: [
        { type: 'kvStore.get', requestId: '1', success: true, data: { value: 'AAH+', exists: true, contentType: 'application/octet-stream' }, timestamp: envelope.timestamp },
        { type: 'kvStore.get', requestId: '2', success: true, data: { value: null, exists: false, contentType: null }, timestamp: envelope.timestamp },
      ],
    });
    const without = [{ key: 'a', exists: true, value: 'AAH+' }, items[1]];
    expect(getManyOutcome({ ...envelope, success: true, data: { items: without } } as unknown as Reply, gets)).toEqual({ kind: 'malformed' });
  });
});

describe('getManyOutcome', () => {
  const gets = [queued('1', 'i', 'n', 'a'), queued('2', 'i', 'n', 'b')];
  const envelope = { type: 'kvStore.getMany' as const, requestId: '9', timestamp: '2026-11-22T00:00:00.000Z' };

  it('answers each get from its item, under its own type and requestId', () => {
    const items = [
      { key: 'a', exists: true, value: 1, record: { key: 'a' } },
      { key: 'b', exists: false, value: null, record: null },
    ];
    const outcome = getManyOutcome({ ...envelope, success: true, data: { items } } as Reply, gets);
    expect(outcome).toEqual({
      kind: 'answered',
      replies: [
        { type: 'kvStore.get', requestId: '1', success: true, data: { value: 1, exists: true, record: { key: 'a' } }, timestamp: envelope.timestamp },
        { type: 'kvStore.get', requestId: '2', success: true, data: { value: null, exists: false, record: null }, timestamp: envelope.timestamp },
      ],
    });
  });

  it('calls a reply malformed when its items are not one per get, of its key', () => {
    const item = (key: string) => ({ key, exists: false, value: null, record: null });
    for (const items of [[item('a')], [item('b'), item('a')], [item('a'), null], 'none']) {
      expect(getManyOutcome({ ...envelope, success: true, data: { items } } as unknown as Reply, gets)).toEqual({ kind: 'malformed' });
    }
  });

  it('splits on LIMIT_EXCEEDED and VALIDATION_ERROR, and gives any other failure to each get with its own copy of data', () => {
    for (const code of ['LIMIT_EXCEEDED', 'VALIDATION_ERROR'] as const) {
      expect(getManyOutcome({ ...envelope, success: false, code, error: 'no' }, gets)).toEqual({ kind: 'split', tooLarge: code === 'LIMIT_EXCEEDED' });
    }
    const limited = { ...envelope, success: false as const, code: 'RATE_LIMITED' as const, error: 'busy', data: { retryAfterMs: 50 } };
    const outcome = getManyOutcome(limited, gets);
    if (outcome.kind !== 'answered') throw new Error(`expected answered, got ${outcome.kind}`);
    expect(outcome.replies).toEqual(gets.map(({ requestId }) => ({ ...limited, type: 'kvStore.get', requestId })));
    const [first, second] = outcome.replies as { data: unknown }[];
    expect(first!.data).not.toBe(second!.data);
  });
});
