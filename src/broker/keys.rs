//! The access-key lifecycle (Bitbucket Server, LaunchDarkly and Foreman style): create, list,
//! get, update (narrowing revokes what no longer fits), delete, reset with a grace period;
//! the keys' own Cedar policy sets; and batched `last_used_at` writes.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use cedar_policy::PolicySet;

use super::{
    Caller, CredentialKind, Found, KeyPolicy, KeyQuery, core::Core, grant_from_record,
    grant_record, upstreams::Upstreams,
};
use crate::{
    authz::Authorized,
    domain::{
        Ask, Bound, End, Exceeded, Grant, PermissionModel, Projects, Reach, Restrictions, Yield,
        grant::attenuates,
        validate::{self, FieldViolation, quote},
    },
    error::Error,
    keys::secret::{self, Secret},
    pb::{
        storage::{AccessKeyRecord, GrantRecord, SubjectRecord},
        v1::SubjectKind,
    },
    policy::{EntityDesc, EntityKind, KeyPolicyError},
    store::KeyOutcome,
};

/// Fields an update may change, as named in `update_mask`.
pub const UPDATABLE: [&str; 7] = [
    "name",
    "description",
    "project_ids",
    "permissions",
    "inline_policy",
    "roles",
    "expires_at",
];

/// The fields of a new access key, as the caller gave them.
#[derive(Clone, Debug, Default)]
pub struct NewKey<'a> {
    /// Owner subject id; empty means the caller.
    pub owner: &'a str,
    /// Required name.
    pub name: &'a str,
    /// Free text.
    pub description: &'a str,
    /// Projects; empty means the owner's.
    pub project_ids: &'a [String],
    /// Permissions; required.
    pub permissions: &'a [String],
    /// Inline Cedar policy text.
    pub inline_policy: &'a str,
    /// Role template names.
    pub roles: &'a [String],
    /// Asked to be a service key.
    pub service: bool,
    /// Expiry; `None` inherits the caller's end (never, for a caller that never ends).
    pub expires_at: Option<prost_types::Timestamp>,
}

impl<'a> NewKey<'a> {
    /// The fields of a create request as the broker takes them.
    pub fn of(req: &'a crate::pb::v1::CreateAccessKeyRequest) -> Self {
        Self {
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
}

/// A key just created or reset, with its secret shown once.
#[derive(Debug)]
pub struct KeyWithSecret {
    /// The stored record (hash only).
    pub record: AccessKeyRecord,
    /// The secret.
    pub secret: Secret,
}

/// One page of a key listing.
#[derive(Debug)]
pub struct KeyPage {
    /// The keys of this page.
    pub keys: Vec<AccessKeyRecord>,
    /// Token for the next page, empty on the last.
    pub next_page_token: String,
    /// Matches in all.
    pub total_size: usize,
}

/// Why an access-key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessKeyError {
    /// No access key has the id.
    #[error("{0}")]
    Unknown(String),
    /// The subject that would own the key does not exist.
    #[error("{0}")]
    OwnerUnknown(String),
    /// The owner already holds as many keys as allowed.
    #[error("{0}")]
    LimitReached(String),
    /// The key changed between reading and writing it; read it again and retry.
    #[error("{0}")]
    Changed(String),
    /// A credential with restrictions may manage only its own subject's keys.
    #[error("{0}")]
    RestrictedCredential(String),
    /// A secret replaced by a reset may only mint during its grace, not manage keys.
    #[error("{0}")]
    OldSecret(String),
    /// The access key the caller authenticated with was deleted meanwhile.
    #[error("{0}")]
    CallerKeyGone(String),
}

/// Built key policy sets by key id, valid while the key's `updated_at` is unchanged.
#[derive(Debug, Default)]
pub struct KeyPolicyCache {
    sets: RwLock<HashMap<String, (i64, Arc<PolicySet>)>>,
}

/// Most key policy sets kept; past it the cache starts over (sets rebuild on demand).
const KEY_SET_CACHE_MAX: usize = 10_000;

fn key_policy_error(e: KeyPolicyError) -> Error {
    match e {
        KeyPolicyError::Inline { .. } => Error::invalid("inline_policy", e.to_string()),
        KeyPolicyError::UnknownRole { index, .. } => {
            Error::invalid(format!("roles[{index}]"), e.to_string())
        }
    }
}

/// Validates a key's name (1 to 128 characters) and description (at most 1024), both shown
/// to people in listings; `prefix` names the enclosing message (`key.` in an update).
fn key_text(prefix: &str, name: &str, description: &str, violations: &mut Vec<FieldViolation>) {
    let name = name.trim();
    if name.is_empty() {
        violations.push(FieldViolation::new(
            format!("{prefix}name"),
            "give a name of 1 to 128 characters",
        ));
    }
    validate::display_text(&format!("{prefix}name"), name, 128, violations);
    validate::display_text(
        &format!("{prefix}description"),
        description,
        1024,
        violations,
    );
}

fn unknown_key(id: &str) -> Error {
    AccessKeyError::Unknown(format!("access key {} does not exist", quote(id))).into()
}

impl Caller {
    /// Whether the credential holds every project and `admin` (after implication) with no
    /// restrictions: only such a credential may widen a key or change its restrictions.
    pub fn is_unrestricted_admin(&self, model: &PermissionModel) -> bool {
        self.key_policy.is_none()
            && self.grant.projects == Projects::All
            && model.expand(&self.grant.permissions).contains("admin")
    }

