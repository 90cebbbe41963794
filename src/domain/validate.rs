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

/// Whether `id` has the shape of an access-key id: `ak_` then 1 to 64 lowercase letters or
/// digits (the broker makes `ak_` and 32 hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.strip_prefix("ak_").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Checks that `id` looks like an access-key id, so a mistyped one is told what ids look like
/// instead of being looked up and not found.
pub fn key_id(field: &str, id: &str, violations: &mut Vec<FieldViolation>) {
    if id.is_empty() {
        violations.push(FieldViolation::new(
            field,
            "give the access key's id: ids look like `ak_…` (`ak_` and 32 lowercase hex digits)",
        ));
    } else if !is_key_id(id) {
        violations.push(FieldViolation::new(
            field,
            format!(
                "{} is not an access key id: ids look like `ak_…` (`ak_` and 32 lowercase hex digits, as CreateAccessKey and ListAccessKeys return them)",
                quote(id)
            ),
        ));
    }
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

/// Whether `c` may be shown in a name or description: no control characters (NUL included)
/// and no bidirectional formatting characters, which make a listing read other than it is
/// (U+202E turns `yek-nimda` into `admin-key` on screen).
fn is_displayable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Invisible: zero-width characters, line and paragraph separators, word joiner and
            // invisible operators, the byte order mark, the Mongolian vowel separator, tags.
            | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2028}' | '\u{2029}'
            | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}'
        )
}

/// Validates a free-text field shown to people (a key's name or description): at most
/// `max_chars`, no control or bidirectional formatting characters.
pub fn display_text(
    field: &str,
    value: &str,
    max_chars: usize,
    violations: &mut Vec<FieldViolation>,
) {
    if value.chars().count() > max_chars {
        violations.push(FieldViolation::new(
            field,
            format!("at most {max_chars} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !is_displayable(*c)) {
        violations.push(FieldViolation::new(
            field,
            format!(
                "character U+{:04X} is not allowed: remove control and bidirectional formatting characters",
                bad as u32
            ),
        ));
    }
}

/// 0001-01-01T00:00:00Z, the first instant protobuf's `Timestamp` can hold.
pub const TIMESTAMP_MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last.
pub const TIMESTAMP_MAX_SECONDS: i64 = 253_402_300_799;

/// Validates a `google.protobuf.Timestamp` as protobuf defines it (0001-01-01 to
/// 9999-12-31, nanos 0 to 999 999 999), so every stored instant can be written back as JSON;
/// returns its whole seconds.
pub fn timestamp(
    field: &str,
    seconds: i64,
    nanos: i32,
    violations: &mut Vec<FieldViolation>,
) -> Option<i64> {
    if !(TIMESTAMP_MIN_SECONDS..=TIMESTAMP_MAX_SECONDS).contains(&seconds) {
        violations.push(FieldViolation::new(
            field,
            format!("`{seconds}` seconds is outside 0001-01-01 to 9999-12-31: give a real instant"),
        ));
        return None;
    }
    if !(0..1_000_000_000).contains(&nanos) {
        violations.push(FieldViolation::new(
            field,
            format!("nanos `{nanos}` is outside 0 to 999999999"),
        ));
        return None;
    }
    Some(seconds)
}

/// Validates an expiry: a valid timestamp in the future and no later than `now + max_secs`
/// (`max_key` names the config key that sets the bound).
pub fn expiry(
    field: &str,
    seconds: i64,
    nanos: i32,
    now: i64,
    (max_secs, max_key): (i64, &str),
    violations: &mut Vec<FieldViolation>,
) -> Option<i64> {
    let at = timestamp(field, seconds, nanos, violations)?;
    if at <= now {
        violations.push(FieldViolation::new(
            field,
            "must be in the future; omit it for none",
        ));
        return None;
    }
    if at - now > max_secs {
        violations.push(FieldViolation::new(
            field,
            format!(
                "is {}s away; at most {max_secs}s from now is allowed (config `{max_key}`)",
                at - now
            ),
        ));
        return None;
    }
    Some(at)
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
    fn display_text_refuses_control_and_bidi_characters() {
        for bad in [
            "a\0b",
            "x\u{202E}yek",
            "tab\there",
            "\u{2066}iso",
            "ad\u{200B}min",
            "a\u{2028}b",
            "\u{FEFF}bom",
            "tag\u{E0041}",
        ] {
            let mut v = Vec::new();
            display_text("name", bad, 128, &mut v);
            assert_eq!(v.len(), 1, "{bad:?}");
            assert!(v[0].description.contains("U+"), "{:?}", v[0]);
        }
        let mut v = Vec::new();
        display_text("name", "laptop ключ 🔑 ci-runner", 128, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn timestamps_stay_in_protobufs_range() {
        let mut v = Vec::new();
        assert_eq!(
            timestamp("t", TIMESTAMP_MAX_SECONDS, 0, &mut v),
            Some(TIMESTAMP_MAX_SECONDS)
        );
        assert_eq!(timestamp("t", 1 << 62, 0, &mut v), None);
        assert_eq!(timestamp("t", TIMESTAMP_MIN_SECONDS - 1, 0, &mut v), None);
        assert_eq!(timestamp("t", 0, -1, &mut v), None);
        assert_eq!(v.len(), 3);
        let mut v = Vec::new();
        assert_eq!(expiry("t", 100, 0, 50, (60, "k"), &mut v), Some(100));
        assert_eq!(expiry("t", 200, 0, 50, (60, "k"), &mut v), None);
        assert_eq!(expiry("t", 50, 0, 50, (60, "k"), &mut v), None);
        assert!(v[0].description.contains("`k`"), "{:?}", v[0]);
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a\nb"), "`a\\nb`");
        assert!(quote(&"x".repeat(100)).ends_with("…`"));
    }
}
