//! Upstream delegation: vendor accounts held sealed, vendor-native tokens issued within the
//! caller's grant as leases, and the durable revocation queue that revokes them at the vendor
//! when their holder is revoked or expires (DESIGN §2 Upstream and Lease, §7).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use prost::Message;

use super::{
    Broker, Caller, CredentialKind, Found, core::Core, grant_from_record, grant_record, list,
};
use crate::{
    authz::Authorized,
    domain::{
        Ask, End, Grant, MintRequest, Projects, Yield,
        grant::attenuates,
        validate::{self, FieldViolation, quote},
    },
    error::Error,
    keys::MasterKey,
    pb::{
        storage::{LeaseRecord, SealedCredential, UpstreamRecord},
        v1::UpstreamStatus,
    },
    upstream::{self, Credential, IssueRequest, UpstreamAccount, Vendor, VendorError},
};

/// Lease states as stored.
pub const LEASE_ISSUING: i32 = 1;
/// See [`LEASE_ISSUING`].
pub const LEASE_LIVE: i32 = 2;
/// See [`LEASE_ISSUING`].
pub const LEASE_PENDING: i32 = 3;
/// See [`LEASE_ISSUING`].
pub const LEASE_REVOKED: i32 = 4;

/// A lease still issuing after this long means the broker stopped mid-call: longer than any
/// issue call lasts (`[upstreams] request_timeout` is at most 60 s).
const ISSUE_TIMEOUT_SECS: i64 = 120;
/// Longest wait between revocation attempts.
const MAX_RETRY_SECS: i64 = 60;
/// How often the lease worker looks for due work.
const WORKER_PERIOD: Duration = Duration::from_millis(500);
const CREDENTIAL_AAD: &str = "upstream-credential:";

/// A validated IssueUpstreamToken, ready for policy and the vendor call.
#[derive(Clone, Debug)]
pub struct UpstreamPlan {
    /// The upstream.
    pub upstream: UpstreamRecord,
    /// Its vendor.
    pub vendor: Vendor,
    /// The grant the vendor token will carry, attenuating the caller's.
    pub grant: Grant,
    /// Its lifetime in seconds.
    pub lifetime_secs: i64,
    /// Broker permissions mapped to the vendor's.
    pub vendor_permissions: Vec<String>,
}

/// A credential as the API carries it, in the connectors' form (absent: empty).
fn credential_of(c: Option<crate::pb::v1::Credential>) -> Credential {
    let c = c.unwrap_or_default();
    Credential {
        username: c.username,
        password: c.password,
        token: c.token,
    }
}

/// The vendor token handed out once, with its lease.
#[derive(Debug)]
pub struct IssuedLease {
    /// The vendor token (never stored).
    pub token: upstream::IssuedToken,
    /// The stored lease.
    pub lease: LeaseRecord,
}

/// Why an upstream or lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream has the name.
    #[error("{0}")]
    UnknownUpstream(String),
    /// No lease has the id.
    #[error("{0}")]
    UnknownLease(String),
    /// An upstream with the name exists already.
    #[error("{0}")]
    Exists(String),
    /// The upstream's stored credential was rejected by its vendor; it must be rotated first.
    #[error("{0}")]
    CredentialRejected(String),
    /// The vendor refused or failed the call (DESIGN §5 maps each kind).
    #[error("{}", vendor_message(.0))]
    Vendor(VendorError),
    /// An issue call failed in a way that may have left a token at the vendor (no answer, or
    /// a 5xx): `note` says what the broker does about it, for lease `lease_id`.
    #[error("{}; {note}", vendor_message(.error))]
    IssueUnanswered {
        /// How the call failed.
        error: VendorError,
        /// The lease kept for reconciliation (or closed, for a vendor that cannot list).
        lease_id: String,
        /// What happens to a token the vendor may have made.
        note: String,
    },
    /// Some leases could not be revoked at the vendor, so the upstream was kept.
    #[error("{0}")]
    RevocationsPending(String),
    /// The authorising credential was revoked or changed while the vendor token was issued.
    #[error("{0}")]
    CallerChanged(String),
}

/// What a vendor failure says to the caller: the vendor and its status, the vendor's text
/// only scrubbed of the credential and cut short, and what to do when the fix is ours.
fn vendor_message(e: &VendorError) -> String {
    let message = e.to_string();
    match e {
        VendorError::Unauthenticated { .. } => format!(
            "{message}: the upstream's credential was rejected; rotate it with UpdateUpstream"
        ),
        // Saved under rules that have since been tightened, or a host now resolving inward.
        VendorError::Refused { .. } => {
            format!("{message}; the upstream's base url must be changed or the rule relaxed")
        }
        _ => message,
    }
}

fn is_upstream_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

fn unknown_upstream(name: &str) -> Error {
    UpstreamError::UnknownUpstream(format!("upstream {} does not exist", quote(name))).into()
}

