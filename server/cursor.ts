import { Buffer } from 'node:buffer';
import { invalidParam } from '../protocol/index.js';

// A list cursor is the last key returned, so a walk resumes by key range (keyset pagination):
// keys inserted or deleted elsewhere never shift it. The prefix marks the format for later change.
const PREFIX = 'k1.';

/** The opaque cursor that resumes a list walk after `key`. */
export function encodeCursor(key: string): string {
  return PREFIX + Buffer.from(key, 'utf8').toString('base64url');
}

/** The key a cursor resumes after; VALIDATION_ERROR for anything this server did not hand out. */
export function decodeCursor(cursor: string): string {
  const body = cursor.slice(PREFIX.length);
  if (cursor.startsWith(PREFIX) && body.length > 0 && /^[A-Za-z0-9_-]+$/.test(body)) {
    const key = Buffer.from(body, 'base64url').toString('utf8');
    if (key.length > 0 && key.isWellFormed() && Buffer.from(key, 'utf8').toString('base64url') === body) return key;
  }
  throw invalidParam(['cursor'], 'is not a cursor this server returned');
}
