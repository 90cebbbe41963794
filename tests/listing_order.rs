//! Listings over real gRPC keep the order records were made in: access-key times carry their
//! nanoseconds through storage, `created_at`/`updated_at` order follows them (ties by id), and
//! paging one key at a time yields the same sequence. ListSubjects page tokens are signed and
//! bound to their listing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{create_access_key as create, update_access_key as update, *};
use tonic::Code;

async fn list(
    b: &Broker,
    cred: &str,
    req: pb::ListAccessKeysRequest,
) -> Result<pb::ListAccessKeysResponse, tonic::Status> {
    b.keys()
        .await
        .list_access_keys(authed(req, cred))
        .await
        .map(tonic::Response::into_inner)
}

/// Alice's keys in `order_by`, in one page.
async fn listed(b: &Broker, admin: &str, order_by: &str) -> Vec<pb::AccessKey> {
    list(
        b,
        admin,
        pb::ListAccessKeysRequest {
            owner: "alice".into(),
            order_by: order_by.into(),
            page_size: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .keys
}

fn ids(keys: &[pb::AccessKey]) -> Vec<String> {
    keys.iter().map(|k| k.id.clone()).collect()
}

/// (seconds, nanos) of a timestamp that must be set.
fn at(t: Option<&prost_types::Timestamp>) -> (i64, i32) {
    let t = t.expect("timestamp set");
    (t.seconds, t.nanos)
}

/// Keys created one after another, quickly (several within one second), list by
/// `created_at` in creation order, although their random ids sort otherwise; the listed
/// times are those the creation answered, nanos included, and paging with one key per page
/// yields the same sequence in both directions. Keys updated later move to the end of
/// `updated_at` order, in update order.
#[tokio::test]
async fn keys_list_in_the_order_they_were_made() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha"], &["read"]).await;
    let mut made = Vec::new();
    for i in 0..12 {
        let created = create(
            &b,
            &admin,
            pb::CreateAccessKeyRequest {
                owner: "alice".into(),
                name: format!("k{i}"),
                permissions: strings(&["read"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        made.push(created.key.unwrap());
    }
    // On the wall clock, twelve creations all exactly on a second boundary do not happen.
    assert!(
        made.iter().any(|k| at(k.created_at.as_ref()).1 != 0),
        "no creation time has a sub-second part: {:?}",
        made.iter().map(|k| k.created_at).collect::<Vec<_>>()
    );
    assert!(
        made.iter()
            .all(|k| (0..1_000_000_000).contains(&at(k.created_at.as_ref()).1))
    );

    let asc = listed(&b, &admin, "created_at asc").await;
    assert_eq!(ids(&asc), ids(&made), "created_at asc is creation order");
    for (shown, created) in asc.iter().zip(&made) {
        assert_eq!(
            shown.created_at, created.created_at,
            "stored nanos come back"
        );
        assert_eq!(shown.updated_at, created.created_at, "{}", shown.name);
    }
    assert_eq!(
        ids(&listed(&b, &admin, "").await),
        ids(&made),
        "the default"
    );
    let mut reversed = ids(&made);
    reversed.reverse();
    assert_eq!(ids(&listed(&b, &admin, "created_at desc").await), reversed);

    for (order_by, expected) in [
        ("created_at asc", ids(&made)),
        ("created_at desc", reversed),
    ] {
        let mut paged = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(
                &b,
                &admin,
                pb::ListAccessKeysRequest {
                    owner: "alice".into(),
                    order_by: order_by.into(),
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(page.keys.len() <= 1);
            paged.extend(ids(&page.keys));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(paged, expected, "{order_by} one key per page");
    }

    // Updating two keys, the later one first: they end `updated_at` order, in update order.
    // Ten seconds on, so that `updated_at` is the update's time: a key changed within the
    // second its `updated_at` names moves to the next second (it is also the key's version).
    b.advance_clock(10);
    let (first, second) = (&made[7], &made[2]);
    for key in [first, second] {
        update(
            &b,
            &admin,
            &key.id,
            &["description"],
            pb::AccessKey {
                description: "touched".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let by_update = ids(&listed(&b, &admin, "updated_at").await);
    assert_eq!(
        by_update[by_update.len() - 2..],
        [first.id.clone(), second.id.clone()]
    );
    let untouched: Vec<String> = ids(&made)
        .into_iter()
        .filter(|id| *id != first.id && *id != second.id)
        .collect();
    assert_eq!(by_update[..by_update.len() - 2], untouched[..]);
}

/// A stopped test clock has no sub-second part: times are whole seconds, and keys made in
/// the same (stopped) second list by id.
#[tokio::test]
async fn a_stopped_clock_gives_whole_seconds_and_ties_go_by_id() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha"], &["read"]).await;
    let stopped = wall_now() + 100;
    b.stop_clock_at(stopped);
    let mut made = Vec::new();
    for i in 0..4 {
        let created = create(
            &b,
            &admin,
            pb::CreateAccessKeyRequest {
                owner: "alice".into(),
                name: format!("k{i}"),
                permissions: strings(&["read"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(at(created.key.unwrap().created_at.as_ref()), (stopped, 0));
        made.push(created.id);
    }
    made.sort();
    assert_eq!(ids(&listed(&b, &admin, "created_at").await), made);
}

/// ListSubjects pages with signed page tokens bound to the listing: paging visits every
/// subject once in id order, and a bare id (what the token used to be), an altered token or
/// ListAccessKeys' token is INVALID_ARGUMENT on `page_token`.
#[tokio::test]
async fn subject_page_tokens_are_signed_and_bound() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    for id in ["carol", "alice", "bob"] {
        create_subject(&b, &admin, id, &["alpha"], &["read"]).await;
    }
    let list_subjects = |page_token: String| {
        let b = &b;
        let admin = admin.clone();
        async move {
            b.subjects()
                .await
                .list_subjects(authed(
                    pb::ListSubjectsRequest {
                        page_size: 2,
                        page_token,
                    },
                    &admin,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = list_subjects(String::new()).await.unwrap();
    let names: Vec<&str> = first
        .subjects
        .iter()
        .map(|s| s.subject_id.as_str())
        .collect();
    assert_eq!(names, ["admin", "alice"]);
    assert_ne!(first.next_page_token, "alice", "not the bare position");
    let second = list_subjects(first.next_page_token.clone()).await.unwrap();
    let names: Vec<&str> = second
        .subjects
        .iter()
        .map(|s| s.subject_id.as_str())
        .collect();
    assert_eq!(names, ["bob", "carol"]);
    assert!(second.next_page_token.is_empty());
    assert!(
        first.subjects[0].created_at.is_some(),
        "subjects show when they were created"
    );

    let mut altered = first.next_page_token.clone().into_bytes();
    altered[2] = if altered[2] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for (what, token) in [("a bare id", "alice".to_owned()), ("altered", altered)] {
        let err = list_subjects(token).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{what}: {}",
            err.message()
        );
        assert_eq!(field_of(&err), vec!["page_token"], "{what}");
        assert!(
            err.message().contains("unchanged"),
            "{what}: {}",
            err.message()
        );
    }

    // A key listing's token is validly signed, but continues another query.
    create_key(&b, &admin, "alice", &["read"]).await;
    let keys = list(
        &b,
        &admin,
        pb::ListAccessKeysRequest {
            show_all: true,
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!keys.next_page_token.is_empty());
    let err = list_subjects(keys.next_page_token).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(field_of(&err), vec!["page_token"]);
    assert!(err.message().contains("another query"), "{}", err.message());
}
