//! Listings: the access keys' Foreman-style `filter` and `order_by`, and, for every listing,
//! the opaque, tamper-evident page token that continues exactly one query
//! ([`seal_page`], [`open_page`]).

use std::cmp::Ordering;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{domain::validate::quote, pb::storage::AccessKeyRecord};

/// A field `filter` can test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterField {
    Name,
    Owner,
    Description,
}

/// One `field op value` term; terms are joined with `and`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Clause {
    /// Case-insensitive substring (`~`).
    Contains(FilterField, String),
    /// Exact match (`=`).
    Equals(FilterField, String),
}

/// A field `order_by` can sort on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrderField {
    Name,
    CreatedAt,
    UpdatedAt,
    LastUsedAt,
    ExpiresAt,
}

/// A sort value; one query only ever compares values of one variant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
enum SortValue {
    Int(i64),
    Text(String),
    /// A stored time with its sub-second part (seconds, nanos), so that keys made within
    /// one second keep their order; a page token carries both.
    Time(i64, i32),
}

/// A parsed listing query: what to keep and in which order.
#[derive(Clone, Debug)]
pub struct KeyQuery {
    clauses: Vec<Clause>,
    order: OrderField,
    descending: bool,
    /// Canonical text of filter and order, bound into page tokens.
    fingerprint: String,
}

/// Where the previous page of a listing ended, signed so a client cannot forge it or reuse
/// it for another query.
#[derive(Serialize, Deserialize)]
struct Cursor<P> {
    /// The query the token belongs to (listing, scope and query fingerprint).
    q: String,
    /// Where the last page ended (for keys: the last key's sort value and id).
    p: P,
}

/// Signs `position`, where a page of the query `query` ended, into an opaque page token
/// (`base64url(JSON) . base64url(HMAC-SHA-256)` under `key`).
pub fn seal_page<P: Serialize>(key: &[u8; 32], query: &str, position: P) -> String {
    let body = serde_json::to_vec(&Cursor {
        q: query.to_owned(),
        p: position,
    })
    .unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(body);
    format!(
        "{body}.{}",
        URL_SAFE_NO_PAD.encode(mac(key, body.as_bytes()))
    )
}

/// The position in a page token of [`seal_page`], once its signature is checked and it is
/// shown to continue the query `query`; refusals say what to do (`keep` names what must stay
/// as on the first page).
pub fn open_page<P: DeserializeOwned>(
    key: &[u8; 32],
    query: &str,
    token: &str,
    keep: &str,
) -> Result<P, String> {
    let invalid = || {
        "page_token is not valid: pass the `next_page_token` of the previous page unchanged"
            .to_owned()
    };
    let (body, tag) = token.split_once('.').ok_or_else(invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    let mut check = Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|_| invalid())?;
    check.update(body.as_bytes());
    check.verify_slice(&tag).map_err(|_| invalid())?;
    let cursor: Cursor<serde_json::Value> = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if cursor.q != query {
        return Err(format!(
            "page_token belongs to another query: keep {keep} as on the first page"
        ));
    }
    serde_json::from_value(cursor.p).map_err(|_| invalid())
}

fn field_of(name: &str) -> Result<FilterField, String> {
    match name {
        "name" => Ok(FilterField::Name),
        "owner" => Ok(FilterField::Owner),
        "description" => Ok(FilterField::Description),
        other => Err(format!(
            "cannot filter on {}: use `name`, `owner` or `description`",
            quote(other)
        )),
    }
}

impl KeyQuery {
    /// Parses `filter` and `order_by`; a message naming the bad part on failure.
    pub fn parse(filter: &str, order_by: &str) -> Result<Self, (&'static str, String)> {
        let clauses = parse_filter(filter).map_err(|e| ("filter", e))?;
        let (order, descending) = parse_order(order_by).map_err(|e| ("order_by", e))?;
        Ok(Self {
            fingerprint: format!("{filter}\u{1}{order_by}"),
            clauses,
            order,
            descending,
        })
    }

