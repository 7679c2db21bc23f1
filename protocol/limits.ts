/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;

/** Fixed bounds of the wire contract; the configurable ones are reported in `hello.limits`. */
export const MAX_REQUEST_ID_LENGTH = 128;
export const MAX_INSTANCE_ID_LENGTH = 128;
export const MAX_NAMESPACE_LENGTH = 256;
export const MAX_KEY_BYTES = 1024;
export const MAX_CONTENT_TYPE_LENGTH = 255;
export const MAX_VALUE_DEPTH = 100;
/** Ten years: the largest `ttlMs` accepted. */
export const MAX_TTL_MS = 315_360_000_000;
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 100;
export const MAX_QUERY_LIMIT = 1000;
export const DEFAULT_QUERY_LIMIT = 100;
/** Most `where` conditions in one query. */
export const MAX_QUERY_CONDITIONS = 100;

/** Defaults of the configurable limits. */
export const DEFAULT_LIMITS = {
  /** Largest JSON text (or binary byte count) of one value. */
  maxValueBytes: 1024 * 1024,
  /** Largest frame in either direction. */
  maxPayloadBytes: 16 * 1024 * 1024,
  /** Most keys, entries, ops or batch elements in one request. */
  maxBatch: 1000,
} as const;

/** The content type of JSON values; any other content type marks a binary value. */
export const JSON_CONTENT_TYPE = 'application/json';

/** True when `ttlMs` is an integer in 1..MAX_TTL_MS (otherwise the reply is INVALID_TTL). */
export function isValidTtl(ttlMs: number): boolean {
  return Number.isInteger(ttlMs) && ttlMs >= 1 && ttlMs <= MAX_TTL_MS;
}

/** Length of `text` in UTF-8 bytes, without allocating. Lone surrogates count as 3 bytes. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * The protocol's rules for a key (1 to MAX_KEY_BYTES UTF-8 bytes, well-formed) and for an instance
 * id, namespace or content type (1 to `maxLength` UTF-16 code units, well-formed), checked without
 * zod, which the SDK does not load: the SDK groups only requests that the server's schemas accept.
 */
export function isValidKey(key: unknown): key is string {
  return typeof key === 'string' && key.length > 0 && typeof key.isWellFormed === 'function' && key.isWellFormed() && utf8Length(key) <= MAX_KEY_BYTES;
}

/** See {@link isValidKey}. */
export function isValidName(name: unknown, maxLength: number): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= maxLength && typeof name.isWellFormed === 'function' && name.isWellFormed();
}
