import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DEFAULT_LIMITS, FailureReplySchema, requestTypes, successReplySchema, type RequestType } from '../protocol/index.js';
import { startCli, type CliProcess } from './helpers/cli.js';

/**
 * Hostile input against ONE real server, run as its own process through the CLI so that its
 * memory can be read from /proc. `npm test` fuzzes 1,000 frames (about 10 s); `npm run fuzz`
 * fuzzes 10,000 (about 40 s of one core), and KVHUB_FUZZ_FRAMES sets any other count.
 */
const FUZZ_FRAMES = Number(process.env['KVHUB_FUZZ_FRAMES'] ?? 1000);
/**
 * A fixed seed keeps CI reproducible; KVHUB_FUZZ_SEED=<n> replays a run fast-check reported, and
 * KVHUB_FUZZ_SEED=random explores new inputs.
 */
const FUZZ_SEED = ((seed) => (seed === 'random' ? undefined : Number(seed)))(process.env['KVHUB_FUZZ_SEED'] ?? '20261122');
const { maxBatch, maxValueBytes, maxPayloadBytes } = DEFAULT_LIMITS;
/** Close codes RFC 6455 prescribes for what the fuzzer breaks at the WebSocket level. */
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_INVALID_DATA = 1007;
const CLOSE_TOO_BIG = 1009;

let dir: string;
let cli: CliProcess;
let url: string;
let crashed: string | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kvhub-fuzz-'));
  cli = startCli(['--port', '0', '--db', join(dir, 'fuzz.db'), '--durability', 'normal']);
  cli.child.once('exit', (code, signal) => void (crashed = `server exited (code ${code}, signal ${signal}): ${cli.stderr.slice(-2000)}`));
  url = await cli.ready();
}, 30_000);

afterAll(async () => {
  if (cli !== undefined && cli.child.exitCode === null) {
    cli.child.kill('SIGTERM');
    await cli.exited();
  }
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** The server process's resident set, in MiB, from /proc (Linux). */
function rssMiB(pid: number): number | undefined {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- a client that sees everything

interface Conn {
  readonly ws: WebSocket;
  /** The next frame that is not an event push, or the close; rejects after `ms`. */
  next(ms?: number): Promise<{ frame: unknown } | { closed: number }>;
  readonly closeCode: number | undefined;
}

async function open(): Promise<Conn> {
  const ws = new WebSocket(url, { maxPayload: 256 * 1024 * 1024, perMessageDeflate: false });
  ws.on('error', () => undefined);
  const frames: unknown[] = [];
  let waiter: (() => void) | undefined;
  let closeCode: number | undefined;
  ws.on('message', (data, isBinary) => {
    const frame: unknown = isBinary ? { binary: true } : JSON.parse(String(data));
    // Pushes from the watches the fuzzer happens to create are not replies.
    if (typeof frame === 'object' && frame !== null && (frame as { type?: unknown }).type === 'kvStore.event') return;
    frames.push(frame);
    waiter?.();
  });
  ws.on('close', (code) => {
    closeCode = code;
    waiter?.();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('close', () => reject(new Error('closed before open')));
  });
  return {
    ws,
    get closeCode() {
      return closeCode;
    },
    next(ms = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (frames.length > 0) {
            clearTimeout(timer);
            waiter = undefined;
            resolve({ frame: frames.shift() });
          } else if (closeCode !== undefined) {
            clearTimeout(timer);
            waiter = undefined;
            resolve({ closed: closeCode });
          }
        };
        const timer = setTimeout(() => reject(new Error(`no reply and no close within ${ms} ms`)), ms);
        waiter = check;
        check();
      });
    },
  };
}

// ---------------------------------------------------------------- what the fuzzer sends

