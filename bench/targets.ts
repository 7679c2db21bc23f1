/**
 * Issue 5's targets, checked against one run's medians, so that every full run states which are
 * met instead of leaving the ratios to be worked out by hand. Every target is checked on
 * `kvhub-full`, the default durability (the tables show `normal` beside it).
 *
 * A target is reported met or not only from cells whose every round ran and measured replies
 * inside its window, in a run that was not a quick one; otherwise its figure is shown and its
 * verdict left open. A target whose cells did not run (a subset run) is 'not measured'.
 */
import { KVHUB_IDLE_LABEL, type ClientId, type LoadId, type SystemId } from './matrix.js';
import type { Workload } from './workloads.js';

/** What a target reads of a cell: its identity, its medians, and whether they are sound. */
export interface MeasuredCell {
  system: SystemId;
  client: ClientId;
  workload: Workload;
  load: LoadId;
  median?: { opsPerSec: number; p50Ms: number; serverCpuUsPerOp: number };
  /** Every round of the run measured this cell, each with replies inside its window. */
  complete: boolean;
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
  /** Undefined when not measured, or when the figure is not sound enough for a verdict. */
  met: boolean | undefined;
}

export interface TargetOptions {
  /** Records per setMany in the bench's workload. */
  setManySize: number;
  /** A quick (smoke) run: figures are shown, verdicts left open. */
  quick: boolean;
}

const IDLE_CONNECTIONS = 10_000;
const IDLE_RSS_LIMIT_BYTES = 250_000_000;
const DURABLE_SET_MANY_RECORDS = 60_000;

type Figure = 'opsPerSec' | 'p50Ms' | 'serverCpuUsPerOp';

export function checkTargets(cells: readonly MeasuredCell[], idle: readonly MeasuredIdle[], options: TargetOptions): TargetResult[] {
  const cell = (system: SystemId, client: ClientId, workload: Workload, load: LoadId) =>
    cells.find((c) => c.system === system && c.client === client && c.workload === workload && c.load === load && c.median !== undefined);
  const verdict = (met: boolean, sound: boolean) => (sound && !options.quick ? met : undefined);
  const results: TargetResult[] = [];

  /** `kvhub`'s figure over the reference's, against `bound`: at least it, or at most when `atMost`. */
  const ratio = (target: string, figure: Figure, kvhub: MeasuredCell | undefined, reference: MeasuredCell | undefined, bound: number, atMost = false): void => {
    if (kvhub === undefined || reference === undefined || !(reference.median![figure] > 0)) {
      results.push({ target, measured: 'not measured', met: undefined });
      return;
    }
    const value = kvhub.median![figure] / reference.median![figure];
    const sound = kvhub.complete && reference.complete;
    results.push({
      target,
      measured: `${value.toFixed(3)}x${sound ? '' : ' (from incomplete rounds)'}`,
      met: verdict(atMost ? value <= bound : value >= bound, sound),
    });
  };

  const floor = (workload: Workload, load: LoadId) => cell('floor', 'raw', workload, load);
  const rawGet = cell('kvhub-full', 'raw', 'get', '50x10');
  ratio('raw 50x10 get >= 0.9x floor', 'opsPerSec', rawGet, floor('get', '50x10'), 0.9);
  ratio('raw 50x10 get CPU <= 1.3x floor', 'serverCpuUsPerOp', rawGet, floor('get', '50x10'), 1.3, true);
  const rawSet = cell('kvhub-full', 'raw', 'set', '50x10');
  ratio('raw 50x10 durable set >= 0.75x floor', 'opsPerSec', rawSet, floor('set', '50x10'), 0.75);
  ratio('raw 50x10 durable set CPU <= 1.6x floor', 'serverCpuUsPerOp', rawSet, floor('set', '50x10'), 1.6, true);
  for (const workload of ['set', 'get'] as const) {
    ratio(`sequential ${workload} p50 <= 1.3x floor`, 'p50Ms', cell('kvhub-full', 'raw', workload, '1x1'), floor(workload, '1x1'), 1.3, true);
  }
  for (const load of ['50x10', '1x100'] as const) {
    const sdkSet = cell('kvhub-full', 'sdk', 'set', load);
    ratio(`SDK ${load} get >= 1.0x Redis (always, ioredis-ap)`, 'opsPerSec', cell('kvhub-full', 'sdk', 'get', load), cell('redis-always', 'ioredis-ap', 'get', load), 1.0);
    ratio(`SDK ${load} durable set >= 0.8x ceiling`, 'opsPerSec', sdkSet, cell('ceiling', 'in-process', 'set', 'in-proc'), 0.8);
    ratio(`SDK ${load} durable set >= 0.8x Redis (always, ioredis-ap)`, 'opsPerSec', sdkSet, cell('redis-always', 'ioredis-ap', 'set', load), 0.8);
  }

  const setManyTarget = 'durable setMany >= 60,000 records/s';
  const setMany = cells
    .filter((c) => c.system === 'kvhub-full' && c.workload === 'setMany' && c.median !== undefined)
    .map((c) => ({ records: c.median!.opsPerSec * options.setManySize, where: `${c.client} ${c.load}`, complete: c.complete }))
    .sort((a, b) => b.records - a.records)[0];
  results.push(
    setMany === undefined
      ? { target: setManyTarget, measured: 'not measured', met: undefined }
      : {
          target: setManyTarget,
          measured: `${Math.round(setMany.records).toLocaleString('en-US')} records/s at best (${setMany.where})${setMany.complete ? '' : ' (from incomplete rounds)'}`,
          met: verdict(setMany.records >= DURABLE_SET_MANY_RECORDS, setMany.complete),
        },
  );

  const idleTarget = '10,000 idle connections <= 250 MB RSS';
  const held = idle.find((i) => i.system === KVHUB_IDLE_LABEL && i.connections === IDLE_CONNECTIONS && i.opened === IDLE_CONNECTIONS && i.rssWithBytes > 0);
  results.push(
    held === undefined
      ? { target: idleTarget, measured: 'not measured', met: undefined }
      : { target: idleTarget, measured: `${(held.rssWithBytes / 1e6).toFixed(1)} MB`, met: verdict(held.rssWithBytes <= IDLE_RSS_LIMIT_BYTES, true) },
  );
  return results;
}
