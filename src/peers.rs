//! Who is on the other end of a connection: the verified certificate parsed and its forwarding headers encoded,
//! once per distinct certificate chain rather than once per connection.
//!
//! A TPP opens many connections with one transport certificate (a pool, or a new connection per call). Each
//! used to hold its own parsed copy and its own encoded headers (a few KiB), and each handshake paid the
//! parse and the encoding again. Connections presenting the same chain now share one [`Peer`].
//!
//! Only what rustls has already verified for this handshake is looked up, and the key is a SHA-256 digest
//! of every certificate's exact bytes, so a hit is the same result the parse would give. The headers also
//! depend on the client-CA anchors (which intermediates are forwarded); the key carries the anchors'
//! generation, so a TLS reload that changes them is never answered from before it.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use rustls_pki_types::CertificateDer;

use crate::forward::CertHeaders;
use crate::identity::{IdentityError, PeerCert};
use crate::tls::chain_digest;

/// Distinct chains remembered. Past it the least used go; a miss costs one parse (tens of µs), and at a
/// few KiB each this bounds the cache to a few MiB whatever the clients present.
const CAPACITY: u64 = 1024;

/// A chain not seen for this long is forgotten, so memory returns after a burst of many clients.
const IDLE: Duration = Duration::from_secs(600);

/// One peer, as every connection presenting its chain sees it.
pub struct Peer {
    pub cert: PeerCert,
    /// The certificate as the pass-through forwards it to the IdP.
    pub headers: CertHeaders,
}

type Key = ([u8; 32], u64);

pub struct Peers {
    cache: Cache<Key, Arc<Peer>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self::new()
    }
}

impl Peers {
    pub fn new() -> Peers {
        Peers {
            cache: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(IDLE)
                .build(),
        }
    }

    /// The peer for a verified chain (leaf first). `generation` names the state `headers` encodes under
    /// (`Forwarder::cert_headers_generation`), read before calling. `None` when the chain is empty.
    pub async fn get(
        &self,
        certs: &[CertificateDer<'_>],
        generation: u64,
        headers: impl FnOnce(&PeerCert) -> CertHeaders,
    ) -> Option<Result<Arc<Peer>, IdentityError>> {
        let (leaf, chain) = certs.split_first()?;
        let key = (chain_digest(certs), generation);
        if let Some(peer) = self.cache.get(&key).await {
            return Some(Ok(peer));
        }
        let cert = match PeerCert::from_der(
            leaf.clone().into_owned(),
            chain.iter().map(|c| c.clone().into_owned()).collect(),
        ) {
            Ok(c) => c,
            // Not remembered: a certificate rustls accepted but we cannot parse is rare, and its error
            // is logged per connection.
            Err(e) => return Some(Err(e)),
        };
        let headers = headers(&cert);
        let peer = Arc::new(Peer { cert, headers });
        self.cache.insert(key, peer.clone()).await;
        Some(Ok(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn certificate(cn: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["tpp.example".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("certificate").der().clone()
    }

    fn encoder(calls: &AtomicUsize) -> impl FnOnce(&PeerCert) -> CertHeaders + '_ {
        move |cert| {
            calls.fetch_add(1, Ordering::SeqCst);
            vec![(
                HeaderName::from_static("client-cert"),
                HeaderValue::from_str(&cert.thumbprint_s256).expect("ascii"),
            )]
            .into()
        }
    }

    #[tokio::test]
    async fn one_chain_is_parsed_once_and_shared() {
        let peers = Peers::new();
        let calls = AtomicUsize::new(0);
        let leaf = certificate("tpp-1");
        let a = peers
            .get(std::slice::from_ref(&leaf), 0, encoder(&calls))
            .await;
        let b = peers.get(&[leaf], 0, encoder(&calls)).await;
        let (a, b) = (
            a.expect("a chain").expect("parsed"),
            b.expect("a chain").expect("parsed"),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_leaf_chain_or_generation_is_worked_out_afresh() {
        let peers = Peers::new();
        let calls = AtomicUsize::new(0);
        let (leaf, other, intermediate) = (
            certificate("tpp-1"),
            certificate("tpp-2"),
            certificate("ca"),
        );
        let first = peers
            .get(std::slice::from_ref(&leaf), 0, encoder(&calls))
            .await
            .expect("chain")
            .expect("parsed");
        let with_chain = peers
            .get(&[leaf.clone(), intermediate.clone()], 0, encoder(&calls))
            .await
            .expect("chain")
            .expect("parsed");
        assert!(first.cert.chain.is_empty());
        assert_eq!(with_chain.cert.chain, vec![intermediate]);
        let second = peers
            .get(&[other], 0, encoder(&calls))
            .await
            .expect("chain")
            .expect("parsed");
        assert_ne!(second.cert.thumbprint_s256, first.cert.thumbprint_s256);
        // The anchors changed: the same leaf is encoded again, under the new generation.
        let reloaded = peers
            .get(&[leaf], 1, encoder(&calls))
            .await
            .expect("chain")
            .expect("parsed");
        assert!(!Arc::ptr_eq(&first, &reloaded));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn no_certificate_is_no_peer_and_garbage_is_an_error_not_remembered() {
        let peers = Peers::new();
        let calls = AtomicUsize::new(0);
        assert!(peers.get(&[], 0, encoder(&calls)).await.is_none());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(matches!(
            peers
                .get(std::slice::from_ref(&junk), 0, encoder(&calls))
                .await,
            Some(Err(_))
        ));
        assert!(matches!(
            peers.get(&[junk], 0, encoder(&calls)).await,
            Some(Err(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
