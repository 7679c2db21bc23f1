import type { KvRecord, ProtocolError, SetEachResult } from '../../protocol/index.js';

/**
 * A record built by an engine that stores values as JSON text, carrying that text. Whatever
 * serializes a record — the change log, a reply, a watch event — splices the text in instead of
 * serializing the parsed value again. The text is a private field: the object has exactly the
 * protocol's fields for JSON.stringify, structuredClone and deep equality. (A WeakMap beside
 * plain objects did the same at about 1 µs per record, mostly in the garbage collector.)
 *
 * One exception: a record read for a reply only (ReadOptions.serializeOnly) may have `value`
 * undefined; only its JSON text (recordJson, objectJson and the like) is complete.
 */
export class StoredRecord implements KvRecord {
  readonly #valueJson: string;
  /**
   * Holds the record's JSON once built: the change log and the reply both need it. An engine may
   * pass a holder that outlives the record (its cached row), so that the next read of the same
   * version of the key finds the text built; it must then have the text built before it hands
   * the record out, since a caller may change the record's fields and the text would follow them.
   */
  readonly #built: { json?: string };

  constructor(
    readonly id: string,
    readonly instanceId: string,
    readonly namespace: string,
    readonly key: string,
    readonly value: unknown,
    /** The exact JSON text of `value`. */
    valueJson: string,
    readonly contentType: string,
    readonly version: number,
    readonly revision: number,
    readonly createdAt: string,
    readonly updatedAt: string,
    readonly expiresAt: string | null,
    built: { json?: string } = {},
  ) {
    this.#valueJson = valueJson;
    this.#built = built;
  }

  /** The exact JSON text of `value`. */
  get valueJson(): string {
    return this.#valueJson;
  }

  /** The record's JSON text, field for field what JSON.stringify gives. */
  toJsonText(): string {
    return (this.#built.json ??=
      `{"id":${JSON.stringify(this.id)},"instanceId":${JSON.stringify(this.instanceId)},"namespace":${JSON.stringify(this.namespace)},` +
      `"key":${JSON.stringify(this.key)},"value":${this.#valueJson},"contentType":${JSON.stringify(this.contentType)},` +
      `"version":${this.version},"revision":${this.revision},"createdAt":"${this.createdAt}","updatedAt":"${this.updatedAt}",` +
      `"expiresAt":${this.expiresAt === null ? 'null' : `"${this.expiresAt}"`}}`);
  }
}

/** The JSON text of `record`, spliced around its stored value text when it has one. */
export function recordJson(record: KvRecord): string {
  return record instanceof StoredRecord ? record.toJsonText() : JSON.stringify(record);
}

/** The JSON text of a reply's `value` beside `record`: the stored text when it carries it. */
function valueText(record: KvRecord | null): string {
  if (record === null) return 'null';
  if (record instanceof StoredRecord) return record.valueJson;
  // JSON.stringify(undefined) is undefined, which would go out as the word: an invalid frame.
  if (record.value === undefined) throw new TypeError('a record without its value text has no value to write');
  return JSON.stringify(record.value);
}

/**
 * A get reply's data, `{ value, exists, record }`, whose JSON text is spliced around the record's
 * stored text: the value is not serialized again, and no generic walk over the fields runs
 * (`value` is undefined when its record was read for a reply only: write it with its text).
 */
export class Reading {
  readonly value: unknown;
  readonly exists: boolean;
  readonly record: KvRecord | null;

  constructor(record: KvRecord | null) {
    this.value = record === null ? null : record.value;
    this.exists = record !== null;
    this.record = record;
  }

  toJsonText(): string {
    const { record } = this;
    return `{"value":${valueText(record)},"exists":${this.exists},"record":${record === null ? 'null' : recordJson(record)}}`;
  }
}

/**
 * One key's item in a getMany reply, `{ key, exists, value, record }`, carrying its JSON text once
 * built: the reply budget measures each item and the reply then writes it, so it is built once,
 * around the record's stored text. Its own fields are exactly the protocol's, in the wire order
 * (with `value` undefined when its record was read for a reply only: write it with its text).
 */
