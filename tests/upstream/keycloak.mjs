// Keycloak stand-in flavour of the test upstream (UPSTREAM_FLAVOUR=keycloak). It is NOT Keycloak: it reproduces
// the Keycloak behaviour dcr-proxy meets (paths, client registration, Admin REST, certificate lookup, tls_client_auth
// DN matching, tokens) on top of oidc-provider 9, which still authenticates clients and issues and tracks tokens.
//
// Every behaviour names the Keycloak source it was read from: repository keycloak/keycloak, paths under
// services/src/main/java/org/keycloak/ unless given whole. /work/shared/idp/keycloak.md lists them too.

import * as http from 'node:http';
import { Readable } from 'node:stream';
import {
  X509Certificate, randomBytes, randomUUID,
} from 'node:crypto';

import {
  ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, CLIENT_CERT_HEADER, INITIAL_ACCESS_TOKEN, INJECTED_ERROR,
  INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET, MapAdapter, PORT, fail, handleTestRoute, installShutdown,
  isTestRoute, log, makeJwks, readBody, recordRequest, sendJson, storeFor, takeFault,
} from './common.mjs';
import { DnSyntaxError, keycloakSubjectDnMatches } from './x500.mjs';

const { Provider, errors } = await import('oidc-provider');
const jose = await import('jose');

// ---------------------------------------------------------------- env

const REALM = process.env.KEYCLOAK_REALM || 'dcr';
if (!/^[A-Za-z0-9._-]+$/.test(REALM)) fail('KEYCLOAK_REALM must be a plain realm name ([A-Za-z0-9._-])');

// KC_HOSTNAME: the frontend URL Keycloak builds public URLs from. Default not on loopback, so that a proxy that
// trusts the origin Keycloak's answers name fails here as it would in production. "self" = this server.
const HOSTNAME_SETTING = process.env.KEYCLOAK_HOSTNAME || 'https://bank.example.test';
if (HOSTNAME_SETTING !== 'self') {
  let u;
  try { u = new URL(HOSTNAME_SETTING); } catch { fail('KEYCLOAK_HOSTNAME must be an http(s) origin or "self"'); }
  if (!['http:', 'https:'].includes(u.protocol) || u.pathname !== '/' || u.search || u.hash) {
    fail('KEYCLOAK_HOSTNAME must be an http(s) origin without a path, or "self"');
  }
}

// hostname-backchannel-dynamic (url/HostnameV2Provider.getBaseUri, case BACKEND): off by default, so backend URLs
// (token, registration, ...) are on the frontend hostname too.
const BACKCHANNEL_DYNAMIC = (process.env.KEYCLOAK_HOSTNAME_BACKCHANNEL_DYNAMIC || 'false') === 'true';

// x509cert-lookup certificate-chain-length (services/x509/Rfc9440ClientCertificateLookupFactory, default 1).
const CERT_CHAIN_LENGTH = Number.parseInt(process.env.KEYCLOAK_CERT_CHAIN_LENGTH ?? '1', 10);
if (!Number.isInteger(CERT_CHAIN_LENGTH) || CERT_CHAIN_LENGTH < 0) fail('KEYCLOAK_CERT_CHAIN_LENGTH must be >= 0');

// nginx lookup trust-proxy-verification (services/x509/NginxProxySslClientCertificateLookupFactory, default false).
const NGINX_TRUST_PROXY_VERIFICATION = (process.env.KEYCLOAK_NGINX_TRUST_PROXY_VERIFICATION || 'false') === 'true';

// Realm client scopes the bank created for Open Banking UK and CDR (Keycloak's built-in ones are added below).
const OB_CDR_SCOPES = [
  'accounts', 'payments', 'fundsconfirmations', 'cdr:registration',
  'bank:accounts.basic:read', 'bank:accounts.detail:read', 'bank:transactions:read',
  'bank:payees:read', 'bank:regular_payments:read', 'common:customer.basic:read',
  'common:customer.detail:read', 'energy:accounts.basic:read',
];

// The "Allowed Client Scopes" registration policy's allowed-client-scopes list. "openid" is not a client scope,
// so it must be listed to be accepted (services/clientregistration/policy/impl/ClientScopesClientRegistrationPolicy).
const ALLOWED_SCOPES = (process.env.KEYCLOAK_ALLOWED_SCOPES ?? ['openid', ...OB_CDR_SCOPES].join(','))
  .split(',').map((s) => s.trim()).filter(Boolean);

// CVE-2026-37979 (keycloak/keycloak#49113, fixed in 26.4.12, 26.6.2, 26.7.0): introspection answers active:false
// unless the introspecting client is in the token's aud. Ways out: per-client attribute
// allow.token.introspection.without.audience.check (OIDCConfigAttributes), an audience mapper, or the deprecated
// server-wide option (protocol/oidc/OIDCProviderConfig, default false).
const AUDIENCE_CHECK_MODES = ['on', 'client-exempt', 'audience-mapper', 'off'];
const INTROSPECTION_AUDIENCE_CHECK = process.env.KEYCLOAK_INTROSPECTION_AUDIENCE_CHECK || 'on';
if (!AUDIENCE_CHECK_MODES.includes(INTROSPECTION_AUDIENCE_CHECK)) {
  fail(`KEYCLOAK_INTROSPECTION_AUDIENCE_CHECK must be one of ${AUDIENCE_CHECK_MODES.join(', ')}`);
}

// Keycloak releases ship the apache, haproxy, nginx, rfc9440 and traefik lookups; there is no Envoy one.
if (!['rfc9440', 'nginx'].includes(CLIENT_CERT_HEADER)) {
  fail('CLIENT_CERT_HEADER must be rfc9440 or nginx in keycloak mode (Keycloak has no envoy lookup provider)');
}

// Realm accessTokenLifespan default: 300 s.
const ACCESS_TOKEN_LIFESPAN = 300;

// ---------------------------------------------------------------- realm model

// Built-in OIDC client scopes of a new realm and whether they are realm default (true) / optional (false) scopes
// (protocol/oidc/OIDCLoginProtocolFactory.createDefaultClientScopesImpl and add*ClientScope;
// models/utils/DefaultClientScopes.createOfflineAccessClientScope). `token`: include.in.token.scope.
// "organization" exists only with the ORGANIZATION feature and is left out here.
const BUILTIN_SCOPES = [
  { name: 'profile', realmDefault: true, token: true },
  { name: 'email', realmDefault: true, token: true },
  { name: 'address', realmDefault: false, token: true },
  { name: 'phone', realmDefault: false, token: true },
  { name: 'offline_access', realmDefault: false, token: true },
  { name: 'roles', realmDefault: true, token: false },
  { name: 'web-origins', realmDefault: true, token: false },
  { name: 'microprofile-jwt', realmDefault: false, token: true },
  { name: 'acr', realmDefault: true, token: false },
  { name: 'basic', realmDefault: true, token: false },
  { name: 'service_account', realmDefault: undefined, token: false },
];
const CLIENT_SCOPES = new Map([
  ...BUILTIN_SCOPES.map((s) => [s.name, s]),
  ...OB_CDR_SCOPES.map((name) => [name, { name, realmDefault: undefined, token: true }]),
]);
const realmDefaultScopes = (isDefault) => BUILTIN_SCOPES.filter((s) => s.realmDefault === isDefault).map((s) => s.name);

// The realm's clients, by internal id. DCR clients have id == clientId (models/jpa/JpaRealmProvider.addClient:
// `if (clientId == null) clientId = id`).
const clients = new Map();
const byClientId = (clientId) => [...clients.values()].find((c) => c.clientId === clientId);

function newClient(fields) {
  return {
    id: randomUUID(),
    name: undefined,
    description: undefined,
    baseUrl: undefined,
    redirectUris: [],
    webOrigins: [],
    enabled: true,
    protocol: 'openid-connect',
    standardFlowEnabled: true,
    implicitFlowEnabled: false,
    directAccessGrantsEnabled: false,
    serviceAccountsEnabled: false,
    publicClient: false,
    bearerOnly: false,
    consentRequired: false,
    frontchannelLogout: false,
    fullScopeAllowed: true,
    clientAuthenticatorType: 'client-secret',
    secret: undefined,
    attributes: {},
    defaultClientScopes: realmDefaultScopes(true),
    optionalClientScopes: realmDefaultScopes(false),
    registrationToken: undefined,
    dcr: false,
    adminRoles: [],
    ...fields,
  };
}

// Clients every new realm has (services/managers/RealmManager); listed by Admin REST like any other.
for (const clientId of ['account', 'account-console', 'admin-cli', 'broker', 'realm-management', 'security-admin-console']) {
  const c = newClient({
    clientId, name: `\${client_${clientId}}`, publicClient: ['account-console', 'admin-cli', 'security-admin-console'].includes(clientId),
  });
  clients.set(c.id, c);
}
// The two static clients the harness configures: confidential service accounts. The admin one carries
// realm-management manage-clients (what Keycloak's admin guide asks for an [upstream.admin] client).
for (const [clientId, secret, adminRoles] of [
  [INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET, []],
  [ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, ['manage-clients']],
]) {
  const c = newClient({
    clientId, secret, standardFlowEnabled: false, serviceAccountsEnabled: true, adminRoles, attributes: {},
  });
  if (clientId === INTROSPECTION_CLIENT_ID && INTROSPECTION_AUDIENCE_CHECK === 'client-exempt') {
    c.attributes['allow.token.introspection.without.audience.check'] = 'true';
  }
  clients.set(c.id, c);
}

