// Smoke checks for the ForgeRock / Ping AM stand-in (UPSTREAM_FLAVOUR=forgerock-am), run by smoke.mjs with its
// helpers. Each check names the AM behaviour it pins; forgerock-am.mjs says whether it is verified or assumed.
// Three stand-ins run side by side: A (defaults: RAT is the IAT and dies with it, IAT lifetime 3 s, CA-checked
// certificates), B (AM mints RATs, bound tokens off, URLs on the stand-in itself, no context path, realm "ob"),
// C (OpenAM's string-compared RAT, IAT lifetime 2 s). The IATs of A and C expire during the run.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

export async function forgerockAmChecks(h) {
  const {
    check, call, bearer, basic, admin, expectStatus, startUpstream, makeClientKeys, assertion, certHeaders, issue,
    openssl, tmp, clientPem, otherPem, clientThumbprint, IAT, INTROSPECTION,
  } = h;
  const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

  const IAT_CLIENT = { id: 'am-smoke-iat', secret: 'am-smoke-iat-secret' };
  const ADMIN_USER = { user: 'amadmin', password: 'am-smoke-admin-password' };
  const CLIENT_DN = 'CN=tpp-client-1,OU=0015800001041RbAAI,O=OpenBanking,C=GB';
  const PUBLIC = 'https://am.bank.example.test/am';
  const OAUTH2 = `${PUBLIC}/oauth2/realms/root/realms/alpha`;

  // An eIDAS-style subject (organizationIdentifier 2.5.4.97, which openssl encodes as a UTF8String) and a
  // certificate with the TPP's subject from a CA AM does not trust.
  const ORG_ID = 'PSDGB-FCA-123456';
  const eidasPem = issue('am-eidas', `/C=GB/O=Example Bank/2.5.4.97=${ORG_ID}/CN=eidas-tpp`, 'extendedKeyUsage=clientAuth\n');
  const orgIdHex = Buffer.concat([Buffer.from([0x0c, ORG_ID.length]), Buffer.from(ORG_ID)]).toString('hex');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'am-rogue.key', '-out', 'am-rogue.pem', '-days', '2',
    '-subj', '/C=GB/O=OpenBanking/OU=0015800001041RbAAI/CN=tpp-client-1');
  const roguePem = fs.readFileSync(path.join(tmp, 'am-rogue.pem'), 'utf8');
  const caFile = path.join(tmp, 'ca.pem');

  const common = {
    UPSTREAM_FLAVOUR: 'forgerock-am',
    IAT_CLIENT_ID: IAT_CLIENT.id,
    IAT_CLIENT_SECRET: IAT_CLIENT.secret,
    AM_ADMIN_USER: ADMIN_USER.user,
    AM_ADMIN_PASSWORD: ADMIN_USER.password,
  };
  let a;
  let b;
  let c;
  await check('[forgerock-am] three stand-ins start (defaults; RAT minted + bound off + self URLs; OpenAM RATs)', async () => {
    [a, b, c] = await Promise.all([
      startUpstream('nginx', { ...common, AM_IAT_LIFETIME: '3', AM_TLS_CLIENT_CA: caFile }),
      startUpstream('nginx', {
        ...common, AM_RAT_IS_IAT: 'false', AM_CERT_BOUND_TOKENS: 'false', AM_PUBLIC_URL: 'self', AM_CONTEXT_PATH: '', AM_REALM: 'ob',
      }),
      startUpstream('nginx', { ...common, AM_RAT_IS_IAT: 'openam', AM_IAT_LIFETIME: '2' }),
    ]);
  });
  if (!a || !b || !c) {
    for (const up of [a, b, c]) if (up) await up.stop();
    return;
  }

  const base = a.info.issuer;
  const i = a.info;
  const REG = `${base}${i.registration_path}`;
  const TOKEN = `${base}${i.token_path}`;
  const INTROSPECT = `${base}${i.introspection_path}`;
  const ADMIN_CLIENTS = `${base}${i.admin_clients_path}`;
  const clientUri = (id, up = a) => `${up.info.issuer}${up.info.registration_path}?client_id=${encodeURIComponent(id)}`;
  const clientIds = async (up = a) => (await call('GET', `${up.info.issuer}/__test/clients`, { headers: admin })).body;
  const iat = async (up = a, scope = 'dynamic_client_registration') => {
    const res = await call('POST', `${up.info.issuer}${up.info.token_path}`, {
      form: { grant_type: 'client_credentials', scope }, headers: basic(IAT_CLIENT.id, IAT_CLIENT.secret),
    });
    expectStatus(res, 200);
    return res.body;
  };
  const register = (json, token, up = a) => call('POST', `${up.info.issuer}${up.info.registration_path}`, { json, headers: bearer(token) });
  const introspect = (token, who = INTROSPECTION, up = a) => call('POST', `${up.info.issuer}${up.info.introspection_path}`, {
    headers: basic(who.id, who.secret), form: { token },
  });
  const tlsMeta = (dn, extra = {}) => ({
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: dn,
    tls_client_certificate_bound_access_tokens: true,
    grant_types: ['client_credentials'],
    scope: 'accounts payments',
    ...extra,
  });
  const secretMeta = (extra = {}) => ({
    token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'accounts', ...extra,
  });
  const tlsToken = (up, clientId, pem, scope = 'accounts') => call('POST', `${up.info.issuer}${up.info.token_path}`, {
    form: { grant_type: 'client_credentials', client_id: clientId, scope }, headers: pem ? { 'ssl-client-cert': encodeURIComponent(pem) } : {},
  });
  const adminSession = async (up = a) => {
    const res = await call('POST', `${up.info.issuer}${up.info.admin_authenticate_path}`, {
      headers: { 'x-openam-username': ADMIN_USER.user, 'x-openam-password': ADMIN_USER.password, 'accept-api-version': 'resource=2.0, protocol=1.0' },
    });
    expectStatus(res, 200);
    return res.body.tokenId;
  };
  const adminHeaders = (tokenId) => ({ iPlanetDirectoryPro: tokenId, 'accept-api-version': 'protocol=2.0,resource=1.0' });
  const s = {};

  // Started first so that its IAT has expired by the end of the run (checked last).
  await check('[forgerock-am] IAT = client_credentials token of the IAT client, scope dynamic_client_registration, AM_IAT_LIFETIME', async () => {
    const t = await iat();
    assert.equal(t.token_type, 'Bearer');
    assert.equal(t.scope, 'dynamic_client_registration');
    assert.equal(t.expires_in, 3);
    const reg = await register(secretMeta(), t.access_token);
    expectStatus(reg, 201);
    s.expiring = { iat: t.access_token, id: reg.body.client_id, issuedAt: Date.now() };
    const tc = await iat(c);
    const regC = await register(secretMeta(), tc.access_token, c);
    expectStatus(regC, 201);
    s.openam = { iat: tc.access_token, id: regC.body.client_id, issuedAt: Date.now() };
  });

  await check('[forgerock-am] listening line names the stand-in, AM\'s paths, public URL and issuer', () => {
    assert.equal(i.flavour, 'forgerock-am-standin');
    assert.equal(i.issuer, `http://127.0.0.1:${i.port}`);
    assert.equal(i.public_url, PUBLIC);
    assert.equal(i.oidc_issuer, OAUTH2);
    assert.equal(i.registration_path, '/am/oauth2/realms/root/realms/alpha/register');
    assert.equal(i.token_path, '/am/oauth2/realms/root/realms/alpha/access_token');
    assert.equal(i.introspection_path, '/am/oauth2/realms/root/realms/alpha/introspect');
    assert.equal(i.jwks_path, '/am/oauth2/realms/root/realms/alpha/connect/jwk_uri');
    assert.equal(i.discovery_path, '/am/oauth2/realms/root/realms/alpha/.well-known/openid-configuration');
    assert.equal(i.admin_authenticate_path, '/am/json/realms/root/authenticate');
    assert.equal(i.admin_clients_path, '/am/json/realms/root/realms/alpha/realm-config/agents/OAuth2Client');
    assert.equal(i.rat_is_iat, 'true');
    assert.match(a.stderr(), /ForgeRock AM STAND-IN \(not AM\)/);
  });

  await check('[forgerock-am] discovery on the public URL; jwk_uri publishes public keys only', async () => {
    const d = (await call('GET', `${base}${i.discovery_path}`)).body;
    assert.equal(d.issuer, OAUTH2);
    assert.equal(d.registration_endpoint, `${OAUTH2}/register`);
    assert.equal(d.token_endpoint, `${OAUTH2}/access_token`);
    assert.equal(d.introspection_endpoint, `${OAUTH2}/introspect`);
    assert.equal(d.revocation_endpoint, `${OAUTH2}/token/revoke`);
    assert.equal(d.jwks_uri, `${OAUTH2}/connect/jwk_uri`);
    assert.equal(d.tls_client_certificate_bound_access_tokens, true);
    const jwks = await call('GET', `${base}${i.jwks_path}`);
    expectStatus(jwks, 200);
    assert.ok(jwks.body.keys.length >= 2 && jwks.body.keys.every((k) => k.kid && k.d === undefined && k.p === undefined));
  });

  await check('[forgerock-am] create: 201, RAT is the IAT, registration_client_uri ?client_id= on the public URL, scope + scopes', async () => {
    const t = (await iat()).access_token;
    const res = await register(tlsMeta(CLIENT_DN, { software_id: 'am-smoke-sw' }), t);
    expectStatus(res, 201);
    const body = res.body;
    assert.match(body.client_id, /^[0-9a-f]{8}-[0-9a-f]{4}-/);
    assert.equal(body.registration_access_token, t);
    assert.equal(body.registration_client_uri, `${OAUTH2}/register?client_id=${body.client_id}`);
    assert.equal(body.scope, 'accounts payments openid');
    assert.deepEqual(body.scopes, ['accounts', 'payments', 'openid']);
    assert.equal(body.tls_client_auth_subject_dn, CLIENT_DN);
    assert.equal(body.tls_client_certificate_bound_access_tokens, true);
    assert.equal(body.token_endpoint_auth_method, 'tls_client_auth');
    assert.equal(body.client_type, 'Confidential');
    assert.equal(body.client_secret_expires_at, 0);
    assert.equal(body.software_id, 'am-smoke-sw');
    s.tls = { id: body.client_id, rat: t };
  });

  await check('[forgerock-am] the path form /register/<id> is not routed (404)', async () => {
    expectStatus(await call('GET', `${REG}/${s.tls.id}`, { headers: bearer(s.tls.rat) }), 404);
  });

  await check('[forgerock-am] GET ?client_id=: no RAT/URI in the answer; unknown client 400 invalid_client_metadata; wrong token 401', async () => {
    const res = await call('GET', clientUri(s.tls.id), { headers: bearer(s.tls.rat) });
    expectStatus(res, 200);
    assert.equal(res.body.client_id, s.tls.id);
    assert.equal(res.body.registration_access_token, undefined);
    assert.equal(res.body.registration_client_uri, undefined);
    const unknown = await call('GET', clientUri('no-such-client'), { headers: bearer(s.tls.rat) });
    expectStatus(unknown, 400);
    assert.deepEqual(unknown.body, { error_description: 'The request contains invalid metadata.', error: 'invalid_client_metadata' });
    const wrong = await call('GET', clientUri(s.tls.id), { headers: bearer('not-the-rat') });
    expectStatus(wrong, 401);
    assert.equal(wrong.body.error, 'invalid_token');
    expectStatus(await call('GET', REG, { headers: bearer(s.tls.rat) }), 400);
  });

  await check('[forgerock-am] tls_client_auth via URL-encoded PEM in ssl-client-cert (no verify header); bound token; cnf in introspection', async () => {
    const tok = await tlsToken(a, s.tls.id, clientPem);
    expectStatus(tok, 200);
    assert.equal(tok.body.token_type, 'Bearer');
    assert.equal(tok.body.expires_in, 3600);
    const intro = await introspect(tok.body.access_token);
    expectStatus(intro, 200);
    const ib = intro.body;
    assert.equal(ib.active, true);
    assert.equal(ib.client_id, s.tls.id);
    assert.equal(ib.realm, '/alpha');
    assert.equal(ib.token_type, 'Bearer');
    assert.equal(ib.scope, 'accounts');
    assert.equal(ib.iss, OAUTH2);
    assert.equal(ib.cnf?.['x5t#S256'], clientThumbprint);
    s.tlsToken = tok.body.access_token;
  });

  await check('[forgerock-am] tls_client_auth refusals: no cert, other subject, untrusted CA -> 400 invalid_client; RFC 9440 header ignored', async () => {
    for (const pem of [undefined, otherPem, roguePem]) {
      const res = await tlsToken(a, s.tls.id, pem);
      expectStatus(res, 400);
      assert.equal(res.body.error, 'invalid_client');
    }
    const rfc = await call('POST', TOKEN, {
      form: { grant_type: 'client_credentials', client_id: s.tls.id }, headers: certHeaders('rfc9440', clientPem),
    });
    expectStatus(rfc, 400);
  });

  await check('[forgerock-am] mTLSSubjectDN matched like Java X500Principal: spaces ok, order matters, 2.5.4.97 only as #hex', async () => {
    const t = (await iat()).access_token;
    const tryDn = async (dn, pem) => {
      const reg = await register(tlsMeta(dn), t);
      expectStatus(reg, 201);
      return (await tlsToken(a, reg.body.client_id, pem)).status;
    };
    assert.equal(await tryDn('CN=tpp-client-1, OU=0015800001041RbAAI, O=OpenBanking, C=GB', clientPem), 200);
    assert.equal(await tryDn('C=GB,O=OpenBanking,OU=0015800001041RbAAI,CN=tpp-client-1', clientPem), 400);
    assert.equal(await tryDn(`CN=eidas-tpp,2.5.4.97=#${orgIdHex},O=Example Bank,C=GB`, eidasPem), 200);
    assert.equal(await tryDn(`CN=eidas-tpp,2.5.4.97=${ORG_ID},O=Example Bank,C=GB`, eidasPem), 400);
    assert.equal(await tryDn(`CN=eidas-tpp,organizationIdentifier=${ORG_ID},O=Example Bank,C=GB`, eidasPem), 400);
  });

  await check('[forgerock-am] caller-provided client_id honoured; taken -> 400 invalid_client_metadata, nothing else created', async () => {
    const t = (await iat()).access_token;
    const res = await register(secretMeta({ client_id: 'am-smoke-fixed-id' }), t);
    expectStatus(res, 201);
    assert.equal(res.body.client_id, 'am-smoke-fixed-id');
    assert.equal(res.body.registration_client_uri, `${OAUTH2}/register?client_id=am-smoke-fixed-id`);
    const before = (await clientIds()).length;
    const dup = await register(secretMeta({ client_id: 'am-smoke-fixed-id' }), t);
    expectStatus(dup, 400);
    assert.deepEqual(dup.body, { error_description: 'The request contains invalid metadata.', error: 'invalid_client_metadata' });
    assert.equal((await clientIds()).length, before);
  });

  await check('[forgerock-am] scopes: outside the allowlist -> 400 "Invalid scopes requested"; none asked -> openid', async () => {
    const t = (await iat()).access_token;
    const bad = await register(secretMeta({ scope: 'accounts profile' }), t);
    expectStatus(bad, 400);
    assert.deepEqual(bad.body, { error_description: 'Invalid scopes requested', error: 'invalid_client_metadata' });
    const none = await register(secretMeta({ scope: undefined }), t);
    expectStatus(none, 201);
    assert.equal(none.body.scope, 'openid');
    assert.deepEqual(none.body.scopes, ['openid']);
  });

  await check('[forgerock-am] create without/with a bad token -> 400 access_denied "Access Token not valid"; static INITIAL_ACCESS_TOKEN works', async () => {
    const before = (await clientIds()).length;
    for (const headers of [{}, bearer('not-a-token'), bearer(s.tlsToken.slice(0, -2))]) {
      const res = await call('POST', REG, { json: secretMeta(), headers });
      expectStatus(res, 400);
      assert.deepEqual(res.body, { error_description: 'Access Token not valid', error: 'access_denied' });
    }
    assert.equal((await clientIds()).length, before);
    const harness = await register(secretMeta(), IAT);
    expectStatus(harness, 201);
    assert.equal(harness.body.registration_access_token, IAT);
  });

  await check('[forgerock-am] logo_uri needs dynamic_client_registration in the IAT; any access token registers otherwise', async () => {
    const plain = (await iat(a, '')).access_token;
    const refused = await register(secretMeta({ logo_uri: 'https://tpp.example/logo.png' }), plain);
    expectStatus(refused, 400);
    assert.equal(refused.body.error, 'invalid_client_metadata');
    expectStatus(await register(secretMeta(), plain), 201);
    const ok = await register(secretMeta({ logo_uri: 'https://tpp.example/logo.png' }), (await iat()).access_token);
    expectStatus(ok, 201);
    assert.equal(ok.body.logo_uri, 'https://tpp.example/logo.png');
  });

  await check('[forgerock-am] PUT with the RAT -> 200 and a new RAT; the old one (the IAT) is 401 now; body client_id must match', async () => {
    const t = (await iat()).access_token;
    const reg = await register(secretMeta({ client_name: 'v1' }), t);
    expectStatus(reg, 201);
    const id = reg.body.client_id;
    const mismatch = await call('PUT', clientUri(id), { json: secretMeta({ client_id: 'someone-else' }), headers: bearer(t) });
    expectStatus(mismatch, 400);
    const put = await call('PUT', clientUri(id), { json: secretMeta({ client_id: id, client_name: 'v2' }), headers: bearer(t) });
    expectStatus(put, 200);
    assert.equal(put.body.client_name, 'v2');
    assert.equal(put.body.client_secret, reg.body.client_secret);
    assert.notEqual(put.body.registration_access_token, t);
    assert.equal(put.body.registration_client_uri, `${OAUTH2}/register?client_id=${id}`);
    expectStatus(await call('GET', clientUri(id), { headers: bearer(t) }), 401);
    const got = await call('GET', clientUri(id), { headers: bearer(put.body.registration_access_token) });
    expectStatus(got, 200);
    assert.equal(got.body.client_name, 'v2');
    s.put = { id, rat: put.body.registration_access_token, secret: put.body.client_secret };
  });

  await check('[forgerock-am] introspection: POST only; other clients\' tokens only with am-introspect-all-tokens', async () => {
    expectStatus(await call('GET', `${INTROSPECT}?token=${s.tlsToken}`, { headers: basic(INTROSPECTION.id, INTROSPECTION.secret) }), 405);
    const caller = { id: s.put.id, secret: s.put.secret };
    const own = await call('POST', TOKEN, { form: { grant_type: 'client_credentials', scope: 'accounts' }, headers: basic(caller.id, caller.secret) });
    expectStatus(own, 200);
    assert.equal((await introspect(own.body.access_token, caller)).body.active, true);
    assert.deepEqual((await introspect(s.tlsToken, caller)).body, { active: false });
    assert.equal((await introspect(s.tlsToken)).body.active, true);
    const badAuth = await introspect(s.tlsToken, { id: caller.id, secret: 'wrong' });
    expectStatus(badAuth, 401);
    assert.equal(badAuth.body.error, 'invalid_client');
  });

  let tokenId;
  await check('[forgerock-am] admin: authenticate (X-OpenAM-Username/Password) -> tokenId; bad password 401; no session 401', async () => {
    const bad = await call('POST', `${base}${i.admin_authenticate_path}`, { headers: { 'x-openam-username': ADMIN_USER.user, 'x-openam-password': 'nope' } });
    expectStatus(bad, 401);
    assert.equal(bad.body.code, 401);
    tokenId = await adminSession();
    assert.ok(tokenId.length > 20);
    expectStatus(await call('GET', `${ADMIN_CLIENTS}/${s.tls.id}`), 401);
    expectStatus(await call('GET', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: adminHeaders('forged') }), 401);
  });

  await check('[forgerock-am] admin: _queryFilter=true lists every OAuth2Client; GET by id shows mTLSSubjectDN; 404 when absent', async () => {
    const list = await call('GET', `${ADMIN_CLIENTS}?_queryFilter=true`, { headers: adminHeaders(tokenId) });
    expectStatus(list, 200);
    const ids = list.body.result.map((r) => r._id);
    assert.ok(ids.includes(s.tls.id) && ids.includes(IAT_CLIENT.id) && ids.includes(INTROSPECTION.id));
    assert.equal(list.body.resultCount, ids.length);
    const flat = list.body.result.find((r) => r._id === s.tls.id);
    assert.equal(flat.signEncOAuth2ClientConfig.mTLSSubjectDN, CLIENT_DN);
    assert.equal(flat._type._id, 'OAuth2Client');
    const one = await call('GET', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: adminHeaders(tokenId) });
    expectStatus(one, 200);
    assert.deepEqual(one.body.signEncOAuth2ClientConfig.mTLSSubjectDN, { inherited: false, value: CLIENT_DN });
    assert.deepEqual(one.body.signEncOAuth2ClientConfig.mTLSCertificateBoundAccessTokens, { inherited: false, value: true });
    assert.deepEqual(one.body.advancedOAuth2ClientConfig.tokenEndpointAuthMethod, { inherited: false, value: 'tls_client_auth' });
    expectStatus(await call('GET', `${ADMIN_CLIENTS}/no-such-client`, { headers: adminHeaders(tokenId) }), 404);
  });

  await check('[forgerock-am] DELETE ?client_id= with the RAT -> 200 (not 204), empty body; afterwards 400; admin 404', async () => {
    const del = await call('DELETE', clientUri(s.put.id), { headers: bearer(s.put.rat) });
    expectStatus(del, 200);
    assert.equal(del.body, undefined);
    const after = await call('GET', clientUri(s.put.id), { headers: bearer(s.put.rat) });
    expectStatus(after, 400);
    assert.equal(after.body.error, 'invalid_client_metadata');
    expectStatus(await call('GET', `${ADMIN_CLIENTS}/${s.put.id}`, { headers: adminHeaders(tokenId) }), 404);
    assert.ok(!(await clientIds()).includes(s.put.id));
  });

  await check('[forgerock-am] admin DELETE -> 200 with the resource; the client\'s tokens die with it; again 404', async () => {
    const del = await call('DELETE', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: adminHeaders(tokenId) });
    expectStatus(del, 200);
    assert.equal(del.body._id, s.tls.id);
    assert.deepEqual(await introspect(s.tlsToken).then((r) => r.body), { active: false });
    expectStatus(await call('DELETE', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: adminHeaders(tokenId) }), 404);
    expectStatus(await call('GET', clientUri(s.tls.id), { headers: bearer(s.tls.rat) }), 400);
  });

  await check('[forgerock-am] faults on POST/PUT ?client_id=: before, after, delay, ignore_client_id', async () => {
    const fault = (body) => call('POST', `${base}/__fault/register`, { json: body, headers: admin });
    const t = (await iat()).access_token;
    let before = (await clientIds()).length;
    expectStatus(await fault({ mode: 'error_before_create', status: 503 }), 200);
    const e1 = await register(secretMeta(), t);
    expectStatus(e1, 503);
    assert.equal(e1.body.error, 'server_error');
    assert.equal((await clientIds()).length, before);
    expectStatus(await fault({ mode: 'error_after_create' }), 200);
    expectStatus(await register(secretMeta(), t), 500);
    assert.equal((await clientIds()).length, before + 1);
    expectStatus(await fault({ mode: 'ignore_client_id' }), 200);
    const ig = await register(secretMeta({ client_id: 'am-smoke-ignored' }), t);
    expectStatus(ig, 201);
    assert.notEqual(ig.body.client_id, 'am-smoke-ignored');
    expectStatus(await fault({ mode: 'delay_after_create', method: 'PUT', delay_ms: 300 }), 200);
    const t0 = Date.now();
    const put = await call('PUT', clientUri(ig.body.client_id), { json: secretMeta(), headers: bearer(t) });
    expectStatus(put, 200);
    assert.ok(Date.now() - t0 >= 300);
    before = (await call('GET', `${base}/__fault/register`, { headers: admin })).body;
    assert.equal(before.count, 0);
    const reqs = await call('GET', `${base}/__test/requests?path=${i.registration_path}`, { headers: admin });
    assert.ok(reqs.body.some((r) => r.path === i.registration_path && r.method === 'PUT'));
    assert.ok(reqs.body.every((r) => r.path.startsWith(i.registration_path)));
    const ids = await clientIds();
    assert.ok(!ids.includes(IAT_CLIENT.id) && !ids.includes(INTROSPECTION.id));
  });

  await check('[forgerock-am B] AM_RAT_IS_IAT=false: own RAT; AM_PUBLIC_URL=self, no context path, realm ob; other realm 404', async () => {
    assert.equal(b.info.registration_path, '/oauth2/realms/root/realms/ob/register');
    assert.equal(b.info.oidc_issuer, `${b.info.issuer}/oauth2/realms/root/realms/ob`);
    const t = (await iat(b)).access_token;
    const reg = await register(secretMeta(), t, b);
    expectStatus(reg, 201);
    assert.notEqual(reg.body.registration_access_token, t);
    assert.equal(reg.body.registration_client_uri, clientUri(reg.body.client_id, b));
    expectStatus(await call('GET', reg.body.registration_client_uri, { headers: bearer(reg.body.registration_access_token) }), 200);
    expectStatus(await call('GET', reg.body.registration_client_uri, { headers: bearer(t) }), 401);
    const other = await call('POST', `${b.info.issuer}/oauth2/realms/root/realms/alpha/register`, { json: secretMeta(), headers: bearer(t) });
    expectStatus(other, 404);
  });

  await check('[forgerock-am B] AM_CERT_BOUND_TOKENS=false: the client flag is stored but tokens are not bound', async () => {
    const d = (await call('GET', `${b.info.issuer}${b.info.discovery_path}`)).body;
    assert.equal(d.tls_client_certificate_bound_access_tokens, false);
    const reg = await register(tlsMeta(CLIENT_DN), IAT, b);
    expectStatus(reg, 201);
    assert.equal(reg.body.tls_client_certificate_bound_access_tokens, true);
    const tok = await tlsToken(b, reg.body.client_id, roguePem); // no AM_TLS_CLIENT_CA in B: the header is trusted
    expectStatus(tok, 200);
    const intro = await introspect(tok.body.access_token, INTROSPECTION, b);
    assert.equal(intro.body.active, true);
    assert.equal(intro.body.cnf, undefined);
  });

  await check('[forgerock-am] private_key_jwt client (jwks_uri) gets tokens with the token endpoint as audience', async () => {
    const keys = await makeClientKeys('am-pkjwt', 'PS256');
    const reg = await register(secretMeta({
      token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'PS256', jwks_uri: keys.jwksUri,
    }), IAT);
    expectStatus(reg, 201);
    assert.equal(reg.body.public_key_selector, 'jwks_uri');
    assert.ok(reg.body.client_secret, 'AM gives every confidential client a secret');
    const tok = await call('POST', TOKEN, {
      form: {
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(reg.body.client_id, keys, `${OAUTH2}/access_token`),
      },
    });
    expectStatus(tok, 200);
    const both = await register(secretMeta({ jwks_uri: keys.jwksUri, jwks: { keys: [] } }), IAT);
    expectStatus(both, 400);
    assert.equal(both.body.error_description, 'Must define either jwks or jwks_uri, not both.');
  });

  await check('[forgerock-am] the IATs expired mid-run: create -> 400 access_denied; A: RAT (=IAT) 401 but the client still exists; C (openam): RAT still works', async () => {
    const wait = Math.max(s.expiring.issuedAt + 3300, s.openam.issuedAt + 2300) - Date.now();
    if (wait > 0) await sleep(wait);
    const late = await register(secretMeta(), s.expiring.iat);
    expectStatus(late, 400);
    assert.equal(late.body.error, 'access_denied');
    const gone = await call('GET', clientUri(s.expiring.id), { headers: bearer(s.expiring.iat) });
    expectStatus(gone, 401);
    expectStatus(await call('DELETE', clientUri(s.expiring.id), { headers: bearer(s.expiring.iat) }), 401);
    const still = await call('GET', `${ADMIN_CLIENTS}/${s.expiring.id}`, { headers: adminHeaders(tokenId) });
    expectStatus(still, 200);
    assert.ok((await clientIds()).includes(s.expiring.id));
    expectStatus(await register(secretMeta(), (await iat()).access_token), 201);
    expectStatus(await register(secretMeta(), s.openam.iat, c), 400);
    const openam = await call('GET', clientUri(s.openam.id, c), { headers: bearer(s.openam.iat) });
    expectStatus(openam, 200);
  });

  await check('[forgerock-am] one stdout line each; SIGTERM -> exit 0', async () => {
    for (const up of [a, b, c]) {
      assert.equal(up.stdoutLines.length, 1);
      assert.equal((await up.stop()).code, 0);
    }
  });

  await check('[forgerock-am] RFC 9440 and envoy headers are refused in forgerock-am mode (exit 2)', async () => {
    await assert.rejects(startUpstream('rfc9440', { UPSTREAM_FLAVOUR: 'forgerock-am' }), /exited early/);
    await assert.rejects(startUpstream('envoy', { UPSTREAM_FLAVOUR: 'forgerock-am' }), /exited early/);
  });
}
