/** Latency recording and summary figures for the benchmark (no HdrHistogram: a typed array, sorted once). */

/** Per-operation latencies in milliseconds, kept in a growing Float64Array. */
export class Latencies {
  private values = new Float64Array(1 << 16);
  count = 0;

  add(ms: number): void {
    if (this.count === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.count++] = ms;
  }

  /** Adds the same latency `times` times (the ops of one ceiling transaction). */
  addMany(ms: number, times: number): void {
    for (let i = 0; i < times; i++) this.add(ms);
  }

  /** p50, p99 (and the max) of what was recorded; NaN when nothing was. */
  summary(): { p50: number; p99: number; max: number } {
    if (this.count === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
    const sorted = this.values.slice(0, this.count).sort();
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1]! };
  }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank]!;
}

/** Median of the finite numbers given; NaN when there are none. */
export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 === 1 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}
