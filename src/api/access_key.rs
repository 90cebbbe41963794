//! `AccessKeyService`: named, long-lived keys; the secret is shown once, at creation and at
//! reset, and never in a listing.

use tonic::{Request, Response, Status};

use super::{Api, caller, status::to_status, timestamp};
use crate::{
    broker::NewKey,
    pb::{
        storage::AccessKeyRecord,
        v1::{
            AccessKey, CreateAccessKeyRequest, CreateAccessKeyResponse, DeleteAccessKeyRequest,
            DeleteAccessKeyResponse, GetAccessKeyRequest, ListAccessKeysRequest,
            ListAccessKeysResponse, ResetAccessKeyRequest, ResetAccessKeyResponse,
            UpdateAccessKeyRequest, access_key_service_server::AccessKeyService,
        },
    },
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
        created_at: timestamp(record.created_at),
        updated_at: timestamp(record.updated_at),
        last_used_at: timestamp(record.last_used_at),
        expires_at: timestamp(record.expires_at),
        secret_prefix: record.secret_prefix.clone(),
        service: record.service,
        inline_policy: record.inline_policy.clone(),
        roles: record.roles.clone(),
    }
}

/// The fields of a create request as the broker takes them.
pub fn new_key(req: &CreateAccessKeyRequest) -> NewKey<'_> {
    NewKey {
        owner: &req.owner,
        name: &req.name,
        description: &req.description,
        project_ids: &req.project_ids,
        permissions: &req.permissions,
        inline_policy: &req.inline_policy,
        roles: &req.roles,
        service: req.service,
        expires_at: req.expires_at,
    }
}

#[tonic::async_trait]
impl AccessKeyService for Api {
    async fn create_access_key(
        &self,
        request: Request<CreateAccessKeyRequest>,
    ) -> Result<Response<CreateAccessKeyResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let created = self
            .broker
            .create_access_key(&caller, new_key(&req), self.broker.now())
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
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .broker
            .list_access_keys(
                &caller,
                &req.owner,
                req.show_all,
                req.page_size,
                &req.page_token,
                req.offset,
                &req.filter,
                &req.order_by,
            )
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
        let id = request.into_inner().id;
        let key = self.broker.get_access_key(&id).map_err(to_status)?;
        Ok(Response::new(to_proto(&key)))
    }

    async fn update_access_key(
        &self,
        request: Request<UpdateAccessKeyRequest>,
    ) -> Result<Response<AccessKey>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let changes = req.key.unwrap_or_default();
        let (key, revoked) = self
            .broker
            .update_access_key(&caller, &req.id, &paths, &changes, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(key = %key.id, fields = ?paths, revoked, "updated access key");
        Ok(Response::new(to_proto(&key)))
    }

    async fn delete_access_key(
        &self,
        request: Request<DeleteAccessKeyRequest>,
    ) -> Result<Response<DeleteAccessKeyResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        let revoked_tokens = self
            .broker
            .delete_access_key(&caller, &id, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(key = %id, revoked_tokens, "deleted access key");
        Ok(Response::new(DeleteAccessKeyResponse { revoked_tokens }))
    }

    async fn reset_access_key(
        &self,
        request: Request<ResetAccessKeyRequest>,
    ) -> Result<Response<ResetAccessKeyResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let reset = self
            .broker
            .reset_access_key(
                &caller,
                &req.id,
                req.old_secret_expires_at,
                self.broker.now(),
            )
            .await
            .map_err(to_status)?;
        tracing::info!(key = %reset.record.id, "reset access key");
        Ok(Response::new(ResetAccessKeyResponse {
            key: Some(to_proto(&reset.record)),
            secret: reset.secret.expose().to_owned(),
        }))
    }
}
