//! `AccessKeyService`: named, long-lived keys; the secret is shown once, at creation.

use tonic::{Request, Response, Status};

use super::{Api, caller, status::to_status, timestamp};
use crate::{
    broker,
    pb::{
        storage::AccessKeyRecord,
        v1::{
            AccessKey, CreateAccessKeyRequest, CreateAccessKeyResponse,
            access_key_service_server::AccessKeyService,
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
            .create_access_key(
                &caller,
                &req.owner,
                &req.name,
                &req.description,
                &req.project_ids,
                &req.permissions,
                req.expires_at.map(|t| t.seconds).unwrap_or(0),
                broker::now(),
            )
            .await
            .map_err(to_status)?;
        tracing::info!(key = %created.record.id, owner = %created.record.owner, "created access key");
        Ok(Response::new(CreateAccessKeyResponse {
            id: created.record.id.clone(),
            secret: created.secret.expose().to_owned(),
            key: Some(to_proto(&created.record)),
        }))
    }
}
