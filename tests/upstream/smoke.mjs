// Smoke test for the test upstream (server.mjs). Run: node tests/upstream/smoke.mjs
// Starts server.mjs as a child process (once per client-certificate header
// format), serves client JWKS over HTTPS from a loopback server whose
// certificate is issued by a throwaway CA (made with the openssl CLI), and
// exercises registration, management, tokens, introspection, revocation, the
// test inspection routes and fault injection; then the same and more for the
// Keycloak stand-in (smoke-keycloak.mjs) and the ForgeRock AM stand-in
// (smoke-forgerock-am.mjs). Exits non-zero on any failure.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  createHash, randomBytes, randomUUID, X509Certificate,
} from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import * as jose from 'jose';

const here = path.dirname(fileURLToPath(import.meta.url));
const verbose = !!process.env.SMOKE_VERBOSE;

let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`not ok - ${name}: ${err.message}`);
    if (verbose) console.log(err.stack);
  }
}

// ---------------------------------------------------------------- PKI (openssl CLI)

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dcr-upstream-smoke-'));

function openssl(...args) {
  execFileSync('openssl', args, { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
}

function issue(name, subj, ext) {
  fs.writeFileSync(path.join(tmp, `${name}.ext`), ext);
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', `${name}.pem`, '-days', '2', '-sha256', '-extfile', `${name}.ext`);
  return fs.readFileSync(path.join(tmp, `${name}.pem`), 'utf8');
}

openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
  '-sha256', '-subj', '/CN=dcr-proxy upstream smoke CA',
  '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
const serverPem = issue('server', '/CN=127.0.0.1',
  'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
const CLIENT_DN = 'CN=tpp-client-1,OU=0015800001041RbAAI,O=OpenBanking,C=GB';
const clientPem = issue('client', '/C=GB/O=OpenBanking/OU=0015800001041RbAAI/CN=tpp-client-1',
  'extendedKeyUsage=clientAuth\n');
const otherPem = issue('other', '/C=GB/O=OpenBanking/OU=0015800001041RbAAI/CN=someone-else',
  'extendedKeyUsage=clientAuth\n');
const caFile = path.join(tmp, 'ca.pem');

const clientDer = new X509Certificate(clientPem).raw;
const clientThumbprint = createHash('sha256').update(clientDer).digest('base64url');

function certHeaders(format, pem) {
  const der = new X509Certificate(pem).raw;
  switch (format) {
    case 'rfc9440':
      return { 'client-cert': `:${der.toString('base64')}:` };
    case 'nginx':
      return { 'ssl-client-cert': encodeURIComponent(pem), 'ssl-client-verify': 'SUCCESS' };
    case 'envoy': {
      const hash = createHash('sha256').update(der).digest('hex');
      const subject = new X509Certificate(pem).subject.split('\n').reverse().join(',');
      return {
        'x-forwarded-client-cert':
          `By=spiffe://proxy.test;Hash=${hash};Cert="${encodeURIComponent(pem)}";Subject="${subject}";URI=`,
      };
    }
    default:
      throw new Error(format);
  }
}

// ---------------------------------------------------------------- HTTPS JWKS server

const jwksDocs = new Map();
const jwksHits = new Map();
const jwksServer = https.createServer({
  key: fs.readFileSync(path.join(tmp, 'server.key')),
  cert: serverPem,
}, (req, res) => {
  jwksHits.set(req.url, (jwksHits.get(req.url) ?? 0) + 1);
  const doc = jwksDocs.get(req.url);
  if (!doc) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
});
jwksServer.listen(0, '127.0.0.1');
await once(jwksServer, 'listening');
const jwksBase = `https://127.0.0.1:${jwksServer.address().port}`;

async function makeClientKeys(name, alg) {
  const sig = await jose.generateKeyPair(alg, { extractable: true });
  const enc = await jose.generateKeyPair('RSA-OAEP', { extractable: true });
  const kid = `${name}-sig`;
  jwksDocs.set(`/jwks/${name}.json`, {
    keys: [
      { ...(await jose.exportJWK(sig.publicKey)), kid, use: 'sig', alg },
      { ...(await jose.exportJWK(enc.publicKey)), kid: `${name}-enc`, use: 'enc', alg: 'RSA-OAEP' },
    ],
  });
  return {
    privateKey: sig.privateKey, kid, alg, jwksUri: `${jwksBase}/jwks/${name}.json`, path: `/jwks/${name}.json`,
  };
}

// ---------------------------------------------------------------- upstream process

const IAT = randomBytes(24).toString('base64url');
const INTROSPECTION = { id: 'dcr-proxy', secret: randomBytes(24).toString('base64url') };
const ADMIN = { id: 'dcr-proxy-admin', secret: randomBytes(24).toString('base64url') };

async function startUpstream(format, extraEnv = {}) {
  const child = spawn(process.execPath, [path.join(here, 'server.mjs')], {
    env: {
      ...process.env,
      UPSTREAM_FLAVOUR: '',
      UPSTREAM_PORT: '0',
      INITIAL_ACCESS_TOKEN: IAT,
      INTROSPECTION_CLIENT_ID: INTROSPECTION.id,
      INTROSPECTION_CLIENT_SECRET: INTROSPECTION.secret,
      ADMIN_CLIENT_ID: ADMIN.id,
      ADMIN_CLIENT_SECRET: ADMIN.secret,
      CLIENT_CERT_HEADER: format,
      NODE_EXTRA_CA_CERTS: caFile,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (verbose) process.stderr.write(d);
  });
  const lines = [];
  const rl = createInterface({ input: child.stdout });
  rl.on('line', (l) => lines.push(l));
  const exited = once(child, 'exit');
  const deadline = Date.now() + 15000;
  while (!lines.length) {
    if (child.exitCode !== null) throw new Error(`upstream exited early: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`upstream did not report listening: ${stderr}`);
    await new Promise((r) => { setTimeout(r, 25); });
  }
  const info = JSON.parse(lines[0]);
  return {
    child,
    info,
    issuer: info.issuer,
    stdoutLines: lines,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      return { code, signal };
    },
  };
}

// ---------------------------------------------------------------- HTTP helpers

async function call(method, url, { headers = {}, json, form } = {}) {
  const init = { method, headers: { ...headers } };
  if (json !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.headers['content-type'] = 'application/x-www-form-urlencoded';
    init.body = new URLSearchParams(form).toString();
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let body;
  try { body = text ? JSON.parse(text) : undefined; } catch { body = text; }
  return { status: res.status, headers: res.headers, body };
}

const bearer = (t) => ({ authorization: `Bearer ${t}` });
const basic = (id, secret) => ({
  authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`,
});
const admin = { 'x-test-admin': IAT };

function expectStatus(res, status) {
  assert.equal(res.status, status, `expected HTTP ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
}

async function assertion(clientId, keys, aud) {
  return new jose.SignJWT({})
    .setProtectedHeader({ alg: keys.alg, kid: keys.kid })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(aud)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('2m')
    .sign(keys.privateKey);
}

async function pkjwtToken(up, clientId, keys, aud, scope) {
  return call('POST', `${up.issuer}/token`, {
    form: {
      grant_type: 'client_credentials',
      scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await assertion(clientId, keys, aud),
    },
  });
}

function introspect(up, token) {
  return call('POST', `${up.issuer}/token/introspection`, {
    headers: basic(INTROSPECTION.id, INTROSPECTION.secret),
    form: { token },
  });
}

function tlsClientMetadata(extra = {}) {
  return {
    redirect_uris: ['https://tpp.example/cb'],
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: CLIENT_DN,
    tls_client_certificate_bound_access_tokens: true,
    grant_types: ['client_credentials'],
    response_types: [],
    application_type: 'web',
    scope: 'accounts payments',
    software_id: 'tls-software',
    ...extra,
  };
}

// ---------------------------------------------------------------- main scenario (rfc9440)

const up = await startUpstream('rfc9440');
const { issuer } = up;
const pk = await makeClientKeys('pkjwt', 'PS256');
const native = await makeClientKeys('native', 'ES256');
const state = {};

await check('stdout carries exactly the listening line', () => {
  assert.equal(up.info.event, 'listening');
  assert.ok(Number.isInteger(up.info.port) && up.info.port > 0);
  assert.equal(up.info.issuer, `http://127.0.0.1:${up.info.port}`);
  assert.deepEqual(Object.keys(up.info), ['event', 'port', 'issuer']);
});

await check('discovery advertises the contract endpoints and capabilities', async () => {
  const res = await call('GET', `${issuer}/.well-known/openid-configuration`);
  expectStatus(res, 200);
  const d = res.body;
  assert.equal(d.issuer, issuer);
  assert.equal(d.registration_endpoint, `${issuer}/reg`);
  assert.equal(d.token_endpoint, `${issuer}/token`);
  assert.equal(d.introspection_endpoint, `${issuer}/token/introspection`);
  assert.equal(d.revocation_endpoint, `${issuer}/token/revocation`);
  assert.equal(d.jwks_uri, `${issuer}/jwks`);
  assert.equal(d.tls_client_certificate_bound_access_tokens, true);
  for (const m of ['private_key_jwt', 'tls_client_auth', 'client_secret_basic']) {
    assert.ok(d.token_endpoint_auth_methods_supported.includes(m), m);
  }
  for (const a of ['PS256', 'ES256']) assert.ok(d.token_endpoint_auth_signing_alg_values_supported.includes(a), a);
  for (const s of ['openid', 'accounts', 'payments', 'cdr:registration', 'bank:accounts.basic:read', 'offline_access']) {
    assert.ok(d.scopes_supported.includes(s), s);
  }
  assert.ok(d.grant_types_supported.includes('client_credentials'));
});

await check('registration requires the initial access token', async () => {
  const meta = tlsClientMetadata();
  expectStatus(await call('POST', `${issuer}/reg`, { json: meta }), 401);
  expectStatus(await call('POST', `${issuer}/reg`, { json: meta, headers: bearer('wrong') }), 401);
});

const pkMetadata = {
  redirect_uris: ['https://tpp.example/cb'],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'PS256',
  jwks_uri: pk.jwksUri,
  id_token_signed_response_alg: 'PS256',
  request_object_signing_alg: 'PS256',
  id_token_encrypted_response_alg: 'RSA-OAEP',
  id_token_encrypted_response_enc: 'A256GCM',
  grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
  response_types: ['code id_token', 'code'],
  application_type: 'web',
  scope: 'openid accounts payments offline_access',
  client_name: 'Smoke TPP',
  client_uri: 'https://tpp.example',
  logo_uri: 'https://tpp.example/logo.png',
  tos_uri: 'https://tpp.example/tos',
  policy_uri: 'https://tpp.example/policy',
  software_id: 'smoke-software-1',
};

await check('register private_key_jwt client (jwks_uri on https loopback) -> 201', async () => {
  const res = await call('POST', `${issuer}/reg`, { json: pkMetadata, headers: bearer(IAT) });
  expectStatus(res, 201);
  const b = res.body;
  assert.ok(b.client_id);
  assert.ok(b.registration_access_token);
  assert.equal(b.registration_client_uri, `${issuer}/reg/${b.client_id}`);
  assert.equal(b.software_id, 'smoke-software-1');
  assert.equal(b.client_secret, undefined);
  assert.equal(b.token_endpoint_auth_method, 'private_key_jwt');
  assert.equal(b.token_endpoint_auth_signing_alg, 'PS256');
  assert.equal(b.request_object_signing_alg, 'PS256');
  assert.equal(b.id_token_encrypted_response_alg, 'RSA-OAEP');
  assert.equal(b.id_token_encrypted_response_enc, 'A256GCM');
  assert.equal(b.jwks_uri, pk.jwksUri);
  assert.equal(b.scope, 'openid accounts payments offline_access');
  for (const k of ['client_name', 'client_uri', 'logo_uri', 'tos_uri', 'policy_uri']) assert.equal(b[k], pkMetadata[k], k);
  state.pk = { id: b.client_id, rat: b.registration_access_token, uri: b.registration_client_uri };
});

await check('GET registration -> 200, same RAT stays valid', async () => {
  for (let i = 0; i < 2; i++) {
    const res = await call('GET', state.pk.uri, { headers: bearer(state.pk.rat) });
    expectStatus(res, 200);
    assert.equal(res.body.client_id, state.pk.id);
    assert.equal(res.body.registration_access_token, state.pk.rat);
    assert.equal(res.body.software_id, 'smoke-software-1');
  }
});

await check('PUT registration -> 200 with rotated RAT; old RAT rejected', async () => {
  const updated = { ...pkMetadata, client_id: state.pk.id, client_name: 'Smoke TPP v2' };
  const res = await call('PUT', state.pk.uri, { json: updated, headers: bearer(state.pk.rat) });
  expectStatus(res, 200);
  assert.equal(res.body.client_name, 'Smoke TPP v2');
  assert.equal(res.body.software_id, 'smoke-software-1');
  assert.ok(res.body.registration_access_token);
  assert.notEqual(res.body.registration_access_token, state.pk.rat);
  const old = state.pk.rat;
  state.pk.rat = res.body.registration_access_token;
  expectStatus(await call('GET', state.pk.uri, { headers: bearer(old) }), 401);
  const again = await call('GET', state.pk.uri, { headers: bearer(state.pk.rat) });
  expectStatus(again, 200);
  assert.equal(again.body.registration_access_token, state.pk.rat);
});

await check('client_credentials with private_key_jwt (PS256, aud=issuer) -> opaque token', async () => {
  const before = jwksHits.get(pk.path) ?? 0;
  const res = await pkjwtToken(up, state.pk.id, pk, issuer, 'accounts');
  expectStatus(res, 200);
  assert.ok(res.body.access_token);
  assert.equal(res.body.token_type, 'Bearer');
  assert.equal(res.body.scope, 'accounts');
  assert.equal(res.body.access_token.split('.').length, 1, 'token should be opaque');
  assert.ok((jwksHits.get(pk.path) ?? 0) > before, 'upstream should have fetched jwks_uri');
  state.pkToken = res.body.access_token;
});

await check('client_credentials with aud=token endpoint also accepted', async () => {
  const res = await pkjwtToken(up, state.pk.id, pk, `${issuer}/token`, 'payments accounts');
  expectStatus(res, 200);
  assert.deepEqual(res.body.scope.split(' ').sort(), ['accounts', 'payments']);
});

await check('scope outside the client registration is rejected', async () => {
  const res = await pkjwtToken(up, state.pk.id, pk, issuer, 'fundsconfirmations');
  expectStatus(res, 400);
  assert.equal(res.body.error, 'invalid_scope');
});

await check('introspection of a private_key_jwt token: active, no cnf', async () => {
  const res = await introspect(up, state.pkToken);
  expectStatus(res, 200);
  assert.equal(res.body.active, true);
  assert.equal(res.body.client_id, state.pk.id);
  assert.equal(res.body.scope, 'accounts');
  assert.equal(res.body.cnf, undefined);
});

await check('introspection with a wrong secret -> 401 invalid_client', async () => {
  const res = await call('POST', `${issuer}/token/introspection`, {
    headers: basic(INTROSPECTION.id, 'nope'), form: { token: state.pkToken },
  });
  expectStatus(res, 401);
  assert.equal(res.body.error, 'invalid_client');
});

await check('native client with ES256 private_key_jwt registers and gets a token', async () => {
  const res = await call('POST', `${issuer}/reg`, {
    headers: bearer(IAT),
    json: {
      redirect_uris: ['https://tpp.example/native-cb'],
      application_type: 'native',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      id_token_signed_response_alg: 'ES256',
      jwks_uri: native.jwksUri,
      grant_types: ['client_credentials', 'authorization_code'],
      response_types: ['code'],
      scope: 'openid cdr:registration bank:accounts.basic:read',
      software_id: 'native-software',
    },
  });
  expectStatus(res, 201);
  assert.equal(res.body.application_type, 'native');
  state.native = { id: res.body.client_id };
  const tok = await pkjwtToken(up, state.native.id, native, issuer, 'cdr:registration');
  expectStatus(tok, 200);
  assert.equal(tok.body.scope, 'cdr:registration');
});

await check('register tls_client_auth client (subject DN, cert-bound tokens) -> 201', async () => {
  const res = await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) });
  expectStatus(res, 201);
  assert.equal(res.body.token_endpoint_auth_method, 'tls_client_auth');
  assert.equal(res.body.tls_client_auth_subject_dn, CLIENT_DN);
  assert.equal(res.body.tls_client_certificate_bound_access_tokens, true);
  assert.equal(res.body.client_secret, undefined);
  state.tls = {
    id: res.body.client_id, rat: res.body.registration_access_token, uri: res.body.registration_client_uri,
  };
});

const tlsTokenForm = () => ({ grant_type: 'client_credentials', scope: 'accounts', client_id: state.tls.id });

await check('tls_client_auth token without a certificate -> 401', async () => {
  const res = await call('POST', `${issuer}/token`, { form: tlsTokenForm() });
  expectStatus(res, 401);
  assert.equal(res.body.error, 'invalid_client');
});

await check('tls_client_auth token with a certificate of another subject -> 401', async () => {
  const res = await call('POST', `${issuer}/token`, { form: tlsTokenForm(), headers: certHeaders('rfc9440', otherPem) });
  expectStatus(res, 401);
});

await check('tls_client_auth token with Client-Cert (RFC 9440) -> 200', async () => {
  const res = await call('POST', `${issuer}/token`, { form: tlsTokenForm(), headers: certHeaders('rfc9440', clientPem) });
  expectStatus(res, 200);
  assert.equal(res.body.scope, 'accounts');
  state.tlsToken = res.body.access_token;
});

await check('introspection shows client_id, scope and cnf.x5t#S256 = cert thumbprint', async () => {
  const res = await introspect(up, state.tlsToken);
  expectStatus(res, 200);
  assert.equal(res.body.active, true);
  assert.equal(res.body.client_id, state.tls.id);
  assert.equal(res.body.scope, 'accounts');
  assert.equal(res.body.cnf?.['x5t#S256'], clientThumbprint);
});

await check('revocation by the introspection client -> 200, token inactive afterwards', async () => {
  const res = await call('POST', `${issuer}/token/revocation`, {
    headers: basic(INTROSPECTION.id, INTROSPECTION.secret), form: { token: state.tlsToken },
  });
  expectStatus(res, 200);
  const after = await introspect(up, state.tlsToken);
  expectStatus(after, 200);
  assert.equal(after.body.active, false);
});

await check('/__test/clients lists registered clients (not the introspection client)', async () => {
  expectStatus(await call('GET', `${issuer}/__test/clients`), 401);
  expectStatus(await call('GET', `${issuer}/__test/clients`, { headers: { 'x-test-admin': 'wrong' } }), 401);
  const res = await call('GET', `${issuer}/__test/clients`, { headers: admin });
  expectStatus(res, 200);
  assert.ok(Array.isArray(res.body));
  for (const id of [state.pk.id, state.native.id, state.tls.id]) assert.ok(res.body.includes(id), id);
  assert.ok(!res.body.includes(INTROSPECTION.id));
  state.clientCount = res.body.length;
});

await check('/__test/requests shows headers that reached the upstream', async () => {
  const res = await call('GET', `${issuer}/__test/requests?path=/token`, { headers: admin });
  expectStatus(res, 200);
  assert.ok(res.body.length > 0 && res.body.length <= 50);
  assert.ok(res.body.every((r) => r.path.startsWith('/token')));
  const withCert = res.body.filter((r) => r.method === 'POST' && r.path === '/token' && r.headers['client-cert']);
  assert.ok(withCert.length >= 1, 'expected a POST /token carrying client-cert');
  assert.deepEqual(Object.keys(res.body[0]).sort(), ['headers', 'method', 'path']);
  assert.ok(Object.keys(res.body[0].headers).every((h) => h === h.toLowerCase()));
  const none = await call('GET', `${issuer}/__test/requests?path=/nothing-here`, { headers: admin });
  assert.deepEqual(none.body, []);
});

async function clientCount() {
  return (await call('GET', `${issuer}/__test/clients`, { headers: admin })).body.length;
}

async function setFault(body) {
  const res = await call('POST', `${issuer}/__fault/register`, { json: body, headers: admin });
  expectStatus(res, 200);
  return res.body;
}

await check('fault API requires x-test-admin and validates input', async () => {
  expectStatus(await call('POST', `${issuer}/__fault/register`, { json: { mode: 'none' } }), 401);
  expectStatus(await call('POST', `${issuer}/__fault/register`, { json: { mode: 'bogus' }, headers: admin }), 400);
});

await check('fault error_before_create -> status, no client created', async () => {
  await setFault({ mode: 'error_before_create', status: 503, count: 1 });
  const before = await clientCount();
  const res = await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) });
  expectStatus(res, 503);
  assert.equal(res.body.error, 'server_error');
  assert.equal(await clientCount(), before);
});

