// ForgeRock / Ping AM stand-in flavour of the test upstream (UPSTREAM_FLAVOUR=forgerock-am). It is NOT AM: AM's
// core is closed, so this reproduces the AM behaviour dcr-proxy meets (paths, dynamic registration and its tokens,
// the admin REST API, the trusted certificate header, tls_client_auth DN matching, introspection) on top of
// oidc-provider 9, which still authenticates clients and issues, binds and tracks tokens.
//
// Every behaviour says where it comes from:
//   VERIFIED(source): seen in a Ping/ForgeRock document or in code that talks to AM (ForgeRock's own Secure API
//     Gateway, WSO2's AM connector), read for this file; /work/shared/idp/forgerock-am.md lists them.
//   OPENAM(source): read in the open fork OpenIdentityPlatform/OpenAM (paths under openam-oauth2/src/main/java/);
//     AM shares its ancestry but may have changed since, so for AM these are assumptions.
//   ASSUMED(why): inferred; nobody here has seen AM do it.

import * as http from 'node:http';
import * as fs from 'node:fs';
import {
  X509Certificate, createHash, randomBytes, randomUUID,
} from 'node:crypto';

import {
  CLIENT_CERT_HEADER, INITIAL_ACCESS_TOKEN, INJECTED_ERROR, INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET,
  MapAdapter, PORT, fail, handleTestRoute, installShutdown, isTestRoute, log, makeJwks, readBody, recordRequest,
  sendJson, storeFor, takeFault,
} from './common.mjs';
import {
  DnSyntaxError, certificateSubject, parseDn, rfc2253,
} from './x500.mjs';

const { Provider } = await import('oidc-provider');

// ---------------------------------------------------------------- env

const REALM = process.env.AM_REALM || 'alpha';
if (!/^[A-Za-z0-9._-]+$/.test(REALM)) fail('AM_REALM must be a plain realm name ([A-Za-z0-9._-])');

// The deployment URI AM runs under. VERIFIED(AM 8.1 docs rest-api-oauth2-register-endpoint example
// https://am.example.com:8443/am/oauth2/realms/root/realms/alpha/register; secure-api-gateway-fapi-pep-as route
// 20-as-dcr-endpoint.json: /am/oauth2/realms/root/realms/&{am.realm}/register).
const CONTEXT_PATH = process.env.AM_CONTEXT_PATH ?? '/am';
if (CONTEXT_PATH !== '' && !/^(\/[A-Za-z0-9._-]+)+$/.test(CONTEXT_PATH)) fail('AM_CONTEXT_PATH must be "" or like /am');

// The origin AM puts into the URLs it hands out. Default not on loopback, so that a proxy which trusts AM's URLs
// fails here as it would in production. "self" = this server.
const PUBLIC_URL_SETTING = process.env.AM_PUBLIC_URL || 'https://am.bank.example.test';
if (PUBLIC_URL_SETTING !== 'self') {
  let u;
  try { u = new URL(PUBLIC_URL_SETTING); } catch { fail('AM_PUBLIC_URL must be an http(s) origin or "self"'); }
  if (!['http:', 'https:'].includes(u.protocol) || u.pathname !== '/' || u.search || u.hash) {
    fail('AM_PUBLIC_URL must be an http(s) origin without a path (the context path is AM_CONTEXT_PATH), or "self"');
  }
}

// The static client the initial access tokens come from. VERIFIED(AM 7.3 docs oauth2-dynamic-client-registration:
// "register an initial OAuth 2.0 client application manually, and use this application to obtain the access
// token"; fapi-pep-as 20-as-dcr-endpoint.json: ClientCredentialsOAuth2ClientFilter + ClientSecretBasic).
const IAT_CLIENT_ID = process.env.IAT_CLIENT_ID || 'dcr-proxy-iat';
const IAT_CLIENT_SECRET = process.env.IAT_CLIENT_SECRET || 'dcr-proxy-dev-iat-secret-not-for-production';

function positiveInt(name, fallback) {
  const v = Number.parseInt(process.env[name] ?? String(fallback), 10);
  if (!Number.isInteger(v) || v <= 0) fail(`${name} must be a positive number of seconds`);
  return v;
}

// The IAT client's "Access Token Lifetime". VERIFIED that it is a per-client setting and that the IAT expires
// (WSO2 docs-apim PR #2902: "Core -> Access Token LifeTime and set a long value ... to obtain a registration access
// token"); 3600 s is AM's default lifetime as seen in token samples ("expires_in": 3600) - ASSUMED as default.
const IAT_LIFETIME = positiveInt('AM_IAT_LIFETIME', 3600);
// Other clients' access tokens. ASSUMED(AM's default provider lifetime, as in the token samples above).
const ACCESS_TOKEN_LIFETIME = 3600;

// What the registration access token is.
//   true    RAT = the IAT string the client was registered with, alive only while that access token is (default);
//   openam  RAT = the IAT string, compared as a string and never expiring;
//   false   AM mints its own RAT, which never expires.
// OPENAM(org/forgerock/openidconnect/OpenIdConnectClientRegistrationService.createRegistration: without a
// registration_access_token in the body the client's access token is `accessToken`, the Bearer of the request;
// only open registration with "Generate Registration Access Tokens" mints one; getRegistration compares strings).
// Default true because AM 7 behaves like that as far as can be seen: WSO2's AM 7 connector (apim-km-forgerock
// ForgerockOAuthClient before commit 21465bd) used its one configured access token for create, GET and PUT, which
// only works if the RAT is that token, and broke on the second update (wso2/product-apim#10910); whether AM then
// lets the RAT die with the IAT is ASSUMED - `true` is the case a proxy must survive, `openam` the lenient one.
const RAT_MODE = process.env.AM_RAT_IS_IAT || 'true';
if (!['true', 'openam', 'false'].includes(RAT_MODE)) fail('AM_RAT_IS_IAT must be true, openam or false');

// "Client Registration Scope Allowlist" of the OAuth2 provider. VERIFIED(PingGateway 2026 FAPI docs "Configuring
// access management for FAPI"; PingAM 8.1 provider reference: "The set of scopes allowed when registering clients
// dynamically").
const OB_CDR_SCOPES = [
  'openid', 'accounts', 'payments', 'fundsconfirmations', 'eventpolling', 'cdr:registration',
  'bank:accounts.basic:read', 'bank:accounts.detail:read', 'bank:transactions:read',
  'bank:payees:read', 'bank:regular_payments:read', 'common:customer.basic:read',
  'common:customer.detail:read', 'energy:accounts.basic:read',
];
const SCOPE_ALLOWLIST = (process.env.AM_SCOPE_ALLOWLIST ?? OB_CDR_SCOPES.join(','))
  .split(',').map((s) => s.trim()).filter(Boolean);

