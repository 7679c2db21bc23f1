import { Buffer } from 'node:buffer';
import { hash } from 'node:crypto';
import type { z } from 'zod';
import {
  ERROR_REPLY_TYPE,
  ErrorCode,
  isRequestType,
  messages,
  MAX_REQUEST_ID_LENGTH,
  ProtocolError,
  batchParams,
  ENVELOPE_RESERVE_BYTES,
  SINGLE_RECORD_REQUESTS,
  singleReplyRoom,
  type Params,
  type RequestType,
} from '../protocol/index.js';
import { authorize, type Principal } from './auth/index.js';
import { handlers, type HandlerContext } from './handlers.js';
import { describeError, type Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { WriteOptions } from './storage/engine.js';
import { objectJson } from './storage/record-json.js';
import { isoTime } from './iso-time.js';

/** What every request of a connection shares: engine, limits, server facts, its watch session. */
export type DispatchContext = Omit<HandlerContext, 'replyBudget' | 'afterReply' | 'writeOptions' | 'repliesAsText'> & {
  /** Where each answered request is counted. */
  metrics: Metrics;
};

/** The reply frame to one text frame, and what to run once it has been sent. */
export interface Answer {
  frame: string;
  afterSend: (() => void)[];
}

interface ReplyHead {
  type: string;
  requestId: string | null;
}

/** What {@link parseFrame} gives for a text frame that is not JSON. */
export const NOT_JSON: unique symbol = Symbol('not JSON');

/**
 * A text frame's JSON, or NOT_JSON. A frame is parsed once, here: the connection counts its
 * requests against the in-flight cap from it and dispatch answers it (a batch of five sets was
 * parsed twice before: about 3 % of the server's samples under SDK sets).
 */
export function parseFrame(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return NOT_JSON;
  }
}

/** The reply frame to a parsed text frame (one reply, or an array of replies for a batch) and its after-send tasks. */
export async function answerFrame(json: unknown, ctx: DispatchContext, logger: Logger): Promise<Answer> {
  const afterSend: (() => void)[] = [];
  const frame = await replyFrame(json, ctx, (task) => void afterSend.push(task), logger);
  return { frame, afterSend };
}

/** Runs a task once the frame holding the reply has been sent (see HandlerContext.afterReply). */
type AfterReply = HandlerContext['afterReply'];

/** What a request's handler context has of its own, besides the connection's. */
type OwnContext = Pick<HandlerContext, 'afterReply' | 'replyBudget' | 'repliesAsText'>;

async function replyFrame(frame: unknown, ctx: DispatchContext, afterReply: AfterReply, logger: Logger): Promise<string> {
  if (frame === NOT_JSON) {
    return JSON.stringify(failure({ type: ERROR_REPLY_TYPE, requestId: null }, malformed('the frame is not valid JSON')));
  }
  if (!Array.isArray(frame)) return answerRequest(frame, ctx, afterReply, ctx.limits.maxPayloadBytes - ENVELOPE_RESERVE_BYTES, logger);
  if (frame.length === 0) {
    return JSON.stringify(failure({ type: ERROR_REPLY_TYPE, requestId: null }, malformed('a batch holds at least one request')));
  }
  if (frame.length > ctx.limits.maxBatch) {
    const error = new ProtocolError(
      ErrorCode.LIMIT_EXCEEDED,
      `a batch holds at most ${ctx.limits.maxBatch} requests, not ${frame.length}`,
      { maxBatch: ctx.limits.maxBatch },
    );
    return JSON.stringify(failure({ type: ERROR_REPLY_TYPE, requestId: null }, error));
  }
  return answerBatch(frame, ctx, afterReply, logger);
}

/** The reply to a binary frame, which the protocol does not use. */
export function binaryFrameReply(): string {
  return JSON.stringify(failure({ type: ERROR_REPLY_TYPE, requestId: null }, malformed('binary frames are not accepted; send JSON text')));
}

