// Java's X500Principal as Keycloak uses it to match tls_client_auth_subject_dn: the registered DN is parsed
// like `new X500Principal(dn, keywordMap)` and both it and the certificate's subject are rendered like
// `getName(X500Principal.RFC2253, oidMap)`; the two strings must be equal.
//
// Sources (read with the project's source tools, not from memory):
//   openjdk/jdk src/java.base/share/classes/sun/security/x509/X500Name.java  parseDN, escaped, countQuotes,
//     generateRFC2253DN (RDNs printed last-to-first, joined by ',')
//   openjdk/jdk .../sun/security/x509/RDN.java  RDN(String, Map) ('+' split, quote counting),
//     toRFC2253StringInternal (non-canonical: AVAs of a multi-valued RDN keep their stored order, joined by '+')
//   openjdk/jdk .../sun/security/x509/AVA.java  AVA(Reader, DEFAULT, Map), parseString, parseQuotedString,
//     parseHexString, toRFC2253String, isDerString, and class AVAKeyword (the keyword table and getOID/getKeyword)
//   keycloak/keycloak services/.../authentication/authenticators/client/X509ClientAuthenticator.java
//     CUSTOM_OIDS / CUSTOM_OIDS_REVERSED and the exact comparison
//     `expected.getName(RFC2253, CUSTOM_OIDS).equals(cert.getSubjectX500Principal().getName(RFC2253, CUSTOM_OIDS))`
//
// Where we were unsure (see README): DerValue.isPrintableStringChar's character set is the JDK's documented
// PrintableString set (letters, digits, space and '()+,-./:=?); BMPString/T61String values are decoded as UTF-8
// exactly as AVA.toRFC2253String does, which garbles them the same way; `new DerValue(byte[])` for '#hex' is
// taken to refuse trailing bytes.

export class DnSyntaxError extends Error {}

// ---------------------------------------------------------------- DER

const TAG = {
  UTF8: 0x0c, PRINTABLE: 0x13, T61: 0x14, IA5: 0x16, GENERAL: 0x1b, BMP: 0x1e, SEQUENCE: 0x30, SET: 0x31, OID: 0x06,
};

function readTlv(buf, off, end = buf.length) {
  if (off + 2 > end) throw new Error('truncated DER');
  const tag = buf[off];
  let len = buf[off + 1];
  let p = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > end) throw new Error('unsupported DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = (len * 256) + buf[p + i];
    p += n;
  }
  if (p + len > end) throw new Error('truncated DER');
  return {
    tag, start: p, end: p + len, next: p + len,
  };
}

function encodeLength(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function derEncode(tag, content) {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

function oidToString(bytes) {
  const parts = [];
  let v = 0;
  for (const b of bytes) {
    v = (v * 128) + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) {
        const first = v < 40 ? 0 : v < 80 ? 1 : 2;
        parts.push(first, v - (first * 40));
      } else {
        parts.push(v);
      }
      v = 0;
    }
  }
  return parts.join('.');
}

// The certificate's subject as Java's X500Name(DerValue) holds it: RDNs in DER order, each a list of
// { oid, tag, content } in DER order.
export function certificateSubject(der) {
  const cert = readTlv(der, 0);
  const tbs = readTlv(der, cert.start, cert.end);
  let p = tbs.start;
  let field = readTlv(der, p, tbs.end);
  if (field.tag === 0xa0) { // [0] version
    p = field.next;
    field = readTlv(der, p, tbs.end);
  }
  // serialNumber, signature, issuer, validity, then subject
  for (let i = 0; i < 4; i++) {
    p = field.next;
    field = readTlv(der, p, tbs.end);
  }
  if (field.tag !== TAG.SEQUENCE) throw new Error('certificate subject is not a SEQUENCE');
  const names = [];
  for (let q = field.start; q < field.end;) {
    const set = readTlv(der, q, field.end);
    const avas = [];
    for (let r = set.start; r < set.end;) {
      const seq = readTlv(der, r, set.end);
      const oid = readTlv(der, seq.start, seq.end);
      const value = readTlv(der, oid.next, seq.end);
      avas.push({ oid: oidToString(der.subarray(oid.start, oid.end)), tag: value.tag, content: der.subarray(value.start, value.end) });
      r = seq.next;
    }
    names.push(avas);
    q = set.next;
  }
  return names;
}

