//! The one place where crate errors become `tonic::Status` (DESIGN §5), with `google.rpc`
//! details: BadRequest field violations and an ErrorInfo whose reason is stable.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::RequestError;
use crate::{
    broker::{AccessKeyError, AuthError, MeshError, SubjectError, TokenError, UpstreamError},
    error::Error,
    upstream::VendorError,
};

/// `google.rpc.ErrorInfo.domain` of every error the broker returns.
pub const ERROR_DOMAIN: &str = "token-broker";

/// Maps an error to its status: the one place that chooses a gRPC code and a stable
/// `ErrorInfo.reason` for each concern's errors. Storage and key failures are logged here
/// with their cause and answered with a generic message.
pub fn to_status(error: Error) -> Status {
    let mut details = ErrorDetails::new();
    let (code, reason) = match &error {
        Error::Invalid(violations) => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            (Code::InvalidArgument, "INVALID_ARGUMENT")
        }
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
        Error::TooDeep(_) => (Code::PermissionDenied, "DELEGATION_DEPTH_EXCEEDED"),
        Error::Auth(AuthError::Missing(_) | AuthError::Refused(_)) => {
            (Code::Unauthenticated, "UNAUTHENTICATED")
        }
        Error::Denied(denied) => (Code::PermissionDenied, denied.reason),
        Error::Mesh(e) => match e {
            MeshError::NoRoute(_) => (Code::PermissionDenied, "NO_ROUTE"),
            MeshError::Lacks(_) => (Code::PermissionDenied, "GRANT_EXCEEDED"),
        },
        Error::Token(e) => match e {
            TokenError::Unknown(_) => (Code::NotFound, "NOT_FOUND"),
            TokenError::ParentChanged(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        },
        Error::AccessKey(e) => match e {
            AccessKeyError::Unknown(_) | AccessKeyError::OwnerUnknown(_) => {
                (Code::NotFound, "NOT_FOUND")
            }
            AccessKeyError::LimitReached(_) => (Code::ResourceExhausted, "LIMIT_REACHED"),
            AccessKeyError::Changed(_) => (Code::Aborted, "CONFLICT"),
            AccessKeyError::RestrictedCredential(_) => {
                (Code::PermissionDenied, "RESTRICTED_CREDENTIAL")
            }
            AccessKeyError::OldSecret(_) => (Code::PermissionDenied, "OLD_SECRET"),
            AccessKeyError::CallerKeyGone(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        },
        Error::Subject(e) => match e {
            SubjectError::Unknown(_) => (Code::NotFound, "NOT_FOUND"),
            SubjectError::Exists(_) => (Code::AlreadyExists, "ALREADY_EXISTS"),
            SubjectError::Bootstrap(_) => (Code::PermissionDenied, "BOOTSTRAP_SUBJECT"),
        },
        Error::Upstream(e) => match e {
            UpstreamError::UnknownUpstream(_) | UpstreamError::UnknownLease(_) => {
                (Code::NotFound, "NOT_FOUND")
            }
            UpstreamError::Exists(_) => (Code::AlreadyExists, "ALREADY_EXISTS"),
            UpstreamError::CredentialRejected(_) => {
                (Code::FailedPrecondition, "FAILED_PRECONDITION")
            }
            UpstreamError::Vendor(vendor) => match vendor_code(vendor) {
                Some(code_and_reason) => code_and_reason,
                // The vendor found the request malformed: a field violation like ours.
                None => return to_status(Error::invalid("", vendor.to_string())),
            },
            // Never a 4xx (InvalidArgument): the vendor gave no answer, or a 5xx. The lease's
            // id goes in the ErrorInfo, so a client can follow it up.
            UpstreamError::IssueUnanswered {
                error: vendor,
                lease_id,
                ..
            } => {
                let (code, reason) =
                    vendor_code(vendor).unwrap_or((Code::Unavailable, "UNAVAILABLE"));
                let meta = HashMap::from([("lease_id".to_owned(), lease_id.clone())]);
                details.set_error_info(reason, ERROR_DOMAIN, meta);
                return Status::with_error_details(code, error.to_string(), details);
            }
            UpstreamError::RevocationsPending(_) => (Code::Unavailable, "UNAVAILABLE"),
            UpstreamError::CallerChanged(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        },
        Error::Request(e) => match e {
            RequestError::MalformedBearer(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
            RequestError::TooLarge(_) => (Code::ResourceExhausted, "LIMIT_REACHED"),
            RequestError::Compressed(_) => (Code::Unimplemented, "UNSUPPORTED"),
            RequestError::NotOneMessage(description) => {
                return to_status(Error::invalid("", *description));
            }
            RequestError::Unreadable(_) => (Code::Cancelled, "CANCELLED"),
        },
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

/// The code and reason of a vendor failure (DESIGN §5), or `None` when the vendor found the
/// request malformed (answered as an invalid request).
fn vendor_code(e: &VendorError) -> Option<(Code, &'static str)> {
    Some(match e {
        // The stored credential is the broker's to rotate, not the caller's to fix.
        VendorError::Unauthenticated { .. } | VendorError::Refused { .. } => {
            (Code::FailedPrecondition, "FAILED_PRECONDITION")
        }
        VendorError::PermissionDenied { .. } => (Code::PermissionDenied, "VENDOR_DENIED"),
        VendorError::NotFound { .. } => (Code::NotFound, "NOT_FOUND"),
        VendorError::InvalidArgument { .. } => return None,
        VendorError::Conflict { .. } => (Code::Aborted, "CONFLICT"),
        VendorError::RateLimited { .. } => (Code::ResourceExhausted, "LIMIT_REACHED"),
        VendorError::Unavailable { .. } | VendorError::Unreachable { .. } => {
            (Code::Unavailable, "UNAVAILABLE")
        }
    })
}

/// The `reason` of the HTTP 403 that Envoy's `Check` answers for `error`, when the error is
/// a refusal of the request (no route, a grant the token lacks, a policy, an exchange the
/// derivation rule refuses); `None` for a failure of the broker, which is answered as a gRPC
/// error so that Envoy denies without a reason. The one place besides [`to_status`] that
/// decides what an error means to a client.
pub fn mesh_refusal(error: &Error) -> Option<String> {
    match error {
        Error::Mesh(_) | Error::Denied(_) => Some(error.to_string()),
        Error::Exceeds(_) | Error::TooDeep(_) | Error::Invalid(_) => {
            Some(format!("the token exchange is refused: {error}"))
        }
        _ => None,
    }
}
