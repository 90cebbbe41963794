use super::*;
use crate::pb::storage::{GrantRecord, LeaseRecord, SubjectRecord};

fn subject(id: &str) -> SubjectRecord {
    SubjectRecord {
        id: id.to_owned(),
        kind: 1,
        grant: Some(GrantRecord {
            projects: vec!["alpha".into()],
            permissions: vec!["read".into()],
        }),
        created_at: 1,
        ..SubjectRecord::default()
    }
}

fn key(id: &str, owner: &str, hash: u8) -> AccessKeyRecord {
    AccessKeyRecord {
        id: id.to_owned(),
        owner: owner.to_owned(),
        name: "k".into(),
        secret_hash: vec![hash; 32],
        ..AccessKeyRecord::default()
    }
}

fn token(parent: &str, depth: u32) -> TokenRecord {
    TokenRecord {
        subject: "alice".into(),
        parent: parent.to_owned(),
        depth,
        expires_at: i64::MAX,
        ..TokenRecord::default()
    }
}

#[tokio::test]
async fn cascade_revokes_every_descendant_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.create_subject(&subject("alice")).unwrap());
    assert!(!store.create_subject(&subject("alice")).unwrap());
    assert_eq!(
        store
            .insert_access_key(&key("ak_1", "alice", 1), 10)
            .unwrap(),
        KeyOutcome::Stored
    );
    assert_eq!(
        store.insert_token("t1", &token("ak_1", 0), 0).unwrap(),
        MintOutcome::Stored
    );
    assert_eq!(
        store.insert_token("t2", &token("t1", 1), 0).unwrap(),
        MintOutcome::Stored
    );
    assert_eq!(
        store.insert_token("t3", &token("t2", 2), 0).unwrap(),
        MintOutcome::Stored
    );
    assert_eq!(
        store.insert_token("u1", &token("ak_1", 0), 0).unwrap(),
        MintOutcome::Stored
    );
    store.durable().await.unwrap();

    assert_eq!(store.revoke_token("t1", 5).unwrap(), 3);
    assert_eq!(store.revoke_token("t1", 6).unwrap(), 0, "already revoked");
    assert_eq!(store.token("t3").unwrap().unwrap().revoked_at, 5);
    assert_eq!(store.token("u1").unwrap().unwrap().revoked_at, 0);
    // A revoked parent can mint nothing more.
    assert_eq!(
        store.insert_token("t4", &token("t2", 2), 0).unwrap(),
        MintOutcome::ParentGone
    );
    assert!(store.token("t4").unwrap().is_none());
}

#[tokio::test]
async fn key_limit_and_subject_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store
            .insert_access_key(&key("ak_0", "ghost", 9), 10)
            .unwrap(),
        KeyOutcome::OwnerGone
    );
    store.create_subject(&subject("alice")).unwrap();
    assert_eq!(
        store
            .insert_access_key(&key("ak_1", "alice", 1), 2)
            .unwrap(),
        KeyOutcome::Stored
    );
    assert_eq!(
        store
            .insert_access_key(&key("ak_2", "alice", 2), 2)
            .unwrap(),
        KeyOutcome::Stored
    );
    assert_eq!(
        store
            .insert_access_key(&key("ak_3", "alice", 3), 2)
            .unwrap(),
        KeyOutcome::LimitReached
    );
    assert_eq!(
        store.access_key_by_hash(&[2; 32]).unwrap().unwrap().id,
        "ak_2"
    );
    store.insert_token("t1", &token("ak_1", 0), 0).unwrap();
    store.insert_token("t2", &token("ak_2", 0), 0).unwrap();

    assert_eq!(store.delete_subject("alice", 7).unwrap(), Some((2, 2)));
    assert_eq!(store.delete_subject("alice", 7).unwrap(), None);
    assert!(store.access_key_by_hash(&[1; 32]).unwrap().is_none());
    assert_eq!(store.token("t2").unwrap().unwrap().revoked_at, 7);
    assert_eq!(store.count_keys("alice").unwrap(), 0);
}

