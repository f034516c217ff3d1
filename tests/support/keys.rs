//! JWS signing keys for SSAs and request JWTs, with the signing done here rather than by a JWT library so that a
//! test can put anything in the header, including what a library would refuse to produce.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaEncoding};
use aws_lc_rs::{hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

pub struct SigningKey {
    kid: String,
    inner: Inner,
    x5c: Vec<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("aws-lc-rs generates RSA-2048");
        Self::new(kid, Inner::Rsa(pair))
    }

    /// An RSA-2048 key whose public exponent is 3: a key a verifier must refuse (see [`RSA_E3_PKCS8`]).
    pub fn rsa_e3(kid: &str) -> Self {
        let der = STANDARD
            .decode(RSA_E3_PKCS8.concat())
            .expect("the fixture is base64");
        Self::from_pkcs8(kid, &der)
    }

    pub fn ec_p256(kid: &str) -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .expect("aws-lc-rs generates P-256");
        Self::from_pkcs8(kid, pkcs8.as_ref())
    }

    /// An RSA or P-256 key from PKCS#8 DER, e.g. a client certificate's `key_der`.
    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Self {
        if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
            return Self::new(kid, Inner::Rsa(pair));
        }
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .expect("PKCS#8 holds an RSA or a P-256 key");
        Self::new(kid, Inner::Ec(pair))
    }

    fn new(kid: &str, inner: Inner) -> Self {
        Self {
            kid: kid.to_owned(),
            inner,
            x5c: Vec::new(),
        }
    }

    /// The same key, whose JWK also lists `x5c` (certificate DERs, leaf first).
    pub fn with_x5c<D: AsRef<[u8]>>(mut self, chain: &[D]) -> Self {
        self.x5c = chain.iter().map(|der| STANDARD.encode(der)).collect();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> &'static str {
        match self.inner {
            Inner::Rsa(_) => "PS256",
            Inner::Ec(_) => "ES256",
        }
    }

    /// The public JWK; `use_` = None leaves `use` out.
    pub fn public_jwk(&self, use_: Option<&str>) -> Value {
        let mut jwk = match &self.inner {
            Inner::Rsa(pair) => {
                let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(&components.n),
                    "e": URL_SAFE_NO_PAD.encode(&components.e),
                })
            }
            Inner::Ec(pair) => {
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
        };
        let obj = jwk.as_object_mut().expect("a JWK is an object");
        obj.insert("kid".into(), json!(self.kid));
        obj.insert("alg".into(), json!(self.alg()));
        if let Some(use_) = use_ {
            obj.insert("use".into(), json!(use_));
        }
        if !self.x5c.is_empty() {
            obj.insert("x5c".into(), json!(self.x5c));
        }
        jwk
    }

    /// SubjectPublicKeyInfo PEM: what a careless verifier would use as the HMAC secret for `HS256`.
    pub fn public_key_pem(&self) -> String {
        let der: PublicKeyX509Der<'static> = match &self.inner {
            Inner::Rsa(pair) => pair.public_key().as_der(),
            Inner::Ec(pair) => pair.public_key().as_der(),
        }
        .expect("aws-lc-rs encodes a public key");
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// Compact JWS. The header starts as `{"alg": <key's alg>, "kid", "typ": "JWT"}`; each member of
    /// `header_overrides` replaces one, and a JSON null removes it. See [`Self::sign_raw`] for how `alg` is honoured.
    pub fn sign(&self, header_overrides: Value, claims: Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!(self.alg()));
        header.insert("kid".into(), json!(self.kid));
        header.insert("typ".into(), json!("JWT"));
        match header_overrides {
            Value::Object(overrides) => {
                for (name, value) in overrides {
                    if value.is_null() {
                        header.remove(&name);
                    } else {
                        header.insert(name, value);
                    }
                }
            }
            Value::Null => {}
            other => panic!("header overrides must be a JSON object or null, got {other}"),
        }
        let header = serde_json::to_string(&header).expect("a JSON map serialises");
        self.sign_raw_header(&header, claims)
    }

    /// Compact JWS with the header used byte for byte, e.g. to test duplicate members or malformed JSON.
    pub fn sign_raw_header(&self, header_json: &str, claims: Value) -> String {
        let payload = serde_json::to_string(&claims).expect("claims serialise");
        self.sign_raw(header_json, payload.as_bytes())
    }

    /// Compact JWS over exactly these header and payload bytes.
    ///
    /// The signature follows the header's `alg` where this key can produce it (`RS*`/`PS*` for RSA, `ES256` for
    /// P-256), so a test can make a valid signature with an algorithm the proxy must not allow. `none` gives the
    /// empty signature of an unsecured JWS; `HS*` is keyed with [`Self::public_key_pem`], the classic algorithm
    /// confusion attack. Anything else (no `alg`, an `alg` of the other key type, garbage) is signed with the key's
    /// own algorithm, so only the header lies.
    pub fn sign_raw(&self, header_json: &str, payload: &[u8]) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let alg = serde_json::from_str::<Value>(header_json)
            .ok()
            .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned));
        let signature = self.signature_for(alg.as_deref(), signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn signature_for(&self, alg: Option<&str>, msg: &[u8]) -> Vec<u8> {
        let hmac_alg = match alg {
            Some("none") => return Vec::new(),
            Some("HS256") => Some(hmac::HMAC_SHA256),
            Some("HS384") => Some(hmac::HMAC_SHA384),
            Some("HS512") => Some(hmac::HMAC_SHA512),
            _ => None,
        };
        if let Some(hmac_alg) = hmac_alg {
            let key = hmac::Key::new(hmac_alg, self.public_key_pem().as_bytes());
            return hmac::sign(&key, msg).as_ref().to_vec();
        }
        match &self.inner {
            Inner::Rsa(pair) => {
                let padding: &'static dyn RsaEncoding = match alg {
                    Some("RS256") => &signature::RSA_PKCS1_SHA256,
                    Some("RS384") => &signature::RSA_PKCS1_SHA384,
                    Some("RS512") => &signature::RSA_PKCS1_SHA512,
                    Some("PS384") => &signature::RSA_PSS_SHA384,
                    Some("PS512") => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rand::SystemRandom::new(), msg, &mut sig)
                    .expect("aws-lc-rs signs with RSA");
                sig
            }
            Inner::Ec(pair) => pair
                .sign(&rand::SystemRandom::new(), msg)
                .expect("aws-lc-rs signs with P-256")
                .as_ref()
                .to_vec(),
        }
    }
}

