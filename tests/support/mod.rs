//! Shared fixtures for the integration tests: include with `mod support;` (or, from an example,
//! `#[path = "../tests/support/mod.rs"] mod support;`).

// Each test binary compiles this whole tree but uses only part of it.
#![allow(dead_code)]

pub mod claims;
pub mod client;
pub mod demo;
pub mod jwks_server;
pub mod keys;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod register;
pub mod store_conformance;
pub mod temp;
pub mod upstream;
pub mod world;
