//! JWKS fetch and cache: keys parsed once per fetch, one fetch per URL however many callers, bounded staleness.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::Method;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use moka::ops::compute::{CompResult, Op};
use url::Url;

use crate::echo::echo;
use crate::outbound::{HttpClient, OutboundError, redact_url};

/// The smallest RSA modulus a signature is checked with: RFC 7518 §3.3 and §3.5 ("A key of size 2048 bits or
/// larger MUST be used"). aws-lc's verifier refuses smaller ones too; checking here names the reason.
const MIN_RSA_BITS: usize = 2048;
/// The only RSA public exponent accepted, big-endian: 65537. Small exponents such as 3 are what the classic
/// signature forgeries against lax PKCS#1 verifiers need, and no key generator in use today produces them.
const RSA_EXPONENT: &[u8] = &[1, 0, 1];

/// `[jwks]`: how software statement and TPP key sets are fetched and how long they are trusted.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub ttl: Duration,
    pub stale_for: Duration,
    pub refetch_interval: Duration,
    pub max_urls: u64,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum JwksError {
    #[error("JWKS at {url} could not be fetched: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("JWKS at {url} is not a valid JWK Set: {reason}")]
    Invalid { url: String, reason: String },
    #[error("no key with kid `{kid}` in the JWKS at {url}")]
    UnknownKid { url: String, kid: String },
    #[error("key `{kid}` in the JWKS at {url} cannot verify {alg:?}: {reason}")]
    Unsuitable {
        url: String,
        kid: String,
        alg: Algorithm,
        reason: String,
    },
}

/// One key of a set, with its verifier built at fetch time rather than per request.
pub struct Key {
    pub kid: Option<String>,
    pub use_: Option<String>,
    pub alg: Option<String>,
    /// RFC 7517 §4.3 `key_ops`, when the key lists them (entries that are not strings are dropped).
    pub key_ops: Option<Vec<String>>,
    pub jwk: Jwk,
    decoding: Option<DecodingKey>,
    /// Why an RSA key is too weak to verify anything, judged once when the set is parsed.
    rsa_weakness: Option<String>,
    /// DER of the first `x5c` certificate, if any: OB software JWKS list transport certificates this way.
    pub x5c_leaf: Option<Vec<u8>>,
}

pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses `{"keys": [...]}`; a key we cannot use (unknown kty, symmetric) is skipped, not fatal,
    /// because real sets mix signing, encryption and TLS keys.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let arr = v
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("no `keys` array")?;
        let mut keys = Vec::with_capacity(arr.len());
        for raw in arr {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let decoding = DecodingKey::from_jwk(&jwk).ok();
            let x5c_leaf = raw
                .get("x5c")
                .and_then(|x| x.as_array())
                .and_then(|a| a.first())
                .and_then(|c| c.as_str())
                .and_then(|c| STANDARD.decode(c).ok());
            if decoding.is_none() && x5c_leaf.is_none() {
                continue;
            }
            let rsa_weakness = match &jwk.algorithm {
                AlgorithmParameters::RSA(rsa) => rsa_strength(&rsa.n, &rsa.e).err(),
                _ => None,
            };
            keys.push(Key {
                kid: raw.get("kid").and_then(|k| k.as_str()).map(str::to_string),
                use_: raw.get("use").and_then(|k| k.as_str()).map(str::to_string),
                alg: raw.get("alg").and_then(|k| k.as_str()).map(str::to_string),
                key_ops: raw.get("key_ops").map(|ops| {
                    ops.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|o| o.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                }),
                jwk,
                decoding,
                rsa_weakness,
                x5c_leaf,
            });
        }
        Ok(KeySet { keys })
    }

    fn find(&self, kid: &str) -> Option<&Key> {
        // A TLS or encryption key may share a kid with a signing key in OB sets: prefer the one meant for
        // signatures, else return the other so that `suitable` can say why it does not verify.
        let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
        let first = named.clone().next();
        named.find(|k| k.meant_for_signatures()).or(first)
    }

    /// Does any key with `use` = `tls` carry exactly this certificate as `x5c[0]`?
    pub fn has_tls_certificate(&self, der: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            k.use_.as_deref() == Some("tls")
                && k.x5c_leaf
                    .as_deref()
                    .is_some_and(|c| crate::secret::ct_eq(c, der))
        })
    }
}

