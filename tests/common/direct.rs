//! Calls into the library's core for process tests, each through `authz::authorize`, exactly
//! as a handler makes them: policy decides first, and the core method takes the proof.

use token_broker::{
    authz,
    broker::{Broker, Caller, KeyWithSecret, Minted, NewKey},
    error::Error,
    pb::{storage::AccessKeyRecord, v1 as pb},
};

/// CreateAccessKey as `caller`, with the fields of `new`.
pub async fn create_key(
    b: &Broker,
    caller: &Caller,
    new: NewKey<'_>,
) -> Result<KeyWithSecret, Error> {
    let request = pb::CreateAccessKeyRequest {
        owner: new.owner.to_owned(),
        name: new.name.to_owned(),
        description: new.description.to_owned(),
        project_ids: new.project_ids.to_vec(),
        permissions: new.permissions.to_vec(),
        inline_policy: new.inline_policy.to_owned(),
        roles: new.roles.to_vec(),
        service: new.service,
        expires_at: new.expires_at,
    };
    b.keys
        .create_access_key(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// CreateAccessToken as `caller`.
pub async fn mint(
    b: &Broker,
    caller: &Caller,
    project_ids: &[String],
    permissions: &[String],
    expires_in_hours: Option<f64>,
) -> Result<Minted, Error> {
    let request = pb::CreateAccessTokenRequest {
        project_ids: project_ids.to_vec(),
        permissions: permissions.to_vec(),
        expires_in_hours,
        ..Default::default()
    };
    b.tokens
        .mint(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// ResetAccessKey of key `id` as `caller`, with no grace for the old secret.
pub async fn reset_key(b: &Broker, caller: &Caller, id: &str) -> Result<KeyWithSecret, Error> {
    let request = pb::ResetAccessKeyRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    b.keys
        .reset_access_key(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// UpdateAccessKey of key `id` as `caller`: the fields named in `paths`, from `changes`.
pub async fn update_key(
    b: &Broker,
    caller: &Caller,
    id: &str,
    paths: &[String],
    changes: &pb::AccessKey,
) -> Result<(AccessKeyRecord, u32), Error> {
    let request = pb::UpdateAccessKeyRequest {
        id: id.to_owned(),
        key: Some(changes.clone()),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.to_vec(),
        }),
    };
    b.keys
        .update_access_key(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// IssueUpstreamToken from `upstream` as `caller`.
pub async fn issue(
    b: &Broker,
    caller: &Caller,
    upstream: &str,
    project_ids: &[String],
    permissions: &[String],
    expires_in_hours: Option<f64>,
) -> Result<token_broker::broker::IssuedLease, Error> {
    let request = pb::IssueUpstreamTokenRequest {
        upstream: upstream.to_owned(),
        project_ids: project_ids.to_vec(),
        permissions: permissions.to_vec(),
        expires_in_hours,
    };
    b.upstreams
        .issue_upstream_token(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// RevokeAccessToken of `jti` as `caller`; how many tokens were revoked.
pub async fn revoke(b: &Broker, caller: &Caller, jti: &str) -> Result<u32, Error> {
    let request = pb::RevokeAccessTokenRequest {
        jti: jti.to_owned(),
        ..Default::default()
    };
    b.tokens
        .revoke(authz::authorize(b, caller.clone(), request)?)
        .await
}

/// DeleteAccessKey of key `id` as `caller`; how many tokens were revoked with it.
pub async fn delete_key(b: &Broker, caller: &Caller, id: &str) -> Result<u32, Error> {
    let request = pb::DeleteAccessKeyRequest { id: id.to_owned() };
    b.keys
        .delete_access_key(authz::authorize(b, caller.clone(), request)?)
        .await
}
