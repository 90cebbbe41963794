//! gRPC surface: the generated services wired to the [`Broker`], one file per service. Each
//! file holds, for each of its RPCs, the handler and the request's [`Guarded`] impl (its
//! route, and what it shows policy), and turns proto into core calls and results back into
//! proto.
//!
//! **Architecture invariant:** handlers hold no business rule and read no store; they take
//! the [`Caller`] the auth layer put in the request extensions, get an
//! [`crate::authz::Authorized`] proof from [`Api::authorize`], and hand it to a core method.
//! Errors become `tonic::Status` only in [`status::to_status`].

pub mod access_key;
pub mod auth;
pub mod envoy;
pub mod status;
pub mod subject;
pub mod token;
pub mod upstream;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::{
    authz::{self, Authorized, Guarded, Route},
    broker::{Broker, Caller},
    pb::v1 as pb,
};

/// Every RPC the broker serves, by path: the auth layer refuses any path not here (or in
/// [`auth::PUBLIC_SERVICES`]). Adding an RPC adds its request type here.
pub const ROUTES: [Route; 22] = [
    <pb::CreateAccessTokenRequest as Guarded>::ROUTE,
    <pb::IntrospectTokenRequest as Guarded>::ROUTE,
    <pb::RevokeAccessTokenRequest as Guarded>::ROUTE,
    <pb::GetJwksRequest as Guarded>::ROUTE,
    <pb::CreateSubjectRequest as Guarded>::ROUTE,
    <pb::GetSubjectRequest as Guarded>::ROUTE,
    <pb::ListSubjectsRequest as Guarded>::ROUTE,
    <pb::DeleteSubjectRequest as Guarded>::ROUTE,
    <pb::CreateAccessKeyRequest as Guarded>::ROUTE,
    <pb::ListAccessKeysRequest as Guarded>::ROUTE,
    <pb::GetAccessKeyRequest as Guarded>::ROUTE,
    <pb::UpdateAccessKeyRequest as Guarded>::ROUTE,
    <pb::DeleteAccessKeyRequest as Guarded>::ROUTE,
    <pb::ResetAccessKeyRequest as Guarded>::ROUTE,
    <pb::CreateUpstreamRequest as Guarded>::ROUTE,
    <pb::GetUpstreamRequest as Guarded>::ROUTE,
    <pb::ListUpstreamsRequest as Guarded>::ROUTE,
    <pb::UpdateUpstreamRequest as Guarded>::ROUTE,
    <pb::DeleteUpstreamRequest as Guarded>::ROUTE,
    <pb::IssueUpstreamTokenRequest as Guarded>::ROUTE,
    <pb::RevokeUpstreamTokenRequest as Guarded>::ROUTE,
    <envoy::MeshRequest<'static> as Guarded>::ROUTE,
];

/// The route of a `/package.Service/Method` path, if the broker serves it.
pub fn route(path: &str) -> Option<Route> {
    ROUTES.iter().find(|r| r.path == path).copied()
}

/// Converts seconds since the epoch into a protobuf timestamp; 0 means unset.
fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    precise_timestamp(seconds, 0)
}

/// A stored time with its sub-second part (a record's `*_nanos` field) as a protobuf
/// timestamp; 0 seconds means unset, and nanos out of range (never written) read as 0.
fn precise_timestamp(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    let nanos = if (0..1_000_000_000).contains(&nanos) {
        nanos
    } else {
        0
    };
    (seconds > 0).then_some(prost_types::Timestamp { seconds, nanos })
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

    /// Decodes nothing more: takes the request the auth layer authenticated and asks policy.
    /// The caller is absent only if the layer was bypassed, a wiring bug answered as
    /// UNAUTHENTICATED rather than a panic.
    fn authorize<R: Guarded>(&self, request: Request<R>) -> Result<Authorized<R::Plan>, Status> {
        let (_, mut extensions, message) = request.into_parts();
        let caller = extensions.remove::<Caller>().ok_or_else(|| {
            status::to_status(
                crate::broker::AuthError::Missing("missing credential".to_owned()).into(),
            )
        })?;
        authz::authorize(&self.broker, caller, message).map_err(status::to_status)
    }
}