    /// Refuses key management to a key's previous secret during its reset grace: it may
    /// mint until the grace ends, but must not reset, change, delete or create keys.
    /// A restricted credential manages only its own subject's keys: its restrictions are
    /// Cedar text whose meaning depends on the principal, so the same text bound to another
    /// owner may reach further.
    fn may_restrict_for(&self, owner: &str) -> Result<(), Error> {
        match &self.key_policy {
            Some(k) if owner != self.subject.id => Err(AccessKeyError::RestrictedCredential(format!(
                "access key {} has restrictions (an inline policy or roles), so its credentials manage keys of {} only, not of {}",
                quote(&k.key_id),
                quote(&self.subject.id),
                quote(owner)
            ))
            .into()),
            _ => Ok(()),
        }
    }

    fn may_manage_keys(&self) -> Result<(), Error> {
        if self.old_secret {
            return Err(AccessKeyError::OldSecret("this secret was replaced by a reset: during its grace it can mint tokens but not manage access keys; use the new secret".to_owned()).into());
        }
        Ok(())
    }
}

/// Named long-lived access keys: creating, listing, changing, resetting and deleting them,
/// and the keys' own Cedar policy sets.
pub struct AccessKeys {
    core: Arc<Core>,
    pepper: [u8; 32],
    page_key: [u8; 32],
    key_sets: KeyPolicyCache,
    upstreams: Arc<Upstreams>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys").finish_non_exhaustive()
    }
}

impl AccessKeys {
    /// Keys over `core`; secrets hashed with `pepper`, page tokens sealed with `page_key`, and
    /// a narrowed key's misfit leases revoked through `upstreams`.
    pub(super) fn new(
        core: Arc<Core>,
        pepper: [u8; 32],
        page_key: [u8; 32],
        upstreams: Arc<Upstreams>,
    ) -> Self {
        Self {
            core,
            pepper,
            page_key,
            key_sets: KeyPolicyCache::default(),
            upstreams,
        }
    }

    /// The Cedar entity of a subject, as principal of a key's linked roles.
    fn owner_entity(owner: &SubjectRecord) -> EntityDesc {
        EntityDesc {
            kind: if owner.kind == SubjectKind::Service as i32 {
                EntityKind::Service
            } else {
                EntityKind::User
            },
            id: owner.id.clone(),
            attrs: crate::policy::Record::new(),
        }
    }

    /// The key's own policy set, built once per key version.
    pub fn key_policy_set(
        &self,
        policy: &KeyPolicy,
        owner: &SubjectRecord,
    ) -> Result<Arc<PolicySet>, Error> {
        if let Ok(sets) = self.key_sets.sets.read()
            && let Some((version, set)) = sets.get(&policy.key_id)
            && *version == policy.version
        {
            return Ok(Arc::clone(set));
        }
        let set = Arc::new(
            self.core
                .policy
                .key_policies(
                    &policy.inline_policy,
                    &policy.roles,
                    &Self::owner_entity(owner),
                )
                .map_err(key_policy_error)?,
        );
        if let Ok(mut sets) = self.key_sets.sets.write() {
            if sets.len() >= KEY_SET_CACHE_MAX {
                sets.clear();
            }
            sets.insert(policy.key_id.clone(), (policy.version, Arc::clone(&set)));
        }
        Ok(set)
    }

    // === create ===

