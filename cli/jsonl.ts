import { z } from 'zod';
import type { Instance, KvRecord } from '../sdk/index.js';
import { JSON_CONTENT_TYPE } from '../protocol/limits.js';
import { ContentType, InstanceId, IsoTime, Key, Namespace } from '../protocol/messages.js';

/**
 * The lines of `kvhub export` and `kvhub import`: JSON Lines, one object per line.
 *
 * - `{"type":"instance","id":"app","name":"App","description":"…"}` — an instance, before its records.
 * - `{"type":"record","instanceId":"app","namespace":"users","key":"u1","value":{…},
 *   "contentType":"application/json","expiresAt":null}` — one key. A binary value is its base64
 *   text with its binary content type, as on the wire; `expiresAt` is the absolute expiry (ISO 8601).
 *
 * Versions, revisions and timestamps are the server's to give and are not carried over. For lines
 * written by hand, `type` may be left out of a record, and so may `contentType` (JSON) and `expiresAt` (none).
 */
export const InstanceLine = z.strictObject({
  type: z.literal('instance'),
  id: InstanceId,
  name: z.string().min(1),
  description: z.string().optional(),
});
export type InstanceLine = z.infer<typeof InstanceLine>;

export const RecordLine = z.strictObject({
  type: z.literal('record').optional(),
  instanceId: InstanceId,
  namespace: Namespace,
  key: Key,
  value: z.unknown().refine((value) => value !== undefined, { message: 'value is required' }),
  contentType: ContentType.optional(),
  expiresAt: IsoTime.refine((text) => !Number.isNaN(Date.parse(text)), { message: 'must be an ISO 8601 time' }).nullable().optional(),
});
export type RecordLine = z.infer<typeof RecordLine>;

const Line = z.union([InstanceLine, RecordLine]);

/** The export line of an instance. */
export function instanceLine(instance: Instance): string {
  const line: InstanceLine = { type: 'instance', id: instance.id, name: instance.name, ...(instance.description !== undefined && { description: instance.description }) };
  return JSON.stringify(line);
}

/** The export line of a record as it came on the wire (a binary value still base64). */
export function recordLine(record: KvRecord): string {
  // Keys in the documented order; the value as the wire has it.
  const line = {
    type: 'record',
    instanceId: record.instanceId,
    namespace: record.namespace,
    key: record.key,
    value: record.value,
    contentType: record.contentType,
    expiresAt: record.expiresAt,
  };
  return JSON.stringify(line);
}

/** Reads one line; throws an Error whose message says what is wrong with it. */
export function parseLine(text: string): InstanceLine | (RecordLine & { contentType: string; expiresAt: string | null }) {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`it is not JSON (${(error as Error).message})`);
  }
  const parsed = Line.safeParse(json);
  if (!parsed.success) {
    // The union's own issue only says "invalid input": report the issue of the shape the line meant.
    const meant = typeof json === 'object' && json !== null && (json as { type?: unknown }).type === 'instance' ? InstanceLine : RecordLine;
    const issue = meant.safeParse(json).error?.issues[0];
    const where = issue === undefined || issue.path.length === 0 ? '' : `${issue.path.join('.')}: `;
    throw new Error(`${where}${issue?.message ?? 'not an instance or record line'}`);
  }
  const line = parsed.data;
  if (line.type === 'instance') return line;
  return { ...line, contentType: line.contentType ?? JSON_CONTENT_TYPE, expiresAt: line.expiresAt ?? null };
}