// Provider-wide "Support TLS Certificate-Bound Access Tokens". VERIFIED(securebanking-openbanking-uk-fidc-initializer
// config/defaults/secure-open-banking/oauth2provider-update.json: "tlsCertificateBoundAccessTokensEnabled": true;
// a ForgeRock marketplace README: the client's 'Use Certificate-Bound Access Tokens' "only works when the OAuth2
// Provider setting ... 'Support TLS Certificate-Bound Access Tokens' ... is enabled").
const CERT_BOUND_SETTING = process.env.AM_CERT_BOUND_TOKENS || 'true';
if (!['true', 'false'].includes(CERT_BOUND_SETTING)) fail('AM_CERT_BOUND_TOKENS must be true or false');
const CERT_BOUND_TOKENS_ENABLED = CERT_BOUND_SETTING === 'true';

// An AM administrator for the admin REST API. VERIFIED(AM 7.2 docs rest-api-oauth2-client-admin-endpoint: "you
// must provide the SSO token of an administrative user as a header").
const ADMIN_USER = process.env.AM_ADMIN_USER || 'amadmin';
const ADMIN_PASSWORD = process.env.AM_ADMIN_PASSWORD || 'dcr-proxy-dev-amadmin-password-not-for-production';

// "Trusted TLS Client Certificate Header" (tlsClientCertificateTrustedHeader) with format URLENCODED_PEM.
// VERIFIED(fidc-initializer oauth2provider-update.json: tlsClientCertificateHeaderFormat "URLENCODED_PEM";
// PingGateway FAPI docs: Trusted TLS Client Certificate Header `ssl-client-cert`). AM has no RFC 9440 or Envoy
// format as far as can be seen, so only the nginx-style header is accepted in this mode.
const TRUSTED_CERT_HEADER = (process.env.AM_TRUSTED_CERT_HEADER || 'ssl-client-cert').toLowerCase();
if (process.env.CLIENT_CERT_HEADER && CLIENT_CERT_HEADER !== 'nginx') {
  fail('CLIENT_CERT_HEADER must be nginx (or unset) in forgerock-am mode: AM reads a URL-encoded PEM from a trusted '
    + 'header; RFC 9440 and Envoy formats are not shown to work with AM');
}

// AM trusts the CAs in the secret labelled am.services.oauth2.tls.client.cert.authentication for PKI mTLS.
// VERIFIED(PingGateway FAPI docs "Trusted certificates"). Unset = trust whatever the header carries (the proxy in
// front checked it), which is how the tests run unless they set it.
let TRUSTED_CA;
if (process.env.AM_TLS_CLIENT_CA) {
  try {
    TRUSTED_CA = new X509Certificate(fs.readFileSync(process.env.AM_TLS_CLIENT_CA));
  } catch (err) {
    fail(`AM_TLS_CLIENT_CA: cannot read a PEM certificate (${err.message})`);
  }
}

// ---------------------------------------------------------------- paths

// VERIFIED names: register (AM 8.1 docs), access_token (fapi-pep-as 20-as-dcr-endpoint.json), introspect (AM 7.2/8
// docs oauth2-introspect-endpoint), connect/jwk_uri and .well-known/openid-configuration (many deployments'
// configs, e.g. .../sso/oauth2/connect/jwk_uri), par (PingGateway FAPI docs audience values), token/revoke (AM 8.1
// docs legacy-oauth2-endpoints link). authorize, userinfo and connect/endSession: ASSUMED(AM's well-known names;
// not exercised).
const OAUTH2 = `${CONTEXT_PATH}/oauth2/realms/root/realms/${REALM}`;
const PATHS = {
  register: `${OAUTH2}/register`,
  token: `${OAUTH2}/access_token`,
  introspect: `${OAUTH2}/introspect`,
  revoke: `${OAUTH2}/token/revoke`,
  jwks: `${OAUTH2}/connect/jwk_uri`,
  discovery: `${OAUTH2}/.well-known/openid-configuration`,
  authorize: `${OAUTH2}/authorize`,
  userinfo: `${OAUTH2}/userinfo`,
  endSession: `${OAUTH2}/connect/endSession`,
  par: `${OAUTH2}/par`,
};
// VERIFIED(AM 7.2 docs rest-api-oauth2-client-admin-endpoint and PingAM 8.1 query example:
// /json/realms/root/realms/<realm>/realm-config/agents/OAuth2Client[/<id>]; authenticate: PingAM 8.1 docs
// /json/realms/root/realms/alpha/authenticate with X-OpenAM-Username / X-OpenAM-Password).
const ADMIN_AUTH_PATH = `${CONTEXT_PATH}/json/realms/root/authenticate`;
const ADMIN_CLIENTS_PATH = `${CONTEXT_PATH}/json/realms/root/realms/${REALM}/realm-config/agents/OAuth2Client`;

let localBase; // http://127.0.0.1:PORT once listening
let publicOrigin;
const publicBase = () => `${publicOrigin}${CONTEXT_PATH}`;
// ASSUMED(the realm's OAuth2 base; AIC token samples show "iss": "https://<tenant>:443/am/oauth2/realms/root/realms/
// alpha" - the explicit :443 that AM renders there is not reproduced).
const issuer = () => `${publicOrigin}${OAUTH2}`;
const publicUrl = (path) => `${publicOrigin}${path}`;

// ---------------------------------------------------------------- errors