await check('fault error_after_create -> status, client created anyway', async () => {
  await setFault({ mode: 'error_after_create', status: 500, count: 2 });
  const before = await clientCount();
  for (let i = 0; i < 2; i++) {
    expectStatus(await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) }), 500);
  }
  assert.equal(await clientCount(), before + 2);
  // count exhausted: next registration is normal again
  expectStatus(await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) }), 201);
  assert.equal(await clientCount(), before + 3);
});

await check('fault delay_after_create -> delayed 201', async () => {
  await setFault({ mode: 'delay_after_create', delay_ms: 400, count: 1 });
  const t0 = Date.now();
  const res = await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) });
  expectStatus(res, 201);
  assert.ok(Date.now() - t0 >= 400, `took ${Date.now() - t0} ms`);
  const state1 = (await call('GET', `${issuer}/__fault/register`, { headers: admin })).body;
  assert.equal(state1.count, 0);
});

await check('fault mode none clears pending faults', async () => {
  await setFault({ mode: 'error_before_create', status: 502, count: 5 });
  await setFault({ mode: 'none' });
  expectStatus(await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) }), 201);
});

async function adminToken() {
  const res = await call('POST', `${issuer}/token`, {
    headers: basic(ADMIN.id, ADMIN.secret), form: { grant_type: 'client_credentials' },
  });
  expectStatus(res, 200);
  return res.body.access_token;
}

