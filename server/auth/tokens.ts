import { createHash, timingSafeEqual } from 'node:crypto';

/** What one connection may do, decided once from the token it presented. */
export interface Principal {
  /** The instances it may touch; `undefined` means every instance (a full or `instances=*` token). */
  readonly instances: ReadonlySet<string> | undefined;
  /** True when every write is FORBIDDEN. */
  readonly readonly: boolean;
  /**
   * Whose idempotency keys its writes use: the hex SHA-256 of the token (never the token itself,
   * which must not reach the database), or '' on a server without tokens, where keys are shared.
   */
  readonly owner: string;
}

/** The principal of a connection to a server without tokens. */
export const FULL_ACCESS: Principal = Object.freeze({ instances: undefined, readonly: false, owner: '' });

/** One configured token and what it grants. */
export interface TokenGrant {
  /** The secret itself: only `A-Z a-z 0-9 - _ . ~`. */
  token: string;
  /** The instances it may touch; `'*'` (the default) means every instance. @default '*' */
  instances?: readonly string[] | '*';
  /** FORBIDDEN for every write. @default false */
  readonly?: boolean;
}

/** The characters a token may use (the contract's Security section). */
const TOKEN_CHARS = /^[A-Za-z0-9\-_.~]+$/;

/** A token file or token setting that cannot be used; the message is a plain sentence. */
export class TokenConfigError extends Error {
  override readonly name = 'TokenConfigError';
}

/**
 * Reads a token file: one token per non-empty line, `#` starts a comment, surrounding space is
 * trimmed; a line is `TOKEN` or `TOKEN instances=ID,ID[,...] [readonly]` (`*` = every instance).
 * Throws {@link TokenConfigError} naming the first bad line (never echoing a token).
 */
export function parseTokenFile(text: string, source = 'the token file'): TokenGrant[] {
  const grants: TokenGrant[] = [];
  const lineOf = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const where = `line ${index + 1} of ${source}`;
    const [token, ...rest] = line.split(/[ \t]+/);
    checkTokenChars(token!, where);
    const earlier = lineOf.get(token!);
    if (earlier !== undefined) throw new TokenConfigError(`${where} repeats the token of line ${earlier}; give each token one line`);
    lineOf.set(token!, index + 1);
    if (rest.length === 0) return void grants.push({ token: token! });
    const [scope, flag, ...extra] = rest;
    if (!scope!.startsWith('instances=') || extra.length > 0 || (flag !== undefined && flag !== 'readonly')) {
      throw new TokenConfigError(`${where} is not 'TOKEN' or 'TOKEN instances=ID,ID[,...] [readonly]'`);
    }
    const ids = scope!.slice('instances='.length).split(',');
    if (ids.some((id) => id === '')) throw new TokenConfigError(`${where} has an empty instance id in instances=`);
    grants.push({ token: token!, instances: ids.includes('*') ? '*' : ids, readonly: flag === 'readonly' });
  });
  return grants;
}

function checkTokenChars(token: string, where: string): void {
  if (!TOKEN_CHARS.test(token)) {
    throw new TokenConfigError(`the token on ${where} uses characters other than A-Z, a-z, 0-9, '-', '_', '.' and '~'`);
  }
}

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest();

/**
 * The configured tokens, looked up in constant time: every candidate is compared as a SHA-256
 * digest with `timingSafeEqual`, and all of them are compared whatever matches, so neither the
 * length nor the content of a guess shows in the time an answer takes.
 */
export class TokenSet {
  private readonly entries: { digest: Buffer; principal: Principal }[];

  /** Throws {@link TokenConfigError} for a token with forbidden characters or one listed twice. */
  constructor(grants: readonly TokenGrant[]) {
    const seen = new Set<string>();
    this.entries = grants.map((grant, index) => {
      checkTokenChars(grant.token, `token ${index + 1}`);
      if (seen.has(grant.token)) throw new TokenConfigError(`token ${index + 1} is configured twice; give each token one line`);
      seen.add(grant.token);
      const instances = grant.instances === undefined || grant.instances === '*' ? undefined : new Set(grant.instances);
      const tokenDigest = digest(grant.token);
      const principal = Object.freeze({ instances, readonly: grant.readonly === true, owner: tokenDigest.toString('hex') });
      return { digest: tokenDigest, principal };
    });
  }

  /** True when at least one token is configured: every upgrade must then present one. */
  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /** The principal of `token`, or undefined when it is not configured. */
  lookup(token: string): Principal | undefined {
    const presented = digest(token);
    let found: Principal | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, presented) && found === undefined) found = entry.principal;
    }
    return found;
  }
}
