//! The deny-list: request paths reduced the way any IdP router might read them, and the patterns
//! of endpoints never forwarded.

use std::borrow::Cow;

use super::ForwardConfig;

impl ForwardConfig {
    /// The IdP endpoints that would bypass the regulated registration API or expose
    /// administration.
    ///
    /// Pattern syntax: `/`-separated segments matched against the whole request path; `*` is
    /// exactly one segment, `**` is zero or more segments, anything else is a literal segment
    /// compared case-insensitively. So `/reg/**` refuses `/reg` and everything below it.
    ///
    /// The path is matched after percent-decoding (repeatedly, so double encoding does not hide
    /// a segment), with `\` read as `/`, `;` parameters cut from each segment, empty and `.`
    /// segments dropped, `..` applied and case folded: `/REG`, `/reg/`, `/./reg`, `/x/../reg`,
    /// `/%72eg`, `//reg` and `/reg;x` are all `/reg`. Each step can only make more paths match,
    /// so whichever of these readings the IdP's own router takes, the refusal still covers it.
    pub fn default_deny_paths() -> Vec<String> {
        [
            // Keycloak: admin console and admin REST API, then its own client registration
            // (every provider: default, openid-connect, install, saml2-entity-descriptor).
            "/admin/**",
            "/realms/*/clients-registrations/**",
            // The same for Keycloak before 17, served under /auth.
            "/auth/admin/**",
            "/auth/realms/*/clients-registrations/**",
            // ForgeRock AM: /am/oauth2/realms/root/realms/<realm>/register, /openam/oauth2/register,
            // /oauth2/connect/register, whatever the deployment's context path.
            "/**/oauth2/**/register",
            // ...and its client administration (`{am}/json/realms/root/realms/<realm>/realm-config/agents/
            // OAuth2Client/<id>`, PingAM 7.2 "rest-api-oauth2-client-admin-endpoint"), which the recovery
            // administrator uses. The rest of `/json` stays open: apps and AM's login pages authenticate at
            // `/json/realms/<realm>/authenticate` (PingAM 8 "login-using-REST").
            "/**/json/**/realm-config/**",
            // oidc-provider: POST /reg and the RFC 7592 /reg/<client_id>.
            "/reg/**",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }
}

/// A request path reduced for deny-list matching.
pub(super) struct NormalPath<'a> {
    /// Borrowed from the request's path where it needed no decoding and no lowercasing (most requests):
    /// an owned String per segment showed in the pass-through's profile.
    pub(super) segments: Vec<Cow<'a, str>>,
    pub(super) had_dot_segments: bool,
}

/// Double and triple encoding are undone too; a fourth layer is beyond any server we front.
const DECODE_ROUNDS: usize = 3;

impl<'a> NormalPath<'a> {
    pub(super) fn new(raw: &'a str) -> NormalPath<'a> {
        // Every pass-through request comes here: a path with nothing to decode or replace is not copied.
        let mut bytes = Cow::Borrowed(raw.as_bytes());
        if raw.contains('%') {
            for _ in 0..DECODE_ROUNDS {
                let decoded = percent_decode(&bytes);
                if decoded == *bytes {
                    break;
                }
                bytes = Cow::Owned(decoded);
            }
        }
        // Segments borrow `raw` when nothing was decoded or replaced and they need no lowercasing; else they
        // are owned, lowercased out of this decoded copy.
        let owned: Option<String> = match &bytes {
            Cow::Borrowed(_) if !raw.contains('\\') => None,
            _ => Some(String::from_utf8_lossy(&bytes).replace('\\', "/")),
        };
        let mut segments: Vec<Cow<'a, str>> = Vec::new();
        let mut had_dot_segments = false;
        let mut push = |seg: &str, borrowed: Option<&'a str>| match seg {
            "" => {}
            "." => had_dot_segments = true,
            ".." => {
                had_dot_segments = true;
                segments.pop();
            }
            s => segments.push(match borrowed {
                Some(b) if !b.bytes().any(|c| !c.is_ascii() || c.is_ascii_uppercase()) => {
                    Cow::Borrowed(b)
                }
                _ => Cow::Owned(s.to_lowercase()),
            }),
        };
        // Servlet containers (AM on Tomcat) and JAX-RS (Keycloak) drop `;` path parameters.
        let param_free = |seg: &str| seg.split(';').next().unwrap_or_default().len();
        match &owned {
            None => {
                for seg in raw.split('/') {
                    let seg = &seg[..param_free(seg)];
                    push(seg, Some(seg));
                }
            }
            Some(text) => {
                for seg in text.split('/') {
                    push(&seg[..param_free(seg)], None);
                }
            }
        }
        NormalPath {
            segments,
            had_dot_segments,
        }
    }
}

