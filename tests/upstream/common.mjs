// Shared by both flavours of the test upstream (default.mjs: oidc-provider as it is; keycloak.mjs: the
// Keycloak stand-in): the env every flavour reads, the in-memory oidc-provider adapter, client-certificate
// header parsing helpers, the fault-injection state, the request log and the test-only routes.

import { X509Certificate, randomUUID } from 'node:crypto';

const jose = await import('jose');

// ---------------------------------------------------------------- env and logging

export function fail(msg) {
  process.stderr.write(`upstream: ${msg}\n`);
  process.exit(2);
}

export function log(...args) {
  process.stderr.write(`upstream: ${args.join(' ')}\n`);
}

export const PORT = Number.parseInt(process.env.UPSTREAM_PORT ?? '0', 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail('UPSTREAM_PORT must be 0..65535');

export const INITIAL_ACCESS_TOKEN = process.env.INITIAL_ACCESS_TOKEN;
if (!INITIAL_ACCESS_TOKEN) fail('INITIAL_ACCESS_TOKEN is required');

export const INTROSPECTION_CLIENT_ID = process.env.INTROSPECTION_CLIENT_ID || 'dcr-proxy';
export const INTROSPECTION_CLIENT_SECRET = process.env.INTROSPECTION_CLIENT_SECRET
  || 'dcr-proxy-dev-introspection-secret-not-for-production';

// A confidential client whose client_credentials tokens act as an administrator (Keycloak: a service account
// with the realm-management manage-clients role). dcr-proxy's [upstream.admin] uses it to find and remove
// clients whose registration access token it never learnt.
export const ADMIN_CLIENT_ID = process.env.ADMIN_CLIENT_ID || 'dcr-proxy-admin';
export const ADMIN_CLIENT_SECRET = process.env.ADMIN_CLIENT_SECRET
  || 'dcr-proxy-dev-admin-secret-not-for-production';

export const CLIENT_CERT_HEADER = (process.env.CLIENT_CERT_HEADER || 'rfc9440').toLowerCase();

// ---------------------------------------------------------------- storage

// Our own oidc-provider adapter: one Map per model, values { payload, expiresAt }.
const stores = new Map();

export function storeFor(model) {
  let store = stores.get(model);
  if (!store) {
    store = new Map();
    stores.set(model, store);
  }
  return store;
}

export class MapAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  #live(id) {
    const entry = this.store.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.store.delete(id);
      return undefined;
    }
    return entry;
  }

  async upsert(id, payload, expiresIn) {
    this.store.set(id, {
      payload: structuredClone(payload),
      expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined,
    });
  }

  async find(id) {
    const entry = this.#live(id);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async #findBy(prop, value) {
    for (const id of this.store.keys()) {
      const entry = this.#live(id);
      if (entry && entry.payload[prop] === value) return structuredClone(entry.payload);
    }
    return undefined;
  }

  findByUid(uid) { return this.#findBy('uid', uid); }

  findByUserCode(userCode) { return this.#findBy('userCode', userCode); }

  async consume(id) {
    const entry = this.#live(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of this.store) {
      if (entry.payload.grantId === grantId) this.store.delete(id);
    }
  }
}

// ---------------------------------------------------------------- client certificate helpers

export function pemToX509(pem) {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no PEM certificate found');
  const b64 = m[1].replace(/\s+/g, '');
  return new X509Certificate(Buffer.from(b64, 'base64'));
}

// Splits `s` on `sep` outside double-quoted strings (backslash escapes inside quotes).
export function splitOutsideQuotes(s, sep) {
  const parts = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted && c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i++;
    } else if (c === '"') {
      quoted = !quoted;
      cur += c;
    } else if (c === sep && !quoted) {
      parts.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  return parts;
}

function unquote(v) {
  const t = v.trim();
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) {
    return t.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return t;
}

// Envoy x-forwarded-client-cert: elements separated by ',', pairs by ';'.
// Returns the Cert of the last (closest proxy) element that carries one.
export function certFromXfcc(value) {
  let found;
  for (const element of splitOutsideQuotes(value, ',')) {
    for (const pair of splitOutsideQuotes(element, ';')) {
      const eq = pair.indexOf('=');
      if (eq === -1) continue;
      if (pair.slice(0, eq).trim().toLowerCase() === 'cert') {
        found = decodeURIComponent(unquote(pair.slice(eq + 1)));
      }
    }
  }
  return found;
}

// ---------------------------------------------------------------- provider keys

export async function makeJwks() {
  const keys = [];
  const rsa = await jose.generateKeyPair('PS256', { modulusLength: 2048, extractable: true });
  keys.push({ ...(await jose.exportJWK(rsa.privateKey)), kid: `rsa-${randomUUID()}`, use: 'sig' });
  const ec = await jose.generateKeyPair('ES256', { extractable: true });
  keys.push({ ...(await jose.exportJWK(ec.privateKey)), kid: `ec-${randomUUID()}`, use: 'sig', alg: 'ES256' });
  return { keys };
}