// ---------------------------------------------------------------- keywords

// AVAKeyword's table: keyword, OID, RFC 2253 keyword? "If multiple keywords are available for one OID, order is
// significant!! Preferred *LAST*" - the later entry wins the OID -> keyword direction.
const AVA_KEYWORDS = [
  ['CN', '2.5.4.3', true], ['C', '2.5.4.6', true], ['L', '2.5.4.7', true], ['S', '2.5.4.8', false],
  ['ST', '2.5.4.8', true], ['O', '2.5.4.10', true], ['OU', '2.5.4.11', true], ['T', '2.5.4.12', false],
  ['IP', '1.3.6.1.4.1.42.2.11.2.1', false], ['STREET', '2.5.4.9', true],
  ['DC', '0.9.2342.19200300.100.1.25', true], ['DNQUALIFIER', '2.5.4.46', false], ['DNQ', '2.5.4.46', false],
  ['SURNAME', '2.5.4.4', false], ['GIVENNAME', '2.5.4.42', false], ['INITIALS', '2.5.4.43', false],
  ['GENERATION', '2.5.4.44', false], ['EMAIL', '1.2.840.113549.1.9.1', false],
  ['EMAILADDRESS', '1.2.840.113549.1.9.1', false], ['UID', '0.9.2342.19200300.100.1.1', true],
  ['SERIALNUMBER', '2.5.4.5', false],
];
const KEYWORD_TO_OID = new Map(AVA_KEYWORDS.map(([k, oid]) => [k, oid]));
const OID_TO_KEYWORD = new Map(AVA_KEYWORDS.map(([k, oid, rfc2253]) => [oid, { keyword: k, rfc2253 }]));

const EMAIL_OID = '1.2.840.113549.1.9.1';
const DC_OID = '0.9.2342.19200300.100.1.25';

// X509ClientAuthenticator.CUSTOM_OIDS (OID -> keyword used for output) and CUSTOM_OIDS_REVERSED (keyword -> OID
// accepted on input, plus "E").
export const KEYCLOAK_OID_MAP = new Map([
  ['2.5.4.5', 'SERIALNUMBER'], ['2.5.4.15', 'BUSINESSCATEGORY'],
  ['1.3.6.1.4.1.311.60.2.1.3', 'JURISDICTIONCOUNTRYNAME'], [EMAIL_OID, 'EMAILADDRESS'],
]);
export const KEYCLOAK_KEYWORD_MAP = new Map([...[...KEYCLOAK_OID_MAP].map(([oid, k]) => [k, oid]), ['E', EMAIL_OID]]);

function checkOid(s) {
  const parts = s.split('.');
  if (parts.length < 2 || parts.some((p) => !/^[0-9]+$/.test(p))) throw new DnSyntaxError(`invalid OID ${s}`);
  const first = Number(parts[0]);
  if (first > 2 || (first < 2 && Number(parts[1]) > 39)) throw new DnSyntaxError(`invalid OID ${s}`);
  return parts.map(Number).join('.');
}

// AVAKeyword.getOID for the DEFAULT format.
function keywordToOid(raw, keywordMap) {
  let keyword = raw.toUpperCase().trim();
  const extra = keywordMap.get(keyword);
  if (extra) return extra;
  const builtin = KEYWORD_TO_OID.get(keyword);
  if (builtin) return builtin;
  if (keyword.startsWith('OID.')) keyword = keyword.slice(4);
  if (!/^[0-9]/.test(keyword)) throw new DnSyntaxError(`Invalid keyword "${keyword}"`);
  return checkOid(keyword);
}

