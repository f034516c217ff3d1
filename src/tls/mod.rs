//! The listener's rustls ServerConfig: operator cert/key, client-CA verifier (with the CRLs tls::revocation keeps),
//! FAPI suites, no resumption.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use std::path::PathBuf;

mod chains;
pub mod revocation;

use chains::RememberedChains;
pub use chains::chain_digest;
use revocation::{CrlConfig, CrlView, StalePolicy, Verifiers};

/// `[tls]`: the listener's certificate, key, the CA bundle client certificates must chain to, and the CRLs they are
/// checked against.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_auth: ClientAuth,
    pub crl: CrlConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Optional,
    Required,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: {problem}")]
    Material { key: &'static str, problem: String },
}

fn material(key: &'static str, problem: impl ToString) -> TlsError {
    TlsError::Material {
        key,
        problem: problem.to_string(),
    }
}

/// FAPI 1.0 §8.5: TLS 1.2 only with ECDHE and AES-GCM; TLS 1.3 kept to AES-GCM as well so one
/// sentence describes the whole policy to a security reviewer.
pub fn fapi_provider() -> Arc<CryptoProvider> {
    let base = aws_lc_rs::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..base
    })
}

pub fn load_certs(
    path: &std::path::Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| material(key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(material(
            key,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}

/// The files behind a ServerConfig, loaded: kept by the reloader so new CRLs can be put in force even while a
/// certificate file is being rewritten.
pub struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

impl Material {
    pub fn load(cfg: &TlsConfig) -> Result<Material, TlsError> {
        let chain = load_certs(&cfg.cert, "tls.cert")?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .map_err(|e| material("tls.key", format!("{}: {e}", cfg.key.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&cfg.client_ca, "tls.client_ca")? {
            roots.add(ca).map_err(|e| {
                material("tls.client_ca", format!("{}: {e}", cfg.client_ca.display()))
            })?;
        }
        Ok(Material {
            chain,
            key,
            roots: Arc::new(roots),
        })
    }
}

/// A ServerConfig and the client verifiers in it, for tls::revocation to hold open connections to.
pub struct Built {
    pub server: Arc<rustls::ServerConfig>,
    pub verifiers: Verifiers,
}

/// Builds the server config from files, without revocation lists: the running proxy builds through [`build`]
/// with the CRLs tls::revocation holds.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(build(cfg, &Material::load(cfg)?, &CrlView::none())?.server)
}

/// The server config for `m` with the CRLs of `crls`; every failure names the config key it comes from.
pub fn build(cfg: &TlsConfig, m: &Material, crls: &CrlView) -> Result<Built, TlsError> {
    let provider = fapi_provider();
    // Each verifier remembers the chains it accepted (tls::chains); a new one, made for every change of anchors
    // or CRLs, starts with nothing remembered.
    let remembering = |v| -> Arc<dyn ClientCertVerifier> { Arc::new(RememberedChains::new(v)) };
    let handshake = remembering(client_verifier(
        cfg,
        m,
        crls,
        crls.policy == StalePolicy::Closed,
    )?);
    // Registrations are held to the closed policy even when the handshake is not.
    let strict = if crls.enabled && crls.policy == StalePolicy::OpenForPassthrough {
        Some(remembering(client_verifier(cfg, m, crls, true)?))
    } else {
        None
    };
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| material("tls.cert", e))?
        .with_client_cert_verifier(handshake.clone())
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => material(
                "tls.key",
                format!(
                    "{} does not belong to the certificate in {} (tls.cert): it is the private key of another key pair",
                    cfg.key.display(),
                    cfg.cert.display()
                ),
            ),
            other => material(
                "tls.key",
                format!(
                    "{}: cannot be used with the certificate in {} (tls.cert): {other}",
                    cfg.key.display(),
                    cfg.cert.display()
                ),
            ),
        })?;
    // A resumed session skips the client-certificate verifier, so resumption is off entirely.
    sc.session_storage = Arc::new(NoServerSessionStorage {});
    sc.send_tls13_tickets = 0;
    // Our order, not the client's: rustls' and OpenSSL's default client lists put AES-256-GCM-SHA384 first, and
    // SHA-384 has no CPU instructions where SHA-256 has (SHA-NI here), so following the client made the key
    // schedule cost as much as the key exchange (profile of (b): ~10 % of a handshake's CPU). AES-128 loses
    // no strength here (the ECDHE groups and certificate keys give 128 bits); a client offering only the
    // SHA-384 suites still gets them. docs/decisions.md, Performance: "The handshake's suite".
    sc.ignore_client_order = true;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Built {
        server: Arc::new(sc),
        verifiers: Verifiers { handshake, strict },
    })
}

/// rustls' WebPKI verifier over the client CA bundle and, when revocation is configured, the CRLs of `crls`.
///
/// Revocation settings, all rustls' own: every certificate of the chain below the trust anchor is checked (the
/// builder's default depth, not `only_check_end_entity_revocation`), so a revoked issuing CA refuses what it issued;
/// rustls' nextUpdate check stays off (`ExpirationPolicy::Ignore`, the default, rather than
/// `enforce_revocation_expiration`) because our bound is nextUpdate + `crl_max_stale`, applied by tls::revocation
/// sorting CRLs into fresh and stale. `closed`: only fresh CRLs, and a certificate none of them speaks for is
/// refused (the default `UnknownStatusPolicy::Deny`); otherwise stale CRLs count too and a certificate no CRL
/// speaks for passes (`allow_unknown_revocation_status`).
fn client_verifier(
    cfg: &TlsConfig,
    m: &Material,
    crls: &CrlView,
    closed: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), fapi_provider());
    // Optional lets browser paths of the IdP work without a certificate; /register checks for one itself.
    let builder = match cfg.client_auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    let build = |b: rustls::server::ClientCertVerifierBuilder| {
        b.build().map_err(|e| material("tls.client_ca", e))
    };
    if !crls.enabled {
        return build(builder);
    }
    if closed {
        // rustls checks nothing when handed no CRL at all, which for us means none is fresh: refuse instead.
        if crls.fresh.is_empty() {
            return Ok(Arc::new(NoFreshCrl(build(builder)?)));
        }
        return build(builder.with_crls(crls.fresh.iter().cloned()));
    }
    build(
        builder
            .with_crls(crls.fresh.iter().chain(&crls.stale).cloned())
            .allow_unknown_revocation_status(),
    )
}

/// Parses a CRL as the verifier will, so that one it would refuse is refused where its file or URL can be named.
pub fn check_crl(crl: &CertificateRevocationListDer<'static>) -> Result<(), String> {
    // The anchor only makes the builder valid; parsing the CRL does not depend on it.
    let mut roots = rustls::RootCertStore::empty();
    roots.roots.push(rustls_pki_types::TrustAnchor {
        subject: Vec::new().into(),
        subject_public_key_info: Vec::new().into(),
        name_constraints: None,
    });
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), fapi_provider())
        .with_crls([crl.clone()])
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Revocation is configured but no CRL is fresh (nor, at start, fetched): every certificate has an unknown
/// revocation status, which the closed policy refuses. Everything else is the wrapped verifier's.
#[derive(Debug)]
struct NoFreshCrl(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for NoFreshCrl {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // An unknown CA or an expired certificate is reported as such, not as a revocation problem.
        self.0.verify_client_cert(end_entity, intermediates, now)?;
        Err(Error::InvalidCertificate(
            CertificateError::UnknownRevocationStatus,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