class HttpError extends Error {
  constructor(status, body, headers = {}) {
    super(body?.error_description ?? body?.message ?? String(status));
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

// OAuth2Exception subclasses render {"error_description": ..., "error": ...}.
const oauthError = (status, error, description) => new HttpError(status, { error_description: description, error });

// OPENAM(oauth2/core/exceptions/AccessDeniedException: 400 access_denied) with the message of
// OpenIdConnectClientRegistrationService.createRegistration; VERIFIED against AM by the log in wso2/api-manager#1398:
// 400 {"error_description":"Access Token not valid","error":"access_denied"} from POST .../oauth2/register.
const accessDenied = () => oauthError(400, 'access_denied', 'Access Token not valid');
// OPENAM(openidconnect/exceptions/InvalidClientMetadata: 400 invalid_client_metadata, default message).
const invalidMetadata = (description = 'The request contains invalid metadata.') => oauthError(400, 'invalid_client_metadata', description);
// OPENAM(oauth2/core/exceptions/InvalidTokenException: 401 invalid_token).
const invalidToken = () => oauthError(401, 'invalid_token', 'The access token provided is expired, revoked, malformed, or invalid for other reasons.');
// OPENAM(oauth2/core/exceptions/InvalidRequestException default message).
const invalidRequest = () => oauthError(400, 'invalid_request', 'The request is missing a required parameter, includes an invalid parameter value, or is otherwise malformed.');

// CREST errors of the /json API: {"code", "reason", "message"}. VERIFIED shape (an AM answer quoted in a deployment
// note: {"code":400,"reason":"Bad Request","message":"FQDN \"localhost\" is not valid."}); messages ASSUMED.
const crestError = (code, reason, message) => new HttpError(code, { code, reason, message });

// ---------------------------------------------------------------- client model

// token_endpoint_auth_method values AM takes. VERIFIED(AM 8 docs oidc-client-auth, via forgerock-am.md; the
// OPENAM Client.TokenEndpointAuthMethod enum lacks the mTLS ones, AM has them).
const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth', 'none'];

const clients = new Map(); // client_id -> AM client record

function staticClient(clientId, secret, scopes) {
  return {
    clientId,
    secret,
    authMethod: 'client_secret_basic',
    redirectUris: [],
    grantTypes: ['client_credentials'],
    responseTypes: ['code'],
    scopes,
    clientName: undefined,
    subjectType: 'public',
    applicationType: 'web',
    certBound: false,
    dynamic: false,
    rev: 1,
    extra: {},
  };
}

// The IAT client holds dynamic_client_registration (VERIFIED: fapi-pep-as asks for it; AM 7.3 docs: needed to
// register logo_uri, client_uri, policy_uri). The introspection client holds am-introspect-all-tokens (VERIFIED:
// WSO2 connector getRegistrationAccessToken asks for it; ForgeRock SDK samples give the API server's client that
// default scope to introspect other clients' tokens).
clients.set(IAT_CLIENT_ID, staticClient(IAT_CLIENT_ID, IAT_CLIENT_SECRET, ['dynamic_client_registration']));
clients.set(INTROSPECTION_CLIENT_ID, staticClient(INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET, ['am-introspect-all-tokens']));

const isString = (v) => typeof v === 'string';
const stringList = (v) => Array.isArray(v) && v.every(isString);
const containsCaseInsensitive = (list, value) => list.some((s) => s.toLowerCase() === value.toLowerCase());

// The RFC 7591 body -> AM client. Order and messages follow OPENAM(OpenIdConnectClientRegistrationService
// .createRegistration) where it has them; unknown keys are ignored (it only logs them).
function toClient(body, { clientId, scopesOfToken, existing }) {
  const c = {
    clientId,
    secret: existing?.secret,
    dynamic: true,
    rev: (existing?.rev ?? 0) + 1,
    extra: {},
  };
  if (body.jwks !== undefined && body.jwks_uri !== undefined) throw invalidMetadata('Must define either jwks or jwks_uri, not both.');
  if (body.jwks !== undefined) {
    if (!body.jwks || typeof body.jwks !== 'object' || !Array.isArray(body.jwks.keys)) throw invalidMetadata('jwks must be valid JSON.');
    c.jwks = body.jwks;
  }
  if (body.jwks_uri !== undefined) {
    try { new URL(body.jwks_uri); } catch { throw invalidMetadata('jwks_uri must be a valid URL.'); }
    c.jwksUri = body.jwks_uri;
  }
  const method = body.token_endpoint_auth_method ?? 'client_secret_basic';
  if (!AUTH_METHODS.includes(method)) throw invalidMetadata('Invalid token_endpoint_auth_method requested.');
  c.authMethod = method;

  // VERIFIED(secure-api-gateway-ob-uk-functional-tests DynamicRegistration.kt: requests send `scope` as one
  // string, answers carry `scope` and `scopes`). OPENAM: `scopes` (a list) is read too; case-insensitive check
  // against the provider's scopes ("Invalid scopes requested"); nothing asked -> provider default scopes;
  // "regardless, we add openid". Against the allowlist: VERIFIED that it limits DCR scopes, the message is OPENAM's.
  let scopes;
  if (isString(body.scope)) scopes = body.scope.split(' ').filter(Boolean);
  else if (stringList(body.scopes)) scopes = body.scopes;
  else if (body.scope !== undefined || body.scopes !== undefined) throw invalidMetadata();
  if (scopes?.length) {
    if (!scopes.every((s) => containsCaseInsensitive(SCOPE_ALLOWLIST, s))) throw invalidMetadata('Invalid scopes requested');
  } else {
    // ASSUMED: "Default Client Scopes" empty, as the FAPI setups configure it.
    scopes = [];
  }
  if (!scopes.includes('openid')) scopes = [...scopes, 'openid'];
  c.scopes = [...new Set(scopes)];

  if (body.redirect_uris !== undefined && !stringList(body.redirect_uris)) throw invalidMetadata();
  c.redirectUris = body.redirect_uris ?? [];
  if (body.grant_types !== undefined && !stringList(body.grant_types)) throw invalidMetadata();
  // ASSUMED: authorization_code when omitted (RFC 7591 default; AM 8.1 admin example of a plain client).
  c.grantTypes = body.grant_types ?? ['authorization_code'];
  if (body.response_types !== undefined && !stringList(body.response_types)) throw invalidMetadata('Invalid response_types requested.');
  c.responseTypes = body.response_types ?? ['code'];
  const subjectType = body.subject_type ?? 'public';
  if (!['public', 'pairwise'].includes(subjectType)) throw invalidMetadata('Invalid subject_type requested');
  c.subjectType = subjectType;
  c.applicationType = 'web'; // OPENAM: any valid application_type is stored as web.
  if (body.application_type !== undefined && !['web', 'native'].includes(body.application_type)) {
    throw invalidMetadata('Invalid application_type requested.');
  }
  if (body.tls_client_auth_subject_dn !== undefined && !isString(body.tls_client_auth_subject_dn)) throw invalidMetadata();
  c.subjectDn = body.tls_client_auth_subject_dn;
  if (body.tls_client_certificate_bound_access_tokens !== undefined && typeof body.tls_client_certificate_bound_access_tokens !== 'boolean') {
    throw invalidMetadata();
  }
  c.certBound = body.tls_client_certificate_bound_access_tokens === true;
  for (const [field, key] of [
    ['client_name', 'clientName'], ['token_endpoint_auth_signing_alg', 'tokenEndpointAuthSigningAlg'],
    ['id_token_signed_response_alg', 'idTokenSignedResponseAlg'], ['request_object_signing_alg', 'requestObjectSigningAlg'],
    ['software_id', 'softwareId'], ['software_version', 'softwareVersion'], ['tos_uri', 'tosUri'],
  ]) {
    if (body[field] !== undefined && !isString(body[field])) throw invalidMetadata();
    c[key] = body[field];
  }
  if (body.contacts !== undefined && !stringList(body.contacts)) throw invalidMetadata();
  c.contacts = body.contacts;
  // VERIFIED(AM 7.0 and 7.3 docs): logo_uri, client_uri and policy_uri are only accepted if the access token holds
  // the dynamic_client_registration scope. ASSUMED: "not accepted" is a refusal, and this message.
  for (const [field, key] of [['logo_uri', 'logoUri'], ['client_uri', 'clientUri'], ['policy_uri', 'policyUri']]) {
    if (body[field] === undefined) continue;
    if (!scopesOfToken.includes('dynamic_client_registration')) {
      throw invalidMetadata(`${field} needs an access token with the dynamic_client_registration scope`);
    }
    if (!isString(body[field])) throw invalidMetadata();
    c[key] = body[field];
  }
  // OPENAM: a client_secret is generated for every client (UUID); public ("none") clients get none here. ASSUMED.
  if (method !== 'none' && !c.secret) c.secret = randomUUID();
  if (method === 'none') c.secret = undefined;
  return c;
}

const clientType = (c) => (c.authMethod === 'none' ? 'Public' : 'Confidential');
const publicKeySelector = (c) => (c.jwksUri ? 'jwks_uri' : c.jwks ? 'jwks' : 'x509');

function registrationClientUri(c) {
  // ASSUMED: the realm's register endpoint with ?client_id= on AM's public URL (OPENAM builds
  // deploymentUrl + "/oauth2/connect/register?client_id=" from the request's host; AM 7 addresses clients by the
  // same query, VERIFIED by fapi-pep-as ProcessRegistrationFilter.rewriteUriToAccessExistingAmRegistration).
  return `${publicUrl(PATHS.register)}?client_id=${encodeURIComponent(c.clientId)}`;
}

// The registration answer. Field names VERIFIED(secure-api-gateway-ob-uk-functional-tests DynamicRegistration.kt
// RegistrationResponse, which decodes AM's answer); default values ASSUMED from the PingAM 8.1 admin query example
// (signEncOAuth2ClientConfig / coreOpenIDClientConfig defaults of a new client).
function registrationResponse(c, { rat, withClientUri }) {
  const out = {
    client_id: c.clientId,
    client_type: clientType(c),
    token_endpoint_auth_method: c.authMethod,
    redirect_uris: c.redirectUris,
    grant_types: c.grantTypes,
    response_types: c.responseTypes,
    scope: c.scopes.join(' '),
    scopes: c.scopes,
    subject_type: c.subjectType,
    application_type: c.applicationType,
    public_key_selector: publicKeySelector(c),
    tls_client_certificate_bound_access_tokens: c.certBound,
    id_token_signed_response_alg: c.idTokenSignedResponseAlg ?? 'RS256',
    id_token_encrypted_response_alg: 'RSA-OAEP-256',
    id_token_encrypted_response_enc: 'A128CBC-HS256',
    id_token_encryption_enabled: false,
    introspection_signed_response_alg: 'RS256',
    introspection_encrypted_response_alg: 'RSA-OAEP-256',
    introspection_encrypted_response_enc: 'A128CBC-HS256',
    user_info_response_format_selector: 'JSON',
    token_intro_response_format_selector: 'JSON',
    default_max_age: 600,
    default_max_age_enabled: false,
    authorization_code_lifetime: 0,
    access_token_lifetime: 0,
    refresh_token_lifetime: 0,
    jwt_token_lifetime: 0,
    backchannel_logout_session_required: false,
  };
  if (c.secret) out.client_secret = c.secret;
  out.client_secret_expires_at = 0; // OPENAM: always 0.
  const optional = {
    client_name: c.clientName,
    jwks_uri: c.jwksUri,
    jwks: c.jwks,
    tls_client_auth_subject_dn: c.subjectDn,
    token_endpoint_auth_signing_alg: c.tokenEndpointAuthSigningAlg,
    request_object_signing_alg: c.requestObjectSigningAlg,
    software_id: c.softwareId,
    software_version: c.softwareVersion,
    contacts: c.contacts,
    logo_uri: c.logoUri,
    client_uri: c.clientUri,
    policy_uri: c.policyUri,
    tos_uri: c.tosUri,
  };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) out[k] = v;
  if (rat !== undefined) out.registration_access_token = rat;
  if (withClientUri) out.registration_client_uri = registrationClientUri(c);
  return out;
}

// ---------------------------------------------------------------- oidc-provider client records

const OIDC_GRANTS = ['client_credentials'];

function providerMetadata(c) {
  const meta = {
    client_id: c.clientId,
    token_endpoint_auth_method: c.authMethod,
    grant_types: c.grantTypes.filter((g) => OIDC_GRANTS.includes(g)),
    response_types: [],
    redirect_uris: [],
    scope: c.scopes.join(' '),
    // Bound only if the client asks and the provider allows it (see CERT_BOUND_TOKENS_ENABLED).
    tls_client_certificate_bound_access_tokens: c.certBound && CERT_BOUND_TOKENS_ENABLED,
  };
  if (['client_secret_basic', 'client_secret_post'].includes(c.authMethod)) meta.client_secret = c.secret;
  if (c.authMethod === 'tls_client_auth') meta.tls_client_auth_subject_dn = c.subjectDn ?? 'mTLSSubjectDN is not set';
  if (c.jwksUri) meta.jwks_uri = c.jwksUri;
  else if (c.jwks) meta.jwks = c.jwks;
  if (c.tokenEndpointAuthSigningAlg) meta.token_endpoint_auth_signing_alg = c.tokenEndpointAuthSigningAlg;
  return meta;
}

let provider;

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
  clients.delete(c.clientId);
  storeFor('Client').delete(c.clientId);
}