// AVAKeyword.getKeyword for RFC 2253.
function oidToKeyword(oid, oidMap) {
  const extra = oidMap.get(oid);
  if (extra) return extra;
  const builtin = OID_TO_KEYWORD.get(oid);
  return builtin?.rfc2253 ? builtin.keyword : oid;
}

// ---------------------------------------------------------------- parsing (DEFAULT format)

const HEX = '0123456789ABCDEF';
const SPECIAL_CHARS_1779 = ',=\n+<>#;\\"';
const SPECIAL_CHARS_DEFAULT = ',=\n+<>#;\\" ';
const ESCAPED_DEFAULT = ',+<>;"';

export function isPrintableStringChar(ch) {
  return /[a-zA-Z0-9 '()+,\-./:=?]/.test(ch);
}

class Reader {
  constructor(s) { this.s = s; this.i = 0; }

  read() { return this.i < this.s.length ? this.s[this.i++] : -1; }

  readChar(msg) {
    const c = this.read();
    if (c === -1) throw new DnSyntaxError(msg);
    return c;
  }
}

function isTerminator(c) { return c === -1 || c === '+' || c === ',' || c === ';'; }

function hexValue(c) { return c === -1 ? -1 : HEX.indexOf(c.toUpperCase()); }

function embeddedHexPair(c1, r) {
  if (hexValue(c1) < 0) return undefined;
  const c2 = r.readChar('unexpected EOF - escaped hex value must include two valid digits');
  if (hexValue(c2) < 0) throw new DnSyntaxError('escaped hex value must include two valid digits');
  return (hexValue(c1) << 4) + hexValue(c2);
}

function stringValue(oid, text, printable) {
  if (oid === EMAIL_OID || oid === DC_OID) return { tag: TAG.IA5, content: Buffer.from(text, 'latin1') };
  if (printable) return { tag: TAG.PRINTABLE, content: Buffer.from(text, 'latin1') };
  return { tag: TAG.UTF8, content: Buffer.from(text, 'utf8') };
}

function parseHexString(r) {
  const bytes = [];
  let b = 0;
  let n = 0;
  for (let c = r.read(); !isTerminator(c); c = r.read()) {
    const v = hexValue(c);
    if (v < 0) throw new DnSyntaxError(`AVA parse, invalid hex digit: ${c}`);
    if (n % 2 === 1) bytes.push((b * 16) + v); else b = v;
    n++;
  }
  if (n === 0) throw new DnSyntaxError('AVA parse, zero hex digits');
  if (n % 2 === 1) throw new DnSyntaxError('AVA parse, odd number of hex digits');
  const buf = Buffer.from(bytes);
  let tlv;
  try {
    tlv = readTlv(buf, 0);
  } catch (err) {
    throw new DnSyntaxError(`AVA parse, ${err.message}`);
  }
  if (tlv.next !== buf.length) throw new DnSyntaxError('AVA parse, extra data after the DER value');
  return { tag: tlv.tag, content: buf.subarray(tlv.start, tlv.end) };
}

function parseQuotedString(r, oid) {
  let c = r.readChar('Quoted string did not end in quote');
  let hex = [];
  let printable = true;
  let temp = '';
  while (c !== '"') {
    if (c === '\\') {
      c = r.readChar('Quoted string did not end in quote');
      const byte = embeddedHexPair(c, r);
      if (byte !== undefined) {
        printable = false;
        hex.push(byte);
        c = r.read();
        continue;
      }
      if (!SPECIAL_CHARS_1779.includes(c)) throw new DnSyntaxError(`Invalid escaped character in AVA: ${c}`);
    }
    if (hex.length) {
      temp += Buffer.from(hex).toString('utf8');
      hex = [];
    }
    printable &&= c !== -1 && isPrintableStringChar(c);
    temp += c === -1 ? '\uffff' : c;
    c = r.readChar('Quoted string did not end in quote');
  }
  if (hex.length) temp += Buffer.from(hex).toString('utf8');
  do { c = r.read(); } while (c === '\n' || c === ' ');
  if (c !== -1) throw new DnSyntaxError('AVA had characters other than whitespace after terminating quote');
  // Java's String.trim(): strips every char <= U+0020 at both ends.
  return stringValue(oid, temp.replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, ''), printable);
}

