// Default flavour of the test upstream: a real OAuth 2.0 / OpenID Connect server
// (oidc-provider 9.x) on plain HTTP loopback, with RFC 7591/7592 dynamic
// client registration, RFC 7662 introspection, RFC 7009 revocation, the
// client_credentials grant and RFC 8705 mTLS (certificate taken from a header
// set by the TLS-terminating proxy in front of it).
//
// Contract (relied upon by the Rust integration harness):
//   stdout: exactly one line, {"event":"listening","port":N,"issuer":"http://127.0.0.1:N"}
//   stderr: everything else.
//   See README.md for env vars and routes.

import * as http from 'node:http';
import { X509Certificate, randomUUID } from 'node:crypto';

import {
  ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, CLIENT_CERT_HEADER, INITIAL_ACCESS_TOKEN, INJECTED_ERROR,
  INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET, MapAdapter, PORT, certFromXfcc, fail, handleTestRoute,
  installShutdown, isTestRoute, log, makeJwks, pemToX509, recordRequest, sendJson, storeFor, takeFault,
} from './common.mjs';

const { Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------- env

if (!['rfc9440', 'nginx', 'envoy'].includes(CLIENT_CERT_HEADER)) {
  fail('CLIENT_CERT_HEADER must be one of rfc9440, nginx, envoy');
}

const SCOPES = [
  'openid', 'accounts', 'payments', 'fundsconfirmations', 'cdr:registration',
  'bank:accounts.basic:read', 'bank:accounts.detail:read', 'bank:transactions:read',
  'bank:payees:read', 'bank:regular_payments:read', 'common:customer.basic:read',
  'common:customer.detail:read', 'energy:accounts.basic:read', 'profile', 'offline_access',
];

const SIGNING_ALGS = ['PS256', 'ES256', 'RS256'];

// ---------------------------------------------------------------- storage

function registeredClientIds() {
  const store = storeFor('Client');
  const ids = [];
  for (const [id, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) continue;
    if (id === INTROSPECTION_CLIENT_ID || id === ADMIN_CLIENT_ID) continue;
    ids.push(id);
  }
  return ids;
}

// ---------------------------------------------------------------- client certificate

function readCertificate(ctx) {
  switch (CLIENT_CERT_HEADER) {
    case 'rfc9440': {
      // RFC 9440: Client-Cert is a Structured Field Byte Sequence, ":<base64 DER>:".
      const raw = ctx.get('client-cert');
      if (!raw) return undefined;
      const b64 = raw.trim().replace(/^:/, '').replace(/:$/, '');
      return new X509Certificate(Buffer.from(b64, 'base64'));
    }
    case 'nginx': {
      // nginx $ssl_client_escaped_cert: URL-encoded PEM.
      const raw = ctx.get('ssl-client-cert');
      if (!raw) return undefined;
      return pemToX509(decodeURIComponent(raw));
    }
    case 'envoy': {
      const raw = ctx.get('x-forwarded-client-cert');
      if (!raw) return undefined;
      const pem = certFromXfcc(raw);
      return pem ? pemToX509(pem) : undefined;
    }
    default:
      return undefined;
  }
}

const certCache = new WeakMap();

function getCertificate(ctx) {
  if (certCache.has(ctx)) return certCache.get(ctx);
  let cert;
  try {
    cert = readCertificate(ctx);
  } catch (err) {
    log(`ignoring unparseable client certificate header (${CLIENT_CERT_HEADER}): ${err.message}`);
    cert = undefined;
  }
  certCache.set(ctx, cert);
  return cert;
}

function certificateAuthorized(ctx) {
  if (!getCertificate(ctx)) return false;
  if (CLIENT_CERT_HEADER === 'nginx') return ctx.get('ssl-client-verify') === 'SUCCESS';
  // rfc9440 / envoy: the fronting proxy only forwards certificates it verified.
  return true;
}

// ----- Distinguished Name comparison (RFC 4514 string vs. certificate subject)

const DN_ALIASES = new Map(Object.entries({
  '2.5.4.3': 'CN', COMMONNAME: 'CN',
  '2.5.4.6': 'C', COUNTRYNAME: 'C',
  '2.5.4.7': 'L', LOCALITYNAME: 'L',
  '2.5.4.8': 'ST', STATEORPROVINCENAME: 'ST', S: 'ST',
  '2.5.4.10': 'O', ORGANIZATIONNAME: 'O',
  '2.5.4.11': 'OU', ORGANIZATIONALUNITNAME: 'OU',
  '2.5.4.5': 'SERIALNUMBER',
  '2.5.4.97': 'ORGANIZATIONIDENTIFIER',
  '1.2.840.113549.1.9.1': 'EMAILADDRESS', E: 'EMAILADDRESS', EMAIL: 'EMAILADDRESS',
  '0.9.2342.19200300.100.1.25': 'DC', DOMAINCOMPONENT: 'DC',
  '0.9.2342.19200300.100.1.1': 'UID', USERID: 'UID',
}));

function normType(t) {
  const u = t.trim().replace(/^OID\./i, '').toUpperCase();
  return DN_ALIASES.get(u) ?? u;
}

function normValue(v) {
  return v.trim().replace(/\s+/g, ' ').toLowerCase();
}

function unescapeRfc4514(v) {
  let t = v.trim();
  if (t.startsWith('"') && t.endsWith('"')) t = t.slice(1, -1);
  return t.replace(/\\([0-9a-fA-F]{2}|.)/g, (_, e) => (e.length === 2
    ? String.fromCharCode(Number.parseInt(e, 16))
    : e));
}

// RFC 4514 string ("CN=a,OU=b,O=c,C=GB", '+' multi-valued RDNs flattened).
function parseRfc4514(dn) {
  const out = [];
  let cur = '';
  const flush = () => {
    if (!cur.trim()) return;
    const eq = cur.indexOf('=');
    if (eq === -1) throw new Error(`bad RDN ${cur}`);
    out.push([normType(cur.slice(0, eq)), normValue(unescapeRfc4514(cur.slice(eq + 1)))]);
    cur = '';
  };
  for (let i = 0; i < dn.length; i++) {
    const c = dn[i];
    if (c === '\\' && i + 1 < dn.length) {
      cur += c + dn[i + 1];
      i++;
    } else if (c === ',' || c === ';' || c === '+') {
      flush();
    } else {
      cur += c;
    }
  }
  flush();
  return out;
}

// Node's X509Certificate#subject: one "TYPE=value" per line, certificate order;
// values with special characters are JSON-quoted.
function parseNodeSubject(subject) {
  return subject.split('\n').filter(Boolean).map((line) => {
    const eq = line.indexOf('=');
    let value = line.slice(eq + 1);
    if (value.startsWith('"')) {
      try { value = JSON.parse(value); } catch { /* keep raw */ }
    }
    return [normType(line.slice(0, eq)), normValue(value)];
  });
}

function sameRdns(a, b) {
  return a.length === b.length && a.every(([t, v], i) => b[i][0] === t && b[i][1] === v);
}

function subjectDnMatches(cert, expected) {
  let want;
  try {
    want = parseRfc4514(expected);
  } catch {
    return false;
  }
  const have = parseNodeSubject(cert.subject);
  // RFC 4514 lists RDNs most-specific first; accept either order.
  return sameRdns(want, [...have].reverse()) || sameRdns(want, have);
}

function sanEntries(cert) {
  return (cert.subjectAltName ?? '').split(/,\s*/).filter(Boolean).map((e) => {
    const i = e.indexOf(':');
    return [e.slice(0, i).trim(), e.slice(i + 1).trim()];
  });
}

function certificateSubjectMatches(ctx, property, expected) {
  const cert = getCertificate(ctx);
  if (!cert) return false;
  switch (property) {
    case 'tls_client_auth_subject_dn':
      return subjectDnMatches(cert, expected);
    case 'tls_client_auth_san_dns':
      return sanEntries(cert).some(([k, v]) => k === 'DNS' && v.toLowerCase() === expected.toLowerCase());
    case 'tls_client_auth_san_uri':
      return sanEntries(cert).some(([k, v]) => k === 'URI' && v === expected);
    case 'tls_client_auth_san_ip':
      return sanEntries(cert).some(([k, v]) => k === 'IP Address' && v === expected);
    case 'tls_client_auth_san_email':
      return sanEntries(cert).some(([k, v]) => k === 'email' && v.toLowerCase() === expected.toLowerCase());
    default:
      return false;
  }
}

// ---------------------------------------------------------------- fault injection (test double)

function injectedError(ctx, status) {
  ctx.status = status;
  ctx.set('cache-control', 'no-store');
  ctx.body = INJECTED_ERROR;
}

async function registrationFaults(ctx, next) {
  const applied = takeFault(ctx.method, ctx.path, {
    isCreate: ctx.path === '/reg', isReplace: /^\/reg\/[^/]+$/.test(ctx.path),
  });
  if (!applied) return next();
  const { mode, delayMs, status } = applied;
  if (mode === 'error_before_create') {
    injectedError(ctx, status);
    return undefined;
  }
  if (mode === 'ignore_client_id') {
    // Behave like an RFC 7591 server that issues its own client_id whatever the request names.
    ctx.state.ignoreClientId = true;
    return next();
  }
  await next();
  if (mode === 'delay_after_create') {
    await new Promise((resolve) => { setTimeout(resolve, delayMs); });
  } else if (mode === 'error_after_create') {
    injectedError(ctx, status);
  }
  return undefined;
}

// ---------------------------------------------------------------- administrator access to RFC 7592

// Keycloak lets a bearer token of a service account with view-clients / manage-clients read and delete any
// client on its client registration endpoint; oidc-provider only takes the client's own registration access
// token there. This middleware adds Keycloak's behaviour for tokens issued to ADMIN_CLIENT_ID through the
// client_credentials grant (validated by oidc-provider itself); any other token falls through to RFC 7592.
const CLIENT_PATH = /^\/reg\/([^/]+)$/;

async function administratorAccess(ctx, next) {
  const m = CLIENT_PATH.exec(ctx.path);
  const auth = ctx.get('authorization');
  if (!m || !['GET', 'DELETE'].includes(ctx.method) || !/^bearer /i.test(auth)) return next();
  const token = await provider.ClientCredentials.find(auth.slice(7).trim());
  if (!token || token.clientId !== ADMIN_CLIENT_ID) return next();
  const clientId = decodeURIComponent(m[1]);
  ctx.set('cache-control', 'no-store');
  if (clientId === ADMIN_CLIENT_ID || clientId === INTROSPECTION_CLIENT_ID) {
    ctx.status = 403;
    ctx.body = { error: 'invalid_request', error_description: 'statically configured clients cannot be managed here' };
    return undefined;
  }
  const client = await provider.Client.find(clientId);
  if (!client) {
    ctx.status = 404;
    ctx.body = { error: 'invalid_client', error_description: 'no such client' };
    return undefined;
  }
  if (ctx.method === 'GET') {
    ctx.status = 200;
    ctx.body = client.metadata();
    return undefined;
  }
  await provider.Client.adapter.destroy(clientId);
  // Its registration access tokens die with it, as with an RFC 7592 delete.
  for (const [id, entry] of storeFor('RegistrationAccessToken')) {
    if (entry.payload.clientId === clientId) storeFor('RegistrationAccessToken').delete(id);
  }
  log(`administrator deleted client ${clientId}`);
  ctx.status = 204;
  return undefined;
}

// RFC 7591 leaves the client_id to the server; Keycloak takes one the request names. dcr-proxy names it when
// [upstream.admin] is configured, so that a client created just before a crash can still be found.
function clientIdFor(ctx) {
  const asked = ctx.oidc.body?.client_id;
  if (asked === undefined || ctx.state.ignoreClientId) return randomUUID();
  if (typeof asked !== 'string' || !/^[A-Za-z0-9._~-]{1,64}$/.test(asked)) {
    throw new errors.InvalidClientMetadata('client_id must be 1-64 URL-safe characters');
  }
  if (storeFor('Client').has(asked) || asked === ADMIN_CLIENT_ID || asked === INTROSPECTION_CLIENT_ID) {
    throw new errors.InvalidClientMetadata('client_id is already in use');
  }
  return asked;
}

// ---------------------------------------------------------------- server

let providerCallback;

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://127.0.0.1');
  } catch {
    sendJson(res, 400, { error: 'invalid_request' });
    return;
  }
  if (isTestRoute(url.pathname)) {
    handleTestRoute(req, res, url, { clientIds: registeredClientIds }).catch((err) => {
      log(`test route error: ${err.stack}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    });
    return;
  }
  recordRequest(req, url.pathname);
  if (!providerCallback) {
    sendJson(res, 503, { error: 'temporarily_unavailable' });
    return;
  }
  providerCallback(req, res);
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});

const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  adapter: MapAdapter,
  jwks: await makeJwks(),
  clients: [{
    client_id: INTROSPECTION_CLIENT_ID,
    client_secret: INTROSPECTION_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }, {
    client_id: ADMIN_CLIENT_ID,
    client_secret: ADMIN_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth'],
  scopes: SCOPES,
  responseTypes: ['code', 'code id_token'],
  enabledJWA: {
    clientAuthSigningAlgValues: SIGNING_ALGS,
    idTokenSigningAlgValues: SIGNING_ALGS,
    requestObjectSigningAlgValues: SIGNING_ALGS,
  },
  cookies: { keys: [randomUUID()] },
  extraClientMetadata: {
    // Not RFC 7591 core metadata oidc-provider knows; without this it is silently dropped.
    properties: ['software_id', 'software_version'],
    validator(ctx, key, value) {
      if (value !== undefined && (typeof value !== 'string' || !value.length)) {
        throw new errors.InvalidClientMetadata(`${key} must be a non-empty string`);
      }
    },
  },
  features: {
    devInteractions: { enabled: false },
    registration: {
      enabled: true,
      initialAccessToken: INITIAL_ACCESS_TOKEN,
      // UUID client ids, as Keycloak issues them (OB v3.1 caps client_id at 36 characters), unless the
      // request names one.
      idFactory: clientIdFor,
    },
    registrationManagement: {
      enabled: true,
      rotateRegistrationAccessToken: true,
    },
    introspection: {
      enabled: true,
      allowedPolicy(ctx, client, token) {
        return client.clientId === INTROSPECTION_CLIENT_ID || client.clientId === token.clientId;
      },
    },
    revocation: {
      enabled: true,
      allowedPolicy(ctx, client, token) {
        if (client.clientId === INTROSPECTION_CLIENT_ID || client.clientId === token.clientId) return true;
        throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
      },
    },
    clientCredentials: { enabled: true },
    // Keep client_credentials tokens opaque and audience-less.
    resourceIndicators: { enabled: false },
    // So that request_object_signing_alg and id_token_encrypted_response_* are recognised.
    requestObjects: { enabled: true, requireSignedRequestObject: false },
    encryption: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      getCertificate,
      certificateAuthorized,
      certificateSubjectMatches,
    },
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    // Tests that need a token which expires in seconds ask for it with `x-test-token-ttl` (test hook).
    ClientCredentials(ctx) {
      const asked = Number(ctx?.get?.('x-test-token-ttl'));
      return Number.isInteger(asked) && asked > 0 && asked <= 600 ? asked : 600;
    },
    IdToken: 600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
    Grant: 86400,
  },
  findAccount(ctx, sub) {
    return { accountId: sub, claims: async () => ({ sub }) };
  },
  // oidc-provider 9 passes an SSRF-guarding undici dispatcher in options.dispatcher
  // that destroys sockets to special-use addresses (loopback included). The test
  // JWKS servers live on https://127.0.0.1, so drop it and use the global one
  // (which trusts NODE_EXTRA_CA_CERTS).
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => log(`server_error ${ctx.method} ${ctx.path}: ${err.stack}`));
for (const event of ['registration_create.error', 'registration_read.error', 'registration_update.error',
  'registration_delete.error', 'grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => {
    let cause = '';
    for (let c = err.cause, depth = 0; c && depth < 5; c = c.cause, depth++) {
      cause += ` <- ${c.error_description ?? c.message ?? c}`;
    }
    const detail = err.error_detail ? ` [${err.error_detail}]` : '';
    log(`${event} ${ctx.method} ${ctx.path}: ${err.message}${err.error_description ? ` - ${err.error_description}` : ''}${detail}${cause}`);
  });
}
provider.use(registrationFaults);
provider.use(administratorAccess);
providerCallback = provider.callback();

process.stdout.write(`${JSON.stringify({ event: 'listening', port, issuer })}\n`);
log(`listening on ${issuer} (client cert header format: ${CLIENT_CERT_HEADER})`);

installShutdown(server);
