//! Mapping configs are user files: whatever they hold, parsing never panics, every refusal
//! names a place in the file, and what is accepted stays inside the app root.

use proptest::prelude::*;
use pumas_mapper::mapping::{parse, unsafe_relative};

/// A TOML basic string holding `s` exactly.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Strings a user or an attacker might put in a path or a name.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("..".to_owned()),
        Just("../../etc".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("models/{slug}".to_owned()),
        Just("{nope}/{".to_owned()),
        Just("a\\b".to_owned()),
        Just("é/ü/日本".to_owned()),
        "[a-z{}./\\\\ \u{0}-\u{1f}é]{0,24}",
        any::<String>(),
    ]
}

/// A value of the right or the wrong TOML type.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => hostile_text().prop_map(|s| quoted(&s)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => proptest::collection::vec(hostile_text(), 0..3)
            .prop_map(|v| format!("[{}]", v.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", "))),
    ]
}

fn rule() -> impl Strategy<Value = String> {
    let keys = [
        "type",
        "family",
        "format",
        "tag",
        "folder",
        "name",
        "extensions",
        "bogus",
    ];
    proptest::collection::vec((proptest::sample::select(keys.to_vec()), value()), 0..6).prop_map(|pairs| {
        let mut out = String::from("\n[[rules]]\n");
        for (k, v) in pairs {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    })
}

fn config() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(quoted("comfyui")), Just(quoted("a1111")), value()],
        prop_oneof![Just(quoted("/srv/apps/comfy")), value()],
        proptest::option::of(prop_oneof![
            Just(quoted("symlink")),
            Just(quoted("copy")),
            value()
        ]),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(rule(), 0..4),
    )
        .prop_map(|(kind, root, strategy, use_preset, rules)| {
            let mut out = format!("kind = {kind}\nroot = {root}\n");
            if let Some(s) = strategy {
                out.push_str(&format!("strategy = {s}\n"));
            }
            if let Some(b) = use_preset {
                out.push_str(&format!("use_preset = {b}\n"));
            }
            for r in rules {
                out.push_str(&r);
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn any_text_is_parsed_or_refused_with_a_place(text in any::<String>()) {
        if let Err(errors) = parse("app", &text) {
            prop_assert!(!errors.is_empty());
            let lines = text.lines().count().max(1) as u32;
            for e in &errors {
                prop_assert!(e.line <= lines + 1, "line {} of {lines}: {}", e.line, e.message);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn configs_accepted_stay_inside_the_app_root(text in config()) {
        match parse("app", &text) {
            Ok(config) => {
                prop_assert!(config.root.is_absolute(), "{text}");
                for rule in &config.rules {
                    prop_assert_eq!(unsafe_relative(&rule.folder), None, "folder {:?} in {}", rule.folder, text);
                    if let Some(name) = &rule.name {
                        prop_assert_eq!(unsafe_relative(name), None, "name {:?} in {}", name, text);
                    }
                }
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.iter().all(|e| e.line >= 1), "every refusal has a line: {errors:?}\n{text}");
            }
        }
    }
}