function parseString(r, first, oid) {
  let c = first;
  let hex = [];
  let printable = true;
  let spaces = 0;
  let temp = '';
  do {
    let escape = false;
    let skip = false;
    if (c === '\\') {
      escape = true;
      c = r.readChar('Invalid trailing backslash');
      const byte = embeddedHexPair(c, r);
      if (byte !== undefined) {
        printable = false;
        hex.push(byte);
        c = r.read();
        skip = true; // Java `continue`s straight to the loop condition
      } else if (!SPECIAL_CHARS_DEFAULT.includes(c)) {
        throw new DnSyntaxError(`Invalid escaped character in AVA: '${c}'`);
      }
    } else if (ESCAPED_DEFAULT.includes(c)) {
      throw new DnSyntaxError(`Character '${c}' in AVA appears without escape`);
    }
    if (!skip) {
      if (hex.length) {
        temp += ' '.repeat(spaces);
        spaces = 0;
        temp += Buffer.from(hex).toString('utf8');
        hex = [];
      }
      printable &&= isPrintableStringChar(c);
      if (c === ' ' && !escape) {
        spaces++;
      } else {
        temp += ' '.repeat(spaces);
        spaces = 0;
        temp += c;
      }
      c = r.read();
    }
  } while (!isTerminator(c));
  if (hex.length) temp += Buffer.from(hex).toString('utf8');
  return stringValue(oid, temp, printable);
}

function parseAva(s, keywordMap) {
  const r = new Reader(s);
  let keyword = '';
  for (let c = r.readChar('Incorrect AVA format'); c !== '='; c = r.readChar('Incorrect AVA format')) keyword += c;
  const oid = keywordToOid(keyword, keywordMap);
  let c;
  do { c = r.read(); } while (c === ' ' || c === '\n');
  if (c === -1) return { oid, ...stringValue(oid, '', true) };
  if (c === '#') return { oid, ...parseHexString(r) };
  if (c === '"') return { oid, ...parseQuotedString(r, oid) };
  return { oid, ...parseString(r, c, oid) };
}

function countQuotes(s, from, to) {
  let count = 0;
  for (let i = from; i < to; i++) {
    if ((s[i] === '"' && i === from) || (s[i] === '"' && s[i - 1] !== '\\')) count++;
  }
  return count;
}

function parseRdn(name, keywordMap) {
  const avas = [];
  let quoteCount = 0;
  let searchOffset = 0;
  let avaOffset = 0;
  let nextPlus = name.indexOf('+');
  while (nextPlus >= 0) {
    quoteCount += countQuotes(name, searchOffset, nextPlus);
    if (nextPlus > 0 && name[nextPlus - 1] !== '\\' && quoteCount !== 1) {
      const ava = name.substring(avaOffset, nextPlus);
      if (!ava.length) throw new DnSyntaxError(`empty AVA in RDN "${name}"`);
      avas.push(parseAva(ava, keywordMap));
      avaOffset = nextPlus + 1;
      quoteCount = 0;
    }
    searchOffset = nextPlus + 1;
    nextPlus = name.indexOf('+', searchOffset);
  }
  const ava = name.substring(avaOffset);
  if (!ava.length) throw new DnSyntaxError(`empty AVA in RDN "${name}"`);
  avas.push(parseAva(ava, keywordMap));
  return avas;
}

