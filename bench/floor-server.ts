/**
 * The floor of the comparison benchmark: the limit of one request per frame over `ws`.
 *
 *   node --import tsx bench/floor-server.ts --port 0 --samples <file.json>
 *
 * A bare `ws` server (the same `ws` package kvhub uses) set up as kvhub sets up its sockets
 * (server/index.ts, server/connection.ts): an HTTP server whose `upgrade` event hands the socket
 * to a `noServer` WebSocketServer with `perMessageDeflate: false` and `maxPayload` 16 MiB, an
 * `error` listener and a 30 s heartbeat ping per connection, the frame turned into a string by
 * kvhub's own `rawText`, the same unread-bytes check before each send, and one `ws.send` per
 * reply with the socket corked until the end of the tick, by kvhub's own `corkedUntilTick`, so
 * that the replies of one tick leave in one write as kvhub's do. If kvhub changes its socket
 * options or how it writes its replies, change this file to match, or the floor stops being the
 * floor.
 *
 * Each text frame is JSON.parsed and answered, synchronously, with JSON.stringify of a success
 * envelope whose `data` is the sample kvhub gave for that message type (captured by bench/run.ts
 * from a real kvhub reply before the runs), so the reply has the size and shape of kvhub's. No
 * storage work, no validation. It prints `floor is ready on ws://127.0.0.1:<port>` when
 * listening and exits on SIGTERM or SIGINT.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { WebSocketServer, type RawData } from 'ws';
import { corkedUntilTick, rawText, startHeartbeat } from '../server/connection.js';

const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;
const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const HEARTBEAT_INTERVAL_MS = 30_000;

const { values: flags } = parseArgs({
  options: { port: { type: 'string', default: '0' }, samples: { type: 'string' } },
  strict: true,
});
const samples: Record<string, unknown> = flags.samples === undefined ? {} : (JSON.parse(readFileSync(flags.samples, 'utf8')) as Record<string, unknown>);

const http = createServer((_request, response) => {
  response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
});
const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD_BYTES, perMessageDeflate: false });

http.on('upgrade', (request, socket, head) => {
  socket.on('error', () => {});
  wss.handleUpgrade(request, socket, head, (ws) => {
    ws.on('error', () => {});
    startHeartbeat(ws, HEARTBEAT_INTERVAL_MS);
    const corked = corkedUntilTick(socket);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (isBinary || ws.readyState !== ws.OPEN) return;
      const request = JSON.parse(rawText(data)) as { type?: string; requestId?: string };
      const type = request.type ?? 'kvStore.error';
      const reply = JSON.stringify({
        type,
        requestId: request.requestId ?? null,
        success: true,
        data: samples[type] ?? {},
        timestamp: new Date().toISOString(),
      });
      if (ws.bufferedAmount > MAX_BUFFERED_BYTES) return void ws.close(1013, 'too many unread replies');
      corked(() => ws.send(reply));
    });
  });
});

http.listen(Number(flags.port), '127.0.0.1', () => {
  const { port } = http.address() as AddressInfo;
  process.stdout.write(`floor is ready on ws://127.0.0.1:${port}\n`);
});

const stop = () => {
  for (const ws of wss.clients) ws.terminate();
  http.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