// ---------------------------------------------------------------- fault injection (test double)

const fault = {
  mode: 'none', method: 'POST', delayMs: 0, status: 500, count: 0,
};

function setFault(body) {
  // refuse_token: the create's credential is refused as if it had died (forgerock-am only).
  const modes = ['none', 'delay_after_create', 'error_after_create', 'error_before_create', 'ignore_client_id',
    'refuse_token'];
  if (!body || typeof body !== 'object' || !modes.includes(body.mode)) {
    throw new Error(`mode must be one of ${modes.join(', ')}`);
  }
  const delayMs = body.delay_ms ?? 0;
  const status = body.status ?? 500;
  const count = body.count ?? 1;
  const method = body.method ?? 'POST';
  if (!['POST', 'PUT'].includes(method)) throw new Error('method must be POST (create) or PUT (replace)');
  if (!Number.isInteger(delayMs) || delayMs < 0) throw new Error('delay_ms must be a non-negative integer');
  if (!Number.isInteger(status) || status < 100 || status > 599) throw new Error('status must be an HTTP status code');
  if (!Number.isInteger(count) || count < 0) throw new Error('count must be a non-negative integer');
  Object.assign(fault, {
    mode: body.mode, method, delayMs, status, count: body.mode === 'none' ? 0 : count,
  });
}

function faultState() {
  return {
    mode: fault.mode, method: fault.method, delay_ms: fault.delayMs, status: fault.status, count: fault.count,
  };
}

export const INJECTED_ERROR = { error: 'server_error', error_description: 'injected fault (test double)' };

// The fault to apply to this request, if any (and counts it as used). `isCreate`/`isReplace` say whether the
// request is the flavour's registration create (POST) or replace (PUT) request.
export function takeFault(method, path, { isCreate, isReplace }) {
  const target = fault.method === 'POST' ? isCreate : isReplace;
  if (method !== fault.method || !target || fault.mode === 'none' || fault.count <= 0) return undefined;
  fault.count -= 1;
  log(`fault ${fault.mode} applied to ${method} ${path} (remaining ${fault.count})`);
  return { mode: fault.mode, delayMs: fault.delayMs, status: fault.status };
}

// ---------------------------------------------------------------- request log

const REQUEST_LOG_MAX = 1000;
const requestLog = [];

export function recordRequest(req, pathname) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = v;
  requestLog.push({ method: req.method, path: pathname, headers });
  if (requestLog.length > REQUEST_LOG_MAX) requestLog.splice(0, requestLog.length - REQUEST_LOG_MAX);
}

// ---------------------------------------------------------------- plain HTTP helpers

export function sendJson(res, status, body, extraHeaders = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
    ...extraHeaders,
  });
  res.end(data);
}

export function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- test routes (outside the IdP)

export function isTestRoute(pathname) {
  return pathname.startsWith('/__test/') || pathname.startsWith('/__fault/');
}

// `clientIds()` lists the dynamically registered clients (never the static ones).
export async function handleTestRoute(req, res, url, { clientIds }) {
  if (req.headers['x-test-admin'] !== INITIAL_ACCESS_TOKEN) {
    sendJson(res, 401, { error: 'unauthorized', error_description: 'x-test-admin header required' });
    return;
  }
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /__test/clients':
      sendJson(res, 200, clientIds());
      return;
    case 'GET /__test/requests': {
      const prefix = url.searchParams.get('path') ?? '/';
      sendJson(res, 200, requestLog.filter((r) => r.path.startsWith(prefix)).slice(-50));
      return;
    }
    case 'GET /__test/blob': {
      // N MiB streamed in 64 KiB chunks with backpressure: lets tests check the proxy streams.
      const mib = Math.min(Number(url.searchParams.get('mb') ?? '1') || 1, 512);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(mib * 1024 * 1024) });
      for (let i = 0; i < mib * 16; i += 1) {
        if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
      }
      res.end();
      return;
    }
    case 'GET /__test/slow': {
      const ms = Math.min(Number(url.searchParams.get('ms') ?? '1000') || 0, 60000);
      await new Promise((r) => setTimeout(r, ms));
      sendJson(res, 200, { slept_ms: ms });
      return;
    }
    case 'GET /__fault/register':
      sendJson(res, 200, faultState());
      return;
    case 'POST /__fault/register': {
      let body;
      try {
        body = JSON.parse(await readBody(req));
        setFault(body);
      } catch (err) {
        sendJson(res, 400, { error: 'invalid_request', error_description: err.message });
        return;
      }
      log(`fault configured: ${JSON.stringify(faultState())}`);
      sendJson(res, 200, faultState());
      return;
    }
    default:
      sendJson(res, 404, { error: 'not_found' });
  }
}

// ---------------------------------------------------------------- lifecycle

export function installShutdown(server) {
  function shutdown(signal) {
    log(`${signal} received, shutting down`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