function escaped(rdnEnd, searchOffset, s) {
  if (rdnEnd === 1 && s[0] === '\\') return true;
  if (rdnEnd > 1 && s[rdnEnd - 1] === '\\' && s[rdnEnd - 2] !== '\\') return true;
  if (rdnEnd > 1 && s[rdnEnd - 1] === '\\' && s[rdnEnd - 2] === '\\') {
    let count = 0;
    for (let i = rdnEnd - 1; i >= searchOffset; i--) if (s[i] === '\\') count++;
    return count % 2 !== 0;
  }
  return false;
}

// X500Name.parseDN: RDNs returned in DER order (the string's last RDN first), like X500Name.names.
export function parseDn(input, keywordMap = KEYCLOAK_KEYWORD_MAP) {
  if (!input) return [];
  const rdns = [];
  let dnOffset = 0;
  let quoteCount = 0;
  let searchOffset = 0;
  let nextComma = input.indexOf(',');
  let nextSemi = input.indexOf(';');
  while (nextComma >= 0 || nextSemi >= 0) {
    let rdnEnd;
    if (nextSemi < 0) rdnEnd = nextComma;
    else if (nextComma < 0) rdnEnd = nextSemi;
    else rdnEnd = Math.min(nextComma, nextSemi);
    quoteCount += countQuotes(input, searchOffset, rdnEnd);
    if (rdnEnd >= 0 && quoteCount !== 1 && !escaped(rdnEnd, searchOffset, input)) {
      rdns.push(parseRdn(input.substring(dnOffset, rdnEnd), keywordMap));
      dnOffset = rdnEnd + 1;
      quoteCount = 0;
    }
    searchOffset = rdnEnd + 1;
    nextComma = input.indexOf(',', searchOffset);
    nextSemi = input.indexOf(';', searchOffset);
  }
  rdns.push(parseRdn(input.substring(dnOffset), keywordMap));
  return rdns.reverse();
}

// ---------------------------------------------------------------- RFC 2253 rendering

const DER_STRING_TAGS = new Set([TAG.PRINTABLE, TAG.T61, TAG.IA5, TAG.GENERAL, TAG.BMP, TAG.UTF8]);

function avaToRfc2253(ava, oidMap) {
  const keyword = oidToKeyword(ava.oid, oidMap);
  if (/^[0-9]/.test(keyword) || !DER_STRING_TAGS.has(ava.tag)) {
    return `${keyword}=#${derEncode(ava.tag, ava.content).toString('hex')}`;
  }
  const escapees = ',=+<>#;"\\';
  let out = '';
  for (const c of Buffer.from(ava.content).toString('utf8')) {
    if (escapees.includes(c)) {
      out += `\\${c}`;
    } else if (c === '\u0000') {
      out += '\\00';
    } else {
      out += c;
    }
  }
  // Leading and trailing ' ' / '\r' get a backslash each.
  const chars = [...out];
  let lead = 0;
  while (lead < chars.length && (chars[lead] === ' ' || chars[lead] === '\r')) lead++;
  let trail = chars.length - 1;
  while (trail >= 0 && (chars[trail] === ' ' || chars[trail] === '\r')) trail--;
  return `${keyword}=${chars.map((c, i) => (i < lead || i > trail ? `\\${c}` : c)).join('')}`;
}

// X500Name.getRFC2253Name(oidMap): last RDN first, ',' between RDNs, '+' between the AVAs of one RDN.
export function rfc2253(names, oidMap = KEYCLOAK_OID_MAP) {
  return [...names].reverse().map((avas) => avas.map((a) => avaToRfc2253(a, oidMap)).join('+')).join(',');
}

// X509ClientAuthenticator: `new X500Principal(registered, CUSTOM_OIDS_REVERSED)` (throws on a DN Java cannot
// parse), rendered and compared with the certificate subject's rendering. Throws DnSyntaxError.
export function keycloakSubjectDnMatches(certDer, registered) {
  const expected = rfc2253(parseDn(registered));
  return expected === rfc2253(certificateSubject(certDer));
}
