//! Keycloak's Admin REST API, for crash recovery with a manage-clients service account: list the realm's
//! clients page by page (to find a client whose create answer we lost), delete one, mint a new registration
//! access token. Read in keycloak/keycloak `services/src/main/java/org/keycloak/services/resources/admin/`:
//! `ClientsResource.getClients` (`first`/`max` page `realm.getClientsStream`), `ClientResource.deleteClient`,
//! `ClientResource.regenerateRegistrationAccessToken` (requireManage; answers the client representation with
//! `registrationAccessToken`); unknown id: 404 (`ClientsResource.getClient`).

use http::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::{Upstream, UpstreamError, rejected};
use crate::secret::Secret;
use crate::store::CreateFingerprint;

/// Clients fetched per Admin REST page.
const PAGE: usize = 100;

/// More clients than this in one realm and the search stops: the realm is then not the proxy's own.
const MAX_CLIENTS: usize = 100_000;

/// The Admin REST base `…/admin/realms/{realm}/` for a Keycloak registration endpoint
/// `…/realms/{realm}/clients-registrations/openid-connect` (a context path such as `/auth` in front is kept), or
/// for `realm` named explicitly on the registration endpoint's origin and context path.
pub fn admin_base(registration_endpoint: &Url, realm: Option<&str>) -> Result<Url, String> {
    let path = registration_endpoint.path().trim_end_matches('/');
    let parsed = path
        .strip_suffix("/clients-registrations/openid-connect")
        .and_then(|rest| {
            let (prefix, realm) = rest.rsplit_once("/realms/")?;
            (!realm.is_empty() && !realm.contains('/')).then_some((prefix, realm))
        });
    let (prefix, realm) = match (parsed, realm.filter(|r| !r.is_empty())) {
        (parsed, Some(named)) => (parsed.map_or("", |(prefix, _)| prefix), named.to_string()),
        (Some((prefix, derived)), None) => (prefix, percent_decode(derived)),
        (None, None) => {
            return Err(format!(
                "`{}` is not a Keycloak registration endpoint (…/realms/{{realm}}/clients-registrations/openid-connect); name the realm in upstream.admin.realm",
                registration_endpoint.path()
            ));
        }
    };
    if realm.is_empty() || realm.contains('/') {
        return Err(format!("`{realm}` is not a realm name"));
    }
    let mut base = registration_endpoint.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(prefix);
    if let Ok(mut segments) = base.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["admin", "realms", &realm, ""]);
    }
    Ok(base)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// The Admin REST URLs of one realm.
pub(super) struct AdminRest {
    base: Url,
}

impl AdminRest {
    fn at(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        url
    }

    /// `clients/{id}`: for a DCR client the internal id is its client_id (`JpaRealmProvider.addClient`
    /// uses the generated id as clientId when none is given, and DCR never gives one).
    pub(super) fn client(&self, id: &str) -> Url {
        self.at(&["clients", id])
    }

    fn clients_page(&self, first: usize) -> Url {
        let mut url = self.at(&["clients"]);
        url.query_pairs_mut()
            .append_pair("first", &first.to_string())
            .append_pair("max", &PAGE.to_string());
        url
    }

    fn registration_token(&self, id: &str) -> Url {
        self.at(&["clients", id, "registration-access-token"])
    }
}

