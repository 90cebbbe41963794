//! `AccessKeyService`: named, long-lived keys; the secret is shown once, at creation and at
//! reset, and never in a listing.

use tonic::{Request, Response, Status};

use super::{Api, precise_timestamp, status::to_status, timestamp};
use crate::{
    authz::{self, Described, Guarded, Route},
    broker::{Broker, Caller, Found, NewKey},
    error::Error,
    pb::{
        storage::AccessKeyRecord,
        v1::{
            AccessKey, CreateAccessKeyRequest, CreateAccessKeyResponse, DeleteAccessKeyRequest,
            DeleteAccessKeyResponse, GetAccessKeyRequest, ListAccessKeysRequest,
            ListAccessKeysResponse, ResetAccessKeyRequest, ResetAccessKeyResponse,
            UpdateAccessKeyRequest, access_key_service_server::AccessKeyService,
        },
    },
    policy::{Attr, EntityDesc, Record},
};

/// The listing form of a key: never its secret or hash.
pub fn to_proto(record: &AccessKeyRecord) -> AccessKey {
    let grant = record.grant.clone().unwrap_or_default();
    AccessKey {
        id: record.id.clone(),
        owner: record.owner.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        project_ids: grant.projects,
        permissions: grant.permissions,
        created_at: precise_timestamp(record.created_at, record.created_nanos),
        updated_at: precise_timestamp(record.updated_at, record.updated_nanos),
        last_used_at: timestamp(record.last_used_at),
        expires_at: timestamp(record.expires_at),
        secret_prefix: record.secret_prefix.clone(),
        service: record.service,
        inline_policy: record.inline_policy.clone(),
        roles: record.roles.clone(),
    }
}

impl Guarded for CreateAccessKeyRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/CreateAccessKey",
        "CreateAccessKey",
    )
    .manages_keys();
    type Plan = Self;

    /// The owner as the resource, and the grant the key would hold as `requested`.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let new = NewKey::of(&self);
        let owner = if new.owner.is_empty() {
            caller.subject.id.as_str()
        } else {
            new.owner
        };
        let (resource, record) = authz::stored_subject_entity(broker, owner)?;
        // Policy decides before validation speaks, so nobody learns about another owner's
        // grant; an invalid request shows policy an empty grant and is refused by the core
        // with the precise error. `key_reach` parses no inline policy: that waits until
        // policy has allowed the call.
        let requested = record
            .and_then(|record| broker.keys.key_reach(caller, &record, &new, now).ok())
            .map(|reach| authz::grant_attrs(broker.model(), &reach.grant))
            .unwrap_or_else(|| {
                Record::new()
                    .with("projects", Attr::strings::<String>([]))
                    .with("all_projects", false)
                    .with("permissions", Attr::strings::<String>([]))
            });
        let context = authz::authenticated_context(caller, now).with("requested", requested);
        Ok(Described::new(resource, context, self))
    }
}

impl Guarded for ListAccessKeysRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/ListAccessKeys",
        "ListAccessKeys",
    )
    .manages_keys();
    type Plan = Self;

    /// Everyone's keys are the broker's; one owner's are that subject's.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let resource = if self.show_all {
            EntityDesc::broker()
        } else if self.owner.is_empty() {
            caller.view.principal.clone()
        } else {
            authz::stored_subject_entity(broker, &self.owner)?.0
        };
        Ok(Described::authenticated(caller, now, resource, self))
    }
}

impl Guarded for GetAccessKeyRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/GetAccessKey",
        "GetAccessKey",
    )
    .manages_keys();
    type Plan = Found<AccessKeyRecord>;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let (resource, record) = authz::key_entity(broker, caller, &self.id)?;
        Ok(Described::authenticated(
            caller,
            now,
            resource,
            Found::new(self.id, record),
        ))
    }
}

impl Guarded for UpdateAccessKeyRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/UpdateAccessKey",
        "UpdateAccessKey",
    )
    .manages_keys();
    type Plan = Self;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let (resource, _) = authz::key_entity(broker, caller, &self.id)?;
        Ok(Described::authenticated(caller, now, resource, self))
    }
}

impl Guarded for DeleteAccessKeyRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/DeleteAccessKey",
        "DeleteAccessKey",
    )
    .manages_keys();
    /// The key id.
    type Plan = String;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<String>, Error> {
        let (resource, _) = authz::key_entity(broker, caller, &self.id)?;
        Ok(Described::authenticated(caller, now, resource, self.id))
    }
}

impl Guarded for ResetAccessKeyRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.AccessKeyService/ResetAccessKey",
        "ResetAccessKey",
    )
    .manages_keys();
    type Plan = Self;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        let (resource, _) = authz::key_entity(broker, caller, &self.id)?;
        Ok(Described::authenticated(caller, now, resource, self))
    }
}

#[tonic::async_trait]
impl AccessKeyService for Api {
    async fn create_access_key(
        &self,
        request: Request<CreateAccessKeyRequest>,
    ) -> Result<Response<CreateAccessKeyResponse>, Status> {
        let authorized = self.authorize(request)?;
        let created = self
            .broker
            .keys
            .create_access_key(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(key = %created.record.id, owner = %created.record.owner, "created access key");
        Ok(Response::new(CreateAccessKeyResponse {
            id: created.record.id.clone(),
            secret: created.secret.expose().to_owned(),
            key: Some(to_proto(&created.record)),
        }))
    }

    async fn list_access_keys(
        &self,
        request: Request<ListAccessKeysRequest>,
    ) -> Result<Response<ListAccessKeysResponse>, Status> {
        let authorized = self.authorize(request)?;
        let page = self
            .broker
            .keys
            .list_access_keys(authorized)
            .map_err(to_status)?;
        Ok(Response::new(ListAccessKeysResponse {
            keys: page.keys.iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }))
    }

    async fn get_access_key(
        &self,
        request: Request<GetAccessKeyRequest>,
    ) -> Result<Response<AccessKey>, Status> {
        let authorized = self.authorize(request)?;
        let key = self
            .broker
            .keys
            .get_access_key(authorized)
            .map_err(to_status)?;
        Ok(Response::new(to_proto(&key)))
    }

    async fn update_access_key(
        &self,
        request: Request<UpdateAccessKeyRequest>,
    ) -> Result<Response<AccessKey>, Status> {
        let authorized = self.authorize(request)?;
        let paths = authorized
            .plan()
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let (key, revoked) = self
            .broker
            .keys
            .update_access_key(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(key = %key.id, fields = ?paths, revoked, "updated access key");
        Ok(Response::new(to_proto(&key)))
    }

    async fn delete_access_key(
        &self,
        request: Request<DeleteAccessKeyRequest>,
    ) -> Result<Response<DeleteAccessKeyResponse>, Status> {
        let authorized = self.authorize(request)?;
        let id = authorized.plan().clone();
        let revoked_tokens = self
            .broker
            .keys
            .delete_access_key(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(key = %id, revoked_tokens, "deleted access key");
        Ok(Response::new(DeleteAccessKeyResponse { revoked_tokens }))
    }

    async fn reset_access_key(
        &self,
        request: Request<ResetAccessKeyRequest>,
    ) -> Result<Response<ResetAccessKeyResponse>, Status> {
        let authorized = self.authorize(request)?;
        let reset = self
            .broker
            .keys
            .reset_access_key(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(key = %reset.record.id, "reset access key");
        Ok(Response::new(ResetAccessKeyResponse {
            key: Some(to_proto(&reset.record)),
            secret: reset.secret.expose().to_owned(),
        }))
    }
}
