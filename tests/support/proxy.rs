//! Starts dcr-proxy in-process on port 0 for a test. Left to the lead, who owns `serve` and its config;
//! it will build on `pki`, `jwks_server`, `upstream` and `client` from this module tree.
