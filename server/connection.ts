import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RawData, WebSocket } from 'ws';
import { answerFrame, binaryFrameReply, parseFrame, rateLimitedFrame, requestCount, type Answer, type DispatchContext } from './dispatch.js';
import { describeError, type Logger } from './logger.js';
import type { PendingWork } from './pending-work.js';
import type { WatchSession } from './watch.js';

/** What a connection needs from its server. */
export interface ConnectionDeps {
  /** Everything a request sees except the connection's own watch session. */
  ctx: Omit<DispatchContext, 'session'>;
  logger: Logger;
  /** Unread bytes after which the connection is closed with 1013. */
  maxBufferedBytes: number;
  heartbeatIntervalMs: number;
  /** Requests (batch elements counted one by one) in flight on the connection above which a frame is answered RATE_LIMITED. */
  maxInFlight: number;
  /** True once the server is shutting down: frames that arrive then are not answered. */
  isClosing(): boolean;
  /** Frames being answered, which the server waits for before it closes the database. */
  work: Pick<PendingWork, 'start' | 'finish'>;
}

const CLOSE_TRY_AGAIN_LATER = 1013;

/**
 * The `retryAfterMs` of a RATE_LIMITED reply. Requests are answered in microseconds to
 * milliseconds (a group commit takes one fsync), so the room is usually back well within this.
 */
export const RATE_LIMIT_RETRY_AFTER_MS = 50;

/**
 * Serves one WebSocket: answers each frame with exactly one reply frame, pushes watch events,
 * pings to find dead peers, and closes a peer that does not read what it is sent.
 */
export function serveConnection(ws: WebSocket, request: IncomingMessage, deps: ConnectionDeps): void {
  const { logger, maxBufferedBytes } = deps;
  const peer = `${request.socket.remoteAddress}:${request.socket.remotePort}`;
  const corked = corkedUntilTick(request.socket);
  const session: WatchSession = {
    push(frame) {
      if (ws.readyState !== ws.OPEN) return false;
      corked(() => ws.send(frame));
      return true;
    },
    bufferedBytes: () => ws.bufferedAmount,
    close: (code, reason) => ws.close(code, reason),
  };
  const ctx: DispatchContext = { ...deps.ctx, session };

  // Without an error listener, one invalid frame (bad UTF-8, oversize) would crash the process.
  ws.on('error', (error) => logger.debug('websocket error', { peer, ...describeError(error) }));

  startHeartbeat(ws, deps.heartbeatIntervalMs);
  ws.on('close', () => ctx.watch.dropSession(session));

  const send = ({ frame, afterSend }: Answer) => {
    if (ws.readyState !== ws.OPEN) return;
    // What is still unsent from earlier frames measures whether the peer reads; a single large
    // reply may exceed the cap on its own and is fine.
    if (ws.bufferedAmount > maxBufferedBytes) {
      logger.warn('closing a connection that does not read what it is sent', { peer, bufferedBytes: ws.bufferedAmount });
      ctx.watch.dropSession(session);
      ws.close(CLOSE_TRY_AGAIN_LATER, 'too many unread replies');
      return;
    }
    corked(() => ws.send(frame));
    for (const task of afterSend) task();
  };

  // Requests received and not yet answered. Without a cap, a client that pipelines without
  // waiting could make the server hold any number of parsed requests and pending replies.
  let inFlight = 0;
  const { maxInFlight, work } = deps;
  const failed = (error: unknown) => logger.error('failed to answer a frame', { peer, ...describeError(error) });
  /** Sends `frame` once it is ready; `count` requests stay in flight until then. */
  const answer = (frame: Promise<Answer>, count: number) => {
    inFlight += count;
    work.start();
    const finish = () => {
      inFlight -= count;
      work.finish();
    };
    // One reaction per frame, not a then/catch/finally chain: this runs for every frame.
    frame.then(
      (ready) => {
        try {
          send(ready);
        } catch (error) {
          failed(error);
        } finally {
          finish();
        }
      },
      (error: unknown) => {
        try {
          failed(error);
        } finally {
          finish();
        }
      },
    );
  };
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (deps.isClosing() || ws.readyState !== ws.OPEN) return;
    if (isBinary) return answer(Promise.resolve({ frame: binaryFrameReply(), afterSend: [] }), 0);
    const json = parseFrame(rawText(data));
    const count = requestCount(json, ctx.limits.maxBatch);
    if (inFlight + count > maxInFlight) {
      // Nothing in the frame runs; a batch is admitted with all its elements or none.
      const refused = rateLimitedFrame(json, { maxInFlight, maxBatch: ctx.limits.maxBatch }, RATE_LIMIT_RETRY_AFTER_MS);
      return answer(Promise.resolve({ frame: refused, afterSend: [] }), 0);
    }
    answer(answerFrame(json, ctx, logger), count);
  });
}

/** A text frame's payload as a string; `ws` hands it over as one Buffer, or as fragments. */
export function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/**
 * Runs sends with `socket` corked until the current tick's callbacks are done, so the replies
 * that one commit releases together (and the events it announces) leave in one write system
 * call instead of one each. ws corks around its own multi-part frames; the counts nest.
 */
export function corkedUntilTick(socket: Duplex): (send: () => void) => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return (send) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    send();
  };
}

/**
 * Pings the peer every `intervalMs` and terminates it when the previous ping went unanswered, so
 * a dead peer (half-open socket) does not hold its connection forever. Stops when the socket closes.
 */
export function startHeartbeat(ws: WebSocket, intervalMs: number): void {
  let alive = true;
  ws.on('pong', () => void (alive = true));
  const heartbeat = setInterval(() => {
    if (!alive) return void ws.terminate();
    alive = false;
    ws.ping();
  }, intervalMs);
  heartbeat.unref();
  ws.on('close', () => clearInterval(heartbeat));
}
