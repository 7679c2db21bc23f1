import type { KvRecord, WatchEvent } from '../sdk/index.js';
import { JSON_CONTENT_TYPE } from '../protocol/limits.js';
import type { CliIo } from './io.js';

/**
 * What a command prints on stdout: with `--json`, the reply's `data` as one line of JSON;
 * otherwise text for people, one item per line, fields separated by tabs so that it also cuts
 * and greps well.
 */
export class Output {
  constructor(
    private readonly io: CliIo,
    /** `--json` was given. */
    readonly json: boolean,
  ) {}

  /** Prints `data` as JSON with `--json`, else the lines `human` makes of it. */
  result<T>(data: T, human: (data: T) => string | string[]): void {
    if (this.json) this.line(JSON.stringify(data));
    else for (const line of [human(data)].flat()) this.line(line);
  }

  /** One line on stdout. */
  line(text: string): void {
    this.io.stdout.write(`${text}\n`);
  }

  /** Raw bytes on stdout (a binary value piped to a file). */
  bytes(bytes: Uint8Array): void {
    this.io.stdout.write(bytes);
  }
}

/** True for a record (or content type) that holds a binary value, base64 on the wire. */
export function isBinary(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType !== JSON_CONTENT_TYPE;
}

/** The number of bytes a padded base64 text stands for. */
function base64Bytes(text: string): number {
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  return Math.floor((text.length * 3) / 4) - padding;
}

/** A value on one line: compact JSON, or `<N bytes of type>` for a binary value as it came on the wire. */
export function inlineValue(value: unknown, contentType: string | undefined): string {
  if (isBinary(contentType) && typeof value === 'string') return `<${base64Bytes(value)} bytes of ${contentType}>`;
  return JSON.stringify(value);
}

/** A record's place, for sentences: `key 'k' in namespace 'n' of instance 'i'`. */
export function place(instanceId: string, namespace: string, key?: string): string {
  const where = `namespace '${namespace}' of instance '${instanceId}'`;
  return key === undefined ? where : `key '${key}' in ${where}`;
}

/** What `set` and `incr` say about the record they wrote. */
export function describeWrite(record: KvRecord): string {
  const expiry = record.expiresAt === null ? '' : `, expires ${record.expiresAt}`;
  return `Wrote ${place(record.instanceId, record.namespace, record.key)}: version ${record.version}, revision ${record.revision}${expiry}.`;
}

/** One line of `list`: key, then value. */
export function recordLine(record: KvRecord): string {
  return `${record.key}\t${inlineValue(record.value, record.contentType)}`;
}

/** One line of `watch`: revision, kind, namespace (the instance for `instanceDeleted`), then key and value where the event has them. */
export function eventLine(event: WatchEvent): string {
  const fields: string[] = [String(event.revision), event.kind];
  fields.push(event.namespace ?? event.instanceId);
  if (event.key !== null) fields.push(event.key);
  if (event.record !== null) fields.push(inlineValue(event.record.value, event.record.contentType));
  return fields.join('\t');
}
