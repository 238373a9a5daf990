//! The one integration-test binary of the `frontdesk` crate. Each module is a
//! capability; `support` holds the test ground (a private Postgres database and Redis
//! key prefix per test, listeners on port 0).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

mod support;

mod availability;
mod api_auth;
mod binary;
mod config;
mod context;
mod fleet;
mod http;
mod migrations;
mod ops;
mod proxy_paths;
mod props;
mod tls;
mod tokens;
mod upstream;
mod users;
mod webhooks;