/// Upstream vendor accounts (credentials sealed under the master key) and the leases of the
/// vendor tokens issued from them.
pub struct Upstreams {
    core: Arc<Core>,
    master: Arc<MasterKey>,
    http: upstream::HttpClient,
    /// Signs ListUpstreams page tokens (see `list::seal_page`).
    page_key: [u8; 32],
    /// When each upstream's credential was last checked at its vendor by the worker (broker
    /// clock); an upstream not yet checked since start counts from its `update_time`.
    checked: std::sync::Mutex<HashMap<String, i64>>,
    /// When the worker next scans the upstreams for due re-checks (at most once a minute).
    next_recheck_scan: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Upstreams over `core`, sealing with `master` and calling vendors through `http`.
    pub(super) fn new(core: Arc<Core>, master: Arc<MasterKey>, http: upstream::HttpClient) -> Self {
        let page_key = master.derive("page-token");
        Self {
            core,
            master,
            http,
            page_key,
            checked: std::sync::Mutex::default(),
            next_recheck_scan: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// The shared client built at start-up; a clone shares its connection pool.
    fn http(&self) -> upstream::HttpClient {
        self.http.clone()
    }

    fn seal_credential(&self, name: &str, credential: &Credential) -> Result<Vec<u8>, Error> {
        let plain = SealedCredential {
            username: credential.username.clone(),
            password: credential.password.clone(),
            token: credential.token.clone(),
        }
        .encode_to_vec();
        Ok(self
            .master
            .seal(&plain, format!("{CREDENTIAL_AAD}{name}").as_bytes())?)
    }

    /// The account of a stored upstream, credential unsealed in memory only.
    fn account(&self, record: &UpstreamRecord) -> Result<(Vendor, UpstreamAccount), Error> {
        let vendor = Vendor::known(record.vendor)
            .ok_or_else(|| Error::Internal(format!("upstream `{}` has no vendor", record.name)))?;
        let plain = self.master.open(
            &record.sealed_credential,
            format!("{CREDENTIAL_AAD}{}", record.name).as_bytes(),
        )?;
        let sealed = SealedCredential::decode(plain.as_slice())
            .map_err(|e| Error::Internal(format!("sealed credential: {e}")))?;
        Ok((
            vendor,
            UpstreamAccount {
                vendor,
                base_url: record.base_url.clone(),
                credential: Credential {
                    username: sealed.username,
                    password: sealed.password,
                    token: sealed.token,
                },
                options: record.options.clone().into_iter().collect(),
            },
        ))
    }

    fn check_account(
        &self,
        vendor: Option<Vendor>,
        base_url: &str,
        credential: &Credential,
        options: &BTreeMap<String, String>,
        violations: &mut Vec<FieldViolation>,
    ) {
        let Some(vendor) = vendor else {
            violations.push(FieldViolation::new(
                "vendor",
                format!(
                    "set `vendor` to one of {}",
                    Vendor::all()
                        .map(|v| v.as_str_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            return;
        };
        if base_url.len() > 2048 || base_url.contains(char::is_whitespace) {
            violations.push(FieldViolation::new(
                "base_url",
                "give the vendor's server root as a url of at most 2048 characters without spaces",
            ));
        } else if let Err(why) = upstream::check_base_url(base_url, &self.core.config.upstreams) {
            violations.push(FieldViolation::new("base_url", why));
        }
        let has_password = !credential.username.is_empty() && !credential.password.is_empty();
        let has_token = !credential.token.is_empty();
        let needs = match vendor {
            Vendor::BitbucketServer => (!has_password && !has_token)
                .then_some("give `username` and `password`, or a `token`"),
            Vendor::Launchdarkly | Vendor::Develocity => {
                (!has_token).then_some("give the vendor API `token`")
            }
            Vendor::Foreman | Vendor::GitPassword => {
                (!has_password).then_some("give `username` and `password`")
            }
            // INVARIANT: `Vendor::known` never yields it; refused above as not set.
            Vendor::Unspecified => None,
        };
        if let Some(needs) = needs {
            violations.push(FieldViolation::new("credential", needs));
        }
        let option = match vendor {
            Vendor::BitbucketServer => Some("user_slug"),
            Vendor::Foreman => Some("user_id"),
            _ => None,
        };
        if let Some(option) = option
            && options.get(option).is_none_or(|v| v.is_empty())
        {
            violations.push(FieldViolation::new(
                format!("options[{option}]"),
                format!("{} needs the option `{option}`", vendor.as_str()),
            ));
        }
    }

    /// Checks a credential at the vendor: NORMAL when accepted, UNAUTHENTICATED when
    /// rejected; any other failure is the caller's error and nothing is stored.
    async fn verify_at_vendor(
        &self,
        vendor: Vendor,
        account: &UpstreamAccount,
    ) -> Result<(i32, String, String), Error> {
        let connector = upstream::connector(vendor, self.http());
        match connector.verify(account).await {
            Ok(v) => Ok((UpstreamStatus::Normal as i32, v.repo_host, v.repo_user)),
            Err(VendorError::Unauthenticated { .. }) => Ok((
                UpstreamStatus::Unauthenticated as i32,
                account.base_url.clone(),
                account.credential.username.clone(),
            )),
            // A host name that resolved inward: the request's `base_url` is what is wrong.
            Err(e @ VendorError::Refused { .. }) => Err(Error::invalid("base_url", e.to_string())),
            Err(e) => Err(UpstreamError::Vendor(e).into()),
        }
    }

    // === upstream records ===

    /// Validates, verifies at the vendor, seals and stores a new upstream.
    pub async fn create_upstream(
        &self,
        authorized: Authorized<crate::pb::v1::CreateUpstreamRequest>,
    ) -> Result<UpstreamRecord, Error> {
        let (_, req, now) = authorized.into_parts();
        let (name, vendor, base_url) = (req.name.as_str(), req.vendor, req.base_url.as_str());
        let credential = credential_of(req.credential.clone());
        let options: BTreeMap<String, String> = req.options.clone().into_iter().collect();
        let mut violations = Vec::new();
        if !is_upstream_name(name) {
            violations.push(FieldViolation::new(
                "name",
                format!(
                    "{} is malformed: use `[a-z0-9][a-z0-9._-]{{0,63}}`",
                    quote(name)
                ),
            ));
        }
        let projects = validate::projects(
            "project_ids",
            &req.project_ids,
            self.core.config.max_grant_items,
            &mut violations,
        )
        .unwrap_or(Projects::All);
        let credential_expires_at = req.credential_expires_at.as_ref().map_or(0, |t| {
            validate::timestamp("credential_expires_at", t.seconds, t.nanos, &mut violations)
                .unwrap_or(0)
        });
        let vendor = Vendor::known(vendor);
        self.check_account(vendor, base_url, &credential, &options, &mut violations);
        let Some(vendor) = vendor.filter(|_| violations.is_empty()) else {
            return Err(Error::Invalid(violations));
        };
        if self.core.store.upstream(name)?.is_some() {
            return Err(
                UpstreamError::Exists(format!("upstream {} already exists", quote(name))).into(),
            );
        }
        let base_url = base_url.trim_end_matches('/').to_owned();
        let account = UpstreamAccount {
            vendor,
            base_url: base_url.clone(),
            credential: credential.clone(),
            options: options.clone(),
        };
        let (status, repo_host, repo_user) = self.verify_at_vendor(vendor, &account).await?;
        let nanos = self.core.nanos_within(now);
        let record = UpstreamRecord {
            name: name.to_owned(),
            vendor: vendor as i32,
            base_url,
            sealed_credential: self.seal_credential(name, &credential)?,
            options: options.into_iter().collect(),
            repo_host,
            repo_user,
            token_type: if credential.token.is_empty() {
                "password"
            } else {
                "token"
            }
            .to_owned(),
            create_time: now,
            update_time: now,
            create_nanos: nanos,
            update_nanos: nanos,
            status,
            projects: projects.to_ids(),
            credential_expires_at,
        };
        if !self.core.store.create_upstream(&record)? {
            return Err(
                UpstreamError::Exists(format!("upstream {} already exists", quote(name))).into(),
            );
        }
        self.core.store.durable().await?;
        Ok(record)
    }

    /// The upstream an authorized GetUpstream found; NOT_FOUND when unknown.
    pub fn get_upstream(
        &self,
        authorized: Authorized<Found<UpstreamRecord>>,
    ) -> Result<UpstreamRecord, Error> {
        let found = authorized.into_parts().1;
        let name = found.id;
        found.record.ok_or_else(|| unknown_upstream(&name))
    }

    /// One page of upstreams, ordered by name, and the cursor of the next page (empty at
    /// the end).
    pub fn list_upstreams(
        &self,
        authorized: Authorized<crate::pb::v1::ListUpstreamsRequest>,
    ) -> Result<(Vec<UpstreamRecord>, String), Error> {
        let (_, req, _) = authorized.into_parts();
        let size = super::page_size(req.page_size)?;
        // Page tokens are signed and bound to this listing, as ListAccessKeys' are: a client
        // can neither forge a position nor carry a token over from another listing.
        let after: Option<String> = if req.page_token.is_empty() {
            None
        } else {
            Some(
                list::open_page(
                    &self.page_key,
                    UPSTREAM_PAGES,
                    &req.page_token,
                    "the listing",
                )
                .map_err(|e| Error::invalid("page_token", e))?,
            )
        };
        let mut records = self.core.store.list_upstreams(after.as_deref(), size + 1)?;
        let next = if records.len() > size {
            records.truncate(size);
            records
                .last()
                .map(|r| list::seal_page(&self.page_key, UPSTREAM_PAGES, &r.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((records, next))
    }

    /// Checks again at its vendor the credential of every upstream not checked (or changed)
    /// for `upstream_recheck_period`, and stores the status the vendor's answer gives: a
    /// credential revoked or rotated at the vendor becomes UNAUTHENTICATED here, before a
    /// caller's issue trips over it, and one the vendor accepts again becomes NORMAL. A
    /// vendor that cannot be reached changes nothing; it is asked again a period later.
    async fn recheck_credentials(&self, now: i64) -> Result<(), Error> {
        let period = i64::try_from(self.core.config.upstream_recheck_period.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let scan = &self.next_recheck_scan;
        if now < scan.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        scan.store(now + period.min(60), std::sync::atomic::Ordering::Relaxed);
        let mut after: Option<String> = None;
        loop {
            let page = self.core.store.list_upstreams(after.as_deref(), 100)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.name.clone());
            for record in page {
                let last_checked = self
                    .checked
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&record.name).copied())
                    .unwrap_or(0)
                    .max(record.update_time);
                if now - last_checked < period {
                    continue;
                }
                if let Ok(mut checked) = self.checked.lock() {
                    checked.insert(record.name.clone(), now);
                }
                let (vendor, account) = self.account(&record)?;
                match self.verify_at_vendor(vendor, &account).await {
                    Ok((status, _, _)) if status != record.status => {
                        // Re-read: the record may have changed during the vendor call.
                        if let Some(mut current) = self.core.store.upstream(&record.name)?
                            && (current.update_time, current.update_nanos)
                                == (record.update_time, record.update_nanos)
                        {
                            current.status = status;
                            current.update_time = now;
                            current.update_nanos = self.core.nanos_within(now);
                            self.core.store.put_upstream(&current)?;
                            let status = UpstreamStatus::try_from(status)
                                .map(|s| s.as_str_name())
                                .unwrap_or("UNKNOWN");
                            tracing::warn!(upstream = %record.name, status, "upstream credential re-checked at the vendor: status changed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(upstream = %record.name, error = %e, "upstream credential could not be re-checked; will try again next period");
                    }
                }
            }
        }
    }

    /// Marks upstream `name` UNAUTHENTICATED when `error` is the vendor rejecting its
    /// credential (HTTP 401), so that its status says so until UpdateUpstream fixes it.
    fn credential_rejected_by(
        &self,
        error: &VendorError,
        name: &str,
        now: i64,
    ) -> Result<(), Error> {
        if !matches!(error, VendorError::Unauthenticated { .. }) {
            return Ok(());
        }
        if let Some(mut record) = self.core.store.upstream(name)?
            && record.status != UpstreamStatus::Unauthenticated as i32
        {
            record.status = UpstreamStatus::Unauthenticated as i32;
            record.update_time = now;
            record.update_nanos = self.core.nanos_within(now);
            self.core.store.put_upstream(&record)?;
            tracing::warn!(upstream = %name, "the vendor rejected the upstream's credential: status UNAUTHENTICATED");
        }
        Ok(())
    }

    /// Looks an upstream up.
    fn upstream_record(&self, name: &str) -> Result<UpstreamRecord, Error> {
        self.core
            .store
            .upstream(name)?
            .ok_or_else(|| unknown_upstream(name))
    }

    /// How many leases of `name` are not yet revoked (counted in the upstream index).
    pub fn live_lease_count(&self, name: &str) -> Result<u32, Error> {
        Ok(u32::try_from(self.core.store.open_lease_count(name)).unwrap_or(u32::MAX))
    }

    /// Rotates an upstream's credential and/or replaces its options, verifying at the vendor.
    pub async fn update_upstream(
        &self,
        authorized: Authorized<crate::pb::v1::UpdateUpstreamRequest>,
    ) -> Result<UpstreamRecord, Error> {
        let (_, req, now) = authorized.into_parts();
        let name = req.name.as_str();
        let credential = req.credential.clone().map(|c| credential_of(Some(c)));
        let options: BTreeMap<String, String> = req.options.clone().into_iter().collect();
        let mut record = self.upstream_record(name)?;
        let (vendor, mut account) = self.account(&record)?;
        if let Some(c) = credential.clone() {
            account.credential = c;
        }
        if !options.is_empty() {
            account.options = options.clone();
        }
        let mut violations = Vec::new();
        let projects = validate::projects(
            "project_ids",
            &req.project_ids,
            self.core.config.max_grant_items,
            &mut violations,
        );
        let credential_expires_at = req.credential_expires_at.as_ref().map(|t| {
            validate::timestamp("credential_expires_at", t.seconds, t.nanos, &mut violations)
                .unwrap_or(0)
        });
        self.check_account(
            Some(vendor),
            &account.base_url,
            &account.credential,
            &account.options,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let (status, repo_host, repo_user) = self.verify_at_vendor(vendor, &account).await?;
        if let Some(c) = credential {
            record.sealed_credential = self.seal_credential(name, &c)?;
            record.token_type = if c.token.is_empty() {
                "password"
            } else {
                "token"
            }
            .to_owned();
        }
        if !options.is_empty() {
            record.options = options.into_iter().collect();
        }
        record.status = status;
        record.repo_host = repo_host;
        record.repo_user = repo_user;
        record.update_time = now;
        record.update_nanos = self.core.nanos_within(now);
        if let Some(projects) = &projects {
            record.projects = projects.to_ids();
        }
        // A new credential's expiry is what the request says (unknown if unset); without a
        // new credential, a given expiry corrects the current one's.
        match (req.credential.is_some(), credential_expires_at) {
            (_, Some(at)) => record.credential_expires_at = at,
            (true, None) => record.credential_expires_at = 0,
            (false, None) => {}
        }
        self.core.store.put_upstream(&record)?;
        if let Some(projects) = &projects {
            self.revoke_leases_outside(name, projects, now)?;
        }
        self.core.store.durable().await?;
        Ok(record)
    }

    /// Leases follow their upstream's reach: every open lease of upstream `name` that reaches
    /// a project outside `projects` (its new projects after an update) is made due for
    /// revocation now. Returns how many were newly queued.
    fn revoke_leases_outside(
        &self,
        name: &str,
        projects: &Projects,
        now: i64,
    ) -> Result<u32, Error> {
        let mut queued = 0;
        for lease in self.core.store.open_leases_of(name)? {
            let reach = Projects::from_ids(lease.projects.iter().cloned());
            if !projects.excess(&reach).is_empty() && self.request_revocation(&lease.id, now)? {
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::info!(upstream = %name, leases = queued, "leases beyond the upstream's new projects queued for revocation");
        }
        Ok(queued)
    }

    /// Revokes the upstream's open leases at the vendor, then deletes it. If any revocation
    /// fails the upstream stays (its leases stay queued) and the call is UNAVAILABLE.
    pub async fn delete_upstream(&self, authorized: Authorized<String>) -> Result<u32, Error> {
        let (_, name, now) = authorized.into_parts();
        let name = name.as_str();
        let record = self.upstream_record(name)?;
        let mut revoked = 0;
        let mut failed = 0;
        for lease in self.core.store.open_leases_of(name)? {
            if self.revoke_lease_now(&record, lease, now).await? {
                revoked += 1;
            } else {
                failed += 1;
            }
        }
        if failed > 0 {
            self.core.store.durable().await?;
            return Err(UpstreamError::RevocationsPending(format!(
                "{failed} lease(s) of upstream {} could not be revoked at the vendor; they stay queued and the upstream is kept: retry later",
                quote(name)
            ))
            .into());
        }
        self.core.store.delete_upstream(name)?;
        self.core.store.durable().await?;
        Ok(revoked)
    }

    // === issuing ===

    /// Validates an IssueUpstreamToken and applies the attenuation rule (the same rule and
    /// refusal as minting), then maps the permissions to the vendor's.
    pub fn plan_upstream(
        &self,
        caller: &Caller,
        upstream_name: &str,
        project_ids: &[String],
        permissions: &[String],
        expires_in_hours: Option<f64>,
        now: i64,
    ) -> Result<UpstreamPlan, Error> {
        let request: MintRequest = validate::mint_request(
            project_ids,
            permissions,
            expires_in_hours,
            self.core.config.max_grant_items,
            self.core.limits().max_lifetime_secs,
            &self.core.model,
        )
        .map_err(Error::Invalid)?;
        let upstream = self.upstream_record(upstream_name)?;
        let vendor = Vendor::known(upstream.vendor)
            .ok_or_else(|| Error::Internal(format!("upstream `{upstream_name}` has no vendor")))?;
        let projects = token_projects(
            vendor,
            upstream_name,
            &upstream_projects(&upstream),
            request.projects,
            &caller.grant.projects,
        )?;
        // The vendor token's reach must attenuate the caller's grant: the same rule and the
        // same refusal as a mint.
        let grant = self
            .core
            .derive(
                caller,
                &Ask {
                    kind: Yield::VendorToken,
                    projects,
                    permissions: request.permissions,
                    end: End::Lifetime(request.lifetime_secs),
                    restrictions: None,
                },
                now,
            )?
            .grant;
        let table = self.core.config.vendor_permissions.get(vendor.as_str());
        let mut vendor_permissions = Vec::new();
        let mut violations = Vec::new();
        for (i, p) in grant.permissions.iter().enumerate() {
            match table.and_then(|t| t.get(p)) {
                Some(mapped) => {
                    for m in mapped {
                        if !vendor_permissions.contains(m) {
                            vendor_permissions.push(m.clone());
                        }
                    }
                }
                None => violations.push(FieldViolation::new(
                    format!("permissions[{i}]"),
                    format!(
                        "permission {} has no mapping for vendor `{}`: see config `vendor_permissions`",
                        quote(p),
                        vendor.as_str()
                    ),
                )),
            }
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let lifetime_secs = grant.not_after.map(|end| end - now).unwrap_or(0);
        Ok(UpstreamPlan {
            upstream,
            vendor,
            grant,
            lifetime_secs,
            vendor_permissions,
        })
    }

    /// Issues a vendor token for a planned request. The lease is stored (as issuing) before
    /// the vendor is called, so a crash leaves a record naming the vendor token.
    pub async fn issue_upstream_token(
        &self,
        authorized: Authorized<UpstreamPlan>,
    ) -> Result<IssuedLease, Error> {
        let (caller, plan, now) = authorized.into_parts();
        let caller = &caller;
        let name = quote(&plan.upstream.name);
        match UpstreamStatus::try_from(status_at(&plan.upstream, now)) {
            Ok(UpstreamStatus::Normal) => {}
            Ok(UpstreamStatus::Overdue) => {
                return Err(UpstreamError::CredentialRejected(format!(
                    "upstream {name} is OVERDUE: its credential expired at {}; give a new one (and its credential_expires_at) with UpdateUpstream",
                    rfc3339(plan.upstream.credential_expires_at)
                ))
                .into());
            }
            Ok(UpstreamStatus::Unauthenticated) => {
                return Err(UpstreamError::CredentialRejected(format!(
                    "upstream {name} is UNAUTHENTICATED: the vendor rejected its credential; rotate it with UpdateUpstream"
                ))
                .into());
            }
            _ => {
                return Err(UpstreamError::CredentialRejected(format!(
                    "upstream {name} has no known status: check its credential with UpdateUpstream"
                ))
                .into());
            }
        }
        let (vendor, account) = self.account(&plan.upstream)?;
        let id = format!("ls_{}", uuid::Uuid::new_v4().simple());
        // The plan's end is authoritative: it was checked against the authoriser's, even if
        // the plan was made a moment earlier (by the auth layer).
        let expires_at = plan.grant.not_after.unwrap_or(now + plan.lifetime_secs);
        let mut lease = LeaseRecord {
            id: id.clone(),
            upstream: plan.upstream.name.clone(),
            subject: caller.subject.id.clone(),
            holder: caller.credential_id.clone(),
            vendor_permissions: plan.vendor_permissions.clone(),
            projects: plan.grant.projects.to_ids(),
            issued_at: now,
            expires_at,
            state: LEASE_ISSUING,
            next_attempt_at: now + ISSUE_TIMEOUT_SECS,
            grant: Some(grant_record(&plan.grant)),
            root_key: caller.root_key.clone(),
            ..LeaseRecord::default()
        };
        // A key changed since it authenticated may no longer hold this grant: refused, as a
        // mint is. A token holder needs no such check: a narrowing that leaves the token
        // alive leaves its leases within the key, and a revoked token's leases die with it.
        let key_version = (caller.kind == CredentialKind::AccessKey).then_some(caller.key_version);
        if !self.core.store.insert_lease(&lease, key_version)? {
            return Err(changed_while_issuing());
        }
        self.core.store.durable().await?;

        let request = IssueRequest {
            name: token_name(&id),
            vendor_permissions: plan.vendor_permissions,
            // A vendor that cannot limit a token gets no projects: its token reaches the
            // whole account, which is what the upstream's projects say it reaches (and
            // what the plan checked against the caller's grant).
            project_ids: if vendor.scopes_projects() {
                plan.grant.projects.to_ids()
            } else {
                Vec::new()
            },
            expires_at,
            now,
        };
        let connector = upstream::connector(vendor, self.http());
        let issued = match connector.issue(&account, &request).await {
            Ok(issued) => issued,
            Err(e) if e.may_have_acted() => {
                return Err(self.issue_unanswered(vendor, lease, e, now).await?);
            }
            Err(e) => {
                lease.state = LEASE_REVOKED;
                lease.revoked_at = now;
                // Our words only: the vendor's text may echo the credential in a form no
                // scrubber knows, and the caller has it in the answer anyway.
                lease.last_error = e.summary();
                self.core.store.put_lease(&lease)?;
                self.credential_rejected_by(&e, &plan.upstream.name, now)?;
                self.core.store.durable().await?;
                return Err(UpstreamError::Vendor(e).into());
            }
        };
        // The stored lease may have changed during the call: a revocation asked for meanwhile
        // (its holder narrowed or died) or a give-up makes it pending, due now, not live.
        let settle = |l: &mut LeaseRecord| {
            l.vendor_token_id = issued.vendor_token_id.clone();
            l.revocable = issued.revocable;
            if l.state == LEASE_ISSUING && !l.revoke_requested {
                l.state = LEASE_LIVE;
                l.next_attempt_at = expires_at;
            } else {
                l.state = LEASE_PENDING;
                l.next_attempt_at = now;
                l.revoked_at = 0;
            }
            true
        };
        let lease = match self.core.store.update_lease(&id, settle)? {
            Some(stored) => stored,
            None => {
                settle(&mut lease);
                self.core.store.put_lease(&lease)?;
                lease
            }
        };
        self.core.store.durable().await?;
        if lease.state != LEASE_LIVE {
            return Err(changed_while_issuing());
        }
        Ok(IssuedLease {
            token: issued,
            lease,
        })
    }

    /// Records an issue call that failed in a way that may have left a token at the vendor
    /// ([`VendorError::may_have_acted`]) and returns the caller's error. At a vendor that lists
    /// its tokens the lease becomes PENDING, due now, with no vendor token id: the lease worker
    /// looks for the token by name and revokes it ([`Self::reconcile`]). At one that cannot,
    /// the lease is closed and its `last_error` says what may be left.
    async fn issue_unanswered(
        &self,
        vendor: Vendor,
        mut lease: LeaseRecord,
        error: VendorError,
        now: i64,
    ) -> Result<Error, Error> {
        let lists = vendor.lists_tokens();
        let note = if lists {
            format!(
                "{vendor} may have made a token named `{}` before the call failed: the broker will find it and revoke it (lease `{}`)",
                token_name(&lease.id),
                lease.id
            )
        } else {
            unlisted_note(vendor, &lease)
        };
        // Our words only (the summary), as for any vendor failure that is stored.
        let last_error = format!("{}; {note}", error.summary());
        let record = |l: &mut LeaseRecord| {
            if lists {
                l.state = LEASE_PENDING;
                l.next_attempt_at = now;
                l.revoked_at = 0;
            } else {
                l.state = LEASE_REVOKED;
                l.revoked_at = now;
            }
            l.last_error.clone_from(&last_error);
            true
        };
        if self.core.store.update_lease(&lease.id, record)?.is_none() {
            record(&mut lease);
            self.core.store.put_lease(&lease)?;
        }
        self.core.store.durable().await?;
        tracing::warn!(lease = %lease.id, upstream = %lease.upstream, error = %error, reconcile = lists, "issue call failed after the vendor may have minted");
        Ok(UpstreamError::IssueUnanswered {
            error,
            lease_id: lease.id,
            note,
        }
        .into())
    }

    /// Finds at the vendor the token an unanswered issue call may have minted (by its name,
    /// `token-broker-<lease id>`) and revokes it: the lease becomes REVOKED with `last_error`
    /// saying what was found. A vendor that cannot list closes the lease with a warning (what
    /// may be left is out of the broker's reach); a failed search or revocation leaves it
    /// PENDING and retried with the revocation backoff. Returns whether the lease closed.
    async fn reconcile(
        &self,
        upstream: &UpstreamRecord,
        mut lease: LeaseRecord,
        now: i64,
    ) -> Result<bool, Error> {
        let name = token_name(&lease.id);
        let (vendor, account) = self.account(upstream)?;
        let connector = upstream::connector(vendor, self.http());
        let outcome = match connector.find_tokens(&account, &name).await {
            Ok(Some(ids)) => {
                let mut revoked = Ok(Some(ids.len()));
                for id in &ids {
                    if let Err(e) = connector.revoke(&account, id).await {
                        revoked = Err(e);
                        break;
                    }
                }
                revoked
            }
            other => other.map(|found| found.map(|ids| ids.len())),
        };
        match outcome {
            Ok(found) => {
                lease.state = LEASE_REVOKED;
                lease.revoked_at = now;
                lease.last_error = match found {
                    Some(0) => format!(
                        "reconciled: the issue call got no answer, and {vendor} holds no token named `{name}`"
                    ),
                    Some(_) => format!(
                        "reconciled: the issue call got no answer, but {vendor} had made a token named `{name}`; it was found and revoked"
                    ),
                    None => unlisted_note(vendor, &lease),
                };
                self.core.store.put_lease(&lease)?;
                // Logged once stored, so whoever reads the log finds the lease closed.
                match found {
                    Some(0) => {
                        tracing::info!(lease = %lease.id, upstream = %lease.upstream, "lease reconciled: the vendor made no token for it");
                    }
                    Some(count) => {
                        tracing::info!(lease = %lease.id, upstream = %lease.upstream, count, "lease reconciled: the token the vendor made was found by name and revoked");
                    }
                    None => {
                        tracing::warn!(lease = %lease.id, upstream = %lease.upstream, vendor = %vendor, "unanswered issue closed: the vendor cannot list its tokens, so one it may have made cannot be revoked");
                    }
                }
                Ok(true)
            }
            Err(e) => {
                lease.attempts += 1;
                lease.state = LEASE_PENDING;
                lease.next_attempt_at = now + (1i64 << lease.attempts.min(6)).min(MAX_RETRY_SECS);
                lease.last_error = format!(
                    "looking for the vendor token named `{name}` to revoke it failed: {}",
                    e.summary()
                );
                tracing::warn!(lease = %lease.id, attempts = lease.attempts, error = %e, "vendor token search failed; will retry");
                self.core.store.put_lease(&lease)?;
                self.credential_rejected_by(&e, &upstream.name, now)?;
                Ok(false)
            }
        }
    }

    // === revocation ===

    /// Revokes a lease at the vendor now; when the vendor cannot confirm, the revocation
    /// stays queued durably and is retried. Returns whether the vendor confirmed.
    pub async fn revoke_upstream_token(
        &self,
        authorized: Authorized<Found<LeaseRecord>>,
    ) -> Result<Revoked, Error> {
        let (_, found, now) = authorized.into_parts();
        let lease = found.or_not_found("lease", UpstreamError::UnknownLease)?;
        let upstream = self.upstream_record(&lease.upstream)?;
        if lease.state == LEASE_ISSUING && lease.next_attempt_at > now {
            // The issue call is in flight: its answer settles the lease as revoked.
            self.request_revocation(&lease.id, now)?;
            self.core.store.durable().await?;
            return Ok(Revoked::closed_only(
                "the vendor token is still being issued: the lease is closed as soon as the vendor answers, and the token revoked where the vendor can".to_owned(),
            ));
        }
        let lease = if lease.state == LEASE_REVOKED {
            lease
        } else {
            let id = lease.id.clone();
            self.revoke_lease_now(&upstream, lease.clone(), now).await?;
            self.core.store.durable().await?;
            self.core.store.lease(&id)?.unwrap_or(lease)
        };
        Ok(revocation_answer(&upstream, &lease))
    }

    /// One revocation attempt; records the outcome (revoked, or pending with backoff).
    async fn revoke_lease_now(
        &self,
        upstream: &UpstreamRecord,
        mut lease: LeaseRecord,
        now: i64,
    ) -> Result<bool, Error> {
        if unanswered(&lease, Vendor::known(upstream.vendor)) {
            // The broker stopped between storing the lease and hearing from the vendor, or
            // the issue call failed in a way that may have minted: find the token by name.
            return self.reconcile(upstream, lease, now).await;
        }
        let outcome = if lease.revocable {
            let (vendor, account) = self.account(upstream)?;
            upstream::connector(vendor, self.http())
                .revoke(&account, &lease.vendor_token_id)
                .await
        } else {
            Ok(())
        };
        match outcome {
            Ok(()) => {
                lease.state = LEASE_REVOKED;
                lease.revoked_at = now;
                lease.last_error.clear();
                self.core.store.put_lease(&lease)?;
                tracing::info!(lease = %lease.id, upstream = %lease.upstream, "lease revoked at the vendor");
                Ok(true)
            }
            Err(e) => {
                lease.attempts += 1;
                lease.state = LEASE_PENDING;
                lease.next_attempt_at = now + (1i64 << lease.attempts.min(6)).min(MAX_RETRY_SECS);
                lease.last_error = e.summary();
                tracing::warn!(lease = %lease.id, attempts = lease.attempts, error = %e, "vendor revocation failed; will retry");
                self.core.store.put_lease(&lease)?;
                self.credential_rejected_by(&e, &upstream.name, now)?;
                Ok(false)
            }
        }
    }

    /// Whether the broker credential `holder` (a lease's token jti or access-key id) is gone,
    /// revoked or expired.
    fn holder_is_dead(&self, holder: &str, now: i64) -> Result<bool, Error> {
        if holder.starts_with("ak_") {
            return Ok(match self.core.store.access_key(holder)? {
                None => true,
                // A key made by a token dies with it (see `AccessKeyRecord.derived_from`).
                Some(k) => {
                    (k.expires_at > 0 && k.expires_at <= now) || !self.core.maker_alive(&k, now)?
                }
            });
        }
        if self.core.store.is_revoked(holder) {
            return Ok(true);
        }
        Ok(match self.core.store.token(holder)? {
            None => true,
            Some(t) => t.revoked_at != 0 || t.expires_at <= now,
        })
    }

    /// Asks for a lease's revocation now: a live lease becomes pending and due; an issuing
    /// one is flagged, and becomes pending when the vendor answers. Returns whether the lease
    /// changed (a pending or revoked lease is already on its way).
    fn request_revocation(&self, id: &str, now: i64) -> Result<bool, Error> {
        let changed = self
            .core
            .store
            .update_lease(id, |lease| match lease.state {
                LEASE_LIVE => {
                    lease.state = LEASE_PENDING;
                    lease.next_attempt_at = lease.next_attempt_at.min(now);
                    true
                }
                LEASE_ISSUING if !lease.revoke_requested => {
                    lease.revoke_requested = true;
                    true
                }
                _ => false,
            })?;
        Ok(changed.is_some())
    }

    /// Leases follow their holder's reach: every open lease under the access key `root_key`
    /// whose broker grant no longer attenuates `grant` (the key's grant after a narrowing) is
    /// made due for revocation now, as the key's misfit tokens are revoked. A lease stored
    /// without its grant (written before leases kept it) cannot be shown to fit, so it goes
    /// too. Returns how many leases were newly queued; the lease worker revokes them at the
    /// vendor on its next pass.
    pub fn revoke_leases_beyond(
        &self,
        root_key: &str,
        grant: &Grant,
        now: i64,
    ) -> Result<u32, Error> {
        let mut queued = 0;
        for lease in self.core.store.open_leases_under(root_key)? {
            let fits = lease.grant.as_ref().is_some_and(|held| {
                let held = grant_from_record(Some(held), lease.expires_at);
                attenuates(&held, grant, &self.core.model)
            });
            if !fits && self.request_revocation(&lease.id, now)? {
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::info!(key = %root_key, leases = queued, "leases beyond the key's new grant queued for revocation");
        }
        Ok(queued)
    }

    /// One pass of the lease worker, at time `now`: queue the open leases whose holder died,
    /// attempt every due revocation, then remove the leases revoked more than
    /// `lease_retention` ago. Every lookup goes through an index, so a pass costs in
    /// proportion to the open leases and the work due, never to every lease ever issued.
    /// Returns how many leases were revoked at the vendor.
    pub async fn process_leases(&self, now: i64) -> Result<u32, Error> {
        self.recheck_credentials(now).await?;
        for holder in self.core.store.open_lease_holders()? {
            if self.holder_is_dead(&holder, now)? {
                for lease in self.core.store.open_leases_held_by(&holder)? {
                    self.request_revocation(&lease.id, now)?;
                }
            }
        }
        let mut revoked = 0;
        for lease in self.core.store.due_leases(now, 1000)? {
            match self.core.store.upstream(&lease.upstream)? {
                Some(upstream) => {
                    if self.revoke_lease_now(&upstream, lease, now).await? {
                        revoked += 1;
                    }
                }
                None => {
                    let mut lease = lease;
                    lease.state = LEASE_REVOKED;
                    lease.revoked_at = now;
                    lease.last_error = "upstream no longer exists".to_owned();
                    self.core.store.put_lease(&lease)?;
                }
            }
        }
        let retention =
            i64::try_from(self.core.config.lease_retention.as_secs()).unwrap_or(i64::MAX);
        let removed = self
            .core
            .store
            .remove_revoked_leases(now.saturating_sub(retention), 1000)?;
        if removed > 0 {
            tracing::debug!(removed, "revoked leases past their retention removed");
        }
        self.core.store.durable().await?;
        Ok(revoked)
    }
}

/// The refusal when the caller's credential changed while a vendor token was being issued.
fn changed_while_issuing() -> Error {
    UpstreamError::CallerChanged(
        "the authorising credential was revoked or changed while the vendor token was issued: retry"
            .to_owned(),
    )
    .into()
}

/// Runs the lease worker until the broker is dropped: expiries and holder revocations reach
/// the vendor within about a second, and queued revocations survive restarts.
pub fn spawn_lease_worker(broker: Weak<Broker>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WORKER_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if let Err(e) = broker.upstreams.process_leases(broker.now()).await {
                tracing::warn!(error = %e, "lease worker pass failed");
            }
        }
    });
}

/// An upstream's status at `now`: UNAUTHENTICATED as stored, else OVERDUE once its
/// credential's known expiry has passed, else as stored.
pub fn status_at(record: &UpstreamRecord, now: i64) -> i32 {
    let expired = record.credential_expires_at > 0 && record.credential_expires_at <= now;
    if expired && record.status != UpstreamStatus::Unauthenticated as i32 {
        UpstreamStatus::Overdue as i32
    } else {
        record.status
    }
}

/// Unix seconds as RFC 3339, for messages.
fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0)),
    )
    .to_string()
}

/// The name the broker gives the vendor token of lease `lease_id`, so an operator can trace it
/// and the broker can find it again when an issue call's answer is lost.
fn token_name(lease_id: &str) -> String {
    format!("token-broker-{lease_id}")
}

/// Whether a lease waits for reconciliation: it has no vendor token id because the vendor's
/// answer to its issue call never came (the broker stopped mid-call: ISSUING and due; or the
/// call failed in a way that may have minted: PENDING at a vendor whose tokens have ids).
fn unanswered(lease: &LeaseRecord, vendor: Option<Vendor>) -> bool {
    lease.vendor_token_id.is_empty()
        && match lease.state {
            LEASE_ISSUING => true,
            LEASE_PENDING => vendor.is_some_and(Vendor::lists_tokens),
            _ => false,
        }
}

/// What is left of an unanswered issue at a vendor that cannot list its tokens.
fn unlisted_note(vendor: Vendor, lease: &LeaseRecord) -> String {
    match vendor {
        Vendor::GitPassword => {
            "the issue got no answer, but a git password is not minted: nothing was left at the host"
                .to_owned()
        }
        _ => format!(
            "{vendor} may have made a token before the call failed, and cannot list its tokens: such a token cannot be found or revoked by the broker, and stays valid until {} at the latest",
            rfc3339(lease.expires_at)
        ),
    }
}

/// RevokeUpstreamToken's answer for `lease` as stored after the attempt.
fn revocation_answer(upstream: &UpstreamRecord, lease: &LeaseRecord) -> Revoked {
    let vendor = Vendor::known(upstream.vendor);
    // A lease whose issue failed at a vendor that names its tokens: no token id, and
    // `last_error` says what the broker found.
    let tokenless = lease.vendor_token_id.is_empty() && vendor.is_some_and(Vendor::lists_tokens);
    if lease.state != LEASE_REVOKED {
        return Revoked::closed_only(if tokenless {
            format!(
                "the issue call got no answer and the vendor could not be searched yet: the broker keeps looking for a token named `{}` and revokes it when found",
                token_name(&lease.id)
            )
        } else {
            "the vendor could not be reached: the revocation is queued and retried until the vendor confirms it".to_owned()
        });
    }
    if tokenless {
        let detail = if lease.last_error.starts_with("reconciled:") {
            lease.last_error.clone()
        } else {
            format!(
                "the issue failed, so no vendor token was made: {}",
                lease.last_error
            )
        };
        return Revoked {
            at_vendor: true,
            detail,
        };
    }
    if lease.revocable {
        return Revoked::at_vendor();
    }
    // A token the vendor cannot revoke lives on whatever the broker does: say so, and until
    // when, rather than claim it is gone.
    Revoked::closed_only(match vendor {
        Some(Vendor::GitPassword) => format!(
            "the lease is closed, but a git password cannot be revoked: it stays valid until it is changed at the host (then give the new one with UpdateUpstream to {})",
            quote(&upstream.name)
        ),
        _ => format!(
            "the lease is closed, but {} tokens cannot be revoked at the vendor: the token stays valid until its vendor expiry, {}",
            vendor.map(Vendor::as_str).unwrap_or("this vendor's"),
            rfc3339(lease.expires_at)
        ),
    })
}

/// The query ListUpstreams page tokens are bound to (it has no filter or order).
const UPSTREAM_PAGES: &str = "upstreams";

/// What RevokeUpstreamToken achieved at the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The vendor confirmed the token is revoked.
    pub at_vendor: bool,
    /// Why not, and what happens next; empty when it did.
    pub detail: String,
}

impl Revoked {
    fn at_vendor() -> Self {
        Self {
            at_vendor: true,
            detail: String::new(),
        }
    }

    fn closed_only(detail: String) -> Self {
        Self {
            at_vendor: false,
            detail,
        }
    }
}

/// The broker projects an upstream's account reaches: its `projects`, or every project for a
/// record that names none (stored before upstreams had projects, which reached everything).
pub fn upstream_projects(record: &UpstreamRecord) -> Projects {
    if record.projects.is_empty() {
        Projects::All
    } else {
        Projects::from_ids(record.projects.iter().cloned())
    }
}

/// The projects a vendor token from an upstream reaching `reach` would reach, for the request's
/// `requested` projects (`None`: not given) by a caller holding `held`; the derivation rule then
/// checks it against the caller's grant. A vendor that cannot limit its tokens issues exactly
/// `reach` (asking for fewer projects would yield a token wider than asked, so it is refused);
/// one that can issues the requested projects, which must lie within `reach`, or by default the
/// caller's projects within `reach`.
fn token_projects(
    vendor: Vendor,
    upstream: &str,
    reach: &Projects,
    requested: Option<Projects>,
    held: &Projects,
) -> Result<Option<Projects>, Error> {
    let ids = |p: &Projects| {
        p.to_ids()
            .iter()
            .map(|id| quote(id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(requested) = &requested {
        let outside = reach.excess(requested);
        if !outside.is_empty() {
            return Err(Error::invalid(
                "project_ids",
                format!(
                    "upstream {} reaches only the projects {}, not {}: ask within them (or omit project_ids)",
                    quote(upstream),
                    ids(reach),
                    outside
                        .iter()
                        .map(|id| quote(id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if !vendor.scopes_projects() {
        if requested.as_ref().is_some_and(|r| r != reach) {
            return Err(Error::invalid(
                "project_ids",
                format!(
                    "{} tokens cannot be limited to projects: a token from upstream {} reaches all of its projects ({}), so ask for exactly those or omit project_ids",
                    vendor.as_str(),
                    quote(upstream),
                    ids(reach)
                ),
            ));
        }
        return Ok(Some(reach.clone()));
    }
    Ok(match requested {
        Some(requested) => Some(requested),
        None if *reach == Projects::All => None,
        None => {
            let within = held.intersect(reach);
            if within == Projects::Some(Default::default()) {
                return Err(Error::invalid(
                    "project_ids",
                    format!(
                        "upstream {} reaches only the projects {}, and your credential holds none of them",
                        quote(upstream),
                        ids(reach)
                    ),
                ));
            }
            Some(within)
        }
    })
}
