//! Admission of an access key's inline policy: no text, of any size or shape, may take the
//! server down while Cedar reads it, nor make every later request with the key expensive.
//!
//! Cedar's parser (CST to AST), its JSON form and the drop of a parsed expression recurse
//! once per level of nesting with no limit of their own; the typechecker and the evaluator
//! do check the remaining stack and fail cleanly. Measured on the debug build (dependencies at
//! `opt-level = 1`), one bracket level costs about 13 KiB of parser stack, one `if` about
//! 2 KiB, one level of the JSON form about 650 B and one level of evaluation about 4 KiB:
//! 160 brackets overflow a 2 MiB tokio worker. Chains (`a || b || …`, `1 + 1 + …`,
//! `a.b.c…`) are flat in the text and in the parser but one level per operator once parsed.
//! So an inline policy passes, in order:
//!
//! 1. the byte limit (config `max_inline_policy_bytes`);
//! 2. a lexical scan ([`scan`]) that skips strings and comments and bounds bracket nesting
//!    ([`MAX_BRACKETS`]) and an upper bound of the expression depth ([`MAX_LEXICAL_DEPTH`]),
//!    before Cedar sees the text, so the next step's stack need is bounded;
//! 3. parse, validation and the exact expression depth ([`expression_depth`] on each
//!    policy's JSON form, at most [`MAX_EXPR_DEPTH`]) on a thread of its own with a
//!    [`PARSER_STACK_BYTES`] stack, at most [`PARSERS`] at once, joined by the caller.
//!
//! What is admitted is then at most [`MAX_EXPR_DEPTH`] deep, which a 2 MiB worker evaluates
//! and drops with room to spare (`deepest_admitted_policy_evaluates_on_a_2_mib_stack`).

use std::{
    str::FromStr,
    sync::{Condvar, Mutex, PoisonError},
};

use cedar_policy::{Policy, PolicySet, Schema, ValidationMode, Validator};
use serde_json::Value;

use super::{KeyPolicyError, line_of, message_of};

/// Deepest bracket nesting (`(`, `[`, `{`, the policy's own `when { }` included) read.
pub const MAX_BRACKETS: usize = 32;
/// Largest lexical depth bound (see [`scan`]) read; about four times [`MAX_EXPR_DEPTH`],
/// since the bound counts every operator of a chain wherever it stands.
pub const MAX_LEXICAL_DEPTH: usize = 400;
/// Deepest expression admitted, counted on Cedar's JSON form (see [`expression_depth`]).
pub const MAX_EXPR_DEPTH: usize = 100;
/// Stack of a parser thread: more than ten times what the bounds above let Cedar use.
pub const PARSER_STACK_BYTES: usize = 16 << 20;
/// Parser threads running at once; further callers wait, so memory stays bounded.
pub const PARSERS: usize = 2;

/// What the lexical scan of a policy text found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Deepest bracket nesting, and the 1-based line where it was first reached.
    pub brackets: (usize, usize),
    /// Largest lexical depth bound, and the 1-based line where it was first reached.
    pub depth: (usize, usize),
    /// The 1-based line where each policy starts (after each `;` outside brackets).
    pub policy_lines: Vec<usize>,
}

/// Reads `text` as Cedar tokens without parsing it, skipping string literals and `//`
/// comments. Brackets open a segment and `,` or `;` start a new one within it; the lexical
/// depth bound at a point is the sum, over the open segments, of one plus the operators
/// (`||`, `&&`, comparisons, arithmetic, `!`, `.`, `in`, `has`, `like`, `is`, `if`) seen so
/// far in that segment. Cedar nests each operator of a chain one level deeper and each
/// bracket or `if` one level, so the bound is at least about the depth of the parsed
/// expression (a desugared `has a.b.c` is about twice its operator count).
pub fn scan(text: &str) -> Shape {
    let bytes = text.as_bytes();
    let mut shape = Shape::default();
    // Operators seen in each open segment; the outermost never closes.
    let mut segments: Vec<usize> = vec![0];
    // Sum over `segments` of one plus each.
    let mut depth = 1;
    let mut line = 1;
    let mut policy_starts = true;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        if b == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if policy_starts && segments.len() == 1 {
            shape.policy_lines.push(line);
            policy_starts = false;
        }
        let mut operator = false;
        match b {
            b'/' if next == Some(b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 1,
                        b'"' => break,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                segments.push(0);
                depth += 1;
            }
            b')' | b']' | b'}' => {
                // An unbalanced closer is Cedar's to report.
                if segments.len() > 1
                    && let Some(ops) = segments.pop()
                {
                    depth -= 1 + ops;
                }
            }
            b',' | b';' => {
                if let Some(ops) = segments.last_mut() {
                    depth -= *ops;
                    *ops = 0;
                }
                policy_starts = b == b';';
            }
            b'|' | b'&' | b'=' | b'!' | b'<' | b'>' => {
                operator = true;
                // `||`, `&&`, `==`, `!=`, `<=`, `>=` are one operator.
                if matches!(next, Some(b'|' | b'&' | b'=')) {
                    i += 1;
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'.' => operator = true,
            b':' if next == Some(b':') => i += 1,
            _ if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    i += 1;
                }
                operator = matches!(&bytes[start..=i], b"if" | b"in" | b"has" | b"like" | b"is");
            }
            _ => {}
        }
        if operator && let Some(ops) = segments.last_mut() {
            *ops += 1;
            depth += 1;
        }
        let brackets = segments.len() - 1;
        if brackets > shape.brackets.0 {
            shape.brackets = (brackets, line);
        }
        if depth > shape.depth.0 {
            shape.depth = (depth, line);
        }
        i += 1;
    }
    shape
}

