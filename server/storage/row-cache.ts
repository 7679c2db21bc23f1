/**
 * The rows an engine read or wrote most recently, by key, so that a read of a hot key costs a Map
 * lookup instead of a statement. It holds the engine connection's own view, uncommitted writes
 * included, which stays right only because every change of the rows goes through the engine that
 * owns the cache: it stores what it writes, forgets what it deletes, and is cleared whenever a
 * transaction or savepoint rolls back (the rows it held may be gone). Rows are immutable values;
 * callers get records built from them, never the cached objects' insides to change.
 *
 * Bounded by entries and by the bytes of their values; the least recently used entry goes first.
 * A row bigger than a sixteenth of the byte budget is not kept: one huge value must not flush
 * every other.
 */
export class RowCache<Row> {
  private readonly rows = new Map<string, Row>();
  private bytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    /** The bytes `row` holds, roughly (its value's length). */
    private readonly sizeOf: (row: Row) => number,
  ) {}

  /** The row kept for `key`, which then counts as the most recently used. */
  get(key: string): Row | undefined {
    const row = this.rows.get(key);
    if (row !== undefined) {
      this.rows.delete(key);
      this.rows.set(key, row);
    }
    return row;
  }

  set(key: string, row: Row): void {
    this.delete(key);
    const size = this.sizeOf(row);
    if (size > this.maxBytes / 16) return;
    this.rows.set(key, row);
    this.bytes += size;
    while (this.rows.size > this.maxEntries || this.bytes > this.maxBytes) {
      const [oldest, evicted] = this.rows.entries().next().value as [string, Row];
      this.rows.delete(oldest);
      this.bytes -= this.sizeOf(evicted);
    }
  }

  delete(key: string): void {
    const row = this.rows.get(key);
    if (row === undefined) return;
    this.rows.delete(key);
    this.bytes -= this.sizeOf(row);
  }

  clear(): void {
    this.rows.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.rows.size;
  }
}

/** A cache key for a record: lengths first, so that no two (instance, namespace, key) triples share one. */
export function recordKey(instanceId: string, namespace: string, key: string): string {
  return `${instanceId.length}:${namespace.length}:${instanceId}${namespace}${key}`;
}