// ---------------------------------------------------------------- client certificate and DN

const certCache = new WeakMap();

// URLENCODED_PEM from the trusted header. ASSUMED: decoded like java.net.URLDecoder ('+' is a space), the same
// JVM helper Keycloak's nginx lookup uses; a value that does not decode is no certificate.
function readCertificate(req) {
  const raw = req.headersDistinct?.[TRUSTED_CERT_HEADER]?.[0];
  if (!raw || !raw.trim()) return undefined;
  try {
    const pem = decodeURIComponent(raw.replace(/\+/g, ' '));
    const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
    return m ? new X509Certificate(Buffer.from(m[1].replace(/\s+/g, ''), 'base64')) : undefined;
  } catch (err) {
    log(`ignoring unparseable ${TRUSTED_CERT_HEADER} header: ${err.message}`);
    return undefined;
  }
}

function getCertificate(ctx) {
  if (!certCache.has(ctx)) certCache.set(ctx, readCertificate(ctx.req));
  return certCache.get(ctx);
}

function certificateAuthorized(ctx) {
  const cert = getCertificate(ctx);
  if (!cert) return false;
  if (!TRUSTED_CA) return true;
  return cert.checkIssued(TRUSTED_CA) && cert.verify(TRUSTED_CA.publicKey);
}