/// A reset keeps the replaced secret's hash indexed (so using it can be answered "was
/// reset"): one per key, replaced at the next reset, and removed with the key, by key or by
/// subject deletion.
#[tokio::test]
async fn replaced_secret_hashes_are_bounded_and_leave_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_subject(&subject("alice")).unwrap();
    let mut current = key("ak_1", "alice", 1);
    store.insert_access_key(&current, 10).unwrap();
    store
        .insert_access_key(&key("ak_2", "alice", 9), 10)
        .unwrap();
    for next in 2..=4u8 {
        let reset = AccessKeyRecord {
            secret_hash: vec![next; 32],
            old_secret_hash: current.secret_hash.clone(),
            updated_at: i64::from(next),
            ..current.clone()
        };
        store
            .replace_access_key(&current, &reset, &[], 0)
            .unwrap()
            .unwrap();
        current = reset;
        assert_eq!(store.key_hashes.len(), 3, "two for ak_1, one for ak_2");
        for (hash, known) in [
            (next, true),
            (next - 1, true),
            (next.wrapping_sub(2), false),
        ] {
            assert_eq!(
                store.access_key_by_hash(&[hash; 32]).unwrap().is_some(),
                known,
                "hash {hash} after reset {next}"
            );
        }
    }
    store.delete_access_key("ak_1", 5).unwrap().unwrap();
    assert_eq!(store.key_hashes.len(), 1);
    assert!(store.key_hashes.get([3; 32]).unwrap().is_none());
    assert!(store.key_hashes.get([4; 32]).unwrap().is_none());

    let graced = AccessKeyRecord {
        secret_hash: vec![8; 32],
        old_secret_hash: vec![9; 32],
        old_secret_expires_at: 0,
        updated_at: 1,
        ..key("ak_2", "alice", 9)
    };
    store
        .replace_access_key(&key("ak_2", "alice", 9), &graced, &[], 0)
        .unwrap()
        .unwrap();
    assert_eq!(store.key_hashes.len(), 2);
    store.delete_subject("alice", 6).unwrap().unwrap();
    assert_eq!(store.key_hashes.len(), 0);
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_subject(&subject("alice")).unwrap();
        store.durable().await.unwrap();
    }
    // The group-commit task of the first handle releases sled's lock once it sees the close.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let store = loop {
        match Store::open(dir.path()) {
            Ok(store) => break store,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "not reopened: {e}");
                tokio::task::yield_now().await;
            }
        }
    };
    assert_eq!(store.subject("alice").unwrap().unwrap().id, "alice");
    let listed = store.list_subjects(None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.list_subjects(Some("alice"), 10).unwrap().is_empty());
}

#[tokio::test]
async fn sweeping_removes_only_expired_tokens_and_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_subject(&subject("alice")).unwrap();
    store
        .insert_access_key(&key("ak_1", "alice", 1), 10)
        .unwrap();
    let mut old = token("ak_1", 0);
    old.expires_at = 100;
    store.insert_token("old", &old, 0).unwrap();
    let mut old_child = token("old", 1);
    old_child.expires_at = 90;
    store.insert_token("old-child", &old_child, 0).unwrap();
    store.insert_token("live", &token("ak_1", 0), 0).unwrap();

    assert_eq!(store.sweep_expired_tokens(1000, 10).unwrap(), 2);
    assert!(store.token("old").unwrap().is_none());
    assert!(store.token("old-child").unwrap().is_none());
    assert!(store.token("live").unwrap().is_some());
    assert_eq!(store.token_count(), 1);
    assert_eq!(
        store.revoke_descendants("ak_1", 5).unwrap(),
        1,
        "only the live one is indexed"
    );
    assert_eq!(store.sweep_expired_tokens(1000, 10).unwrap(), 0);
}

