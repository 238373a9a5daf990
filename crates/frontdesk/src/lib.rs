//! Frontdesk: an identity edge for apps that sign users in with Clerk and keep their
//! data in Postgres. [`Frontdesk`] (built by [`FrontdeskBuilder`] from a [`Config`]) is
//! the library: it owns every capability and its background tasks. A Rust app wraps its
//! router in [`FrontdeskLayer`] and uses the extractors [`Session`], [`OptionalSession`],
//! [`Context`] and [`RequireRole`]; the service (`run`, [`App`]) serves the same
//! façade on two listeners, so the binary and the tests start it the same way.

pub mod api_auth;
pub mod app;
pub mod bulk;
pub mod bus;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod context;
#[cfg(feature = "emulator")]
pub mod devmode;
pub mod embed;
pub mod error;
pub mod events;
pub mod facade;
pub mod gateway;
pub mod generations;
pub mod http;
pub mod json;
pub mod live;
pub mod ops;
pub mod proxy;
pub mod ratelimit;
pub mod redis_link;
pub mod respcache;
pub mod services;
pub mod singleflight;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod upstream;
pub mod users;
pub mod vitals;
pub mod webhooks;
pub mod weigh;

pub use app::{App, Listeners, run};
pub use config::Config;
pub use embed::{Context, FrontdeskLayer, OptionalSession, RequireRole, Session};
pub use error::{Error, Result};
pub use facade::{Frontdesk, FrontdeskBuilder};