    /// Validates and stores a new access key; the secret is in the result, once. The key's
    /// reach comes from the derivation rule: within the caller's credential and the owner's
    /// grant, carrying the caller's restrictions.
    pub async fn create_access_key(
        &self,
        authorized: Authorized<crate::pb::v1::CreateAccessKeyRequest>,
    ) -> Result<KeyWithSecret, Error> {
        let (caller, req, now) = authorized.into_parts();
        let (caller, new) = (&caller, NewKey::of(&req));
        caller.may_manage_keys()?;
        let owner_id = if new.owner.is_empty() {
            caller.subject.id.as_str()
        } else {
            new.owner
        };
        let owner = self.core.store.subject(owner_id)?.ok_or_else(|| {
            AccessKeyError::OwnerUnknown(format!("subject {} does not exist", quote(owner_id)))
        })?;
        caller.may_restrict_for(owner_id)?;
        let reach = self.key_reach(caller, &owner, &new, now)?;
        // Parsing an inline policy is the expensive part: only after every cheap check.
        self.admit_key_policies(&reach.restrictions, &owner)?;
        let (mut record, secret) = self.new_key_record(
            owner_id,
            new,
            Some(grant_record(&reach.grant)),
            owner.kind == SubjectKind::Service as i32,
            now,
        );
        record.expires_at = reach.grant.not_after.unwrap_or(0);
        record.depth = reach.depth.unwrap_or(0);
        record.inline_policy = reach.restrictions.inline_policy.clone();
        record.roles = reach.restrictions.roles.iter().cloned().collect();
        record.derived_from = match caller.kind {
            CredentialKind::AccessToken => {
                vec![caller.root_key.clone(), caller.credential_id.clone()]
            }
            // A key made by a key that a token made is tied to that same token.
            CredentialKind::AccessKey => self
                .core
                .store
                .access_key(&caller.credential_id)?
                .map(|k| k.derived_from)
                .ok_or_else(|| {
                    AccessKeyError::CallerKeyGone(
                        "the access key you authenticated with was deleted meanwhile".to_owned(),
                    )
                })?,
        };
        match self
            .core
            .store
            .insert_access_key(&record, self.core.config.max_keys_per_owner)?
        {
            KeyOutcome::Stored => {}
            KeyOutcome::LimitReached => {
                return Err(AccessKeyError::LimitReached(format!(
                    "subject {} already has the maximum number of access keys ({}): delete one first",
                    quote(owner_id),
                    self.core.config.max_keys_per_owner
                ))
                .into());
            }
            KeyOutcome::OwnerGone => {
                return Err(AccessKeyError::OwnerUnknown(format!(
                    "subject {} does not exist",
                    quote(owner_id)
                ))
                .into());
            }
        }
        self.core.store.durable().await?;
        Ok(KeyWithSecret { record, secret })
    }

    /// The reach a new key would have: its fields validated (cheaply: no inline policy is
    /// parsed here), then the derivation rule against the caller, then the owner's grant.
    /// The auth layer uses it to show Cedar the grant the key would hold.
    pub fn key_reach(
        &self,
        caller: &Caller,
        owner: &SubjectRecord,
        new: &NewKey<'_>,
        now: i64,
    ) -> Result<Reach, Error> {
        let mut violations = Vec::new();
        key_text("", new.name, new.description, &mut violations);
        let expires_at = new.expires_at.and_then(|t| {
            validate::expiry(
                "expires_at",
                t.seconds,
                t.nanos,
                now,
                self.key_lifetime_bound(),
                &mut violations,
            )
        });
        if new.permissions.is_empty() {
            violations.push(FieldViolation::new(
                "permissions",
                "give at least one permission",
            ));
        }
        if new.service && owner.kind != SubjectKind::Service as i32 {
            violations.push(FieldViolation::new(
                "service",
                format!(
                    "service keys belong to a SERVICE subject; {} is a user",
                    quote(&owner.id)
                ),
            ));
        }
        let max = self.core.config.max_grant_items;
        let projects = validate::projects("project_ids", new.project_ids, max, &mut violations);
        let perms = validate::permissions(
            "permissions",
            new.permissions,
            max,
            &self.core.model,
            &mut violations,
        );
        let restrictions = self.asked_restrictions(new.inline_policy, new.roles, &mut violations);
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let owner_grant = grant_from_record(owner.grant.as_ref(), 0);
        // Omitted projects: the owner's, as far as the caller reaches them.
        let projects = match projects {
            Some(p) => p,
            None => owner_grant.projects.intersect(&caller.grant.projects),
        };
        if projects == Projects::Some(Default::default()) {
            return Err(Error::invalid(
                "project_ids",
                format!(
                    "the owner {} holds no project your credential reaches: name the projects",
                    quote(&owner.id)
                ),
            ));
        }
        let reach = self.core.derive(
            caller,
            &Ask {
                kind: Yield::Key,
                projects: Some(projects),
                permissions: perms,
                end: End::Until(expires_at),
                restrictions,
            },
            now,
        )?;
        self.check_within(&reach.grant, &owner_grant, Bound::Owner, now)?;
        Ok(reach)
    }

