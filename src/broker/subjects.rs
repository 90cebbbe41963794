//! Subjects: who may act. Creating, reading, listing and deleting them (deleting one deletes
//! its keys and revokes every token minted from them).

use std::sync::Arc;

use super::{ADMIN_SUBJECT, Found, core::Core, list, page_size};
use crate::pb::v1::SubjectKind;
use crate::{
    authz::Authorized,
    domain::validate::{self, FieldViolation, quote},
    error::Error,
    pb::storage::{GrantRecord, SubjectRecord},
};

/// Why a subject operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// No subject has the id.
    #[error("{0}")]
    Unknown(String),
    /// A subject with the id exists already.
    #[error("{0}")]
    Exists(String),
    /// The bootstrap subject may not be deleted.
    #[error("{0}")]
    Bootstrap(String),
}

/// The query ListSubjects page tokens are bound to (see `list::seal_page`).
const SUBJECT_PAGES: &str = "subjects";

/// Subject records.
#[derive(Debug)]
pub struct Subjects {
    core: Arc<Core>,
    /// Signs ListSubjects page tokens.
    page_key: [u8; 32],
}

impl Subjects {
    /// Subjects over `core`; page tokens sealed with `page_key`.
    pub(super) fn new(core: Arc<Core>, page_key: [u8; 32]) -> Self {
        Self { core, page_key }
    }

    /// Stores an authorized new subject (refusing it now if it was invalid).
    pub async fn create_subject(
        &self,
        authorized: Authorized<Result<SubjectRecord, Error>>,
    ) -> Result<SubjectRecord, Error> {
        let (_, record, _) = authorized.into_parts();
        let record = record?;
        if !self.core.store.create_subject(&record)? {
            return Err(SubjectError::Exists(format!(
                "subject {} already exists",
                quote(&record.id)
            ))
            .into());
        }
        self.core.store.durable().await?;
        Ok(record)
    }

    /// The subject an authorized GetSubject found; NOT_FOUND when unknown.
    pub fn get_subject(
        &self,
        authorized: Authorized<Found<SubjectRecord>>,
    ) -> Result<SubjectRecord, Error> {
        authorized
            .into_parts()
            .1
            .or_not_found("subject", SubjectError::Unknown)
    }

    /// One page of subjects, ordered by id, and the page token of the next page (empty at
    /// the end). The token is the last id shown, signed and bound to this listing as
    /// ListAccessKeys' and ListUpstreams' are: a client can neither forge a position nor
    /// carry a token over from another listing.
    pub fn list_subjects(
        &self,
        authorized: Authorized<crate::pb::v1::ListSubjectsRequest>,
    ) -> Result<(Vec<SubjectRecord>, String), Error> {
        let (_, req, _) = authorized.into_parts();
        let size = page_size(req.page_size)?;
        let after: Option<String> = if req.page_token.is_empty() {
            None
        } else {
            Some(
                list::open_page(
                    &self.page_key,
                    SUBJECT_PAGES,
                    &req.page_token,
                    "the listing",
                )
                .map_err(|e| Error::invalid("page_token", e))?,
            )
        };
        let mut records = self.core.store.list_subjects(after.as_deref(), size + 1)?;
        let next = if records.len() > size {
            records.truncate(size);
            records
                .last()
                .map(|r| list::seal_page(&self.page_key, SUBJECT_PAGES, &r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((records, next))
    }

    /// Validates the fields of a subject without storing it (also used by the auth layer to
    /// describe the resource of CreateSubject).
    pub fn subject_record(
        &self,
        id: &str,
        kind: i32,
        project_ids: &[String],
        permissions: &[String],
        now: i64,
    ) -> Result<SubjectRecord, Error> {
        let mut violations = Vec::new();
        if !validate::is_subject_id(id) {
            violations.push(FieldViolation::new(
                "subject_id",
                format!(
                    "subject id {} is malformed: use `[a-z0-9][a-z0-9._@-]{{0,127}}`",
                    quote(id)
                ),
            ));
        }
        if kind != SubjectKind::User as i32 && kind != SubjectKind::Service as i32 {
            violations.push(FieldViolation::new("kind", "set `kind` to USER or SERVICE"));
        }
        let max = self.core.config.max_grant_items;
        let projects = validate::projects("project_ids", project_ids, max, &mut violations);
        let perms = validate::permissions(
            "permissions",
            permissions,
            max,
            &self.core.model,
            &mut violations,
        );
        if project_ids.is_empty() {
            violations.push(FieldViolation::new(
                "project_ids",
                "give at least one project id or `*`",
            ));
        }
        if permissions.is_empty() {
            violations.push(FieldViolation::new(
                "permissions",
                "give at least one permission",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        Ok(SubjectRecord {
            id: id.to_owned(),
            kind,
            grant: Some(GrantRecord {
                projects: projects.map(|p| p.to_ids()).unwrap_or_default(),
                permissions: perms.map(|p| p.into_iter().collect()).unwrap_or_default(),
            }),
            created_at: now,
            created_nanos: self.core.nanos_within(now),
        })
    }

    /// Deletes an authorized subject, its keys and every token minted from them.
    pub async fn delete_subject(
        &self,
        authorized: Authorized<String>,
    ) -> Result<(u32, u32), Error> {
        let (_, id, now) = authorized.into_parts();
        let id = id.as_str();
        if id == ADMIN_SUBJECT {
            return Err(SubjectError::Bootstrap(
                "the bootstrap subject `admin` cannot be deleted".to_owned(),
            )
            .into());
        }
        let outcome = self.core.store.delete_subject(id, now)?.ok_or_else(|| {
            SubjectError::Unknown(format!("subject {} does not exist", quote(id)))
        })?;
        self.core.store.durable().await?;
        Ok(outcome)
    }
}
