import type { RequestType } from './messages.js';

/** Bytes a server keeps free in every reply frame for the envelope around a reply's `data`. */
export const ENVELOPE_RESERVE_BYTES = 4096;

/**
 * The largest reply a single-record request can produce: a get carries its value twice (`value`
 * and `record.value`), plus key, namespace and instanceId at their worst JSON escaping, twice. A
 * value takes at most its base64 form on the wire (a binary value of maxValueBytes: 4 characters
 * per 3 bytes, and quotes); JSON text goes as it is stored, never longer than maxValueBytes.
 */
export function largestSingleReply(maxValueBytes: number): number {
  return 2 * (Math.ceil(maxValueBytes / 3) * 4 + 2) + 32 * 1024;
}

/** The room one single-record reply takes in a frame, its envelope included. */
export function singleReplyRoom(maxValueBytes: number): number {
  return largestSingleReply(maxValueBytes) + ENVELOPE_RESERVE_BYTES;
}

/**
 * The requests whose reply holds at most one record, so never more than
 * {@link largestSingleReply}: a batch of them can be sized before any is run, which lets a server
 * run them without waiting for the one before to finish and a client put them in one frame.
 */
export const SINGLE_RECORD_REQUESTS: ReadonlySet<RequestType> = new Set<RequestType>([
  'kvStore.get',
  'kvStore.set',
  'kvStore.delete',
  'kvStore.incr',
  'kvStore.expire',
  'kvStore.ttl',
]);

/**
 * The most {@link SINGLE_RECORD_REQUESTS} one batch frame may hold with every element sure to
 * run: each is admitted only while the room left in the reply frame could hold the largest
 * single-record reply with its envelope (see docs/protocol.md, Batch frames). 0 or 1 means
 * batching them gains nothing under these limits.
 */
export function batchCapacity(limits: { maxValueBytes: number; maxPayloadBytes: number; maxBatch: number }): number {
  const perElement = singleReplyRoom(limits.maxValueBytes);
  return Math.max(0, Math.min(limits.maxBatch, Math.floor((limits.maxPayloadBytes - ENVELOPE_RESERVE_BYTES) / perElement)));
}