    /// Whether `key` passes the filter.
    pub fn matches(&self, key: &AccessKeyRecord) -> bool {
        self.clauses.iter().all(|clause| {
            let value = |f: FilterField| match f {
                FilterField::Name => key.name.as_str(),
                FilterField::Owner => key.owner.as_str(),
                FilterField::Description => key.description.as_str(),
            };
            match clause {
                Clause::Contains(f, needle) => value(*f).to_lowercase().contains(needle),
                Clause::Equals(f, wanted) => value(*f) == wanted,
            }
        })
    }

    fn sort_value(&self, key: &AccessKeyRecord) -> SortValue {
        match self.order {
            OrderField::Name => SortValue::Text(key.name.clone()),
            OrderField::CreatedAt => SortValue::Time(key.created_at, key.created_nanos),
            OrderField::UpdatedAt => SortValue::Time(key.updated_at, key.updated_nanos),
            OrderField::LastUsedAt => SortValue::Int(key.last_used_at),
            OrderField::ExpiresAt => SortValue::Int(key.expires_at),
        }
    }

    /// Total order of the listing: the sort value, then the id, both in the direction asked.
    fn compare(&self, a: (&SortValue, &str), b: (&SortValue, &str)) -> Ordering {
        let ord = a.0.cmp(b.0).then_with(|| a.1.cmp(b.1));
        if self.descending { ord.reverse() } else { ord }
    }

    /// Filters and sorts `keys`, then returns the page after `cursor` (or after `offset`
    /// keys), the total number of matches, and the cursor that ends this page when more
    /// follow. Keyset paging: keys created or deleted between pages never shift the others.
    pub fn page(
        &self,
        mut keys: Vec<AccessKeyRecord>,
        after: Option<(SortValueRef, String)>,
        offset: usize,
        size: usize,
    ) -> (Vec<AccessKeyRecord>, usize, Option<(SortValueRef, String)>) {
        keys.retain(|k| self.matches(k));
        let total = keys.len();
        let mut keyed: Vec<(SortValue, AccessKeyRecord)> =
            keys.into_iter().map(|k| (self.sort_value(&k), k)).collect();
        keyed.sort_by(|a, b| self.compare((&a.0, &a.1.id), (&b.0, &b.1.id)));
        let start = match &after {
            Some((SortValueRef(v), id)) => keyed
                .iter()
                .position(|(value, k)| self.compare((value, &k.id), (v, id)) == Ordering::Greater)
                .unwrap_or(keyed.len()),
            None => offset.min(keyed.len()),
        };
        let page: Vec<(SortValue, AccessKeyRecord)> =
            keyed.into_iter().skip(start).take(size + 1).collect();
        let more = page.len() > size;
        let mut page: Vec<(SortValue, AccessKeyRecord)> = page.into_iter().take(size).collect();
        let next = if more {
            page.last()
                .map(|(v, k)| (SortValueRef(v.clone()), k.id.clone()))
        } else {
            None
        };
        (page.drain(..).map(|(_, k)| k).collect(), total, next)
    }

    /// Signs a cursor for this query and `scope` into an opaque page token.
    pub fn token(&self, scope: &str, key: &[u8; 32], cursor: (SortValueRef, String)) -> String {
        seal_page(key, &self.query(scope), (cursor.0.0, cursor.1))
    }

    /// The query a page token of this listing in `scope` is bound to.
    fn query(&self, scope: &str) -> String {
        format!("keys\u{1}{scope}\u{1}{}", self.fingerprint)
    }

    /// Checks a page token's signature and that it continues this very query.
    pub fn cursor(
        &self,
        scope: &str,
        key: &[u8; 32],
        token: &str,
    ) -> Result<(SortValueRef, String), String> {
        let (value, id): (SortValue, String) = open_page(
            key,
            &self.query(scope),
            token,
            "owner, show_all, filter and order_by",
        )?;
        // A token sealed before times kept their nanos carries whole seconds: it continues
        // from the start of its second.
        let value = match (self.order, value) {
            (OrderField::CreatedAt | OrderField::UpdatedAt, SortValue::Int(secs)) => {
                SortValue::Time(secs, 0)
            }
            (_, value) => value,
        };
        Ok((SortValueRef(value), id))
    }
}

