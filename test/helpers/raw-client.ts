import { once } from 'node:events';
import WebSocket from 'ws';

/** A bare `ws` client for protocol-level tests: it sends exactly the frames a test writes. */
export interface RawClient {
  readonly socket: WebSocket;
  /** Sends a frame as given: strings as text, Buffers as binary. */
  send(frame: string | Buffer | object): void;
  /** The next frame the server sends, parsed as JSON. */
  next<T = any>(): Promise<T>;
  /** Sends a request object and waits for the next frame. */
  request<T = any>(frame: object): Promise<T>;
  /** Resolves with the close code and reason. */
  closed(): Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

let counter = 0;
/** A fresh requestId for tests. */
export const rid = () => `t-${++counter}`;

export async function connectRaw(url: string, options: WebSocket.ClientOptions = {}): Promise<RawClient> {
  const socket = new WebSocket(url, { maxPayload: 256 * 1024 * 1024, ...options });
  socket.on('error', () => {});
  const queue: unknown[] = [];
  const waiting: ((frame: unknown) => void)[] = [];
  socket.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    const waiter = waiting.shift();
    if (waiter) waiter(frame);
    else queue.push(frame);
  });
  // Not events.once: it would also reject on 'error', unhandled when the upgrade is refused.
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once('close', (code, reason) => resolve({ code, reason: String(reason) })),
  );
  await once(socket, 'open');
  const next = <T>() =>
    new Promise<T>((resolve) => {
      if (queue.length > 0) resolve(queue.shift() as T);
      else waiting.push(resolve as (frame: unknown) => void);
    });
  const send = (frame: string | Buffer | object) => {
    if (typeof frame === 'string') socket.send(frame);
    else if (Buffer.isBuffer(frame)) socket.send(frame, { binary: true });
    else socket.send(JSON.stringify(frame));
  };
  return {
    socket,
    send,
    next,
    request(frame) {
      send(frame);
      return next();
    },
    closed: () => closed,
    async close() {
      if (socket.readyState === WebSocket.CLOSED) return;
      socket.close();
      await closed;
    },
  };
}
