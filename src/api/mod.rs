//! gRPC surface: the generated services wired to the [`Broker`], one file per service, each
//! turning proto into domain calls and results back into proto.
//!
//! **Architecture invariant:** handlers hold no business rule and no authorization; they
//! read the [`Caller`] the auth layer put in the request extensions and call the broker.
//! Errors become `tonic::Status` only in [`status::to_status`].

pub mod access_key;
pub mod auth;
pub mod status;
pub mod subject;
pub mod token;
pub mod upstream;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::broker::{Broker, Caller};

/// What the auth layer left in the request extensions for the handler: the [`Caller`], and
/// for mints and upstream tokens the plan it showed to policy. Absent only if the layer was
/// bypassed, a wiring bug answered as UNAUTHENTICATED rather than a panic.
fn from_layer<E: Clone + Send + Sync + 'static, T>(request: &Request<T>) -> Result<E, Status> {
    request.extensions().get::<E>().cloned().ok_or_else(|| {
        status::to_status(crate::error::Error::Unauthenticated(
            "missing credential".to_owned(),
        ))
    })
}

/// The caller the auth layer authenticated.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    from_layer(request)
}

/// Converts seconds since the epoch into a protobuf timestamp; 0 means unset.
fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    (seconds > 0).then_some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// Shared handle every service implementation holds.
#[derive(Clone, Debug)]
pub struct Api {
    broker: Arc<Broker>,
}

impl Api {
    /// Builds the services over one broker.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}
