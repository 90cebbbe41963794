//! token-broker: a gRPC service that mints short-lived, down-scoped access tokens, checks
//! every call against Cedar policies and keeps its state in sled.
//!
//! Map of the crate (see ARCHITECTURE.md for the data flow):
//! - [`domain`]: grants, attenuation, validation, claims: pure rules.
//! - [`keys`]: master key sealing, access-key secrets, JWT signing and verification.
//! - [`policy`]: Cedar schema and policies, loaded once; allow/deny per request.
//! - [`store`]: sled trees, transactions, group commit.
//! - [`broker`]: the application core tying the above together.
//! - [`clock`]: where the broker's time comes from, so tests can drive it.
//! - [`api`]: the gRPC services and the auth layer; errors become statuses here.
//! - [`server`]: wiring of services, health and reflection on a listener.
//! - [`config`], [`telemetry`], [`error`]: typed config, tracing, the crate error.
//! - [`load`]: the `token-broker load` generator, a plain gRPC client of a running broker.

pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod load;
pub mod pb;
pub mod policy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