export class KeyReading {
  readonly key: string;
  readonly exists: boolean;
  readonly value: unknown;
  readonly record: KvRecord | null;
  #json: string | undefined;

  constructor(key: string, record: KvRecord | null) {
    this.key = key;
    this.exists = record !== null;
    this.value = record === null ? null : record.value;
    this.record = record;
  }

  toJsonText(): string {
    if (this.#json !== undefined) return this.#json;
    const { record } = this;
    return (this.#json = `{"key":${JSON.stringify(this.key)},"exists":${this.exists},"value":${valueText(record)},"record":${record === null ? 'null' : recordJson(record)}}`);
  }
}

/**
 * One key's item in a getValues reply, `{ key, exists, value, contentType }`: a getMany item
 * without its record (contentType null when the key is absent), for readers that want the value
 * alone. Carries its JSON text once built, as KeyReading does, for the same reasons.
 */
export class KeyValue {
  readonly key: string;
  readonly exists: boolean;
  readonly value: unknown;
  readonly contentType: string | null;
  readonly #record: KvRecord | null;
  #json: string | undefined;

  constructor(key: string, record: KvRecord | null) {
    this.key = key;
    this.exists = record !== null;
    this.value = record === null ? null : record.value;
    this.contentType = record === null ? null : record.contentType;
    this.#record = record;
  }

  toJsonText(): string {
    return (this.#json ??= `{"key":${JSON.stringify(this.key)},"exists":${this.exists},"value":${valueText(this.#record)},"contentType":${JSON.stringify(this.contentType)}}`);
  }
}

/** A setEach entry's success, `{ success: true, record }`, written around the record's stored text. */
export class SetSuccess {
  readonly success = true as const;
  constructor(readonly record: KvRecord) {}

  toJsonText(): string {
    return `{"success":true,"record":${recordJson(this.record)}}`;
  }
}

/** A setEach entry's failure: the code, message and details a set alone would have been answered with. */
export function setFailure(error: ProtocolError): SetEachResult {
  return { success: false, code: error.code, error: error.message, ...(error.data !== undefined && { data: error.data }) };
}

/** Objects that carry their own JSON text (see StoredRecord, Reading, KeyReading, KeyValue and SetSuccess). */
function carriesJson(item: unknown): item is StoredRecord | Reading | KeyReading | KeyValue | SetSuccess {
  return item instanceof StoredRecord || item instanceof Reading || item instanceof KeyReading || item instanceof KeyValue || item instanceof SetSuccess;
}

/**
 * JSON.stringify of an object whose fields may be stored records or arrays of them (with nulls):
 * those are spliced from the stored text, the rest serialized as usual. Replies and watch events
 * have this shape; a plain object among the fields is written the same way, one level down
 * (query's `result`). A get's reply, whose value sits beside its record, is a Reading.
 */
export function objectJson(data: object, nested = true): string {
  if (carriesJson(data)) return data.toJsonText();
  let json = '';
  for (const [name, field] of Object.entries(data)) {
    // As JSON.stringify does, an undefined field is left out.
    if (field === undefined) continue;
    let text: string;
    if (nested && isPlainObject(field)) text = objectJson(field, false);
    else text = valueJson(field);
    json += `${json === '' ? '{' : ','}${JSON.stringify(name)}:${text}`;
  }
  return json === '' ? '{}' : `${json}}`;
}

function isPlainObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/** JSON.stringify of one element of a reply's array: a record or getMany item carrying its text, an object with a record in it, or anything else. */
export function elementJson(item: unknown): string {
  if (carriesJson(item)) return item.toJsonText();
  return typeof item === 'object' && item !== null && !Array.isArray(item) ? objectJson(item) : JSON.stringify(item);
}

/** JSON.stringify of one value, spliced from carried text when it carries its own or is an array holding such. */
export function valueJson(field: unknown): string {
  if (carriesJson(field)) return field.toJsonText();
  if (Array.isArray(field) && field.some(carriesJson)) {
    // As JSON.stringify writes them in an array, an undefined (or a function) is null.
    return `[${field.map((item: unknown) => (carriesJson(item) ? item.toJsonText() : (JSON.stringify(item) ?? 'null'))).join(',')}]`;
  }
  return JSON.stringify(field);
}