/**
 * Runs a batch in order, each element on its own. The replies share one frame, so each element
 * may use only what the earlier ones left of maxPayloadBytes; an element that could not fit the
 * largest single-record reply is answered LIMIT_EXCEEDED without being run.
 *
 * A single-record request (SINGLE_RECORD_REQUESTS) does not wait for the elements before it to
 * finish when the engine applies calls in call order: it is started as soon as its turn comes,
 * counting each unfinished element before it at the largest single-record reply, so that the
 * writes of a batch share one group commit (one fsync) instead of each waiting for its own. Any
 * other element waits for every earlier one, then gets the exact room left as its budget.
 */
async function answerBatch(requests: unknown[], ctx: DispatchContext, afterReply: AfterReply, logger: Logger): Promise<string> {
  const elementReserve = singleReplyRoom(ctx.limits.maxValueBytes);
  /** Room left after the finished elements, exactly. */
  let remaining = ctx.limits.maxPayloadBytes - ENVELOPE_RESERVE_BYTES;
  /** Elements started and not yet counted into `remaining`, in batch order. */
  let running: Promise<string>[] = [];
  const parts: string[] = [];
  const finishRunning = async () => {
    for (const part of await Promise.all(running)) {
      remaining -= Buffer.byteLength(part) + 1;
      parts.push(part);
    }
    running = [];
  };
  for (const request of requests) {
    const startsAtOnce = ctx.engine.appliesInCallOrder && SINGLE_RECORD_REQUESTS.has(headOf(request).type as RequestType);
    if (!startsAtOnce || remaining - running.length * elementReserve < elementReserve) await finishRunning();
    if (remaining < elementReserve) {
      running.push(Promise.resolve(notRun(request, ctx.limits.maxPayloadBytes)));
    } else if (startsAtOnce) {
      running.push(answerRequest(request, ctx, afterReply, elementReserve - ENVELOPE_RESERVE_BYTES, logger));
    } else {
      running.push(answerRequest(request, ctx, afterReply, remaining - ENVELOPE_RESERVE_BYTES, logger));
      await finishRunning();
    }
  }
  await finishRunning();
  return `[${parts.join(',')}]`;
}

/** The reply to a batch element left out because the batch's reply frame has no room for it. */
function notRun(request: unknown, maxPayloadBytes: number): string {
  const error = new ProtocolError(ErrorCode.LIMIT_EXCEEDED, 'not run: the batch reply would exceed the frame size limit', { maxPayloadBytes });
  return JSON.stringify(failure(headOf(request), error));
}

/** Exactly one serialized reply for one request, whatever it holds. */
async function answerRequest(request: unknown, ctx: DispatchContext, afterReply: AfterReply, replyBudget: number, logger: Logger): Promise<string> {
  const head = headOf(request);
  const started = performance.now();
  const reply = await replyTo(request, head, ctx, { afterReply, replyBudget, repliesAsText: true }, logger);
  ctx.metrics.observe(head.type, reply.success ? undefined : reply.code, (performance.now() - started) / 1000);
  try {
    return replyJson(reply);
  } catch (error) {
    logger.error('a reply could not be serialized', { ...head, ...describeError(error) });
    return JSON.stringify(failure(head, new ProtocolError(ErrorCode.INTERNAL_ERROR, 'the server failed to encode its reply')));
  }
}