await check('a client_id named in the registration is used; a taken one is refused', async () => {
  const wanted = randomUUID();
  const res = await call('POST', `${issuer}/reg`, { json: { ...tlsClientMetadata(), client_id: wanted }, headers: bearer(IAT) });
  expectStatus(res, 201);
  assert.equal(res.body.client_id, wanted);
  assert.equal(res.body.registration_client_uri, `${issuer}/reg/${wanted}`);
  const again = await call('POST', `${issuer}/reg`, { json: { ...tlsClientMetadata(), client_id: wanted }, headers: bearer(IAT) });
  expectStatus(again, 400);
  assert.equal(again.body.error, 'invalid_client_metadata');
  state.named = { id: wanted, rat: res.body.registration_access_token };
});

await check('fault ignore_client_id -> the named client_id is not used', async () => {
  await setFault({ mode: 'ignore_client_id', count: 1 });
  const wanted = randomUUID();
  const res = await call('POST', `${issuer}/reg`, { json: { ...tlsClientMetadata(), client_id: wanted }, headers: bearer(IAT) });
  expectStatus(res, 201);
  assert.notEqual(res.body.client_id, wanted);
});

await check('the admin client reads and deletes any client on RFC 7592; other tokens do not', async () => {
  const uri = `${issuer}/reg/${state.named.id}`;
  // A token of another confidential client is not an administrator's.
  const other = await call('POST', `${issuer}/token`, {
    headers: basic(INTROSPECTION.id, INTROSPECTION.secret), form: { grant_type: 'client_credentials' },
  });
  expectStatus(other, 200);
  expectStatus(await call('DELETE', uri, { headers: bearer(other.body.access_token) }), 401);
  const token = await adminToken();
  const read = await call('GET', uri, { headers: bearer(token) });
  expectStatus(read, 200);
  assert.equal(read.body.client_id, state.named.id);
  assert.equal(read.body.registration_access_token, undefined);
  expectStatus(await call('DELETE', uri, { headers: bearer(token) }), 204);
  expectStatus(await call('DELETE', uri, { headers: bearer(token) }), 404);
  // Its own registration access token died with it.
  expectStatus(await call('GET', uri, { headers: bearer(state.named.rat) }), 401);
  expectStatus(await call('DELETE', `${issuer}/reg/${ADMIN.id}`, { headers: bearer(token) }), 403);
});