    /// `(seconds, config key)` bounding how far away a key's expiry may be.
    fn key_lifetime_bound(&self) -> (i64, &'static str) {
        (
            i64::try_from(self.core.config.max_key_lifetime.as_secs()).unwrap_or(i64::MAX),
            "max_key_lifetime",
        )
    }

    /// The restrictions a request names, or `None` (inherit the caller's) when it names none.
    /// Nothing is parsed here: the inline policy's limits and syntax are
    /// [`Broker::admit_key_policies`]'s (`policy::inline`), after authorization.
    fn asked_restrictions(
        &self,
        inline_policy: &str,
        roles: &[String],
        violations: &mut Vec<FieldViolation>,
    ) -> Option<Restrictions> {
        if roles.len() > self.core.config.max_grant_items {
            violations.push(FieldViolation::new(
                "roles",
                format!(
                    "{} roles given; at most {} are allowed",
                    roles.len(),
                    self.core.config.max_grant_items
                ),
            ));
        }
        let asked = Restrictions::new(inline_policy, roles);
        (!asked.is_none()).then_some(asked)
    }

    /// Parses and validates a key's inline policy and links its roles (the expensive step:
    /// it runs after authorization and every cheap check).
    fn admit_key_policies(
        &self,
        restrictions: &Restrictions,
        owner: &SubjectRecord,
    ) -> Result<(), Error> {
        if restrictions.is_none() {
            return Ok(());
        }
        let roles: Vec<String> = restrictions.roles.iter().cloned().collect();
        self.core
            .policy
            .key_policies(
                &restrictions.inline_policy,
                &roles,
                &Self::owner_entity(owner),
            )
            .map(|_| ())
            .map_err(key_policy_error)
    }

    /// Refuses `grant` unless it attenuates `bound` (an owner's grant), naming what exceeded.
    fn check_within(
        &self,
        grant: &Grant,
        within: &Grant,
        bound: Bound,
        now: i64,
    ) -> Result<(), Error> {
        if attenuates(grant, within, &self.core.model) {
            return Ok(());
        }
        let within = Reach {
            grant: within.clone(),
            restrictions: Restrictions::default(),
            depth: None,
        };
        let ask = Ask {
            kind: Yield::Key,
            projects: Some(grant.projects.clone()),
            permissions: Some(grant.permissions.clone()),
            end: End::Exactly(grant.not_after),
            restrictions: None,
        };
        let exceeded =
            crate::domain::derive(&within, &ask, now, &self.core.rules(), &self.core.model)
                .err()
                .unwrap_or_default();
        Err(Error::Exceeds(Exceeded { bound, ..exceeded }))
    }

    pub(super) fn new_key_record(
        &self,
        owner: &str,
        new: NewKey<'_>,
        grant: Option<GrantRecord>,
        service: bool,
        now: i64,
    ) -> (AccessKeyRecord, Secret) {
        let secret = Secret::generate();
        let nanos = self.core.nanos_within(now);
        let record = AccessKeyRecord {
            id: format!("ak_{}", uuid::Uuid::new_v4().simple()),
            owner: owner.to_owned(),
            name: new.name.trim().to_owned(),
            description: new.description.to_owned(),
            grant,
            inline_policy: new.inline_policy.to_owned(),
            roles: new.roles.to_vec(),
            service,
            created_at: now,
            updated_at: now,
            created_nanos: nanos,
            updated_nanos: nanos,
            // Set by the caller from the derived reach.
            expires_at: 0,
            secret_hash: secret::hash(&self.pepper, secret.expose()).to_vec(),
            secret_prefix: secret.prefix(),
            ..AccessKeyRecord::default()
        };
        (record, secret)
    }

    // === read ===

