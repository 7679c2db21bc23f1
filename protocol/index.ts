/**
 * kvhub's wire protocol: every message as a zod schema, error codes and limits.
 * The server and the SDK import their types from here; nothing is written twice.
 */
export * from './errors.js';
export * from './limits.js';
export * from './messages.js';
export * from './envelopes.js';
export * from './batch.js';
