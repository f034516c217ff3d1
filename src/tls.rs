//! The listener's rustls ServerConfig: operator cert/key, client-CA verifier, FAPI suites, no resumption.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use std::path::PathBuf;

/// `[tls]`: the listener's certificate, key and the CA bundle client certificates must chain to.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_auth: ClientAuth,
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

/// Builds the server config from files; every failure names the config key it comes from.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = fapi_provider();
    let chain = load_certs(&cfg.cert, "tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| material("tls.key", format!("{}: {e}", cfg.key.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_certs(&cfg.client_ca, "tls.client_ca")? {
        roots
            .add(ca)
            .map_err(|e| material("tls.client_ca", format!("{}: {e}", cfg.client_ca.display())))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    // Optional lets browser paths of the IdP work without a certificate; /register checks for one itself.
    let verifier = match cfg.client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()
    .map_err(|e| material("tls.client_ca", e))?;
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| material("tls.cert", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
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
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}
