//! The crate error: the union of each concern's own error enum (authentication, the policy
//! gate, tokens, access keys, subjects, upstreams, the auth layer's transport refusals) and
//! the few kinds every concern raises. Variants name what happened, never a gRPC code: the
//! code and the stable reason are chosen in exactly one place, `api::status`.

use crate::domain::{Exceeded, validate::FieldViolation};

/// Every failure an RPC can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each field says what was wrong.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Vec<FieldViolation>),
    /// The request asks for more than the authorising credential holds (the derivation rule).
    #[error("{0}")]
    Exceeds(Exceeded),
    /// The derivation rule refused only because the delegation chain is at its maximum depth.
    #[error("{0}")]
    TooDeep(String),
    /// The credential was missing or refused.
    #[error(transparent)]
    Auth(#[from] crate::broker::AuthError),
    /// Policy (or a rule of the gate) refused the request.
    #[error(transparent)]
    Denied(#[from] crate::authz::Denied),
    /// An access-token operation failed.
    #[error(transparent)]
    Token(#[from] crate::broker::TokenError),
    /// An access-key operation failed.
    #[error(transparent)]
    AccessKey(#[from] crate::broker::AccessKeyError),
    /// A subject operation failed.
    #[error(transparent)]
    Subject(#[from] crate::broker::SubjectError),
    /// An upstream or lease operation failed, at the broker or at the vendor.
    #[error(transparent)]
    Upstream(#[from] crate::broker::UpstreamError),
    /// A sidecar's request was refused after its token authenticated (Envoy `Check`).
    #[error(transparent)]
    Mesh(#[from] crate::broker::MeshError),
    /// The auth layer refused the request's transport (framing, size, compression, bearer).
    #[error(transparent)]
    Request(#[from] crate::api::auth::RequestError),
    /// An internal failure outside storage and keys; the cause is logged, never returned.
    #[error("internal failure")]
    Internal(String),
    /// Storage failed; the cause is logged, never returned.
    #[error("storage failure")]
    Store(#[from] crate::store::StoreError),
    /// Key handling failed; the cause is logged, never returned.
    #[error("key failure")]
    Key(#[from] crate::keys::KeyError),
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldViolation::new(field, description)])
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}