/** One valid params object per request type: the compiler finds a type added to the protocol. */
const VALID: { [T in RequestType]: Record<string, unknown> } = {
  'kvStore.createInstance': { name: 'fz', description: 'fuzz', id: 'fz-new' },
  'kvStore.getInstance': { instanceId: 'fz' },
  'kvStore.listInstances': {},
  'kvStore.updateInstance': { instanceId: 'fz', name: 'fz', description: 'd' },
  'kvStore.deleteInstance': { instanceId: 'fz-new' },
  'kvStore.get': { instanceId: 'fz', namespace: 'n', key: 'k' },
  'kvStore.set': { instanceId: 'fz', namespace: 'n', key: 'k', value: { a: 1 }, autoCreateInstance: true, ttlMs: 60_000 },
  'kvStore.delete': { instanceId: 'fz', namespace: 'n', key: 'k', ifVersion: 1 },
  'kvStore.deleteNamespace': { instanceId: 'fz', namespace: 'gone' },
  'kvStore.query': {
    query: { from: { instance: 'fz', namespace: 'n' }, where: [{ field: 'value.a', operator: 'gte', value: 0 }], select: ['key', 'value'], orderBy: { field: 'key', direction: 'desc' }, limit: 10, offset: 0 },
  },
  'kvStore.getNamespaces': { instanceId: 'fz' },
  'kvStore.getRecordCount': { instanceId: 'fz', namespace: 'n' },
  'kvStore.hello': { protocolVersion: 1 },
  'kvStore.ping': {},
  'kvStore.stats': { instanceId: 'fz' },
  'kvStore.getMany': { instanceId: 'fz', namespace: 'n', keys: ['k', 'k2'] },
  'kvStore.getValues': { instanceId: 'fz', namespace: 'n', keys: ['k', 'k2'] },
  'kvStore.setMany': { instanceId: 'fz', namespace: 'n', entries: [{ key: 'k2', value: 2 }, { key: 'b', value: 'AAEC', contentType: 'application/octet-stream' }], autoCreateInstance: true },
  'kvStore.setEach': { instanceId: 'fz', namespace: 'n', entries: [{ key: 'k3', value: 3, ttlMs: 60_000 }, { key: 'k', value: 4, ifVersion: 1 }], autoCreateInstance: true },
  'kvStore.list': { instanceId: 'fz', namespace: 'n', prefix: 'k', limit: 5, keysOnly: false, reverse: true },
  'kvStore.incr': { instanceId: 'fz', namespace: 'n', key: 'counter', by: 2, autoCreateInstance: true },
  'kvStore.expire': { instanceId: 'fz', namespace: 'n', key: 'k', ttlMs: 60_000 },
  'kvStore.ttl': { instanceId: 'fz', namespace: 'n', key: 'k' },
  'kvStore.atomic': {
    instanceId: 'fz',
    checks: [{ namespace: 'n', key: 'absent', version: null }],
    ops: [
      { op: 'set', namespace: 'n', key: 'a1', value: 1 },
      { op: 'incr', namespace: 'n', key: 'a2', by: 1 },
      { op: 'delete', namespace: 'n', key: 'a3' },
    ],
    autoCreateInstance: true,
  },
  'kvStore.watch': { instanceId: 'fz', namespace: 'n', prefix: 'k', fromRevision: 0 },
  'kvStore.unwatch': { subscriptionId: 'nope' },
};

const LONE_SURROGATES = ['\ud800', '\udfff', 'a\ud83d', '\ude00b', '\ud83d\ud83d'];

/** Values that break a param's type or size: every one is a JSON value (or undefined, i.e. dropped). */
const weird: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, 0, -0, -1, 1.5, 2 ** 53, -(2 ** 53), 1e308, -1e308, 315_360_000_001, '', ' ', '0', 'null', '__proto__', {}, [], [null]),
  fc.constantFrom(...LONE_SURROGATES),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(1024, 1025, 128, 129, 256, 257).map((n) => 'x'.repeat(n)),
  fc.constantFrom(1024, 1025).map((n) => 'é'.repeat(Math.ceil(n / 2))),
  fc.constantFrom({ __proto__: null, polluted: true }, JSON.parse('{"__proto__":{"polluted":true}}'), { constructor: { prototype: { polluted: true } } }),
  fc.integer({ min: 90, max: 1000 }).map(nested),
  fc.integer({ min: maxBatch - 1, max: maxBatch + 1 }).map((n) => Array.from({ length: n }, (_, i) => `k${i}`)),
);

