//! The crate error: one variant per kind of failure a caller can act on. It becomes a
//! `tonic::Status` in exactly one place, `api::status`.

use crate::domain::{Exceeded, validate::FieldViolation};

/// Every failure an RPC can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each field says what was wrong.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No usable credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request asks for more than the authorising credential holds.
    #[error("{0}")]
    Exceeds(Exceeded),
    /// Refused by policy or by an ownership rule; `reason` is a stable machine-readable code.
    #[error("{message}")]
    PermissionDenied {
        /// Stable reason for `google.rpc.ErrorInfo`.
        reason: &'static str,
        /// What was refused and why.
        message: String,
    },
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to serve it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency (a vendor) cannot be reached now; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent change won; the caller should re-read and retry.
    #[error("{0}")]
    Conflict(String),
    /// A limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The client asked for a transport feature the broker does not offer.
    #[error("{0}")]
    Unsupported(String),
    /// The call ended before its request could be read.
    #[error("{0}")]
    Cancelled(String),
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
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}
