//! Every subscriber of the bus receives every public event of its agency, so the public events
//! carry no free text by construction: this test walks the JSON Schema of every published event
//! type and fails on any string that is not a code (an `enum` or `const`), a date or time, a uuid,
//! or a short string held to a `pattern`. A field that cannot be constrained so must be listed in
//! `ALLOWED` with the reason it cannot carry health information; the list is empty, and a new
//! entry is a reviewed change.

use schemas::public::public_schemas;
use serde_json::Value;

/// (event type, JSON path of the field, why it cannot carry PHI).
const ALLOWED: &[(&str, &str, &str)] = &[];

/// The longest a patterned string may be: ids and codes, not sentences.
const MAX_PATTERNED_LENGTH: u64 = 128;

/// Whether a schema node that admits strings constrains them to something that is not free text.
fn constrained(node: &serde_json::Map<String, Value>) -> bool {
    if node.contains_key("enum") || node.contains_key("const") {
        return true;
    }
    if let Some(format) = node.get("format").and_then(Value::as_str) {
        if matches!(format, "date" | "date-time" | "time" | "uuid") {
            return true;
        }
    }
    let short = node
        .get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|max| max <= MAX_PATTERNED_LENGTH);
    node.contains_key("pattern") && short
}

fn admits_strings(node: &serde_json::Map<String, Value>) -> bool {
    match node.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// Every string-admitting node of `value` that is not constrained, by JSON path.
fn free_text(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(node) => {
            if admits_strings(node) && !constrained(node) {
                out.push(path.to_owned());
            }
            for (key, child) in node {
                free_text(child, &format!("{path}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                free_text(child, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_published_event_carries_free_text() {
    let mut found = Vec::new();
    for (event_type, version, schema) in public_schemas() {
        let mut paths = Vec::new();
        free_text(&schema, "", &mut paths);
        for path in paths {
            if !ALLOWED
                .iter()
                .any(|(t, p, _)| *t == event_type && *p == path)
            {
                found.push(format!("{event_type} v{version}: {path}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "public events may carry only codes, ids, dates and patterned strings; free text at:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_walk_finds_free_text_where_there_is_some() {
    // The retired version 1 of a decline carried the case manager's words: the walk sees them.
    let retired = schemas::public::retired_schemas();
    let (_, _, declined) = retired
        .iter()
        .find(|(t, v, _)| *t == "ReferralDeclined" && *v == "1")
        .expect("the retired decline");
    let mut paths = Vec::new();
    free_text(declined, "", &mut paths);
    assert_eq!(paths, ["/$defs/Text"], "the free-text reason");
    // And a bare string anywhere, however deep.
    let mut paths = Vec::new();
    free_text(
        &serde_json::json!({"properties": {"note": {"anyOf": [{"type": ["string", "null"]}]}}}),
        "",
        &mut paths,
    );
    assert_eq!(paths, ["/properties/note/anyOf/0"]);
}