/// Mints racing the revocation of their parent: every child that was stored is revoked by
/// the cascade, and no mint succeeds once the revocation has returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mints_racing_a_revocation_never_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.create_subject(&subject("alice")).unwrap());
    assert_eq!(
        store
            .insert_access_key(&key("ak_1", "alice", 1), 10)
            .unwrap(),
        KeyOutcome::Stored
    );
    for round in 0..20 {
        let parent = format!("p{round}");
        assert_eq!(
            store.insert_token(&parent, &token("ak_1", 0), 0).unwrap(),
            MintOutcome::Stored
        );
        let minters: Vec<_> = (0..4)
            .map(|m| {
                let (store, parent) = (store.clone(), parent.clone());
                std::thread::spawn(move || {
                    let mut stored = Vec::new();
                    for n in 0..200 {
                        let jti = format!("{parent}-{m}-{n}");
                        match store.insert_token(&jti, &token(&parent, 1), 0).unwrap() {
                            MintOutcome::Stored => stored.push(jti),
                            MintOutcome::ParentGone => break,
                        }
                    }
                    stored
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_micros(200 * round));
        store.revoke_token(&parent, 5).unwrap();
        assert_eq!(
            store
                .insert_token(&format!("{parent}-late"), &token(&parent, 1), 0)
                .unwrap(),
            MintOutcome::ParentGone
        );
        for minter in minters {
            for jti in minter.join().unwrap() {
                let record = store.token(&jti).unwrap().unwrap();
                assert_ne!(
                    record.revoked_at, 0,
                    "{jti} survived the revocation of {parent}"
                );
                assert!(
                    store.is_revoked(&jti),
                    "{jti} missing from the revoked index"
                );
            }
        }
    }
}

fn lease(id: &str, holder: &str, state: i32) -> LeaseRecord {
    LeaseRecord {
        id: id.to_owned(),
        upstream: "up".into(),
        subject: "alice".into(),
        holder: holder.to_owned(),
        root_key: "ak_1".into(),
        grant: Some(GrantRecord {
            projects: vec!["alpha".into()],
            permissions: vec!["read".into()],
        }),
        issued_at: 10,
        expires_at: 1000,
        state,
        next_attempt_at: 1000,
        ..LeaseRecord::default()
    }
}

fn ids(leases: Vec<LeaseRecord>) -> Vec<String> {
    leases.into_iter().map(|l| l.id).collect()
}

/// Every entry of every lease tree other than the records themselves.
fn lease_entries(store: &Store) -> usize {
    [
        &store.lease_queue,
        &store.leases_by_root,
        &store.leases_by_holder,
        &store.leases_by_upstream,
        &store.revoked_leases,
    ]
    .iter()
    .map(|t| t.len())
    .sum()
}

#[tokio::test]
async fn lease_entries_follow_its_state_and_removal_waits_for_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.insert_lease(&lease("ls_a", "t1", 2), None).unwrap());
    assert!(store.insert_lease(&lease("ls_b", "t2", 2), None).unwrap());
    assert!(store.insert_lease(&lease("ls_c", "t2", 1), None).unwrap());
    assert_eq!(ids(store.open_leases_under("ak_1").unwrap()).len(), 3);
    assert_eq!(
        ids(store.open_leases_held_by("t2").unwrap()),
        ["ls_b", "ls_c"]
    );
    assert_eq!(store.open_lease_holders().unwrap(), ["t1", "t2"]);
    assert_eq!(store.open_lease_count("up"), 3);
    assert!(store.open_leases_under("ak_2").unwrap().is_empty());

    // Made due: it moves in the queue and stays indexed.
    let due = store
        .update_lease("ls_a", |l| {
            l.state = 3;
            l.next_attempt_at = 50;
            true
        })
        .unwrap()
        .unwrap();
    assert_eq!(due.state, 3);
    assert_eq!(ids(store.due_leases(60, 10).unwrap()), ["ls_a"]);
    assert!(store.update_lease("ls_a", |_| false).unwrap().is_none());
    assert!(store.update_lease("ls_none", |_| true).unwrap().is_none());

    // Revoked: out of the queue and every index, queued for removal by its revocation time.
    let mut revoked = due;
    revoked.state = 4;
    revoked.revoked_at = 100;
    store.put_lease(&revoked).unwrap();
    assert_eq!(
        ids(store.due_leases(i64::MAX, 10).unwrap()),
        ["ls_b", "ls_c"]
    );
    assert_eq!(store.open_lease_holders().unwrap(), ["t2"]);
    assert_eq!(store.open_lease_count("up"), 2);
    assert_eq!(ids(store.open_leases_under("ak_1").unwrap()).len(), 2);

    assert_eq!(store.remove_revoked_leases(99, 10).unwrap(), 0);
    assert!(
        store.lease("ls_a").unwrap().is_some(),
        "kept before the cutoff"
    );
    assert_eq!(store.remove_revoked_leases(100, 10).unwrap(), 1);
    assert!(
        store.lease("ls_a").unwrap().is_none(),
        "removed at the cutoff"
    );
    assert_eq!(store.remove_revoked_leases(i64::MAX, 10).unwrap(), 0);

    for id in ["ls_b", "ls_c"] {
        let mut l = store.lease(id).unwrap().unwrap();
        l.state = 4;
        l.revoked_at = 200;
        store.put_lease(&l).unwrap();
    }
    assert_eq!(store.remove_revoked_leases(300, 10).unwrap(), 2);
    assert_eq!(store.leases.len(), 0);
    assert_eq!(lease_entries(&store), 0, "no entry outlives its lease");
}

