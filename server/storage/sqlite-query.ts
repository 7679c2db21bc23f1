import { invalidParam, type ProtocolError } from '../../protocol/index.js';
import type { QueryCondition, QueryInput, QueryTarget } from './engine.js';
import { join, raw, sql, type Sql } from './sql.js';

/**
 * Translates the query DSL into SQL over the `records` table. Column names and operators come
 * from the allow-lists below; paths and operands are always bound parameters (see sql.ts).
 *
 * Value conditions read JSON with json_type/json_extract/json_each. Binary records (value NULL)
 * and records without the path yield NULL there, which every condition treats as "no match";
 * `neq` is `NOT eq` over that, so it does match them.
 */

const COLUMNS = {
  key: raw('records.key'),
  namespace: raw('records.namespace'),
  version: raw('records.version'),
  createdAt: raw('records.created_at'),
  updatedAt: raw('records.updated_at'),
} as const;

const COMPARISONS = { eq: raw('='), neq: raw('<>'), gt: raw('>'), gte: raw('>='), lt: raw('<'), lte: raw('<=') } as const;

/** A JSON slot: the SQL for its json_type-style type name and for its SQL value. */
interface Slot {
  type: Sql;
  value: Sql;
}

/** The WHERE and ORDER BY of a query; `live` already excludes expired records. */
export function buildQuery(input: QueryInput, now: number): { where: Sql; orderBy: Sql } {
  const terms: Sql[] = [sql`records.instance_id = ${input.instanceId}`];
  if (input.namespace !== undefined) terms.push(sql`records.namespace = ${input.namespace}`);
  terms.push(sql`(records.expires_at IS NULL OR records.expires_at > ${now})`);
  input.where.forEach((condition, i) => terms.push(conditionSql(condition, i)));

  const direction = input.orderBy.direction === 'desc' ? raw('DESC') : raw('ASC');
  const orderBy = sql`${targetOrderSql(input.orderBy.target)} ${direction}, records.key ASC, records.namespace ASC`;
  return { where: join(terms, ' AND '), orderBy };
}

/** JSON path text for `json_extract` & co: digits index arrays, anything else names a member. */
export function jsonPath(path: readonly string[], issuePath: (string | number)[] = []): string {
  let text = '$';
  for (const segment of path) {
    if (/^[0-9]+$/.test(segment)) text += `[${segment}]`;
    else if (segment.includes('"')) {
      throw invalidParam(issuePath, `a value path segment cannot contain '"' (segment ${JSON.stringify(segment)})`);
    } else text += `."${segment}"`;
  }
  return text;
}

function targetOrderSql(target: QueryTarget): Sql {
  if (target.kind === 'column') return COLUMNS[target.column];
  return sql`json_extract(records.value, ${jsonPath(target.path, ['query', 'orderBy', 'field'])})`;
}

function conditionSql(condition: QueryCondition, index: number): Sql {
  const { target, operator, operand } = condition;
  if (target.kind === 'column') return columnCondition(COLUMNS[target.column], operator, operand, index);
  const path = jsonPath(target.path, ['query', 'where', index, 'field']);
  const slot: Slot = {
    type: sql`json_type(records.value, ${path})`,
    value: sql`json_extract(records.value, ${path})`,
  };
  switch (operator) {
    case 'eq':
      return sql`COALESCE(${equals(slot, operand, index)}, 0)`;
    case 'neq':
      return sql`NOT COALESCE(${equals(slot, operand, index)}, 0)`;
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return sql`COALESCE(${compare(slot, COMPARISONS[operator], operand, index)}, 0)`;
    case 'contains':
      return sql`COALESCE(${contains(slot, path, operand, index)}, 0)`;
    case 'startsWith':
    case 'endsWith': {
      const text = stringOperand(operand, operator, index);
      const test = operator === 'startsWith' ? startsWith(slot.value, text) : endsWith(slot.value, text);
      return sql`COALESCE((${slot.type} = 'text' AND ${test}), 0)`;
    }
  }
}

function columnCondition(column: Sql, operator: QueryCondition['operator'], operand: unknown, index: number): Sql {
  switch (operator) {
    case 'eq':
    case 'neq':
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return sql`${column} ${COMPARISONS[operator]} ${scalarOperand(operand, index)}`;
    case 'contains':
      return sql`instr(${column}, ${stringOperand(operand, operator, index)}) > 0`;
    case 'startsWith':
      return startsWith(column, stringOperand(operand, operator, index));
    case 'endsWith':
      return endsWith(column, stringOperand(operand, operator, index));
  }
}

/** Prefix test by character count, not LIKE: `%`, `_` and case stay literal; '' matches all. */
function startsWith(subject: Sql, text: string): Sql {
  return sql`(substr(${subject}, 1, length(${text})) = ${text})`;
}

/** Suffix test; the explicit length check keeps a negative substr start from wrapping around. */
function endsWith(subject: Sql, text: string): Sql {
  return sql`(length(${text}) <= length(${subject}) AND substr(${subject}, length(${subject}) - length(${text}) + 1) = ${text})`;
}

/** Same JSON type and equal value; NULL (not 0) when the slot is missing or binary. */
function equals(slot: Slot, operand: unknown, index: number): Sql {
  if (operand === null) return sql`(${slot.type} = 'null')`;
  if (operand === true) return sql`(${slot.type} = 'true')`;
  if (operand === false) return sql`(${slot.type} = 'false')`;
  if (typeof operand === 'number') return sql`(${slot.type} IN ('integer', 'real') AND ${slot.value} = ${operand})`;
  if (typeof operand === 'string') return sql`(${slot.type} = 'text' AND ${slot.value} = ${operand})`;
  if (Array.isArray(operand)) return sql`(${slot.type} = 'array' AND ${slot.value} = json(${JSON.stringify(operand)}))`;
  if (typeof operand === 'object') return sql`(${slot.type} = 'object' AND ${slot.value} = json(${JSON.stringify(operand)}))`;
  throw invalid(index, 'the operand is not a JSON value');
}

/** Ordering applies within one kind: numbers with numbers, strings (by byte order) with strings. */
function compare(slot: Slot, op: Sql, operand: unknown, index: number): Sql {
  if (typeof operand === 'number') return sql`(${slot.type} IN ('integer', 'real') AND ${slot.value} ${op} ${operand})`;
  if (typeof operand === 'string') return sql`(${slot.type} = 'text' AND ${slot.value} ${op} ${operand})`;
  throw invalid(index, 'gt, gte, lt and lte need a number or a string');
}

/** Substring of a string value, or membership in an array value (element equal to the operand). */
function contains(slot: Slot, path: string, operand: unknown, index: number): Sql {
  const element: Slot = { type: raw('element.type'), value: raw('element.value') };
  const membership = sql`(${slot.type} = 'array' AND EXISTS (SELECT 1 FROM json_each(records.value, ${path}) AS element WHERE ${equals(element, operand, index)}))`;
  if (typeof operand !== 'string') return membership;
  return sql`((${slot.type} = 'text' AND instr(${slot.value}, ${operand}) > 0) OR ${membership})`;
}

function scalarOperand(operand: unknown, index: number): string | number {
  if (typeof operand === 'string' || typeof operand === 'number') return operand;
  if (typeof operand === 'boolean') return operand ? 1 : 0;
  throw invalid(index, 'this field compares with a string or a number');
}

function stringOperand(operand: unknown, operator: string, index: number): string {
  if (typeof operand === 'string') return operand;
  throw invalid(index, `${operator} needs a string`);
}

function invalid(index: number, message: string): ProtocolError {
  return invalidParam(['query', 'where', index, 'value'], message);
}
