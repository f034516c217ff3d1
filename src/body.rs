//! The response body every handler returns, and the error type it carries.

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type RespBody = BoxBody<Bytes, BoxError>;

pub fn boxed(r: Response<Full<Bytes>>) -> Response<RespBody> {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}
