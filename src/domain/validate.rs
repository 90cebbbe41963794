//! Input validation shared by every RPC: a bad value is named with its field and refused
//! before anything changes.

use std::collections::BTreeSet;

use super::grant::{ALL_PROJECTS, MintRequest, PermissionModel, Projects};

/// One invalid field, in the shape of `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, e.g. `project_ids[3]`.
    pub field: String,
    /// What was wrong and what would be right.
    pub description: String,
}

impl FieldViolation {
    /// Shorthand used by every validator.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Whether `id` is a well-formed project id: `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn is_project_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Whether `id` is a well-formed subject id: `[a-z0-9][a-z0-9._@-]{0,127}`.
pub fn is_subject_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@')
        })
}

/// Shows user input safely in a message: truncated, control characters escaped.
pub fn quote(input: &str) -> String {
    let mut shown: String = input
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if input.chars().count() > 64 {
        shown.push('…');
    }
    format!("`{shown}`")
}

/// Validates project ids; empty means "not given".
pub fn projects(
    field: &str,
    ids: &[String],
    max_items: usize,
    violations: &mut Vec<FieldViolation>,
) -> Option<Projects> {
    if ids.is_empty() {
        return None;
    }
    if ids.len() > max_items {
        violations.push(FieldViolation::new(
            field,
            format!(
                "{} project ids given; at most {max_items} are allowed",
                ids.len()
            ),
        ));
        return None;
    }
    for (i, id) in ids.iter().enumerate() {
        if id != ALL_PROJECTS && !is_project_id(id) {
            violations.push(FieldViolation::new(
                format!("{field}[{i}]"),
                format!(
                    "project id {} is malformed: use `[a-z0-9][a-z0-9._-]{{0,127}}` or `*`",
                    quote(id)
                ),
            ));
        }
    }
    Some(Projects::from_ids(ids.iter().cloned()))
}

/// Validates permissions against the vocabulary; empty means "not given".
pub fn permissions(
    field: &str,
    perms: &[String],
    max_items: usize,
    model: &PermissionModel,
    violations: &mut Vec<FieldViolation>,
) -> Option<BTreeSet<String>> {
    if perms.is_empty() {
        return None;
    }
    if perms.len() > max_items {
        violations.push(FieldViolation::new(
            field,
            format!(
                "{} permissions given; at most {max_items} are allowed",
                perms.len()
            ),
        ));
        return None;
    }
    for (i, p) in perms.iter().enumerate() {
        if !model.is_known(p) {
            let known: Vec<&str> = model.all().map(String::as_str).collect();
            violations.push(FieldViolation::new(
                format!("{field}[{i}]"),
                format!(
                    "permission {} is unknown: use one of `{}`",
                    quote(p),
                    known.join("`, `")
                ),
            ));
        }
    }
    Some(perms.iter().cloned().collect())
}

/// Turns `expires_in_hours` into whole seconds: finite, > 0 and at most `max_secs`.
pub fn lifetime_hours(
    field: &str,
    hours: Option<f64>,
    max_secs: i64,
    violations: &mut Vec<FieldViolation>,
) -> Option<i64> {
    let hours = hours?;
    let max_hours = max_secs as f64 / 3600.0;
    if !hours.is_finite() {
        violations.push(FieldViolation::new(
            field,
            format!(
                "`{hours}` is not a finite number of hours: give a value > 0 and ≤ {max_hours}"
            ),
        ));
        return None;
    }
    if hours <= 0.0 {
        violations.push(FieldViolation::new(
            field,
            format!("`{hours}` hours is not a lifetime: give a value > 0 and ≤ {max_hours}"),
        ));
        return None;
    }
    if hours > max_hours {
        violations.push(FieldViolation::new(
            field,
            format!("`{hours}` hours exceeds the maximum token lifetime of {max_hours} hours"),
        ));
        return None;
    }
    // Round up so a tiny positive request still yields a live token of at least one second.
    Some(((hours * 3600.0).ceil() as i64).max(1))
}

/// Validates the wire fields of a mint into a [`MintRequest`].
pub fn mint_request(
    project_ids: &[String],
    perms: &[String],
    expires_in_hours: Option<f64>,
    max_items: usize,
    max_lifetime_secs: i64,
    model: &PermissionModel,
) -> Result<MintRequest, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let request = MintRequest {
        projects: projects("project_ids", project_ids, max_items, &mut violations),
        permissions: permissions("permissions", perms, max_items, model, &mut violations),
        lifetime_secs: lifetime_hours(
            "expires_in_hours",
            expires_in_hours,
            max_lifetime_secs,
            &mut violations,
        ),
    };
    if violations.is_empty() {
        Ok(request)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert!(is_project_id("alpha"));
        assert!(is_project_id("a.b_c-1"));
        assert!(!is_project_id("Alpha"));
        assert!(!is_project_id("-a"));
        assert!(!is_project_id(""));
        assert!(!is_project_id(&"a".repeat(129)));
        assert!(is_project_id(&"a".repeat(128)));
    }

    #[test]
    fn lifetimes() {
        let mut v = Vec::new();
        assert_eq!(lifetime_hours("f", Some(0.5), 86400, &mut v), Some(1800));
        assert_eq!(lifetime_hours("f", None, 86400, &mut v), None);
        assert!(v.is_empty());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e308, 24.01] {
            let mut v = Vec::new();
            assert_eq!(lifetime_hours("f", Some(bad), 86400, &mut v), None);
            assert_eq!(v.len(), 1, "{bad}");
        }
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a\nb"), "`a\\nb`");
        assert!(quote(&"x".repeat(100)).ends_with("…`"));
    }
}