// ---------------------------------------------------------------- URLs

const PROTOCOL_PATH = `/realms/${REALM}/protocol/openid-connect`;
const REGISTRATION_PATH = `/realms/${REALM}/clients-registrations/openid-connect`;
const ADMIN_CLIENTS_PATH = `/admin/realms/${REALM}/clients`;
const PATHS = {
  auth: `${PROTOCOL_PATH}/auth`,
  token: `${PROTOCOL_PATH}/token`,
  introspect: `${PROTOCOL_PATH}/token/introspect`,
  revoke: `${PROTOCOL_PATH}/revoke`,
  certs: `${PROTOCOL_PATH}/certs`,
  userinfo: `${PROTOCOL_PATH}/userinfo`,
  logout: `${PROTOCOL_PATH}/logout`,
  par: `${PROTOCOL_PATH}/ext/par/request`,
  ciba: `${PROTOCOL_PATH}/ext/ciba/auth`,
  device: `${PROTOCOL_PATH}/auth/device`,
  iframe: `${PROTOCOL_PATH}/login-status-iframe.html`,
  discovery: `/realms/${REALM}/.well-known/openid-configuration`,
};

let localBase; // http://127.0.0.1:PORT, once listening
let frontendBase;

function requestOrigin(req) {
  return `http://${req.headers.host || `127.0.0.1:${PORT}`}`;
}

// HostnameV2Provider.getBaseUri: BACKEND = frontend unless hostname-backchannel-dynamic and the request did not
// come to the frontend URL.
function backendBase(req) {
  return BACKCHANNEL_DYNAMIC && requestOrigin(req) !== frontendBase ? requestOrigin(req) : frontendBase;
}

const realmIssuer = () => `${frontendBase}/realms/${REALM}`;

// ---------------------------------------------------------------- tokens (JWTs, as Keycloak issues them)

let signingKey; // RS256 private key (the provider's RSA key), kid
let signingKid;
let publicJwks; // what /certs publishes
const hmacKey = randomBytes(64); // the realm's HS512 key for registration access tokens (TokenCategory.INTERNAL)
const hmacKid = randomUUID();

// jti of an access-token JWT -> the oidc-provider opaque token behind it (which carries expiry, cnf, revocation).
const accessTokens = new Map();

// Service-account users: one stable id per client.
const serviceAccountUsers = new Map();
function serviceAccountUserId(clientId) {
  if (!serviceAccountUsers.has(clientId)) serviceAccountUsers.set(clientId, randomUUID());
  return serviceAccountUsers.get(clientId);
}

async function verifyAccessToken(token) {
  try {
    const { payload } = await jose.jwtVerify(token, signingKey.public, { issuer: realmIssuer(), algorithms: ['RS256'] });
    return payload;
  } catch {
    return undefined;
  }
}

// The access token is live while the oidc-provider token behind it is (revocation destroys that one).
async function backingToken(claims) {
  const opaque = accessTokens.get(claims?.jti);
  return opaque ? provider.ClientCredentials.find(opaque) : undefined;
}

// ClientRegistrationTokenUtils.setupToken / updateRegistrationAccessToken: a JWT signed with the realm's HS512
// key, typ RegistrationAccessToken, exp 0 (never), jti = the client's registration token id.
function mintRegistrationAccessToken(client, registrationAuth) {
  const id = randomBytes(32).toString('base64url');
  client.registrationToken = id;
  return new jose.SignJWT({
    typ: 'RegistrationAccessToken', registration_auth: registrationAuth, exp: 0,
  })
    .setProtectedHeader({ alg: 'HS512', typ: 'JWT', kid: hmacKid })
    .setJti(id)
    .setIssuedAt()
    .setIssuer(realmIssuer())
    .setAudience(realmIssuer())
    .sign(hmacKey);
}

