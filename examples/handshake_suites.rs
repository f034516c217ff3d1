//! What the TLS 1.3 suite costs the server per handshake (issue 16 (b); docs/decisions.md "The handshake's
//! suite"): a rustls client and server with the proxy's crypto provider in one thread, bytes handed over in
//! memory, so only the server's handshake work is timed (no sockets, no scheduler, no client certificate).
//!
//!   taskset -c 1 cargo run --release --example handshake_suites          (P-256 and RSA-2048 server keys)
//!
//! It prints, per key and suite, the median and range of 6 timed rounds (after one warm-up round) of the time
//! the server spends in `read_tls`, `process_new_packets` and `write_tls`. Pinned to one core that time is its
//! CPU time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, ServerConnection, SupportedCipherSuite};

const ROUNDS: usize = 7;

fn main() {
    let keys = [
        ("P-256", KeyPair::generate().expect("P-256 key"), 500),
        (
            "RSA-2048",
            KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).expect("RSA key"),
            100,
        ),
    ];
    let suites = [
        (
            "TLS13_AES_256_GCM_SHA384",
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            "TLS13_AES_128_GCM_SHA256",
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ),
    ];
    for (key_name, key, handshakes) in &keys {
        let cert = CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(key)
            .expect("certificate");
        let cert = CertificateDer::from(cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        for (suite_name, suite) in &suites {
            let mut rounds: Vec<f64> = (0..ROUNDS)
                .map(|_| server_time(&cert, &key, *suite, *handshakes))
                .skip(1)
                .map(|t| t.as_secs_f64() * 1e6 / *handshakes as f64)
                .collect();
            rounds.sort_by(f64::total_cmp);
            println!(
                "{key_name} {suite_name}: {:.1} µs of server time per handshake (median of {} rounds, {:.1}–{:.1})",
                (rounds[rounds.len() / 2 - 1] + rounds[rounds.len() / 2]) / 2.0,
                rounds.len(),
                rounds[0],
                rounds[rounds.len() - 1],
            );
        }
    }
}

/// The server's time for `n` full handshakes offering only `suite`.
fn server_time(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    suite: SupportedCipherSuite,
    n: usize,
) -> Duration {
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..default_provider()
    });
    let tls13 = &[&rustls::version::TLS13];
    // Full handshakes only, as the proxy makes them (src/tls/mod.rs): no tickets, no session cache.
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls13)
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .expect("server config");
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let server = Arc::new(server);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls13)
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let mut spent = Duration::ZERO;
    let mut buf = Vec::new();
    for _ in 0..n {
        let name = ServerName::try_from("localhost").expect("name");
        let mut c = ClientConnection::new(client.clone(), name).expect("client");
        let mut s = ServerConnection::new(server.clone()).expect("server");
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).expect("client write");
            }
            let start = Instant::now();
            let mut bytes = &buf[..];
            while !bytes.is_empty() {
                s.read_tls(&mut bytes).expect("server read");
            }
            s.process_new_packets().expect("server handshake");
            let mut out = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut out).expect("server write");
            }
            spent += start.elapsed();
            let mut bytes = &out[..];
            while !bytes.is_empty() {
                c.read_tls(&mut bytes).expect("client read");
            }
            c.process_new_packets().expect("client handshake");
        }
    }
    spent
}
