//! The one place where an error becomes an HTTP status, headers and a JSON body, and where our own answers are
//! rendered.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::bearer::{BearerError, Challenge};

/// RFC 7591 §3.2.2 codes, plus the two we need for transport problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRedirectUri,
    InvalidClientMetadata,
    InvalidSoftwareStatement,
    UnapprovedSoftwareStatement,
    InvalidClient,
    InvalidRequest,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidSoftwareStatement => "invalid_software_statement",
            ErrorCode::UnapprovedSoftwareStatement => "unapproved_software_statement",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidRequest => "invalid_request",
        }
    }
}

/// Who is at fault, for logs and metric labels (after pingora's error sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Where a CDR Register status check refused, which decides the answer's status and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterCheck {
    /// POST /register: the SSA's product or recipient.
    Registration,
    /// GET/PUT/DELETE /register/{ClientId}.
    Management,
    /// A forwarded call naming the client: token, PAR, authorize, revocation, introspection.
    OAuth,
}

impl RegisterCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterCheck::Registration => "registration",
            RegisterCheck::Management => "management",
            RegisterCheck::OAuth => "oauth",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A registration request that fails a rule: 400 with the profile's code.
    #[error("{code:?}: {description}")]
    Rejected {
        code: ErrorCode,
        description: String,
    },
    #[error("no verified client certificate")]
    NoClientCertificate,
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("content type {0:?} is not accepted")]
    UnsupportedMediaType(String),
    /// RFC 6750: a management token refused (401, or 403 for insufficient_scope, with a WWW-Authenticate
    /// challenge), or one that cannot be checked right now (503).
    #[error(transparent)]
    Bearer(#[from] BearerError),
    /// An unknown, deleted or other client's ClientId, in the profile's words: one 401 for all, so that the
    /// answer does not reveal whether a ClientId exists.
    #[error("unknown client: {description}")]
    UnknownClient {
        error: &'static str,
        description: &'static str,
    },
    /// Another change to the same registration is in flight (or awaiting reconciliation).
    #[error("registration busy")]
    Busy,
    #[error("no route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("the upstream could not be reached: {0}")]
    UpstreamUnavailable(String),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the registration store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The client certificate's revocation status rests on a stale CRL (crl_stale_policy = open_for_passthrough).
    #[error("the client certificate's revocation status cannot be confirmed with a fresh CRL")]
    RevocationUnconfirmed,
    #[error("internal error: {0}")]
    Internal(String),
    /// A cap on concurrent work was reached (pass-through requests overall or on one connection).
    #[error("over capacity: {0}")]
    Overloaded(&'static str),
    /// A header, or all of them together, over the configured size: 431, nothing sent upstream.
    #[error("request headers too large: {0}")]
    HeadersTooLarge(String),
    /// The client did not send the request body (or its next part) within the body timeout.
    #[error("the request body did not arrive in time")]
    RequestBodyTimeout,
    /// CDR: the Register lists the client's software product or data recipient as other than ACTIVE.
    #[error("the CDR Register lists the {entity} as {status}")]
    RegisterNotActive {
        at: RegisterCheck,
        entity: &'static str,
        status: String,
    },
    /// CDR: no Register status list younger than its bound, under a policy that refuses then.
    #[error("the CDR Register status cannot be confirmed")]
    RegisterStatusUnconfirmed,
}

impl ProxyError {
    pub fn rejected(code: ErrorCode, description: impl Into<String>) -> Self {
        ProxyError::Rejected {
            code,
            description: description.into(),
        }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::Rejected { .. }
            | ProxyError::NoClientCertificate
            | ProxyError::PayloadTooLarge(_)
            | ProxyError::UnsupportedMediaType(_)
            | ProxyError::NotFound
            | ProxyError::UnknownClient { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::HeadersTooLarge(_)
            | ProxyError::RequestBodyTimeout
            | ProxyError::RegisterNotActive { .. } => Side::Client,
            ProxyError::Bearer(e) => match e {
                BearerError::Missing
                | BearerError::Malformed(_)
                | BearerError::Inactive
                | BearerError::WrongClient
                | BearerError::InsufficientScope(_)
                | BearerError::CertificateMismatch => Side::Client,
                BearerError::Unavailable(_) => Side::Upstream,
            },
            ProxyError::Busy => Side::Internal,
            ProxyError::UpstreamUnavailable(_) | ProxyError::UpstreamTimeout => Side::Upstream,
            ProxyError::StoreUnavailable(_)
            | ProxyError::RevocationUnconfirmed
            | ProxyError::RegisterStatusUnconfirmed
            | ProxyError::Internal(_)
            | ProxyError::Overloaded(_) => Side::Internal,
        }
    }

    /// The error code for logs and metrics (a small closed set).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Rejected { code, .. } => code.as_str(),
            ProxyError::NoClientCertificate => "invalid_client",
            ProxyError::PayloadTooLarge(_) => "payload_too_large",
            ProxyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ProxyError::NotFound => "not_found",
            ProxyError::Bearer(e) => match e {
                BearerError::Missing => "missing_token",
                BearerError::Malformed(_) => "malformed_token",
                BearerError::Inactive => "inactive_token",
                BearerError::WrongClient => "wrong_client",
                BearerError::InsufficientScope(_) => "insufficient_scope",
                BearerError::CertificateMismatch => "certificate_mismatch",
                BearerError::Unavailable(_) => "token_validation_unavailable",
            },
            ProxyError::UnknownClient { .. } => "unknown_client",
            ProxyError::Busy => "busy",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::UpstreamUnavailable(_) => "upstream_unavailable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::StoreUnavailable(_) => "store_unavailable",
            ProxyError::RevocationUnconfirmed => "revocation_unconfirmed",
            ProxyError::Internal(_) => "internal",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::RequestBodyTimeout => "request_body_timeout",
            ProxyError::RegisterNotActive { .. } => "register_not_active",
            ProxyError::RegisterStatusUnconfirmed => "register_status_unconfirmed",
        }
    }

    /// Status, headers and body. Upstream and internal details stay in the logs; the client gets generic words.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let a = match self {
            ProxyError::Rejected { code, description } => {
                Answer::new(StatusCode::BAD_REQUEST, code.as_str(), description.clone())
            }
            ProxyError::NoClientCertificate => Answer::new(
                StatusCode::FORBIDDEN,
                "invalid_client",
                "this endpoint needs a client certificate issued by a CA this bank trusts, presented in the TLS handshake".into(),
            ),
            ProxyError::PayloadTooLarge(n) => Answer::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the request body is larger than {n} bytes"),
            ),
            ProxyError::UnsupportedMediaType(ct) => Answer::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                format!(
                    "content type `{ct}` is not accepted: send the signed request JWT as application/jwt or application/jose"
                ),
            ),
            ProxyError::NotFound => Answer::new(
                StatusCode::NOT_FOUND,
                "invalid_request",
                "no such endpoint".into(),
            ),
            ProxyError::Bearer(e) => bearer_answer(e),
            ProxyError::UnknownClient { error, description } => Answer::new(
                StatusCode::UNAUTHORIZED,
                error,
                description.to_string(),
            )
            .with_challenge(Challenge {
                error: Some(error),
                error_description: Some(description),
                ..Challenge::default()
            }),
            ProxyError::Busy => Answer::retry_later(
                "another change to this registration is in progress; try again shortly",
            ),
            ProxyError::MethodNotAllowed { allow } => Answer::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("method not allowed here; allowed: {allow}"),
            )
            .with(header::ALLOW, HeaderValue::from_static(allow)),
            ProxyError::UpstreamUnavailable(_) => Answer::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "the authorisation server is unavailable; try again later".into(),
            ),
            ProxyError::UpstreamTimeout => Answer::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "the authorisation server did not answer in time; try again later".into(),
            ),
            ProxyError::StoreUnavailable(_) => {
                Answer::retry_later("registrations are temporarily unavailable; try again later")
            }
            ProxyError::RevocationUnconfirmed => Answer::retry_later(
                "the revocation status of your client certificate cannot be confirmed right now (its issuer's CRL is out of date here); registration is paused until a fresh CRL is loaded",
            ),
            ProxyError::Internal(_) => Answer::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "an internal error occurred".into(),
            ),
            ProxyError::Overloaded(_) => {
                Answer::retry_later("the server is busy; try again shortly")
            }
            ProxyError::HeadersTooLarge(why) => Answer::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                why.clone(),
            ),
            ProxyError::RequestBodyTimeout => Answer::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body did not arrive in time".into(),
            ),
            ProxyError::RegisterNotActive { at, entity, status } => {
                let description = if status.is_empty() {
                    format!("the CDR Register does not list this client's {entity}")
                } else {
                    format!("the CDR Register lists this client's {entity} as {status}")
                };
                match at {
                    // CDR DCR 1.13 RegistrationError (OIDC DCR §3.3): the SSA's product is not approved.
                    RegisterCheck::Registration => Answer::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::UnapprovedSoftwareStatement.as_str(),
                        description,
                    ),
                    // RFC 7592 §2.1-2.3 and CDR DCR 1.13 `403Error`: the client may not read, update or delete
                    // its registration.
                    RegisterCheck::Management => {
                        Answer::new(StatusCode::FORBIDDEN, "invalid_client", description)
                    }
                    // RFC 6749 §5.2 invalid_client, which RFC 9126 §2.3 (PAR) and RFC 7009 §2.2.1 (revocation)
                    // take over; 400, as no Authorization header challenge applies to private_key_jwt. At the
                    // authorization endpoint RFC 6749 §4.1.2.1 forbids redirecting for a client not valid, so
                    // the same answer goes to the user agent.
                    RegisterCheck::OAuth => {
                        Answer::new(StatusCode::BAD_REQUEST, "invalid_client", description)
                    }
                }
            }
            ProxyError::RegisterStatusUnconfirmed => Answer::retry_later(
                "the CDR Register status of this client cannot be confirmed right now; try again later",
            ),
        };
        let mut resp = json_response(
            a.status,
            &json!({"error": a.error, "error_description": a.description}),
        );
        resp.extensions_mut().insert(ErrorLabel(self.code()));
        if let Some((name, value)) = a.header {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// What an error answers: the status, the body's `error` and `error_description`, and at most one more header.
struct Answer {
    status: StatusCode,
    error: &'static str,
    description: String,
    header: Option<(HeaderName, HeaderValue)>,
}

impl Answer {
    fn new(status: StatusCode, error: &'static str, description: String) -> Self {
        Answer {
            status,
            error,
            description,
            header: None,
        }
    }

    /// 503 with a hint to come back: the fault is passing, and not the client's.
    fn retry_later(description: &str) -> Self {
        Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description.into(),
        )
        .with(header::RETRY_AFTER, HeaderValue::from_static("5"))
    }

    fn with(self, name: HeaderName, value: HeaderValue) -> Self {
        Answer {
            header: Some((name, value)),
            ..self
        }
    }

    fn with_challenge(self, c: Challenge<'_>) -> Self {
        self.with(header::WWW_AUTHENTICATE, c.to_header())
    }
}

