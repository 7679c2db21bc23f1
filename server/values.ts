import { Buffer } from 'node:buffer';
import { ErrorCode, invalidParam, JSON_CONTENT_TYPE, MAX_VALUE_DEPTH, ProtocolError } from '../protocol/index.js';
import type { StoredValue } from './storage/engine.js';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}|[A-Za-z0-9+/]{3})?$/;

/**
 * Turns a value from the wire into what an engine stores, enforcing the contract's rules:
 * JSON nesting of at most MAX_VALUE_DEPTH, no lone surrogates (SQLite would silently replace
 * them), at most `maxValueBytes` of JSON text or of binary bytes, valid base64 for binary.
 */
export function encodeValue(value: unknown, contentType: string | undefined, maxValueBytes: number, where = 'value'): StoredValue {
  if (contentType === undefined || contentType === JSON_CONTENT_TYPE) {
    assertStorableJson(value, where);
    const json = JSON.stringify(value);
    if (Buffer.byteLength(json) > maxValueBytes) {
      throw new ProtocolError(ErrorCode.VALUE_TOO_LARGE, `${where} is larger than ${maxValueBytes} bytes of JSON`, {
        maxValueBytes,
      });
    }
    return { contentType: JSON_CONTENT_TYPE, json };
  }
  if (typeof value !== 'string' || !BASE64.test(value)) {
    throw invalidParam(where, `a binary value (contentType '${contentType}') must be a base64 string`);
  }
  const bytes = Buffer.from(value, 'base64');
  if (bytes.byteLength > maxValueBytes) {
    throw new ProtocolError(ErrorCode.VALUE_TOO_LARGE, `${where} is larger than ${maxValueBytes} bytes`, { maxValueBytes });
  }
  return { contentType, bytes };
}

/** The wire form of a stored value: parsed JSON, or canonical padded base64 of the bytes. */
export function decodeValue(contentType: string, json: string | null, bytes: Uint8Array | null): unknown {
  if (contentType === JSON_CONTENT_TYPE) return JSON.parse(json ?? 'null');
  return Buffer.from(bytes ?? new Uint8Array()).toString('base64');
}

/**
 * Walks the value iteratively (a recursive walk could overflow the stack on hostile input)
 * and rejects what JSON cannot carry faithfully.
 */
function assertStorableJson(value: unknown, where: string): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (typeof node === 'string') {
      if (!node.isWellFormed()) throw invalidParam(where, 'contains a string with a lone surrogate');
      continue;
    }
    if (typeof node === 'number') {
      if (!Number.isFinite(node)) throw invalidParam(where, 'contains a number JSON cannot represent');
      continue;
    }
    if (node === null || typeof node === 'boolean') continue;
    if (typeof node !== 'object') throw invalidParam(where, 'is not a JSON value');
    if (depth > MAX_VALUE_DEPTH) throw invalidParam(where, `is nested deeper than ${MAX_VALUE_DEPTH} levels`);
    if (Array.isArray(node)) {
      for (const item of node) stack.push([item, depth + 1]);
    } else {
      for (const [name, item] of Object.entries(node)) {
        if (!name.isWellFormed()) throw invalidParam(where, 'contains a property name with a lone surrogate');
        stack.push([item, depth + 1]);
      }
    }
  }
}
