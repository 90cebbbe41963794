//! Cedar: load and validate `policies/`, build the entities of one request, and answer
//! allow or deny with the policies that decided.
//!
//! **Architecture invariant:** the schema and policy set are parsed and validated once, at
//! start-up; a policy that does not parse or validate stops the server with its file and line.
//! An access key's inline policy is read only through [`inline::admit`], which bounds its size
//! and nesting before Cedar sees it and parses it on a thread with a stack of its own.

mod attr;
pub mod inline;

pub use attr::{Attr, Record};

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash, Hasher, RandomState},
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, RwLock},
};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, Schema, SlotId, ValidationMode,
    Validator,
};
use miette::Diagnostic;
use serde_json::json;

/// The schema file inside the policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Why the policy directory was refused, always naming the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The schema does not parse.
    #[error("{path}:{line}: schema error: {message}")]
    Schema {
        /// The schema file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// Cedar's diagnostic.
        message: String,
    },
    /// A policy file does not parse.
    #[error("{path}:{line}: policy parse error: {message}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// Cedar's diagnostic.
        message: String,
    },
    /// A policy parses but does not validate against the schema.
    #[error("{path}:{line}: policy `{policy}` does not validate against the schema: {message}")]
    Validation {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The policy id.
        policy: String,
        /// Cedar's diagnostic.
        message: String,
    },
    /// Two policies share an id.
    #[error("{path}: duplicate policy id `{policy}`")]
    Duplicate {
        /// The second file defining it.
        path: PathBuf,
        /// The id.
        policy: String,
    },
    /// No policy file was found: nothing would ever be allowed.
    #[error("no `*.cedar` files in `{0}`")]
    Empty(PathBuf),
}

/// Why a key's inline policy or roles were refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyPolicyError {
    /// The inline policy is too large or too deep, or does not parse or validate.
    #[error("inline policy{}: {message}", at_line(*.line))]
    Inline {
        /// 1-based line within the inline text (0 when no line applies, as for its size).
        line: usize,
        /// Cedar's diagnostic.
        message: String,
    },
    /// A role names no shipped template.
    #[error("role `{role}` is unknown: use one of `{}`", known.join("`, `"))]
    UnknownRole {
        /// Position in the request's `roles`.
        index: usize,
        /// The name given.
        role: String,
        /// The roles that exist.
        known: Vec<String>,
    },
}

/// ` line N`, or nothing for line 0.
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

/// The entity type of a principal or resource, as named in the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum EntityKind {
    /// A person.
    User,
    /// A workload.
    Service,
    /// The unauthenticated caller.
    Anonymous,
    /// The broker itself.
    Broker,
    /// An access key.
    AccessKey,
    /// An access token.
    Token,
    /// An upstream vendor account.
    Upstream,
    /// A vendor token leased from an upstream.
    Lease,
    /// An HTTP route of the `[envoy]` config.
    Route,
}

/// Every kind, in declaration order (the index of `EntityKind as usize`).
const ALL_KINDS: [EntityKind; 9] = [
    EntityKind::User,
    EntityKind::Service,
    EntityKind::Anonymous,
    EntityKind::Broker,
    EntityKind::AccessKey,
    EntityKind::Token,
    EntityKind::Upstream,
    EntityKind::Lease,
    EntityKind::Route,
];

impl EntityKind {
    /// The schema's type name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "User",
            EntityKind::Service => "Service",
            EntityKind::Anonymous => "Anonymous",
            EntityKind::Broker => "Broker",
            EntityKind::AccessKey => "AccessKey",
            EntityKind::Token => "Token",
            EntityKind::Upstream => "Upstream",
            EntityKind::Lease => "Lease",
            EntityKind::Route => "Route",
        }
    }
}

/// One entity of a request: its type, id and attributes (typed by the schema).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntityDesc {
    /// Entity type.
    pub kind: EntityKind,
    /// Entity id.
    pub id: String,
    /// Attributes.
    pub attrs: Record,
}

impl EntityDesc {
    /// The singleton broker resource.
    pub fn broker() -> Self {
        Self {
            kind: EntityKind::Broker,
            id: "token-broker".to_owned(),
            attrs: Record::new(),
        }
    }

    /// Human form used in messages: `User::"alice"`.
    pub fn display(&self) -> String {
        format!("{}::\"{}\"", self.kind.as_str(), self.id.escape_default())
    }

