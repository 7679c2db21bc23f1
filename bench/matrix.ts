/**
 * What the comparison benchmark runs: its systems, their clients, the loads, and the cells they
 * make. Shared by bench/run.ts, which runs the cells, and bench/targets.ts, which reads them.
 */
import type { Workload } from './workloads.js';

export const SYSTEMS = ['floor', 'kvhub-full', 'kvhub-normal', 'redis-always', 'redis-everysec', 'ceiling'] as const;
export type SystemId = (typeof SYSTEMS)[number];
export const CLIENTS = ['raw', 'sdk', 'ioredis-ap', 'ioredis', 'in-process'] as const;
export type ClientId = (typeof CLIENTS)[number];

export interface Series {
  system: SystemId;
  client: ClientId;
}

/** Every (system, client) pair, in table order. */
export const ALL_SERIES: readonly Series[] = [
  { system: 'floor', client: 'raw' },
  { system: 'kvhub-full', client: 'raw' },
  { system: 'kvhub-full', client: 'sdk' },
  { system: 'kvhub-normal', client: 'raw' },
  { system: 'kvhub-normal', client: 'sdk' },
  { system: 'redis-always', client: 'ioredis-ap' },
  { system: 'redis-always', client: 'ioredis' },
  { system: 'redis-everysec', client: 'ioredis-ap' },
  { system: 'redis-everysec', client: 'ioredis' },
  { system: 'ceiling', client: 'in-process' },
];

export const LOADS = [
  { id: '1x1', connections: 1, depth: 1 },
  { id: '1x100', connections: 1, depth: 100 },
  { id: '50x10', connections: 50, depth: 10 },
] as const;
export type LoadId = (typeof LOADS)[number]['id'] | 'in-proc';

/** The label of kvhub's idle-connection measurement (the `full` server). */
export const KVHUB_IDLE_LABEL = 'kvhub (full)';

/** A cell of the matrix: one series under one workload and load. */
export interface CellId extends Series {
  workload: Workload;
  load: LoadId;
  connections: number;
  depth: number;
}

/**
 * The cells of a run, in run order: per workload, each load for every series but the ceiling,
 * then the ceiling's one in-process cell.
 */
export function matrixCells(series: readonly Series[], workloads: readonly Workload[], loads: readonly LoadId[]): CellId[] {
  const cells: CellId[] = [];
  for (const workload of workloads) {
    for (const load of LOADS.filter((l) => loads.includes(l.id))) {
      for (const s of series) {
        if (s.system !== 'ceiling') cells.push({ ...s, workload, load: load.id, connections: load.connections, depth: load.depth });
      }
    }
    for (const s of series.filter((x) => x.system === 'ceiling')) cells.push({ ...s, workload, load: 'in-proc', connections: 0, depth: 0 });
  }
  return cells;
}
