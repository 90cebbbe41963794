use std::path::Path;

use serde_json::json;

use super::*;
use crate::policy::{EntityDesc, EntityKind, PolicyEngine, Record};

fn engine() -> PolicyEngine {
    PolicyEngine::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

fn when(body: &str) -> String {
    format!("permit (principal, action, resource) when {{ {body} }};")
}

fn alice() -> EntityDesc {
    EntityDesc {
        kind: EntityKind::User,
        id: "alice".to_owned(),
        attrs: Record::new(),
    }
}

fn refusal(engine: &PolicyEngine, text: &str) -> String {
    engine
        .key_policies(text, &[], &alice())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

// === scan ===

#[test]
fn scan_counts_brackets_and_skips_strings_and_comments() {
    let shape = scan("permit (principal, action, resource) when { ((true)) };");
    assert_eq!(shape.brackets, (3, 1));
    let shape = scan(
        "// ((((((( in a comment\npermit (principal, action, resource)\nwhen { \"(((\\\"(((\" == \"x\" };",
    );
    assert_eq!(shape.brackets, (1, 2), "only the `( )` and `{{ }}` count");
    assert_eq!(scan("").brackets, (0, 0));
    // An unbalanced closer is left to Cedar; the scan neither fails nor goes negative.
    assert_eq!(scan(")))(").brackets, (1, 1));
}

#[test]
fn scan_bounds_the_depth_of_chains_and_ifs_per_segment() {
    // `when {` opens a segment: 1 (outer) + 1 (brace) + 4 `||`.
    assert_eq!(scan(&when("a || b || c || d || e")).depth.0, 6);
    // `,` and `;` start a new segment: siblings do not add up.
    assert_eq!(scan(&when("[a || b, c || d, e || f]")).depth.0, 4);
    assert_eq!(scan(&format!("{0}\n{0}", when("a || b"))).depth.0, 3);
    // Each `if` counts, as do `.`, `!=` (one operator), `in`, `has`, `like`, `is`.
    assert_eq!(
        scan(&when("if a then b else if c then d else e")).depth.0,
        4
    );
    assert_eq!(scan(&when("a.b != c")).depth.0, 4);
    assert_eq!(
        scan(&when("a in b && c has d && e like \"*\" && f is g"))
            .depth
            .0,
        9
    );
    // Identifiers that merely start like keywords, `::` and string contents do not count.
    assert_eq!(scan(&when("iffy == Ns::Type::\"|| && ||\"")).depth.0, 3);
    // A deep chain inside brackets adds to the brackets around it.
    assert_eq!(scan(&when("(a + (b + c + d))")).depth.0, 2 + 2 + 3);
}

#[test]
fn scan_reports_the_line_and_where_each_policy_starts() {
    let text = "permit (principal, action, resource);\n\n@id(\"x\")\nforbid (principal, action, resource)\nwhen { (((a))) };";
    let shape = scan(text);
    assert_eq!(shape.policy_lines, [1, 3]);
    assert_eq!(shape.brackets, (4, 5));
}

// === expression depth ===

#[test]
fn expression_depth_counts_one_key_objects() {
    assert_eq!(expression_depth(&json!({ "Var": "principal" })), 1);
    let plus = json!({ "+": { "left": { "Value": 1 }, "right": { "Value": 1 } } });
    assert_eq!(expression_depth(&plus), 2);
    assert_eq!(expression_depth(&json!([plus, { "a": { "b": {} } }])), 2);
    assert_eq!(expression_depth(&json!("text")), 0);
    // Iterative: a deep value is walked without recursion.
    let mut deep = json!({ "Value": true });
    for _ in 0..1000 {
        deep = json!({ "!": { "arg": deep } });
    }
    assert_eq!(expression_depth(&deep), 1001);
}

#[test]
fn expression_depth_follows_chains_in_cedars_json() {
    let engine = engine();
    for n in [2, 10, 50] {
        let set = engine
            .key_policies(&when(&vec!["true"; n].join(" || ")), &[], &alice())
            .unwrap();
        let policy = set.policies().next().unwrap();
        let depth = expression_depth(&policy.to_json().unwrap());
        assert!((n..n + 4).contains(&depth), "{n} terms: {depth}");
    }
}

// === admission ===

#[test]
fn each_limit_is_refused_with_a_message_naming_it() {
    let engine = engine().with_max_inline_policy_bytes(100);
    let big = "permit (principal, action, resource);\n".repeat(3);
    let message = refusal(&engine, &big);
    assert_eq!(
        message,
        "inline policy: the text is 114 bytes long: at most 100 are allowed (config `max_inline_policy_bytes`)"
    );

    let engine = self::engine();
    let parens = when(&format!("{}true{}", "(".repeat(300), ")".repeat(300)));
    assert_eq!(
        refusal(&engine, &parens),
        "inline policy line 1: brackets nest 301 levels deep: at most 32 are allowed"
    );
    // Deep and long: the byte limit stops them first, and the nesting bound whatever it is.
    let ifs = when(&format!(
        "{}true{}",
        "if true then ".repeat(3000),
        " else false".repeat(3000)
    ));
    let or = when(&vec!["true"; 5000].join(" || "));
    let roomy = self::engine().with_max_inline_policy_bytes(1 << 20);
    for text in [&ifs, &or] {
        assert!(refusal(&engine, text).contains("`max_inline_policy_bytes`"));
        let message = refusal(&roomy, text);
        assert!(
            message.starts_with("inline policy line 1: the expression nests too deep"),
            "{message}"
        );
    }
    let or = format!(
        "permit (principal, action, resource);\n{}",
        when(&vec!["true"; 150].join(" || "))
    );
    let message = refusal(&engine, &or);
    assert!(
        message.starts_with("inline policy line 2: the expression nests 15"),
        "{message}"
    );
    assert!(message.contains("at most 100 are allowed"), "{message}");
}

#[test]
fn cedars_own_refusals_still_carry_its_message() {
    let engine = engine();
    let message = refusal(&engine, &when("context.nope"));
    assert!(message.contains("nope"), "{message}");
    let message = refusal(
        &engine,
        "permit (principal == ?principal, action, resource);",
    );
    assert!(message.contains("templates"), "{message}");
    let message = refusal(
        &engine,
        "permit (principal, action, resource) when { (((true };",
    );
    assert!(message.starts_with("inline policy line 1: "), "{message}");
}

#[test]
fn admission_runs_at_most_parsers_at_once_and_frees_its_place() {
    let gate = Gate::default();
    let a = gate.enter();
    let b = gate.enter();
    assert_eq!(*gate.busy.lock().unwrap(), PARSERS);
    drop(a);
    let c = gate.enter();
    drop((b, c));
    assert_eq!(*gate.busy.lock().unwrap(), 0);
    // Many callers at once all get an answer.
    let engine = engine();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| engine.key_policies(&when("true"), &[], &alice()).is_ok()))
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
    });
}

