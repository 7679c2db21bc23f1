import { Buffer } from 'node:buffer';
import { ErrorCode, ProtocolError, singleReplyRoom } from '../protocol/index.js';
import { elementJson } from './storage/record-json.js';

/**
 * Serialized size of one element of a reply array (its JSON plus a separating comma). A record's
 * JSON is built here as the reply will write it (see record-json.ts), so it is built once.
 */
export function wireSize(item: unknown): number {
  return Buffer.byteLength(elementJson(item)) + 1;
}

/**
 * The longest leading run of `items` whose serialized size fits in `budget` bytes — at least one
 * item, so a walk always moves forward. Used by list and query, which return fewer records when
 * values are large rather than send a frame above maxPayloadBytes.
 */
export function fitToBudget<T>(items: readonly T[], budget: number): T[] {
  let used = 0;
  let count = 0;
  for (const item of items) {
    used += wireSize(item);
    if (used > budget && count > 0) break;
    count++;
  }
  return items.slice(0, count);
}

/** LIMIT_EXCEEDED unless `bytes` fit in `budget`. */
export function assertFits(bytes: number, budget: number, what: string): void {
  if (bytes > budget) {
    throw new ProtocolError(ErrorCode.LIMIT_EXCEEDED, `${what} would exceed the reply size limit`, {
      replyBytes: bytes,
      budgetBytes: budget,
    });
  }
}

/**
 * RangeError unless a frame of `maxPayloadBytes` holds a get of any value: a server or embedded
 * store with such limits refuses to start. `name` is how the caller's options name the limit.
 */
export function assertReplyRoom(limits: { maxValueBytes: number; maxPayloadBytes: number }, name: string): void {
  const room = singleReplyRoom(limits.maxValueBytes);
  if (room > limits.maxPayloadBytes) {
    throw new RangeError(
      `${name} must be at least ${room} for a maxValueBytes of ${limits.maxValueBytes}, so that a get of any value fits in a reply (it carries the value twice, a binary one as base64)`,
    );
  }
}
