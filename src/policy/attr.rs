//! The values the broker describes a request with. They hash and compare, and their sets
//! and records sit behind an `Arc`, so a described request is looked up in the decision
//! cache without building Cedar's types or any JSON, and the parts that stay the same for a
//! credential (its subject, its grant) are built once and shared. Cedar's own values are
//! built only when the cache misses.

use std::{borrow::Cow, sync::Arc};

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// One Cedar value: a string, a `Long`, a boolean, a set or a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    /// A string.
    Str(String),
    /// A Cedar `Long`.
    Long(i64),
    /// A boolean.
    Bool(bool),
    /// A set, in the order it was built: the same set built by the same code compares equal.
    Set(Arc<[Attr]>),
    /// A record.
    Record(Arc<Record>),
}

/// A Cedar record: attribute names as the schema spells them, and their values, in the
/// order they were set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record(Vec<(Cow<'static, str>, Attr)>);

impl Attr {
    /// A set of strings.
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        Attr::Set(items.into_iter().map(|s| Attr::Str(s.into())).collect())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A JSON value as an attribute: for tests, fuzzing and fixtures written as JSON. Null
    /// and non-integer numbers have no Cedar value.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        Ok(match value {
            Value::String(s) => Attr::Str(s.clone()),
            Value::Bool(b) => Attr::Bool(*b),
            Value::Number(n) => Attr::Long(
                n.as_i64()
                    .ok_or_else(|| format!("`{n}` is not a Cedar integer"))?,
            ),
            Value::Array(items) => Attr::Set(
                items
                    .iter()
                    .map(Attr::from_json)
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            Value::Object(_) => Attr::Record(Arc::new(Record::from_json(value)?)),
            Value::Null => return Err("null has no Cedar value".to_owned()),
        })
    }

    /// Cedar's value for it.
    pub(super) fn to_expr(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            Attr::Str(s) => RestrictedExpression::new_string(s.clone()),
            Attr::Long(n) => RestrictedExpression::new_long(*n),
            Attr::Bool(b) => RestrictedExpression::new_bool(*b),
            Attr::Set(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(Attr::to_expr)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Attr::Record(record) => {
                RestrictedExpression::new_record(record.to_pairs()?).map_err(|e| e.to_string())?
            }
        })
    }

    /// One tag per kind of value (for shape fingerprints).
    pub(super) fn tag(&self) -> u8 {
        match self {
            Attr::Str(_) => 1,
            Attr::Long(_) => 2,
            Attr::Bool(_) => 3,
            Attr::Set(_) => 4,
            Attr::Record(_) => 5,
        }
    }
}

impl From<&str> for Attr {
    fn from(s: &str) -> Self {
        Attr::Str(s.to_owned())
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Self {
        Attr::Str(s)
    }
}

impl From<i64> for Attr {
    fn from(n: i64) -> Self {
        Attr::Long(n)
    }
}

impl From<u32> for Attr {
    fn from(n: u32) -> Self {
        Attr::Long(n.into())
    }
}

impl From<bool> for Attr {
    fn from(b: bool) -> Self {
        Attr::Bool(b)
    }
}

impl From<Record> for Attr {
    fn from(record: Record) -> Self {
        Attr::Record(Arc::new(record))
    }
}

impl Record {
    /// The empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record with `name` set to `value`.
    pub fn with(mut self, name: &'static str, value: impl Into<Attr>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn set(&mut self, name: &'static str, value: impl Into<Attr>) {
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((Cow::Borrowed(name), value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The names and values, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// How many attributes it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A JSON object as a record (see [`Attr::from_json`]); anything else is refused.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let Value::Object(fields) = value else {
            return Err("not a record".to_owned());
        };
        Ok(Self(
            fields
                .iter()
                .map(|(k, v)| Ok((Cow::Owned(k.clone()), Attr::from_json(v)?)))
                .collect::<Result<_, String>>()?,
        ))
    }

    /// Cedar's name and value pairs.
    pub(super) fn to_pairs(&self) -> Result<Vec<(String, RestrictedExpression)>, String> {
        self.0
            .iter()
            .map(|(k, v)| Ok((k.to_string(), v.to_expr()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_replaces_and_get_reads() {
        let mut r = Record::new().with("a", 1i64).with("b", "x");
        r.set("a", true);
        assert_eq!(r.get("a"), Some(&Attr::Bool(true)));
        assert_eq!(r.get("b").and_then(Attr::as_str), Some("x"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.get("c"), None);
    }

    #[test]
    fn json_converts_and_refuses_what_cedar_has_not() {
        let r =
            Record::from_json(&json!({ "s": "v", "n": 3, "set": ["a"], "rec": { "b": false } }))
                .unwrap();
        assert_eq!(r.get("n"), Some(&Attr::Long(3)));
        assert_eq!(r.get("set"), Some(&Attr::strings(["a"])));
        assert!(Record::from_json(&json!({ "x": null })).is_err());
        assert!(Record::from_json(&json!({ "x": 1.5 })).is_err());
        assert!(Record::from_json(&json!([1])).is_err());
    }

    #[test]
    fn equal_values_built_apart_are_equal() {
        let a = Record::new().with("p", Attr::strings(["read", "write"]));
        let b = Record::new().with(
            "p",
            Attr::strings(vec!["read".to_owned(), "write".to_owned()]),
        );
        assert_eq!(a, b);
        assert_ne!(a, Record::new().with("p", Attr::strings(["read"])));
    }
}
