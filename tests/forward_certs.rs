//! Certificates as the IdP must see them through the proxy: `tls_client_auth` and certificate-bound tokens for an
//! eIDAS certificate whose subject carries organizationIdentifier (which Java's X500Principal, and so Keycloak,
//! does not know by name), and for a certificate issued by an intermediate CA. Runs against either upstream
//! (`DCR_TEST_UPSTREAM`).

mod support;

use serde_json::json;
use support::pki::ClientCertSpec;
use support::upstream::CertHeader;
use support::world::{Flavour, Options, Tpp, World, urlencode};

async fn token_via_proxy(w: &World, tpp: &Tpp, client_id: &str) -> support::client::Response {
    w.token_via_proxy(
        tpp,
        format!(
            "grant_type=client_credentials&client_id={}&scope=accounts",
            urlencode(client_id)
        ),
    )
    .await
}

/// Registers `tpp` with tls_client_auth through the proxy, gets a token with its certificate through the proxy,
/// and checks the token is bound to it and manages the registration.
async fn tls_client_auth_round_trip(w: &World, tpp: &Tpp) -> String {
    let client_id = w
        .register(
            tpp,
            json!({"tls_client_auth_dn": tpp.cert.subject_rfc4514, "token_endpoint_auth_method": "tls_client_auth"}),
        )
        .await;
    let resp = token_via_proxy(w, tpp, &client_id).await;
    assert_eq!(
        resp.status,
        200,
        "token: {}\n{}",
        resp.text(),
        w.upstream.stderr()
    );
    let at = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let info = w.introspect_at_upstream(&at).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], client_id.as_str());
    assert_eq!(
        info["cnf"]["x5t#S256"],
        tpp.cert.thumbprint_s256.as_str(),
        "{info}"
    );
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    client_id
}

#[tokio::test]
async fn an_eidas_certificate_with_an_organization_identifier_authenticates_and_binds_tokens() {
    for format in [CertHeader::Rfc9440, CertHeader::Nginx] {
        if format != CertHeader::Nginx && Flavour::from_env() == Flavour::ForgeRockAm {
            eprintln!(
                "{format:?}: not applicable to forgerock-am, which reads only a URL-encoded PEM"
            );
            continue;
        }
        let w = World::start(Options {
            cert_header: format,
            ..Options::default()
        })
        .await;
        let tpp = w.tpp_with(ClientCertSpec::eidas(
            "PSDGB-FCA-123456",
            "tpp-eidas",
            "TPP Ltd",
        ));
        assert!(
            tpp.cert
                .subject_rfc4514
                .contains("organizationIdentifier=PSDGB-FCA-123456")
        );
        let client_id = tls_client_auth_round_trip(&w, &tpp).await;
        if w.flavour() == Flavour::ForgeRockAm {
            // AM keeps the DN as mTLSSubjectDN and matches it exactly against (assumed) Java's rendering.
            let agent = w.upstream.am_agent("GET", &client_id).await.expect("agent");
            let hex: String = b"PSDGB-FCA-123456"
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                agent["signEncOAuth2ClientConfig"]["mTLSSubjectDN"]["value"],
                format!("CN=tpp-eidas,2.5.4.97=#1310{hex},O=TPP Ltd,C=GB"),
                "{agent}"
            );
        }
        if w.flavour() == Flavour::Keycloak {
            // Registered as Java prints the subject: the attribute Java has no keyword for as its OID with the
            // DER value (a PrintableString, tag 13), which X500Principal parses; `organizationIdentifier=` would
            // not.
            let c = w.upstream.admin_client(&client_id).await.expect("client");
            let dn = c["attributes"]["x509.subjectdn"].as_str().unwrap_or("");
            let hex: String = b"PSDGB-FCA-123456"
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                dn,
                format!("CN=tpp-eidas,2.5.4.97=#1310{hex},O=TPP Ltd,C=GB"),
                "{format:?}"
            );
            // The TPP's own spelling, registered straight at Keycloak, never authenticates: X500Principal
            // cannot parse organizationIdentifier.
            let direct = w
                .register_upstream(json!({
                    "redirect_uris": ["https://tpp.example.com/cb"],
                    "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "tls_client_auth",
                    "tls_client_auth_subject_dn": tpp.cert.subject_rfc4514,
                    "tls_client_certificate_bound_access_tokens": true,
                    "scope": "accounts",
                }))
                .await;
            let resp = token_via_proxy(&w, &tpp, &direct).await;
            assert_eq!(resp.status, 400, "{format:?}: {}", resp.text());
            assert_eq!(resp.json()["error"], "unauthorized_client");
        }
    }
}

#[tokio::test]
async fn a_certificate_from_an_intermediate_ca_authenticates_and_binds_tokens() {
    let w = World::ob().await;
    let tpp = w.tpp_with(
        ClientCertSpec::ob(support::world::base62(18), support::world::base62(18))
            .via_intermediate(),
    );
    assert_eq!(tpp.cert.chain_der.len(), 1);
    tls_client_auth_round_trip(&w, &tpp).await;
    if support::world::skip_for_flavour(
        Flavour::ForgeRockAm,
        "AM reads the leaf alone as URL-encoded PEM: no chain is passed on",
    ) {
        return;
    }
    // The proxy passed the intermediate on, and only it: Keycloak takes no certificate at all from a
    // Client-Cert-Chain longer than its certificate-chain-length (default 1).
    let token = w.upstream.requests(&w.upstream.paths.token).await;
    let sent = token
        .iter()
        .rev()
        .find(|r| r["headers"].get("client-cert").is_some())
        .expect("a token request with the certificate");
    let chain = sent["headers"]["client-cert-chain"].as_str().unwrap_or("");
    assert_eq!(chain.split(',').count(), 1, "{sent}");
}

#[tokio::test]
async fn a_chain_presented_with_its_root_still_reaches_keycloak_within_its_chain_length() {
    let w = World::ob().await;
    let mut tpp = w.tpp_with(
        ClientCertSpec::ob(support::world::base62(18), support::world::base62(18))
            .via_intermediate(),
    );
    // Some TPP stacks send the whole chain, root included.
    tpp.cert.chain_der.push(w.pki.ca_der());
    tpp.client = support::client::TlsClient::new(&w.pki.ca_pem(), Some(&tpp.cert));
    tls_client_auth_round_trip(&w, &tpp).await;
}
