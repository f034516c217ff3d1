use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::UnixTime;
use time::{Duration as TimeDelta, OffsetDateTime};

use super::*;
use crate::identity::PeerCert;
use crate::tls::{self, ClientAuth, TlsConfig};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn root(name: &str) -> Ca {
    CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().expect("key")).expect("root")
}

fn intermediate(parent: &Ca, name: &str, serial: u64) -> Ca {
    let mut p = ca_params(name);
    p.serial_number = Some(SerialNumber::from(serial));
    CertifiedIssuer::signed_by(p, KeyPair::generate().expect("key"), parent).expect("intermediate")
}

fn leaf(ca: &Ca, serial: u64) -> PeerCert {
    let mut p = CertificateParams::new(vec!["tpp.example".to_string()]).expect("params");
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p
        .signed_by(&KeyPair::generate().expect("key"), ca)
        .expect("leaf");
    PeerCert::from_der(cert.der().clone(), Vec::new()).expect("parse")
}

/// A CRL of `ca` revoking `serials`, issued `age` ago and due again `valid` after that.
fn crl(
    ca: &Ca,
    serials: &[u64],
    age: TimeDelta,
    valid: TimeDelta,
) -> rcgen::CertificateRevocationList {
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - age,
        next_update: now - age + valid,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: now - age,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .expect("crl")
}

fn fresh(ca: &Ca, serials: &[u64]) -> rcgen::CertificateRevocationList {
    crl(ca, serials, TimeDelta::hours(1), TimeDelta::days(1))
}

/// Two hours past its nextUpdate: stale under the default one-hour bound.
fn stale(ca: &Ca, serials: &[u64]) -> rcgen::CertificateRevocationList {
    crl(ca, serials, TimeDelta::hours(5), TimeDelta::hours(3))
}

