import { describe, expect, it } from 'vitest';
import { checkTargets, type MeasuredCell, type MeasuredIdle } from '../bench/targets.js';

/** A cell with the given medians (p50 and CPU default to values no target trips over). */
function cell(system: string, client: string, workload: string, load: string, opsPerSec: number, more: { p50Ms?: number; cpu?: number } = {}): MeasuredCell {
  return { system, client, workload, load, median: { opsPerSec, p50Ms: more.p50Ms ?? 1, serverCpuUsPerOp: more.cpu ?? 10 } };
}

const find = (results: ReturnType<typeof checkTargets>, target: string) => results.find((r) => r.target === target);

describe('bench targets (issue 5)', () => {
  it('compares ops/s from below and CPU per op from above, against the floor of the same workload and load', () => {
    const results = checkTargets(
      [
        cell('floor', 'raw', 'get', '50x10', 40_000, { cpu: 20 }),
        cell('kvhub-full', 'raw', 'get', '50x10', 36_000, { cpu: 30 }),
        cell('kvhub-normal', 'raw', 'get', '50x10', 35_000, { cpu: 25 }),
      ],
      [],
      { setManySize: 100 },
    );
    expect(find(results, 'raw 50x10 get >= 0.9x floor (kvhub-full)')).toEqual({ target: 'raw 50x10 get >= 0.9x floor (kvhub-full)', measured: '0.90x', met: true });
    expect(find(results, 'raw 50x10 get >= 0.9x floor (kvhub-normal)')).toMatchObject({ measured: '0.88x', met: false });
    expect(find(results, 'raw 50x10 get CPU <= 1.3x floor (kvhub-full)')).toMatchObject({ measured: '1.50x', met: false });
    expect(find(results, 'raw 50x10 get CPU <= 1.3x floor (kvhub-normal)')).toMatchObject({ measured: '1.25x', met: true });
  });

  it('reports a target whose cells did not run as not measured, never as met', () => {
    const results = checkTargets([cell('kvhub-full', 'raw', 'set', '50x10', 10_000)], [], { setManySize: 100 });
    expect(results.length).toBeGreaterThan(10);
    for (const result of results) expect(result).toMatchObject({ measured: 'not measured', met: undefined });
  });

  it('checks SDK sets against the in-process ceiling and Redis, sequential p50 against the floor', () => {
    const results = checkTargets(
      [
        cell('kvhub-full', 'sdk', 'set', '50x10', 20_000),
        cell('ceiling', 'in-process', 'set', 'in-proc', 24_000),
        cell('redis-always', 'ioredis-ap', 'set', '50x10', 80_000),
        cell('floor', 'raw', 'get', '1x1', 10_000, { p50Ms: 0.08 }),
        cell('kvhub-full', 'raw', 'get', '1x1', 8_000, { p50Ms: 0.1 }),
      ],
      [],
      { setManySize: 100 },
    );
    expect(find(results, 'SDK 50x10 durable set >= 0.8x ceiling')).toMatchObject({ measured: '0.83x', met: true });
    expect(find(results, 'SDK 50x10 durable set >= 0.8x Redis (always, ioredis-ap)')).toMatchObject({ measured: '0.25x', met: false });
    expect(find(results, 'sequential get p50 <= 1.3x floor (kvhub-full)')).toMatchObject({ measured: '1.25x', met: true });
  });

  it('takes the best durable setMany of kvhub-full, and the RSS of 10,000 idle connections only when all opened', () => {
    const idle = (opened: number): MeasuredIdle => ({ system: 'kvhub (full)', connections: 10_000, opened, rssWithBytes: 190_000_000 });
    const cells = [
      cell('kvhub-full', 'raw', 'setMany', '1x1', 200),
      cell('kvhub-full', 'sdk', 'setMany', '1x100', 650),
      cell('kvhub-normal', 'raw', 'setMany', '1x100', 900),
    ];
    const results = checkTargets(cells, [idle(10_000)], { setManySize: 100 });
    expect(find(results, 'durable setMany >= 60,000 records/s')).toMatchObject({ measured: '65,000 records/s at best (sdk 1x100)', met: true });
    expect(find(results, '10,000 idle connections <= 250 MB RSS')).toMatchObject({ measured: '190.0 MB', met: true });
    expect(find(checkTargets(cells, [idle(9_000)], { setManySize: 100 }), '10,000 idle connections <= 250 MB RSS')).toMatchObject({ met: undefined });
  });
});