impl Key {
    fn meant_for_signatures(&self) -> bool {
        self.use_.as_deref().is_none_or(|u| u == "sig")
            && self
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == "verify"))
    }
}

/// Checks that a key may verify `alg`: right key type and curve, `use` = sig and `key_ops` ∋ verify when given,
/// `alg` equal when given, and an RSA key of at least 2048 bits with exponent 65537.
fn suitable(key: &Key, alg: Algorithm) -> Result<&DecodingKey, String> {
    if let Some(u) = &key.use_
        && u != "sig"
    {
        return Err(format!("its `use` is `{}`, not `sig`", echo(u)));
    }
    if let Some(ops) = &key.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        let ops: Vec<String> = ops.iter().map(|o| echo(o).to_string()).collect();
        return Err(format!(
            "its `key_ops` are [{}], which do not include `verify`",
            ops.join(", ")
        ));
    }
    if let Some(a) = &key.alg
        && a != &format!("{alg:?}")
    {
        return Err(format!("it is declared for `{}`", echo(a)));
    }
    if let Some(why) = &key.rsa_weakness {
        return Err(why.clone());
    }
    let fits = match (&key.jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    };
    if !fits {
        return Err("its key type does not fit the algorithm".into());
    }
    key.decoding
        .as_ref()
        .ok_or_else(|| "its key material is malformed".to_string())
}

/// The RSA rules of [`suitable`], on the JWK's base64url `n` and `e` (leading zero octets ignored).
fn rsa_strength(n: &str, e: &str) -> Result<(), String> {
    let decode = |v: &str| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok();
    let (Some(n), Some(e)) = (decode(n), decode(e)) else {
        return Err("its key material is malformed".into());
    };
    let significant = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let n = significant(&n);
    let bits = n
        .first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "its RSA modulus has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if significant(&e) != RSA_EXPONENT {
        return Err("its RSA public exponent is not 65537".into());
    }
    Ok(())
}

#[derive(Clone)]
struct Entry {
    keys: Arc<KeySet>,
    fetched_at: Instant,
    /// Last time we went to the network for this URL, successful or not; a failing endpoint is
    /// retried at most once per refetch_interval while a stale copy is served.
    attempted_at: Instant,
    /// Last refetch forced by an unknown kid. The first unknown kid after a normal fetch refetches at
    /// once (a key rotated just after our fetch must work); further ones wait refetch_interval.
    refetched_at: Option<Instant>,
}

