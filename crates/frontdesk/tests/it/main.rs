//! The one integration-test binary of the `frontdesk` crate. Each module is a
//! capability; `support` holds the test ground (a private Postgres database and Redis
//! key prefix per test, listeners on port 0).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

mod support;

mod aliases;
mod api_auth;
mod availability;
mod batching;
mod binary;
mod bulk;
mod config;
mod console;
mod context;
mod embed;
mod fleet;
mod fleet_budget;
mod gateway;
mod gateway_hot;
mod http;
mod live;
mod memory;
mod migrations;
mod modules;
mod ops;
mod props;
mod proxy_paths;
mod ratelimit;
mod respcache;
mod tls;
mod tokens;
mod upstream;
mod users;
mod webhooks;