await check('fault method PUT delays a replacement after it took effect', async () => {
  const res = await call('POST', `${issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) });
  expectStatus(res, 201);
  await setFault({ mode: 'delay_after_create', method: 'PUT', delay_ms: 300, count: 1 });
  const t0 = Date.now();
  const body = { ...tlsClientMetadata(), client_id: res.body.client_id, client_name: 'renamed' };
  const put = await call('PUT', res.body.registration_client_uri, { json: body, headers: bearer(res.body.registration_access_token) });
  expectStatus(put, 200);
  assert.ok(Date.now() - t0 >= 300, `took ${Date.now() - t0} ms`);
  assert.equal((await call('GET', `${issuer}/__fault/register`, { headers: admin })).body.count, 0);
});

await check('DELETE registration -> 204; GET afterwards -> 401', async () => {
  const res = await call('DELETE', state.pk.uri, { headers: bearer(state.pk.rat) });
  expectStatus(res, 204);
  expectStatus(await call('GET', state.pk.uri, { headers: bearer(state.pk.rat) }), 401);
  const list = (await call('GET', `${issuer}/__test/clients`, { headers: admin })).body;
  assert.ok(!list.includes(state.pk.id));
});

await check('no further stdout output after the listening line', () => {
  assert.equal(up.stdoutLines.length, 1, up.stdoutLines.join('\n'));
});

await check('SIGTERM -> clean exit (code 0)', async () => {
  const { code } = await up.stop();
  assert.equal(code, 0);
});

// ---------------------------------------------------------------- other header formats

for (const format of ['nginx', 'envoy']) {
  let other;
  await check(`[${format}] cert-bound tls_client_auth token, cnf in introspection`, async () => {
    other = await startUpstream(format);
    const reg = await call('POST', `${other.issuer}/reg`, { json: tlsClientMetadata(), headers: bearer(IAT) });
    expectStatus(reg, 201);
    const form = { grant_type: 'client_credentials', scope: 'payments', client_id: reg.body.client_id };
    // The RFC 9440 header is ignored in this mode.
    expectStatus(await call('POST', `${other.issuer}/token`, { form, headers: certHeaders('rfc9440', clientPem) }), 401);
    if (format === 'nginx') {
      const unverified = { ...certHeaders('nginx', clientPem), 'ssl-client-verify': 'FAILED:unable to verify' };
      expectStatus(await call('POST', `${other.issuer}/token`, { form, headers: unverified }), 401);
    }
    const tok = await call('POST', `${other.issuer}/token`, { form, headers: certHeaders(format, clientPem) });
    expectStatus(tok, 200);
    const intro = await introspect(other, tok.body.access_token);
    assert.equal(intro.body.active, true);
    assert.equal(intro.body.scope, 'payments');
    assert.equal(intro.body.cnf?.['x5t#S256'], clientThumbprint);
  });
  if (other) {
    await check(`[${format}] SIGTERM -> clean exit`, async () => {
      assert.equal((await other.stop()).code, 0);
    });
  }
}

// ---------------------------------------------------------------- Keycloak stand-in (UPSTREAM_FLAVOUR=keycloak)

const { keycloakChecks } = await import('./smoke-keycloak.mjs');
await keycloakChecks({
  check, call, bearer, basic, admin, expectStatus, startUpstream, makeClientKeys, assertion, certHeaders, issue,
  openssl, tmp, clientPem, otherPem, caPem: fs.readFileSync(caFile, 'utf8'), clientThumbprint, IAT, INTROSPECTION, ADMIN,
});

// ---------------------------------------------------------------- ForgeRock AM stand-in (UPSTREAM_FLAVOUR=forgerock-am)

const { forgerockAmChecks } = await import('./smoke-forgerock-am.mjs');
await forgerockAmChecks({
  check, call, bearer, basic, admin, expectStatus, startUpstream, makeClientKeys, assertion, certHeaders, issue,
  openssl, tmp, clientPem, otherPem, clientThumbprint, IAT, INTROSPECTION,
});

jwksServer.close();
fs.rmSync(tmp, { recursive: true, force: true });

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