/// A management token refused, or not checkable. RFC 6750 would call a malformed header invalid_request;
/// DCR-RULES says invalid_token. A missing token gets the bare challenge of RFC 6750 §3.1. The words never hold
/// the token, nor an internal URL or upstream detail.
fn bearer_answer(e: &BearerError) -> Answer {
    let invalid_token = |description: &str| {
        Answer::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            description.into(),
        )
        .with_challenge(Challenge {
            error: Some("invalid_token"),
            error_description: Some(description),
            ..Challenge::default()
        })
    };
    match e {
        BearerError::Missing => Answer::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "an access token is required".into(),
        )
        .with_challenge(Challenge::default()),
        BearerError::Malformed(why) => invalid_token(why),
        BearerError::Inactive => invalid_token("the access token is invalid, expired or revoked"),
        BearerError::WrongClient => invalid_token("the access token was not issued to this client"),
        BearerError::CertificateMismatch => invalid_token(
            "the access token is not bound to the client certificate of this connection",
        ),
        BearerError::InsufficientScope(scope) => Answer::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the access token lacks the scope {scope}"),
        )
        .with_challenge(Challenge {
            error: Some("insufficient_scope"),
            scope: Some(scope),
            ..Challenge::default()
        }),
        // No WWW-Authenticate: the token may be fine, and a challenge would tell the client to get another.
        BearerError::Unavailable(_) => {
            Answer::retry_later("the access token cannot be checked right now; try again later")
        }
    }
}

