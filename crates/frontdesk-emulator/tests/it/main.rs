//! Integration tests: each test starts its own emulator on port 0 and talks HTTP to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod call_log;
mod common;
mod control;
mod orgs;
mod tokens;
mod users;
mod webhooks;
