import { JSON_CONTENT_TYPE } from '../protocol/limits.js';
import type { KvRecord } from '../protocol/index.js';
import { KvError } from './errors.js';

/** The content type a `Uint8Array` value is written with when the caller names none. */
export const BINARY_CONTENT_TYPE = 'application/octet-stream';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i;

/**
 * Padded base64 of `bytes`. Written out rather than using `Buffer` (Node only) or `btoa`
 * (which needs a binary string, built one char at a time) so the SDK runs unchanged in browsers.
 */
export function bytesToBase64(bytes: Uint8Array): string {
  let out = '';
  const full = bytes.length - (bytes.length % 3);
  for (let i = 0; i < full; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - full;
  if (rest === 1) {
    const n = bytes[full]! << 16;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const n = (bytes[full]! << 16) | (bytes[full + 1]! << 8);
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + '=';
  }
  return out;
}

/** The bytes of a base64 string (padding optional). Throws a TypeError on a character outside the alphabet. */
export function base64ToBytes(text: string): Uint8Array {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 61 /* '=' */) end--;
  const out = new Uint8Array(Math.floor((end * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i);
    const v = code < 128 ? LOOKUP[code]! : -1;
    if (v < 0) throw new TypeError(`invalid base64 character at ${i}`);
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return o === out.length ? out : out.subarray(0, o);
}

/** A value and content type as they go on the wire. */
export interface WireValue {
  /** A JSON value, or base64 text for a binary content type. */
  value: unknown;
  /** Absent for JSON values written without an explicit content type. */
  contentType?: string;
}

/**
 * The wire form of a value the caller wants to write: a `Uint8Array` (a Node `Buffer` too)
 * becomes base64 with `contentType` (default `application/octet-stream`); anything else is sent
 * as given. A `Uint8Array` with `contentType: 'application/json'` is refused here, because the
 * server would otherwise store the base64 text as a JSON string.
 */
export function toWireValue(value: unknown, contentType?: string): WireValue {
  if (value instanceof Uint8Array) {
    if (contentType === JSON_CONTENT_TYPE) {
      throw new KvError('VALIDATION_ERROR', `a Uint8Array value needs a binary content type, not '${JSON_CONTENT_TYPE}'`);
    }
    return { value: bytesToBase64(value), contentType: contentType ?? BINARY_CONTENT_TYPE };
  }
  return contentType !== undefined ? { value, contentType } : { value };
}

/** A record's value as the caller wants it: bytes for a binary content type, the JSON value otherwise. */
export function fromWireValue(value: unknown, contentType: string | undefined): unknown {
  if (contentType !== undefined && contentType !== JSON_CONTENT_TYPE && typeof value === 'string') {
    return base64ToBytes(value);
  }
  return value;
}

/** A copy of `record` whose `value` is decoded with {@link fromWireValue}. */
export function decodeRecord(record: KvRecord): KvRecord {
  return record.contentType === JSON_CONTENT_TYPE ? record : { ...record, value: fromWireValue(record.value, record.contentType) };
}