/// Carried in response extensions so the request metric can label the error without re-parsing.
#[derive(Clone, Copy, Debug)]
pub struct ErrorLabel(pub &'static str);

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(crate::body::json_bytes(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A success without a body (RFC 7592 §2.3's 204 for a deleted client), kept out of caches like every answer.
pub fn no_content() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    async fn parts(e: ProxyError) -> (u16, Option<String>, Option<String>, Value, &'static str) {
        let resp = e.to_response();
        let header = |n: HeaderName| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        let (status, challenge, retry) = (
            resp.status().as_u16(),
            header(header::WWW_AUTHENTICATE),
            header(header::RETRY_AFTER),
        );
        let label = resp.extensions().get::<ErrorLabel>().expect("label").0;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            challenge,
            retry,
            serde_json::from_slice(&body).expect("json"),
            label,
        )
    }

    #[tokio::test]
    async fn refused_tokens_answer_with_their_status_challenge_and_words() {
        let invalid = "Bearer error=\"invalid_token\", error_description=";
        // The error, its status, WWW-Authenticate, body error and error_description, and metric label.
        type Case = (
            ProxyError,
            u16,
            Option<String>,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                BearerError::Missing.into(),
                401,
                Some("Bearer".into()),
                "invalid_token",
                "an access token is required",
                "missing_token",
            ),
            (
                BearerError::Malformed("send one \"Authorization\" header".into()).into(),
                401,
                Some(format!("{invalid}\"send one 'Authorization' header\"")),
                "invalid_token",
                "send one \"Authorization\" header",
                "malformed_token",
            ),
            (
                BearerError::Inactive.into(),
                401,
                Some(format!(
                    "{invalid}\"the access token is invalid, expired or revoked\""
                )),
                "invalid_token",
                "the access token is invalid, expired or revoked",
                "inactive_token",
            ),
            (
                BearerError::WrongClient.into(),
                401,
                Some(format!(
                    "{invalid}\"the access token was not issued to this client\""
                )),
                "invalid_token",
                "the access token was not issued to this client",
                "wrong_client",
            ),
            (
                BearerError::CertificateMismatch.into(),
                401,
                Some(format!(
                    "{invalid}\"the access token is not bound to the client certificate of this connection\""
                )),
                "invalid_token",
                "the access token is not bound to the client certificate of this connection",
                "certificate_mismatch",
            ),
            (
                BearerError::InsufficientScope("cdr:registration".into()).into(),
                403,
                Some(r#"Bearer error="insufficient_scope", scope="cdr:registration""#.into()),
                "insufficient_scope",
                "the access token lacks the scope cdr:registration",
                "insufficient_scope",
            ),
            (
                ProxyError::UnknownClient {
                    error: "invalid_request",
                    description: "The client is unknown",
                },
                401,
                Some(
                    r#"Bearer error="invalid_request", error_description="The client is unknown""#
                        .into(),
                ),
                "invalid_request",
                "The client is unknown",
                "unknown_client",
            ),
        ];
        for (e, status, challenge, error, description, label) in cases {
            let case = format!("{e:?}");
            let got = parts(e).await;
            assert_eq!(got.0, status, "{case}");
            assert_eq!(got.1, challenge, "{case}");
            assert_eq!(got.2, None, "{case}");
            assert_eq!(
                got.3,
                json!({"error": error, "error_description": description}),
                "{case}"
            );
            assert_eq!(got.4, label, "{case}");
        }
    }

    #[tokio::test]
    async fn a_client_the_cdr_register_does_not_list_as_active_is_refused_in_each_endpoint_s_words()
    {
        let not_active = |at| ProxyError::RegisterNotActive {
            at,
            entity: "software product",
            status: "INACTIVE".into(),
        };
        let said = "the CDR Register lists this client's software product as INACTIVE";
        for (at, status, error) in [
            (
                RegisterCheck::Registration,
                400,
                "unapproved_software_statement",
            ),
            (RegisterCheck::Management, 403, "invalid_client"),
            (RegisterCheck::OAuth, 400, "invalid_client"),
        ] {
            let (got, challenge, retry, body, label) = parts(not_active(at)).await;
            assert_eq!((got, challenge, retry), (status, None, None), "{at:?}");
            assert_eq!(
                body,
                json!({"error": error, "error_description": said}),
                "{at:?}"
            );
            assert_eq!(label, "register_not_active");
        }
        let unlisted = ProxyError::RegisterNotActive {
            at: RegisterCheck::OAuth,
            entity: "data recipient",
            status: String::new(),
        };
        assert_eq!(
            parts(unlisted).await.3["error_description"],
            "the CDR Register does not list this client's data recipient"
        );
        let (status, _, retry, body, label) = parts(ProxyError::RegisterStatusUnconfirmed).await;
        assert_eq!((status, retry.as_deref()), (503, Some("5")));
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(label, "register_status_unconfirmed");
        assert_eq!(ProxyError::RegisterStatusUnconfirmed.side(), Side::Internal);
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_checked_is_a_503_without_a_challenge() {
        let e = ProxyError::from(BearerError::Unavailable(
            "http://idp.internal/x down".into(),
        ));
        assert_eq!(e.side(), Side::Upstream);
        let (status, challenge, retry, body, label) = parts(e).await;
        assert_eq!(status, 503);
        assert_eq!(challenge, None);
        assert_eq!(retry.as_deref(), Some("5"));
        assert_eq!(
            body,
            json!({"error": "temporarily_unavailable",
                   "error_description": "the access token cannot be checked right now; try again later"})
        );
        assert_eq!(label, "token_validation_unavailable");
        assert_eq!(ProxyError::from(BearerError::Inactive).side(), Side::Client);
    }

    #[test]
    fn no_content_has_no_body_and_is_not_cached() {
        let resp = no_content();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(resp.headers().len(), 1);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    }
}
