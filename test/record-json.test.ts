import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { elementJson, KeyReading, objectJson, Reading, recordJson, valueJson } from '../server/storage/record-json.js';
import { openSqliteEngine } from '../server/storage/sqlite.js';
import { encodeValue } from '../server/values.js';
import type { KvRecord } from '../protocol/index.js';

// Values as the wire can carry them: JSON without -0 (JSON has no -0; it arrives as 0).
const wireValue = fc.jsonValue().map((value) => JSON.parse(JSON.stringify(value)) as unknown);
const name = fc.string({ minLength: 1, maxLength: 20 });

describe('JSON spliced from stored text', () => {
  it('gives exactly what JSON.stringify gives for records, reply data and events the engine built', async () => {
    const engine = openSqliteEngine(':memory:');
    await engine.createInstance({ id: 'i', name: 'i' });
    await fc.assert(
      fc.asyncProperty(name, name, wireValue, fc.option(fc.integer({ min: 3_600_000, max: 1e9 }), { nil: undefined }), async (namespace, key, value, ttlMs) => {
        const written = await engine.set({
          instanceId: 'i',
          namespace,
          key,
          value: encodeValue(value, undefined, 1 << 20),
          ...(ttlMs !== undefined && { ttlMs }),
        });
        const read = (await engine.get('i', namespace, key))!;
        // Read for a reply only: the value is left unparsed, and every text is the same.
        const [unparsed] = await engine.getMany('i', namespace, [key], Infinity, { serializeOnly: true });
        const unparsedOne = (await engine.get('i', namespace, key, { serializeOnly: true }))!;
        for (const reply of [unparsed!, unparsedOne]) {
          expect(reply.value).toBeUndefined();
          expect(recordJson(reply)).toBe(JSON.stringify(read));
          expect(objectJson(new Reading(reply))).toBe(JSON.stringify({ value: read.value, exists: true, record: read }));
          expect(elementJson(new KeyReading(key, reply))).toBe(JSON.stringify({ key, exists: true, value: read.value, record: read }));
        }
        for (const record of [written, read]) {
          expect(recordJson(record)).toBe(JSON.stringify(record));
          const getReply = { value: record.value, exists: true, record };
          expect(objectJson(getReply)).toBe(JSON.stringify(getReply));
          // get's reply carries its own text, with the fields of the plain reply.
          expect(JSON.stringify(new Reading(record))).toBe(JSON.stringify(getReply));
          for (const reading of [new Reading(record), new Reading(null), new Reading({ ...record })]) {
            expect(objectJson(reading)).toBe(JSON.stringify(reading));
          }
          // query's reply holds its records one level down, next to plain fields.
          const queryReply = { result: { records: [record], total: 1, limit: 10, offset: 0 } };
          expect(objectJson(queryReply)).toBe(JSON.stringify(queryReply));
          expect(valueJson([record, null])).toBe(JSON.stringify([record, null]));
          // Elements of list and getMany replies, measured before the reply is written.
          const item = { key, exists: true, value: record.value, record };
          expect(elementJson(item)).toBe(JSON.stringify(item));
          expect(elementJson(record)).toBe(JSON.stringify(record));
          expect(elementJson(key)).toBe(JSON.stringify(key));
          // getMany's items carry their own text, with the fields of the plain item.
          const readings = [new KeyReading(key, record), new KeyReading(key, null), new KeyReading(key, { ...record })];
          expect(JSON.stringify(readings[0])).toBe(JSON.stringify(item));
          for (const reading of readings) expect(elementJson(reading)).toBe(JSON.stringify(reading));
          const getManyReply = { items: readings };
          expect(objectJson(getManyReply)).toBe(JSON.stringify(getManyReply));
        }
      }),
      { numRuns: 300, seed: 7 },
    );
    await engine.close();
  });

  it('builds each version of a key its own text, though the text of a cached row is kept', async () => {
    const engine = openSqliteEngine(':memory:');
    const write = (value: unknown) =>
      engine.set({ instanceId: 'i', namespace: 'n', key: 'k', value: encodeValue(value, undefined, 100), autoCreate: true });
    for (const value of ['first', { second: true }, 3]) {
      const written = await write(value);
      for (const record of [written, (await engine.get('i', 'n', 'k'))!, (await engine.get('i', 'n', 'k'))!]) {
        expect(JSON.parse(recordJson(record))).toMatchObject({ value, version: written.version });
        expect(recordJson(record)).toBe(JSON.stringify(record));
      }
    }
    await engine.close();
  });

  it('keeps the text of a cached row from what a caller does to a record it was handed', async () => {
    // Reopened, so that the row is read from the file, not kept from its write with its text.
    const path = join(mkdtempSync(join(tmpdir(), 'kvhub-record-json-')), 'db.sqlite');
    const writer = openSqliteEngine(path);
    await writer.set({ instanceId: 'i', namespace: 'n', key: 'k', value: encodeValue('v', undefined, 100), autoCreate: true });
    await writer.close();
    const engine = openSqliteEngine(path);
    const handed = (await engine.get('i', 'n', 'k'))! as { version: number };
    handed.version = 999;
    recordJson(handed as KvRecord);
    expect(JSON.parse(recordJson((await engine.get('i', 'n', 'k'))!))).toMatchObject({ version: 1 });
    await engine.close();
    rmSync(dirname(path), { recursive: true, force: true });
  });

  it('serializes binary records, objects that are not records and undefined fields as JSON.stringify does', async () => {
    const engine = openSqliteEngine(':memory:');
    const record = await engine.set({
      instanceId: 'i',
      namespace: 'n',
      key: 'bytes',
      value: encodeValue('AAEC', 'application/octet-stream', 100),
      autoCreate: true,
    });
    const data = { record, skipped: undefined, list: [1, { a: null }], nested: { record } };
    expect(objectJson(data)).toBe(JSON.stringify(data));
    // A binary value read for a reply only still comes out as its base64 string.
    const forReply = (await engine.get('i', 'n', 'bytes', { serializeOnly: true }))!;
    expect([forReply.value, recordJson(forReply)]).toEqual(['AAEC', JSON.stringify(record)]);
    expect(() => objectJson(new Reading({ ...record, value: undefined }))).toThrow(TypeError);
    expect(objectJson({})).toBe('{}');
    await engine.close();
  });
});
