/**
 * The rows an engine read or wrote most recently, by key, so that a read of a hot key costs a few
 * Map lookups instead of a statement. It holds the engine connection's own view, uncommitted
 * writes included, which stays right only because every change of the rows goes through the
 * engine that owns the cache: it stores what it writes, forgets what it deletes, and is cleared
 * whenever a transaction or savepoint rolls back (the rows it held may be gone). Rows are
 * immutable values; callers get records built from them, never the cached objects' insides to change.
 *
 * Bounded by entries and by the bytes of their values. Eviction is the clock (second-chance)
 * approximation of least-recently-used: a read only marks its entry used, and the oldest entry
 * not used since it was last passed over goes first. A strict LRU moved the entry to the back of
 * one Map on every read, under a key built from the three names; on the hot path of a get, the
 * string building and the Map reordering took more than the rest of the engine's work.
 * A row bigger than a sixteenth of the byte budget is not kept: one huge value must not flush
 * every other.
 */
export class RowCache<Row> {
  /** instance → namespace → key → entry. */
  private readonly instances = new Map<string, Map<string, Map<string, Entry<Row>>>>();
  /** Every entry, oldest first: the order the clock's hand passes them in. */
  private readonly ring = new Set<Entry<Row>>();
  private bytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    /** The bytes `row` holds, roughly (its value's length). */
    private readonly sizeOf: (row: Row) => number,
  ) {}

  /** The row kept for the key, which then counts as used. */
  get(instanceId: string, namespace: string, key: string): Row | undefined {
    const entry = this.instances.get(instanceId)?.get(namespace)?.get(key);
    if (entry === undefined) return undefined;
    entry.used = true;
    return entry.row;
  }

  set(instanceId: string, namespace: string, key: string, row: Row): void {
    this.delete(instanceId, namespace, key);
    const size = this.sizeOf(row);
    if (size > this.maxBytes / 16) return;
    // Room is made first, so that the hand never takes the row being stored.
    while (this.ring.size > 0 && (this.ring.size >= this.maxEntries || this.bytes + size > this.maxBytes)) this.evictOne();
    const entry: Entry<Row> = { instanceId, namespace, key, row, size, used: false };
    this.keysOf(instanceId, namespace).set(key, entry);
    this.ring.add(entry);
    this.bytes += size;
  }

  delete(instanceId: string, namespace: string, key: string): void {
    const entry = this.instances.get(instanceId)?.get(namespace)?.get(key);
    if (entry !== undefined) this.remove(entry);
  }

  clear(): void {
    this.instances.clear();
    this.ring.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.ring.size;
  }

  /** Drops the oldest entry not used since the hand last passed it; a used one is passed over once, to the back. */
  private evictOne(): void {
    for (;;) {
      const oldest = this.ring.values().next().value!;
      if (!oldest.used) return this.remove(oldest);
      oldest.used = false;
      this.ring.delete(oldest);
      this.ring.add(oldest);
    }
  }

  private remove(entry: Entry<Row>): void {
    this.ring.delete(entry);
    this.bytes -= entry.size;
    const namespaces = this.instances.get(entry.instanceId)!;
    const keys = namespaces.get(entry.namespace)!;
    keys.delete(entry.key);
    // Empty maps go too, so that a store of many short-lived namespaces does not keep one each.
    if (keys.size > 0) return;
    namespaces.delete(entry.namespace);
    if (namespaces.size === 0) this.instances.delete(entry.instanceId);
  }

  private keysOf(instanceId: string, namespace: string): Map<string, Entry<Row>> {
    let namespaces = this.instances.get(instanceId);
    if (namespaces === undefined) this.instances.set(instanceId, (namespaces = new Map()));
    let keys = namespaces.get(namespace);
    if (keys === undefined) namespaces.set(namespace, (keys = new Map()));
    return keys;
  }
}

interface Entry<Row> {
  readonly instanceId: string;
  readonly namespace: string;
  readonly key: string;
  readonly row: Row;
  /** Counted once, on insert, so that what eviction subtracts is what was added. */
  readonly size: number;
  /** Read since the clock's hand last passed it. */
  used: boolean;
}