/** `[[[…0…]]]`, `depth` levels deep. */
function nested(depth: number): unknown {
  let value: unknown = 0;
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { d: value };
  return value;
}

/** A value whose JSON text is exactly maxValueBytes (+ delta) bytes. */
const boundaryValue = fc.constantFrom(-1, 0, 1).map((delta) => 'v'.repeat(maxValueBytes - 2 + delta));

/** Replaces, drops or adds one field, at the top or one level down (objects inside arrays included). */
function mutate(target: Record<string, unknown>, big = false): fc.Arbitrary<Record<string, unknown>> {
  const keys = Object.keys(target);
  const extraKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'extra', 'idempotencyKey', '', 'ünïcødé', '\ud800');
  const ops: fc.Arbitrary<Record<string, unknown>>[] = [
    fc.tuple(extraKey, weird).map(([key, value]) => withField(target, key, value)),
  ];
  if (keys.length > 0) {
    const key = fc.constantFrom(...keys);
    ops.push(
      key.map((k) => withField(target, k, undefined)),
      fc.tuple(key, weird).map(([k, value]) => withField(target, k, value)),
    );
    // Megabyte values are slow to send: only where asked for, so that a batch stays small.
    if (big) ops.push(fc.tuple(key, boundaryValue).map(([k, value]) => withField(target, k, value)));
    const inner = keys.filter((k) => typeof target[k] === 'object' && target[k] !== null);
    if (inner.length > 0) {
      ops.push(
        fc.constantFrom(...inner).chain((k) => {
          const child = target[k];
          if (Array.isArray(child)) {
            const first = child[0];
            const mutatedFirst = typeof first === 'object' && first !== null && !Array.isArray(first) ? mutate(first as Record<string, unknown>) : weird;
            return mutatedFirst.map((m) => withField(target, k, [m, ...child.slice(1)]));
          }
          return mutate(child as Record<string, unknown>).map((m) => withField(target, k, m));
        }),
      );
    }
  }
  return fc.oneof(...ops);
}

/** A copy of `target` with `key` set to `value` (dropped when undefined); `__proto__` becomes an own key, as JSON.parse makes it. */
function withField(target: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(target)) if (k !== key) Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true, configurable: true });
  if (value !== undefined) Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

let seq = 0;
const requestId = fc.oneof(
  { weight: 12, arbitrary: fc.constant(null).map(() => `f${++seq}`) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, '', 'x'.repeat(128), 'x'.repeat(129), 7, null, ['r'], {}, '\ud800') },
);
const requestType = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom(...requestTypes) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, '', 'kvStore.nope', 'kvstore.get', 'kvStore.get ', 'x'.repeat(200), 42, null, '__proto__', 'constructor', 'toString', 'hasOwnProperty') },
);

/** A request of any type, valid or mutated in params and envelope; `big` allows megabyte values. */
const requestOf = (big: boolean): fc.Arbitrary<unknown> => fc
  .record({ type: requestType, requestId, mutateParams: fc.boolean(), paramsShape: fc.nat(20), bigValue: fc.nat(20) })
  .chain(({ type, requestId: id, mutateParams, paramsShape, bigValue }) => {
    const base = typeof type === 'string' && Object.hasOwn(VALID, type) ? VALID[type as RequestType] : { instanceId: 'fz' };
    const params: fc.Arbitrary<unknown> =
      paramsShape === 0 ? weird : paramsShape === 1 ? fc.constant(undefined) : mutateParams ? mutate(base, big && bigValue === 0) : fc.constant(base);
    return params.map((p) => {
      const envelope: Record<string, unknown> = {};
      if (type !== undefined) envelope['type'] = type;
      if (id !== undefined) envelope['requestId'] = id;
      if (p !== undefined) envelope['params'] = p;
      return envelope;
    });
  })
  .chain((envelope) => fc.oneof({ weight: 9, arbitrary: fc.constant(envelope) }, { weight: 1, arbitrary: mutate(envelope) }));
