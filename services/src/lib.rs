//! Linkage's I/O edge: configuration, the event stores, the HTTP API and the command line.
//! Everything with a socket, a pool or a file lives here; the domain stays in the crates below.

pub mod anchor;
pub mod auth;
pub mod billing;
pub mod bus;
pub mod clock;
pub mod command;
pub mod config;
pub mod error;
pub mod fhir_notify;
pub mod http;
pub mod oidc;
pub mod projector;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use clock::Clock;
pub use config::Config;
pub use startup::{Application, StartupError};