impl std::fmt::Display for NormalPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{}", s.escape_debug())?;
        }
        Ok(())
    }
}

/// One decoding pass; a `%` not followed by two hex digits stays as it is.
pub(super) fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn val(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(val),
                input.get(i + 2).copied().and_then(val),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

#[derive(Clone, Debug)]
pub(super) struct DenyPattern {
    pub(super) source: String,
    segments: Vec<Segment>,
}

impl DenyPattern {
    pub(super) fn parse(p: &str) -> Result<DenyPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("deny path {p:?}: must start with `/`"));
        }
        let mut segments = Vec::new();
        for s in p.split('/').filter(|s| !s.is_empty()) {
            segments.push(match s {
                "*" => Segment::One,
                "**" => Segment::Any,
                "." | ".." => {
                    return Err(format!("deny path {p:?}: `.` and `..` can never match"));
                }
                s if s.contains('*') => {
                    return Err(format!(
                        "deny path {p:?}: `*` and `**` must be whole segments"
                    ));
                }
                s if s.contains(['%', ';', '\\']) => {
                    return Err(format!(
                        "deny path {p:?}: write segments decoded, without `%`, `;` or `\\`"
                    ));
                }
                s => Segment::Literal(s.to_lowercase()),
            });
        }
        Ok(DenyPattern {
            source: p.to_owned(),
            segments,
        })
    }

    /// Dynamic programming over (pattern, path) positions rather than backtracking, so a path of
    /// thousands of segments against two `**` stays linear in the path per pattern segment.
    pub(super) fn matches(&self, path: &[Cow<'_, str>]) -> bool {
        // A literal first or last segment settles most patterns against most paths without the table below
        // (every pattern is tried on every pass-through request).
        let literal_at = |seg: Option<&Segment>, at: Option<&Cow<'_, str>>| match seg {
            Some(Segment::Literal(l)) => at.is_some_and(|a| a == l),
            _ => true,
        };
        if !literal_at(self.segments.first(), path.first())
            || !literal_at(self.segments.last(), path.last())
        {
            return false;
        }
        let n = path.len();
        // next[j]: the pattern from the following segment on matches path[j..]; cur is the row being filled.
        let mut next = vec![false; n + 1];
        let mut cur = vec![false; n + 1];
        next[n] = true;
        for seg in self.segments.iter().rev() {
            for j in (0..=n).rev() {
                cur[j] = match seg {
                    Segment::Any => next[j] || (j < n && cur[j + 1]),
                    Segment::One => j < n && next[j + 1],
                    Segment::Literal(l) => j < n && path[j] == l.as_str() && next[j + 1],
                };
            }
            std::mem::swap(&mut next, &mut cur);
        }
        next[0]
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn default_deny_list_refuses_every_spelling_of_the_idp_registration_and_admin_paths() {
        let deny: Vec<DenyPattern> = ForwardConfig::default_deny_paths()
            .iter()
            .map(|p| DenyPattern::parse(p).expect("default pattern parses"))
            .collect();
        let refused = |path: &str| {
            let normal = NormalPath::new(path);
            deny.iter().any(|p| p.matches(&normal.segments))
        };
        let must_refuse = [
            // oidc-provider
            "/reg",
            "/REG",
            "/reg/",
            "/./reg",
            "/x/../reg",
            "/%72eg",
            "/%2572eg",
            "//reg",
            "/reg;jsessionid=1",
            "/reg/abc123",
            "/Reg/abc/",
            "/x/..%2freg",
            "/x/%2e%2e/reg",
            "/x\\..\\reg",
            "/../../reg",
            // Keycloak
            "/admin",
            "/admin/",
            "/admin/master/console/",
            "/admin/realms/bank/clients",
            "/ADMIN/realms",
            "/realms/bank/clients-registrations/openid-connect",
            "/realms/bank/clients-registrations/default/abc",
            "/realms/bank/clients-registrations",
            "/realms/bank/Clients-Registrations/openid-connect",
            "/realms/bank/%63lients-registrations/openid-connect",
            "/auth/admin/master/console",
            "/auth/realms/bank/clients-registrations/openid-connect",
            // ForgeRock AM
            "/am/oauth2/realms/root/realms/alpha/register",
            "/am/oauth2/register",
            "/openam/oauth2/connect/register",
            "/oauth2/realms/root/register",
            "/am/oauth2/realms/root/realms/alpha/register/",
            "/am/OAuth2/realms/root/REGISTER",
            "/am/json/realms/root/realms/alpha/realm-config/agents/OAuth2Client/abc",
            "/openam/json/realm-config/agents/OAuth2Client",
            "/am/json/realms/root/REALM-CONFIG/services",
        ];
        for path in must_refuse {
            assert!(refused(path), "{path} should be refused");
        }
        let must_pass = [
            "/",
            "/token",
            "/regex",
            "/registration",
            "/x/reg",
            "/auth",
            "/me",
            "/.well-known/openid-configuration",
            "/realms/bank/protocol/openid-connect/token",
            "/realms/bank/protocol/openid-connect/certs",
            "/realms/bank/.well-known/openid-configuration",
            "/realms/bank/account",
            "/realms/admin/protocol/openid-connect/auth",
            "/administrator",
            "/am/oauth2/realms/root/realms/alpha/access_token",
            "/am/oauth2/realms/root/realms/alpha/authorize",
            "/am/json/realms/root/authenticate",
            "/register-info",
            "/oauth2/register/x",
        ];
        for path in must_pass {
            assert!(!refused(path), "{path} should pass");
        }
    }

    #[test]
    fn dot_segments_are_noticed_even_when_encoded() {
        for path in [
            "/./token",
            "/x/../token",
            "/x/%2e%2E/token",
            "/x/%252e/token",
        ] {
            assert!(NormalPath::new(path).had_dot_segments, "{path}");
        }
        for path in ["/.well-known/openid-configuration", "/a..b", "/token"] {
            assert!(!NormalPath::new(path).had_dot_segments, "{path}");
        }
    }

    #[test]
    fn deny_patterns_use_one_and_many_segment_wildcards() {
        let p = DenyPattern::parse("/a/*/c").expect("parses");
        let m = |path: &str| p.matches(&NormalPath::new(path).segments);
        assert!(m("/a/b/c"));
        assert!(!m("/a/c"));
        assert!(!m("/a/b/b/c"));
        assert!(!m("/a/b/c/d"));

        let p = DenyPattern::parse("/a/**/c/**").expect("parses");
        let m = |path: &str| p.matches(&NormalPath::new(path).segments);
        assert!(m("/a/c"));
        assert!(m("/a/x/y/c/z"));
        assert!(!m("/b/a/c"));

        let everything = DenyPattern::parse("/**").expect("parses");
        assert!(everything.matches(&NormalPath::new("/").segments));

        // A long path against two `**` is answered at once, not by backtracking.
        let long: Vec<Cow<str>> = std::iter::repeat_n(Cow::Borrowed("x"), 50_000).collect();
        let p = DenyPattern::parse("/**/oauth2/**/register").expect("parses");
        let started = Instant::now();
        assert!(!p.matches(&long));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn malformed_deny_patterns_are_refused_with_the_pattern_named() {
        for bad in [
            "reg", "/re*g", "/a/./b", "/a/../b", "/%72eg", "/reg;x", "/a\\b",
        ] {
            let err = DenyPattern::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
