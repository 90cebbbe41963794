//! `SubjectService`: who may act (admin only, by policy).

use tonic::{Request, Response, Status};

use super::{Api, precise_timestamp, status::to_status};
use crate::{
    authz::{self, Described, Guarded, Route},
    broker::{Broker, Caller, Found},
    error::Error,
    pb::{
        storage::SubjectRecord,
        v1::{
            CreateSubjectRequest, DeleteSubjectRequest, DeleteSubjectResponse, GetSubjectRequest,
            ListSubjectsRequest, ListSubjectsResponse, Subject, SubjectKind,
            subject_service_server::SubjectService,
        },
    },
    policy::EntityDesc,
};

fn to_proto(record: SubjectRecord) -> Subject {
    let grant = record.grant.unwrap_or_default();
    Subject {
        subject_id: record.id,
        kind: record.kind,
        project_ids: grant.projects,
        permissions: grant.permissions,
        created_at: precise_timestamp(record.created_at, record.created_nanos),
    }
}

impl Guarded for CreateSubjectRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.SubjectService/CreateSubject",
        "CreateSubject",
    );
    /// The validated subject, or why it is invalid (said after policy allowed the call).
    type Plan = Result<SubjectRecord, Error>;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let plan = broker.subjects.subject_record(
            &self.subject_id,
            self.kind,
            &self.project_ids,
            &self.permissions,
            now,
        );
        // An invalid subject shows policy its id and kind only.
        let shown = plan.as_ref().cloned().unwrap_or_else(|_| SubjectRecord {
            id: self.subject_id.clone(),
            kind: if self.kind == SubjectKind::Service as i32 {
                SubjectKind::Service as i32
            } else {
                SubjectKind::User as i32
            },
            grant: None,
            created_at: now,
            created_nanos: 0,
        });
        let resource = authz::subject_entity(&shown, broker);
        Ok(Described::authenticated(caller, now, resource, plan))
    }
}

impl Guarded for GetSubjectRequest {
    const ROUTE: Route = Route::new("/tokenbroker.v1.SubjectService/GetSubject", "GetSubject");
    type Plan = Found<SubjectRecord>;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let (resource, record) = authz::stored_subject_entity(broker, &self.subject_id)?;
        Ok(Described::authenticated(
            caller,
            now,
            resource,
            Found::new(self.subject_id, record),
        ))
    }
}

impl Guarded for ListSubjectsRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.SubjectService/ListSubjects",
        "ListSubjects",
    );
    type Plan = Self;

    fn describe(
        self,
        _broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self>, Error> {
        Ok(Described::authenticated(
            caller,
            now,
            EntityDesc::broker(),
            self,
        ))
    }
}

impl Guarded for DeleteSubjectRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.SubjectService/DeleteSubject",
        "DeleteSubject",
    );
    /// The subject id.
    type Plan = String;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<String>, Error> {
        let (resource, _) = authz::stored_subject_entity(broker, &self.subject_id)?;
        Ok(Described::authenticated(
            caller,
            now,
            resource,
            self.subject_id,
        ))
    }
}

#[tonic::async_trait]
impl SubjectService for Api {
    async fn create_subject(
        &self,
        request: Request<CreateSubjectRequest>,
    ) -> Result<Response<Subject>, Status> {
        let authorized = self.authorize(request)?;
        let record = self
            .broker
            .subjects
            .create_subject(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(created = %record.id, "created subject");
        Ok(Response::new(to_proto(record)))
    }

    async fn get_subject(
        &self,
        request: Request<GetSubjectRequest>,
    ) -> Result<Response<Subject>, Status> {
        let authorized = self.authorize(request)?;
        let record = self
            .broker
            .subjects
            .get_subject(authorized)
            .map_err(to_status)?;
        Ok(Response::new(to_proto(record)))
    }

    async fn list_subjects(
        &self,
        request: Request<ListSubjectsRequest>,
    ) -> Result<Response<ListSubjectsResponse>, Status> {
        let authorized = self.authorize(request)?;
        let (records, next_page_token) = self
            .broker
            .subjects
            .list_subjects(authorized)
            .map_err(to_status)?;
        Ok(Response::new(ListSubjectsResponse {
            subjects: records.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_subject(
        &self,
        request: Request<DeleteSubjectRequest>,
    ) -> Result<Response<DeleteSubjectResponse>, Status> {
        let authorized = self.authorize(request)?;
        let id = authorized.plan().clone();
        let (deleted_keys, revoked_tokens) = self
            .broker
            .subjects
            .delete_subject(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(deleted = %id, deleted_keys, revoked_tokens, "deleted subject");
        Ok(Response::new(DeleteSubjectResponse {
            deleted_keys,
            revoked_tokens,
        }))
    }
}