    fn uid_json(&self) -> serde_json::Value {
        json!({ "type": self.kind.as_str(), "id": self.id })
    }
}

/// The answer to one authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation or request errors (a request that errors is denied).
    pub errors: Vec<String>,
}

/// Everything a request for one action needs that does not change per request.
struct ActionSlot {
    uid: EntityUid,
    /// The action's own entity (with its groups), so `action in` works without the schema.
    entity: Option<Entity>,
    /// The policies that can apply to this action (see `load`).
    policies: PolicySet,
    /// Fingerprints of the request shapes (see [`PolicyEngine::shape_of`]) that passed the
    /// schema check for this action (see `try_authorize_in`).
    validated: RwLock<HashSet<u64>>,
}

/// Shapes remembered per action. The auth layer builds a handful per action; past this many,
/// a new shape is checked against the schema every time instead of remembered, so a caller
/// who could vary shapes without bound could not grow memory without bound.
const MAX_SHAPES_PER_ACTION: usize = 1024;

/// The default of config `max_inline_policy_bytes`.
const DEFAULT_MAX_INLINE_BYTES: usize = 16 * 1024;

/// Decisions remembered; each entry holds its full input (a few hundred bytes).
const DECISION_CACHE_CAPACITY: u64 = 10_000;

/// A decision and the complete input it was made for.
struct Remembered {
    action: String,
    principal: EntityDesc,
    resource: EntityDesc,
    context: Record,
    decision: Arc<Decision>,
}

impl Remembered {
    /// Whether this decision was made for exactly this input.
    fn is_for(
        &self,
        action: &str,
        principal: &EntityDesc,
        resource: &EntityDesc,
        context: &Record,
    ) -> bool {
        self.action == action
            && self.principal == *principal
            && self.resource == *resource
            && self.context == *context
    }
}

impl Decision {
    /// A request that could not be evaluated is denied, with the reason.
    fn failed(error: String) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}

/// The validated policy set and schema, shared by every request.
pub struct PolicyEngine {
    schema: Schema,
    /// Decisions by the fingerprint of their complete input (action, both entities with
    /// every attribute, the context), each with that input: a hit counts only when the input
    /// is equal, so a fingerprint collision is a miss, never a wrong answer. Policies never
    /// change while the server runs, so a hit is exactly the decision Cedar would make again;
    /// a credential minting the same shape of token over and over (a sidecar) is then
    /// decided once per second (`remaining_seconds` ticks).
    decisions: moka::sync::Cache<u64, Arc<Remembered>>,
    /// Keys of the decision fingerprints, random per engine.
    decision_keys: RandomState,
    policies: PolicySet,
    authorizer: Authorizer,
    actions: HashMap<String, ActionSlot>,
    /// Parsed type names, indexed by `EntityKind as usize`.
    types: Vec<EntityTypeName>,
    /// Keys of the shape fingerprints, random per engine (see [`PolicyEngine::shape_of`]).
    shape_keys: RandomState,
    /// Largest inline policy read, in bytes (config `max_inline_policy_bytes`).
    max_inline_bytes: usize,
    /// Bounds the inline policy parser threads running at once.
    parsers: inline::Gate,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.policies.policies().count())
            .finish()
    }
}

/// 1-based line of the first labelled span of a Cedar diagnostic within `text`.
fn line_of(diag: &dyn Diagnostic, text: &str) -> usize {
    let offset = diag
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
        .unwrap_or(0)
        .min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The diagnostic with its help text, on one line.
fn message_of(diag: &dyn Diagnostic, err: &dyn std::fmt::Display) -> String {
    match diag.help() {
        Some(help) => format!("{err} ({help})"),
        None => err.to_string(),
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })
}

