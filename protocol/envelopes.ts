import { z } from 'zod';
import { ErrorCode } from './errors.js';
import { messages, RequestId, type ReplyData, type RequestType } from './messages.js';

type Messages = typeof messages;

/**
 * The request envelope of one type: `{ type, requestId, params }`. Params are strict; fields
 * beside the envelope's three are ignored, so envelopes can grow without breaking old servers.
 */
function requestEnvelope<T extends RequestType>(type: T) {
  return z.object({
    type: z.literal(type),
    requestId: RequestId,
    params: messages[type].params,
  });
}

type RequestEnvelopes = { [T in RequestType]: ReturnType<typeof requestEnvelope<T>> };
const requestEnvelopes = Object.fromEntries(
  (Object.keys(messages) as RequestType[]).map((type) => [type, requestEnvelope(type)]),
) as RequestEnvelopes;

/** Any request frame, discriminated by `type`. */
export const Request = z.discriminatedUnion(
  'type',
  Object.values(requestEnvelopes) as unknown as [RequestEnvelopes[RequestType], ...RequestEnvelopes[RequestType][]],
);
export type Request = z.infer<typeof Request>;
export type RequestOf<T extends RequestType> = Extract<Request, { type: T }>;

/** `type` of the reply to a frame that could not be read as a request. */
export const ERROR_REPLY_TYPE = 'kvStore.error';

export const ErrorCodeSchema = z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]);

/** A successful reply to request type `T`. */
export interface SuccessReply<T extends RequestType = RequestType> {
  type: T;
  requestId: string;
  success: true;
  data: ReplyData<T>;
  timestamp: string;
}

/** A failed reply; `requestId` is null when the request had no usable one. */
export interface FailureReply<T extends string = string> {
  type: T;
  requestId: string | null;
  success: false;
  code: ErrorCode;
  error: string;
  data?: unknown;
  timestamp: string;
}

/** The reply to request type `T`: a `success: false` reply is a normal outcome, not an exception. */
export type Reply<T extends RequestType = RequestType> = SuccessReply<T> | FailureReply<T>;

/** Runtime schema of a successful reply to `type` (used by tests and strict clients). */
export function successReplySchema<T extends RequestType>(type: T) {
  return z.object({
    type: z.literal(type),
    requestId: RequestId,
    success: z.literal(true),
    data: messages[type].data as Messages[T]['data'],
    timestamp: z.iso.datetime(),
  });
}

/** Runtime schema of any failed reply. */
export const FailureReplySchema = z.object({
  type: z.string(),
  requestId: RequestId.nullable(),
  success: z.literal(false),
  code: ErrorCodeSchema,
  error: z.string().min(1),
  data: z.unknown().optional(),
  timestamp: z.iso.datetime(),
});