/// The largest `n` for which `policy(n)` is admitted, with the next one refused.
fn deepest(engine: &PolicyEngine, policy: &dyn Fn(usize) -> String) -> usize {
    let admitted = |n| engine.key_policies(&policy(n), &[], &alice()).is_ok();
    assert!(admitted(1));
    let mut n = 1;
    while admitted(n + 1) {
        n += 1;
    }
    n
}

/// A family of policies, by how deep they nest.
type PolicyOfDepth = Box<dyn Fn(usize) -> String>;

/// Tokio's worker threads have 2 MiB stacks: the deepest policy of each shape admitted must
/// be evaluated (no recursion-limit error) and dropped on one.
#[test]
fn deepest_admitted_policy_evaluates_on_a_2_mib_stack() {
    let engine = engine();
    let shapes: Vec<(&str, PolicyOfDepth)> = vec![
        (
            "+ chain",
            Box::new(|n| when(&format!("{} > 0", vec!["1"; n].join(" + ")))),
        ),
        (
            "&& chain",
            Box::new(|n| when(&vec!["true"; n].join(" && "))),
        ),
        (
            "nested if",
            Box::new(|n| {
                when(&format!(
                    "{}true{}",
                    "if true then ".repeat(n),
                    " else false".repeat(n)
                ))
            }),
        ),
        (
            "brackets around chains",
            Box::new(|n| {
                let inner = format!("({})", ["1"; 3].join(" + "));
                let chain = vec![inner.as_str(); n].join(" + ");
                when(&format!("{}{chain}{} > 0", "(".repeat(30), ")".repeat(30)))
            }),
        ),
        (
            "negations",
            Box::new(|n| when(&format!("{}true{}", "!(".repeat(n), ")".repeat(n)))),
        ),
    ];
    for (name, policy) in shapes {
        let n = deepest(&engine, &*policy);
        let set = engine.key_policies(&policy(n), &[], &alice()).unwrap();
        let engine = &engine;
        let decision = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn_scoped(s, move || {
                    let anonymous = EntityDesc {
                        kind: EntityKind::Anonymous,
                        id: "anonymous".to_owned(),
                        attrs: Record::new(),
                    };
                    let decision = engine.authorize_in(
                        &set,
                        "GetJwks",
                        &anonymous,
                        &EntityDesc::broker(),
                        &Record::new(),
                    );
                    drop(set);
                    decision
                })
                .unwrap()
                .join()
                .unwrap()
        });
        assert!(
            decision.errors.is_empty(),
            "{name} at {n}: {:?}",
            decision.errors
        );
        assert_eq!(
            decision.allowed,
            n.is_multiple_of(2) || name != "negations",
            "{name} at {n}"
        );
        println!("{name}: deepest admitted {n}");
    }
}
