/**
 * Issue 5's targets, checked against one run's medians, so that every full run states which are
 * met instead of leaving the ratios to be worked out by hand. A target whose cells did not run
 * (a subset run, a failed cell) is reported as not measured.
 */

/** What a target reads of a cell: its identity and medians. */
export interface MeasuredCell {
  system: string;
  client: string;
  workload: string;
  load: string;
  median?: { opsPerSec: number; p50Ms: number; serverCpuUsPerOp: number };
}

/** What a target reads of an idle-connection measurement. */
export interface MeasuredIdle {
  system: string;
  connections: number;
  opened: number;
  rssWithBytes: number;
}

export interface TargetResult {
  target: string;
  /** The measured figure, in words; 'not measured' when its cells did not run. */
  measured: string;
  /** Undefined when not measured. */
  met: boolean | undefined;
}

/** Records per setMany in the bench's workload. */
export interface TargetOptions {
  setManySize: number;
}

const IDLE_CONNECTIONS = 10_000;
const IDLE_RSS_LIMIT_BYTES = 250_000_000;
const DURABLE_SET_MANY_RECORDS = 60_000;

export function checkTargets(cells: readonly MeasuredCell[], idle: readonly MeasuredIdle[], options: TargetOptions): TargetResult[] {
  const median = (system: string, client: string, workload: string, load: string) =>
    cells.find((c) => c.system === system && c.client === client && c.workload === workload && c.load === load)?.median;
  const results: TargetResult[] = [];

  /** `kvhub`'s figure over the reference's, against a bound: at least `bound`, or at most when `atMost`. */
  const ratio = (
    target: string,
    kvhub: number | undefined,
    reference: number | undefined,
    bound: number,
    atMost = false,
  ): void => {
    if (kvhub === undefined || reference === undefined || !(reference > 0)) {
      results.push({ target, measured: 'not measured', met: undefined });
      return;
    }
    const value = kvhub / reference;
    results.push({ target, measured: `${value.toFixed(2)}x`, met: atMost ? value <= bound : value >= bound });
  };

  for (const system of ['kvhub-full', 'kvhub-normal']) {
    const get = median(system, 'raw', 'get', '50x10');
    const floorGet = median('floor', 'raw', 'get', '50x10');
    ratio(`raw 50x10 get >= 0.9x floor (${system})`, get?.opsPerSec, floorGet?.opsPerSec, 0.9);
    ratio(`raw 50x10 get CPU <= 1.3x floor (${system})`, get?.serverCpuUsPerOp, floorGet?.serverCpuUsPerOp, 1.3, true);
  }
  const set = median('kvhub-full', 'raw', 'set', '50x10');
  const floorSet = median('floor', 'raw', 'set', '50x10');
  ratio('raw 50x10 durable set >= 0.75x floor', set?.opsPerSec, floorSet?.opsPerSec, 0.75);
  ratio('raw 50x10 durable set CPU <= 1.6x floor', set?.serverCpuUsPerOp, floorSet?.serverCpuUsPerOp, 1.6, true);
  for (const workload of ['set', 'get']) {
    for (const system of ['kvhub-full', 'kvhub-normal']) {
      const p50 = median(system, 'raw', workload, '1x1')?.p50Ms;
      ratio(`sequential ${workload} p50 <= 1.3x floor (${system})`, p50, median('floor', 'raw', workload, '1x1')?.p50Ms, 1.3, true);
    }
  }
  for (const load of ['50x10', '1x100']) {
    const get = median('kvhub-full', 'sdk', 'get', load)?.opsPerSec;
    ratio(`SDK ${load} get >= 1.0x Redis (always, ioredis-ap)`, get, median('redis-always', 'ioredis-ap', 'get', load)?.opsPerSec, 1.0);
    const durableSet = median('kvhub-full', 'sdk', 'set', load)?.opsPerSec;
    ratio(`SDK ${load} durable set >= 0.8x ceiling`, durableSet, median('ceiling', 'in-process', 'set', 'in-proc')?.opsPerSec, 0.8);
    ratio(`SDK ${load} durable set >= 0.8x Redis (always, ioredis-ap)`, durableSet, median('redis-always', 'ioredis-ap', 'set', load)?.opsPerSec, 0.8);
  }

  const setMany = cells
    .filter((c) => c.system === 'kvhub-full' && c.workload === 'setMany' && c.median !== undefined)
    .map((c) => ({ records: c.median!.opsPerSec * options.setManySize, where: `${c.client} ${c.load}` }))
    .sort((a, b) => b.records - a.records)[0];
  results.push(
    setMany === undefined
      ? { target: 'durable setMany >= 60,000 records/s', measured: 'not measured', met: undefined }
      : {
          target: 'durable setMany >= 60,000 records/s',
          measured: `${Math.round(setMany.records).toLocaleString('en-US')} records/s at best (${setMany.where})`,
          met: setMany.records >= DURABLE_SET_MANY_RECORDS,
        },
  );

  const held = idle.find((i) => i.system === 'kvhub (full)' && i.connections === IDLE_CONNECTIONS && i.opened === IDLE_CONNECTIONS && i.rssWithBytes > 0);
  results.push(
    held === undefined
      ? { target: '10,000 idle connections <= 250 MB RSS', measured: 'not measured', met: undefined }
      : {
          target: '10,000 idle connections <= 250 MB RSS',
          measured: `${(held.rssWithBytes / 1e6).toFixed(1)} MB`,
          met: held.rssWithBytes <= IDLE_RSS_LIMIT_BYTES,
        },
  );
  return results;
}
