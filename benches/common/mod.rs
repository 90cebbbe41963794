//! Shared bench fixtures: the Cedar request shapes of a CreateAccessToken exactly as
//! `authz::authorize` sees them (principal, resource and context records), a temp broker, and
//! short criterion settings so the whole suite runs in a few minutes.
#![allow(dead_code, reason = "each bench uses a different subset")]

use std::{path::PathBuf, sync::Arc, time::Duration};

use criterion::Criterion;
use token_broker::{
    authz::{self as auth, grant_attrs},
    broker::{Broker, Caller, MasterKeySource, MintPlan},
    config::Config,
    domain::{Grant, PermissionModel, Projects},
    policy::{Attr, EntityDesc, EntityKind, Record},
};

/// The server's allocator (see `src/main.rs`), so the parts are measured as the server runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Short measurements: enough for a median, small enough for a suite of a few minutes.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

/// The shipped policy directory.
pub fn shipped_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Seconds since the epoch, as the broker's default clock reads it.
pub fn now() -> i64 {
    use token_broker::clock::Clock as _;
    token_broker::clock::SystemClock.now()
}

/// The default permission model (`admin` ⊇ `write` ⊇ `read`).
pub fn model() -> PermissionModel {
    let c = Config::default();
    PermissionModel::new(&c.permissions, &c.implies)
}

/// Principal, resource and context of a CreateAccessToken by a Service subject holding
/// `load` / read+write through an access key, asking for `load` / read for one hour: the
/// same records `authz` builds (`subject_entity`, `credential_entity`,
/// `authenticated_context`), as a fixed fixture that needs no broker.
pub fn mint_request_shapes(model: &PermissionModel, now: i64) -> (EntityDesc, EntityDesc, Record) {
    let subject_grant = Grant {
        projects: Projects::from_ids(["load"]),
        permissions: ["read", "write"].map(str::to_owned).into_iter().collect(),
        not_after: None,
    };
    let requested = Grant {
        projects: Projects::from_ids(["load"]),
        permissions: ["read".to_owned()].into_iter().collect(),
        not_after: Some(now + 3600),
    };
    let principal = EntityDesc {
        kind: EntityKind::Service,
        id: "load-bench".to_owned(),
        attrs: Record::new()
            .with("name", "load-bench")
            .with("projects", Attr::strings(subject_grant.projects.to_ids()))
            .with(
                "permissions",
                Attr::strings(model.expand(&subject_grant.permissions)),
            ),
    };
    let resource = EntityDesc {
        kind: EntityKind::AccessKey,
        id: "ak_0123456789abcdef0123456789abcdef".to_owned(),
        attrs: Record::new().with("owner", "load-bench"),
    };
    let permissions = model.expand(&subject_grant.permissions);
    let admin = subject_grant.projects == Projects::All && permissions.contains("admin");
    let credential = Record::new()
        .with("kind", "access_key")
        .with("id", resource.id.as_str())
        .with("depth", 0u32)
        .with("grant", grant_attrs(model, &subject_grant))
        .with("remaining_seconds", -1i64)
        .with("admin", admin);
    let context = Record::new()
        .with("credential", credential)
        .with("requested", grant_attrs(model, &requested))
        .with("lifetime_seconds", 3600i64)
        .with("audience", "token-broker");
    (principal, resource, context)
}

/// The same shapes for an authenticated caller, built per call by `authz`'s own functions.
pub fn caller_shapes(
    broker: &Broker,
    caller: &Caller,
    plan: &MintPlan,
    now: i64,
) -> (EntityDesc, EntityDesc, Record) {
    (
        caller.view.principal.clone(),
        auth::credential_entity(caller),
        auth::mint_context(broker, plan, auth::authenticated_context(caller, now)),
    )
}

/// A broker on a fresh temp dir with the shipped policies, and its bootstrap admin secret.
pub async fn temp_broker() -> (tempfile::TempDir, Arc<Broker>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        policies: shipped_policies(),
        ..Config::default()
    };
    let broker = Broker::open(config, MasterKeySource::File).await.unwrap();
    let secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    (dir, broker, secret)
}
