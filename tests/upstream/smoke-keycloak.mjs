// Smoke checks for the Keycloak stand-in (UPSTREAM_FLAVOUR=keycloak), run by smoke.mjs with its helpers.
// Each check names the Keycloak behaviour it pins; keycloak.mjs names the source.

import assert from 'node:assert/strict';
import { createHash, randomUUID, X509Certificate } from 'node:crypto';
import * as http from 'node:http';

import * as jose from 'jose';

export async function keycloakChecks(h) {
  const {
    check, call, bearer, basic, admin, expectStatus, startUpstream, makeClientKeys, assertion, certHeaders, issue,
    clientPem, otherPem, caPem, clientThumbprint, IAT, INTROSPECTION, ADMIN,
  } = h;

  // An eIDAS-style certificate: organizationIdentifier (2.5.4.97), which openssl encodes as a UTF8String.
  const EIDAS_ORG_ID = 'PSDGB-FCA-123456';
  const eidasPem = issue('eidas', `/C=GB/O=Example Bank/2.5.4.97=${EIDAS_ORG_ID}/CN=eidas-tpp`,
    'extendedKeyUsage=clientAuth\n');
  const eidasDer = new X509Certificate(eidasPem).raw;
  const eidasThumbprint = createHash('sha256').update(eidasDer).digest('base64url');
  const orgIdHex = Buffer.concat([Buffer.from([0x0c, EIDAS_ORG_ID.length]), Buffer.from(EIDAS_ORG_ID)]).toString('hex');
  const CLIENT_DN = 'CN=tpp-client-1,OU=0015800001041RbAAI,O=OpenBanking,C=GB';

  const up = await startUpstream('rfc9440', {
    UPSTREAM_FLAVOUR: 'keycloak',
    KEYCLOAK_INTROSPECTION_AUDIENCE_CHECK: 'client-exempt',
  });
  const base = up.info.issuer;
  const i = up.info;
  const REG = `${base}${i.registration_path}`;
  const ADMIN_CLIENTS = `${base}${i.admin_clients_path}`;
  const TOKEN = `${base}${i.token_path}`;
  const FRONT = 'https://bank.example.test';
  const OIDC_ISSUER = `${FRONT}/realms/dcr`;
  const FRONT_TOKEN = `${FRONT}${i.token_path}`;
  const pk = await makeClientKeys('kc-pkjwt', 'PS256');
  const s = {};

  const clientIds = async () => (await call('GET', `${base}/__test/clients`, { headers: admin })).body;
  const register = (json, token = IAT) => call('POST', REG, { json, headers: bearer(token) });
  const introspect = (token, who = INTROSPECTION) => call('POST', `${base}${i.introspection_path}`, {
    headers: basic(who.id, who.secret), form: { token },
  });
  const ccToken = (auth, form = {}, headers = {}) => call('POST', TOKEN, {
    form: { grant_type: 'client_credentials', ...form }, headers: { ...auth, ...headers },
  });
  const adminToken = async () => {
    const res = await ccToken(basic(ADMIN.id, ADMIN.secret));
    expectStatus(res, 200);
    return res.body.access_token;
  };
  const pkjwtForm = async (clientId, keys, aud = FRONT_TOKEN) => ({
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await assertion(clientId, keys, aud),
  });
  const tlsMeta = (dn, extra = {}) => ({
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: dn,
    tls_client_certificate_bound_access_tokens: true,
    grant_types: ['client_credentials'],
    response_types: [],
    scope: 'accounts payments',
    ...extra,
  });
  const pkMeta = (extra = {}) => ({
    redirect_uris: ['https://tpp.example/cb'],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'PS256',
    jwks_uri: pk.jwksUri,
    grant_types: ['client_credentials', 'authorization_code'],
    response_types: ['code'],
    scope: 'openid accounts payments',
    client_name: 'KC Smoke TPP',
    software_id: 'kc-smoke-software',
    software_version: '1.0',
    contacts: ['ops@tpp.example'],
    application_type: 'web',
    ...extra,
  });
  const jwtClaims = (t) => jose.decodeJwt(t);

  await check('[keycloak] listening line names the stand-in, the local base and Keycloak\'s issuer', () => {
    assert.equal(i.event, 'listening');
    assert.equal(i.flavour, 'keycloak-standin');
    assert.equal(i.issuer, `http://127.0.0.1:${i.port}`);
    assert.equal(i.oidc_issuer, OIDC_ISSUER);
    assert.equal(i.realm, 'dcr');
    assert.match(up.stderr(), /Keycloak STAND-IN \(not Keycloak\)/);
  });

  await check('[keycloak] discovery: realm paths on the frontend hostname, mtls aliases include registration', async () => {
    const res = await call('GET', `${base}${i.discovery_path}`);
    expectStatus(res, 200);
    const d = res.body;
    assert.equal(d.issuer, OIDC_ISSUER);
    assert.equal(d.token_endpoint, FRONT_TOKEN);
    assert.equal(d.introspection_endpoint, `${FRONT}/realms/dcr/protocol/openid-connect/token/introspect`);
    assert.equal(d.revocation_endpoint, `${FRONT}/realms/dcr/protocol/openid-connect/revoke`);
    assert.equal(d.jwks_uri, `${FRONT}/realms/dcr/protocol/openid-connect/certs`);
    assert.equal(d.registration_endpoint, `${FRONT}/realms/dcr/clients-registrations/openid-connect`);
    assert.equal(d.pushed_authorization_request_endpoint, `${FRONT}/realms/dcr/protocol/openid-connect/ext/par/request`);
    assert.equal(d.mtls_endpoint_aliases.registration_endpoint, d.registration_endpoint);
    for (const k of ['token_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'userinfo_endpoint', 'pushed_authorization_request_endpoint']) {
      assert.equal(d.mtls_endpoint_aliases[k], d[k], k);
    }
    assert.equal(d.tls_client_certificate_bound_access_tokens, true);
    expectStatus(await call('GET', `${base}/realms/other/.well-known/openid-configuration`), 404);
    expectStatus(await call('GET', `${base}/.well-known/openid-configuration`), 404);
  });

  await check('[keycloak] DCR without a token meets Trusted Hosts (403); a bad token is 401 "Failed decode token"', async () => {
    const before = (await clientIds()).length;
    const anon = await call('POST', REG, { json: pkMeta() });
    expectStatus(anon, 403);
    assert.equal(anon.body.error, 'insufficient_scope');
    assert.equal(anon.body.error_description,
      "Policy 'Trusted Hosts' rejected request to client-registration service. Details: Host not trusted.");
    const bad = await register(pkMeta(), 'not-a-token');
    expectStatus(bad, 401);
    assert.deepEqual(bad.body, { error: 'invalid_token', error_description: 'Failed decode token' });
    assert.equal((await clientIds()).length, before);
  });

  await check('[keycloak] DCR refuses a named client_id: 400 "Client Identifier included", nothing created', async () => {
    const before = (await clientIds()).length;
    const res = await register({ ...pkMeta(), client_id: randomUUID() });
    expectStatus(res, 400);
    assert.deepEqual(res.body, { error: 'invalid_client_metadata', error_description: 'Client Identifier included' });
    assert.equal((await clientIds()).length, before);
  });

  await check('[keycloak] DCR private_key_jwt -> 201: UUID id, Location on the frontend, dropped and derived fields', async () => {
    const res = await register(pkMeta());
    expectStatus(res, 201);
    const b = res.body;
    assert.match(b.client_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(b.registration_client_uri, `${FRONT}/realms/dcr/clients-registrations/openid-connect/${b.client_id}`);
    assert.equal(res.headers.get('location'), b.registration_client_uri);
    assert.ok(Number.isInteger(b.client_id_issued_at));
    assert.ok(b.registration_access_token.split('.').length === 3, 'RAT is a JWT');
    assert.equal(jwtClaims(b.registration_access_token).typ, 'RegistrationAccessToken');
    for (const gone of ['software_id', 'software_version', 'contacts', 'application_type', 'client_secret']) {
      assert.equal(b[gone], undefined, gone);
    }
    assert.deepEqual(b.response_types, ['code', 'none']);
    assert.deepEqual(b.grant_types, ['authorization_code', 'client_credentials', 'refresh_token']);
    assert.equal(b.tls_client_certificate_bound_access_tokens, false);
    assert.equal(b.token_endpoint_auth_method, 'private_key_jwt');
    assert.equal(b.token_endpoint_auth_signing_alg, 'PS256');
    assert.equal(b.jwks_uri, pk.jwksUri);
    // "openid" is allowed by the policy but is no client scope: ignored silently.
    assert.equal(b.scope, 'accounts payments');
    s.pk = { id: b.client_id, rat: b.registration_access_token, uri: `${REG}/${b.client_id}` };
  });

  await check('[keycloak] DCR conversion failures -> 400 "Client metadata invalid", nothing created', async () => {
    const before = (await clientIds()).length;
    for (const meta of [
      pkMeta({ jwks: { keys: [] } }),
      pkMeta({ jwks_uri: undefined }),
      pkMeta({ token_endpoint_auth_method: 'self_signed_tls_client_auth' }),
      pkMeta({ response_types: ['code bogus'] }),
    ]) {
      const res = await register(meta);
      expectStatus(res, 400);
      assert.deepEqual(res.body, { error: 'invalid_client_metadata', error_description: 'Client metadata invalid' });
    }
    assert.equal((await clientIds()).length, before);
  });

  await check('[keycloak] scope policy: "email" is no allowed optional scope -> 403 insufficient_scope, nothing created', async () => {
    const before = (await clientIds()).length;
    const res = await register(pkMeta({ scope: 'openid accounts email' }));
    expectStatus(res, 403);
    assert.equal(res.body.error, 'insufficient_scope');
    assert.equal(res.body.error_description,
      "Policy 'Allowed Client Scopes' rejected request to client-registration service. Details: Not permitted to use specified clientScope");
    assert.equal((await clientIds()).length, before);
  });

  await check('[keycloak] DCR without scope/grant_types: realm default scopes, password grant on', async () => {
    const res = await register({ token_endpoint_auth_method: 'client_secret_basic', redirect_uris: ['https://tpp.example/cb'] });
    expectStatus(res, 201);
    assert.ok(res.body.client_secret);
    assert.equal(res.body.client_secret_expires_at, 0);
    assert.deepEqual(res.body.grant_types, ['authorization_code', 'password', 'refresh_token']);
    assert.deepEqual(res.body.scope.split(' ').sort(), ['address', 'microprofile-jwt', 'offline_access', 'phone']);
  });

  await check('[keycloak] RAT: GET keeps it, PUT rotates it (old -> 401), stale and unknown alike 401', async () => {
    for (let n = 0; n < 2; n++) {
      const res = await call('GET', s.pk.uri, { headers: bearer(s.pk.rat) });
      expectStatus(res, 200);
      assert.equal(res.body.registration_access_token, s.pk.rat);
      assert.equal(res.body.registration_client_uri, `${FRONT}/realms/dcr/clients-registrations/openid-connect/${s.pk.id}`);
    }
    const put = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, client_name: 'KC Smoke TPP v2' }), headers: bearer(s.pk.rat) });
    expectStatus(put, 200);
    assert.equal(put.body.client_name, 'KC Smoke TPP v2');
    assert.notEqual(put.body.registration_access_token, s.pk.rat);
    const stale = await call('GET', s.pk.uri, { headers: bearer(s.pk.rat) });
    const unknown = await call('GET', `${REG}/${randomUUID()}`, { headers: bearer(put.body.registration_access_token) });
    expectStatus(stale, 401);
    expectStatus(unknown, 401);
    assert.deepEqual(stale.body, unknown.body);
    assert.equal(stale.body.error, 'invalid_token');
    s.pk.rat = put.body.registration_access_token;
  });

  await check('[keycloak] PUT: client_id must equal the path (400 "Client Identifier modified"); scope without client_id -> 500', async () => {
    const modified = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: randomUUID(), scope: undefined }), headers: bearer(s.pk.rat) });
    expectStatus(modified, 400);
    assert.deepEqual(modified.body, { error: 'invalid_client_metadata', error_description: 'Client Identifier modified' });
    const noId = await call('PUT', s.pk.uri, { json: pkMeta(), headers: bearer(s.pk.rat) });
    expectStatus(noId, 500);
    // Neither rotated the RAT.
    expectStatus(await call('GET', s.pk.uri, { headers: bearer(s.pk.rat) }), 200);
  });

  await check('[keycloak] PUT meets the scope policy too: a new disallowed scope -> 403, kept scopes pass', async () => {
    const denied = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, scope: 'accounts email' }), headers: bearer(s.pk.rat) });
    expectStatus(denied, 403);
    assert.equal(denied.body.error, 'insufficient_scope');
    const kept = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, scope: 'accounts' }), headers: bearer(s.pk.rat) });
    expectStatus(kept, 200);
    assert.equal(kept.body.scope, 'accounts');
    s.pk.rat = kept.body.registration_access_token;
    const back = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, client_name: 'KC Smoke TPP v2' }), headers: bearer(s.pk.rat) });
    expectStatus(back, 200);
    assert.equal(back.body.scope, 'accounts payments');
    s.pk.rat = back.body.registration_access_token;
  });

  await check('[keycloak] Bearer with manage-clients: create 201, GET/PUT without RAT and no rotation, unknown 404', async () => {
    const token = await adminToken();
    const created = await register(pkMeta(), token);
    expectStatus(created, 201);
    const get = await call('GET', s.pk.uri, { headers: bearer(token) });
    expectStatus(get, 200);
    assert.equal(get.body.registration_access_token, undefined);
    const put = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, scope: undefined }), headers: bearer(token) });
    expectStatus(put, 200);
    assert.equal(put.body.registration_access_token, undefined);
    expectStatus(await call('GET', s.pk.uri, { headers: bearer(s.pk.rat) }), 200);
    const missing = await call('GET', `${REG}/${randomUUID()}`, { headers: bearer(token) });
    expectStatus(missing, 404);
    assert.deepEqual(missing.body, { error: 'invalid_request', error_description: 'Client not found' });
    const gone = await call('DELETE', `${REG}/${randomUUID()}`, { headers: bearer(token) });
    expectStatus(gone, 404);
  });

  await check('[keycloak] a Bearer without realm-management roles -> 403 insufficient_scope "Forbidden"', async () => {
    const res = await ccToken(basic(INTROSPECTION.id, INTROSPECTION.secret));
    expectStatus(res, 200);
    for (const r of [
      await call('GET', s.pk.uri, { headers: bearer(res.body.access_token) }),
      await register(pkMeta(), res.body.access_token),
      await call('DELETE', s.pk.uri, { headers: bearer(res.body.access_token) }),
    ]) {
      expectStatus(r, 403);
      assert.deepEqual(r.body, { error: 'insufficient_scope', error_description: 'Forbidden' });
    }
  });

  await check('[keycloak] private_key_jwt token: a Keycloak JWT (typ Bearer, azp, scope) signed by /certs', async () => {
    const res = await ccToken({}, { ...(await pkjwtForm(s.pk.id, pk)), scope: 'accounts' });
    expectStatus(res, 200);
    assert.equal(res.body.token_type, 'Bearer');
    assert.equal(res.body.refresh_expires_in, 0);
    assert.equal(res.body.scope, 'accounts');
    const certs = await call('GET', `${base}${i.jwks_path}`);
    const { payload, protectedHeader } = await jose.jwtVerify(res.body.access_token, jose.createLocalJWKSet(certs.body), { issuer: OIDC_ISSUER });
    assert.equal(protectedHeader.typ, 'JWT');
    assert.equal(protectedHeader.alg, 'RS256');
    assert.equal(payload.typ, 'Bearer');
    assert.equal(payload.azp, s.pk.id);
    assert.equal(payload.scope, 'accounts');
    assert.equal(payload.cnf, undefined);
    s.pkToken = res.body.access_token;
    const bad = await ccToken({}, { ...(await pkjwtForm(s.pk.id, pk)), scope: 'fundsconfirmations' });
    expectStatus(bad, 400);
    assert.deepEqual(bad.body, { error: 'invalid_scope', error_description: 'Invalid scopes: fundsconfirmations' });
  });

  await check('[keycloak] private_key_jwt with cert-bound tokens and no certificate -> 400 HoK binding missing', async () => {
    const reg = await register(pkMeta({ tls_client_certificate_bound_access_tokens: true }));
    expectStatus(reg, 201);
    const res = await ccToken({}, await pkjwtForm(reg.body.client_id, pk));
    expectStatus(res, 400);
    assert.deepEqual(res.body, { error: 'invalid_request', error_description: 'Client Certification missing for MTLS HoK Token Binding' });
  });

  await check('[keycloak] client without service accounts: client_credentials -> 401 unauthorized_client', async () => {
    const reg = await register({ token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code'], redirect_uris: ['https://tpp.example/cb'] });
    expectStatus(reg, 201);
    const res = await ccToken(basic(reg.body.client_id, reg.body.client_secret));
    expectStatus(res, 401);
    assert.deepEqual(res.body, { error: 'unauthorized_client', error_description: 'Client not enabled to retrieve service account' });
  });

  await check('[keycloak] tls_client_auth: 201 stores the DN; no / wrong certificate -> 401; RFC 9440 cert -> cnf', async () => {
    const reg = await register(tlsMeta(CLIENT_DN));
    expectStatus(reg, 201);
    assert.equal(reg.body.tls_client_auth_subject_dn, CLIENT_DN);
    assert.equal(reg.body.tls_client_certificate_bound_access_tokens, true);
    s.tls = { id: reg.body.client_id, rat: reg.body.registration_access_token };
    const form = { client_id: s.tls.id, scope: 'accounts' };
    for (const headers of [{}, certHeaders('rfc9440', otherPem)]) {
      const res = await ccToken({}, form, headers);
      expectStatus(res, 401);
      assert.deepEqual(res.body, { error: 'invalid_client', error_description: 'Invalid client or Invalid client credentials' });
    }
    const ok = await ccToken({}, form, certHeaders('rfc9440', clientPem));
    expectStatus(ok, 200);
    assert.equal(jwtClaims(ok.body.access_token).cnf['x5t#S256'], clientThumbprint);
    s.tlsToken = ok.body.access_token;
    assert.match(up.stderr(), /option 'x509.casubjectdn' is null or empty/);
  });

  await check('[keycloak] RFC 9440 lookup: two Client-Cert headers, or a chain over the length limit -> no certificate', async () => {
    const form = { client_id: s.tls.id };
    const der = (pem) => `:${new X509Certificate(pem).raw.toString('base64')}:`;
    const okChain = await ccToken({}, form, { 'client-cert': der(clientPem), 'client-cert-chain': der(caPem) });
    expectStatus(okChain, 200);
    const longChain = await ccToken({}, form, { 'client-cert': der(clientPem), 'client-cert-chain': `${der(caPem)}, ${der(caPem)}` });
    expectStatus(longChain, 401);
    // fetch() folds repeated headers into one; node:http sends an array as separate header lines.
    const status = await new Promise((resolve, reject) => {
      const body = new URLSearchParams({ grant_type: 'client_credentials', ...form }).toString();
      const req = http.request(TOKEN, {
        method: 'POST',
        headers: { 'client-cert': [der(clientPem), der(clientPem)], 'content-type': 'application/x-www-form-urlencoded' },
      }, (res) => { res.resume(); resolve(res.statusCode); });
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(status, 401);
  });

  await check('[keycloak] eIDAS DN: organizationIdentifier= fails by keyword, 2.5.4.97=#<DER> works, 2.5.4.97=<text> mismatches', async () => {
    const byKeyword = await register(tlsMeta(`CN=eidas-tpp,organizationIdentifier=${EIDAS_ORG_ID},O=Example Bank,C=GB`));
    expectStatus(byKeyword, 201); // DCR stores the DN unparsed
    const kw = await ccToken({}, { client_id: byKeyword.body.client_id }, certHeaders('rfc9440', eidasPem));
    expectStatus(kw, 400);
    assert.deepEqual(kw.body, { error: 'unauthorized_client', error_description: 'Unexpected error when authenticating client' });
    const byOid = await register(tlsMeta(`CN=eidas-tpp,2.5.4.97=#${orgIdHex},O=Example Bank,C=GB`));
    const ok = await ccToken({}, { client_id: byOid.body.client_id }, certHeaders('rfc9440', eidasPem));
    expectStatus(ok, 200);
    assert.equal(jwtClaims(ok.body.access_token).cnf['x5t#S256'], eidasThumbprint);
    const asText = await register(tlsMeta(`CN=eidas-tpp,2.5.4.97=${EIDAS_ORG_ID},O=Example Bank,C=GB`));
    expectStatus(await ccToken({}, { client_id: asText.body.client_id }, certHeaders('rfc9440', eidasPem)), 401);
  });

  await check('[keycloak] introspection (introspection client exempt from the audience check): client_id, scope, cnf', async () => {
    const res = await introspect(s.tlsToken);
    expectStatus(res, 200);
    assert.equal(res.body.active, true);
    assert.equal(res.body.client_id, s.tls.id);
    assert.equal(res.body.azp, s.tls.id);
    assert.equal(res.body.scope, 'accounts');
    assert.equal(res.body.token_type, 'Bearer');
    assert.equal(res.body.cnf['x5t#S256'], clientThumbprint);
    // The token's own client is not in its aud either: inactive.
    const self = await call('POST', `${base}${i.introspection_path}`, { form: { token: s.pkToken, ...(await pkjwtForm(s.pk.id, pk, OIDC_ISSUER)) } });
    expectStatus(self, 200);
    assert.deepEqual(self.body, { active: false });
    const wrong = await introspect(s.tlsToken, { id: INTROSPECTION.id, secret: 'nope' });
    expectStatus(wrong, 401);
    assert.deepEqual(wrong.body, { error: 'invalid_request', error_description: 'Authentication failed.' });
    // A public client may not introspect at all.
    const pub = await register({ token_endpoint_auth_method: 'none', redirect_uris: ['https://tpp.example/cb'] });
    expectStatus(pub, 201);
    assert.equal(pub.body.token_endpoint_auth_method, 'none');
    const refused = await call('POST', `${base}${i.introspection_path}`, { form: { token: s.tlsToken, client_id: pub.body.client_id } });
    expectStatus(refused, 403);
    assert.deepEqual(refused.body, { error: 'invalid_request', error_description: 'Client not allowed.' });
  });

  await check('[keycloak] revocation: only the caller\'s own tokens (400 "Unmatching clients"), then inactive', async () => {
    const other = await call('POST', `${base}${i.revocation_path}`, { headers: basic(INTROSPECTION.id, INTROSPECTION.secret), form: { token: s.tlsToken } });
    expectStatus(other, 400);
    assert.deepEqual(other.body, { error: 'invalid_request', error_description: 'Unmatching clients' });
    const own = await call('POST', `${base}${i.revocation_path}`, { form: { token: s.pkToken, ...(await pkjwtForm(s.pk.id, pk)) } });
    expectStatus(own, 200);
    const after = await introspect(s.pkToken);
    assert.deepEqual(after.body, { active: false });
  });

  await check('[keycloak] Admin REST auth: no token 401, a token without roles 403', async () => {
    const none = await call('GET', ADMIN_CLIENTS);
    expectStatus(none, 401);
    const intro = await ccToken(basic(INTROSPECTION.id, INTROSPECTION.secret));
    const forbidden = await call('GET', ADMIN_CLIENTS, { headers: bearer(intro.body.access_token) });
    expectStatus(forbidden, 403);
    expectStatus(await call('GET', `${ADMIN_CLIENTS}/${s.pk.id}`, { headers: bearer(intro.body.access_token) }), 403);
  });

  await check('[keycloak] Admin REST list: clientId exact, search substring, first/max; attributes as DCR stored them', async () => {
    const token = await adminToken();
    const exact = await call('GET', `${ADMIN_CLIENTS}?clientId=${s.tls.id}`, { headers: bearer(token) });
    expectStatus(exact, 200);
    assert.equal(exact.body.length, 1);
    const c = exact.body[0];
    assert.equal(c.id, s.tls.id);
    assert.equal(c.clientId, s.tls.id);
    assert.equal(c.clientAuthenticatorType, 'client-x509');
    assert.equal(c.attributes['x509.subjectdn'], CLIENT_DN);
    assert.equal(c.attributes['x509.allow.regex.pattern.comparison'], 'false');
    assert.equal(c.attributes['tls.client.certificate.bound.access.tokens'], 'true');
    assert.deepEqual(c.optionalClientScopes, ['accounts', 'payments']);
    assert.ok(c.defaultClientScopes.includes('basic'));
    const pkRep = (await call('GET', `${ADMIN_CLIENTS}?clientId=${s.pk.id}`, { headers: bearer(token) })).body[0];
    // The Bearer PUT above sent client_name 'KC Smoke TPP' again.
    assert.equal(pkRep.name, 'KC Smoke TPP');
    assert.deepEqual(pkRep.redirectUris, ['https://tpp.example/cb']);
    assert.equal(pkRep.attributes['jwks.url'], pk.jwksUri);
    assert.equal(pkRep.attributes['use.jwks.url'], 'true');
    assert.equal(pkRep.attributes['token.endpoint.auth.signing.alg'], 'PS256');
    const all = (await call('GET', ADMIN_CLIENTS, { headers: bearer(token) })).body;
    for (const builtin of ['account', 'admin-cli', 'realm-management', ADMIN.id]) {
      assert.ok(all.some((x) => x.clientId === builtin), builtin);
    }
    const sorted = all.map((x) => x.clientId);
    assert.deepEqual(sorted, [...sorted].sort());
    const page = (await call('GET', `${ADMIN_CLIENTS}?first=1&max=2`, { headers: bearer(token) })).body;
    assert.deepEqual(page.map((x) => x.clientId), sorted.slice(1, 3));
    const byAttr = (await call('GET', `${ADMIN_CLIENTS}?q=${encodeURIComponent(`jwks.url:${pk.jwksUri}`)}`, { headers: bearer(token) })).body;
    assert.ok(byAttr.length >= 1 && byAttr.every((x) => x.attributes['jwks.url'] === pk.jwksUri));
    const search = (await call('GET', `${ADMIN_CLIENTS}?search=true&clientId=${s.tls.id.slice(2, 10).toUpperCase()}`, { headers: bearer(token) })).body;
    assert.ok(search.some((x) => x.id === s.tls.id));
  });

  await check('[keycloak] Admin REST: mint a fresh RAT (old one 401), GET/DELETE by id (then 404, RAT dead)', async () => {
    const token = await adminToken();
    const minted = await call('POST', `${ADMIN_CLIENTS}/${s.tls.id}/registration-access-token`, { headers: bearer(token) });
    expectStatus(minted, 200);
    assert.equal(minted.body.id, s.tls.id);
    const fresh = minted.body.registrationAccessToken;
    expectStatus(await call('GET', `${REG}/${s.tls.id}`, { headers: bearer(s.tls.rat) }), 401);
    expectStatus(await call('GET', `${REG}/${s.tls.id}`, { headers: bearer(fresh) }), 200);
    const one = await call('GET', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: bearer(token) });
    expectStatus(one, 200);
    assert.equal(one.body.clientId, s.tls.id);
    expectStatus(await call('DELETE', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: bearer(token) }), 204);
    const again = await call('GET', `${ADMIN_CLIENTS}/${s.tls.id}`, { headers: bearer(token) });
    expectStatus(again, 404);
    assert.deepEqual(again.body, { error: 'Could not find client' });
    expectStatus(await call('GET', `${REG}/${s.tls.id}`, { headers: bearer(fresh) }), 401);
    assert.ok(!(await clientIds()).includes(s.tls.id));
  });

  const setFault = async (body) => expectStatus(await call('POST', `${base}/__fault/register`, { json: body, headers: admin }), 200);

  await check('[keycloak] faults on the Keycloak registration endpoint: before / after create, delay, none', async () => {
    let before = (await clientIds()).length;
    await setFault({ mode: 'error_before_create', status: 503 });
    const pre = await register(pkMeta());
    expectStatus(pre, 503);
    assert.equal(pre.body.error, 'server_error');
    assert.equal((await clientIds()).length, before);
    await setFault({ mode: 'error_after_create', status: 500 });
    expectStatus(await register(pkMeta()), 500);
    assert.equal((await clientIds()).length, before + 1);
    await setFault({ mode: 'delay_after_create', delay_ms: 300 });
    const t0 = Date.now();
    expectStatus(await register(pkMeta()), 201);
    assert.ok(Date.now() - t0 >= 300);
    await setFault({ mode: 'error_before_create', count: 3 });
    await setFault({ mode: 'none' });
    before = (await clientIds()).length;
    expectStatus(await register(pkMeta()), 201);
    assert.equal((await clientIds()).length, before + 1);
  });

  await check('[keycloak] fault method PUT and ignore_client_id', async () => {
    await setFault({ mode: 'delay_after_create', method: 'PUT', delay_ms: 300 });
    const t0 = Date.now();
    const put = await call('PUT', s.pk.uri, { json: pkMeta({ client_id: s.pk.id, scope: undefined }), headers: bearer(s.pk.rat) });
    expectStatus(put, 200);
    assert.ok(Date.now() - t0 >= 300);
    s.pk.rat = put.body.registration_access_token;
    await setFault({ mode: 'ignore_client_id' });
    const named = randomUUID();
    const res = await register({ ...pkMeta(), client_id: named });
    expectStatus(res, 201);
    assert.notEqual(res.body.client_id, named);
  });

  await check('[keycloak] DELETE with the RAT -> 204, then 401; /__test routes see Keycloak paths', async () => {
    expectStatus(await call('DELETE', s.pk.uri, { headers: bearer(s.pk.rat) }), 204);
    expectStatus(await call('GET', s.pk.uri, { headers: bearer(s.pk.rat) }), 401);
    const reqs = await call('GET', `${base}/__test/requests?path=/realms/dcr/clients-registrations`, { headers: admin });
    expectStatus(reqs, 200);
    assert.ok(reqs.body.length > 0 && reqs.body.every((r) => r.path.startsWith('/realms/dcr/clients-registrations')));
    const ids = await clientIds();
    assert.ok(!ids.includes(INTROSPECTION.id) && !ids.includes(ADMIN.id) && !ids.includes('account'));
  });

  await check('[keycloak] one stdout line; SIGTERM -> exit 0', async () => {
    assert.equal(up.stdoutLines.length, 1);
    assert.equal((await up.stop()).code, 0);
  });

  // nginx lookup, the default introspection audience check, a custom realm and hostname.
  let ng;
  await check('[keycloak nginx] ssl-client-cert without ssl-client-verify is used; audience check makes introspection inactive', async () => {
    ng = await startUpstream('nginx', {
      UPSTREAM_FLAVOUR: 'keycloak', KEYCLOAK_REALM: 'ob', KEYCLOAK_HOSTNAME: 'https://idp.bank.test:8443',
    });
    assert.equal(ng.info.oidc_issuer, 'https://idp.bank.test:8443/realms/ob');
    const nb = ng.info.issuer;
    const reg = await call('POST', `${nb}${ng.info.registration_path}`, { json: tlsMeta(CLIENT_DN), headers: bearer(IAT) });
    expectStatus(reg, 201);
    assert.match(reg.body.registration_client_uri, /^https:\/\/idp\.bank\.test:8443\/realms\/ob\/clients-registrations\/openid-connect\//);
    const form = { grant_type: 'client_credentials', client_id: reg.body.client_id };
    const unverified = { ...certHeaders('nginx', clientPem), 'ssl-client-verify': 'FAILED:unable to verify' };
    const tok = await call('POST', `${nb}${ng.info.token_path}`, { form, headers: unverified });
    expectStatus(tok, 200);
    assert.equal(jwtClaims(tok.body.access_token).cnf['x5t#S256'], clientThumbprint);
    const intro = await call('POST', `${nb}${ng.info.introspection_path}`, { headers: basic(INTROSPECTION.id, INTROSPECTION.secret), form: { token: tok.body.access_token } });
    expectStatus(intro, 200);
    assert.deepEqual(intro.body, { active: false });
    assert.match(ng.stderr(), /is not in the token audience/);
  });
  if (ng) {
    await check('[keycloak nginx] SIGTERM -> exit 0', async () => {
      assert.equal((await ng.stop()).code, 0);
    });
  }

  await check('[keycloak] KEYCLOAK_HOSTNAME=self puts Keycloak\'s URLs on the stand-in itself', async () => {
    const self = await startUpstream('rfc9440', { UPSTREAM_FLAVOUR: 'keycloak', KEYCLOAK_HOSTNAME: 'self' });
    try {
      assert.equal(self.info.oidc_issuer, `${self.info.issuer}/realms/dcr`);
      const reg = await call('POST', `${self.info.issuer}${self.info.registration_path}`, { json: pkMeta(), headers: bearer(IAT) });
      expectStatus(reg, 201);
      assert.ok(reg.body.registration_client_uri.startsWith(`${self.info.issuer}/realms/dcr/`));
      expectStatus(await call('GET', reg.body.registration_client_uri, { headers: bearer(reg.body.registration_access_token) }), 200);
    } finally {
      await self.stop();
    }
  });

  await check('[keycloak] envoy is refused in keycloak mode (exit 2)', async () => {
    await assert.rejects(startUpstream('envoy', { UPSTREAM_FLAVOUR: 'keycloak' }), /exited early/);
  });
}