impl PolicyEngine {
    /// Loads `dir/schema.cedarschema` and every `dir/*.cedar`, validating strictly.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let schema_path = dir.join(SCHEMA_FILE);
        let schema_text = read(&schema_path)?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&schema_text).map_err(|e| PolicyError::Schema {
                path: schema_path.clone(),
                line: line_of(&e, &schema_text),
                message: message_of(&e, &e),
            })?;

        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| PolicyError::Read {
                path: dir.to_owned(),
                source,
            })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "cedar"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(PolicyError::Empty(dir.to_owned()));
        }

        let mut policies = PolicySet::new();
        // policy id → (file, text) so validation errors can name the line.
        let mut origin: HashMap<PolicyId, (PathBuf, usize)> = HashMap::new();
        let mut texts = Vec::new();
        for path in files {
            let text = read(&path)?;
            let parsed = PolicySet::from_str(&text).map_err(|e| PolicyError::Parse {
                path: path.clone(),
                line: line_of(&e, &text),
                message: message_of(&e, &e),
            })?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for template in parsed.templates() {
                let id = PolicyId::new(template.annotation("id").unwrap_or(&format!("{stem}#t")));
                if origin.contains_key(&id) {
                    return Err(PolicyError::Duplicate {
                        path,
                        policy: id.to_string(),
                    });
                }
                policies
                    .add_template(template.new_id(id.clone()))
                    .map_err(|_| PolicyError::Duplicate {
                        path: path.clone(),
                        policy: id.to_string(),
                    })?;
                origin.insert(id, (path.clone(), texts.len()));
            }
            for (n, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{stem}#{n}"));
                let id = PolicyId::new(id);
                if origin.contains_key(&id) {
                    return Err(PolicyError::Duplicate {
                        path,
                        policy: id.to_string(),
                    });
                }
                policies
                    .add(policy.new_id(id.clone()))
                    .map_err(|_| PolicyError::Duplicate {
                        path: path.clone(),
                        policy: id.to_string(),
                    })?;
                origin.insert(id, (path.clone(), texts.len()));
            }
            texts.push(text);
        }

        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if let Some(err) = result.validation_errors().next() {
            let (path, text) = origin
                .get(err.policy_id())
                .map(|(p, i)| (p.clone(), texts[*i].as_str()))
                .unwrap_or_else(|| (dir.to_owned(), ""));
            return Err(PolicyError::Validation {
                path,
                line: line_of(err, text),
                policy: err.policy_id().to_string(),
                message: message_of(err, err),
            });
        }

        let action_entities = schema.action_entities().map_err(|e| PolicyError::Schema {
            path: schema_path.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        let mut actions: HashMap<String, ActionSlot> = schema
            .actions()
            .map(|uid| {
                let slot = ActionSlot {
                    uid: uid.clone(),
                    entity: action_entities.get(uid).cloned(),
                    policies: PolicySet::new(),
                    validated: RwLock::new(HashSet::new()),
                };
                (uid.id().unescaped().to_owned(), slot)
            })
            .collect();
        // Cedar evaluates every policy of a set; slicing by action scope once here means a
        // request evaluates only the policies that can apply to its action. `action in G`
        // applies to every action that is G or a member of G (action groups included).
        for policy in policies.policies() {
            let constraint = policy.action_constraint();
            for slot in actions.values_mut() {
                let applies = match &constraint {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(uid) => *uid == slot.uid,
                    ActionConstraint::In(uids) => uids.iter().any(|group| {
                        *group == slot.uid || action_entities.is_ancestor_of(group, &slot.uid)
                    }),
                };
                if applies {
                    slot.policies
                        .add(policy.clone())
                        .map_err(|_| PolicyError::Duplicate {
                            path: dir.to_owned(),
                            policy: policy.id().to_string(),
                        })?;
                }
            }
        }
        let types = ALL_KINDS
            .iter()
            .map(|k| {
                EntityTypeName::from_str(k.as_str()).map_err(|e| PolicyError::Schema {
                    path: schema_path.clone(),
                    line: 1,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            schema,
            decisions: moka::sync::Cache::builder()
                .max_capacity(DECISION_CACHE_CAPACITY)
                .time_to_idle(std::time::Duration::from_secs(60))
                .build(),
            decision_keys: RandomState::new(),
            policies,
            authorizer: Authorizer::new(),
            actions,
            types,
            shape_keys: RandomState::new(),
            max_inline_bytes: DEFAULT_MAX_INLINE_BYTES,
            parsers: inline::Gate::default(),
        })
    }

    /// Sets the largest inline policy [`PolicyEngine::key_policies`] reads (config
    /// `max_inline_policy_bytes`; 16 KiB unless set).
    pub fn with_max_inline_policy_bytes(mut self, bytes: usize) -> Self {
        self.max_inline_bytes = bytes;
        self
    }

    /// Role names (template ids) keys may link, for messages and validation.
    pub fn roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self
            .policies
            .templates()
            .map(|t| t.id().to_string())
            .collect();
        roles.sort();
        roles
    }

    /// Builds (and so validates) the own policy set of an access key: its inline policy and
    /// its roles linked with `owner` as principal. Errors name the field and carry Cedar's
    /// diagnostic, or the limit the inline policy exceeds (see [`inline`]).
    pub fn key_policies(
        &self,
        inline: &str,
        roles: &[String],
        owner: &EntityDesc,
    ) -> Result<PolicySet, KeyPolicyError> {
        let mut set = PolicySet::new();
        if !inline.trim().is_empty() {
            let parsed = inline::admit(inline, &self.schema, self.max_inline_bytes, &self.parsers)?;
            for (n, policy) in parsed.iter().enumerate() {
                set.add(policy.new_id(PolicyId::new(format!("inline#{n}"))))
                    .map_err(|e| KeyPolicyError::Inline {
                        line: 1,
                        message: e.to_string(),
                    })?;
            }
        }
        let owner_uid =
            EntityUid::from_json(owner.uid_json()).map_err(|e| KeyPolicyError::Inline {
                line: 1,
                message: e.to_string(),
            })?;
        for (i, role) in roles.iter().enumerate() {
            let template = self
                .policies
                .template(&PolicyId::new(role))
                .ok_or_else(|| KeyPolicyError::UnknownRole {
                    index: i,
                    role: role.clone(),
                    known: self.roles(),
                })?;
            if set.template(template.id()).is_none() {
                set.add_template(template.clone())
                    .map_err(|e| KeyPolicyError::Inline {
                        line: 1,
                        message: e.to_string(),
                    })?;
            }
            set.link(
                template.id().clone(),
                PolicyId::new(format!("role:{role}")),
                HashMap::from([(SlotId::principal(), owner_uid.clone())]),
            )
            .map_err(|e| KeyPolicyError::UnknownRole {
                index: i,
                role: format!("{role} ({e})"),
                known: self.roles(),
            })?;
        }
        Ok(set)
    }

    /// Decides a request against a key's own policy set (see [`PolicyEngine::key_policies`]).
    pub fn authorize_in(
        &self,
        set: &PolicySet,
        action: &str,
        principal: &EntityDesc,
        resource: &EntityDesc,
        context: &Record,
    ) -> Decision {
        self.try_authorize_in(set, action, principal, resource, context)
            .unwrap_or_else(Decision::failed)
    }

    fn uid(&self, d: &EntityDesc) -> EntityUid {
        EntityUid::from_type_name_and_id(self.types[d.kind as usize].clone(), EntityId::new(&d.id))
    }

    fn entity(&self, d: &EntityDesc) -> Result<Entity, String> {
        let attrs = d
            .attrs
            .iter()
            .map(|(k, v)| Ok((k.to_owned(), v.to_expr()?)))
            .collect::<Result<HashMap<_, _>, String>>()?;
        Entity::new(self.uid(d), attrs, HashSet::new()).map_err(|e| e.to_string())
    }

    /// How many policies are loaded.
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Decides whether `principal` may do `action` on `resource` given `context` (a record
    /// typed by the action's context in the schema). Any error denies. Remembered decisions
    /// are answered without Cedar (see `decisions`).
    pub fn authorize(
        &self,
        action: &str,
        principal: &EntityDesc,
        resource: &EntityDesc,
        context: &Record,
    ) -> Arc<Decision> {
        let fingerprint = self
            .decision_keys
            .hash_one((action, principal, resource, context));
        if let Some(hit) = self.decisions.get(&fingerprint)
            && hit.is_for(action, principal, resource, context)
        {
            return Arc::clone(&hit.decision);
        }
        let decision = Arc::new(self.authorize_uncached(action, principal, resource, context));
        self.decisions.insert(
            fingerprint,
            Arc::new(Remembered {
                action: action.to_owned(),
                principal: principal.clone(),
                resource: resource.clone(),
                context: context.clone(),
                decision: Arc::clone(&decision),
            }),
        );
        decision
    }

    /// Decides without the decision cache: what Cedar itself costs (benchmarks, tests).
    pub fn authorize_uncached(
        &self,
        action: &str,
        principal: &EntityDesc,
        resource: &EntityDesc,
        context: &Record,
    ) -> Decision {
        let Some(slot) = self.actions.get(action) else {
            return Decision::failed(format!("action `{action}` is not in the schema"));
        };
        self.try_authorize_in(&slot.policies, action, principal, resource, context)
            .unwrap_or_else(Decision::failed)
    }

    /// The fingerprint of a request's shape for one action: the kinds of the principal and
    /// resource, whether they are one entity, and the shapes of their attributes and of the
    /// context (see [`feed_shape`]). Keyed per engine, so no caller can aim at a collision.
    fn shape_of(&self, principal: &EntityDesc, resource: &EntityDesc, context: &Record) -> u64 {
        let mut h = self.shape_keys.build_hasher();
        let same = resource.kind == principal.kind && resource.id == principal.id;
        h.write_u8(u8::from(same));
        for d in [principal, resource] {
            h.write_usize(d.kind as usize);
            feed_record_shape(&d.attrs, &self.shape_keys, &mut h);
        }
        feed_record_shape(context, &self.shape_keys, &mut h);
        h.finish()
    }

    fn try_authorize_in(
        &self,
        policies: &PolicySet,
        action: &str,
        principal: &EntityDesc,
        resource: &EntityDesc,
        context: &Record,
    ) -> Result<Decision, String> {
        let slot = self
            .actions
            .get(action)
            .ok_or_else(|| format!("action `{action}` is not in the schema"))?;
        // The schema check of entities and request costs more than the evaluation itself
        // (measured: about half of an authorization). What it checks depends only on the
        // shape: the action, the kinds of the principal and resource, and the names and
        // types of their attributes and of the context, never on the values. So each shape
        // is checked against the schema until it has passed once, then trusted; a request
        // that differs in any attribute name or type is a new shape and is checked.
        let shape = self.shape_of(principal, resource, context);
        let trusted = slot
            .validated
            .read()
            .is_ok_and(|shapes| shapes.contains(&shape));
        let schema = (!trusted).then_some(&self.schema);
        // Values are converted directly, not through Cedar's JSON readers: those try every
        // value as an extension value first and format a serde error each time (measured:
        // ~85 % of an authorization).
        let mut list = Vec::with_capacity(3);
        list.push(self.entity(principal)?);
        if resource.kind != principal.kind || resource.id != principal.id {
            list.push(self.entity(resource)?);
        }
        if schema.is_none() {
            // With the schema, Cedar adds the action entities itself.
            list.extend(slot.entity.clone());
        }
        let entities = Entities::from_entities(list, schema).map_err(|e| e.to_string())?;
        let context = Context::from_pairs(context.to_pairs()?).map_err(|e| e.to_string())?;
        let request = Request::new(
            self.uid(principal),
            slot.uid.clone(),
            self.uid(resource),
            context,
            schema,
        )
        .map_err(|e| e.to_string())?;
        if schema.is_some()
            && let Ok(mut shapes) = slot.validated.write()
            && shapes.len() < MAX_SHAPES_PER_ACTION
        {
            shapes.insert(shape);
        }
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        Ok(Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policies: response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect(),
        })
    }
}

/// Feeds the shape of a value to `h`: its kind; for a record, its attribute names in order
/// and their shapes; for a set, the shapes of its elements with each run of equal shapes fed
/// once, so that a set's length is not part of its shape. The encoding is prefix-free (a tag
/// per kind, a count before fields, a flag before each set element, `str` hashing ends each
/// name with 0xff), so two different shapes never feed the same bytes.
fn feed_shape(value: &Attr, keys: &RandomState, h: &mut impl Hasher) {
    h.write_u8(value.tag());
    match value {
        Attr::Set(items) => {
            let mut last = None;
            for item in items.iter() {
                let shape = element_shape(item, keys);
                if last != Some(shape) {
                    h.write_u8(1);
                    h.write_u64(shape);
                    last = Some(shape);
                }
            }
            h.write_u8(0);
        }
        Attr::Record(record) => feed_record_shape(record, keys, h),
        Attr::Str(_) | Attr::Long(_) | Attr::Bool(_) => {}
    }
}

/// Feeds the shape of a record (see [`feed_shape`]).
fn feed_record_shape(record: &Record, keys: &RandomState, h: &mut impl Hasher) {
    h.write_usize(record.len());
    for (name, field) in record.iter() {
        name.hash(h);
        feed_shape(field, keys, h);
    }
}

/// The shape of one set element: its tag for a scalar (the common case, no hashing), else
/// the fingerprint of its own shape.
fn element_shape(value: &Attr, keys: &RandomState) -> u64 {
    match value {
        Attr::Set(_) | Attr::Record(_) => {
            let mut h = keys.build_hasher();
            feed_shape(value, keys, &mut h);
            h.finish()
        }
        scalar => u64::from(scalar.tag()),
    }
}

#[cfg(test)]
mod tests;
