import type { KvRecord } from '../../protocol/index.js';

/**
 * A record built by an engine that stores values as JSON text, carrying that text. Whatever
 * serializes a record — the change log, a reply, a watch event — splices the text in instead of
 * serializing the parsed value again. The text is a private field: the object has exactly the
 * protocol's fields for JSON.stringify, structuredClone and deep equality. (A WeakMap beside
 * plain objects did the same at about 1 µs per record, mostly in the garbage collector.)
 */
export class StoredRecord implements KvRecord {
  readonly #valueJson: string;
  /** The record's JSON once built: the change log and the reply both need it. */
  #json: string | undefined;

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
  ) {
    this.#valueJson = valueJson;
  }

  /** The exact JSON text of `value`. */
  get valueJson(): string {
    return this.#valueJson;
  }

  /** The record's JSON text, field for field what JSON.stringify gives. */
  toJsonText(): string {
    return (this.#json ??=
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

/**
 * JSON.stringify of an object whose fields may be stored records, arrays of them (with nulls), or
 * the value of a stored record beside it (a get reply's `value`): those are spliced from the
 * stored text, the rest serialized as usual. Replies and watch events have this shape; a plain
 * object among the fields is written the same way, one level down (query's `result`).
 */
export function objectJson(data: object, nested = true): string {
  const fields = Object.entries(data);
  const beside = fields.find(([, field]) => field instanceof StoredRecord)?.[1] as StoredRecord | undefined;
  let json = '';
  for (const [name, field] of fields) {
    // As JSON.stringify does, an undefined field is left out.
    if (field === undefined) continue;
    let text: string;
    if (beside !== undefined && field === beside.value && typeof field === 'object') text = beside.valueJson;
    else if (nested && isPlainObject(field)) text = objectJson(field, false);
    else text = valueJson(field);
    json += `${json === '' ? '{' : ','}${JSON.stringify(name)}:${text}`;
  }
  return json === '' ? '{}' : `${json}}`;
}

function isPlainObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/** JSON.stringify of one element of a reply's array: a stored record, an object with one in it (a getMany item), or anything else. */
export function elementJson(item: unknown): string {
  if (item instanceof StoredRecord) return item.toJsonText();
  return typeof item === 'object' && item !== null && !Array.isArray(item) ? objectJson(item) : JSON.stringify(item);
}

/** JSON.stringify of one value, spliced from stored text when it is a stored record or an array of them. */
export function valueJson(field: unknown): string {
  if (field instanceof StoredRecord) return field.toJsonText();
  if (Array.isArray(field) && field.length > 0 && field.every((item) => item === null || item instanceof StoredRecord)) {
    return `[${field.map((item: StoredRecord | null) => (item === null ? 'null' : item.toJsonText())).join(',')}]`;
  }
  return JSON.stringify(field);
}
