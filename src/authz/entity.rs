//! How the broker's things look to Cedar: principals, resources and contexts, built the same
//! way for every RPC. Unknown things are described harmlessly (an empty subject, the
//! caller's own key) so that policy decides before the core reports NOT_FOUND.

use crate::{
    broker::{self, Broker, Caller, CredentialKind, MintPlan},
    domain::{Grant, PermissionModel, Projects},
    error::Error,
    pb::storage::{AccessKeyRecord, SubjectRecord, UpstreamRecord},
    pb::v1::SubjectKind,
    policy::{Attr, EntityDesc, EntityKind, Record},
};

/// What policy sees of a credential apart from its remaining time: its subject as the
/// principal, its grant as the schema's `Grant` record and whether that makes it an admin's.
/// Authentication builds it when it reads the credential (and caches it with the credential:
/// a key's is rebuilt after any key or subject write, a token's never changes), so a request
/// only shares it.
#[derive(Debug)]
pub struct CredentialView {
    /// The subject acting, as Cedar's principal.
    pub principal: EntityDesc,
    /// The credential's grant (permissions expanded), as `credential.grant`.
    pub grant: Attr,
    /// All projects and, by implication, `admin`.
    pub admin: bool,
}

impl CredentialView {
    /// The view of a credential of `subject` holding `grant`.
    pub fn new(model: &PermissionModel, subject: &SubjectRecord, grant: &Grant) -> Self {
        let permissions = model.expand(&grant.permissions);
        let admin = grant.projects == Projects::All && permissions.contains("admin");
        Self {
            principal: subject_desc(subject, model),
            grant: grant_record(grant, permissions).into(),
            admin,
        }
    }
}

/// A grant as the schema's `Grant` record: projects, `all_projects`, permissions with
/// implication applied. Public so benchmarks build exactly what policy sees.
pub fn grant_attrs(model: &PermissionModel, grant: &Grant) -> Record {
    grant_record(grant, model.expand(&grant.permissions))
}

fn grant_record(grant: &Grant, permissions: impl IntoIterator<Item = String>) -> Record {
    Record::new()
        .with("projects", Attr::strings(grant.projects.to_ids()))
        .with("all_projects", grant.projects == Projects::All)
        .with("permissions", Attr::strings(permissions))
}

/// The context of an authenticated RPC, `{ credential }`: the grant, depth, remaining time
/// and admin flag of the key or token the caller presented. Public for the benchmarks.
pub fn authenticated_context(caller: &Caller, now: i64) -> Record {
    let credential = Record::new()
        .with(
            "kind",
            match caller.kind {
                CredentialKind::AccessKey => "access_key",
                CredentialKind::AccessToken => "access_token",
            },
        )
        .with("id", caller.credential_id.as_str())
        .with("depth", caller.depth)
        .with("grant", caller.view.grant.clone())
        .with(
            "remaining_seconds",
            caller
                .grant
                .not_after
                .map(|end| (end - now).max(0))
                .unwrap_or(-1),
        )
        .with("admin", caller.view.admin);
    Record::new().with("credential", credential)
}

/// A CreateAccessToken's context: `authenticated` plus what the new token would hold.
/// Public so benchmarks measure exactly what the auth layer builds.
pub fn mint_context(broker: &Broker, plan: &MintPlan, authenticated: Record) -> Record {
    authenticated
        .with("requested", grant_attrs(broker.model(), &plan.grant))
        .with("lifetime_seconds", plan.lifetime_secs)
        .with("audience", plan.audience.as_str())
}

/// An upstream as Cedar sees it, read from the store: its name and vendor (empty when
/// unknown).
pub fn upstream_entity(broker: &Broker, name: &str) -> Result<EntityDesc, Error> {
    Ok(upstream_desc(name, broker.store().upstream(name)?.as_ref()))
}

/// An upstream as Cedar sees it, from a record already read.
pub fn upstream_desc(name: &str, record: Option<&UpstreamRecord>) -> EntityDesc {
    let vendor = record
        .and_then(|u| crate::upstream::Vendor::known(u.vendor))
        .map(|v| v.as_str())
        .unwrap_or_default();
    EntityDesc {
        kind: EntityKind::Upstream,
        id: name.to_owned(),
        attrs: Record::new().with("vendor", vendor),
    }
}

