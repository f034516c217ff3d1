//! The Kubernetes manifests in deploy/kubernetes agree with the proxy.toml they carry: ports, probes, the
//! files and variables the config names, the drain period, and the Keycloak side of the certificate header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn proxy_toml() -> (String, toml::Table) {
    let cm = manifest("configmap.yaml");
    let src = cm["data"]["proxy.toml"]
        .as_str()
        .expect("the ConfigMap carries proxy.toml")
        .to_string();
    let table = src.parse::<toml::Table>().expect("proxy.toml parses");
    (src, table)
}

fn get<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut cur = t.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn str_at<'a>(t: &'a toml::Table, dotted: &str) -> &'a str {
    get(t, dotted)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{dotted} is set"))
}

/// Every `*_env` key of the config, nested tables (`upstream.admin`) included, with the variable it names.
fn env_keys(t: &toml::Table) -> Vec<(String, String)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, String)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                toml::Value::String(name) if k.ends_with("_env") => out.push((key, name.clone())),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", t, &mut out);
    out
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("address with a port")
}

fn seconds(d: &str) -> u64 {
    dcr_proxy::config::parse_duration(d)
        .expect("a duration")
        .as_secs()
}

fn pod() -> Value {
    manifest("deployment.yaml")["spec"]["template"]["spec"].clone()
}

fn container(name: &str) -> Value {
    pod()["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("container {name}"))
}

fn named_port(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("port {name}"))
}