// TokenVerifier with RealmUrlCheck and IS_ACTIVE: exp 0 means "never expires" (which jose's jwtVerify would
// call expired, hence the manual claim checks).
async function verifyRegistrationAccessToken(token) {
  try {
    const { payload } = await jose.compactVerify(token, hmacKey, { algorithms: ['HS512'] });
    const claims = JSON.parse(Buffer.from(payload).toString('utf8'));
    if (claims.iss !== realmIssuer()) return undefined;
    if (claims.exp !== 0 && !(claims.exp > Date.now() / 1000)) return undefined;
    return claims;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- client certificate lookup

function distinct(req, name) {
  return req.headersDistinct?.[name] ?? [];
}

function derCertificate(der) {
  try {
    return new X509Certificate(der);
  } catch {
    return undefined;
  }
}

// services/x509/Rfc9440ClientCertificateLookup.getCertificateChain: `Client-Cert` at most once, a byte sequence
// ":base64 DER:"; `Client-Cert-Chain` list entries (split on ",\s*") beyond certificate-chain-length throw a
// GeneralSecurityException, and so does any malformed value. Callers treat a thrown lookup as no certificate.
function rfc9440Chain(req) {
  const values = distinct(req, 'client-cert');
  if (!values.length) return [];
  if (values.length > 1) throw new Error('RFC 9440 2.2: client cert header must occur at most once');
  const parse = (seq) => {
    if (seq.length < 2 || !seq.startsWith(':') || !seq.endsWith(':')) throw new Error('RFC 8941 3.3.5: not a byte sequence');
    // Base64.getMimeDecoder() skips characters outside the base64 alphabet.
    const cert = derCertificate(Buffer.from(seq.slice(1, -1).replace(/[^A-Za-z0-9+/=]/g, ''), 'base64'));
    if (!cert) throw new Error('RFC 9440 2.1: value does not contain DER encoded certificate');
    return cert;
  };
  const leaf = parse(values[0]);
  const entries = distinct(req, 'client-cert-chain').flatMap((v) => v.split(/,\s*/));
  if (entries.length > CERT_CHAIN_LENGTH) {
    throw new Error(`The amount of certificates in the chain header ${entries.length} is bigger than the configured limit of ${CERT_CHAIN_LENGTH}.`);
  }
  return [leaf, ...entries.map(parse)];
}

// services/x509/NginxProxySslClientCertificateLookup (+ AbstractClientCertificateFromHttpHeadersLookup):
// first `ssl-client-cert` value, surrounding double quotes trimmed, URL-decoded (java.net.URLDecoder: '+' is a
// space), PEM. Only with trust-proxy-verification is `ssl-client-verify: SUCCESS` required
// (NginxProxyTrustedClientCertificateLookup); otherwise the chain is rebuilt from Keycloak's truststore, which
// only matters for x509.casubjectdn checks the stand-in does not make.
function nginxChain(req) {
  let value = distinct(req, 'ssl-client-cert')[0];
  if (value && value.length > 1 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
  if (!value || !value.trim()) return [];
  const pem = decodeURIComponent(value.replace(/\+/g, ' '));
  const b64 = pem.replace('-----BEGIN CERTIFICATE-----', '').replace('-----END CERTIFICATE-----', '')
    .replace(/\r?\n/g, '').trim();
  const cert = derCertificate(Buffer.from(b64, 'base64'));
  if (!cert) throw new Error('ssl-client-cert does not hold a PEM certificate');
  if (NGINX_TRUST_PROXY_VERIFICATION && distinct(req, 'ssl-client-verify')[0] !== 'SUCCESS') return [];
  return [cert];
}

// The leaf of the chain Keycloak would see, or undefined (no certificate, or the lookup threw).
function lookupCertificate(req) {
  try {
    return (CLIENT_CERT_HEADER === 'nginx' ? nginxChain(req) : rfc9440Chain(req))[0];
  } catch (err) {
    log(`x509 lookup: ${err.message} (no client certificate)`);
    return undefined;
  }
}

const certCache = new WeakMap();
function getCertificate(ctx) {
  if (!certCache.has(ctx)) certCache.set(ctx, lookupCertificate(ctx.req));
  return certCache.get(ctx);
}

const NO_SUBJECT_DN = 'x509.subjectdn is not set';

// authentication/authenticators/client/X509ClientAuthenticator.authenticateClient: a blank x509.subjectdn fails;
// otherwise the DN is parsed like `new X500Principal(dn, CUSTOM_OIDS_REVERSED)` and compared in RFC 2253 form
// with the leaf's subject (x500.mjs). A DN Java cannot parse throws out of the authenticator; the
// AuthenticationProcessor turns that into 400 unauthorized_client (see rewriteClientAuthError).
function certificateSubjectMatches(ctx, property, expected) {
  const cert = getCertificate(ctx);
  if (!cert || property !== 'tls_client_auth_subject_dn' || expected === NO_SUBJECT_DN || !expected.trim()) return false;
  try {
    const ok = keycloakSubjectDnMatches(cert.raw, expected);
    if (ok) {
      // Keycloak 26.7 logs this for every tls_client_auth client without x509.casubjectdn (issue #48412);
      // DCR has no field that sets it.
      log(`WARN [X509ClientCertificateAuthenticator:authenticate] option 'x509.casubjectdn' is null or empty, this configuration is deprecated, please configure it for better security for client '${ctx.oidc?.client?.clientId}' in realm '${REALM}'`);
    }
    return ok;
  } catch (err) {
    if (!(err instanceof DnSyntaxError)) throw err;
    ctx.state.kcUnexpectedClientAuthError = `improperly specified input name: ${expected} (${err.message})`;
    return false;
  }
}

// ---------------------------------------------------------------- oidc-provider client records

const AUTH_METHOD_OF = {
  'client-secret': 'client_secret_basic',
  'client-jwt': 'private_key_jwt',
  'client-secret-jwt': 'client_secret_jwt',
  'client-x509': 'tls_client_auth',
  none: 'none',
};

// oidc-provider only authenticates clients and issues tokens; Keycloak's client model decides what it accepts.
function providerMetadata(c) {
  const a = c.attributes;
  const method = AUTH_METHOD_OF[c.clientAuthenticatorType] ?? 'client_secret_basic';
  const meta = {
    client_id: c.clientId,
    token_endpoint_auth_method: method,
    // Keycloak refuses the grant itself when service accounts are off (rewriteTokenError).
    grant_types: c.serviceAccountsEnabled ? ['client_credentials'] : [],
    response_types: [],
    redirect_uris: [],
    scope: ['openid', ...c.defaultClientScopes, ...c.optionalClientScopes].join(' '),
    tls_client_certificate_bound_access_tokens: a['tls.client.certificate.bound.access.tokens'] === 'true',
  };
  if (['client_secret_basic', 'client_secret_jwt'].includes(method)) meta.client_secret = c.secret;
  if (method === 'tls_client_auth') meta.tls_client_auth_subject_dn = a['x509.subjectdn'] || NO_SUBJECT_DN;
  if (a['use.jwks.url'] === 'true' && a['jwks.url']) meta.jwks_uri = a['jwks.url'];
  else if (a['use.jwks.string'] === 'true' && a['jwks.string']) meta.jwks = JSON.parse(a['jwks.string']);
  if (a['token.endpoint.auth.signing.alg']) meta.token_endpoint_auth_signing_alg = a['token.endpoint.auth.signing.alg'];
  return meta;
}

async function syncProviderClient(c) {
  const meta = providerMetadata(c);
  try {
    await provider.Client.validate(meta);
  } catch (err) {
    log(`client ${c.clientId} cannot get tokens from the stand-in (oidc-provider refuses its metadata: ${err.error_description ?? err.message})`);
    storeFor('Client').delete(c.clientId);
    return;
  }
  storeFor('Client').set(c.clientId, { payload: meta });
}

function removeClient(c) {
  clients.delete(c.id);
  storeFor('Client').delete(c.clientId);
}

// ---------------------------------------------------------------- JSON helpers

// Keycloak serialises representations without null fields.
function compact(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined && v !== null));
}

class HttpError extends Error {
  constructor(status, body, headers = {}) {
    super(body?.error_description ?? body?.error ?? String(status));
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

// services/ErrorResponseException -> {"error": ..., "error_description": ...}
const oauthError = (status, error, description) => new HttpError(status, compact({ error, error_description: description }));

// services/error/KeycloakErrorHandler: a JAX-RS WebApplicationException without an error code renders its
// message as "error"; 5xx get "For more on this error consult the server log.".
const SERVER_ERROR = () => new HttpError(500, { error: 'unknown_error', error_description: 'For more on this error consult the server log.' });

// Jackson's default pretty printer, which JsonSerialization.writeValueAsPrettyString uses for jwks.string.
function jacksonPretty(value, indent = '') {
  const next = `${indent}  `;
  if (Array.isArray(value)) {
    if (!value.length) return '[ ]';
    return `[ ${value.map((v) => jacksonPretty(v, indent)).join(', ')} ]`;
  }
  if (value && typeof value === 'object') {
    const entries = Object.entries(value);
    if (!entries.length) return '{ }';
    return `{\n${entries.map(([k, v]) => `${next}${JSON.stringify(k)} : ${jacksonPretty(v, next)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(value);
}

// ---------------------------------------------------------------- DCR: DescriptionConverter

class ClientMetadataInvalid extends Error {}

const RESPONSE_TYPES = new Set(['code', 'none', 'id_token', 'token']);

// services/clientregistration/oidc/DescriptionConverter.toInternal. Fields it does not read (software_id,
// software_version, software_statement, contacts, application_type, ...) are dropped. `null` attribute values
// mean "remove on update" (OIDCAdvancedConfigWrapper.setAttribute puts null once the map exists).
function toInternal(o) {
  const rep = {
    clientId: o.client_id ?? undefined,
    name: o.client_name ?? undefined,
    redirectUris: o.redirect_uris ?? undefined,
    baseUrl: o.client_uri ?? undefined,
    protocol: 'openid-connect',
  };
  let attributes; // created by the first non-null attribute, as in OIDCAdvancedConfigWrapper
  const set = (k, v) => {
    if (v !== undefined && v !== null) {
      attributes ??= {};
      attributes[k] = String(v);
    } else if (attributes) {
      attributes[k] = null;
    }
  };

  if (o.scope !== undefined && o.scope !== null) rep.optionalClientScopes = String(o.scope).split(' ');

  // OIDCResponseType.parse: an unknown response type throws IllegalArgumentException.
  let responseTypes = o.response_types;
  if (!Array.isArray(responseTypes) || !responseTypes.length) responseTypes = ['code'];
  const parsed = new Set();
  for (const rt of responseTypes) {
    for (const t of String(rt).split(' ')) {
      if (!RESPONSE_TYPES.has(t)) throw new ClientMetadataInvalid(`Unsupported response_type: ${t}`);
      parsed.add(t);
    }
  }
  rep.standardFlowEnabled = parsed.has('code');
  rep.implicitFlowEnabled = parsed.has('id_token') || parsed.has('token');
  const grantTypes = Array.isArray(o.grant_types) ? o.grant_types : undefined;
  if (grantTypes) {
    rep.directAccessGrantsEnabled = grantTypes.includes('password');
    rep.serviceAccountsEnabled = grantTypes.includes('client_credentials');
    set('oidc.ciba.grant.enabled', grantTypes.includes('urn:openid:params:grant-type:ciba'));
  }

  // AuthorizeClientUtil.findClientAuthenticatorForOIDCAuthMethod; default KeycloakModelUtils
  // .getDefaultClientAuthenticatorType() = client-secret. No authenticator -> ClientRegistrationException.
  const method = o.token_endpoint_auth_method;
  rep.publicClient = false;
  if (method === 'none') {
    rep.clientAuthenticatorType = 'none';
    rep.publicClient = true;
  } else {
    const byMethod = {
      client_secret_basic: 'client-secret',
      client_secret_post: 'client-secret',
      private_key_jwt: 'client-jwt',
      client_secret_jwt: 'client-secret-jwt',
      tls_client_auth: 'client-x509',
    };
    const type = method === undefined || method === null ? 'client-secret' : byMethod[method];
    if (!type) throw new ClientMetadataInvalid('Not found clientAuthenticator for requested token_endpoint_auth_method');
    rep.clientAuthenticatorType = type;
  }

  // setPublicKey: jwks and jwks_uri together are refused; private_key_jwt needs a signing key.
  let publicKeySet = false;
  if (o.jwks !== undefined && o.jwks !== null) {
    if (o.jwks_uri !== undefined && o.jwks_uri !== null) throw new ClientMetadataInvalid('Illegal to use both jwks_uri and jwks');
    set('jwks.string', jacksonPretty(o.jwks));
    set('use.jwks.string', true);
    set('use.jwks.url', false);
    publicKeySet = Array.isArray(o.jwks.keys) && o.jwks.keys.some((k) => k && (k.use === undefined || k.use === 'sig'));
  } else if (o.jwks_uri !== undefined && o.jwks_uri !== null) {
    set('use.jwks.url', true);
    set('jwks.url', o.jwks_uri);
    set('use.jwks.string', false);
    publicKeySet = true;
  }
  if (method === 'private_key_jwt' && !publicKeySet) throw new ClientMetadataInvalid("Didn't find key of supported keyType for use sig");

  if (o.userinfo_signed_response_alg != null) set('user.info.response.signature.alg', o.userinfo_signed_response_alg);
  if (o.request_object_signing_alg != null) set('request.object.signature.alg', o.request_object_signing_alg);
  if (o.userinfo_encrypted_response_alg != null) set('user.info.encrypted.response.alg', o.userinfo_encrypted_response_alg);
  if (o.userinfo_encrypted_response_enc != null) set('user.info.encrypted.response.enc', o.userinfo_encrypted_response_enc);
  // KEYCLOAK-6771 Certificate Bound Token
  if (o.tls_client_certificate_bound_access_tokens != null) {
    set('tls.client.certificate.bound.access.tokens', o.tls_client_certificate_bound_access_tokens === true);
  }
  if (o.tls_client_auth_subject_dn != null) {
    set('x509.subjectdn', o.tls_client_auth_subject_dn);
    // "there is no reason for support regex comparisons"
    set('x509.allow.regex.pattern.comparison', false);
  }
  if (o.id_token_signed_response_alg != null) set('id.token.signed.response.alg', o.id_token_signed_response_alg);
  if (o.id_token_encrypted_response_alg != null) set('id.token.encrypted.response.alg', o.id_token_encrypted_response_alg);
  if (o.id_token_encrypted_response_enc != null) set('id.token.encrypted.response.enc', o.id_token_encrypted_response_enc);
  set('authorization.signed.response.alg', o.authorization_signed_response_alg);
  set('authorization.encrypted.response.alg', o.authorization_encrypted_response_alg);
  set('authorization.encrypted.response.enc', o.authorization_encrypted_response_enc);
  if (Array.isArray(o.request_uris) && o.request_uris.length) set('request.uris', o.request_uris.join('##'));
  set('token.endpoint.auth.signing.alg', o.token_endpoint_auth_signing_alg);
  set('backchannel.logout.url', o.backchannel_logout_uri);
  set('backchannel.logout.session.required', o.backchannel_logout_session_required ?? true);
  set('backchannel.logout.revoke.offline.tokens', o.backchannel_logout_revoke_offline_tokens ?? false);
  if (o.logo_uri != null) set('logoUri', o.logo_uri);
  if (o.policy_uri != null) set('policyUri', o.policy_uri);
  if (o.tos_uri != null) set('tosUri', o.tos_uri);
  if (Array.isArray(o.post_logout_redirect_uris) && o.post_logout_redirect_uris.length) {
    set('post.logout.redirect.uris', o.post_logout_redirect_uris.join('##'));
  }
  if (o.backchannel_token_delivery_mode != null) set('ciba.backchannel.token.delivery.mode', o.backchannel_token_delivery_mode);
  if (o.backchannel_client_notification_endpoint != null) set('ciba.backchannel.client.notification.endpoint', o.backchannel_client_notification_endpoint);
  if (o.backchannel_authentication_request_signing_alg != null) set('ciba.backchannel.auth.request.signing.alg', o.backchannel_authentication_request_signing_alg);
  if (o.require_pushed_authorization_requests != null) set('require.pushed.authorization.requests', o.require_pushed_authorization_requests === true);
  // setFrontChannelLogoutUrl also sets the client's frontchannelLogout flag.
  rep.frontchannelLogout = typeof o.frontchannel_logout_uri === 'string' && o.frontchannel_logout_uri.trim() !== '';
  set('frontchannel.logout.url', o.frontchannel_logout_uri);
  set('frontchannel.logout.session.required', o.frontchannel_logout_session_required ?? false);
  if (Array.isArray(o.default_acr_values) && o.default_acr_values.length) set('default.acr.values', o.default_acr_values.join('##'));

  rep.attributes = attributes;
  return rep;
}

// Attributes as stored: null values are removals.
function applyAttributes(target, attributes) {
  for (const [k, v] of Object.entries(attributes ?? {})) {
    if (v === null || v === '') delete target[k]; else target[k] = v;
  }
}

// DescriptionConverter.toExternalResponse.
function toExternalResponse(c, registrationClientUri, registrationAccessToken) {
  const a = c.attributes;
  const out = { client_id: c.clientId };
  if (c.clientAuthenticatorType === 'none') {
    out.token_endpoint_auth_method = 'none';
  } else {
    out.token_endpoint_auth_method = AUTH_METHOD_OF[c.clientAuthenticatorType];
    // clientAuth.supportsSecret(): client-secret and client-secret-jwt.
    if (['client-secret', 'client-secret-jwt'].includes(c.clientAuthenticatorType)) {
      out.client_secret = c.secret;
      out.client_secret_expires_at = 0;
    }
  }
  out.client_name = c.name;
  out.client_uri = c.baseUrl;
  out.redirect_uris = c.redirectUris;
  out.registration_access_token = registrationAccessToken;
  out.registration_client_uri = registrationClientUri;
  const responseTypes = [];
  if (c.standardFlowEnabled) responseTypes.push('code', 'none');
  if (c.implicitFlowEnabled) responseTypes.push('id_token', 'id_token token');
  if (c.standardFlowEnabled && c.implicitFlowEnabled) responseTypes.push('code id_token', 'code token', 'code id_token token');
  out.response_types = responseTypes;
  const grantTypes = [];
  if (c.standardFlowEnabled) grantTypes.push('authorization_code');
  if (c.implicitFlowEnabled) grantTypes.push('implicit');
  if (c.directAccessGrantsEnabled) grantTypes.push('password');
  if (c.serviceAccountsEnabled) grantTypes.push('client_credentials');
  if (a['oidc.ciba.grant.enabled'] === 'true') grantTypes.push('urn:openid:params:grant-type:ciba');
  if ((a['use.refresh.tokens'] ?? 'true') === 'true') grantTypes.push('refresh_token');
  out.grant_types = grantTypes;
  // The representation comes from ModelToRepresentation, so the list is never null: scope may be "".
  out.scope = c.optionalClientScopes.join(' ');
  if (a['user.info.response.signature.alg']) out.userinfo_signed_response_alg = a['user.info.response.signature.alg'];
  if (a['user.info.encrypted.response.alg']) out.userinfo_encrypted_response_alg = a['user.info.encrypted.response.alg'];
  if (a['user.info.encrypted.response.enc']) out.userinfo_encrypted_response_enc = a['user.info.encrypted.response.enc'];
  if (a['request.object.signature.alg']) out.request_object_signing_alg = a['request.object.signature.alg'];
  if (a['use.jwks.url'] === 'true') out.jwks_uri = a['jwks.url'];
  if (a['use.jwks.string'] === 'true' && a['jwks.string']) out.jwks = JSON.parse(a['jwks.string']);
  out.tls_client_certificate_bound_access_tokens = a['tls.client.certificate.bound.access.tokens'] === 'true';
  if (a['x509.subjectdn']) out.tls_client_auth_subject_dn = a['x509.subjectdn'];
  if (a['id.token.signed.response.alg']) out.id_token_signed_response_alg = a['id.token.signed.response.alg'];
  if (a['id.token.encrypted.response.alg']) out.id_token_encrypted_response_alg = a['id.token.encrypted.response.alg'];
  if (a['id.token.encrypted.response.enc']) out.id_token_encrypted_response_enc = a['id.token.encrypted.response.enc'];
  if (a['authorization.signed.response.alg']) out.authorization_signed_response_alg = a['authorization.signed.response.alg'];
  if (a['request.uris']) out.request_uris = a['request.uris'].split('##');
  if (a['token.endpoint.auth.signing.alg']) out.token_endpoint_auth_signing_alg = a['token.endpoint.auth.signing.alg'];
  if (a['post.logout.redirect.uris']) out.post_logout_redirect_uris = a['post.logout.redirect.uris'].split('##');
  out.backchannel_logout_uri = a['backchannel.logout.url'];
  // toExternalResponse calls setBackchannelLogoutSessionRequired twice, the second time with the revoke flag.
  out.backchannel_logout_session_required = a['backchannel.logout.revoke.offline.tokens'] === 'true';
  out.require_pushed_authorization_requests = a['require.pushed.authorization.requests'] === 'true';
  out.subject_type = 'public';
  out.frontchannel_logout_uri = a['frontchannel.logout.url'];
  out.frontchannel_logout_session_required = a['frontchannel.logout.session.required'] === 'true';
  if (a['default.acr.values']) out.default_acr_values = a['default.acr.values'].split('##');
  return compact(out);
}

// ---------------------------------------------------------------- DCR: ClientRegistrationAuth

// ClientRegistrationAuth.init + ClientRegistrationTokenUtils.verifyToken: only `Bearer <token>` counts; a token
// that does not verify (signature, realm issuer, expiry, revocation) -> 401 invalid_token "Failed decode token".
// The initial access token is the opaque INITIAL_ACCESS_TOKEN the harness hands out (real Keycloak IATs are JWTs
// minted by Admin REST, with a count and an expiry the stand-in does not model).
async function registrationAuth(req) {
  const header = req.headers.authorization;
  if (!header) return { kind: 'none' };
  const split = header.split(' ');
  if (split[0].toLowerCase() !== 'bearer') return { kind: 'none' };
  const token = split[1] ?? '';
  if (token === INITIAL_ACCESS_TOKEN) return { kind: 'iat' };
  const rat = await verifyRegistrationAccessToken(token);
  if (rat?.typ === 'RegistrationAccessToken') return { kind: 'rat', token, claims: rat };
  const at = await verifyAccessToken(token);
  if (at?.typ === 'Bearer' && await backingToken(at)) return { kind: 'bearer', claims: at };
  throw oauthError(401, 'invalid_token', 'Failed decode token');
}

// hasRoleInToken: realm-management roles in resource_access.
function hasRealmManagementRole(auth, ...roles) {
  const have = auth.claims?.resource_access?.['realm-management']?.roles ?? [];
  return roles.some((r) => have.includes(r));
}

const forbidden = (description = 'Forbidden') => oauthError(403, 'insufficient_scope', description);

function policyRejected(policy, detail) {
  // ClientRegistrationPolicyException.getMessage once the policy model is set.
  return forbidden(`Policy '${policy}' rejected request to client-registration service. Details: ${detail}`);
}

// DefaultClientRegistrationPolicies: anonymous requests meet "Trusted Hosts" first (no trusted hosts by default);
// authenticated ones "Allowed Protocol Mapper Types" (no mappers in OIDC DCR) and "Allowed Client Scopes".
// ClientScopesClientRegistrationPolicy: default scopes against allowed + realm default scopes, optional scopes
// against allowed + realm optional scopes (allow-default-scopes true). On update, scopes the client already has
// are not checked again.
function checkPolicies(registrationAuthType, rep, existing) {
  if (registrationAuthType === 'anonymous') throw policyRejected('Trusted Hosts', 'Host not trusted.');
  const check = (requested, allowed) => {
    for (const s of requested ?? []) {
      if (!allowed.includes(s)) {
        log(`Requested scope '${s}' not trusted in the list: [${allowed.join(', ')}]`);
        throw policyRejected('Allowed Client Scopes', 'Not permitted to use specified clientScope');
      }
    }
  };
  const without = (list, have) => list?.filter((s) => !(have ?? []).includes(s));
  check(without(rep.defaultClientScopes, existing?.defaultClientScopes), [...ALLOWED_SCOPES, ...realmDefaultScopes(true)]);
  check(without(rep.optionalClientScopes, existing?.optionalClientScopes), [...ALLOWED_SCOPES, ...realmDefaultScopes(false)]);
}

// ClientRegistrationAuth.requireCreate
function requireCreate(auth, rep) {
  let type = 'anonymous';
  if (auth.kind === 'bearer') {
    if (!hasRealmManagementRole(auth, 'manage-clients', 'create-client')) throw forbidden();
    type = 'authenticated';
  } else if (auth.kind === 'iat') {
    type = 'authenticated';
  }
  checkPolicies(type, rep);
  return type;
}

// ClientRegistrationAuth.requireView: RAT of this very client, or a Bearer with manage-clients / view-clients.
function requireView(auth, client) {
  if (auth.kind === 'bearer') {
    if (!hasRealmManagementRole(auth, 'manage-clients', 'view-clients')) throw forbidden();
    if (!client) throw oauthError(404, 'invalid_request', 'Client not found');
    return 'authenticated';
  }
  if (auth.kind === 'rat' && client?.registrationToken && client.registrationToken === auth.claims.jti) {
    return auth.claims.registration_auth;
  }
  if (auth.kind === 'iat') throw oauthError(401, 'invalid_token', 'Not initial access token allowed');
  throw oauthError(401, 'invalid_token', 'Not authorized to view client. Not valid token or client credentials provided.');
}

// ClientRegistrationAuth.requireUpdateAuth (also used for delete): manage-clients only.
function requireUpdateAuth(auth, client) {
  if (auth.kind === 'bearer') {
    if (!hasRealmManagementRole(auth, 'manage-clients')) throw forbidden();
    if (!client) throw oauthError(404, 'invalid_request', 'Client not found');
    return 'authenticated';
  }
  if (auth.kind === 'rat' && client?.registrationToken && client.registrationToken === auth.claims.jti) {
    return auth.claims.registration_auth;
  }
  throw oauthError(401, 'invalid_token', 'Not authorized to update client. Maybe missing token or bad token type.');
}

// RepresentationToModel.createClient -> addClientScopeToClient: unknown scope names are logged and ignored.
function knownScopes(names) {
  return (names ?? []).filter((name) => {
    if (CLIENT_SCOPES.has(name)) return true;
    log(`WARN Referenced client scope '${name}' doesn't exist. Ignoring`);
    return false;
  }).filter((name, i, all) => all.indexOf(name) === i);
}

function registrationClientUri(req, c) {
  // OIDCClientRegistrationProvider.getRegistrationClientUri: UrlType.BACKEND.
  return `${backendBase(req)}${REGISTRATION_PATH}/${encodeURIComponent(c.clientId)}`;
}

function parseJsonObject(text) {
  let body;
  try { body = JSON.parse(text); } catch { body = undefined; }
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    // KeycloakErrorHandler: JsonProcessingException -> 400 "Cannot parse the JSON".
    throw new HttpError(400, { error: 'invalid_request', error_description: 'Cannot parse the JSON' });
  }
  return body;
}

// OIDCClientRegistrationProvider.createOIDC + AbstractClientRegistrationProvider.create.
async function createOIDC(req, body, faultState) {
  if (faultState?.mode === 'ignore_client_id') delete body.client_id;
  if (body.client_id !== undefined && body.client_id !== null) {
    throw oauthError(400, 'invalid_client_metadata', 'Client Identifier included');
  }
  let rep;
  try {
    rep = toInternal(body);
  } catch (err) {
    if (!(err instanceof ClientMetadataInvalid)) throw err;
    log(`clientRegistrationException: ${err.message}`);
    throw oauthError(400, 'invalid_client_metadata', 'Client metadata invalid');
  }
  if (rep.optionalClientScopes && !rep.defaultClientScopes) rep.defaultClientScopes = ['basic'];
  const auth = await registrationAuth(req);
  const regAuth = requireCreate(auth, rep);

  // OIDCLoginProtocolFactory.setupClientDefaults fills what the representation left out.
  const c = newClient({
    clientId: undefined,
    name: rep.name,
    baseUrl: rep.baseUrl,
    redirectUris: Array.isArray(rep.redirectUris) ? [...new Set(rep.redirectUris)] : [],
    standardFlowEnabled: rep.standardFlowEnabled,
    implicitFlowEnabled: rep.implicitFlowEnabled,
    directAccessGrantsEnabled: rep.directAccessGrantsEnabled ?? true,
    serviceAccountsEnabled: rep.serviceAccountsEnabled ?? false,
    publicClient: rep.publicClient,
    frontchannelLogout: rep.frontchannelLogout,
    clientAuthenticatorType: rep.clientAuthenticatorType,
    dcr: true,
  });
  c.clientId = c.id;
  applyAttributes(c.attributes, rep.attributes);
  if (rep.defaultClientScopes) c.defaultClientScopes = knownScopes(rep.defaultClientScopes);
  if (rep.optionalClientScopes) c.optionalClientScopes = knownScopes(rep.optionalClientScopes);
  // ClientManager.enableServiceAccount attaches the service_account scope.
  if (c.serviceAccountsEnabled) c.defaultClientScopes.push('service_account');
  if (!c.publicClient) c.secret = randomBytes(24).toString('base64url');
  clients.set(c.id, c);
  await syncProviderClient(c);
  const rat = await mintRegistrationAccessToken(c, regAuth);
  log(`registered client ${c.clientId} (${c.clientAuthenticatorType}, registration_auth=${regAuth})`);
  const uri = registrationClientUri(req, c);
  return {
    status: 201,
    headers: { location: uri },
    body: { ...toExternalResponse(c, uri, rat), client_id_issued_at: Math.floor(Date.now() / 1000) },
  };
}

// OIDCClientRegistrationProvider.getOIDC + AbstractClientRegistrationProvider.get: the RAT comes back unchanged
// (updateTokenSignature re-signs only after a key change).
async function getOIDC(req, clientId) {
  const client = byClientId(clientId);
  const auth = await registrationAuth(req);
  requireView(auth, client);
  return { status: 200, body: toExternalResponse(client, registrationClientUri(req, client), auth.kind === 'rat' ? auth.token : undefined) };
}

// OIDCClientRegistrationProvider.updateOIDC + AbstractClientRegistrationProvider.update.
async function updateOIDC(req, clientId, body) {
  let rep;
  try {
    rep = toInternal(body);
  } catch (err) {
    if (!(err instanceof ClientMetadataInvalid)) throw err;
    log(`clientRegistrationException: ${err.message}`);
    throw oauthError(400, 'invalid_client_metadata', 'Client metadata invalid');
  }
  if (body.scope !== undefined && body.scope !== null) {
    // Looked up by *id* from the body's client_id, before any authentication: a missing or unknown one is a
    // NullPointerException / IllegalArgumentException, i.e. 500.
    const old = clients.get(body.client_id);
    if (!old) throw SERVER_ERROR();
    rep.defaultClientScopes = [...old.defaultClientScopes];
  }
  const client = byClientId(clientId);
  const auth = await registrationAuth(req);
  const regAuth = requireUpdateAuth(auth, client);
  if (regAuth === 'anonymous') checkPolicies('anonymous', rep, client);
  else checkPolicies('authenticated', rep, client);
  if (client.clientId !== rep.clientId) throw oauthError(400, 'invalid_client_metadata', 'Client Identifier modified');

  // RepresentationToModel.updateClient: what the representation leaves null keeps its old value.
  if (rep.name !== undefined) client.name = rep.name;
  if (rep.baseUrl !== undefined) client.baseUrl = rep.baseUrl;
  if (Array.isArray(rep.redirectUris)) client.redirectUris = [...new Set(rep.redirectUris)];
  client.standardFlowEnabled = rep.standardFlowEnabled;
  client.implicitFlowEnabled = rep.implicitFlowEnabled;
  if (rep.directAccessGrantsEnabled !== undefined) client.directAccessGrantsEnabled = rep.directAccessGrantsEnabled;
  if (rep.serviceAccountsEnabled !== undefined) client.serviceAccountsEnabled = rep.serviceAccountsEnabled;
  client.publicClient = rep.publicClient;
  client.frontchannelLogout = rep.frontchannelLogout;
  client.clientAuthenticatorType = rep.clientAuthenticatorType;
  applyAttributes(client.attributes, rep.attributes);
  // RepresentationToModel.updateClientScopes
  if (rep.defaultClientScopes) client.defaultClientScopes = knownScopes(rep.defaultClientScopes);
  if (rep.optionalClientScopes) client.optionalClientScopes = knownScopes(rep.optionalClientScopes);
  if (client.serviceAccountsEnabled && !client.defaultClientScopes.includes('service_account')) client.defaultClientScopes.push('service_account');
  if (!client.publicClient && !client.secret) client.secret = randomBytes(24).toString('base64url');
  await syncProviderClient(client);
  // ROTATION_ENABLED: a RAT-authenticated update rotates the RAT; a Bearer update returns none.
  const rat = auth.kind === 'rat' ? await mintRegistrationAccessToken(client, auth.claims.registration_auth) : undefined;
  log(`updated client ${client.clientId}${rat ? ' (registration access token rotated)' : ''}`);
  return { status: 200, body: toExternalResponse(client, registrationClientUri(req, client), rat) };
}

// OIDCClientRegistrationProvider.deleteOIDC -> 204.
async function deleteOIDC(req, clientId) {
  const client = byClientId(clientId);
  const auth = await registrationAuth(req);
  requireUpdateAuth(auth, client);
  removeClient(client);
  log(`deleted client ${client.clientId}`);
  return { status: 204 };
}

async function registrationEndpoint(req, sub) {
  const applied = takeFault(req.method, req.url, { isCreate: sub === '', isReplace: sub !== '' });
  if (applied?.mode === 'error_before_create') return { status: applied.status, body: INJECTED_ERROR };
  let result;
  if (sub === '' && req.method === 'POST') {
    result = await createOIDC(req, parseJsonObject(await readBody(req)), applied);
  } else if (sub !== '' && req.method === 'GET') {
    result = await getOIDC(req, sub);
  } else if (sub !== '' && req.method === 'PUT') {
    result = await updateOIDC(req, sub, parseJsonObject(await readBody(req)));
  } else if (sub !== '' && req.method === 'DELETE') {
    result = await deleteOIDC(req, sub);
  } else {
    throw new HttpError(405, { error: 'HTTP 405 Method Not Allowed' });
  }
  if (applied?.mode === 'delay_after_create') await new Promise((r) => { setTimeout(r, applied.delayMs); });
  if (applied?.mode === 'error_after_create') return { status: applied.status, body: INJECTED_ERROR };
  return result;
}

// ---------------------------------------------------------------- Admin REST

// models/utils/ModelToRepresentation.toRepresentation(ClientModel, session) + ClientResource.getClient's access.
function clientRepresentation(c) {
  const attributes = { ...c.attributes, realm_client: String(c.clientId === 'realm-management') };
  return compact({
    id: c.id,
    clientId: c.clientId,
    name: c.name,
    description: c.description,
    surrogateAuthRequired: false,
    enabled: c.enabled,
    alwaysDisplayInConsole: false,
    clientAuthenticatorType: c.clientAuthenticatorType,
    secret: c.publicClient || c.bearerOnly ? undefined : c.secret,
    baseUrl: c.baseUrl,
    redirectUris: c.redirectUris,
    webOrigins: c.webOrigins,
    notBefore: 0,
    bearerOnly: c.bearerOnly,
    consentRequired: c.consentRequired,
    standardFlowEnabled: c.standardFlowEnabled,
    implicitFlowEnabled: c.implicitFlowEnabled,
    directAccessGrantsEnabled: c.directAccessGrantsEnabled,
    serviceAccountsEnabled: c.serviceAccountsEnabled,
    publicClient: c.publicClient,
    frontchannelLogout: c.frontchannelLogout,
    protocol: c.protocol,
    attributes,
    authenticationFlowBindingOverrides: {},
    fullScopeAllowed: c.fullScopeAllowed,
    nodeReRegistrationTimeout: -1,
    defaultClientScopes: c.defaultClientScopes,
    optionalClientScopes: c.optionalClientScopes,
    access: { view: true, configure: true, manage: true },
  });
}

// services/resources/admin/AdminRoot.authenticateRealmAdminRequest: no token or an invalid one -> 401 (JAX-RS
// NotAuthorizedException, rendered by KeycloakErrorHandler with its message).
async function adminAuth(req) {
  const header = req.headers.authorization ?? '';
  const m = /^bearer\s+(\S+)$/i.exec(header);
  const unauthorized = () => new HttpError(401, { error: 'HTTP 401 Unauthorized' }, { 'www-authenticate': 'Bearer' });
  if (!m) throw unauthorized();
  const claims = await verifyAccessToken(m[1]);
  if (!claims || claims.typ !== 'Bearer' || !await backingToken(claims)) throw unauthorized();
  const roles = claims.resource_access?.['realm-management']?.roles ?? [];
  const canManage = roles.includes('manage-clients');
  const canView = canManage || roles.includes('view-clients');
  const canList = canView || roles.includes('query-clients');
  return { canManage, canView, canList };
}

// org.keycloak.services.ForbiddenException (a 403 WebApplicationException without its own message).
const adminForbidden = () => new HttpError(403, { error: 'HTTP 403 Forbidden' });

function paginate(list, first, max) {
  const from = first === null ? 0 : Math.max(Number.parseInt(first, 10) || 0, 0);
  const count = max === null ? Infinity : Math.max(Number.parseInt(max, 10), 0);
  return list.slice(from, from + (Number.isNaN(count) ? Infinity : count));
}

// services/resources/admin/ClientsResource.getClients / getClientModels: clientId exact match, or with
// search=true a case-insensitive substring (JpaRealmProvider.searchClientsByClientIdStream); q=key:value pairs
// match attributes exactly (searchClientsByAttributes); first/max paginate; results ordered by clientId.
function listClients(auth, url) {
  if (!auth.canList) throw adminForbidden();
  const clientId = url.searchParams.get('clientId');
  const search = url.searchParams.get('search') === 'true';
  const q = url.searchParams.get('q');
  let list = [...clients.values()].sort((x, y) => (x.clientId < y.clientId ? -1 : x.clientId > y.clientId ? 1 : 0));
  if (q !== null) {
    // SearchQueryUtils.getFields: space-separated key:value pairs.
    const fields = Object.fromEntries(q.split(' ').filter(Boolean).map((kv) => {
      const i = kv.indexOf(':');
      return [kv.slice(0, i), kv.slice(i + 1)];
    }));
    list = list.filter((c) => Object.entries(fields).every(([k, v]) => c.attributes[k] === v));
  } else if (clientId !== null && clientId.trim() !== '') {
    list = search
      ? list.filter((c) => c.clientId.toLowerCase().includes(clientId.toLowerCase()))
      : list.filter((c) => c.clientId === clientId);
  }
  if (clientId === null || clientId.trim() === '' || search || q !== null) {
    list = paginate(list, url.searchParams.get('first'), url.searchParams.get('max'));
  }
  return { status: 200, body: list.map(clientRepresentation) };
}

async function adminEndpoint(req, url, rest) {
  const auth = await adminAuth(req);
  if (rest === '' && req.method === 'GET') return listClients(auth, url);
  const m = /^\/([^/]+)(\/registration-access-token)?$/.exec(rest);
  if (!m) throw new HttpError(404, { error: 'HTTP 404 Not Found' });
  // ClientsResource.getClient: "we do this to make sure somebody can't phish ids".
  const client = clients.get(decodeURIComponent(m[1]));
  if (!client) {
    if (auth.canList) throw new HttpError(404, { error: 'Could not find client' });
    throw adminForbidden();
  }
  if (!m[2] && req.method === 'GET') {
    if (!auth.canView) throw adminForbidden();
    return { status: 200, body: clientRepresentation(client) };
  }
  if (!m[2] && req.method === 'DELETE') {
    // ClientResource.deleteClient
    if (!auth.canManage) throw adminForbidden();
    removeClient(client);
    log(`Admin REST deleted client ${client.clientId}`);
    return { status: 204 };
  }
  if (m[2] && req.method === 'POST') {
    // ClientResource.regenerateRegistrationAccessToken: a fresh RAT (the old one stops working), registration_auth
    // "authenticated".
    if (!auth.canManage) throw adminForbidden();
    const rat = await mintRegistrationAccessToken(client, 'authenticated');
    log(`Admin REST minted a registration access token for ${client.clientId}`);
    return { status: 200, body: { ...clientRepresentation(client), registrationAccessToken: rat } };
  }
  throw new HttpError(405, { error: 'HTTP 405 Method Not Allowed' });
}

// ---------------------------------------------------------------- discovery

// protocol/oidc/OIDCWellKnownProvider.getConfig: issuer, authorization, logout, revocation, device and the
// session iframe on the FRONTEND URL; token, introspection, userinfo, jwks, registration, PAR and CIBA on the
// BACKEND URL; mtls_endpoint_aliases repeat the endpoints, registration_endpoint included
// (getMtlsEndpointAliases).
function discovery(req) {
  const front = `${frontendBase}`;
  const back = backendBase(req);
  const algs = ['PS384', 'RS384', 'EdDSA', 'ES384', 'HS256', 'HS512', 'ES256', 'RS256', 'HS384', 'ES512', 'PS256', 'PS512', 'RS512'];
  const authMethods = ['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'tls_client_auth', 'client_secret_jwt'];
  const d = {
    issuer: realmIssuer(),
    authorization_endpoint: `${front}${PATHS.auth}`,
    token_endpoint: `${back}${PATHS.token}`,
    introspection_endpoint: `${back}${PATHS.introspect}`,
    userinfo_endpoint: `${back}${PATHS.userinfo}`,
    end_session_endpoint: `${front}${PATHS.logout}`,
    frontchannel_logout_session_supported: true,
    frontchannel_logout_supported: true,
    jwks_uri: `${back}${PATHS.certs}`,
    check_session_iframe: `${front}${PATHS.iframe}`,
    grant_types_supported: ['authorization_code', 'implicit', 'refresh_token', 'password', 'client_credentials',
      'urn:openid:params:grant-type:ciba', 'urn:ietf:params:oauth:grant-type:device_code'],
    acr_values_supported: ['0', '1'],
    response_types_supported: ['code', 'none', 'id_token', 'token', 'id_token token', 'code id_token', 'code token', 'code id_token token'],
    subject_types_supported: ['public', 'pairwise'],
    id_token_signing_alg_values_supported: algs,
    userinfo_signing_alg_values_supported: [...algs, 'none'],
    request_object_signing_alg_values_supported: [...algs, 'none'],
    response_modes_supported: ['query', 'fragment', 'form_post', 'query.jwt', 'fragment.jwt', 'form_post.jwt', 'jwt'],
    registration_endpoint: `${back}${REGISTRATION_PATH}`,
    token_endpoint_auth_methods_supported: authMethods,
    token_endpoint_auth_signing_alg_values_supported: algs,
    introspection_endpoint_auth_methods_supported: authMethods,
    introspection_endpoint_auth_signing_alg_values_supported: algs,
    claims_supported: ['aud', 'sub', 'iss', 'auth_time', 'name', 'given_name', 'family_name', 'preferred_username', 'email', 'acr'],
    claim_types_supported: ['normal'],
    claims_parameter_supported: true,
    scopes_supported: ['openid', ...[...CLIENT_SCOPES.keys()]],
    request_parameter_supported: true,
    request_uri_parameter_supported: true,
    require_request_uri_registration: true,
    code_challenge_methods_supported: ['plain', 'S256'],
    tls_client_certificate_bound_access_tokens: true,
    revocation_endpoint: `${front}${PATHS.revoke}`,
    revocation_endpoint_auth_methods_supported: authMethods,
    revocation_endpoint_auth_signing_alg_values_supported: algs,
    backchannel_logout_supported: true,
    backchannel_logout_session_supported: true,
    device_authorization_endpoint: `${front}${PATHS.device}`,
    backchannel_token_delivery_modes_supported: ['poll', 'ping'],
    backchannel_authentication_endpoint: `${back}${PATHS.ciba}`,
    pushed_authorization_request_endpoint: `${back}${PATHS.par}`,
    require_pushed_authorization_requests: false,
  };
  d.mtls_endpoint_aliases = {
    token_endpoint: d.token_endpoint,
    revocation_endpoint: d.revocation_endpoint,
    introspection_endpoint: d.introspection_endpoint,
    device_authorization_endpoint: d.device_authorization_endpoint,
    registration_endpoint: d.registration_endpoint,
    userinfo_endpoint: d.userinfo_endpoint,
    pushed_authorization_request_endpoint: d.pushed_authorization_request_endpoint,
    backchannel_authentication_endpoint: d.backchannel_authentication_endpoint,
  };
  return d;
}

// ---------------------------------------------------------------- token, introspection, revocation

// Keycloak's scope string for a client_credentials token: "openid" if asked, the client's default scopes that are
// included in the token scope, and the requested optional scopes.
function tokenScope(client, requested) {
  const asked = (requested ?? '').split(' ').filter(Boolean);
  const scopes = [];
  if (asked.includes('openid')) scopes.push('openid');
  for (const s of client.defaultClientScopes) if (CLIENT_SCOPES.get(s)?.token) scopes.push(s);
  for (const s of asked) if (client.optionalClientScopes.includes(s) && CLIENT_SCOPES.get(s)?.token) scopes.push(s);
  return [...new Set(scopes)].join(' ');
}

// Audience: the realm-management roles of an admin service account make the "audience resolve" mapper add
// realm-management; the "audience-mapper" setting adds the introspection client to every token.
function tokenAudience(client) {
  const aud = [];
  if (client.adminRoles.length) aud.push('realm-management');
  if (INTROSPECTION_AUDIENCE_CHECK === 'audience-mapper' && client.clientId !== INTROSPECTION_CLIENT_ID) aud.push(INTROSPECTION_CLIENT_ID);
  return aud.length === 0 ? undefined : aud.length === 1 ? aud[0] : aud;
}

async function issueAccessToken(ctx) {
  const opaque = ctx.body.access_token;
  const cc = await provider.ClientCredentials.find(opaque);
  const client = byClientId(cc.clientId);
  const jti = randomUUID();
  accessTokens.set(jti, opaque);
  const scope = tokenScope(client, ctx.oidc.params.scope);
  const claims = compact({
    exp: cc.exp,
    iat: cc.iat,
    jti,
    iss: realmIssuer(),
    aud: tokenAudience(client),
    sub: serviceAccountUserId(client.clientId),
    typ: 'Bearer',
    azp: client.clientId,
    scope,
    resource_access: client.adminRoles.length ? { 'realm-management': { roles: client.adminRoles } } : undefined,
    cnf: cc['x5t#S256'] ? { 'x5t#S256': cc['x5t#S256'] } : undefined,
  });
  const jwt = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: signingKid }).sign(signingKey.private);
  // AccessTokenResponse for client_credentials: no refresh token, no id_token.
  ctx.body = {
    access_token: jwt,
    expires_in: cc.exp - Math.floor(Date.now() / 1000),
    refresh_expires_in: 0,
    token_type: 'Bearer',
    'not-before-policy': 0,
    scope,
  };
}

// oidc-provider's errors in Keycloak's words.
function rewriteTokenError(ctx) {
  const { error, error_description: description } = ctx.body ?? {};
  if (ctx.state.kcUnexpectedClientAuthError) {
    // AuthenticationProcessor.handleClientAuthException: a non-flow exception from an authenticator.
    log(`errorAuthenticatingClient: ${ctx.state.kcUnexpectedClientAuthError}`);
    ctx.status = 400;
    ctx.body = { error: 'unauthorized_client', error_description: 'Unexpected error when authenticating client' };
  } else if (ctx.status === 401 && error === 'invalid_client') {
    // ClientAuthenticationFlow: an authenticator that only "attempted" -> INTERNAL_ERROR -> handleClientAuthException.
    ctx.body = { error: 'invalid_client', error_description: 'Invalid client or Invalid client credentials' };
  } else if (error === 'invalid_grant' && ctx.oidc?.client?.tlsClientCertificateBoundAccessTokens && !getCertificate(ctx)) {
    // MtlsHoKTokenUtil.bindTokenWithClientCertificate returned null.
    ctx.status = 400;
    ctx.body = { error: 'invalid_request', error_description: 'Client Certification missing for MTLS HoK Token Binding' };
  } else if (error === 'invalid_scope') {
    ctx.body = { error: 'invalid_scope', error_description: `Invalid scopes: ${ctx.oidc?.params?.scope ?? ''}` };
  } else if (/grant type is not allowed/.test(description ?? '') && ctx.oidc?.params?.grant_type === 'client_credentials') {
    // protocol/oidc/grants/ClientCredentialsGrantType: service accounts disabled.
    ctx.status = 401;
    ctx.body = { error: 'unauthorized_client', error_description: 'Client not enabled to retrieve service account' };
  }
}

// The introspection audience check (keycloak/keycloak#49113; AccessTokenIntrospectionProvider.verifyAudience in
// releases since 26.4.12 / 26.6.2 / 26.7.0).
function audienceAllows(caller, claims) {
  if (INTROSPECTION_AUDIENCE_CHECK === 'off') return true;
  const aud = claims.aud === undefined ? [] : [].concat(claims.aud);
  if (aud.includes(caller.clientId)) return true;
  if (caller.attributes['allow.token.introspection.without.audience.check'] === 'true') return true;
  log(`INTROSPECT_TOKEN_ERROR reason="Client '${caller.clientId}' is not in the token audience" token_issued_for="${claims.azp}"`);
  return false;
}

// protocol/oidc/endpoints/TokenIntrospectionEndpoint + AccessTokenIntrospectionProvider.introspect.
async function rewriteIntrospection(ctx) {
  // authorizeClient: a public client authenticates (ClientIdAndSecretAuthenticator lets it through) and is then
  // refused; oidc-provider never lets a "none" client reach its introspection endpoint, hence the form lookup.
  const named = byClientId(ctx.req.kcFormClientId ?? ctx.oidc?.client?.clientId);
  if (named?.publicClient) {
    ctx.status = 403;
    ctx.body = { error: 'invalid_request', error_description: 'Client not allowed.' };
    return;
  }
  if (ctx.status === 401) {
    // authorizeClient: a failed client authentication ends in its generic catch.
    ctx.body = { error: 'invalid_request', error_description: 'Authentication failed.' };
    return;
  }
  if (ctx.status !== 200 || !ctx.oidc?.client) return;
  const caller = byClientId(ctx.oidc.client.clientId);
  if (!caller) {
    ctx.status = 403;
    ctx.body = { error: 'invalid_request', error_description: 'Client not allowed.' };
    return;
  }
  const claims = ctx.req.kcIntrospectedClaims;
  const client = claims && byClientId(claims.azp);
  if (!ctx.body?.active || !claims || !client || !client.enabled || !audienceAllows(caller, claims)) {
    ctx.body = { active: false };
    return;
  }
  const body = { ...claims, client_id: claims.azp, username: `service-account-${claims.azp}`.toLowerCase(), token_type: claims.typ, active: true };
  if (typeof body.scope === 'string' && !body.scope.trim()) delete body.scope;
  delete body.resource_access; // added to the introspection response only by mappers configured for it
  ctx.body = body;
}

async function keycloakEndpoints(ctx, next) {
  const path = ctx.path;
  await next();
  if (path === PATHS.token) {
    if (ctx.status === 200 && ctx.body?.access_token && ctx.oidc?.params?.grant_type === 'client_credentials') {
      await issueAccessToken(ctx);
    } else if (ctx.status >= 400) {
      rewriteTokenError(ctx);
    }
  } else if (path === PATHS.introspect) {
    await rewriteIntrospection(ctx);
  } else if (path === PATHS.revoke) {
    if (ctx.status === 401) rewriteTokenError(ctx);
    else if (ctx.status === 200 && ctx.req.kcTokenUnknown) {
      // TokenRevocationEndpoint.checkToken: a token that does not decode -> 200 with an error body.
      ctx.body = { error: 'invalid_token', error_description: 'Invalid token' };
    }
  }
}

// Before oidc-provider reads the form: the JWT we issued is replaced by the oidc-provider token behind it, and a
// client_secret_post is turned into Basic (ClientIdAndSecretAuthenticator accepts either; oidc-provider only the
// registered method).
async function rewriteForm(req) {
  const form = new URLSearchParams(await readBody(req));
  const id = form.get('client_id');
  const secret = form.get('client_secret');
  const c = id && byClientId(id);
  req.kcFormClientId = id ?? undefined;
  if (secret !== null && c && c.clientAuthenticatorType === 'client-secret' && !req.headers.authorization) {
    form.delete('client_secret');
    req.headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  }
  const url = new URL(req.url, 'http://x');
  if ((url.pathname === PATHS.introspect || url.pathname === PATHS.revoke) && form.has('token')) {
    const claims = await verifyAccessToken(form.get('token'));
    const opaque = claims && accessTokens.get(claims.jti);
    if (opaque) {
      req.kcIntrospectedClaims = claims;
      form.set('token', opaque);
    } else {
      req.kcTokenUnknown = true;
      form.set('token', `unknown-${randomUUID()}`);
    }
  }
  return Buffer.from(form.toString());
}

function replayRequest(req, body) {
  const replay = Readable.from([body]);
  const headers = { ...req.headers, 'content-length': String(body.length) };
  Object.assign(replay, {
    method: req.method,
    url: req.url,
    headers,
    headersDistinct: req.headersDistinct,
    rawHeaders: req.rawHeaders,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    socket: req.socket,
    connection: req.socket,
    kcIntrospectedClaims: req.kcIntrospectedClaims,
    kcTokenUnknown: req.kcTokenUnknown,
    kcFormClientId: req.kcFormClientId,
  });
  return replay;
}

// ---------------------------------------------------------------- HTTP server

function send(res, result) {
  const headers = { 'cache-control': 'no-store', ...(result.headers ?? {}) };
  if (result.body === undefined) {
    res.writeHead(result.status, headers);
    res.end();
    return;
  }
  sendJson(res, result.status, result.body, headers);
}

let providerCallback;
let provider;

async function route(req, res, url) {
  const p = url.pathname;
  const realmMatch = /^\/(admin\/)?realms\/([^/]+)(\/.*)?$/.exec(p);
  if (realmMatch && realmMatch[2] !== REALM) {
    // RealmsResource / AdminRoot.locateRealm
    return send(res, { status: 404, body: { error: realmMatch[1] ? 'Realm not found.' : 'Realm does not exist' } });
  }
  if (p === REGISTRATION_PATH || p.startsWith(`${REGISTRATION_PATH}/`)) {
    const sub = decodeURIComponent(p.slice(REGISTRATION_PATH.length + 1));
    return send(res, await registrationEndpoint(req, sub));
  }
  if (p === ADMIN_CLIENTS_PATH || p.startsWith(`${ADMIN_CLIENTS_PATH}/`)) {
    return send(res, await adminEndpoint(req, url, p.slice(ADMIN_CLIENTS_PATH.length)));
  }
  if (p === PATHS.discovery && req.method === 'GET') return send(res, { status: 200, body: discovery(req) });
  if (p === PATHS.certs && req.method === 'GET') return send(res, { status: 200, body: publicJwks });
  if (!providerCallback) return send(res, { status: 503, body: { error: 'temporarily_unavailable' } });
  // oidc-provider builds its URLs (client assertion audiences) from the request: make them the frontend's.
  const front = new URL(frontendBase);
  req.headers['x-forwarded-proto'] = front.protocol.slice(0, -1);
  req.headers['x-forwarded-host'] = front.host;
  if (req.method === 'POST' && [PATHS.token, PATHS.introspect, PATHS.revoke].includes(p)) {
    return providerCallback(replayRequest(req, await rewriteForm(req)), res);
  }
  if ([PATHS.auth, PATHS.userinfo, PATHS.logout, PATHS.par].includes(p)) return providerCallback(req, res);
  return send(res, { status: 404, body: { error: 'HTTP 404 Not Found' } });
}

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://127.0.0.1');
  } catch {
    sendJson(res, 400, { error: 'invalid_request' });
    return;
  }
  if (isTestRoute(url.pathname)) {
    handleTestRoute(req, res, url, { clientIds: () => [...clients.values()].filter((c) => c.dcr).map((c) => c.clientId) })
      .catch((err) => {
        log(`test route error: ${err.stack}`);
        if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
      });
    return;
  }
  recordRequest(req, url.pathname);
  route(req, res, url).catch((err) => {
    if (err instanceof HttpError) {
      if (!res.headersSent) send(res, { status: err.status, body: err.body, headers: err.headers });
      return;
    }
    log(`Uncaught server error ${req.method} ${url.pathname}: ${err.stack}`);
    if (!res.headersSent) send(res, { status: 500, body: SERVER_ERROR().body });
  });
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});