const request = requestOf(true);
const smallRequest = requestOf(false);

/** What one fuzz case sends, and what the server must do about it. */
type Case =
  | { kind: 'text'; text: string }
  | { kind: 'binary'; bytes: Uint8Array }
  | { kind: 'fragments'; parts: Buffer[]; binary: boolean; pingBetween: boolean }
  | { kind: 'raw'; bytes: Buffer; close: number };

const jsonText = fc.oneof(
  { weight: 10, arbitrary: request.map((r) => JSON.stringify(r)) },
  { weight: 2, arbitrary: fc.array(smallRequest, { minLength: 1, maxLength: 12 }).map((rs) => JSON.stringify(rs)) },
  // Batches at and around maxBatch, and an empty one.
  {
    weight: 1,
    arbitrary: fc.constantFrom(0, 1, maxBatch, maxBatch + 1).map((n) => JSON.stringify(Array.from({ length: n }, (_, i) => ({ type: 'kvStore.ping', requestId: `b${i}` })))),
  },
  // A batch param far above maxBatch.
  { weight: 1, arbitrary: fc.constant(JSON.stringify({ type: 'kvStore.getMany', requestId: 'huge', params: { instanceId: 'fz', namespace: 'n', keys: Array(20_000).fill(1) } })) },
  // Nesting far deeper than any limit, as value and as the frame itself.
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 50_000 }).map((d) => `{"type":"kvStore.set","requestId":"deep","params":{"instanceId":"fz","namespace":"n","key":"k","value":${'['.repeat(d)}${']'.repeat(d)}}}`) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 50_000 }).map((d) => `${'['.repeat(d)}${']'.repeat(d)}`) },
  // Escaped lone surrogates in keys (valid UTF-8 on the wire, ill-formed once parsed).
  { weight: 1, arbitrary: fc.constantFrom('\\ud800', '\\udfff', 'a\\ud83d').map((s) => `{"type":"kvStore.set","requestId":"ls","params":{"instanceId":"fz","namespace":"n","key":"${s}","value":1}}`) },
);

const garbageText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.constantFrom('', ' ', 'null', 'true', '0', '"s"', '{', '[', '[]', '{}', '[{}]', '{"type":', '\u0000', '\ufeff{}', 'NaN', '1e999', '{"__proto__":1}'),
  jsonText.map((t) => t.slice(0, Math.max(0, t.length - 1))),
);

/** A client-to-server frame built by hand (RFC 6455 §5.2), masked unless told not to. */
function rawFrame(opts: { fin?: boolean; rsv?: number; opcode: number; payload: Buffer; masked?: boolean; declaredLength?: bigint }): Buffer {
  const { fin = true, rsv = 0, opcode, payload, masked = true } = opts;
  const length = opts.declaredLength ?? BigInt(payload.length);
  const head: number[] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (length < 126n) head.push(maskBit | Number(length));
  else if (length < 65536n) head.push(maskBit | 126, Number(length >> 8n), Number(length & 0xffn));
  else {
    head.push(maskBit | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((length >> shift) & 0xffn));
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const mask = randomBytes(4);
  const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from(head), mask, body]);
}

