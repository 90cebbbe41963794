//! `SubjectService`: who may act (admin only, by policy).

use tonic::{Request, Response, Status};

use super::{Api, status::to_status, timestamp};
use crate::{
    domain::validate::quote,
    error::Error,
    pb::{
        storage::SubjectRecord,
        v1::{
            CreateSubjectRequest, DeleteSubjectRequest, DeleteSubjectResponse, GetSubjectRequest,
            ListSubjectsRequest, ListSubjectsResponse, Subject,
            subject_service_server::SubjectService,
        },
    },
};

const DEFAULT_PAGE: i32 = 25;
const MAX_PAGE: i32 = 1000;

fn to_proto(record: SubjectRecord) -> Subject {
    let grant = record.grant.unwrap_or_default();
    Subject {
        subject_id: record.id,
        kind: record.kind,
        project_ids: grant.projects,
        permissions: grant.permissions,
        created_at: timestamp(record.created_at),
    }
}

#[tonic::async_trait]
impl SubjectService for Api {
    async fn create_subject(
        &self,
        request: Request<CreateSubjectRequest>,
    ) -> Result<Response<Subject>, Status> {
        let req = request.into_inner();
        let record = self
            .broker
            .create_subject(
                &req.subject_id,
                req.kind,
                &req.project_ids,
                &req.permissions,
                self.broker.now(),
            )
            .await
            .map_err(to_status)?;
        tracing::info!(created = %record.id, "created subject");
        Ok(Response::new(to_proto(record)))
    }

    async fn get_subject(
        &self,
        request: Request<GetSubjectRequest>,
    ) -> Result<Response<Subject>, Status> {
        let id = request.into_inner().subject_id;
        let record = self
            .broker
            .store
            .subject(&id)
            .map_err(|e| to_status(e.into()))?
            .ok_or_else(|| {
                to_status(Error::NotFound(format!(
                    "subject {} does not exist",
                    quote(&id)
                )))
            })?;
        Ok(Response::new(to_proto(record)))
    }

    async fn list_subjects(
        &self,
        request: Request<ListSubjectsRequest>,
    ) -> Result<Response<ListSubjectsResponse>, Status> {
        let req = request.into_inner();
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => n,
            n => {
                return Err(to_status(Error::invalid(
                    "page_size",
                    format!("`{n}` is out of range: give 1 to {MAX_PAGE}, or 0 for {DEFAULT_PAGE}"),
                )));
            }
        } as usize;
        // The cursor is the last id shown; ids are public to admins, so it need not be sealed.
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let mut records = self
            .broker
            .store
            .list_subjects(after, size + 1)
            .map_err(|e| to_status(e.into()))?;
        let next_page_token = if records.len() > size {
            records.truncate(size);
            records.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListSubjectsResponse {
            subjects: records.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_subject(
        &self,
        request: Request<DeleteSubjectRequest>,
    ) -> Result<Response<DeleteSubjectResponse>, Status> {
        let id = request.into_inner().subject_id;
        let (deleted_keys, revoked_tokens) = self
            .broker
            .delete_subject(&id, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(deleted = %id, deleted_keys, revoked_tokens, "deleted subject");
        Ok(Response::new(DeleteSubjectResponse {
            deleted_keys,
            revoked_tokens,
        }))
    }
}