/// PKCS#8 DER (base64) of a test-only RSA-2048 key with public exponent 3, made once with `openssl genpkey
/// -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3`: aws-lc-rs generates only e = 65537
/// but loads and signs with this one. It protects nothing.
const RSA_E3_PKCS8: &[&str] = &[
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCx3qIKCvKCJwAZ8I1ny0bHjjuuM+aa0Dut0CPoESrPrdozCTJi",
    "1L0xF1Lvap+M/gDZjR4IOTMVgUsRAMZy3Bjfypce02uBJBYTkvi5dmrsTOaJn0r2oBUYkRWBzxKgf5C8+5nfUoiZrP7me0Jjokwi",
    "x7Q16+NWYLtRX0KrLN/cUF3UJOyyTr55WB+SULDo28vi2c8ML233XFXqfAZfM9JSiDSWslWLRME5g6TwfsSSa5+JR0qvjqN1DpWL",
    "JsCdBdFNxpC1pqpVfpEJFVZopeJQVUrFsV/byLmhocukqt0FOG1NDvwSjYyB0bMKl8wEtzF4WQFK0ScVRaL2EzDYdEFLAgEDAoIB",
    "AHaUbAax9wFvVWagXkUyLy+0J8l37xHgJ8k1bUVgxzUekXdbduyN03YPjJ+cal3+qzuzaVrQzLkA3LYAhEySuz/cZL83nQDCuWJh",
    "+yZO8fLd7wZqMfnADhBguQE0txWqYH39ET+MWxEd/0RSLEJsMsHaeCPyl47rJ4uU1xzIlT2JzKhDG+t7YVPrQU27FV7oA4+z7w2Y",
    "Akbk0qaqfFroOj/b1V1NdgHFioLWmHA9bIxzQ+SPKI41jmKd1hVPHhCpX8gx2vP8M6u0GX/xmLOrj1k9T471UiKeaEKk5inrWTIr",
    "9rG7AL5dPJn69rylrDYk3t1cDNGadYs4BXJewhJZSJsCgYEA2SupA7dK2lgWlhzhWNej1koziOAm6iGm3hu7UTrCX1qBr/us0Ulg",
    "aF3qlHyiY8PgQKHG9TMmhGmH7bQ0YpwExm13V0XlMkNA6EMt4Zy4+K0Tkv+hRfX5k6J3ZoqTSmCmIoYPIZO0n4g66VXPA6RhGAf6",
    "eoaELtebtxHTIkGF4icCgYEA0awXPxnK0iNgp4DWuALb8EEYX5ekgGteO9TA+pwVG5g8xI8RUz88CRdXK8uAPfveeRCpmKcXyXeZ",
    "5rb7sOgC+zQEcQHHKpCvgoX9D75rkp1lwG+gHrHhiZszC9s2jNlQWLxnWWFNEhKeV5nQRg8eyyRUc4nlR+zV47ix63tocj0CgYEA",
    "kMfGAnox5uVkZBNA5eUX5DF3sJVvRsEZ6WfSNicsP5GryqfIi4ZARZPxuFMW7S1AKxaEo3dvAvEFSSLNlxKt2Z5Pj4PuIYIrRYIe",
    "lmh7UHNiYf/A2U6mYmxPmbG3husZbFlfa7fNv7AnRjk0rRhAuq/8Ua8CyeUSegviFtZZQW8CgYEAi8gPf2aHNsJAb6s50AHn9YC6",
    "6mUYVZzpfTiApxK4vRAogwoLjNTSsLo6HTJVfqfppgsbuxoP26URRHn9IJqsp3gC9gEvcbXKVwP+Cn7yYb5D1Z/AFHaWW7zMspIk",
    "XeY1kH2aO5YzYWG+5RE1hAoUh22NolvuL/M5QnshR6ea9tMCgYEAvCFVJsAcViDV2eAUuVOqb4Ql7CiMXOQdxzlS2Wh1vuYVNBM5",
    "OgDOeWHUHFmPVZeGw6mA0YiBLL25SKe/hHKjPxZFZ8iG3ahmPmVxqgZVMad7/rb2/AJ64+mX1nagVXE2BrqCtyuMb1j/nubesU4V",
    "xGZjVJCf9VLLo/6kh4Pk4uY=",
];

/// `{"keys": [..]}`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}
