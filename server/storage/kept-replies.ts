import { ErrorCode, ProtocolError } from '../../protocol/index.js';
import { valueJson } from './record-json.js';

/** What a call came to: its value, or what it threw. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** The stored form of a kept outcome: the value, or the ProtocolError's parts. */
type KeptOutcome = { ok: true; value?: unknown } | { ok: false; code: ErrorCode; message: string; data?: unknown };

/**
 * True for failures a keyed write keeps: the protocol outcomes of a write that ran (CONFLICT,
 * INSTANCE_NOT_FOUND, TYPE_MISMATCH, ...). STORAGE_ERROR and INTERNAL_ERROR are not kept, so that
 * a retry can succeed; nor is anything that is not a ProtocolError (a bug, rethrown).
 */
export function isKeptFailure(error: unknown): error is ProtocolError {
  return error instanceof ProtocolError && error.code !== ErrorCode.STORAGE_ERROR && error.code !== ErrorCode.INTERNAL_ERROR;
}

/** The JSON text kept for an outcome. Values are JSON already: they become the reply's data. */
export function keptOutcome(outcome: Outcome<unknown>): string {
  if (outcome.ok) return outcome.value === undefined ? '{"ok":true}' : `{"ok":true,"value":${valueJson(outcome.value)}}`;
  const error = outcome.error as ProtocolError;
  return JSON.stringify({ ok: false, code: error.code, message: error.message, data: error.data } satisfies KeptOutcome);
}

/** The outcome kept as `text`, with a kept failure rebuilt as the same ProtocolError. */
export function parseOutcome<T>(text: string): Outcome<T> {
  const kept = JSON.parse(text) as KeptOutcome;
  if (kept.ok) return { ok: true, value: kept.value as T };
  return { ok: false, error: new ProtocolError(kept.code, kept.message, kept.data) };
}