/// Whether a client representation (Admin REST, `ModelToRepresentation.toRepresentation`) carries what a
/// create sent: `DescriptionConverter.toInternal` stores `redirect_uris` as `redirectUris`, `client_name` as
/// `name`, `jwks_uri` as attribute `jwks.url` and `tls_client_auth_subject_dn` as attribute `x509.subjectdn`.
pub fn matches(client: &Value, fp: &CreateFingerprint) -> bool {
    let attribute = |k: &str| {
        client
            .get("attributes")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = client
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let mut redirect_uris: Vec<&str> = client
        .get("redirectUris")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    redirect_uris.sort_unstable();
    redirect_uris.dedup();
    redirect_uris
        == fp
            .redirect_uris
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
        && attribute("jwks.url") == fp.jwks_uri.as_deref()
        && attribute("x509.subjectdn") == fp.tls_client_auth_subject_dn.as_deref()
        && name == fp.client_name.as_deref()
}

impl Upstream {
    pub(super) fn admin_rest(&self) -> Result<AdminRest, UpstreamError> {
        self.admin()?
            .cfg
            .api_base
            .clone()
            .map(|base| AdminRest { base })
            .ok_or(UpstreamError::Failed(
                "no Keycloak Admin REST base is configured".into(),
            ))
    }

    /// A new registration access token for `client_id` (the old one stops working), or None when the client
    /// does not exist.
    pub async fn mint_registration_token(
        &self,
        client_id: &str,
    ) -> Result<Option<Secret>, UpstreamError> {
        let url = self.admin_rest()?.registration_token(client_id);
        let (status, body) = self
            .admin_call(Method::POST, &url, Some(bytes::Bytes::from_static(b"{}")))
            .await?;
        match status {
            StatusCode::OK => {
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|_| UpstreamError::Failed("answer is not JSON".into()))?;
                v.get("registrationAccessToken")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| Some(Secret::new(t.to_string())))
                    .ok_or(UpstreamError::Failed(
                        "answer has no registrationAccessToken".into(),
                    ))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// The client_ids of every client in the realm that carries `fp`, page by page.
    pub async fn clients_matching(
        &self,
        fp: &CreateFingerprint,
    ) -> Result<Vec<String>, UpstreamError> {
        let rest = self.admin_rest()?;
        let mut found = Vec::new();
        let mut first = 0;
        loop {
            let (status, body) = self
                .admin_call(Method::GET, &rest.clients_page(first), None)
                .await?;
            if status != StatusCode::OK {
                return Err(if status.is_client_error() {
                    rejected(status, &body)
                } else {
                    UpstreamError::Failed(format!("HTTP {}", status.as_u16()))
                });
            }
            let page: Vec<Value> = serde_json::from_slice(&body)
                .map_err(|_| UpstreamError::Failed("client list is not a JSON array".into()))?;
            found.extend(
                page.iter()
                    .filter(|c| matches(c, fp))
                    .filter_map(|c| c.get("clientId").and_then(Value::as_str))
                    .map(str::to_owned),
            );
            first += page.len();
            if page.len() < PAGE {
                return Ok(found);
            }
            if first >= MAX_CLIENTS {
                return Err(UpstreamError::Failed(format!(
                    "the realm lists more than {MAX_CLIENTS} clients; searching it for a lost client stops there"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn the_admin_base_comes_from_the_registration_endpoint_or_the_named_realm() {
        let cases = [
            (
                "https://kc:8443/realms/dcr/clients-registrations/openid-connect",
                None,
                "https://kc:8443/admin/realms/dcr/",
            ),
            (
                "https://kc/auth/realms/ob/clients-registrations/openid-connect/",
                None,
                "https://kc/auth/admin/realms/ob/",
            ),
            (
                "https://kc/auth/realms/ob/clients-registrations/openid-connect",
                Some("other"),
                "https://kc/auth/admin/realms/other/",
            ),
            (
                "https://kc/register",
                Some("ob"),
                "https://kc/admin/realms/ob/",
            ),
        ];
        for (endpoint, realm, want) in cases {
            assert_eq!(
                admin_base(&url(endpoint), realm).expect(endpoint).as_str(),
                want
            );
        }
        assert!(admin_base(&url("https://kc/register"), None).is_err());
        assert!(admin_base(&url("https://kc/register"), Some("a/b")).is_err());
        let rest = AdminRest {
            base: admin_base(
                &url("https://kc/realms/dcr/clients-registrations/openid-connect"),
                None,
            )
            .expect("base"),
        };
        assert_eq!(
            rest.registration_token("c 1").as_str(),
            "https://kc/admin/realms/dcr/clients/c%201/registration-access-token"
        );
        assert_eq!(
            rest.clients_page(200).as_str(),
            "https://kc/admin/realms/dcr/clients?first=200&max=100"
        );
    }

    #[test]
    fn a_client_matches_a_fingerprint_on_every_field() {
        let fp = CreateFingerprint::of(&json!({
            "redirect_uris": ["https://tpp/cb2", "https://tpp/cb"],
            "jwks_uri": "https://dir/jwks", "client_name": "App",
            "tls_client_auth_subject_dn": "CN=a,2.5.4.97=#0c0141"
        }));
        let client = json!({
            "clientId": "c", "name": "App", "redirectUris": ["https://tpp/cb", "https://tpp/cb2"],
            "attributes": {"jwks.url": "https://dir/jwks", "x509.subjectdn": "CN=a,2.5.4.97=#0c0141",
                           "use.jwks.url": "true"}
        });
        assert!(matches(&client, &fp));
        for (k, v) in [
            ("name", json!("Other")),
            ("redirectUris", json!(["https://tpp/cb"])),
            ("attributes", json!({"jwks.url": "https://dir/jwks"})),
        ] {
            let mut c = client.clone();
            c[k] = v;
            assert!(!matches(&c, &fp), "{k}");
        }
        // A client without a DN does not match a fingerprint with one, and the other way round.
        let no_dn = CreateFingerprint::of(&json!({
            "redirect_uris": ["https://tpp/cb", "https://tpp/cb2"],
            "jwks_uri": "https://dir/jwks", "client_name": "App"
        }));
        assert!(!matches(&client, &no_dn));
    }
}