// VERIFIED(AM 8 docs client-auth-mtls via forgerock-am.md): tls_client_auth_subject_dn is stored as mTLSSubjectDN
// and must match the certificate's subject exactly. ASSUMED(same JVM as Keycloak): AM parses it with
// `new X500Principal(dn)` (JDK keywords only, no extra OID map) and compares the RFC 2253 renderings - x500.mjs is
// the JDK model; a DN Java cannot parse (e.g. organizationIdentifier=...) matches nothing.
function certificateSubjectMatches(ctx, property, expected) {
  const cert = getCertificate(ctx);
  if (!cert || property !== 'tls_client_auth_subject_dn') return false;
  try {
    return rfc2253(parseDn(expected, new Map()), new Map()) === rfc2253(certificateSubject(cert.raw), new Map());
  } catch (err) {
    if (!(err instanceof DnSyntaxError)) throw err;
    log(`mTLSSubjectDN "${expected}" does not parse as an X500Principal (${err.message}): no match`);
    return false;
  }
}

// ---------------------------------------------------------------- registration endpoint

function bearer(req) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  return m ? m[1] : undefined;
}

// Any live access token of the realm authorises a registration. VERIFIED(AM docs: "registration with an access
// token"; the scope is only needed for logo/client/policy URIs). OPENAM(tokenVerifier.verify, AccessDeniedException).
// INITIAL_ACCESS_TOKEN is a static token of the test harness (not AM): always valid.
async function initialAccessToken(req) {
  const token = bearer(req);
  if (!token) throw accessDenied();
  if (token === INITIAL_ACCESS_TOKEN) return { token, harnessStatic: true, scopes: ['dynamic_client_registration'] };
  const at = await provider.ClientCredentials.find(token);
  if (!at || !clients.has(at.clientId)) throw accessDenied();
  return { token, harnessStatic: false, scopes: (at.scope ?? '').split(' ').filter(Boolean) };
}

// The registration access token a client gets at creation (see RAT_MODE).
function initialRat(auth) {
  if (RAT_MODE === 'false') return { token: randomBytes(32).toString('base64url') };
  // A true-mode RAT lives as long as the access token it is; the harness's static IAT lives forever.
  return { token: auth.token, iatBacked: RAT_MODE === 'true' && !auth.harnessStatic };
}

// After a PUT. VERIFIED(wso2/product-apim#10910: with AM "while updating an oauth client the above access token
// gets updated", i.e. the update answer carries a new registration_access_token and the old one stops working).
// ASSUMED: in `true` mode the new one is an access token too and expires like the IAT did.
function rotatedRat() {
  const token = randomBytes(32).toString('base64url');
  return RAT_MODE === 'true' ? { token, expiresAt: Date.now() + IAT_LIFETIME * 1000 } : { token };
}

async function ratIsLive(rat, token) {
  if (!rat || token !== rat.token) return false;
  if (rat.expiresAt !== undefined && Date.now() >= rat.expiresAt) return false;
  if (rat.iatBacked && !(await provider.ClientCredentials.find(token))) return false;
  return true;
}

// OPENAM(OpenIdConnectClientRegistrationService.getRegistration): no client_id -> invalid_request; unknown client
// -> invalid_client_metadata; token not the client's -> invalid_token (401). So a 401 says the token is wrong, not
// that the client is gone. ASSUMED for AM, and that PUT and DELETE check the same way.
async function registeredClient(req, url) {
  const clientId = url.searchParams.get('client_id');
  if (!clientId) throw invalidRequest();
  const c = clients.get(clientId);
  if (!c || !c.dynamic) throw invalidMetadata();
  if (!await ratIsLive(c.rat, bearer(req))) throw invalidToken();
  return c;
}

function parseJsonObject(text) {
  let body;
  try { body = JSON.parse(text); } catch { body = undefined; }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalidMetadata();
  return body;
}

async function createRegistration(req, applied) {
  // OPENAM: the token is checked before the body is read.
  const auth = await initialAccessToken(req);
  // Test double: the token refused as AM refuses a dead one (an IAT client that lost its rights mid-run).
  if (applied?.mode === 'refuse_token') throw accessDenied();
  const body = parseJsonObject(await readBody(req));
  if (applied?.mode === 'ignore_client_id') delete body.client_id;
  // VERIFIED(AM 7.0 docs oauth2-dynamic-client-registration: with an access token "you can use this method to
  // provide a client with a specific client ID"; OPENAM uses body.client_id, else a UUID).
  if (body.client_id !== undefined && (!isString(body.client_id) || !body.client_id)) throw invalidMetadata();
  const clientId = body.client_id ?? randomUUID();
  const c = toClient(body, { clientId, scopesOfToken: auth.scopes });
  // OPENAM(oauth2/OpenAMClientDAO.create: any failure to create the agent, a taken name included, becomes the
  // default InvalidClientMetadata). ASSUMED for AM.
  if (clients.has(clientId)) {
    log(`ConnectClientRegistration.Validate(): Unable to create client ${clientId}: already exists`);
    throw invalidMetadata();
  }
  c.rat = initialRat(auth);
  clients.set(c.clientId, c);
  await syncProviderClient(c);
  log(`registered client ${c.clientId} (${c.authMethod}, RAT ${RAT_MODE === 'false' ? 'minted' : 'is the IAT'})`);
  // VERIFIED(AM 8.1 docs: POST creates; 201 per forgerock-am.md). The answer carries the RAT and the client URI.
  return { status: 201, body: registrationResponse(c, { rat: c.rat.token, withClientUri: true }) };
}

// OPENAM(getRegistration): the RAT is removed from the answer and no registration_client_uri is added.
async function readRegistration(req, url) {
  const c = await registeredClient(req, url);
  return { status: 200, body: registrationResponse(c, { rat: undefined, withClientUri: false }) };
}

// RFC 7592 replace. ASSUMED throughout (OpenAM has no PUT): the body replaces the metadata, a client_id in it must
// name the same client, the secret stays, the RAT rotates (see rotatedRat).
async function updateRegistration(req, url) {
  const c = await registeredClient(req, url);
  const body = parseJsonObject(await readBody(req));
  if (body.client_id !== undefined && body.client_id !== c.clientId) throw invalidMetadata();
  const scopesOfToken = ['dynamic_client_registration'];
  const next = toClient(body, { clientId: c.clientId, scopesOfToken, existing: c });
  next.rat = rotatedRat();
  clients.set(next.clientId, next);
  await syncProviderClient(next);
  log(`updated client ${next.clientId} (registration access token rotated)`);
  return { status: 200, body: registrationResponse(next, { rat: next.rat.token, withClientUri: true }) };
}

