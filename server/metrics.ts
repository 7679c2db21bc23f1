import { isRequestType } from '../protocol/index.js';

/** Upper bounds of the request latency histogram, in seconds: 100 µs to 2.5 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** What the server reports besides its own counters, read when /metrics is asked for. */
export interface MetricsSnapshot {
  connections: number;
  watchers: number;
  databaseBytes: number;
  commits: number;
  syncs: number;
}

/**
 * The server's counters, written out in the Prometheus text format (version 0.0.4) for
 * `GET /metrics`. Hand-written rather than prom-client: seven metrics of three kinds need a few
 * lines of text, and the request path stays free of a registry's label lookups.
 */
export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly errors = new Map<string, number>();
  private readonly buckets = new Array<number>(LATENCY_BUCKETS.length).fill(0);
  private latencyCount = 0;
  private latencySum = 0;

  /**
   * Counts one answered request. A `type` that is not a message type is counted as `unknown`,
   * so hostile clients cannot grow the label set.
   */
  observe(type: string, errorCode: string | undefined, seconds: number): void {
    const label = isRequestType(type) ? type : 'unknown';
    this.requests.set(label, (this.requests.get(label) ?? 0) + 1);
    if (errorCode !== undefined) this.errors.set(errorCode, (this.errors.get(errorCode) ?? 0) + 1);
    this.latencyCount++;
    this.latencySum += seconds;
    const bucket = LATENCY_BUCKETS.findIndex((bound) => seconds <= bound);
    if (bucket !== -1) this.buckets[bucket]!++;
  }

  /** The exposition text. */
  render(snapshot: MetricsSnapshot): string {
    const lines: string[] = [];
    const metric = (name: string, kind: 'counter' | 'gauge' | 'histogram', help: string, samples: string[]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`, ...samples);
    };
    const labelled = (name: string, label: string, counts: Map<string, number>) =>
      [...counts].sort(([a], [b]) => (a < b ? -1 : 1)).map(([value, count]) => `${name}{${label}="${value}"} ${count}`);

    metric('kvhub_requests_total', 'counter', 'Requests answered, by message type.', labelled('kvhub_requests_total', 'type', this.requests));
    metric('kvhub_errors_total', 'counter', 'Requests answered with an error, by error code.', labelled('kvhub_errors_total', 'code', this.errors));
    let cumulative = 0;
    const bucketLines = LATENCY_BUCKETS.map((bound, i) => {
      cumulative += this.buckets[i]!;
      return `kvhub_request_duration_seconds_bucket{le="${bound}"} ${cumulative}`;
    });
    metric('kvhub_request_duration_seconds', 'histogram', 'Time from a request frame read to its reply built.', [
      ...bucketLines,
      `kvhub_request_duration_seconds_bucket{le="+Inf"} ${this.latencyCount}`,
      `kvhub_request_duration_seconds_sum ${this.latencySum}`,
      `kvhub_request_duration_seconds_count ${this.latencyCount}`,
    ]);
    metric('kvhub_connections', 'gauge', 'Open WebSocket connections.', [`kvhub_connections ${snapshot.connections}`]);
    metric('kvhub_watchers', 'gauge', 'Live watch subscriptions.', [`kvhub_watchers ${snapshot.watchers}`]);
    metric('kvhub_database_bytes', 'gauge', 'Size of the database (its pages, without the write-ahead log).', [
      `kvhub_database_bytes ${snapshot.databaseBytes}`,
    ]);
    metric('kvhub_storage_commits_total', 'counter', 'Transactions committed.', [`kvhub_storage_commits_total ${snapshot.commits}`]);
    metric('kvhub_storage_syncs_total', 'counter', 'Syncs of the write-ahead log (durability full): each makes every commit before it durable.', [
      `kvhub_storage_syncs_total ${snapshot.syncs}`,
    ]);
    return `${lines.join('\n')}\n`;
  }
}
