/** Who may connect (tokens, origins, hosts) and what each connection may do. */
export { authorize, canSeeInstance } from './authorize.js';
export { FULL_ACCESS, parseTokenFile, TokenConfigError, TokenSet, type Principal, type TokenGrant } from './tokens.js';
export {
  authenticate,
  checkUpgrade,
  hostAllowed,
  normaliseOrigin,
  originAllowed,
  selectSubprotocol,
  SUBPROTOCOL,
  type Refused,
  type UpgradePolicy,
} from './upgrade.js';
