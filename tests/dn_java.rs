//! `DnRendering::Java` against the Keycloak stand-in's model of Java's `X500Principal`
//! (tests/upstream/x500.mjs): for real certificates, the subject rendered by dcr-proxy must parse
//! there and print exactly as that certificate's subject prints, which is the comparison
//! Keycloak's `X509ClientAuthenticator` makes for `tls_client_auth`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dcr_proxy::identity::{DnRendering, PeerCert};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use support::pki::{ClientCertSpec, Pki, replace_subject};

/// What Java must make of a registered DN string for a certificate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Parses and prints exactly as the certificate's subject does, so Keycloak matches.
    Matches,
    /// Parses, but prints differently: Keycloak does not match.
    DoesNotMatch,
    /// `X500Principal` refuses it (Keycloak answers 400 "Unexpected error when authenticating client").
    Refused,
}

struct Case {
    name: &'static str,
    der: Vec<u8>,
    /// The Java rendering is byte for byte what Java prints for the certificate, not only
    /// something that parses to it (see `to_java_rfc2253` for the values where it is not).
    exact: bool,
    /// Further DN strings and what Java makes of them for this certificate.
    others: Vec<(String, Expect)>,
}

fn java(der: &[u8]) -> String {
    subject(der).render(DnRendering::Java)
}

fn rfc4514(der: &[u8]) -> String {
    subject(der).render(DnRendering::Rfc4514)
}

fn subject(der: &[u8]) -> dcr_proxy::identity::DistinguishedName {
    PeerCert::from_der(CertificateDer::from(der.to_vec()), Vec::new())
        .expect("test certificate parses")
        .subject
}

// Hand-built Name DER for subjects rcgen cannot make.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = u8::try_from(content.len()).expect("lengths below 256 only");
    let header: &[u8] = if len < 0x80 {
        &[tag, len]
    } else {
        &[tag, 0x81, len]
    };
    [header, content].concat()
}

fn atv(oid: &[u8], tag: u8, content: &[u8]) -> Vec<u8> {
    tlv(0x30, &[tlv(0x06, oid), tlv(tag, content)].concat())
}

fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let sets: Vec<u8> = rdns
        .iter()
        .flat_map(|atvs| tlv(0x31, &atvs.concat()))
        .collect();
    tlv(0x30, &sets)
}

const CN: &[u8] = &[0x55, 0x04, 0x03];
const SERIAL: &[u8] = &[0x55, 0x04, 0x05];
const C: &[u8] = &[0x55, 0x04, 0x06];
const L: &[u8] = &[0x55, 0x04, 0x07];
const ST: &[u8] = &[0x55, 0x04, 0x08];
const O: &[u8] = &[0x55, 0x04, 0x0a];
const OU: &[u8] = &[0x55, 0x04, 0x0b];
const ORG_ID: &[u8] = &[0x55, 0x04, 0x61];
const DC: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
const UTF8: u8 = 0x0c;
const PRINTABLE: u8 = 0x13;