const { port } = server.address();
localBase = `http://127.0.0.1:${port}`;
frontendBase = HOSTNAME_SETTING === 'self' ? localBase : new URL(HOSTNAME_SETTING).origin;

const jwks = await makeJwks();
const rsaJwk = jwks.keys.find((k) => k.kty === 'RSA');
signingKid = rsaJwk.kid;
signingKey = {
  private: await jose.importJWK({ ...rsaJwk, alg: 'RS256' }, 'RS256'),
  public: await jose.importJWK({
    kty: 'RSA', n: rsaJwk.n, e: rsaJwk.e, alg: 'RS256',
  }, 'RS256'),
};
publicJwks = {
  keys: [{
    kid: signingKid, kty: 'RSA', alg: 'RS256', use: 'sig', n: rsaJwk.n, e: rsaJwk.e,
  }],
};

const staticClient = (c) => ({ ...providerMetadata(c), client_secret: c.secret });

provider = new Provider(realmIssuer(), {
  adapter: MapAdapter,
  jwks,
  clients: [byClientId(INTROSPECTION_CLIENT_ID), byClientId(ADMIN_CLIENT_ID)].map(staticClient),
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'tls_client_auth', 'none'],
  scopes: ['openid', ...CLIENT_SCOPES.keys()],
  responseTypes: ['code', 'none'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'HS256', 'HS384', 'HS512'],
  },
  cookies: { keys: [randomUUID()] },
  routes: {
    authorization: PATHS.auth,
    token: PATHS.token,
    introspection: PATHS.introspect,
    revocation: PATHS.revoke,
    userinfo: PATHS.userinfo,
    end_session: PATHS.logout,
    pushed_authorization_request: PATHS.par,
    jwks: '/__oidc-provider/jwks',
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: false },
    introspection: {
      enabled: true,
      // Keycloak lets any authenticated confidential client introspect; the audience check comes after.
      allowedPolicy: () => true,
    },
    revocation: {
      enabled: true,
      allowedPolicy(ctx, client, token) {
        // TokenRevocationEndpoint.checkIssuedFor
        if (client.clientId !== token.clientId) throw new errors.InvalidRequest('Unmatching clients');
        return true;
      },
    },
    clientCredentials: { enabled: true },
    resourceIndicators: { enabled: false },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      getCertificate,
      certificateAuthorized: (ctx) => !!getCertificate(ctx),
      certificateSubjectMatches,
    },
  },
  ttl: {
    // Tests that need a token which expires in seconds ask for it with `x-test-token-ttl` (test hook).
    ClientCredentials(ctx) {
      const asked = Number(ctx?.get?.('x-test-token-ttl'));
      return Number.isInteger(asked) && asked > 0 && asked <= 600 ? asked : ACCESS_TOKEN_LIFESPAN;
    },
    AccessToken: ACCESS_TOKEN_LIFESPAN,
    AuthorizationCode: 60,
    IdToken: ACCESS_TOKEN_LIFESPAN,
    Interaction: 600,
    RefreshToken: 1800,
    Session: 36000,
    Grant: 36000,
  },
  findAccount(ctx, sub) {
    return { accountId: sub, claims: async () => ({ sub }) };
  },
  // The SSRF-guarding dispatcher refuses loopback, where the tests' jwks_uri servers live.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});