async function replyTo(
  request: unknown,
  head: ReplyHead,
  ctx: DispatchContext,
  own: OwnContext,
  logger: Logger,
): Promise<Reply> {
  if (head.requestId === null) {
    return failure(head, malformed('a request is an object with a string type and a requestId of 1 to 128 characters'));
  }
  if (!isRequestType(head.type)) {
    return failure(head, new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown message type '${head.type}'`));
  }
  const type: RequestType = head.type;
  // Omitted params mean none; null or any other non-object is a validation error.
  const { params: rawParams = {} } = request as { params?: unknown };
  const oversized = oversizedBatchParam(type, rawParams, ctx.limits.maxBatch);
  if (oversized !== undefined) return failure(head, oversized);
  const parsed = (messages[type].params as z.ZodType).safeParse(rawParams);
  if (!parsed.success) return failure(head, validationError(parsed.error));
  try {
    authorize(type, parsed.data as Params<RequestType>, ctx.principal);
    const handler = handlers[type] as (params: unknown, ctx: HandlerContext) => Promise<unknown>;
    const writeOptions = () => writeOptionsOf(type, parsed.data, ctx.principal);
    const data = await handler(parsed.data, handlerContext(ctx, own, writeOptions));
    return { type, requestId: head.requestId, success: true, data, timestamp: isoTime(Date.now()) };
  } catch (error) {
    if (error instanceof ProtocolError) {
      // The client hears STORAGE_ERROR; the operator needs to know why (the SQLite code in the cause).
      if (error.code === ErrorCode.STORAGE_ERROR) logger.error('storage failed', { type, requestId: head.requestId, ...describeError(error.cause ?? error) });
      return failure(head, error);
    }
    logger.error('request failed unexpectedly', { type, requestId: head.requestId, ...describeError(error) });
    return failure(head, new ProtocolError(ErrorCode.INTERNAL_ERROR, 'the server failed to handle this request'));
  }
}

/**
 * A handler's context: the connection's, and what is the request's own. Built field by field
 * because on Node 20 a spread of the connection's dozen fields into an object with more
 * (`{ ...ctx, replyBudget }`) took about 3 µs, a third of all the CPU a ping costs; this
 * literal's one shape takes a fraction of that. (TypeScript catches a field left out here.)
 */
function handlerContext(
  ctx: DispatchContext,
  own: OwnContext,
  writeOptions: HandlerContext['writeOptions'],
): HandlerContext {
  return {
    engine: ctx.engine,
    limits: ctx.limits,
    connectionLimits: ctx.connectionLimits,
    durability: ctx.durability,
    serverVersion: ctx.serverVersion,
    watch: ctx.watch,
    session: ctx.session,
    principal: ctx.principal,
    replyBudget: own.replyBudget,
    afterReply: own.afterReply,
    repliesAsText: own.repliesAsText,
    writeOptions,
  };
}

/**
 * A write's idempotency claim when its params carry a key: the key belongs to the principal's
 * owner, and the fingerprint is a digest of the type and the other params as validated (schema
 * order at the top, values as sent: a value with its keys reordered is another value).
 */
function writeOptionsOf(type: RequestType, params: unknown, principal: Principal): WriteOptions {
  const { idempotencyKey, ...rest } = params as { idempotencyKey?: string };
  if (idempotencyKey === undefined) return {};
  // One-shot: the same digest as createHash(...).update(type).update('\0').update(json), in half the time.
  const fingerprint = hash('sha256', `${type}\0${JSON.stringify(rest)}`, 'base64url');
  return { idempotency: { owner: principal.owner, key: idempotencyKey, fingerprint } };
}

/**
 * The `type` and `requestId` a reply echoes. A request without a usable requestId is answered
 * as `kvStore.error` with a null requestId; an overlong type is not echoed back.
 */
function headOf(request: unknown): ReplyHead {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    return { type: ERROR_REPLY_TYPE, requestId: null };
  }
  const { type, requestId } = request as { type?: unknown; requestId?: unknown };
  const usableId = typeof requestId === 'string' && requestId.length >= 1 && requestId.length <= MAX_REQUEST_ID_LENGTH;
  const usableType = typeof type === 'string' && type.length >= 1 && type.length <= MAX_REQUEST_ID_LENGTH;
  if (!usableId || !usableType) return { type: ERROR_REPLY_TYPE, requestId: null };
  return { type, requestId };
}

/** The reply's JSON: a success's data splices in the JSON text the engine already holds (see objectJson). */
function replyJson(reply: Reply): string {
  if (!reply.success || typeof reply.data !== 'object' || reply.data === null) return JSON.stringify(reply);
  const { type, requestId, data, timestamp } = reply;
  return `{"type":${JSON.stringify(type)},"requestId":${JSON.stringify(requestId)},"success":true,"data":${objectJson(data)},"timestamp":"${timestamp}"}`;
}

/** A reply envelope, as far as dispatch looks into it. */
type Reply =
  | { type: string; requestId: string; success: true; data: unknown; timestamp: string }
  | { type: string; requestId: string | null; success: false; code: string; error: string; data?: unknown; timestamp: string };

function failure(head: ReplyHead, error: ProtocolError): Reply {
  return {
    type: head.type,
    requestId: head.requestId,
    success: false,
    code: error.code,
    error: error.message,
    ...(error.data !== undefined && { data: error.data }),
    timestamp: isoTime(Date.now()),
  };
}

/**
 * LIMIT_EXCEEDED for a batch param above maxBatch, found before the schema walks it: a hostile
 * frame with millions of bad keys must not produce millions of validation issues.
 */
function oversizedBatchParam(type: RequestType, params: unknown, maxBatch: number): ProtocolError | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  for (const name of batchParams[type] ?? []) {
    const items: unknown = (params as Record<string, unknown>)[name];
    if (Array.isArray(items) && items.length > maxBatch) {
      return new ProtocolError(ErrorCode.LIMIT_EXCEEDED, `params.${name} holds ${items.length} items; at most ${maxBatch} are allowed`, {
        maxBatch,
      });
    }
  }
  return undefined;
}

function malformed(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.MALFORMED_MESSAGE, message);
}

/** Issues reported per reply, and characters per issue message: a reply stays small whatever was sent. */
const MAX_ISSUES = 20;
const MAX_ISSUE_MESSAGE = 300;

function validationError(error: z.ZodError): ProtocolError {
  const issues = error.issues.slice(0, MAX_ISSUES).map((issue) => ({
    path: issue.path.map((part) => (typeof part === 'number' ? part : String(part))),
    code: issue.code,
    message: issue.message.length > MAX_ISSUE_MESSAGE ? `${issue.message.slice(0, MAX_ISSUE_MESSAGE)}…` : issue.message,
  }));
  const where = ['params', ...(issues[0]?.path ?? [])].join('.');
  return new ProtocolError(ErrorCode.VALIDATION_ERROR, `${where}: ${issues[0]?.message ?? 'invalid'}`, { issues });
}

/**
 * How many requests a parsed text frame (see parseFrame) holds, for the per-connection in-flight
 * count: a batch counts its elements; anything else — one request, or a frame answered with a
 * single error reply — is 1.
 */
export function requestCount(frame: unknown, maxBatch: number): number {
  return Array.isArray(frame) && frame.length >= 1 && frame.length <= maxBatch ? frame.length : 1;
}

/**
 * The RATE_LIMITED answer to a parsed frame the connection has no room for: one failure per
 * request, in the place its reply would take (a batch gets an array), so that every request is
 * still answered exactly once. Nothing in the frame is run.
 */
export function rateLimitedFrame(frame: unknown, limits: { maxInFlight: number; maxBatch: number }, retryAfterMs: number): string {
  const { maxInFlight, maxBatch } = limits;
  const error = new ProtocolError(
    ErrorCode.RATE_LIMITED,
    `this connection already has ${maxInFlight} requests in flight; retry after ${retryAfterMs} ms`,
    { retryAfterMs, maxInFlight },
  );
  // A batch that is empty or above maxBatch gets one reply, as dispatch would give it.
  if (Array.isArray(frame) && frame.length >= 1 && frame.length <= maxBatch) return `[${frame.map((request) => JSON.stringify(failure(headOf(request), error))).join(',')}]`;
  return JSON.stringify(failure(headOf(frame), error));
}

/**
 * The reply envelope to one request that is already an object in this process (embedded mode):
 * the same checks and handlers as a request read from a frame, with no JSON text around it.
 */
export function replyToRequest(
  request: { type: string; requestId: string; params?: unknown },
  ctx: DispatchContext & Pick<HandlerContext, 'afterReply'>,
  logger: Logger,
): Promise<Reply> {
  // The reply is handed over as objects: its records must have their values.
  const own = { afterReply: ctx.afterReply, replyBudget: ctx.limits.maxPayloadBytes - ENVELOPE_RESERVE_BYTES, repliesAsText: false };
  return replyTo(request, headOf(request), ctx, own, logger);
}