fn cases() -> Vec<Case> {
    let pki = Pki::new();
    let issue = |spec: ClientCertSpec| pki.client(spec).cert_der;
    let ob = issue(ClientCertSpec::ob(
        "0014H00001lFE7dQAG",
        "0015800001041RHAAY",
    ));
    let with = |name_der: Vec<u8>| replace_subject(&ob, &name_der);

    let eidas_printable = issue(ClientCertSpec::eidas(
        "PSDGB-FCA-123456",
        "0014H00001lFE7dQAG",
        "Acme Bank Ltd",
    ));
    let eidas_utf8 = with(name(&[
        vec![atv(C, PRINTABLE, b"GB")],
        vec![atv(O, UTF8, b"Acme Bank Ltd")],
        vec![atv(ORG_ID, UTF8, b"PSDGB-FCA-123456")],
        vec![atv(CN, UTF8, b"0014H00001lFE7dQAG")],
    ]));
    let multi_valued = |first: Vec<u8>, second: Vec<u8>| {
        with(name(&[
            vec![atv(C, PRINTABLE, b"GB")],
            vec![
                atv(ORG_ID, UTF8, b"PSDGB-FCA-123456"),
                atv(O, UTF8, b"Acme Bank Ltd"),
            ],
            vec![first, second],
        ]))
    };
    let cn_first = multi_valued(atv(CN, UTF8, b"tpp"), atv(OU, UTF8, b"Payments"));
    let ou_first = multi_valued(atv(OU, UTF8, b"Payments"), atv(CN, UTF8, b"tpp"));
    let bmp_gb: Vec<u8> = "GB".encode_utf16().flat_map(u16::to_be_bytes).collect();

    vec![
        Case {
            name: "OB transport certificate",
            others: vec![(rfc4514(&ob), Expect::Matches)],
            der: ob.clone(),
            exact: true,
        },
        Case {
            name: "eIDAS, organizationIdentifier as PrintableString",
            others: vec![
                (rfc4514(&eidas_printable), Expect::Refused),
                (java(&eidas_utf8), Expect::DoesNotMatch),
            ],
            der: eidas_printable.clone(),
            exact: true,
        },
        Case {
            name: "eIDAS, organizationIdentifier as UTF8String",
            others: vec![
                (rfc4514(&eidas_utf8), Expect::Refused),
                (java(&eidas_printable), Expect::DoesNotMatch),
                (
                    "CN=0014H00001lFE7dQAG,2.5.4.97=PSDGB-FCA-123456,O=Acme Bank Ltd,C=GB".into(),
                    Expect::DoesNotMatch,
                ),
            ],
            der: eidas_utf8,
            exact: true,
        },
        Case {
            name: "Australian-style subject with every attribute type Java or Keycloak names",
            der: issue(ClientCertSpec::custom([
                ("DC", "example"),
                ("C", "AU"),
                ("ST", "NSW"),
                ("L", "Sydney"),
                ("STREET", "1 Martin Place"),
                ("O", "Mock Data Recipient Pty Ltd"),
                ("2.5.4.15", "Private Organization"),
                ("1.3.6.1.4.1.311.60.2.1.3", "AU"),
                ("SERIALNUMBER", "ABN 12 345 678 901"),
                ("OU", "b1f3c1b0-3c2a-4b8e-9a41-0f2d8c8f5e77"),
                ("UID", "adr-1"),
                ("emailAddress", "ops@adr.example"),
                ("CN", "c5f1e5a2-7d3b-4f6e-8a9c-1b2d3e4f5a6b"),
            ])),
            exact: true,
            others: Vec::new(),
        },
        Case {
            name: "values that need escaping",
            der: issue(ClientCertSpec::custom([
                ("C", "GB"),
                ("O", "Acme, Inc."),
                ("OU", "R&D + Ops; <EU> \"x\" a=b #1"),
                ("L", "#hash"),
                ("CN", "  spaced  out  "),
            ])),
            exact: true,
            others: Vec::new(),
        },
        Case {
            name: "non-ASCII values",
            der: issue(ClientCertSpec::custom([
                ("C", "CH"),
                ("L", "Zürich"),
                ("O", "Łódź 東京 😀 Bank"),
                ("CN", "ΟΔΟΣ"),
            ])),
            exact: true,
            others: Vec::new(),
        },
        Case {
            name: "multi-valued RDN stored CN first",
            others: vec![(java(&ou_first), Expect::DoesNotMatch)],
            der: cn_first,
            exact: true,
        },
        Case {
            name: "multi-valued RDN stored OU first",
            der: ou_first,
            exact: true,
            others: Vec::new(),
        },
        Case {
            name: "string types and values Java prints as hex or cannot read back",
            der: with(name(&[
                vec![atv(C, 0x1e, &bmp_gb)],
                vec![atv(L, 0x14, b"Z\xfcrich")],
                vec![atv(ST, 0x1c, &[0, 0, 0x03, 0xa9])],
                // `a\=b\\,`: X500Name.escaped counts three backslashes and takes the `,` for
                // part of the value.
                vec![atv(ST, UTF8, b"a=b\\")],
                vec![atv(SERIAL, 0x02, &[0x01, 0x00])],
                vec![atv(DC, UTF8, "bücher".as_bytes())],
                vec![atv(O, UTF8, b"\nleading newline")],
                vec![atv(O, PRINTABLE, b"trailing cr\r")],
                vec![atv(OU, 0x16, b"ia5@example")],
                vec![atv(CN, 0x14, b"teletex ascii")],
            ])),
            exact: false,
            others: Vec::new(),
        },
    ]
}