const INVALID_UTF8 = [Buffer.from([0xff]), Buffer.from([0xc3, 0x28]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from('{"a":"\xe2\x82"}', 'latin1')];
const text = (s: string) => Buffer.from(s);

const rawCase: fc.Arbitrary<Case> = fc.oneof(
  // Invalid UTF-8 in a text frame: 1007.
  fc.constantFrom(...INVALID_UTF8).map((bytes) => ({ kind: 'raw' as const, bytes: rawFrame({ opcode: 1, payload: bytes }), close: CLOSE_INVALID_DATA })),
  // Framing errors: 1002.
  fc.constantFrom(
    rawFrame({ opcode: 1, payload: text('{}'), masked: false }),
    rawFrame({ opcode: 1, payload: text('{}'), rsv: 4 }),
    rawFrame({ opcode: 1, payload: text('{}'), rsv: 1 }),
    rawFrame({ opcode: 3, payload: text('{}') }),
    rawFrame({ opcode: 0xb, payload: text('') }),
    rawFrame({ opcode: 0, payload: text('orphan continuation') }),
    rawFrame({ opcode: 9, payload: Buffer.alloc(126) }),
    rawFrame({ opcode: 9, payload: text('fragmented ping'), fin: false }),
    rawFrame({ opcode: 8, payload: Buffer.from([0x03, 0xe7]) }),
    rawFrame({ opcode: 8, payload: Buffer.from([0x03]) }),
    Buffer.concat([rawFrame({ opcode: 1, payload: text('{"a":'), fin: false }), rawFrame({ opcode: 1, payload: text('1}') })]),
  ).map((bytes) => ({ kind: 'raw' as const, bytes, close: CLOSE_PROTOCOL_ERROR })),
  // A frame announced above maxPayloadBytes (only the header is sent): 1009.
  fc.constantFrom(BigInt(maxPayloadBytes) + 1n, 2n ** 40n, 2n ** 53n - 1n).map((declaredLength) => ({
    kind: 'raw' as const,
    bytes: rawFrame({ opcode: 1, payload: Buffer.alloc(0), declaredLength }),
    close: CLOSE_TOO_BIG,
  })),
);

/** Splits `bytes` into 2..6 pieces at arbitrary byte offsets (through UTF-8 sequences too). */
const fragmented: fc.Arbitrary<Case> = fc
  .tuple(fc.oneof(jsonText, garbageText), fc.array(fc.nat(), { minLength: 1, maxLength: 5 }), fc.boolean(), fc.boolean())
  .map(([s, cuts, binary, pingBetween]) => {
    const bytes = Buffer.from(s);
    const offsets = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % bytes.length)))].sort((a, b) => a - b);
    const bounds = [0, ...offsets, bytes.length];
    const parts = bounds.slice(1).map((end, i) => bytes.subarray(bounds[i]!, end));
    return { kind: 'fragments' as const, parts, binary, pingBetween };
  });

const fuzzCase: fc.Arbitrary<Case> = fc.oneof(
  { weight: 60, arbitrary: jsonText.map((t) => ({ kind: 'text' as const, text: t })) },
  { weight: 12, arbitrary: garbageText.map((t) => ({ kind: 'text' as const, text: t })) },
  { weight: 5, arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ kind: 'binary' as const, bytes })) },
  { weight: 10, arbitrary: fragmented },
  { weight: 3, arbitrary: rawCase },
);

// ---------------------------------------------------------------- what the server must answer

const KNOWN_TYPES = new Set<string>(requestTypes);

/** The requestId a reply must echo: the request's own when its envelope is usable, else null. */
function expectedId(request: unknown): string | null {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) return null;
  const { type, requestId } = request as { type?: unknown; requestId?: unknown };
  const usable = (s: unknown) => typeof s === 'string' && s.length >= 1 && s.length <= 128;
  return usable(type) && usable(requestId) ? (requestId as string) : null;
}

