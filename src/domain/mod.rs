//! Pure rules of the broker: grants, attenuation, lifetimes and token claims.
//!
//! **Architecture invariant:** nothing here touches tonic, sled, the clock or any I/O; callers
//! pass `now` in, so every rule is testable as a plain function.

pub mod claims;
pub mod derive;
pub mod grant;
pub mod validate;

pub use derive::{Ask, End, Reach, Restrictions, Rules, Yield, derive};
pub use grant::{
    Bound, Exceeded, Grant, MintLimits, MintRequest, PermissionModel, Projects, attenuate,
};