/// A sort value carried between pages (opaque outside this module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortValueRef(SortValue);

fn mac(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let filter = filter.trim();
    if filter.is_empty() {
        return Ok(Vec::new());
    }
    let mut clauses = Vec::new();
    for term in filter.split(" and ") {
        let term = term.trim();
        let clause = if let Some((field, value)) = term.split_once('~') {
            Clause::Contains(field_of(field.trim())?, unquote(value)?.to_lowercase())
        } else if let Some((field, value)) = term.split_once('=') {
            Clause::Equals(field_of(field.trim())?, unquote(value)?)
        } else if !term.is_empty() && !term.contains(char::is_whitespace) {
            Clause::Contains(FilterField::Name, term.to_lowercase())
        } else {
            return Err(format!(
                "cannot read {}: use `name ~ laptop`, `owner = alice`, a bare word, joined with `and`",
                quote(term)
            ));
        };
        clauses.push(clause);
    }
    Ok(clauses)
}

fn unquote(value: &str) -> Result<String, String> {
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    if v.is_empty() {
        return Err("a filter term has no value: write `field ~ value`".to_owned());
    }
    Ok(v.to_owned())
}

fn parse_order(order_by: &str) -> Result<(OrderField, bool), String> {
    let mut words = order_by.split_whitespace();
    let field = match words.next() {
        None => return Ok((OrderField::CreatedAt, false)),
        Some("name") => OrderField::Name,
        Some("created_at") => OrderField::CreatedAt,
        Some("updated_at") => OrderField::UpdatedAt,
        Some("last_used_at") => OrderField::LastUsedAt,
        Some("expires_at") => OrderField::ExpiresAt,
        Some(other) => {
            return Err(format!(
                "cannot order by {}: use `name`, `created_at`, `updated_at`, `last_used_at` or `expires_at`",
                quote(other)
            ));
        }
    };
    let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(format!("direction {} is not `asc` or `desc`", quote(other)));
        }
    };
    if let Some(extra) = words.next() {
        return Err(format!("unexpected {} after the direction", quote(extra)));
    }
    Ok((field, descending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, name: &str, created: i64) -> AccessKeyRecord {
        AccessKeyRecord {
            id: id.into(),
            owner: "alice".into(),
            name: name.into(),
            created_at: created,
            ..AccessKeyRecord::default()
        }
    }

    fn key_at(id: &str, secs: i64, nanos: i32) -> AccessKeyRecord {
        AccessKeyRecord {
            created_nanos: nanos,
            updated_at: secs,
            updated_nanos: nanos,
            ..key(id, "n", secs)
        }
    }

    fn ids(page: &[AccessKeyRecord]) -> Vec<&str> {
        page.iter().map(|k| k.id.as_str()).collect()
    }

    #[test]
    fn times_sort_by_their_nanos_then_by_id() {
        // Made in this order within second 10 (ids deliberately out of order), then a tie.
        let keys = vec![
            key_at("k_z", 10, 100),
            key_at("k_a", 10, 200),
            key_at("k_m", 10, 300),
            key_at("k_c", 10, 300),
            key_at("k_b", 9, 999_999_999),
            key_at("k_y", 11, 0),
        ];
        for order in ["", "created_at", "created_at asc", "updated_at"] {
            let q = KeyQuery::parse("", order).unwrap();
            let (page, _, _) = q.page(keys.clone(), None, 0, 10);
            assert_eq!(
                ids(&page),
                ["k_b", "k_z", "k_a", "k_c", "k_m", "k_y"],
                "{order:?}"
            );
        }
        let q = KeyQuery::parse("", "created_at desc").unwrap();
        let (page, _, _) = q.page(keys, None, 0, 10);
        assert_eq!(ids(&page), ["k_y", "k_m", "k_c", "k_a", "k_z", "k_b"]);
    }

    #[test]
    fn page_tokens_carry_the_nanos() {
        let secret = [7u8; 32];
        let keys: Vec<_> = ["k_e", "k_d", "k_c", "k_b", "k_a"]
            .iter()
            .zip(1..)
            .map(|(id, n)| key_at(id, 10, n * 1000))
            .collect();
        for order in ["created_at", "created_at desc", "updated_at"] {
            let q = KeyQuery::parse("", order).unwrap();
            let (all, _, _) = q.page(keys.clone(), None, 0, 10);
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let (page, total, next) = q.page(keys.clone(), after, 0, 1);
                assert_eq!(total, 5);
                seen.extend(page);
                let Some(next) = next else { break };
                let token = q.token("all", &secret, next);
                after = Some(q.cursor("all", &secret, &token).unwrap());
            }
            assert_eq!(ids(&seen), ids(&all), "{order}");
        }
    }

    #[test]
    fn a_token_of_whole_seconds_continues_from_its_second() {
        let secret = [7u8; 32];
        let q = KeyQuery::parse("", "created_at").unwrap();
        // Sealed as before nanos were kept: after second 10, key k_b.
        let token = seal_page(
            &secret,
            &q.query("all"),
            (SortValue::Int(10), "k_b".to_owned()),
        );
        let cursor = q.cursor("all", &secret, &token).unwrap();
        let keys = vec![
            key_at("k_a", 10, 0),
            key_at("k_b", 10, 0),
            key_at("k_c", 10, 0),
            key_at("k_d", 10, 5),
            key_at("k_e", 9, 0),
        ];
        let (page, _, _) = q.page(keys, Some(cursor), 0, 10);
        assert_eq!(ids(&page), ["k_c", "k_d"]);
    }

    #[test]
    fn filters_parse_and_match() {
        let q = KeyQuery::parse("name ~ LAP and owner = alice", "").unwrap();
        assert!(q.matches(&key("1", "my laptop", 1)));
        assert!(!q.matches(&key("1", "desktop", 1)));
        let bare = KeyQuery::parse("lap", "").unwrap();
        assert!(bare.matches(&key("1", "Laptop", 1)));
        for bad in ["colour ~ red", "name ~", "two words"] {
            assert_eq!(KeyQuery::parse(bad, "").unwrap_err().0, "filter", "{bad}");
        }
        for bad in ["size", "name sideways", "name asc extra"] {
            assert_eq!(KeyQuery::parse("", bad).unwrap_err().0, "order_by", "{bad}");
        }
    }

    #[test]
    fn pages_are_keyset_and_tokens_are_bound() {
        let secret = [7u8; 32];
        let q = KeyQuery::parse("", "created_at desc").unwrap();
        let keys: Vec<_> = (0..5).map(|i| key(&format!("k{i}"), "n", i)).collect();
        let (page, total, next) = q.page(keys.clone(), None, 0, 2);
        assert_eq!(total, 5);
        assert_eq!(
            page.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["k4", "k3"]
        );
        let token = q.token("owner:alice", &secret, next.unwrap());
        let cursor = q.cursor("owner:alice", &secret, &token).unwrap();
        // k3 is deleted and k9 created between pages: the rest follows without a gap.
        let mut changed: Vec<_> = keys.into_iter().filter(|k| k.id != "k3").collect();
        changed.push(key("k9", "n", 9));
        let (page, _, _) = q.page(changed, Some(cursor), 0, 2);
        assert_eq!(
            page.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["k2", "k1"]
        );

        assert!(
            q.cursor("owner:bob", &secret, &token).is_err(),
            "other scope"
        );
        let other = KeyQuery::parse("", "name").unwrap();
        assert!(
            other.cursor("owner:alice", &secret, &token).is_err(),
            "other order"
        );
        let mut forged = token.clone();
        forged.insert(3, 'x');
        assert!(
            q.cursor("owner:alice", &secret, &forged).is_err(),
            "tampered"
        );
        assert!(
            q.cursor("owner:alice", &[8u8; 32], &token).is_err(),
            "other key"
        );
    }
}