/// The depth of a policy's JSON form (Cedar's EST), counting the objects with exactly one
/// key other than `arg`: every expression node is one (`{"||": {"left": …, "right": …}}`,
/// `{"Var": …}`, `{"!": {"arg": …}}`), and the rare others (a one-field record's fields, an
/// entity literal) only make the count err on the safe side. Walked with an explicit stack:
/// the value may be deep.
pub fn expression_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Object(fields) => {
                let node = fields.len() == 1 && !fields.contains_key("arg");
                let depth = depth + usize::from(node);
                deepest = deepest.max(depth);
                stack.extend(fields.values().map(|v| (v, depth)));
            }
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth))),
            _ => {}
        }
    }
    deepest
}

/// Bounds how many parser threads run at once.
#[derive(Debug, Default)]
pub struct Gate {
    busy: Mutex<usize>,
    freed: Condvar,
}

/// One running parser; frees its place when dropped.
struct Permit<'a>(&'a Gate);

impl Gate {
    /// Waits until fewer than [`PARSERS`] parsers run, then counts this one.
    fn enter(&self) -> Permit<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy >= PARSERS {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(PoisonError::into_inner);
        *busy = busy.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

fn refused(line: usize, message: impl Into<String>) -> KeyPolicyError {
    KeyPolicyError::Inline {
        line,
        message: message.into(),
    }
}

/// Checks `text` as an inline policy (steps 1 to 3 above) and returns its policies.
pub fn admit(
    text: &str,
    schema: &Schema,
    max_bytes: usize,
    gate: &Gate,
) -> Result<Vec<Policy>, KeyPolicyError> {
    if text.len() > max_bytes {
        return Err(refused(
            0,
            format!(
                "the text is {} bytes long: at most {max_bytes} are allowed (config `max_inline_policy_bytes`)",
                text.len()
            ),
        ));
    }
    let shape = scan(text);
    let (brackets, line) = shape.brackets;
    if brackets > MAX_BRACKETS {
        return Err(refused(
            line,
            format!("brackets nest {brackets} levels deep: at most {MAX_BRACKETS} are allowed"),
        ));
    }
    let (depth, line) = shape.depth;
    if depth > MAX_LEXICAL_DEPTH {
        return Err(refused(
            line,
            format!(
                "the expression nests too deep: its operators, `if`s and brackets stack up {depth} levels here, at most {MAX_LEXICAL_DEPTH} are read (and {MAX_EXPR_DEPTH} admitted); write long chains of `||` as `[…].contains(…)` or split the policy"
            ),
        ));
    }
    let _permit = gate.enter();
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("inline-policy".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse(text, schema, &shape))
            .map_err(|e| {
                tracing::error!(error = %e, "cannot start an inline policy parser");
                refused(
                    0,
                    "the broker cannot read an inline policy right now: try again",
                )
            })?;
        parser.join().unwrap_or_else(|_| {
            tracing::error!("the inline policy parser panicked");
            Err(refused(0, "Cedar failed on this text: change it"))
        })
    })
}

/// Parses and validates on the parser thread, and checks each policy's depth there too:
/// a refused deep policy is also dropped there.
fn parse(text: &str, schema: &Schema, shape: &Shape) -> Result<Vec<Policy>, KeyPolicyError> {
    let parsed =
        PolicySet::from_str(text).map_err(|e| refused(line_of(&e, text), message_of(&e, &e)))?;
    if parsed.templates().next().is_some() {
        return Err(refused(
            1,
            "templates (`?principal`, `?resource`) are not allowed in an inline policy",
        ));
    }
    for policy in parsed.policies() {
        // Cedar names the policies of a text `policy0`, `policy1`, … in order.
        let line = policy
            .id()
            .to_string()
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| shape.policy_lines.get(n).copied())
            .unwrap_or(0);
        let json = policy.to_json().map_err(|e| refused(line, e.to_string()))?;
        let depth = expression_depth(&json);
        if depth > MAX_EXPR_DEPTH {
            return Err(refused(
                line,
                format!(
                    "the expression nests {depth} levels deep: at most {MAX_EXPR_DEPTH} are allowed (each operator of a chain such as `a || b || c` adds a level; write `[…].contains(…)` or split the policy)"
                ),
            ));
        }
    }
    let result = Validator::new(schema.clone()).validate(&parsed, ValidationMode::Strict);
    if let Some(err) = result.validation_errors().next() {
        return Err(refused(line_of(err, text), message_of(err, err)));
    }
    Ok(parsed.policies().cloned().collect())
}

#[cfg(test)]
mod tests;