#[tokio::test]
async fn a_lease_from_a_key_changed_since_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_subject(&subject("alice")).unwrap();
    let mut k = key("ak_1", "alice", 1);
    k.updated_at = 5;
    store.insert_access_key(&k, 10).unwrap();
    let l = lease("ls_a", "ak_1", 1);
    assert!(!store.insert_lease(&l, Some(4)).unwrap());
    assert!(store.lease("ls_a").unwrap().is_none());
    assert_eq!(lease_entries(&store), 0);
    assert!(store.insert_lease(&l, Some(5)).unwrap());
    store.delete_access_key("ak_1", 6).unwrap();
    assert!(
        !store
            .insert_lease(&lease("ls_b", "ak_1", 1), Some(5))
            .unwrap()
    );
}

#[tokio::test]
async fn leases_stored_before_the_indexes_are_indexed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_subject(&subject("alice")).unwrap();
    store
        .insert_access_key(&key("ak_1", "alice", 1), 10)
        .unwrap();
    store.insert_token("t1", &token("ak_1", 0), 0).unwrap();
    let mut legacy = lease("ls_open", "t1", 2);
    legacy.root_key.clear();
    legacy.grant = None;
    let mut closed = lease("ls_closed", "ak_1", 4);
    closed.root_key.clear();
    closed.revoked_at = 100;
    for l in [&legacy, &closed] {
        store
            .leases
            .insert(l.id.as_bytes(), l.encode_to_vec())
            .unwrap();
    }
    store
        .leases
        .insert("ls_garbage", &[0xff, 0xff][..])
        .unwrap();
    store.meta.remove(LEASES_INDEXED).unwrap();

    store.index_legacy_leases().unwrap();
    assert_eq!(ids(store.open_leases_under("ak_1").unwrap()), ["ls_open"]);
    assert_eq!(ids(store.open_leases_held_by("t1").unwrap()), ["ls_open"]);
    assert_eq!(store.lease("ls_open").unwrap().unwrap().root_key, "ak_1");
    assert_eq!(store.remove_revoked_leases(100, 10).unwrap(), 1);
    assert!(store.lease("ls_closed").unwrap().is_none());
    // Once only: a lease written raw afterwards is not picked up by a second run.
    store
        .leases
        .insert("ls_late", lease("ls_late", "t1", 2).encode_to_vec())
        .unwrap();
    store.index_legacy_leases().unwrap();
    assert_eq!(store.open_leases_held_by("t1").unwrap().len(), 1);
}