/** Throws unless `reply` is a well-typed reply to `request`. */
function checkReply(reply: unknown, request: unknown, sent: string): void {
  const r = reply as { success?: unknown; type?: unknown; requestId?: unknown };
  if (r.success === true) {
    if (typeof r.type !== 'string' || !KNOWN_TYPES.has(r.type)) throw new Error(`success reply of unknown type: ${JSON.stringify(reply).slice(0, 300)}`);
    const parsed = successReplySchema(r.type as RequestType).safeParse(reply);
    if (!parsed.success) throw new Error(`success reply does not match its schema: ${parsed.error.message.slice(0, 500)}`);
  } else {
    const parsed = FailureReplySchema.safeParse(reply);
    if (!parsed.success) throw new Error(`not a typed reply: ${JSON.stringify(reply).slice(0, 300)} to ${sent.slice(0, 300)}`);
    if (parsed.data.code === 'INTERNAL_ERROR') throw new Error(`INTERNAL_ERROR for ${sent.slice(0, 300)}`);
  }
  if (r.requestId !== expectedId(request)) throw new Error(`reply ${String(r.requestId)} does not echo ${String(expectedId(request))}`);
}

/** Throws unless `frame` answers the text `sent`: a batch with one reply per element, in order. */
function checkAnswer(frame: unknown, sent: string): void {
  let request: unknown;
  try {
    request = JSON.parse(sent);
  } catch {
    request = undefined;
  }
  if (Array.isArray(request) && request.length >= 1 && request.length <= maxBatch) {
    if (!Array.isArray(frame) || frame.length !== request.length) throw new Error(`a batch of ${request.length} got ${JSON.stringify(frame).slice(0, 300)}`);
    frame.forEach((reply, i) => checkReply(reply, request[i], sent));
    return;
  }
  if (Array.isArray(request)) {
    // Empty or above maxBatch: one reply for the whole frame.
    const reply = frame as { code?: unknown; requestId?: unknown };
    checkReply(frame, undefined, sent);
    if (reply.code !== (request.length === 0 ? 'MALFORMED_MESSAGE' : 'LIMIT_EXCEEDED')) throw new Error(`batch of ${request.length}: ${JSON.stringify(frame)}`);
    return;
  }
  checkReply(frame, request, sent);
}

// ---------------------------------------------------------------- the run