pub struct JwksCache {
    http: HttpClient,
    cache: moka::future::Cache<String, Entry>,
    cfg: JwksConfig,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl JwksCache {
    pub fn new(cfg: JwksConfig) -> Result<Self, String> {
        let http = HttpClient::new(
            cfg.ca_bundle.as_deref(),
            cfg.connect_timeout,
            cfg.timeout,
            true,
        )?;
        let cache = moka::future::Cache::builder()
            .max_capacity(cfg.max_urls)
            // Past ttl + stale_for an entry is useless even as a fallback.
            .time_to_live(cfg.ttl + cfg.stale_for)
            .build();
        Ok(JwksCache {
            http,
            cache,
            cfg,
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Network fetches so far (for metrics and the coalescing test).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The key set at `url`: fresh from cache, else fetched once for all concurrent callers,
    /// else a stale copy while the endpoint is failing and the copy is younger than ttl + stale_for.
    pub async fn get(&self, url: &Url) -> Result<Arc<KeySet>, JwksError> {
        self.get_inner(url, false).await
    }

    /// The verifier for `kid`; an unknown kid triggers one refetch, at most once per refetch_interval.
    pub async fn key_for(
        &self,
        url: &Url,
        kid: &str,
        alg: Algorithm,
    ) -> Result<(DecodingKey, Arc<KeySet>), JwksError> {
        let mut set = self.get_inner(url, false).await?;
        if set.find(kid).is_none() {
            set = self.get_inner(url, true).await?;
        }
        let key = set.find(kid).ok_or_else(|| JwksError::UnknownKid {
            url: redact_url(url),
            kid: echo(kid).to_string(),
        })?;
        let dk = suitable(key, alg)
            .map_err(|reason| JwksError::Unsuitable {
                url: redact_url(url),
                kid: echo(kid).to_string(),
                alg,
                reason,
            })?
            .clone();
        Ok((dk, set))
    }

    async fn get_inner(&self, url: &Url, refresh: bool) -> Result<Arc<KeySet>, JwksError> {
        let now = Instant::now();
        if let Some(e) = self.cache.get(url.as_str()).await
            && !self.should_fetch(&e, refresh, now)
        {
            crate::metrics::METRICS.jwks_cache_hits.inc();
            return Ok(e.keys);
        }
        let mut failure: Option<JwksError> = None;
        let result = self
            .cache
            .entry(url.as_str().to_string())
            .and_compute_with(|current| {
                let failure = &mut failure;
                async move {
                    let current = current.map(|e| e.into_value());
                    let now = Instant::now();
                    // Another caller may have refreshed while we waited for the key lock.
                    if let Some(e) = &current
                        && !self.should_fetch(e, refresh, now)
                    {
                        return Op::Nop;
                    }
                    match self.fetch(url).await {
                        Ok(keys) => Op::Put(Entry {
                            keys: Arc::new(keys),
                            fetched_at: now,
                            attempted_at: now,
                            refetched_at: refresh.then_some(now),
                        }),
                        Err(err) => {
                            tracing::warn!(jwks_url = %redact_url(url), error = %err, "JWKS fetch failed");
                            *failure = Some(err);
                            match current {
                                Some(mut e) => {
                                    e.attempted_at = now;
                                    if refresh {
                                        e.refetched_at = Some(now);
                                    }
                                    Op::Put(e)
                                }
                                None => Op::Nop,
                            }
                        }
                    }
                }
            })
            .await;
        let entry = match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                Some(e.into_value())
            }
            CompResult::Removed(_) | CompResult::StillNone(_) => None,
        };
        match entry {
            Some(e) if now.duration_since(e.fetched_at) < self.cfg.ttl + self.cfg.stale_for => {
                if failure.is_some() {
                    tracing::warn!(jwks_url = %redact_url(url), age_s = now.duration_since(e.fetched_at).as_secs(), "serving a stale JWKS");
                }
                Ok(e.keys)
            }
            _ => Err(failure.unwrap_or_else(|| JwksError::Unavailable {
                url: redact_url(url),
                reason: "no usable copy".into(),
            })),
        }
    }

    fn should_fetch(&self, e: &Entry, refresh: bool, now: Instant) -> bool {
        let within = |t: Instant| now.duration_since(t) < self.cfg.refetch_interval;
        if refresh {
            !e.refetched_at.is_some_and(within)
        } else {
            let fresh = now.duration_since(e.fetched_at) < self.cfg.ttl;
            !fresh && !within(e.attempted_at)
        }
    }

    async fn fetch(&self, url: &Url) -> Result<KeySet, JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        crate::metrics::METRICS.jwks_fetches.inc();
        let r = self.fetch_once(url).await;
        if r.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            crate::metrics::METRICS.jwks_fetch_failures.inc();
        }
        r
    }

