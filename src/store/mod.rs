//! sled trees, key encoding and the multi-step transactions (DESIGN §6).
//!
//! **Architecture invariant:** every multi-record change (a cascade, a key and its indexes)
//! is one sled transaction, except a mint: its token record and child-index entry are plain
//! inserts ordered against revocations by the [`gate`] (sled writes two buffers of its own
//! per transaction). Callers then await [`Store::durable`] before they answer, which is the
//! only way an RPC acknowledges a write.

mod durable;
mod gate;

use std::{
    collections::{BTreeSet, HashSet},
    fs::File,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use prost::Message;
use sled::{
    Transactional,
    transaction::{TransactionError, TransactionalTree, UnabortableTransactionError},
};

pub use durable::GroupCommit;
use gate::MintGate;

use crate::pb::storage::{
    AccessKeyRecord, LeaseRecord, SigningKeyRecord, SubjectRecord, TokenRecord, UpstreamRecord,
};

/// Why storage failed; never shown to callers, always logged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode: corruption or a downgrade.
    #[error("corrupt record in `{tree}`: {source}")]
    Decode {
        /// Tree holding the record.
        tree: &'static str,
        /// Decoder failure.
        source: prost::DecodeError,
    },
    /// File system failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The durability flush failed.
    #[error("durable flush failed: {0}")]
    Durability(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

/// Bumps the generation when dropped (see [`Store::changing`]).
struct Changing<'a>(&'a AtomicU64);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Outcome of inserting a minted token.
#[derive(Debug, PartialEq, Eq)]
pub enum MintOutcome {
    /// Stored with its index entry.
    Stored,
    /// The authorising credential was revoked or deleted meanwhile; nothing was stored.
    ParentGone,
}

/// Outcome of inserting an access key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Stored with its indexes.
    Stored,
    /// The owner already holds the maximum number of keys; nothing was stored.
    LimitReached,
    /// The owner does not exist (deleted meanwhile); nothing was stored.
    OwnerGone,
}

const SEP: u8 = 0;

fn index_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k.extend_from_slice(b.as_bytes());
    k
}

fn index_prefix(a: &str) -> Vec<u8> {
    index_key(a, "")
}

/// Records of `tree` in key order strictly after `after`, at most `limit`.
fn page_after<M: Message + Default>(
    tree: &sled::Tree,
    name: &'static str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<M>, StoreError> {
    let iter = match after {
        Some(a) => tree.range::<&[u8], _>((
            std::ops::Bound::Excluded(a.as_bytes()),
            std::ops::Bound::Unbounded,
        )),
        None => tree.iter(),
    };
    iter.take(limit).map(|kv| decode(name, &kv?.1)).collect()
}

fn decode<M: Message + Default>(tree: &'static str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Decode { tree, source })
}

/// The broker's state in one sled database.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    subjects: sled::Tree,
    access_keys: sled::Tree,
    keys_by_owner: sled::Tree,
    key_hashes: sled::Tree,
    tokens: sled::Tree,
    children: sled::Tree,
    signing_keys: sled::Tree,
    meta: sled::Tree,
    upstreams: sled::Tree,
    leases: sled::Tree,
    lease_queue: sled::Tree,
    leases_by_root: sled::Tree,
    leases_by_holder: sled::Tree,
    leases_by_upstream: sled::Tree,
    revoked_leases: sled::Tree,
    revoked: sled::Tree,
    revoked_index: Arc<RwLock<HashSet<String>>>,
    /// Bumped after every write to subjects or access keys (see [`Store::generation`]).
    generation: Arc<AtomicU64>,
    gate: Arc<MintGate>,
    commit: GroupCommit,
}