describe('hostile input', () => {
  it(`${FUZZ_FRAMES} fuzzed frames: no crash, every frame answered or closed with the right code, other clients unaffected, memory bounded`, async () => {
    const pid = cli.child.pid!;
    let conn = await open();
    // A well-known instance for the valid requests to hit.
    conn.ws.send(JSON.stringify({ type: 'kvStore.createInstance', requestId: 'setup', params: { id: 'fz', name: 'fz' } }));
    await conn.next();

    // A bystander keeps pinging on its own connection the whole time.
    const bystander = await open();
    let pings = 0;
    let bystanderError: string | undefined;
    let fuzzing = true;
    const bystanding = (async () => {
      while (fuzzing) {
        const id = `p${pings}`;
        bystander.ws.send(JSON.stringify({ type: 'kvStore.ping', requestId: id }));
        const answer = await bystander.next(10_000).catch((error: Error) => ({ error: error.message }));
        const frame = 'frame' in answer ? (answer.frame as { requestId?: unknown; success?: unknown }) : undefined;
        if (frame?.requestId !== id || frame.success !== true) {
          bystanderError = `bystander ping ${id}: ${JSON.stringify(answer)}`;
          return;
        }
        pings++;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();

    const rssBefore = rssMiB(pid);
    let frames = 0;
    let closes = 0;
    const kinds: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        if (crashed !== undefined) throw new Error(crashed);
        if (conn.closeCode !== undefined) conn = await open();
        frames++;
        kinds[c.kind] = (kinds[c.kind] ?? 0) + 1;
        if (c.kind === 'raw') {
          (conn.ws as unknown as { _socket: Socket })._socket.write(c.bytes);
          const outcome = await conn.next();
          if (!('closed' in outcome)) throw new Error(`expected close ${c.close}, got a reply ${JSON.stringify(outcome.frame).slice(0, 200)}`);
          expect(outcome.closed).toBe(c.close);
          closes++;
          return;
        }
        if (c.kind === 'binary') {
          conn.ws.send(c.bytes, { binary: true });
          const outcome = await conn.next();
          expect(outcome).toMatchObject({ frame: { type: 'kvStore.error', requestId: null, success: false, code: 'MALFORMED_MESSAGE' } });
          return;
        }
        let sent: string;
        if (c.kind === 'fragments') {
          c.parts.forEach((part, i) => {
            conn.ws.send(part, { binary: c.binary, fin: i === c.parts.length - 1 });
            // Control frames may come between the fragments of a message.
            if (c.pingBetween && i < c.parts.length - 1) conn.ws.ping();
          });
          const whole = Buffer.concat(c.parts);
          if (c.binary) {
            expect(await conn.next()).toMatchObject({ frame: { code: 'MALFORMED_MESSAGE', requestId: null } });
            return;
          }
          sent = whole.toString('utf8');
        } else {
          conn.ws.send(c.text);
          sent = c.text;
        }
        const outcome = await conn.next();
        if ('closed' in outcome) throw new Error(`closed with ${outcome.closed} after ${sent.slice(0, 300)}`);
        checkAnswer(outcome.frame, sent);
      }),
      { numRuns: FUZZ_FRAMES, endOnFailure: true, ...(FUZZ_SEED !== undefined && { seed: FUZZ_SEED }) },
    );
    fuzzing = false;
    await bystanding;
    const rssAfter = rssMiB(pid);

    // Thousands of headers on an upgrade: refused (431 above Node's 16 KiB header limit, or
    // headers beyond Node's count ignored), and the server keeps serving.
    const manyHeaders = await rawUpgrade(url, 5000, 'X-Fuzz-Header-Number-{i}: {i}');
    expect(manyHeaders).toMatch(/^HTTP\/1\.1 431 |^$/);
    const countOnly = await rawUpgrade(url, 3000, 'a{i}:');
    expect(countOnly).toMatch(/^HTTP\/1\.1 (101|4\d\d) |^$/);

    const after = await open();
    after.ws.send(JSON.stringify({ type: 'kvStore.ping', requestId: 'last' }));
    expect(await after.next()).toMatchObject({ frame: { requestId: 'last', success: true } });
    after.ws.terminate();
    bystander.ws.terminate();
    conn.ws.terminate();

    console.log(
      `fuzz: ${frames} frames (${JSON.stringify(kinds)}), ${closes} closed by the server as expected, bystander pings ${pings}; ` +
        `server RSS ${rssBefore?.toFixed(1)} MiB before, ${rssAfter?.toFixed(1)} MiB after`,
    );
    expect(crashed).toBeUndefined();
    expect(cli.child.exitCode).toBeNull();
    expect(bystanderError).toBeUndefined();
    expect(pings).toBeGreaterThan(10);
    expect(frames).toBeGreaterThanOrEqual(FUZZ_FRAMES);
    if (rssBefore !== undefined && rssAfter !== undefined) {
      // Generous: the server must not keep what it was sent (a leak of even 50 KiB a frame shows).
      expect(rssAfter - rssBefore).toBeLessThan(400);
    }
  }, 180_000);
});

/**
 * Sends an upgrade request with `count` extra headers made from `pattern` on a plain TCP socket
 * and resolves with everything the server answered before it closed ('' if it just closed).
 */
function rawUpgrade(wsUrl: string, count: number, pattern: string): Promise<string> {
  const { hostname, port } = new URL(wsUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      answer += chunk;
      // A 101 leaves the socket open: that is an answer too.
      if (answer.startsWith('HTTP/1.1 101 ')) socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(answer));
    const timer = setTimeout(() => reject(new Error(`no answer to an upgrade with ${count} headers`)), 10_000);
    socket.on('close', () => clearTimeout(timer));
    const headers = Array.from({ length: count }, (_, i) => pattern.replaceAll('{i}', String(i)));
    socket.write(
      [
        'GET / HTTP/1.1',
        `Host: ${hostname}:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
        ...headers,
        '',
        '',
      ].join('\r\n'),
    );
  });
}