    /// The key an authorized GetAccessKey found; NOT_FOUND when unknown.
    pub fn get_access_key(
        &self,
        authorized: Authorized<Found<AccessKeyRecord>>,
    ) -> Result<AccessKeyRecord, Error> {
        let found = authorized.into_parts().1;
        let id = found.id;
        found.record.ok_or_else(|| unknown_key(&id))
    }

    /// One page of keys: the caller's own, `owner`'s, or everyone's with `show_all`.
    pub fn list_access_keys(
        &self,
        authorized: Authorized<crate::pb::v1::ListAccessKeysRequest>,
    ) -> Result<KeyPage, Error> {
        let (caller, req, _) = authorized.into_parts();
        let caller = &caller;
        let (owner, show_all, page_size, page_token, offset, filter, order_by) = (
            req.owner.as_str(),
            req.show_all,
            req.page_size,
            req.page_token.as_str(),
            req.offset,
            req.filter.as_str(),
            req.order_by.as_str(),
        );
        let mut violations = Vec::new();
        let size = match page_size {
            0 => 25,
            n if (1..=1000).contains(&n) => n as usize,
            n => {
                violations.push(FieldViolation::new(
                    "page_size",
                    format!("`{n}` is out of range: give 1 to 1000, or 0 for 25"),
                ));
                25
            }
        };
        if offset < 0 {
            violations.push(FieldViolation::new("offset", "must not be negative"));
        }
        if offset > 0 && !page_token.is_empty() {
            violations.push(FieldViolation::new(
                "offset",
                "give `offset` or `page_token`, not both",
            ));
        }
        if show_all && !owner.is_empty() {
            violations.push(FieldViolation::new(
                "owner",
                "leave `owner` empty with `show_all`",
            ));
        }
        let query = KeyQuery::parse(filter, order_by)
            .map_err(|(field, message)| violations.push(FieldViolation::new(field, message)))
            .ok();
        let owner = if owner.is_empty() {
            caller.subject.id.as_str()
        } else {
            owner
        };
        let scope = if show_all {
            "all".to_owned()
        } else {
            format!("owner:{owner}")
        };
        let cursor = match (&query, page_token.is_empty()) {
            (Some(q), false) => q
                .cursor(&scope, &self.page_key, page_token)
                .map_err(|m| violations.push(FieldViolation::new("page_token", m)))
                .ok(),
            _ => None,
        };
        let Some(query) = query.filter(|_| violations.is_empty()) else {
            return Err(Error::Invalid(violations));
        };
        let keys = if show_all {
            self.core.store.all_keys()?
        } else {
            self.core.store.keys_of(owner)?
        };
        let (keys, total_size, next) = query.page(keys, cursor, offset.max(0) as usize, size);
        Ok(KeyPage {
            keys,
            next_page_token: next
                .map(|c| query.token(&scope, &self.page_key, c))
                .unwrap_or_default(),
            total_size,
        })
    }

    // === change ===

