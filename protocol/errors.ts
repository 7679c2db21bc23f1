/**
 * Error codes that cross the wire. A reply with `success: false` carries exactly one of these
 * in `code`. The SDK adds its own local codes (TIMEOUT, CONNECTION_CLOSED, ...) that are never sent.
 */
export const ErrorCode = {
  MALFORMED_MESSAGE: 'MALFORMED_MESSAGE',
  UNKNOWN_TYPE: 'UNKNOWN_TYPE',
  VALIDATION_ERROR: 'VALIDATION_ERROR',
  VERSION_MISMATCH: 'VERSION_MISMATCH',
  INSTANCE_NOT_FOUND: 'INSTANCE_NOT_FOUND',
  INSTANCE_EXISTS: 'INSTANCE_EXISTS',
  CONFLICT: 'CONFLICT',
  TYPE_MISMATCH: 'TYPE_MISMATCH',
  INVALID_TTL: 'INVALID_TTL',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  LIMIT_EXCEEDED: 'LIMIT_EXCEEDED',
  COMPACTED: 'COMPACTED',
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  RATE_LIMITED: 'RATE_LIMITED',
  STORAGE_ERROR: 'STORAGE_ERROR',
  INTERNAL_ERROR: 'INTERNAL_ERROR',
} as const;

/** One of the wire error codes. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An error that becomes a `success: false` reply with this `code`, `message` as the reply's
 * `error` sentence and `data` as its details. The server's handlers and storage engines throw it;
 * anything else thrown is reported as INTERNAL_ERROR.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

/**
 * A VALIDATION_ERROR about one param, shaped like the schema's own: the `error` sentence reads
 * `params.<path>: <message>` and `data.issues` holds the one issue. A string path is dotted
 * (`entries.3.value`), its digit parts array indexes.
 */
export function invalidParam(path: string | readonly (string | number)[], message: string): ProtocolError {
  const issuePath = typeof path === 'string' ? path.split('.').map((part) => (/^\d+$/.test(part) ? Number(part) : part)) : path;
  return new ProtocolError(ErrorCode.VALIDATION_ERROR, `${['params', ...issuePath].join('.')}: ${message}`, {
    issues: [{ path: issuePath, code: 'custom', message }],
  });
}
