use super::*;
use crate::pb::storage::{GrantRecord, SubjectRecord};

fn subject(id: &str) -> SubjectRecord {
    SubjectRecord {
        id: id.to_owned(),
        kind: 1,
        grant: Some(GrantRecord {
            projects: vec!["alpha".into()],
            permissions: vec!["read".into()],
        }),
        created_at: 1,
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

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_subject(&subject("alice")).unwrap();
        store.durable().await.unwrap();
    }
    // The group-commit task of the first handle releases sled's lock once it sees the close.
    let mut reopened = Store::open(dir.path());
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        reopened = Store::open(dir.path());
    }
    let store = reopened.unwrap();
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
