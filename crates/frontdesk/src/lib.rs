//! Frontdesk: an identity edge for apps that sign users in with Clerk and keep their
//! data in Postgres. `run` starts the whole service on listeners bound by the caller,
//! so the binary and the tests start it the same way.

pub mod api_auth;
pub mod app;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
#[cfg(feature = "emulator")]
pub mod devmode;
pub mod error;
pub mod events;
pub mod gateway;
pub mod generations;
pub mod http;
pub mod json;
pub mod live;
pub mod ops;
pub mod proxy;
pub mod ratelimit;
pub mod redis_link;
pub mod singleflight;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod upstream;
pub mod users;
pub mod webhooks;

pub use app::{App, AppState, Listeners, run};
pub use config::Config;
pub use error::{Error, Result};