/// The lease worker's pass, in process with an explicit clock: it finds dead holders and due
/// work through the indexes only. Ten thousand revoked leases are made undecodable: a pass
/// that read any of them (as the old full scan did) fails. Then retention: a revoked lease is
/// kept until `revoked_at + lease_retention` and removed, with its entries, at that instant.
#[tokio::test]
async fn the_worker_pass_reads_no_closed_lease_and_removes_it_after_retention() {
    use crate::broker::{Broker, MasterKeySource};
    const LEASE_LIVE: i32 = 2;

    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config {
        data_dir: dir.path().to_owned(),
        policies: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..crate::config::Config::default()
    };
    let retention = config.lease_retention.as_secs() as i64;
    let broker = Broker::open(config, MasterKeySource::File).await.unwrap();
    let store = broker.store();
    let admin_key = String::from_utf8(store.meta("bootstrap").unwrap().unwrap()).unwrap();
    // At or after the wall clock, so the background worker (driven by the wall clock) never
    // reaches this test's removal times.
    let t = crate::clock::Clock::now(&crate::clock::SystemClock);

    for i in 0..10_000 {
        let mut l = lease(&format!("ls_closed{i:05}"), "ak_gone", 4);
        l.revoked_at = t;
        store.put_lease(&l).unwrap();
        store
            .leases
            .insert(l.id.as_bytes(), &[0xff, 0xff][..])
            .unwrap();
    }
    let mut dead = lease("ls_dead", "ak_gone", LEASE_LIVE);
    dead.expires_at = t + 3600;
    dead.next_attempt_at = t + 3600;
    let mut alive = lease("ls_alive", &admin_key, LEASE_LIVE);
    alive.root_key = admin_key.clone();
    alive.expires_at = t + 2 * retention;
    alive.next_attempt_at = t + 2 * retention;
    let mut closed = lease("ls_clean", "ak_gone", 4);
    closed.revoked_at = t;
    for l in [&dead, &alive, &closed] {
        store.put_lease(l).unwrap();
    }

    broker.upstreams.process_leases(t + 1).await.unwrap();
    assert_eq!(
        store.lease("ls_dead").unwrap().unwrap().state,
        4,
        "dead holder"
    );
    assert_eq!(store.lease("ls_alive").unwrap().unwrap().state, LEASE_LIVE);
    assert!(store.lease("ls_clean").unwrap().is_some());

    broker
        .upstreams
        .process_leases(t + retention - 1)
        .await
        .unwrap();
    assert!(
        store.lease("ls_clean").unwrap().is_some(),
        "kept before retention"
    );
    assert_eq!(
        store.leases.get("ls_closed00000").unwrap().as_deref(),
        Some(&[0xff, 0xff][..])
    );

    // 10 002 closed leases are due; a pass removes at most 1000.
    let mut passes = 0;
    while store.leases.len() > 2 {
        broker
            .upstreams
            .process_leases(t + retention)
            .await
            .unwrap();
        passes += 1;
        assert!(
            passes <= 11,
            "removal stalled at {} leases",
            store.leases.len()
        );
    }
    assert!(
        store.lease("ls_clean").unwrap().is_none(),
        "removed at retention"
    );
    assert!(store.leases.get("ls_closed09999").unwrap().is_none());
    assert_eq!(store.lease("ls_alive").unwrap().unwrap().state, LEASE_LIVE);
    for key in store.revoked_leases.iter().keys() {
        let id = String::from_utf8(key.unwrap()[8..].to_vec()).unwrap();
        assert!(
            store.lease(&id).unwrap().is_some(),
            "{id} outlived by its entry"
        );
    }
}

/// The access-key cache trusts `generation`: every write method on subjects and keys moves
/// it, whatever its outcome, and reads and token writes do not.
#[tokio::test]
async fn every_subject_and_key_write_moves_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let moved = |what: &str, write: &dyn Fn()| {
        let before = store.generation();
        write();
        assert!(
            store.generation() > before,
            "{what} did not move the generation"
        );
    };
    moved("create_subject", &|| {
        store.create_subject(&subject("alice")).unwrap();
    });
    moved("create_subject (taken)", &|| {
        store.create_subject(&subject("alice")).unwrap();
    });
    moved("insert_access_key", &|| {
        store
            .insert_access_key(&key("ak_1", "alice", 1), 10)
            .unwrap();
    });
    let old = store.access_key("ak_1").unwrap().unwrap();
    let new = AccessKeyRecord {
        updated_at: 5,
        ..old.clone()
    };
    moved("replace_access_key", &|| {
        store.replace_access_key(&old, &new, &[], 5).unwrap();
    });
    moved("touch_access_key", &|| {
        store.touch_access_key("ak_1", 6).unwrap();
    });
    moved("delete_access_key", &|| {
        store.delete_access_key("ak_1", 7).unwrap();
    });
    moved("delete_subject", &|| {
        store.delete_subject("alice", 8).unwrap();
    });
    let still = store.generation();
    store.subject("alice").unwrap();
    store.access_key_by_hash(&[1; 32]).unwrap();
    store.insert_token("t1", &token("ak_9", 0), 0).unwrap();
    assert_eq!(store.generation(), still, "reads and tokens leave it");
}
