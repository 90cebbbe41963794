//! The claims of a broker access token (DESIGN §2), shared by the signer and every verifier.

use serde::{Deserialize, Serialize};

/// Claims carried by every access token; the field names are the wire names of DESIGN §2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the broker's configured issuer.
    pub iss: String,
    /// Subject id of the caller the token acts for.
    pub sub: String,
    /// Audience the token is meant for.
    pub aud: String,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not-before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Unique token id; the key of the token record in the store.
    pub jti: String,
    /// Projects the token may act on (`*` for every project).
    pub prj: Vec<String>,
    /// Permissions the token holds, as granted (before implication).
    pub perm: Vec<String>,
    /// The jti or access-key id of the credential that authorised this token.
    pub par: String,
    /// Delegation depth: 0 when minted from an access key.
    pub dep: u32,
}
