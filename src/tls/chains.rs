//! Client-certificate chains the verifier has accepted, remembered so that a TPP's next handshake with the same
//! chain skips building and checking its certification path (issue 16 (b), (c)).
//!
//! A TPP opens many connections with one transport certificate, and each full handshake had rustls-webpki build
//! the path and check every signature on it: one or two ECDSA or RSA verifications, 10 % of an RSA-2048 TLS 1.2
//! handshake's samples in its profile (docs/decisions.md, Performance). What webpki decides about a chain depends on the
//! chain's bytes, the verifier's trust anchors and CRLs, and the time. The anchors and CRLs are fixed for one
//! verifier, and `tls::build` makes a new verifier, with an empty memory, whenever either changes (a reload, a
//! CRL loaded or gone stale). The time is checked again on every hit: a remembered chain is accepted only while
//! every certificate in it is inside its validity period. Refusals are never remembered, and the signature the
//! client makes in this handshake (CertificateVerify, proof that it holds the key) is checked every time by the
//! wrapped verifier.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use moka::sync::Cache;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Distinct chains remembered per verifier; past it the least used go, and a forgotten chain costs one full
/// verification.
const CAPACITY: u64 = 1024;

/// A chain not presented for this long is forgotten.
const IDLE: Duration = Duration::from_secs(600);

/// When every certificate of a chain is valid: the latest `notBefore` and the earliest `notAfter`, in Unix seconds.
#[derive(Clone, Copy, Debug)]
struct Window {
    not_before: i64,
    not_after: i64,
}

impl Window {
    /// webpki's own test for each certificate on the path: refused before `notBefore` and after `notAfter`.
    fn contains(&self, now: UnixTime) -> bool {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.not_before <= now && now <= self.not_after
    }

    /// Over every certificate presented, a superset of those on the path webpki chose, so the window can only
    /// be narrower than that path's. `None` if one does not parse: such a chain is not remembered.
    fn of(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<Window> {
        let mut w = Window {
            not_before: i64::MIN,
            not_after: i64::MAX,
        };
        for der in std::iter::once(end_entity).chain(intermediates) {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let validity = cert.validity();
            w.not_before = w.not_before.max(validity.not_before.timestamp());
            w.not_after = w.not_after.min(validity.not_after.timestamp());
        }
        Some(w)
    }
}

/// SHA-256 over each certificate's length and bytes, leaf first, so no two different chains share a key.
pub fn chain_digest<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for c in certs {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A client-certificate verifier that remembers the chains it accepted; everything else is the wrapped one's.
pub(super) struct RememberedChains {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: Cache<[u8; 32], Window>,
}

impl RememberedChains {
    pub(super) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        RememberedChains {
            inner,
            accepted: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(IDLE)
                .build(),
        }
    }
}

impl std::fmt::Debug for RememberedChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RememberedChains")
            .field("inner", &self.inner)
            .field("remembered", &self.accepted.entry_count())
            .finish()
    }
}

impl ClientCertVerifier for RememberedChains {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = chain_digest(std::iter::once(end_entity).chain(intermediates));
        if self.accepted.get(&key).is_some_and(|w| w.contains(now)) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(w) = Window::of(end_entity, intermediates) {
            self.accepted.insert(key, w);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Stands in for webpki: counts what it is asked and accepts or refuses everything, so the tests see which
    /// verifications reached it.
    #[derive(Debug)]
    struct Asked {
        calls: AtomicUsize,
        accept: bool,
    }

    impl ClientCertVerifier for Asked {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &[]
        }

        fn verify_client_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: UnixTime,
        ) -> Result<ClientCertVerified, Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.accept {
                Ok(ClientCertVerified::assertion())
            } else {
                Err(Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Err(Error::General("not used".into()))
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Err(Error::General("not used".into()))
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Vec::new()
        }
    }

    fn verifier(accept: bool) -> (RememberedChains, Arc<Asked>) {
        let asked = Arc::new(Asked {
            calls: AtomicUsize::new(0),
            accept,
        });
        (RememberedChains::new(asked.clone()), asked)
    }

    /// A certificate valid from the start of `from` to the start of `until` (years).
    fn certificate(cn: &str, from: i32, until: i32) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["tpp.example".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        params.self_signed(&key).expect("certificate").der().clone()
    }

    /// The start of `year` (UTC) as rustls hands the time to a verifier.
    fn at(year: i32) -> UnixTime {
        let secs = rcgen::date_time_ymd(year, 1, 1).unix_timestamp();
        UnixTime::since_unix_epoch(Duration::from_secs(secs as u64))
    }

    fn asked(a: &Asked) -> usize {
        a.calls.load(Ordering::SeqCst)
    }

    #[test]
    fn a_chain_accepted_once_is_not_checked_again_while_every_certificate_in_it_is_valid() {
        let (v, inner) = verifier(true);
        let (leaf, ca) = (
            certificate("tpp", 2020, 2040),
            certificate("ca", 2019, 2045),
        );
        for now in [at(2021), at(2030), at(2039)] {
            v.verify_client_cert(&leaf, std::slice::from_ref(&ca), now)
                .expect("accepted");
        }
        assert_eq!(asked(&inner), 1);
    }

    #[test]
    fn a_remembered_chain_is_checked_again_outside_the_validity_of_any_certificate_in_it() {
        let (v, inner) = verifier(true);
        // The intermediate ends before the leaf and starts after it: the window is the intermediate's.
        let (leaf, ca) = (
            certificate("tpp", 2020, 2040),
            certificate("ca", 2022, 2030),
        );
        v.verify_client_cert(&leaf, std::slice::from_ref(&ca), at(2025))
            .expect("accepted");
        v.verify_client_cert(&leaf, std::slice::from_ref(&ca), at(2031))
            .expect("the stand-in accepts");
        assert_eq!(asked(&inner), 2, "after the intermediate's notAfter");
        v.verify_client_cert(&leaf, std::slice::from_ref(&ca), at(2021))
            .expect("the stand-in accepts");
        assert_eq!(asked(&inner), 3, "before the intermediate's notBefore");
        v.verify_client_cert(&leaf, std::slice::from_ref(&ca), at(2029))
            .expect("accepted");
        assert_eq!(asked(&inner), 3, "inside both");
    }

    #[test]
    fn a_refused_chain_is_checked_every_time() {
        let (v, inner) = verifier(false);
        let leaf = certificate("tpp", 2020, 2040);
        for _ in 0..3 {
            assert!(v.verify_client_cert(&leaf, &[], at(2025)).is_err());
        }
        assert_eq!(asked(&inner), 3);
    }

    #[test]
    fn the_same_leaf_with_other_intermediates_is_another_chain() {
        let (v, inner) = verifier(true);
        let leaf = certificate("tpp", 2020, 2040);
        let (a, b) = (
            certificate("ca-a", 2019, 2045),
            certificate("ca-b", 2019, 2045),
        );
        for chain in [vec![], vec![a.clone()], vec![b], vec![a.clone(), a]] {
            v.verify_client_cert(&leaf, &chain, at(2025))
                .expect("accepted");
        }
        assert_eq!(asked(&inner), 4);
    }
}