/// A stored key, and its record when it exists; an unknown id is described as the caller's
/// own so that the core, not policy, answers NOT_FOUND (an unknown key is unknown to everyone
/// alike). An id that cannot be a key's (not `ak_…`) is INVALID_ARGUMENT on `id`, before any
/// lookup, so a typo is told what ids look like.
pub fn key_entity(
    broker: &Broker,
    caller: &Caller,
    id: &str,
) -> Result<(EntityDesc, Option<AccessKeyRecord>), Error> {
    let mut violations = Vec::new();
    crate::domain::validate::key_id("id", id, &mut violations);
    if !violations.is_empty() {
        return Err(Error::Invalid(violations));
    }
    let record = broker.store().access_key(id)?;
    let owner = record
        .as_ref()
        .map(|k| k.owner.clone())
        .unwrap_or_else(|| caller.subject.id.clone());
    let desc = EntityDesc {
        kind: EntityKind::AccessKey,
        id: id.to_owned(),
        attrs: Record::new().with("owner", owner),
    };
    Ok((desc, record))
}

/// The key or token a caller presented, as the resource of its CreateAccessToken.
pub fn credential_entity(caller: &Caller) -> EntityDesc {
    match caller.kind {
        CredentialKind::AccessKey => EntityDesc {
            kind: EntityKind::AccessKey,
            id: caller.credential_id.clone(),
            attrs: Record::new().with("owner", caller.subject.id.as_str()),
        },
        CredentialKind::AccessToken => EntityDesc {
            kind: EntityKind::Token,
            id: caller.credential_id.clone(),
            attrs: Record::new()
                .with("subject", caller.subject.id.as_str())
                .with("depth", caller.depth),
        },
    }
}

/// The token as stored; an unknown one has no subject, so only admins pass ownership rules.
pub fn token_entity(broker: &Broker, jti: &str) -> Result<EntityDesc, Error> {
    let record = if jti.is_empty() {
        None
    } else {
        broker.store().token(jti)?
    };
    let (subject, depth) = record.map(|r| (r.subject, r.depth)).unwrap_or_default();
    Ok(token_desc(jti, &subject, depth))
}

/// A token as Cedar sees it; an unknown one has id and subject empty.
pub fn token_desc(jti: &str, subject: &str, depth: u32) -> EntityDesc {
    EntityDesc {
        kind: EntityKind::Token,
        id: jti.to_owned(),
        attrs: Record::new().with("subject", subject).with("depth", depth),
    }
}

/// A subject as Cedar's principal (or resource): name, projects and expanded permissions.
pub fn subject_entity(record: &SubjectRecord, broker: &Broker) -> EntityDesc {
    subject_desc(record, broker.model())
}

/// [`subject_entity`] with only the permission model it needs.
pub fn subject_desc(record: &SubjectRecord, model: &PermissionModel) -> EntityDesc {
    let grant = broker::grant_from_record(record.grant.as_ref(), 0);
    EntityDesc {
        kind: if record.kind == SubjectKind::Service as i32 {
            EntityKind::Service
        } else {
            EntityKind::User
        },
        id: record.id.clone(),
        attrs: Record::new()
            .with("name", record.id.as_str())
            .with("projects", Attr::strings(grant.projects.to_ids()))
            .with(
                "permissions",
                Attr::strings(model.expand(&grant.permissions)),
            ),
    }
}

/// A stored subject (and its record), or an attribute-less stand-in so that policy decides before the
/// handler reports NOT_FOUND (and non-admins learn nothing about who exists).
pub fn stored_subject_entity(
    broker: &Broker,
    id: &str,
) -> Result<(EntityDesc, Option<SubjectRecord>), Error> {
    let record = broker.store().subject(id)?;
    let desc = match &record {
        Some(record) => subject_entity(record, broker),
        None => subject_entity(
            &SubjectRecord {
                id: id.to_owned(),
                kind: SubjectKind::User as i32,
                grant: Some(crate::pb::storage::GrantRecord {
                    projects: Vec::new(),
                    permissions: Vec::new(),
                }),
                created_at: 0,
                created_nanos: 0,
            },
            broker,
        ),
    };
    Ok((desc, record))
}
