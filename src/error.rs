//! The one place where an error becomes an HTTP status and a JSON body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

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
    /// RFC 6750: 401 (or 403 for insufficient_scope) with a WWW-Authenticate challenge.
    #[error("{label}: {description}")]
    Bearer {
        status: StatusCode,
        challenge: HeaderValue,
        error: &'static str,
        description: String,
        label: &'static str,
    },
    /// Another change to the same registration is in flight (or awaiting reconciliation).
    #[error("registration busy")]
    Busy,
    #[error("token validation unavailable: {0}")]
    TokenValidationUnavailable(String),
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
    #[error("internal error: {0}")]
    Internal(String),
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
            | ProxyError::Bearer { .. }
            | ProxyError::MethodNotAllowed { .. } => Side::Client,
            ProxyError::TokenValidationUnavailable(_) => Side::Upstream,
            ProxyError::Busy => Side::Internal,
            ProxyError::UpstreamUnavailable(_) | ProxyError::UpstreamTimeout => Side::Upstream,
            ProxyError::StoreUnavailable(_) | ProxyError::Internal(_) => Side::Internal,
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
            ProxyError::Bearer { label, .. } => label,
            ProxyError::Busy => "busy",
            ProxyError::TokenValidationUnavailable(_) => "token_validation_unavailable",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::UpstreamUnavailable(_) => "upstream_unavailable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::StoreUnavailable(_) => "store_unavailable",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// Status and body. Upstream and internal details stay in the logs; the client gets generic words.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, code, description) = match self {
            ProxyError::Rejected { code, description } => {
                (StatusCode::BAD_REQUEST, code.as_str(), description.clone())
            }
            ProxyError::NoClientCertificate => (
                StatusCode::FORBIDDEN,
                "invalid_client",
                "this endpoint needs a client certificate issued by a CA this bank trusts, presented in the TLS handshake".into(),
            ),
            ProxyError::PayloadTooLarge(n) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the request body is larger than {n} bytes"),
            ),
            ProxyError::UnsupportedMediaType(ct) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                format!(
                    "content type `{ct}` is not accepted: send the signed request JWT as application/jwt or application/jose"
                ),
            ),
            ProxyError::NotFound => (StatusCode::NOT_FOUND, "invalid_request", "no such endpoint".into()),
            ProxyError::Bearer {
                status,
                error,
                description,
                ..
            } => (*status, *error, description.clone()),
            ProxyError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "another change to this registration is in progress; try again shortly".into(),
            ),
            ProxyError::TokenValidationUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the access token cannot be checked right now; try again later".into(),
            ),
            ProxyError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("method not allowed here; allowed: {allow}"),
            ),
            ProxyError::UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                "the authorisation server is unavailable; try again later".into(),
            ),
            ProxyError::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "the authorisation server did not answer in time; try again later".into(),
            ),
            ProxyError::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "registrations are temporarily unavailable; try again later".into(),
            ),
            ProxyError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "an internal error occurred".into(),
            ),
        };
        let mut resp = json_response(
            status,
            &json!({"error": code, "error_description": description}),
        );
        resp.extensions_mut().insert(ErrorLabel(self.code()));
        match self {
            ProxyError::MethodNotAllowed { allow } => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ProxyError::StoreUnavailable(_)
            | ProxyError::Busy
            | ProxyError::TokenValidationUnavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ProxyError::Bearer { challenge, .. } => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            _ => {}
        }
        resp
    }
}

/// Carried in response extensions so the request metric can label the error without re-parsing.
#[derive(Clone, Copy, Debug)]
pub struct ErrorLabel(pub &'static str);

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