fn secret_keys(name: &str) -> Vec<String> {
    for file in [
        "secret-tls.yaml",
        "secret-client-ca.yaml",
        "secret-credentials.yaml",
    ] {
        let s = manifest(file);
        if s["metadata"]["name"] == name {
            return s["stringData"]
                .as_object()
                .or(s["data"].as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
        }
    }
    panic!("no Secret named {name}")
}

/// The volume (Secret or ConfigMap) mounted over `path` in the proxy container, and the key `path` names.
fn source_of(path: &str) -> (String, String, String) {
    let proxy = container("dcr-proxy");
    let mount = proxy["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or("-"))))
        .unwrap_or_else(|| panic!("{path} lies under no volumeMount of dcr-proxy"));
    assert!(
        mount.get("subPath").is_none(),
        "subPath mounts never see a rotated Secret: {mount}"
    );
    let key = path
        .strip_prefix(&format!("{}/", mount["mountPath"].as_str().unwrap_or("")))
        .expect("relative key")
        .to_string();
    let vol = pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .cloned()
        .expect("the mount's volume");
    if let Some(s) = vol["secret"]["secretName"].as_str() {
        ("secret".into(), s.to_string(), key)
    } else {
        (
            "configmap".into(),
            vol["configMap"]["name"]
                .as_str()
                .expect("configMap")
                .to_string(),
            key,
        )
    }
}

#[test]
fn container_ports_and_probes_match_the_listeners_in_proxy_toml() {
    let (_, t) = proxy_toml();
    let proxy = container("dcr-proxy");
    assert_eq!(
        named_port(&proxy, "mtls"),
        port_of(str_at(&t, "server.listen"))
    );
    assert_eq!(
        named_port(&proxy, "admin"),
        port_of(str_at(&t, "admin.listen"))
    );
    assert!(
        str_at(&t, "admin.listen").starts_with("0.0.0.0:"),
        "the kubelet must reach the admin port"
    );
    for (probe, path) in [
        ("startupProbe", "/live"),
        ("livenessProbe", "/live"),
        ("readinessProbe", "/ready"),
    ] {
        assert_eq!(proxy[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(
            proxy[probe]["httpGet"]["port"], "admin",
            "{probe} uses the admin port"
        );
    }
}

#[test]
fn the_service_exposes_only_the_mtls_port() {
    let svc = manifest("service.yaml");
    let ports = svc["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["targetPort"], "mtls");
    assert_eq!(
        svc["spec"]["selector"],
        manifest("deployment.yaml")["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn every_file_the_config_names_is_mounted_from_a_secret_or_configmap_that_has_it() {
    let (_, t) = proxy_toml();
    let mut files: Vec<String> = ["tls.cert", "tls.key", "tls.client_ca"]
        .iter()
        .map(|k| str_at(&t, k).to_string())
        .collect();
    for optional in ["jwks.ca_bundle", "upstream.ca_bundle", "store.ca_bundle"] {
        if let Some(v) = get(&t, optional).and_then(|v| v.as_str()) {
            files.push(v.to_string());
        }
    }
    for f in files {
        let (kind, name, key) = source_of(&f);
        assert_eq!(
            kind, "secret",
            "{f} (certificates and keys belong in Secrets)"
        );
        assert!(
            secret_keys(&name).contains(&key),
            "Secret {name} has no key {key} for {f}"
        );
    }
    // The config file itself comes from the ConfigMap, as named in the container's args.
    let args = container("dcr-proxy")["args"].clone();
    let config = args
        .as_array()
        .and_then(|a| a.iter().skip_while(|x| *x != "--config").nth(1))
        .and_then(|v| v.as_str())
        .expect("--config in args")
        .to_string();
    let (kind, name, key) = source_of(&config);
    assert_eq!(
        (kind.as_str(), name.as_str()),
        ("configmap", "dcr-proxy-config")
    );
    assert!(manifest("configmap.yaml")["data"].get(&key).is_some());
}

#[test]
fn every_variable_the_config_names_comes_from_a_secret_key_that_exists() {
    let (_, t) = proxy_toml();
    let env = container("dcr-proxy")["env"]
        .as_array()
        .expect("env")
        .clone();
    let named = env_keys(&t);
    assert!(named.len() >= 3, "{named:?}");
    for (key, var) in named {
        let e = env
            .iter()
            .find(|e| e["name"] == var.as_str())
            .unwrap_or_else(|| panic!("{key} names {var}, which the container does not set"));
        let r = &e["valueFrom"]["secretKeyRef"];
        assert!(
            e.get("value").is_none(),
            "{var} must come from a Secret, not a literal"
        );
        let secret = r["name"].as_str().expect("secretKeyRef");
        assert!(
            secret_keys(secret).iter().any(|k| r["key"] == k.as_str()),
            "{var}: {secret} lacks {}",
            r["key"]
        );
    }
}

#[test]
fn the_grace_period_outlasts_the_drain_and_the_pre_stop_sleep() {
    let (_, t) = proxy_toml();
    let grace = pod()["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let pre_stop = container("dcr-proxy")["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let proxy_done = seconds(str_at(&t, "server.drain_timeout")) + pre_stop;
    assert!(grace > proxy_done, "grace {grace}");
    // Keycloak must still answer while the proxy drains: its own preStop sleep outlasts the proxy's.
    let keycloak_pre_stop = container("keycloak")["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        keycloak_pre_stop >= proxy_done && grace > keycloak_pre_stop,
        "keycloak preStop {keycloak_pre_stop}, proxy done after {proxy_done}, grace {grace}"
    );
}

#[test]
fn keycloak_listens_where_the_proxy_forwards_and_reads_the_header_the_proxy_sends() {
    let (_, t) = proxy_toml();
    let args: Vec<String> = container("keycloak")["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let arg = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("keycloak --{name}"))
            .to_string()
    };
    let base = url::Url::parse(str_at(&t, "upstream.base_url")).expect("url");
    assert_eq!(base.port().map(u64::from), arg("http-port").parse().ok());
    assert_eq!(base.host_str(), Some(arg("http-host").as_str()));
    assert_eq!(
        arg("http-host"),
        "127.0.0.1",
        "only the sidecar may reach Keycloak"
    );
    let provider = match str_at(&t, "forward.cert_header") {
        "rfc9440" => "rfc9440",
        "nginx" => "nginx",
        other => panic!("no Keycloak provider for {other}"),
    };
    assert_eq!(arg("spi-x509cert-lookup--provider"), provider);
    assert_eq!(arg("proxy-headers"), "xforwarded");
}

#[test]
fn the_proxy_container_runs_unprivileged_on_a_read_only_root() {
    let sc = &container("dcr-proxy")["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
}

/// Loads a deployable proxy.toml with the real config loader, its files stood in by placeholders in a temp dir.
fn load_deployable(src: &str, name: &str) -> dcr_proxy::config::Config {
    // Files it names exist in the pod; here they are stood in by empty files in a temp dir.
    let dir: PathBuf = std::env::temp_dir().join(format!("dcr-deploy-{}", uuid::Uuid::new_v4()));
    let mut rewritten = src.to_string();
    for p in [
        "/etc/dcr-proxy/tls/tls.crt",
        "/etc/dcr-proxy/tls/tls.key",
        "/etc/dcr-proxy/client-ca/ca.pem",
    ] {
        let local = dir.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().expect("parent")).expect("mkdir");
        std::fs::write(&local, "placeholder").expect("write");
        rewritten = rewritten.replace(p, &local.display().to_string());
    }
    let env: HashMap<String, String> = [
        "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN",
        "DCR_MANAGEMENT_CLIENT_SECRET",
        "DCR_UPSTREAM_ADMIN_CLIENT_SECRET",
        "DCR_STORE_PASSWORD",
    ]
    .iter()
    .map(|k| (k.to_string(), "x".to_string()))
    .collect();
    let result = dcr_proxy::config::Config::from_toml_str(&rewritten, name, &dir, &env);
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_configmap_proxy_toml_passes_the_real_config_loader() {
    let (src, _) = proxy_toml();
    let cfg = load_deployable(&src, "configmap proxy.toml");
    assert_eq!(cfg.profile.kind.as_str(), "ob-v3.1");
}

#[test]
fn the_deployable_cdr_config_passes_the_real_config_loader_and_differs_only_in_the_profile() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/proxy-cdr.toml");
    let src = std::fs::read_to_string(&path).expect("proxy-cdr.toml");
    let cfg = load_deployable(&src, "proxy-cdr.toml");
    assert_eq!(cfg.profile.kind.as_str(), "cdr-1.13");
    assert!(
        !src.contains("localhost") && !src.contains(".local"),
        "deployable: no local paths"
    );
    let cdr: toml::Table = src.parse().expect("parses");
    let (_, ob) = proxy_toml();
    for section in [
        "server", "admin", "tls", "upstream", "jwks", "store", "forward", "log",
    ] {
        assert_eq!(
            cdr.get(section),
            ob.get(section),
            "[{section}] as in the ConfigMap"
        );
    }
}

/// The realm Keycloak imports (keycloak-realm.yaml), parsed.
fn realm() -> Value {
    let cm = manifest("keycloak-realm.yaml");
    let (_, json) = cm["data"]
        .as_object()
        .and_then(|d| d.iter().next())
        .expect("the ConfigMap carries one realm file");
    serde_json::from_str(json.as_str().expect("text")).expect("the realm file is JSON")
}

fn keycloak_args() -> Vec<String> {
    container("keycloak")["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

fn keycloak_arg(name: &str) -> Option<String> {
    keycloak_args()
        .iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(String::from))
}

fn realm_client(realm: &Value, client_id: &str) -> Value {
    realm["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["clientId"] == client_id)
        .cloned()
        .unwrap_or_else(|| panic!("the realm has no client {client_id}"))
}

/// The Secret key the keycloak container's `${VAR}` placeholder resolves from, and the one the proxy's `var` does.
fn same_secret(placeholder: &str, proxy_var: &str) {
    let var = placeholder
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{placeholder} is not a ${{VAR}} placeholder"));
    let key_of = |c: &str, v: &str| {
        container(c)["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == v)
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .unwrap_or_else(|| panic!("container {c} does not set {v}"))
    };
    assert_eq!(key_of("keycloak", var), key_of("dcr-proxy", proxy_var));
}

#[test]
fn the_proxy_runs_the_keycloak_flavour_with_a_service_account_and_no_revocation() {
    let (_, t) = proxy_toml();
    assert_eq!(str_at(&t, "upstream.flavour"), "keycloak");
    assert!(get(&t, "management.revocation_endpoint").is_none());
    assert!(
        get(&t, "upstream.initial_access_token_env").is_none(),
        "the service account creates the clients"
    );
    // The realm named by the registration endpoint is the one Keycloak imports, and the token endpoint is its.
    let realm = realm();
    let name = realm["realm"].as_str().expect("realm name");
    assert_eq!(
        str_at(&t, "upstream.registration_endpoint"),
        format!("/realms/{name}/clients-registrations/openid-connect")
    );
    assert_eq!(
        str_at(&t, "upstream.admin.token_endpoint"),
        format!("/realms/{name}/protocol/openid-connect/token")
    );
    assert_eq!(
        str_at(&t, "management.introspection_endpoint"),
        format!("/realms/{name}/protocol/openid-connect/token/introspect")
    );
}

#[test]
fn the_realm_has_the_clients_the_proxy_authenticates_as() {
    let (_, t) = proxy_toml();
    let realm = realm();
    // Introspection: confidential, exempt from the audience check of 26.4.12 / 26.6.2 / 26.7.0 (#49113).
    let introspection = realm_client(&realm, str_at(&t, "management.client_id"));
    assert_eq!(introspection["publicClient"], false);
    assert_eq!(
        introspection["attributes"]["allow.token.introspection.without.audience.check"],
        "true"
    );
    same_secret(
        introspection["secret"].as_str().expect("secret"),
        str_at(&t, "management.client_secret_env"),
    );
    // The administrator: a service account with realm-management manage-clients.
    let admin_id = str_at(&t, "upstream.admin.client_id");
    let admin = realm_client(&realm, admin_id);
    assert_eq!(admin["serviceAccountsEnabled"], true);
    same_secret(
        admin["secret"].as_str().expect("secret"),
        str_at(&t, "upstream.admin.client_secret_env"),
    );
    let account = realm["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["serviceAccountClientId"] == admin_id)
        .expect("the admin client's service account user");
    assert!(
        account["clientRoles"]["realm-management"]
            .as_array()
            .expect("realm-management roles")
            .iter()
            .any(|r| r == "manage-clients")
    );
}

#[test]
fn the_registration_policy_allows_every_scope_the_proxy_offers_and_the_script_creates_them() {
    let (src, t) = proxy_toml();
    let cfg = {
        let dir = std::env::temp_dir().join(format!("dcr-deploy-{}", uuid::Uuid::new_v4()));
        let mut rewritten = src.clone();
        for p in [
            "/etc/dcr-proxy/tls/tls.crt",
            "/etc/dcr-proxy/tls/tls.key",
            "/etc/dcr-proxy/client-ca/ca.pem",
        ] {
            let local = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().expect("parent")).expect("mkdir");
            std::fs::write(&local, "placeholder").expect("write");
            rewritten = rewritten.replace(p, &local.display().to_string());
        }
        let env: HashMap<String, String> = env_keys(&t)
            .into_iter()
            .map(|(_, v)| (v, "x".to_string()))
            .collect();
        let c = dcr_proxy::config::Config::from_toml_str(&rewritten, "configmap", &dir, &env);
        let _ = std::fs::remove_dir_all(&dir);
        c.unwrap_or_else(|e| panic!("{e}"))
    };
    let realm = realm();
    let policies = realm["components"]
        ["org.keycloak.services.clientregistration.policy.ClientRegistrationPolicy"]
        .as_array()
        .expect("registration policies");
    let allowed: Vec<&str> = policies
        .iter()
        .find(|p| p["providerId"] == "allowed-client-templates" && p["subType"] == "authenticated")
        .expect("the Allowed Client Scopes policy for authenticated requests")["config"]["allowed-client-scopes"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keycloak/client-scopes.sh"),
    )
    .expect("client-scopes.sh");
    // Keycloak's built-in client scopes of a new realm (OIDCLoginProtocolFactory).
    let built_in = [
        "openid",
        "profile",
        "email",
        "address",
        "phone",
        "offline_access",
    ];
    for scope in &cfg.profile.allowed_scopes {
        assert!(
            allowed.contains(&scope.as_str()),
            "the bank offers {scope} but Keycloak's policy would refuse it"
        );
        assert!(
            built_in.contains(&scope.as_str()) || script.split_whitespace().any(|w| w == scope),
            "{scope} is allowed but client-scopes.sh does not create it: Keycloak would drop it silently"
        );
    }
    // Anonymous registration stays refused: the policy list replaces Keycloak's defaults.
    assert!(policies.iter().any(|p| {
        p["providerId"] == "trusted-hosts"
            && p["subType"] == "anonymous"
            && p["config"]["trusted-hosts"]
                .as_array()
                .is_some_and(Vec::is_empty)
    }));
}

#[test]
fn keycloak_trusts_only_the_sidecar_names_the_public_host_and_imports_the_realm() {
    let (_, t) = proxy_toml();
    let public = url::Url::parse(str_at(&t, "server.public_url")).expect("url");
    assert_eq!(
        keycloak_arg("hostname").as_deref(),
        Some(public.as_str().trim_end_matches('/'))
    );
    assert_eq!(
        keycloak_arg("proxy-trusted-addresses").as_deref(),
        Some("127.0.0.1")
    );
    assert!(keycloak_args().iter().any(|a| a == "--import-realm"));
    let chain: u32 = keycloak_arg("spi-x509cert-lookup--rfc9440--certificate-chain-length")
        .and_then(|v| v.parse().ok())
        .expect("a certificate chain length");
    assert!(chain >= 2, "OB and eIDAS chains carry intermediates");
    // The realm file is mounted where --import-realm reads it.
    let mount = container("keycloak")["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/opt/keycloak/data/import")
        .cloned()
        .expect("the import directory is mounted");
    let vol = pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .cloned()
        .expect("volume");
    assert_eq!(vol["configMap"]["name"], "keycloak-realm");
    let kustomization = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/kustomization.yaml"),
    )
    .expect("kustomization");
    assert!(kustomization.contains("keycloak-realm.yaml"));
}