    async fn fetch_once(&self, url: &Url) -> Result<KeySet, JwksError> {
        let unavailable = |reason: String| JwksError::Unavailable {
            url: redact_url(url),
            reason,
        };
        if url.scheme() != "https" {
            return Err(unavailable("only https JWKS URLs are fetched".into()));
        }
        let mut target = url.clone();
        // Same-origin redirects are followed (some hosts add a trailing slash); another host never is,
        // since that would let whoever controls a redirect choose the keys.
        for _ in 0..3 {
            let reply = self
                .http
                .send(
                    Method::GET,
                    &target,
                    &[("accept", "application/jwk-set+json, application/json")],
                    None,
                    self.cfg.max_bytes,
                )
                .await
                .map_err(|e| match e {
                    OutboundError::TooLarge(n) => unavailable(format!("larger than {n} bytes")),
                    other => unavailable(other.to_string()),
                })?;
            if reply.status.is_redirection() {
                let loc = reply
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| target.join(l).ok())
                    .ok_or_else(|| unavailable("redirect without a usable Location".into()))?;
                if loc.origin() != url.origin() {
                    return Err(unavailable(format!(
                        "redirect to another origin ({}) refused",
                        loc.origin().ascii_serialization()
                    )));
                }
                target = loc;
                continue;
            }
            if !reply.status.is_success() {
                return Err(unavailable(format!("HTTP {}", reply.status.as_u16())));
            }
            return KeySet::parse(&reply.body).map_err(|reason| JwksError::Invalid {
                url: redact_url(url),
                reason,
            });
        }
        Err(unavailable("too many redirects".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_skips_symmetric_and_unknown_keys_and_keeps_tls_certificates() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"weird","kid":"w"},
            {"kty":"EC","crv":"P-256","kid":"e","use":"sig",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"t","use":"tls","x5c":["AQID"],
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let set = KeySet::parse(body).expect("parses");
        assert_eq!(set.keys.len(), 2);
        assert!(set.has_tls_certificate(&[1, 2, 3]));
        assert!(!set.has_tls_certificate(&[1, 2, 4]));
        let k = set.find("e").expect("signing key");
        assert!(suitable(k, Algorithm::ES256).is_ok());
        assert!(suitable(k, Algorithm::PS256).is_err());
        let tls = set.find("t").expect("found, so the refusal can say why");
        let why = suitable(tls, Algorithm::ES256).err().unwrap_or_default();
        assert!(
            why.contains("`use` is `tls`"),
            "a tls key never verifies signatures: {why}"
        );
    }

    fn rsa_jwk(n_bytes: &[u8], e: &[u8], extra: serde_json::Value) -> Vec<u8> {
        let mut jwk = serde_json::json!({
            "kty": "RSA", "kid": "r",
            "n": URL_SAFE_NO_PAD.encode(n_bytes),
            "e": URL_SAFE_NO_PAD.encode(e),
        });
        if let (Some(o), Some(x)) = (jwk.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        serde_json::json!({ "keys": [jwk] })
            .to_string()
            .into_bytes()
    }

    fn verdict(body: &[u8]) -> Result<(), String> {
        let set = KeySet::parse(body).expect("parses");
        let key = set.find("r").ok_or("not found")?;
        suitable(key, Algorithm::PS256).map(|_| ())
    }

    #[test]
    fn weak_or_misused_rsa_keys_never_verify() {
        let mut n2048 = vec![0xC5u8; 256];
        n2048[255] = 0x01;
        let n1024 = &n2048[..128];
        let e65537 = [1u8, 0, 1];
        assert_eq!(
            verdict(&rsa_jwk(&n2048, &e65537, serde_json::json!({}))),
            Ok(())
        );
        // Leading zero octets are not bits of the key.
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n2048);
        assert_eq!(
            verdict(&rsa_jwk(&padded, &[0, 1, 0, 1], serde_json::json!({}))),
            Ok(())
        );
        assert_eq!(
            verdict(&rsa_jwk(
                &n2048,
                &e65537,
                serde_json::json!({"key_ops": ["verify"], "use": "sig"})
            )),
            Ok(())
        );

        let refused = [
            (rsa_jwk(n1024, &e65537, serde_json::json!({})), "1024 bits"),
            (
                rsa_jwk(&n2048[1..], &e65537, serde_json::json!({})),
                "2040 bits",
            ),
            (rsa_jwk(&n2048, &[3], serde_json::json!({})), "exponent"),
            (
                rsa_jwk(&n2048, &[1, 0, 0, 1], serde_json::json!({})),
                "exponent",
            ),
            (
                rsa_jwk(&n2048, &e65537, serde_json::json!({"key_ops": ["encrypt"]})),
                "`verify`",
            ),
            (
                rsa_jwk(&n2048, &e65537, serde_json::json!({"key_ops": []})),
                "`verify`",
            ),
            // Not an array: the JWK does not parse, so the key is not in the set at all.
            (
                rsa_jwk(&n2048, &e65537, serde_json::json!({"key_ops": "verify"})),
                "not found",
            ),
            (
                rsa_jwk(&n2048, &e65537, serde_json::json!({"use": "enc"})),
                "`use` is `enc`",
            ),
        ];
        for (body, why) in refused {
            let got = verdict(&body).err().unwrap_or_default();
            assert!(got.contains(why), "want {why}: {got}");
        }
    }

    #[test]
    fn a_signing_key_is_preferred_over_others_with_the_same_kid() {
        let mut n = vec![0xC5u8; 256];
        n[255] = 1;
        let key = |extra: serde_json::Value| {
            let mut k = serde_json::json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
            if let (Some(o), Some(x)) = (k.as_object_mut(), extra.as_object()) {
                o.extend(x.clone());
            }
            k
        };
        let body = serde_json::json!({"keys": [
            key(serde_json::json!({"key_ops": ["encrypt"]})),
            key(serde_json::json!({"use": "sig"})),
        ]})
        .to_string();
        assert_eq!(verdict(body.as_bytes()), Ok(()));
    }

    #[test]
    fn a_body_without_keys_is_invalid() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }
}