    /// Applies the masked fields of `changes` to key `id`. A grant may only narrow unless the
    /// caller is an admin, and never beyond the owner's; tokens minted from the key that no
    /// longer fit the new grant are revoked. Returns the key and how many tokens were revoked.
    pub async fn update_access_key(
        &self,
        authorized: Authorized<crate::pb::v1::UpdateAccessKeyRequest>,
    ) -> Result<(AccessKeyRecord, u32), Error> {
        let (caller, req, now) = authorized.into_parts();
        let caller = &caller;
        let id = req.id.as_str();
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        let changes = req.key.clone().unwrap_or_default();
        let changes = &changes;
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                format!(
                    "name the fields to change: any of `{}`",
                    UPDATABLE.join("`, `")
                ),
            ));
        }
        let mut violations = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            if !UPDATABLE.contains(&path.as_str()) {
                violations.push(FieldViolation::new(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "{} cannot be updated: use any of `{}`",
                        quote(path),
                        UPDATABLE.join("`, `")
                    ),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        caller.may_manage_keys()?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let old = self
            .core
            .store
            .access_key(id)?
            .ok_or_else(|| unknown_key(id))?;
        let owner = self
            .core
            .store
            .subject(&old.owner)?
            .ok_or_else(|| unknown_key(id))?;
        let old_grant = old.grant.clone().unwrap_or_default();
        let mut violations = Vec::new();
        let name = if has("name") {
            &changes.name
        } else {
            &old.name
        };
        let description = if has("description") {
            &changes.description
        } else {
            &old.description
        };
        key_text("key.", name, description, &mut violations);
        // An unchanged expiry, even a past one, is kept as it is: only a new one is checked.
        let expires_at = match (has("expires_at"), changes.expires_at) {
            (false, _) => (old.expires_at > 0).then_some(old.expires_at),
            (true, None) => None,
            (true, Some(t)) => validate::expiry(
                "key.expires_at",
                t.seconds,
                t.nanos,
                now,
                self.key_lifetime_bound(),
                &mut violations,
            ),
        };
        if has("project_ids") && changes.project_ids.is_empty() {
            violations.push(FieldViolation::new(
                "key.project_ids",
                "give at least one project id or `*`",
            ));
        }
        if has("permissions") && changes.permissions.is_empty() {
            violations.push(FieldViolation::new(
                "key.permissions",
                "give at least one permission",
            ));
        }
        let max = self.core.config.max_grant_items;
        let projects = validate::projects(
            "key.project_ids",
            if has("project_ids") {
                &changes.project_ids
            } else {
                &old_grant.projects
            },
            max,
            &mut violations,
        );
        let perms = validate::permissions(
            "key.permissions",
            if has("permissions") {
                &changes.permissions
            } else {
                &old_grant.permissions
            },
            max,
            &self.core.model,
            &mut violations,
        );
        let old_restrictions = Restrictions::new(&old.inline_policy, &old.roles);
        let restrictions = if has("inline_policy") || has("roles") {
            self.asked_restrictions(
                if has("inline_policy") {
                    &changes.inline_policy
                } else {
                    &old.inline_policy
                },
                if has("roles") {
                    &changes.roles
                } else {
                    &old.roles
                },
                &mut violations,
            )
            .unwrap_or_default()
        } else {
            old_restrictions.clone()
        };
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let grant = Grant {
            projects: projects.unwrap_or_else(|| Projects::Some(Default::default())),
            permissions: perms.unwrap_or_default(),
            not_after: expires_at,
        };
        let changes_reach = [
            "project_ids",
            "permissions",
            "expires_at",
            "inline_policy",
            "roles",
        ]
        .iter()
        .any(|p| has(p));
        if changes_reach {
            caller.may_restrict_for(&old.owner)?;
            // The key as it will be is a credential derived from the caller's.
            self.core.derive(
                caller,
                &Ask {
                    kind: Yield::Key,
                    projects: Some(grant.projects.clone()),
                    permissions: Some(grant.permissions.clone()),
                    end: End::Exactly(grant.not_after),
                    restrictions: Some(restrictions.clone()),
                },
                now,
            )?;
            if !caller.is_unrestricted_admin(&self.core.model) {
                // Only an unrestricted admin may widen a key or lift its restrictions.
                let current = grant_from_record(old.grant.as_ref(), old.expires_at);
                self.check_within(&grant, &current, Bound::Key, now)?;
                if !old_restrictions.is_none() && restrictions != old_restrictions {
                    return Err(Error::Exceeds(crate::domain::Exceeded {
                        restrictions: Some(format!(
                            "replacing {} of key {} with {} (only an unrestricted admin credential may change or remove a key's restrictions)",
                            old_restrictions.describe(),
                            quote(id),
                            restrictions.describe()
                        )),
                        ..Default::default()
                    }));
                }
            }
            let owner_grant = grant_from_record(owner.grant.as_ref(), 0);
            self.check_within(&grant, &owner_grant, Bound::Owner, now)?;
            if restrictions != old_restrictions {
                self.admit_key_policies(&restrictions, &owner)?;
            }
        }
        let mut new = old.clone();
        new.name = name.trim().to_owned();
        new.description = description.to_owned();
        new.grant = Some(grant_record(&grant));
        new.inline_policy = restrictions.inline_policy.clone();
        new.roles = restrictions.roles.iter().cloned().collect();
        new.expires_at = grant.not_after.unwrap_or(0);
        new.updated_at = now.max(old.updated_at + 1);
        new.updated_nanos = self.core.nanos_within(new.updated_at);
        // Narrowing: exactly the descendants that no longer attenuate the key are revoked
        // (with their own descendants), in the transaction that changes the key.
        let misfits = |store: &crate::store::Store| -> Result<Vec<String>, Error> {
            Ok(store
                .live_descendants(id)?
                .into_iter()
                .filter(|(_, token)| {
                    let held = grant_from_record(token.grant.as_ref(), token.expires_at);
                    !attenuates(&held, &grant, &self.core.model)
                })
                .map(|(jti, _)| jti)
                .collect())
        };
        let mut revoked = self
            .core
            .store
            .replace_access_key(&old, &new, &misfits(&self.core.store)?, now)?
            .ok_or_else(|| {
                AccessKeyError::Changed(format!(
                    "access key {} changed meanwhile: read it again and retry",
                    quote(id)
                ))
            })?;
        // A token minted under the old grant while this ran is caught here.
        for jti in misfits(&self.core.store)? {
            revoked += self.core.store.revoke_token(&jti, now)?;
        }
        // Its leases follow the key's reach like its tokens (revoked at the vendor by the worker).
        self.upstreams.revoke_leases_beyond(id, &grant, now)?;
        self.core.store.durable().await?;
        Ok((new, revoked))
    }

    /// Deletes a key and revokes every token minted from it.
    pub async fn delete_access_key(&self, authorized: Authorized<String>) -> Result<u32, Error> {
        let (caller, id, now) = authorized.into_parts();
        let (caller, id) = (&caller, id.as_str());
        caller.may_manage_keys()?;
        let revoked = self
            .core
            .store
            .delete_access_key(id, now)?
            .ok_or_else(|| unknown_key(id))?;
        self.core.store.durable().await?;
        Ok(revoked)
    }

    /// Issues a new secret; the old one keeps working until `old_secret_expires_at` (0: stops
    /// at once), as LaunchDarkly's reset does.
    ///
    /// Obtaining a key's new secret is obtaining the key: the key as it is must be derivable
    /// from the caller's credential, or the reset is refused.
    pub async fn reset_access_key(
        &self,
        authorized: Authorized<crate::pb::v1::ResetAccessKeyRequest>,
    ) -> Result<KeyWithSecret, Error> {
        let (caller, req, now) = authorized.into_parts();
        let (caller, id, old_secret_expires_at) =
            (&caller, req.id.as_str(), req.old_secret_expires_at);
        caller.may_manage_keys()?;
        let mut violations = Vec::new();
        let grace = (
            i64::try_from(self.core.config.max_reset_grace.as_secs()).unwrap_or(i64::MAX),
            "max_reset_grace",
        );
        let old_secret_expires_at = old_secret_expires_at
            .map(|t| {
                validate::expiry(
                    "old_secret_expires_at",
                    t.seconds,
                    t.nanos,
                    now,
                    grace,
                    &mut violations,
                )
            })
            .unwrap_or(Some(0));
        let Some(old_secret_expires_at) = old_secret_expires_at.filter(|_| violations.is_empty())
        else {
            return Err(Error::Invalid(violations));
        };
        let old = self
            .core
            .store
            .access_key(id)?
            .ok_or_else(|| unknown_key(id))?;
        caller.may_restrict_for(&old.owner)?;
        let grant = grant_from_record(old.grant.as_ref(), old.expires_at);
        self.core.derive(
            caller,
            &Ask {
                kind: Yield::Key,
                projects: Some(grant.projects),
                permissions: Some(grant.permissions),
                end: End::Exactly(grant.not_after),
                restrictions: Some(Restrictions::new(&old.inline_policy, &old.roles)),
            },
            now,
        )?;
        let secret = Secret::generate();
        let mut new = old.clone();
        new.secret_hash = secret::hash(&self.pepper, secret.expose()).to_vec();
        new.secret_prefix = secret.prefix();
        // The replaced secret's (peppered) hash stays indexed, one per key, so that using it
        // is answered "was reset" rather than "unknown"; it authenticates only during a grace.
        // The next reset replaces it, and deleting the key removes it.
        new.old_secret_hash = old.secret_hash.clone();
        new.old_secret_expires_at = if old_secret_expires_at > now {
            old_secret_expires_at
        } else {
            0
        };
        new.updated_at = now.max(old.updated_at + 1);
        new.updated_nanos = self.core.nanos_within(new.updated_at);
        if self
            .core
            .store
            .replace_access_key(&old, &new, &[], now)?
            .is_none()
        {
            return Err(AccessKeyError::Changed(format!(
                "access key {} changed meanwhile: retry",
                quote(id)
            ))
            .into());
        }
        self.core.store.durable().await?;
        Ok(KeyWithSecret {
            record: new,
            secret,
        })
    }
}