// VERIFIED(secure-api-gateway-ob-uk ManageApiClientFilter.handleDeleteApiClient: "AM does not follow the spec and
// instead returns a 200 response"). ASSUMED: with an empty body.
async function deleteRegistration(req, url) {
  const c = await registeredClient(req, url);
  removeClient(c);
  log(`deleted client ${c.clientId}`);
  return { status: 200 };
}

async function registrationEndpoint(req, url, sub) {
  // VERIFIED: existing registrations are addressed by ?client_id=, the path form is AM-foreign
  // (fapi-pep-as ProcessRegistrationFilter rewrites ".../register/<id>" to ".../register?client_id=<id>").
  // ASSUMED: AM's 404 body for it.
  if (sub !== '') throw oauthError(404, 'not_found', 'Not Found');
  const isCreate = req.method === 'POST';
  const applied = takeFault(req.method, url.pathname, { isCreate, isReplace: req.method === 'PUT' });
  if (applied?.mode === 'error_before_create') return { status: applied.status, body: INJECTED_ERROR };
  let result;
  if (req.method === 'POST') result = await createRegistration(req, applied);
  else if (req.method === 'GET') result = await readRegistration(req, url);
  else if (req.method === 'PUT') result = await updateRegistration(req, url);
  else if (req.method === 'DELETE') result = await deleteRegistration(req, url);
  else throw oauthError(405, 'invalid_request', 'Method not allowed');
  if (applied?.mode === 'delay_after_create') await new Promise((r) => { setTimeout(r, applied.delayMs); });
  if (applied?.mode === 'error_after_create') return { status: applied.status, body: INJECTED_ERROR };
  return result;
}

// ---------------------------------------------------------------- admin REST API (/json)

const sessions = new Set(); // SSO token ids

// VERIFIED(PingAM 8.1 docs authenticate: zero-page login with X-OpenAM-Username / X-OpenAM-Password answers
// {"tokenId", "successUrl": "/am/console", "realm": "/"}; deployment notes show the iPlanetDirectoryPro cookie set
// alongside). ASSUMED: the 401 body on bad credentials.
function authenticate(req) {
  if (req.method !== 'POST') throw crestError(405, 'Method Not Allowed', 'Method not allowed');
  const user = req.headers['x-openam-username'];
  const password = req.headers['x-openam-password'];
  if (user !== ADMIN_USER || password !== ADMIN_PASSWORD) throw crestError(401, 'Unauthorized', 'Authentication Failed');
  const tokenId = `${randomBytes(24).toString('base64url')}.*AAJTSQACMDE.*`;
  sessions.add(tokenId);
  return {
    status: 200,
    headers: { 'set-cookie': `iPlanetDirectoryPro=${tokenId}; Path=/; HttpOnly` },
    body: { tokenId, successUrl: `${CONTEXT_PATH}/console`, realm: '/' },
  };
}

// The SSO token goes in a header named like the session cookie (default iPlanetDirectoryPro). VERIFIED(AM 7.2
// docs examples). ASSUMED: the cookie itself works too, and the 401 body.
function requireAdminSession(req) {
  const fromHeader = req.headers.iplanetdirectorypro;
  const fromCookie = /(?:^|;\s*)iPlanetDirectoryPro=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
  const token = fromHeader ?? fromCookie;
  if (!token || !sessions.has(token)) throw crestError(401, 'Unauthorized', 'Access Denied');
}

const revOf = (c) => String(createHash('sha256').update(`${c.clientId}:${c.rev}`).digest().readInt32BE(0));

// One OAuth2Client agent in AM's layout. Group and attribute names VERIFIED(PingAM 8.1 docs query example:
// coreOAuth2ClientConfig, advancedOAuth2ClientConfig, signEncOAuth2ClientConfig with mTLSSubjectDN,
// mTLSCertificateBoundAccessTokens, jwksUri, publicKeyLocation, ...; _type OAuth2Client). Only the attributes
// dcr-proxy might read are filled in; the rest of AM's ~80 defaults are left out.
function agentGroups(c) {
  return {
    coreOAuth2ClientConfig: {
      status: 'Active',
      clientName: c.clientName ? [c.clientName] : [],
      clientType: clientType(c),
      defaultScopes: [],
      agentgroup: null,
      scopes: c.scopes,
      redirectionUris: c.redirectUris,
      accessTokenLifetime: 0,
      refreshTokenLifetime: 0,
      authorizationCodeLifetime: 0,
      loopbackInterfaceRedirection: false,
    },
    advancedOAuth2ClientConfig: {
      tokenEndpointAuthMethod: c.authMethod,
      grantTypes: c.grantTypes,
      responseTypes: c.responseTypes,
      subjectType: c.subjectType,
      softwareIdentity: c.softwareId ?? null,
      softwareVersion: c.softwareVersion ?? null,
      contacts: c.contacts ?? [],
      logoUri: c.logoUri ? [c.logoUri] : [],
      clientUri: c.clientUri ? [c.clientUri] : [],
      policyUri: c.policyUri ? [c.policyUri] : [],
      tosURI: c.tosUri ? [c.tosUri] : [],
      name: [],
      descriptions: [],
      requestUris: [],
      javascriptOrigins: [],
      isConsentImplied: false,
      // ASSUMED: not where the stand-in keeps the RAT; AM shows null for admin-made clients.
      updateAccessToken: null,
    },
    signEncOAuth2ClientConfig: {
      tokenEndpointAuthSigningAlgorithm: c.tokenEndpointAuthSigningAlg ?? 'RS256',
      mTLSSubjectDN: c.subjectDn ?? null,
      mTLSCertificateBoundAccessTokens: c.certBound,
      jwksUri: c.jwksUri ?? null,
      jwkSet: c.jwks ? JSON.stringify(c.jwks) : null,
      publicKeyLocation: publicKeySelector(c) === 'jwks' ? 'jwks' : publicKeySelector(c) === 'x509' ? 'x509' : 'jwks_uri',
      idTokenSignedResponseAlg: c.idTokenSignedResponseAlg ?? 'RS256',
      requestParameterSignedAlg: c.requestObjectSigningAlg ?? null,
    },
    coreOpenIDClientConfig: {
      defaultMaxAge: 600,
      defaultMaxAgeEnabled: false,
      jwtTokenLifetime: 0,
      postLogoutRedirectUri: [],
    },
  };
}

const AGENT_TYPE = { _id: 'OAuth2Client', name: 'OAuth2 Clients', collection: true };

// Query results carry plain values. VERIFIED(PingAM 8.1 docs "Query OAuth 2.0 clients").
const flatAgent = (c) => ({ _id: c.clientId, _rev: revOf(c), ...agentGroups(c), _type: AGENT_TYPE });

