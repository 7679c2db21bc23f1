import type { ErrorCode, FailureReply } from '../protocol/index.js';

/**
 * Error codes the SDK raises on its own. They describe what happened on this side of the socket
 * and are never sent on the wire (the wire codes live in `protocol/errors.ts`).
 *
 * - `TIMEOUT`: no reply within the request's timeout; whether the server ran it is unknown.
 * - `CONNECTION_CLOSED`: the request was sent and the connection closed before its reply came;
 *   whether the server ran it is unknown. Reads get it whenever the connection drops. Writes carry
 *   an idempotency key and are sent again after a reconnect, so they get it only when the
 *   connection closes for good (`close()`, reconnecting disabled, an upgrade refused); retry such a
 *   write with the same `idempotencyKey` (raw `request()`), or re-read first.
 * - `NOT_CONNECTED`: the request was never sent — the client is closed, or the connection is down
 *   and reconnecting is disabled. Safe to retry on another client.
 * - `ABORTED`: the caller's `AbortSignal` fired before the reply came.
 */
export const SdkErrorCode = {
  TIMEOUT: 'TIMEOUT',
  CONNECTION_CLOSED: 'CONNECTION_CLOSED',
  NOT_CONNECTED: 'NOT_CONNECTED',
  ABORTED: 'ABORTED',
} as const;

/** One of the SDK's local error codes. */
export type SdkErrorCode = (typeof SdkErrorCode)[keyof typeof SdkErrorCode];

/** Every code a {@link KvError} can carry: a wire code from a `success: false` reply, or a local one. */
export type KvErrorCode = ErrorCode | SdkErrorCode;

/** Extra fields of a {@link KvError}. */
export interface KvErrorOptions {
  /** Details: the reply's `data` (e.g. `current` for CONFLICT, `retryAfterMs` for RATE_LIMITED). */
  data?: unknown;
  /** The underlying error (socket error, abort reason). */
  cause?: unknown;
  /** The failed reply this error was made from. */
  reply?: FailureReply;
}

/**
 * The one error class of the SDK. It carries a machine-readable `code`, the reply's `data`, and —
 * when it was made from a `success: false` reply — that reply's `type`, `requestId` and `timestamp`.
 *
 * The Codebolt-style `client.kvStore.*` methods resolve with failed replies instead of throwing
 * and reject with a `KvError` only for local failures; handle methods throw it for both.
 */
export class KvError extends Error {
  override readonly name = 'KvError';
  /** What went wrong: a wire {@link ErrorCode} or an {@link SdkErrorCode}. */
  readonly code: KvErrorCode;
  /** The reply's `data`, when it carried details. */
  readonly data: unknown;
  /** The failed reply, when this error came from the server. */
  readonly reply: FailureReply | undefined;
  /** The request `type` that failed, when known. */
  readonly type: string | undefined;
  /** The `requestId` of the failed request, when known. */
  readonly requestId: string | null | undefined;
  /** The server's reply timestamp, when this error came from a reply. */
  readonly timestamp: string | undefined;

  /** Makes an error with `code` and a human `message`. */
  constructor(code: KvErrorCode, message: string, options: KvErrorOptions & { type?: string; requestId?: string } = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.code = code;
    this.data = options.data;
    this.reply = options.reply;
    this.type = options.reply?.type ?? options.type;
    this.requestId = options.reply !== undefined ? options.reply.requestId : options.requestId;
    this.timestamp = options.reply?.timestamp;
  }

  /** The error a `success: false` reply stands for. */
  static fromReply(reply: FailureReply): KvError {
    return new KvError(reply.code, reply.error, { data: reply.data, reply });
  }
}

/** True when `error` is a {@link KvError}, and (if given) carries `code`. */
export function isKvError(error: unknown, code?: KvErrorCode): error is KvError {
  return error instanceof KvError && (code === undefined || error.code === code);
}