/// Runs x500.mjs on every (certificate, DN string) pair: Java's printout of the certificate's
/// subject and of each string, both as Keycloak prints them (with its keyword maps) and as a bare
/// JDK does, and the stand-in's Keycloak comparison.
fn run_node(input: &Value) -> Value {
    let x500 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream/x500.mjs");
    const SCRIPT: &str = r#"
        import { readFileSync } from 'node:fs';
        import { pathToFileURL } from 'node:url';
        const x500 = await import(pathToFileURL(process.argv[1]).href);
        const attempt = (f) => {
          try { return { ok: f() }; } catch (e) {
            if (e instanceof x500.DnSyntaxError) return { refused: e.message };
            throw e;
          }
        };
        const out = JSON.parse(readFileSync(0, 'utf8')).map(({ der, registered }) => {
          const cert = Buffer.from(der, 'base64');
          const subject = x500.certificateSubject(cert);
          const jdk = new Map();
          return {
            keycloak: x500.rfc2253(subject),
            jdk: x500.rfc2253(subject, jdk),
            registered: registered.map((dn) => ({
              keycloak: attempt(() => x500.rfc2253(x500.parseDn(dn))),
              jdk: attempt(() => x500.rfc2253(x500.parseDn(dn, jdk), jdk)),
              matches: attempt(() => x500.keycloakSubjectDnMatches(cert, dn)),
            })),
          };
        });
        process.stdout.write(JSON.stringify(out));
    "#;
    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    let mut child = Command::new(&node)
        .args(["--input-type=module", "-e", SCRIPT])
        .arg(&x500)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {node:?} (Node 20 is needed for this test): {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.to_string().as_bytes())
        .expect("write the cases to node");
    let output = child.wait_with_output().expect("node runs");
    assert!(output.status.success(), "node failed: {}", output.status);
    serde_json::from_slice(&output.stdout).expect("node prints JSON")
}

#[test]
fn java_rendering_of_a_certificate_subject_is_what_keycloak_compares_it_with() {
    let cases = cases();
    let renderings: Vec<String> = cases.iter().map(|case| java(&case.der)).collect();
    let input: Vec<Value> = cases
        .iter()
        .zip(&renderings)
        .map(|(case, ours)| {
            let registered: Vec<&str> = std::iter::once(ours.as_str())
                .chain(case.others.iter().map(|(dn, _)| dn.as_str()))
                .collect();
            json!({ "der": STANDARD.encode(&case.der), "registered": registered })
        })
        .collect();
    let results = run_node(&Value::Array(input));

    for ((case, ours), result) in cases
        .iter()
        .zip(&renderings)
        .zip(results.as_array().expect("array"))
    {
        let keycloak = result["keycloak"].as_str().expect("Keycloak's printout");
        let jdk = result["jdk"].as_str().expect("the JDK's printout");
        let registered = result["registered"].as_array().expect("registered results");
        let what = format!(
            "{}: ours {ours:?}, the JDK prints the certificate as {jdk:?}, Keycloak as {keycloak:?}",
            case.name
        );

        assert_eq!(
            registered[0]["keycloak"]["ok"].as_str(),
            Some(keycloak),
            "{what}"
        );
        assert_eq!(registered[0]["jdk"]["ok"].as_str(), Some(jdk), "{what}");
        assert_eq!(registered[0]["matches"]["ok"], json!(true), "{what}");
        if case.exact {
            assert_eq!(ours, jdk, "{what}");
        } else {
            assert_ne!(ours, jdk, "{what}: expected a #hex fallback somewhere");
        }

        for ((dn, expect), got) in case.others.iter().zip(&registered[1..]) {
            let outcome = match (&got["matches"]["ok"], got["matches"]["refused"].is_string()) {
                (Value::Bool(true), _) => Expect::Matches,
                (Value::Bool(false), _) => Expect::DoesNotMatch,
                (_, true) => Expect::Refused,
                _ => panic!("{what}: unexpected result for {dn:?}: {got}"),
            };
            assert_eq!(outcome, *expect, "{what}: {dn:?} -> {got}");
        }
    }
}
