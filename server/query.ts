import {
  DEFAULT_QUERY_LIMIT,
  invalidParam as invalid,
  type Query,
  type QueryOperator,
} from '../protocol/index.js';
import type { QueryCondition, QueryInput, QueryTarget } from './storage/engine.js';
import { encodeValue } from './values.js';

const UNQUOTABLE = /["\\\u0000-\u001f\u007f]/;
const STRING_ONLY: ReadonlySet<QueryOperator> = new Set(['contains', 'startsWith', 'endsWith']);
const ORDERING: ReadonlySet<QueryOperator> = new Set(['gt', 'gte', 'lt', 'lte']);

/**
 * Turns a wire query into an engine query, rejecting operands an operator cannot use. Fields
 * and operators are already allow-listed by the protocol schema; this adds the typing rules,
 * and holds operands to the rules of stored values (depth, size, well-formed strings).
 */
export function toQueryInput(query: Query, maxValueBytes: number): QueryInput {
  const where = (query.where ?? []).map((condition, index): QueryCondition => {
    const at = ['query', 'where', index, 'value'];
    const target = toTarget(condition.field, ['query', 'where', index, 'field']);
    encodeValue(condition.value, undefined, maxValueBytes, at.join('.'));
    return { target, operator: condition.operator, operand: checkOperand(target, condition.operator, condition.value, at) };
  });
  const orderBy = query.orderBy
    ? { target: toTarget(query.orderBy.field, ['query', 'orderBy', 'field']), direction: query.orderBy.direction ?? 'asc' }
    : { target: { kind: 'column', column: 'key' } as const, direction: 'asc' as const };
  return {
    instanceId: query.from.instance,
    ...(query.from.namespace !== undefined && { namespace: query.from.namespace }),
    where,
    orderBy,
    limit: query.limit ?? DEFAULT_QUERY_LIMIT,
    offset: query.offset ?? 0,
  };
}

function toTarget(field: string, path: (string | number)[]): QueryTarget {
  if (field === 'value') return { kind: 'value', path: [] };
  if (field.startsWith('value.')) {
    const segments = field.slice('value.'.length).split('.');
    // Segments are quoted inside the JSON path SQLite reads, which has no escapes for these.
    if (segments.some((segment) => UNQUOTABLE.test(segment))) {
      throw invalid(path, 'a value path segment cannot contain ", \\ or control characters');
    }
    return { kind: 'value', path: segments };
  }
  return { kind: 'column', column: field as Extract<QueryTarget, { kind: 'column' }>['column'] };
}

function checkOperand(target: QueryTarget, operator: QueryOperator, operand: unknown, path: (string | number)[]): unknown {
  if (target.kind === 'value') {
    if (STRING_ONLY.has(operator) && operator !== 'contains' && typeof operand !== 'string') {
      throw invalid(path, `${operator} needs a string`);
    }
    if (ORDERING.has(operator) && typeof operand !== 'number' && typeof operand !== 'string') {
      throw invalid(path, `${operator} needs a number or a string`);
    }
    return operand;
  }
  switch (target.column) {
    case 'key':
    case 'namespace':
      if (typeof operand !== 'string') throw invalid(path, `${target.column} compares with a string`);
      return operand;
    case 'version':
      if (STRING_ONLY.has(operator)) throw invalid(path, `${operator} does not apply to version`);
      if (typeof operand !== 'number' || !Number.isFinite(operand)) throw invalid(path, 'version compares with a number');
      return operand;
    case 'createdAt':
    case 'updatedAt': {
      if (STRING_ONLY.has(operator)) throw invalid(path, `${operator} does not apply to ${target.column}`);
      const ms = parseIsoTime(operand);
      if (Number.isNaN(ms)) throw invalid(path, `${target.column} compares with an ISO-8601 time with Z or an offset`);
      return ms;
    }
  }
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

/** Epoch ms of an ISO-8601 time with a zone (`Z` or an offset), else NaN: a zoneless time would be read in the server's zone. */
function parseIsoTime(operand: unknown): number {
  return typeof operand === 'string' && ISO_TIME.test(operand) ? Date.parse(operand) : Number.NaN;
}