// Single-resource answers wrap each attribute as {"inherited", "value"}. VERIFIED(AM 7.1/7.2 docs: the PUT answer
// of /realm-config/agents/OAuth2Client/<id> shows "descriptions":{"inherited":false,"value":[]}). ASSUMED for GET
// and DELETE.
function wrappedAgent(c) {
  const groups = agentGroups(c);
  const wrapped = {};
  for (const [group, attrs] of Object.entries(groups)) {
    wrapped[group] = Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, { inherited: false, value: v }]));
  }
  return { _id: c.clientId, _rev: revOf(c), ...wrapped, _type: AGENT_TYPE };
}

function adminClients(req, url, rest) {
  requireAdminSession(req);
  if (rest === '' && req.method === 'GET') {
    // VERIFIED(PingAM 8.1 docs query example, including the paging fields). ASSUMED: only _queryFilter=true is
    // implemented here; AM supports CREST filters.
    const filter = url.searchParams.get('_queryFilter');
    if (filter !== 'true') throw crestError(400, 'Bad Request', 'The stand-in only implements _queryFilter=true');
    const result = [...clients.values()].sort((a, b) => (a.clientId < b.clientId ? -1 : 1)).map(flatAgent);
    return {
      status: 200,
      body: {
        result, resultCount: result.length, pagedResultsCookie: null, totalPagedResultsPolicy: 'EXACT', totalPagedResults: result.length, remainingPagedResults: -1,
      },
    };
  }
  const m = /^\/([^/]+)$/.exec(rest);
  if (!m) throw crestError(404, 'Not Found', 'Not Found');
  const c = clients.get(decodeURIComponent(m[1]));
  // VERIFIED that AM answers 404 for an absent agent (forgerock-am.md, AM 7.2 docs); message ASSUMED.
  if (!c) throw crestError(404, 'Not Found', `Agent ${decodeURIComponent(m[1])} not found`);
  if (req.method === 'GET') return { status: 200, body: wrappedAgent(c) };
  if (req.method === 'DELETE') {
    // VERIFIED(PingAM 8.1 docs "Delete an OAuth 2.0 client": 200 with the deleted resource).
    const body = wrappedAgent(c);
    removeClient(c);
    log(`admin REST deleted OAuth2Client ${c.clientId}`);
    return { status: 200, body };
  }
  throw crestError(405, 'Method Not Allowed', 'Method not allowed');
}

// ---------------------------------------------------------------- discovery and keys

let publicJwks;

// ASSUMED: AM's discovery document reduced to what a client reads; every URL on AM's public base.
function discovery() {
  return {
    issuer: issuer(),
    authorization_endpoint: publicUrl(PATHS.authorize),
    token_endpoint: publicUrl(PATHS.token),
    userinfo_endpoint: publicUrl(PATHS.userinfo),
    introspection_endpoint: publicUrl(PATHS.introspect),
    revocation_endpoint: publicUrl(PATHS.revoke),
    end_session_endpoint: publicUrl(PATHS.endSession),
    registration_endpoint: publicUrl(PATHS.register),
    pushed_authorization_request_endpoint: publicUrl(PATHS.par),
    jwks_uri: publicUrl(PATHS.jwks),
    scopes_supported: [...new Set([...SCOPE_ALLOWLIST, 'openid'])],
    response_types_supported: ['code', 'id_token', 'code id_token'],
    grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
    subject_types_supported: ['public', 'pairwise'],
    id_token_signing_alg_values_supported: ['PS256', 'RS256', 'ES256'],
    token_endpoint_auth_methods_supported: AUTH_METHODS.filter((m) => m !== 'none'),
    token_endpoint_auth_signing_alg_values_supported: ['PS256', 'RS256', 'ES256'],
    tls_client_certificate_bound_access_tokens: CERT_BOUND_TOKENS_ENABLED,
    claims_parameter_supported: true,
    request_parameter_supported: true,
    request_uri_parameter_supported: true,
  };
}

// ---------------------------------------------------------------- token, introspection

// OPENAM(ClientAuthenticationFailureFactory.getException: invalid_client is 400, or 401 when the client tried the
// Authorization header; InvalidClientException's default message). ASSUMED for AM.
function rewriteClientAuthError(ctx) {
  if (ctx.body?.error !== 'invalid_client') return;
  ctx.status = ctx.get('authorization') ? 401 : 400;
  ctx.body = {
    error_description: 'The client identifier provided is invalid, the client failed to authenticate, the client did not include its credentials, provided multiple client credentials, or used unsupported credentials type.',
    error: 'invalid_client',
  };
  if (ctx.status === 400) ctx.remove('www-authenticate');
}

// VERIFIED: introspecting another client's token needs am-introspect-all-tokens on the caller (AM 7.2 docs via
// forgerock-am.md; an AIC integration note: "payment-api's own client needs the am-introspect-all-tokens scope to
// introspect a token issued to a different client"). ASSUMED: without it the answer is {"active": false}.
// Answer shape VERIFIED(a published AM introspection answer: active, scope, realm, client_id, user_id, username,
// token_type, exp, sub, iss, subname, authGrantId, auditTrackingId, aud). cnf: ASSUMED (AM documents returning the
// proof-of-possession key; the x5t#S256 form for mTLS-bound tokens is not shown).
function rewriteIntrospection(ctx) {
  if (ctx.status !== 200 || !ctx.body) {
    rewriteClientAuthError(ctx);
    return;
  }
  const body = ctx.body;
  const caller = clients.get(ctx.oidc?.client?.clientId);
  const owner = clients.get(body.client_id);
  const allowed = caller && (body.client_id === caller.clientId || caller.scopes.includes('am-introspect-all-tokens'));
  if (!body.active || !owner || !allowed) {
    ctx.body = { active: false };
    return;
  }
  const out = {
    active: true,
    scope: body.scope ?? '',
    realm: `/${REALM}`,
    client_id: body.client_id,
    user_id: body.client_id,
    username: body.client_id,
    token_type: 'Bearer',
    exp: body.exp,
    sub: body.client_id,
    iss: issuer(),
    subname: body.client_id,
    authGrantId: createHash('sha256').update(`grant:${body.jti ?? body.exp}:${body.client_id}`).digest('base64url').slice(0, 27),
    auditTrackingId: randomUUID(),
    aud: body.client_id,
  };
  if (body.cnf) out.cnf = body.cnf;
  ctx.body = out;
}

async function amEndpoints(ctx, next) {
  const path = ctx.path;
  await next();
  if (path === PATHS.token && ctx.status >= 400) rewriteClientAuthError(ctx);
  else if (path === PATHS.introspect) rewriteIntrospection(ctx);
  else if (path === PATHS.revoke && ctx.status >= 400) rewriteClientAuthError(ctx);
}

// ---------------------------------------------------------------- HTTP server