struct Setup {
    dir: PathBuf,
    tls: TlsConfig,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// TLS files trusting `cas`, and one CRL file per entry of `crls` (PEM).
fn setup(cas: &[&Ca], crls: &[String], policy: StalePolicy) -> Setup {
    let dir = std::env::temp_dir().join(format!("dcr-crl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    std::fs::write(dir.join("cert.pem"), server.cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), server.signing_key.serialize_pem()).expect("write");
    let bundle: String = cas.iter().map(|c| c.pem()).collect();
    std::fs::write(dir.join("ca.pem"), bundle).expect("write");
    let mut files = Vec::new();
    for (i, c) in crls.iter().enumerate() {
        let p = dir.join(format!("crl{i}.pem"));
        std::fs::write(&p, c).expect("write");
        files.push(p);
    }
    let tls = TlsConfig {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: dir.join("ca.pem"),
        client_auth: ClientAuth::Optional,
        crl: CrlConfig {
            files,
            stale_policy: policy,
            ..CrlConfig::none()
        },
    };
    Setup { dir, tls }
}

fn revocation(s: &Setup) -> Arc<Revocation> {
    Revocation::new(&s.tls.crl, &s.tls.client_ca).expect("CRLs load")
}

fn verifiers(s: &Setup) -> Verifiers {
    let r = revocation(s);
    let m = tls::Material::load(&s.tls).expect("material");
    tls::build(&s.tls, &m, &r.view()).expect("build").verifiers
}

fn verdict(v: &Arc<dyn ClientCertVerifier>, peer: &PeerCert) -> Result<(), RustlsError> {
    v.verify_client_cert(&peer.der, &peer.chain, UnixTime::now())
        .map(|_| ())
}

const REVOKED: Result<(), RustlsError> =
    Err(RustlsError::InvalidCertificate(CertificateError::Revoked));
const UNKNOWN: Result<(), RustlsError> = Err(RustlsError::InvalidCertificate(
    CertificateError::UnknownRevocationStatus,
));

#[test]
fn a_revoked_certificate_is_refused_and_its_neighbour_passes() {
    let ca = root("ca");
    let s = setup(
        &[&ca],
        &[fresh(&ca, &[7]).pem().expect("pem")],
        StalePolicy::Closed,
    );
    let v = verifiers(&s);
    assert_eq!(verdict(&v.handshake, &leaf(&ca, 7)), REVOKED);
    assert_eq!(verdict(&v.handshake, &leaf(&ca, 8)), Ok(()));
    assert!(v.strict.is_none());
}

#[test]
fn a_revoked_issuing_ca_refuses_what_it_issued() {
    let root_ca = root("root");
    let issuing = intermediate(&root_ca, "issuing", 5);
    let crls = [
        fresh(&root_ca, &[5]).pem().expect("pem"),
        fresh(&issuing, &[]).pem().expect("pem"),
    ];
    let s = setup(&[&root_ca], &crls, StalePolicy::Closed);
    let v = verifiers(&s);
    let mut peer = leaf(&issuing, 9);
    peer.chain = vec![issuing.der().clone()];
    assert_eq!(verdict(&v.handshake, &peer), REVOKED);
    // The same chain under a root CRL that does not list the issuing CA passes.
    let crls = [
        fresh(&root_ca, &[]).pem().expect("pem"),
        fresh(&issuing, &[]).pem().expect("pem"),
    ];
    let s = setup(&[&root_ca], &crls, StalePolicy::Closed);
    assert_eq!(verdict(&verifiers(&s).handshake, &peer), Ok(()));
}

#[test]
fn a_stale_crl_refuses_under_closed_and_still_revokes_under_open() {
    let ca = root("ca");
    let crls = [stale(&ca, &[7]).pem().expect("pem")];
    let closed = verifiers(&setup(&[&ca], &crls, StalePolicy::Closed));
    assert_eq!(verdict(&closed.handshake, &leaf(&ca, 8)), UNKNOWN);
    assert_eq!(verdict(&closed.handshake, &leaf(&ca, 7)), UNKNOWN);

    let open = verifiers(&setup(&[&ca], &crls, StalePolicy::Open));
    assert_eq!(verdict(&open.handshake, &leaf(&ca, 8)), Ok(()));
    assert_eq!(verdict(&open.handshake, &leaf(&ca, 7)), REVOKED);
    assert!(open.strict.is_none());

    let split = verifiers(&setup(&[&ca], &crls, StalePolicy::OpenForPassthrough));
    assert_eq!(verdict(&split.handshake, &leaf(&ca, 8)), Ok(()));
    assert_eq!(verdict(&split.handshake, &leaf(&ca, 7)), REVOKED);
    let strict = split
        .strict
        .as_ref()
        .expect("registrations get the closed verifier");
    assert_eq!(verdict(strict, &leaf(&ca, 8)), UNKNOWN);
}

#[test]
fn a_ca_no_crl_speaks_for_is_refused_when_closed_and_passes_when_open() {
    let a = root("a");
    let b = root("b");
    let crls = [fresh(&a, &[]).pem().expect("pem")];
    let closed = verifiers(&setup(&[&a, &b], &crls, StalePolicy::Closed));
    assert_eq!(verdict(&closed.handshake, &leaf(&a, 1)), Ok(()));
    assert_eq!(verdict(&closed.handshake, &leaf(&b, 1)), UNKNOWN);
    let open = verifiers(&setup(&[&a, &b], &crls, StalePolicy::Open));
    assert_eq!(verdict(&open.handshake, &leaf(&b, 1)), Ok(()));
}

#[test]
fn with_no_fresh_crl_at_all_closed_refuses_every_certificate_but_names_an_unknown_ca_as_such() {
    let ca = root("ca");
    let other = root("other");
    let crls = [stale(&ca, &[]).pem().expect("pem")];
    let v = verifiers(&setup(&[&ca], &crls, StalePolicy::Closed));
    assert_eq!(verdict(&v.handshake, &leaf(&ca, 1)), UNKNOWN);
    assert_eq!(
        verdict(&v.handshake, &leaf(&other, 1)),
        Err(RustlsError::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );
    // Certificates stay optional at the handshake: the wrapper keeps the builder's settings.
    assert!(!v.handshake.client_auth_mandatory());
}

#[test]
fn a_crl_goes_stale_one_bound_after_its_next_update() {
    let ca = root("ca");
    let c = fresh(&ca, &[]);
    let s = setup(&[&ca], &[c.pem().expect("pem")], StalePolicy::Closed);
    let r = revocation(&s);
    let now = unix_now();
    let next_update = now - 3600 + 86_400;
    let view = r.view_at(now);
    assert_eq!((view.fresh.len(), view.stale.len()), (1, 0));
    let deadline = view.next_deadline.expect("a deadline");
    assert!(
        (deadline - (next_update + 3600 + 1)).abs() <= 2,
        "{deadline}"
    );
    let later = r.view_at(deadline);
    assert_eq!((later.fresh.len(), later.stale.len()), (0, 1));
    assert_eq!(later.stale_names.len(), 1, "{:?}", later.stale_names);
    assert_ne!(view.key, later.key);
    assert_eq!(view.key, r.view_at(now + 10).key);
}

#[test]
fn of_two_crls_for_one_ca_the_newer_is_used() {
    let ca = root("ca");
    let older = crl(&ca, &[7], TimeDelta::hours(2), TimeDelta::days(1));
    let newer = crl(&ca, &[], TimeDelta::hours(1), TimeDelta::days(1));
    let crls = [older.pem().expect("pem"), newer.pem().expect("pem")];
    let s = setup(&[&ca], &crls, StalePolicy::Closed);
    let view = revocation(&s).view_at(unix_now());
    assert_eq!(view.fresh, vec![newer.der().clone()]);
    // The certificate the older CRL revoked was un-revoked (removeFromCRL) in the newer one.
    assert_eq!(verdict(&verifiers(&s).handshake, &leaf(&ca, 7)), Ok(()));
}

#[test]
fn crl_files_load_as_pem_or_der_and_a_bad_one_is_named() {
    let ca = root("ca");
    let anchors = vec![ca.der().clone()];
    let c = fresh(&ca, &[1, 2]);
    let pem = parse(c.pem().expect("pem").as_bytes(), &anchors).expect("PEM");
    let der = parse(c.der().as_ref(), &anchors).expect("DER");
    assert_eq!(pem[0].der, der[0].der);
    assert_eq!(pem[0].revoked, 2);
    let e = parse(
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        &anchors,
    )
    .expect_err("no CRL in it");
    assert!(e.contains("no `X509 CRL`"), "{e}");
    assert!(parse(b"not a CRL", &anchors).is_err());

    let s = setup(&[&ca], &["garbage".into()], StalePolicy::Closed);
    let e = Revocation::new(&s.tls.crl, &s.tls.client_ca)
        .err()
        .expect("a CRL file that does not load stops the start");
    assert!(e.to_string().starts_with("tls.crl_files: "), "{e}");
    assert!(e.to_string().contains("crl0.pem"), "{e}");
}

#[test]
fn a_crl_under_a_client_ca_name_but_signed_by_another_key_is_refused() {
    let ca = root("ca");
    let impostor = root("ca");
    let e = parse(fresh(&impostor, &[]).der().as_ref(), &[ca.der().clone()])
        .expect_err("the signature does not verify");
    assert!(e.contains("signature does not verify"), "{e}");
    // A CRL whose issuer is not in the bundle is taken: rustls checks its signature at every handshake.
    assert!(parse(fresh(&impostor, &[]).der().as_ref(), &[]).is_ok());
}

#[test]
fn a_fetched_crl_older_than_the_one_held_is_not_taken() {
    let ca = root("ca");
    let s = setup(&[&ca], &[], StalePolicy::Closed);
    let url = Url::parse("http://crl.example/ca.crl").expect("url");
    let cfg = CrlConfig {
        urls: vec![url.clone()],
        ..s.tls.crl.clone()
    };
    let r = Revocation::new(&cfg, &s.tls.client_ca).expect("new");
    let anchors = vec![ca.der().clone()];
    let newer = crl(&ca, &[7], TimeDelta::hours(1), TimeDelta::days(1));
    let older = crl(&ca, &[], TimeDelta::hours(2), TimeDelta::days(1));
    assert_eq!(
        r.view_at(unix_now()).stale_names.len(),
        1,
        "nothing fetched yet"
    );
    r.store_fetched(0, &url, parse(newer.der().as_ref(), &anchors));
    r.store_fetched(0, &url, parse(older.der().as_ref(), &anchors));
    assert_eq!(r.view_at(unix_now()).fresh, vec![newer.der().clone()]);
    r.store_fetched(0, &url, Err("HTTP 500".into()));
    assert_eq!(r.view_at(unix_now()).fresh, vec![newer.der().clone()]);
}