impl Store {
    /// Opens (or creates) the database under `dir` and starts its group-commit task; must be
    /// called inside a tokio runtime.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("db");
        let db = sled::Config::new().path(&path).open()?;
        // sled's log file; fdatasync'd after every flush (see `durable`).
        let log = File::open(path.join("db"))?;
        let tree = |name: &str| db.open_tree(name);
        let store = Self {
            subjects: tree("subjects")?,
            access_keys: tree("access_keys")?,
            keys_by_owner: tree("keys_by_owner")?,
            key_hashes: tree("key_hashes")?,
            tokens: tree("tokens")?,
            children: tree("children")?,
            signing_keys: tree("signing_keys")?,
            meta: tree("meta")?,
            upstreams: tree("upstreams")?,
            leases: tree("leases")?,
            lease_queue: tree("lease_queue")?,
            leases_by_root: tree("leases_by_root")?,
            leases_by_holder: tree("leases_by_holder")?,
            leases_by_upstream: tree("leases_by_upstream")?,
            revoked_leases: tree("revoked_leases")?,
            revoked_index: Arc::new(RwLock::new(load_revoked(&tree("revoked")?)?)),
            revoked: tree("revoked")?,
            generation: Arc::default(),
            gate: Arc::default(),
            commit: GroupCommit::start(db.clone(), log),
            db,
        };
        store.index_legacy_leases()?;
        Ok(store)
    }

    /// Resolves once every write applied before the call is on disk (group commit).
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.commit.wait().await
    }

    /// A number that changes whenever a subject or an access key is written (created,
    /// replaced, touched or deleted). It is bumped after the write, so something read after
    /// reading a generation is at least as new as that generation: a cache of records may
    /// serve them while the generation it read them at is still current.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks a write to subjects or access keys (see [`Store::generation`]): held for the
    /// whole write method, it bumps the generation when dropped, after the write, on every
    /// path out.
    fn changing(&self) -> Changing<'_> {
        Changing(&self.generation)
    }

    /// Flushes synchronously; used at shutdown.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    // === meta ===

    /// Reads a marker such as "bootstrap done".
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes a marker.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    // === subjects ===

    /// Creates a subject unless the id is taken; returns whether it was created.
    pub fn create_subject(&self, record: &SubjectRecord) -> Result<bool, StoreError> {
        let _changed = self.changing();
        let swapped = self.subjects.compare_and_swap(
            record.id.as_bytes(),
            None as Option<&[u8]>,
            Some(record.encode_to_vec()),
        )?;
        Ok(swapped.is_ok())
    }

    /// Looks a subject up.
    pub fn subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        self.subjects
            .get(id)?
            .map(|v| decode("subjects", &v))
            .transpose()
    }

    /// Subjects in id order strictly after `after`, at most `limit`.
    pub fn list_subjects(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectRecord>, StoreError> {
        page_after(&self.subjects, "subjects", after, limit)
    }

    /// Deletes a subject with all its keys and revokes every token minted from them, in one
    /// transaction. Returns (keys deleted, tokens revoked), or `None` when the subject does
    /// not exist.
    pub fn delete_subject(&self, id: &str, now: i64) -> Result<Option<(u32, u32)>, StoreError> {
        let _changed = self.changing();
        let key_ids = self.key_ids_of(id)?;
        let tokens = self.descendants(&key_ids)?;
        let count_key = index_key("#count", id);
        let gate = self
            .gate
            .change(key_ids.iter().chain(tokens.iter()).map(String::as_str));
        let outcome = (
            &self.subjects,
            &self.access_keys,
            &self.keys_by_owner,
            &self.key_hashes,
            &self.tokens,
            &self.meta,
            &self.revoked,
        )
            .transaction(
                |(subjects, keys, by_owner, hashes, token_tree, meta, revoked)| {
                    if subjects.remove(id.as_bytes())?.is_none() {
                        return Ok(None);
                    }
                    meta.remove(count_key.as_slice())?;
                    let mut deleted = 0u32;
                    for key_id in &key_ids {
                        by_owner.remove(index_key(id, key_id))?;
                        if let Some(raw) = keys.remove(key_id.as_bytes())? {
                            deleted += 1;
                            remove_hashes(hashes, &raw)?;
                        }
                    }
                    Ok(Some((
                        deleted,
                        mark_revoked(token_tree, revoked, &tokens, now)?,
                    )))
                },
            )
            .map_err(tx_error)?;
        let Some((mut deleted, mut revoked)) = outcome else {
            return Ok(None);
        };
        self.remember_revoked(&tokens);
        drop(gate);
        // A token minted concurrently, after the closure was read, is caught here: its key
        // is gone now, so nothing new can appear under it.
        for key_id in &key_ids {
            revoked += self.revoke_descendants(key_id, now)?;
        }
        // A key created after `key_ids` was read and before the subject went: no key can be
        // created for a deleted subject (`insert_access_key` checks it in its transaction),
        // so one more look finds every straggler.
        for key_id in self.key_ids_of(id)? {
            if let Some(n) = self.delete_access_key(&key_id, now)? {
                deleted += 1;
                revoked += n;
            }
        }
        Ok(Some((deleted, revoked)))
    }

    // === access keys ===

    fn key_ids_of(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let prefix = index_prefix(owner);
        self.keys_by_owner
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// How many keys `owner` holds.
    pub fn count_keys(&self, owner: &str) -> Result<u32, StoreError> {
        Ok(self.keys_by_owner.scan_prefix(index_prefix(owner)).count() as u32)
    }

    /// Stores a new key with its owner and hash indexes, enforcing the per-owner maximum
    /// inside the same transaction so concurrent creates cannot overshoot it.
    pub fn insert_access_key(
        &self,
        record: &AccessKeyRecord,
        max_per_owner: u32,
    ) -> Result<KeyOutcome, StoreError> {
        let _changed = self.changing();
        // The count is re-read through a counter key inside the transaction, so two
        // concurrent creates conflict on it and retry.
        let count_key = index_key("#count", &record.owner);
        let held = self.count_keys(&record.owner)?;
        let value = record.encode_to_vec();
        (
            &self.subjects,
            &self.access_keys,
            &self.keys_by_owner,
            &self.key_hashes,
            &self.meta,
            &self.children,
        )
            .transaction(|(subjects, keys, by_owner, hashes, meta, children)| {
                if subjects.get(record.owner.as_bytes())?.is_none() {
                    return Ok(KeyOutcome::OwnerGone);
                }
                let counted = meta
                    .get(&count_key)?
                    .and_then(|v| <[u8; 4]>::try_from(&*v).ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(held)
                    .max(held);
                if counted >= max_per_owner {
                    return Ok(KeyOutcome::LimitReached);
                }
                meta.insert(count_key.as_slice(), &(counted + 1).to_be_bytes())?;
                // A key made by a token is that token's child: revoking the token (or any
                // ancestor) cascades through the key to every token minted from it.
                if let Some(parent) = record.derived_from.last() {
                    children.insert(index_key(parent, &record.id), &[] as &[u8])?;
                }
                keys.insert(record.id.as_bytes(), value.as_slice())?;
                by_owner.insert(index_key(&record.owner, &record.id), &[] as &[u8])?;
                hashes.insert(record.secret_hash.as_slice(), record.id.as_bytes())?;
                Ok(KeyOutcome::Stored)
            })
            .map_err(tx_error)
    }

    /// Looks a key up by its id.
    pub fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        self.access_keys
            .get(id)?
            .map(|v| decode("access_keys", &v))
            .transpose()
    }

    /// Finds the key whose secret hashes to `hash`.
    pub fn access_key_by_hash(&self, hash: &[u8]) -> Result<Option<AccessKeyRecord>, StoreError> {
        match self.key_hashes.get(hash)? {
            Some(id) => self.access_key(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every key of `owner`.
    pub fn keys_of(&self, owner: &str) -> Result<Vec<AccessKeyRecord>, StoreError> {
        let mut keys = Vec::new();
        for id in self.key_ids_of(owner)? {
            keys.extend(self.access_key(&id)?);
        }
        Ok(keys)
    }

    /// Every key of every owner (admin listings).
    pub fn all_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        self.access_keys
            .iter()
            .values()
            .map(|v| decode("access_keys", &v?))
            .collect()
    }

    /// Replaces `old` with `new` if the stored key is still exactly `old` (optimistic
    /// concurrency: a concurrent change makes this return `None` and nothing is written).
    /// The secret-hash index follows the record.
    /// Tokens in `revoke` (and their descendants) are marked revoked in the same
    /// transaction, so a narrowed key never coexists with tokens that exceed it.
    pub fn replace_access_key(
        &self,
        old: &AccessKeyRecord,
        new: &AccessKeyRecord,
        revoke: &[String],
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        let _changed = self.changing();
        let mut closure = self.descendants(revoke)?;
        closure.extend(revoke.iter().cloned());
        let expected = old.encode_to_vec();
        let value = new.encode_to_vec();
        let hashes_of = |r: &AccessKeyRecord| {
            [r.secret_hash.clone(), r.old_secret_hash.clone()]
                .into_iter()
                .filter(|h| !h.is_empty())
                .collect::<Vec<_>>()
        };
        let (before, after) = (hashes_of(old), hashes_of(new));
        let gate = self
            .gate
            .change(std::iter::once(new.id.as_str()).chain(closure.iter().map(String::as_str)));
        let outcome = (
            &self.access_keys,
            &self.key_hashes,
            &self.tokens,
            &self.revoked,
        )
            .transaction(|(keys, hashes, tokens, revoked)| {
                match keys.get(new.id.as_bytes())? {
                    Some(current) if *current == *expected => {}
                    _ => return Ok(None),
                }
                keys.insert(new.id.as_bytes(), value.as_slice())?;
                for h in before.iter().filter(|h| !after.contains(h)) {
                    hashes.remove(h.as_slice())?;
                }
                for h in after.iter().filter(|h| !before.contains(h)) {
                    hashes.insert(h.as_slice(), new.id.as_bytes())?;
                }
                Ok(Some(mark_revoked(tokens, revoked, &closure, now)?))
            })
            .map_err(tx_error)?;
        let Some(mut revoked) = outcome else {
            return Ok(None);
        };
        self.remember_revoked(&closure);
        drop(gate);
        // A child minted from one of `revoke` after the closure was read and before the gate
        // was taken is caught here: its parent is revoked now, so nothing new can appear.
        for parent in revoke {
            revoked += self.revoke_descendants(parent, now)?;
        }
        Ok(Some(revoked))
    }

    /// Records that a key was used at `at` (never moving the time backwards); a deleted key
    /// is ignored.
    pub fn touch_access_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let _changed = self.changing();
        self.access_keys
            .transaction(|keys| {
                let Some(raw) = keys.get(id.as_bytes())? else {
                    return Ok(());
                };
                let Ok(mut rec) = AccessKeyRecord::decode(&*raw) else {
                    return Ok(());
                };
                if rec.last_used_at < at {
                    rec.last_used_at = at;
                    keys.insert(id.as_bytes(), rec.encode_to_vec())?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Deletes a key with its indexes and revokes every token minted from it, in one
    /// transaction. Returns the number of tokens revoked, or `None` for an unknown key.
    pub fn delete_access_key(&self, id: &str, now: i64) -> Result<Option<u32>, StoreError> {
        let _changed = self.changing();
        let Some(key) = self.access_key(id)? else {
            return Ok(None);
        };
        let tokens = self.descendants(&[id.to_owned()])?;
        let count_key = index_key("#count", &key.owner);
        let held = self.count_keys(&key.owner)?;
        let gate = self
            .gate
            .change(std::iter::once(id).chain(tokens.iter().map(String::as_str)));
        let outcome = (
            &self.access_keys,
            &self.keys_by_owner,
            &self.key_hashes,
            &self.tokens,
            &self.meta,
            &self.revoked,
        )
            .transaction(|(keys, by_owner, hashes, token_tree, meta, revoked)| {
                let Some(raw) = keys.remove(id.as_bytes())? else {
                    return Ok(None);
                };
                by_owner.remove(index_key(&key.owner, id))?;
                remove_hashes(hashes, &raw)?;
                let counted = meta
                    .get(&count_key)?
                    .and_then(|v| <[u8; 4]>::try_from(&*v).ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(held);
                meta.insert(
                    count_key.as_slice(),
                    &counted.saturating_sub(1).to_be_bytes(),
                )?;
                Ok(Some(mark_revoked(token_tree, revoked, &tokens, now)?))
            })
            .map_err(tx_error)?;
        let Some(mut revoked) = outcome else {
            return Ok(None);
        };
        self.remember_revoked(&tokens);
        drop(gate);
        // A token minted concurrently, after the closure was read: the key is gone now, so
        // nothing new can appear under it.
        revoked += self.revoke_descendants(id, now)?;
        Ok(Some(revoked))
    }

    /// Live tokens minted from `parent` at any depth, with their records.
    pub fn live_descendants(&self, parent: &str) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let mut out = Vec::new();
        for jti in self.descendants(&[parent.to_owned()])? {
            if let Some(rec) = self.token(&jti)?
                && rec.revoked_at == 0
            {
                out.push((jti, rec));
            }
        }
        Ok(out)
    }

    // === tokens ===

    /// Stores a minted token and its parent → child index entry, after checking that the
    /// authorising credential is still live; the check and the writes hold the parent's gate
    /// stripe, so a concurrent revocation either refuses this mint or cascades to it.
    ///
    /// A token minted from an access key also requires the key to be unchanged since the
    /// caller authenticated (`key_version` is its `updated_at`): a key narrowed meanwhile
    /// refuses the mint instead of gaining a token wider than itself.
    ///
    /// The index entry is written first: a crash between the two writes leaves at most an
    /// entry naming no token (skipped by cascades), never an unindexed token; and neither
    /// write is acknowledged before [`Store::durable`].
    pub fn insert_token(
        &self,
        jti: &str,
        record: &TokenRecord,
        key_version: i64,
    ) -> Result<MintOutcome, StoreError> {
        let parent = record.parent.as_str();
        let _gate = self.gate.mint(parent);
        // The parent is a key (`ak_…`) or a token (a bare jti); a key made by a token mints
        // below depth 0, so the depth does not tell.
        let live = if parent.starts_with("ak_") {
            match self.access_keys.get(parent.as_bytes())? {
                Some(raw) => AccessKeyRecord::decode(&*raw)
                    .map(|k| k.updated_at == key_version)
                    .unwrap_or(false),
                None => false,
            }
        } else {
            match self.tokens.get(parent.as_bytes())? {
                Some(raw) => TokenRecord::decode(&*raw)
                    .map(|p| p.revoked_at == 0)
                    .unwrap_or(false),
                None => false,
            }
        };
        if !live {
            return Ok(MintOutcome::ParentGone);
        }
        self.children.insert(index_key(parent, jti), &[] as &[u8])?;
        self.tokens.insert(jti.as_bytes(), record.encode_to_vec())?;
        Ok(MintOutcome::Stored)
    }

    /// Whether `jti` was revoked: a memory lookup, so introspection of a live token never
    /// reads sled. Updated right after each revoking transaction commits.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_index
            .read()
            .map(|index| index.contains(jti))
            .unwrap_or(true)
    }

    /// Adds committed revocations to the in-memory index (ids that were already revoked or
    /// are unknown are harmless: they can never become live again).
    fn remember_revoked(&self, ids: &BTreeSet<String>) {
        if let Ok(mut index) = self.revoked_index.write() {
            index.extend(ids.iter().cloned());
        }
    }

    /// How many token records exist (live, revoked or expired but not yet swept).
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Deletes up to `limit` token records that expired before `cutoff`, with their index
    /// entries, so the store holds live tokens only. Every descendant of an expired token has
    /// expired too (a token never outlives its parent), so no cascade is lost.
    pub fn sweep_expired_tokens(&self, cutoff: i64, limit: usize) -> Result<usize, StoreError> {
        let mut expired = Vec::new();
        for entry in self.tokens.iter() {
            let (jti, raw) = entry?;
            let Ok(record) = TokenRecord::decode(&*raw) else {
                continue;
            };
            if record.expires_at < cutoff {
                expired.push((String::from_utf8_lossy(&jti).into_owned(), record.parent));
                if expired.len() >= limit {
                    break;
                }
            }
        }
        for chunk in expired.chunks(1000) {
            (&self.tokens, &self.children, &self.revoked)
                .transaction(|(tokens, children, revoked)| {
                    for (jti, parent) in chunk {
                        tokens.remove(jti.as_bytes())?;
                        children.remove(index_key(parent, jti))?;
                        revoked.remove(jti.as_bytes())?;
                    }
                    Ok(())
                })
                .map_err(tx_error)?;
            if let Ok(mut index) = self.revoked_index.write() {
                for (jti, _) in chunk {
                    index.remove(jti);
                }
            }
        }
        Ok(expired.len())
    }

    /// Looks a token record up by jti.
    pub fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(jti)?
            .map(|v| decode("tokens", &v))
            .transpose()
    }

    /// Revokes the token `jti` and every token minted from it; returns how many were live.
    pub fn revoke_token(&self, jti: &str, now: i64) -> Result<u32, StoreError> {
        self.revoke_closure(Some(jti), jti, now)
    }

    /// Revokes every token minted from `parent` (an access-key id or a jti), at any depth.
    pub fn revoke_descendants(&self, parent: &str, now: i64) -> Result<u32, StoreError> {
        self.revoke_closure(None, parent, now)
    }

    /// Every token minted from any of `roots`, at any depth.
    fn descendants(&self, roots: &[String]) -> Result<BTreeSet<String>, StoreError> {
        let mut ids = BTreeSet::new();
        let mut frontier: Vec<String> = roots.to_vec();
        while let Some(parent) = frontier.pop() {
            let prefix = index_prefix(&parent);
            for key in self.children.scan_prefix(&prefix).keys() {
                let key = key?;
                let child = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                if ids.insert(child.clone()) {
                    frontier.push(child);
                }
            }
        }
        Ok(ids)
    }

    /// Marks `root` (if given) and all descendants of `from` revoked. Each pass is one
    /// transaction under the gate stripes of the ids it marks; passes repeat until none finds
    /// a new descendant, which also catches a child minted before its parent's mark committed
    /// (after it, the mint refuses). `from` itself is not locked: when it is a key id,
    /// callers run this only after the key is deleted or replaced, so no mint starts under it.
    fn revoke_closure(&self, root: Option<&str>, from: &str, now: i64) -> Result<u32, StoreError> {
        let mut total = 0;
        let mut previous: Option<BTreeSet<String>> = None;
        loop {
            let mut ids = self.descendants(&[from.to_owned()])?;
            ids.extend(root.map(str::to_owned));
            // Nothing new since the last committed pass: the closure is complete.
            if previous.as_ref() == Some(&ids) {
                return Ok(total);
            }
            let _gate = self.gate.change(ids.iter().map(String::as_str));
            total += (&self.tokens, &self.revoked)
                .transaction(|(tokens, revoked)| Ok(mark_revoked(tokens, revoked, &ids, now)?))
                .map_err(tx_error)?;
            self.remember_revoked(&ids);
            previous = Some(ids);
        }
    }

    // === upstreams and leases ===

    /// Creates an upstream unless the name is taken; returns whether it was created.
    pub fn create_upstream(&self, record: &UpstreamRecord) -> Result<bool, StoreError> {
        let swapped = self.upstreams.compare_and_swap(
            record.name.as_bytes(),
            None as Option<&[u8]>,
            Some(record.encode_to_vec()),
        )?;
        Ok(swapped.is_ok())
    }

    /// Replaces an existing upstream record.
    pub fn put_upstream(&self, record: &UpstreamRecord) -> Result<(), StoreError> {
        self.upstreams
            .insert(record.name.as_bytes(), record.encode_to_vec())?;
        Ok(())
    }

    /// Looks an upstream up.
    pub fn upstream(&self, name: &str) -> Result<Option<UpstreamRecord>, StoreError> {
        self.upstreams
            .get(name)?
            .map(|v| decode("upstreams", &v))
            .transpose()
    }

    /// Upstreams in name order strictly after `after`, at most `limit`.
    pub fn list_upstreams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UpstreamRecord>, StoreError> {
        page_after(&self.upstreams, "upstreams", after, limit)
    }

    /// Deletes an upstream record; returns whether it existed.
    pub fn delete_upstream(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.upstreams.remove(name)?.is_some())
    }

    fn queue_key(due: i64, id: &str) -> Vec<u8> {
        let mut k = due.max(0).to_be_bytes().to_vec();
        k.extend_from_slice(id.as_bytes());
        k
    }

    /// Whether a lease in `state` is open: issuing, live or pending revocation. Open leases
    /// wait in the queue and are indexed; revoked ones wait for removal.
    fn queued(state: i32) -> bool {
        matches!(state, 1..=3)
    }

    /// Runs `f` as one transaction over the lease record tree, its queue, its indexes and the
    /// removal queue, so a lease never disagrees with its entries.
    fn lease_tx<R>(
        &self,
        f: impl Fn(&LeaseTx<'_>) -> Result<R, UnabortableTransactionError>,
    ) -> Result<R, StoreError> {
        (
            &self.leases,
            &self.lease_queue,
            &self.leases_by_root,
            &self.leases_by_holder,
            &self.leases_by_upstream,
            &self.revoked_leases,
        )
            .transaction(
                |(leases, queue, by_root, by_holder, by_upstream, removals)| {
                    Ok(f(&LeaseTx {
                        leases,
                        queue,
                        by_root,
                        by_holder,
                        by_upstream,
                        removals,
                    })?)
                },
            )
            .map_err(tx_error)
    }

    /// Stores a new lease with its entries, unless its holder's root key changed since the
    /// caller authenticated: with `key_version` (the key's `updated_at` then), the key must
    /// still exist at that version. The check and the write hold the key's gate stripe, which
    /// a key update holds exclusively, so a narrowing either refuses this lease (returns
    /// `false`, nothing stored) or finds it in the root index afterwards.
    pub fn insert_lease(
        &self,
        record: &LeaseRecord,
        key_version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let _gate = self.gate.mint(&record.root_key);
        if let Some(version) = key_version {
            let current = match self.access_keys.get(record.root_key.as_bytes())? {
                Some(raw) => AccessKeyRecord::decode(&*raw).ok().map(|k| k.updated_at),
                None => None,
            };
            if current != Some(version) {
                return Ok(false);
            }
        }
        self.lease_tx(|tx| tx.put(record))?;
        Ok(true)
    }

    /// Stores a changed lease; its queue, index and removal entries follow its state.
    pub fn put_lease(&self, record: &LeaseRecord) -> Result<(), StoreError> {
        self.lease_tx(|tx| tx.put(record))
    }

    /// Changes the stored lease `id` in place, in one transaction: `change` sees the current
    /// record (so a concurrent writer's change is never lost) and says whether it changed it.
    /// Returns the stored result when it did, `None` when the lease is absent or unchanged.
    pub fn update_lease(
        &self,
        id: &str,
        change: impl Fn(&mut LeaseRecord) -> bool,
    ) -> Result<Option<LeaseRecord>, StoreError> {
        self.lease_tx(|tx| {
            let Some(mut lease) = tx.get(id)? else {
                return Ok(None);
            };
            if !change(&mut lease) {
                return Ok(None);
            }
            tx.put(&lease)?;
            Ok(Some(lease))
        })
    }

    /// Looks a lease up.
    pub fn lease(&self, id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        self.leases
            .get(id)?
            .map(|v| decode("leases", &v))
            .transpose()
    }

    /// Open leases whose queue time has come, oldest first, at most `limit`.
    pub fn due_leases(&self, now: i64, limit: usize) -> Result<Vec<LeaseRecord>, StoreError> {
        let end = now.max(0).saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for key in self.lease_queue.range(..end.as_slice()).keys().take(limit) {
            let key = key?;
            let id = String::from_utf8_lossy(&key[8..]).into_owned();
            out.extend(self.lease(&id)?);
        }
        Ok(out)
    }

    /// The lease ids listed under `prefix` in an open-lease index.
    fn indexed_leases(
        &self,
        index: &sled::Tree,
        prefix: &str,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let prefix = index_prefix(prefix);
        let mut out = Vec::new();
        for key in index.scan_prefix(&prefix).keys() {
            let key = key?;
            out.extend(self.lease(&String::from_utf8_lossy(&key[prefix.len()..]))?);
        }
        Ok(out)
    }

    /// Every lease of an upstream that is not yet revoked (the upstream index).
    pub fn open_leases_of(&self, upstream: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        self.indexed_leases(&self.leases_by_upstream, upstream)
    }

    /// How many leases of an upstream are not yet revoked, counted in the index alone.
    pub fn open_lease_count(&self, upstream: &str) -> usize {
        self.leases_by_upstream
            .scan_prefix(index_prefix(upstream))
            .count()
    }

    /// Every open lease whose holder descends from the access key `root_key` (the root index).
    pub fn open_leases_under(&self, root_key: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        self.indexed_leases(&self.leases_by_root, root_key)
    }

    /// Every open lease held by `holder` (the holder index).
    pub fn open_leases_held_by(&self, holder: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        self.indexed_leases(&self.leases_by_holder, holder)
    }

    /// The distinct holders of open leases, read from the holder index alone: one seek per
    /// holder (its entries are skipped), no lease record read, closed leases never seen.
    pub fn open_lease_holders(&self) -> Result<Vec<String>, StoreError> {
        let mut holders = Vec::new();
        let mut from = Vec::new();
        while let Some(key) = self.leases_by_holder.range(from.as_slice()..).keys().next() {
            let key = key?;
            let end = key.iter().position(|b| *b == SEP).unwrap_or(key.len());
            holders.push(String::from_utf8_lossy(&key[..end]).into_owned());
            // `holder\0…` sorts before `holder\x01`: the next key is the next holder's.
            from = key[..end].to_vec();
            from.push(SEP + 1);
        }
        Ok(holders)
    }

    /// Removes up to `limit` revoked leases that were revoked at or before `cutoff` (now minus
    /// the retention), with their entries; found through the removal queue, oldest first.
    /// Returns how many were removed.
    pub fn remove_revoked_leases(&self, cutoff: i64, limit: usize) -> Result<usize, StoreError> {
        if cutoff < 0 {
            return Ok(0);
        }
        let end = cutoff.saturating_add(1).to_be_bytes();
        let due: Vec<(sled::IVec, String)> = self
            .revoked_leases
            .range(..end.as_slice())
            .keys()
            .take(limit)
            .map(|key| {
                let key = key?;
                let id = String::from_utf8_lossy(&key[8..]).into_owned();
                Ok((key, id))
            })
            .collect::<Result<_, StoreError>>()?;
        for chunk in due.chunks(256) {
            self.lease_tx(|tx| {
                for (key, id) in chunk {
                    tx.removals.remove(key)?;
                    match tx.get(id)? {
                        // Revived since (an issue finished late): it is open again, keep it.
                        Some(lease) if Self::queued(lease.state) => {}
                        Some(lease) => {
                            tx.unlink(&lease)?;
                            tx.leases.remove(id.as_bytes())?;
                        }
                        None => {
                            tx.leases.remove(id.as_bytes())?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(due.len())
    }

    /// Indexes the leases of a database written before the lease indexes existed, once (a
    /// `meta` marker records it): open leases get their index entries (and their root key,
    /// derived from the holder), revoked ones a removal entry.
    fn index_legacy_leases(&self) -> Result<(), StoreError> {
        if self.meta.get(LEASES_INDEXED)?.is_some() {
            return Ok(());
        }
        for value in self.leases.iter().values() {
            let Ok(mut lease) = LeaseRecord::decode(&*value?) else {
                continue;
            };
            if lease.root_key.is_empty() {
                lease.root_key = if lease.holder.starts_with("ak_") {
                    lease.holder.clone()
                } else {
                    match self.token(&lease.holder)? {
                        Some(t) if t.depth == 0 && t.root_key.is_empty() => t.parent,
                        Some(t) => t.root_key,
                        None => String::new(),
                    }
                };
            }
            self.put_lease(&lease)?;
        }
        self.meta.insert(LEASES_INDEXED, &[] as &[u8])?;
        Ok(())
    }

    // === signing keys ===

    /// Every stored signing key.
    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.signing_keys
            .iter()
            .values()
            .map(|v| decode("signing_keys", &v?))
            .collect()
    }

    /// Stores or replaces a signing key.
    pub fn put_signing_key(&self, record: &SigningKeyRecord) -> Result<(), StoreError> {
        self.signing_keys
            .insert(record.kid.as_bytes(), record.encode_to_vec())?;
        Ok(())
    }
}

/// `meta` key marking that every stored lease has its index and queue entries.
const LEASES_INDEXED: &str = "leases-indexed";

/// The lease trees inside one transaction (see [`Store::lease_tx`]).
struct LeaseTx<'a> {
    leases: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    by_root: &'a TransactionalTree,
    by_holder: &'a TransactionalTree,
    by_upstream: &'a TransactionalTree,
    removals: &'a TransactionalTree,
}

impl LeaseTx<'_> {
    /// The stored lease `id`; an undecodable record counts as absent.
    fn get(&self, id: &str) -> Result<Option<LeaseRecord>, UnabortableTransactionError> {
        Ok(self
            .leases
            .get(id.as_bytes())?
            .and_then(|raw| LeaseRecord::decode(&*raw).ok()))
    }

    /// Drops every entry `lease` may have: queue, indexes and removal queue.
    fn unlink(&self, lease: &LeaseRecord) -> Result<(), UnabortableTransactionError> {
        self.queue
            .remove(Store::queue_key(lease.next_attempt_at, &lease.id))?;
        self.removals
            .remove(Store::queue_key(lease.revoked_at, &lease.id))?;
        if !lease.root_key.is_empty() {
            self.by_root.remove(index_key(&lease.root_key, &lease.id))?;
        }
        self.by_holder.remove(index_key(&lease.holder, &lease.id))?;
        self.by_upstream
            .remove(index_key(&lease.upstream, &lease.id))?;
        Ok(())
    }

    /// Writes `lease` and the entries its state calls for: an open lease is queued at
    /// `next_attempt_at` and indexed by root key, holder and upstream; a revoked one is
    /// queued for removal by `revoked_at`.
    fn put(&self, lease: &LeaseRecord) -> Result<(), UnabortableTransactionError> {
        if let Some(old) = self.get(&lease.id)? {
            self.unlink(&old)?;
        }
        let none = &[] as &[u8];
        if Store::queued(lease.state) {
            self.queue
                .insert(Store::queue_key(lease.next_attempt_at, &lease.id), none)?;
            if !lease.root_key.is_empty() {
                self.by_root
                    .insert(index_key(&lease.root_key, &lease.id), none)?;
            }
            self.by_holder
                .insert(index_key(&lease.holder, &lease.id), none)?;
            self.by_upstream
                .insert(index_key(&lease.upstream, &lease.id), none)?;
        } else {
            self.removals
                .insert(Store::queue_key(lease.revoked_at, &lease.id), none)?;
        }
        self.leases
            .insert(lease.id.as_bytes(), lease.encode_to_vec())?;
        Ok(())
    }
}

/// Sets `revoked_at` on every live token of `ids` and lists it in the `revoked` tree (jti →
/// expiry, loaded into memory at start); returns how many were live.
fn mark_revoked(
    tokens: &TransactionalTree,
    revoked: &TransactionalTree,
    ids: &BTreeSet<String>,
    now: i64,
) -> Result<u32, UnabortableTransactionError> {
    let mut n = 0;
    for jti in ids {
        let Some(raw) = tokens.get(jti.as_bytes())? else {
            continue;
        };
        let Ok(mut rec) = TokenRecord::decode(&*raw) else {
            continue;
        };
        if rec.revoked_at == 0 {
            rec.revoked_at = now;
            tokens.insert(jti.as_bytes(), rec.encode_to_vec())?;
            revoked.insert(jti.as_bytes(), &rec.expires_at.to_be_bytes())?;
            n += 1;
        }
    }
    Ok(n)
}

/// The jtis of the `revoked` tree: revoked tokens not yet swept.
fn load_revoked(tree: &sled::Tree) -> Result<HashSet<String>, StoreError> {
    tree.iter()
        .keys()
        .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
        .collect()
}

/// Drops the hash index entries of a stored key record.
fn remove_hashes(
    hashes: &TransactionalTree,
    raw: &[u8],
) -> Result<(), UnabortableTransactionError> {
    if let Ok(rec) = AccessKeyRecord::decode(raw) {
        hashes.remove(rec.secret_hash)?;
        if !rec.old_secret_hash.is_empty() {
            hashes.remove(rec.old_secret_hash)?;
        }
    }
    Ok(())
}

fn tx_error(e: TransactionError<std::convert::Infallible>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Sled(e),
        TransactionError::Abort(never) => match never {},
    }
}

#[cfg(test)]
mod tests;