provider.proxy = true;
provider.on('server_error', (ctx, err) => log(`server_error ${ctx.method} ${ctx.path}: ${err.stack}`));
for (const event of ['grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => log(`${event} ${ctx.method} ${ctx.path}: ${err.message}${err.error_description ? ` - ${err.error_description}` : ''}${err.error_detail ? ` [${err.error_detail}]` : ''}`));
}
provider.use(keycloakEndpoints);
providerCallback = provider.callback();

process.stdout.write(`${JSON.stringify({
  event: 'listening',
  port,
  // The harness builds request URLs from "issuer"; Keycloak's own issuer is "oidc_issuer".
  issuer: localBase,
  flavour: 'keycloak-standin',
  realm: REALM,
  oidc_issuer: realmIssuer(),
  frontend_url: frontendBase,
  discovery_path: PATHS.discovery,
  registration_path: REGISTRATION_PATH,
  admin_clients_path: ADMIN_CLIENTS_PATH,
  token_path: PATHS.token,
  introspection_path: PATHS.introspect,
  revocation_path: PATHS.revoke,
  jwks_path: PATHS.certs,
})}\n`);
log(`listening on ${localBase}: Keycloak STAND-IN (not Keycloak), realm ${REALM}, frontend ${frontendBase}, `
  + `cert lookup ${CLIENT_CERT_HEADER} (chain length ${CERT_CHAIN_LENGTH}), introspection audience check ${INTROSPECTION_AUDIENCE_CHECK}`);

installShutdown(server);
