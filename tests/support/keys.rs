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

/// `{"keys": [..]}`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}
