//! atgate: an authenticating reverse proxy for the atproto ecosystem.
//!
//! The library exposes the request pipeline as tower layers (see [`stack`]), so a Rust
//! service can embed the same checks without a proxy hop; the `atgate` binary wires
//! them in front of a reverse proxy ([`app::Gateway`]).
#![warn(missing_docs, unreachable_pub, clippy::await_holding_lock)]

pub mod app;
pub mod assertion;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod identity;
pub mod jose;
pub mod layers;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod respond;
pub mod router;
pub mod scope;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod tools;

/// The version reported by `atgate --version` and the `atgate_build_info` metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