function send(res, result) {
  const headers = { 'cache-control': 'no-store', ...(result.headers ?? {}) };
  if (result.body === undefined) {
    res.writeHead(result.status, { ...headers, 'content-length': '0' });
    res.end();
    return;
  }
  sendJson(res, result.status, result.body, headers);
}

let providerCallback;

async function route(req, res, url) {
  const p = url.pathname;
  const realmMatch = /\/oauth2\/realms\/root\/realms\/([^/]+)/.exec(p) ?? /\/json\/realms\/root\/realms\/([^/]+)/.exec(p);
  // ASSUMED: another realm is a 404 (body ASSUMED).
  if (realmMatch && realmMatch[1] !== REALM) return send(res, { status: 404, body: { code: 404, reason: 'Not Found', message: 'Realm not found' } });
  if (p === PATHS.register || p.startsWith(`${PATHS.register}/`)) {
    return send(res, await registrationEndpoint(req, url, p.slice(PATHS.register.length)));
  }
  if (p === ADMIN_AUTH_PATH) return send(res, authenticate(req));
  if (p === ADMIN_CLIENTS_PATH || p.startsWith(`${ADMIN_CLIENTS_PATH}/`)) {
    return send(res, adminClients(req, url, p.slice(ADMIN_CLIENTS_PATH.length)));
  }
  if (p === PATHS.discovery && req.method === 'GET') return send(res, { status: 200, body: discovery() });
  if (p === PATHS.jwks && req.method === 'GET') return send(res, { status: 200, body: publicJwks });
  // VERIFIED(AM 7.2 docs: "From AM 7.2.0 onwards, HTTP GET requests are disallowed on the /oauth2/introspect
  // endpoint by default"). ASSUMED: the status and body of the refusal.
  if (p === PATHS.introspect && req.method !== 'POST') {
    return send(res, { status: 405, body: { error_description: 'HTTP GET is not allowed on the introspection endpoint', error: 'invalid_request' } });
  }
  if (!providerCallback) return send(res, { status: 503, body: { error: 'temporarily_unavailable' } });
  if ([PATHS.token, PATHS.introspect, PATHS.revoke, PATHS.authorize, PATHS.userinfo, PATHS.endSession, PATHS.par].includes(p)) {
    // oidc-provider builds its own URLs (client assertion audiences) from the request: make them AM's public ones.
    const front = new URL(publicOrigin);
    req.headers['x-forwarded-proto'] = front.protocol.slice(0, -1);
    req.headers['x-forwarded-host'] = front.host;
    return providerCallback(req, res);
  }
  return send(res, { status: 404, body: { code: 404, reason: 'Not Found', message: 'Not Found' } });
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
    handleTestRoute(req, res, url, { clientIds: () => [...clients.values()].filter((c) => c.dynamic).map((c) => c.clientId) })
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
    if (!res.headersSent) send(res, { status: 500, body: { error_description: 'Internal Server Error', error: 'server_error' } });
  });
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});

const { port } = server.address();
localBase = `http://127.0.0.1:${port}`;
publicOrigin = PUBLIC_URL_SETTING === 'self' ? localBase : new URL(PUBLIC_URL_SETTING).origin;

const jwks = await makeJwks();
const PRIVATE_PARTS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];
publicJwks = { keys: jwks.keys.map((k) => Object.fromEntries(Object.entries(k).filter(([name]) => !PRIVATE_PARTS.includes(name)))) };

provider = new Provider(issuer(), {
  adapter: MapAdapter,
  jwks,
  clients: [IAT_CLIENT_ID, INTROSPECTION_CLIENT_ID].map((id) => ({ ...providerMetadata(clients.get(id)) })),
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth', 'none'],
  scopes: [...new Set(['openid', 'dynamic_client_registration', 'am-introspect-all-tokens', ...SCOPE_ALLOWLIST])],
  responseTypes: ['code', 'none'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512'],
  },
  cookies: { keys: [randomUUID()] },
  routes: {
    authorization: PATHS.authorize,
    token: PATHS.token,
    introspection: PATHS.introspect,
    revocation: PATHS.revoke,
    userinfo: PATHS.userinfo,
    end_session: PATHS.endSession,
    pushed_authorization_request: PATHS.par,
    jwks: `${CONTEXT_PATH}/__oidc-provider/jwks`,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: false },
    // The am-introspect-all-tokens rule is applied afterwards (rewriteIntrospection).
    introspection: { enabled: true, allowedPolicy: () => true },
    // ASSUMED: a client may only revoke its own tokens (oidc-provider's default).
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: { enabled: false },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate,
      certificateAuthorized,
      certificateSubjectMatches,
    },
  },
  ttl: {
    ClientCredentials(ctx, token, client) {
      // Test hook shared with the other flavours: a token that expires in seconds, on request.
      const asked = Number(ctx?.get?.('x-test-token-ttl'));
      if (Number.isInteger(asked) && asked > 0 && asked <= 600) return asked;
      return client?.clientId === IAT_CLIENT_ID ? IAT_LIFETIME : ACCESS_TOKEN_LIFETIME;
    },
    AccessToken: ACCESS_TOKEN_LIFETIME,
    AuthorizationCode: 60,
    IdToken: ACCESS_TOKEN_LIFETIME,
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
provider.use(amEndpoints);
providerCallback = provider.callback();

process.stdout.write(`${JSON.stringify({
  event: 'listening',
  port,
  // The harness builds request URLs from "issuer" (this server); AM's own issuer is "oidc_issuer".
  issuer: localBase,
  flavour: 'forgerock-am-standin',
  realm: REALM,
  oidc_issuer: issuer(),
  public_url: publicBase(),
  context_path: CONTEXT_PATH,
  discovery_path: PATHS.discovery,
  registration_path: PATHS.register,
  token_path: PATHS.token,
  introspection_path: PATHS.introspect,
  revocation_path: PATHS.revoke,
  jwks_path: PATHS.jwks,
  admin_authenticate_path: ADMIN_AUTH_PATH,
  admin_clients_path: ADMIN_CLIENTS_PATH,
  iat_client_id: IAT_CLIENT_ID,
  rat_is_iat: RAT_MODE,
  trusted_cert_header: TRUSTED_CERT_HEADER,
})}\n`);
log(`listening on ${localBase}: ForgeRock AM STAND-IN (not AM), realm ${REALM}, public base ${publicBase()}, `
  + `RAT mode ${RAT_MODE}, IAT lifetime ${IAT_LIFETIME}s, cert-bound tokens ${CERT_BOUND_TOKENS_ENABLED ? 'on' : 'off'}, `
  + `trusted cert header ${TRUSTED_CERT_HEADER}${TRUSTED_CA ? ' (CA-checked)' : ''}`);

installShutdown(server);
