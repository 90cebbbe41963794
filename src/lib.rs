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
//!
//! The load generator is not part of the library: it is the `token-broker-load` binary
//! (`src/bin/token-broker-load.rs`), a plain gRPC client that uses only [`pb::v1`].

pub mod api;
pub mod authz;
pub mod broker;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod pb;
pub mod policy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
