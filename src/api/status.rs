//! The one place where crate errors become `tonic::Status` (DESIGN §5), with `google.rpc`
//! details: BadRequest field violations and an ErrorInfo whose reason is stable.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// `google.rpc.ErrorInfo.domain` of every error the broker returns.
pub const ERROR_DOMAIN: &str = "token-broker";

/// Maps an error to its status. Storage and key failures are logged here with their cause
/// and answered with a generic message.
pub fn to_status(error: Error) -> Status {
    let mut details = ErrorDetails::new();
    let (code, reason) = match &error {
        Error::InvalidArgument(violations) => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            (Code::InvalidArgument, "INVALID_ARGUMENT")
        }
        Error::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        Error::Exceeds(exceeded) => {
            let mut meta = HashMap::new();
            if !exceeded.projects.is_empty() {
                meta.insert("projects".to_owned(), exceeded.projects.join(","));
            }
            if !exceeded.permissions.is_empty() {
                meta.insert("permissions".to_owned(), exceeded.permissions.join(","));
            }
            if let Some((asked, left)) = exceeded.lifetime {
                let asked = if asked == crate::domain::derive::NEVER {
                    "never".to_owned()
                } else {
                    asked.to_string()
                };
                meta.insert("requested_seconds".to_owned(), asked);
                meta.insert("remaining_seconds".to_owned(), left.to_string());
            }
            if let Some(restrictions) = &exceeded.restrictions {
                meta.insert("restrictions".to_owned(), restrictions.clone());
            }
            if let Some((depth, max)) = exceeded.depth {
                meta.insert("depth".to_owned(), depth.to_string());
                meta.insert("max_depth".to_owned(), max.to_string());
            }
            details.set_error_info("GRANT_EXCEEDED", ERROR_DOMAIN, meta);
            return Status::with_error_details(Code::PermissionDenied, error.to_string(), details);
        }
        Error::PermissionDenied { reason, .. } => (Code::PermissionDenied, *reason),
        Error::NotFound(_) => (Code::NotFound, "NOT_FOUND"),
        Error::AlreadyExists(_) => (Code::AlreadyExists, "ALREADY_EXISTS"),
        Error::ResourceExhausted(_) => (Code::ResourceExhausted, "LIMIT_REACHED"),
        Error::Conflict(_) => (Code::Aborted, "CONFLICT"),
        Error::FailedPrecondition(_) => (Code::FailedPrecondition, "FAILED_PRECONDITION"),
        Error::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
        Error::Unsupported(_) => (Code::Unimplemented, "UNSUPPORTED"),
        Error::Cancelled(_) => (Code::Cancelled, "CANCELLED"),
        Error::Internal(cause) => {
            tracing::error!(cause = %cause, "internal failure");
            (Code::Internal, "INTERNAL")
        }
        Error::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            (Code::Internal, "INTERNAL")
        }
        Error::Key(e) => {
            tracing::error!(error = %e, "key failure");
            (Code::Internal, "INTERNAL")
        }
    };
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    let message = match code {
        Code::Internal => {
            "internal error: the broker could not complete the request; retry later".to_owned()
        }
        _ => error.to_string(),
    };
    Status::with_error_details(code, message, details)
}
