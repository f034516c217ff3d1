//! dcr-proxy: regulated Dynamic Client Registration in front of a plain OAuth server.

pub mod replay;
pub mod store;
